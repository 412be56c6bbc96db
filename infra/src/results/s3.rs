//! The S3-compatible store (`s3://bucket/prefix`) through `object_store`. Settings
//! come from the `AWS_*` environment as `AmazonS3Builder::from_env` reads them;
//! timeouts and retries get defaults sized for result files (tens of MB) that the
//! environment may override (`AWS_TIMEOUT`, `AWS_CONNECT_TIMEOUT`).

use super::{clamp, failed, not_found, Fetched, Listed, Op, ResultsError, ResultsUrl};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientConfigKey, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    PutOptions, PutPayload, RetryConfig,
};
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Retries of one request after a connection error or a 5xx: "a couple", so a
/// store that is down fails a task within seconds instead of holding the worker.
const MAX_RETRIES: usize = 2;
/// Longest time one request and its retries may take.
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// Defaults the environment may override: connecting, and one whole request
/// (an upload of a 52 MB GIF on a slow link).
const DEFAULTS: [(ClientConfigKey, &str); 2] =
    [(ClientConfigKey::ConnectTimeout, "5s"), (ClientConfigKey::Timeout, "300s")];

/// An S3 bucket and the key prefix results live under.
pub(super) struct S3 {
    client: AmazonS3,
    prefix: Key,
}

impl S3 {
    /// Builds the client; nothing is contacted.
    pub(super) fn open(
        url: &ResultsUrl,
        bucket: &str,
        prefix: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<S3, ResultsError> {
        let mut builder = AmazonS3Builder::new();
        for (key, value) in DEFAULTS {
            builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
        }
        // As `AmazonS3Builder::from_env`, from the pairs given.
        for (key, value) in env {
            if let (true, Ok(config)) = (key.starts_with("AWS_"), key.to_ascii_lowercase().parse()) {
                builder = builder.with_config(config, value);
            }
        }
        let retry =
            RetryConfig { backoff: BackoffConfig::default(), max_retries: MAX_RETRIES, retry_timeout: RETRY_TIMEOUT };
        let client = builder
            .with_bucket_name(bucket)
            .with_retry(retry)
            .build()
            .map_err(|source| ResultsError::Configure { url: url.to_string(), source })?;
        Ok(S3 { client, prefix: Key::from(prefix) })
    }

    fn key(&self, name: &str) -> Key {
        self.prefix.clone().join(name)
    }

    /// Uploads the file `path` as `name`, with its content type.
    pub(super) async fn put_file(&self, url: &ResultsUrl, name: &str, path: &Path) -> Result<(), ResultsError> {
        let bytes = tokio::fs::read(path).await.map_err(|e| failed(url, Op::Put, name, e))?;
        let mut attributes = Attributes::new();
        if let Some(content_type) = content_type(name) {
            attributes.insert(Attribute::ContentType, content_type.into());
        }
        let options = PutOptions { attributes, ..PutOptions::default() };
        self.client
            .put_opts(&self.key(name), PutPayload::from(bytes), options)
            .await
            .map_err(|e| failed(url, Op::Put, name, e))?;
        Ok(())
    }

    /// Streams `name`, or a range of it.
    pub(super) async fn get(
        &self,
        url: &ResultsUrl,
        name: &str,
        range: Option<Range<u64>>,
    ) -> Result<Fetched, ResultsError> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..GetOptions::default() };
        let got = self.client.get_opts(&self.key(name), options).await.map_err(|e| s3_error(url, Op::Get, name, e))?;
        let size = got.meta.size;
        let range = clamp(Some(got.range.clone()), size).unwrap_or(got.range.clone());
        let (url, name) = (url.clone(), name.to_string());
        let body = got.into_stream().map_err(move |e| failed(&url, Op::Get, &name, e)).boxed();
        Ok(Fetched { size, range, body })
    }

    /// The size of `name`.
    pub(super) async fn size(&self, url: &ResultsUrl, name: &str) -> Result<u64, ResultsError> {
        let meta = self.client.head(&self.key(name)).await.map_err(|e| s3_error(url, Op::Get, name, e))?;
        Ok(meta.size)
    }

    /// Deletes `name` (S3 answers a delete of a missing key with success too).
    pub(super) async fn delete(&self, url: &ResultsUrl, name: &str) -> Result<(), ResultsError> {
        match self.client.delete(&self.key(name)).await {
            Err(e) if !matches!(e, object_store::Error::NotFound { .. }) => Err(failed(url, Op::Delete, name, e)),
            _ => Ok(()),
        }
    }

    /// The objects directly under the prefix (`/`-delimited: deeper keys are not
    /// results of this store).
    pub(super) async fn list(&self, url: &ResultsUrl) -> Result<Vec<Listed>, ResultsError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listing = self.client.list_with_delimiter(prefix).await.map_err(|e| failed(url, Op::List, "", e))?;
        let listed = listing.objects.into_iter().filter_map(|meta| {
            let name = meta.location.filename()?.to_string();
            Some(Listed { name, size: meta.size, modified: SystemTime::from(meta.last_modified) })
        });
        Ok(listed.collect())
    }
}

fn content_type(name: &str) -> Option<&'static str> {
    if name.ends_with(".json") {
        return Some("application/json");
    }
    warmlane_shared::reply::media::of(name)
}

fn s3_error(url: &ResultsUrl, op: Op, name: &str, e: object_store::Error) -> ResultsError {
    match e {
        object_store::Error::NotFound { .. } => not_found(url, name),
        e => failed(url, op, name, e),
    }
}
