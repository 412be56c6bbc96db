//! The results store: where finished videos are kept, named by a URL
//! ([`ResultsUrl`]): a directory (`file:///dir`, the default) or an S3-compatible
//! bucket (`s3://bucket/prefix`, through `object_store`, configured by the standard
//! `AWS_*` environment). Workers put their files there, the HTTP shim and the CLI
//! read them back, and the retention sweeper ([`retention`]) deletes expired ones.
//!
//! Only names directly under the store are ever touched: `<task_id>.mp4`, `.gif`
//! or `.json` ([`is_result_name`]); the store never reads or deletes a key it was
//! not given by name or that does not look like a result.
//!
//! - [`url`]: parsing the URL, and result name to URI and back (pure).
//! - [`retention`]: the expiry rule (pure) and the sweep.
//! - `files`, `s3`: the two backends.

mod files;
pub mod retention;
mod s3;
pub mod url;

pub use retention::{expired, is_result_name, sweep, Swept};
pub use url::{BadResultsUrl, ResultsUrl};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use std::error::Error;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// The extensions of a result's files: the video, its GIF preview, its metadata.
pub const RESULT_EXTENSIONS: [&str; 3] = ["mp4", "gif", "json"];

/// An operation on the store, for errors and the failure metric's `op` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Storing a file.
    Put,
    /// Reading one back.
    Get,
    /// Deleting one.
    Delete,
    /// Listing the store.
    List,
}

impl Op {
    /// The stable name (`put`, `get`, `delete`, `list`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Delete => "delete",
            Op::List => "list",
        }
    }
}

/// What can go wrong with the results store. Messages name the store by its URL
/// (which holds no secret) and never the credentials.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// The URL does not parse.
    #[error(transparent)]
    BadUrl(#[from] BadResultsUrl),
    /// The S3 settings (the `AWS_*` environment) do not make a client.
    #[error("results store {url}: the S3 settings (AWS_* environment) are not usable")]
    Configure {
        /// The store.
        url: String,
        /// object_store's error.
        #[source]
        source: object_store::Error,
    },
    /// An operation failed (the store is down, refused, or a local file failed).
    #[error("results store {url}: {} `{name}` failed", .op.as_str())]
    Failed {
        /// The store.
        url: String,
        /// What was attempted.
        op: Op,
        /// The result's name (`""` for a listing).
        name: String,
        /// The I/O or S3 client's error.
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    /// No such result in the store.
    #[error("results store {url}: no result `{name}`")]
    NotFound {
        /// The store.
        url: String,
        /// The result's name.
        name: String,
    },
}

impl ResultsError {
    /// Whether the result is simply not there (expired, deleted, never stored).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ResultsError::NotFound { .. })
    }

    /// The operation that failed, if one did.
    pub fn op(&self) -> Option<Op> {
        match self {
            ResultsError::Failed { op, .. } => Some(*op),
            _ => None,
        }
    }
}

/// One result in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name (`<task_id>.mp4`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// A result (or a byte range of it) being read.
pub struct Fetched {
    /// The whole object's size.
    pub size: u64,
    /// The bytes this body holds, `start..end` of the object.
    pub range: Range<u64>,
    /// The bytes.
    pub body: BoxStream<'static, Result<Bytes, ResultsError>>,
}

/// An opened results store; cheap to clone (the S3 client is shared).
#[derive(Clone)]
pub struct ResultStore {
    url: ResultsUrl,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Files(PathBuf),
    S3(Arc<s3::S3>),
}

/// Shows the URL only: the S3 client's settings hold the credentials.
impl std::fmt::Debug for ResultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResultStore({})", self.url)
    }
}

impl ResultStore {
    /// Parses `url` and opens the store there; an S3 store reads the `AWS_*` environment
    /// (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ALLOW_HTTP`, ...) as `object_store`'s `from_env` does. Nothing is contacted yet.
    pub fn open(url: &str) -> Result<ResultStore, ResultsError> {
        ResultStore::open_with_env(url, std::env::vars())
    }

    /// Like [`ResultStore::open`], with the `AWS_*` settings given as pairs (tests
    /// give each store its own endpoint).
    pub fn open_with_env(
        url: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ResultStore, ResultsError> {
        let url = &ResultsUrl::parse(url)?;
        let backend = match url {
            ResultsUrl::Files(dir) => Backend::Files(dir.clone()),
            ResultsUrl::S3 { bucket, prefix } => Backend::S3(Arc::new(s3::S3::open(url, bucket, prefix, env)?)),
        };
        Ok(ResultStore { url: url.clone(), backend })
    }

    /// The file store in `dir` (made absolute): today's layout.
    pub fn files(dir: &Path) -> ResultStore {
        let url = ResultsUrl::files(dir);
        let backend = Backend::Files(url.dir().unwrap_or(dir).to_path_buf());
        ResultStore { url, backend }
    }

    /// Where it is.
    pub fn url(&self) -> &ResultsUrl {
        &self.url
    }

    /// The URI a reply carries for the result `name`.
    pub fn uri_of(&self, name: &str) -> String {
        self.url.uri_of(name)
    }

    /// Stores the local file `path` as `name`. A file store whose directory already
    /// holds it (the engine wrote it there) has nothing to do.
    pub async fn put_file(&self, name: &str, path: &Path) -> Result<(), ResultsError> {
        self.plain(Op::Put, name)?;
        match &self.backend {
            Backend::S3(s3) => s3.put_file(&self.url, name, path).await,
            Backend::Files(dir) => files::put_file(&self.url, dir, name, path).await,
        }
    }

    /// Reads `name`, or the byte `range` of it (clamped to its size).
    pub async fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Fetched, ResultsError> {
        self.plain(Op::Get, name)?;
        match &self.backend {
            Backend::S3(s3) => s3.get(&self.url, name, range).await,
            Backend::Files(dir) => files::get(&self.url, dir, name, range).await,
        }
    }

    /// The size of `name`.
    pub async fn size(&self, name: &str) -> Result<u64, ResultsError> {
        self.plain(Op::Get, name)?;
        match &self.backend {
            Backend::S3(s3) => s3.size(&self.url, name).await,
            Backend::Files(dir) => files::size(&self.url, dir, name).await,
        }
    }

    /// Deletes `name`; one that is already gone is no error.
    pub async fn delete(&self, name: &str) -> Result<(), ResultsError> {
        self.plain(Op::Delete, name)?;
        match &self.backend {
            Backend::S3(s3) => s3.delete(&self.url, name).await,
            Backend::Files(dir) => files::delete(&self.url, dir, name).await,
        }
    }

    /// Only plain names directly under the store are used: no `/`, no leading `.`.
    fn plain(&self, op: Op, name: &str) -> Result<(), ResultsError> {
        let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']);
        if plain {
            Ok(())
        } else {
            Err(failed(&self.url, op, name, "not a plain name directly under the store"))
        }
    }

    /// Everything directly under the store (not in sub-directories or deeper keys),
    /// with sizes and modification times; the caller picks the results.
    pub async fn list(&self) -> Result<Vec<Listed>, ResultsError> {
        match &self.backend {
            Backend::S3(s3) => s3.list(&self.url).await,
            Backend::Files(dir) => files::list(&self.url, dir).await,
        }
    }
}

/// A failed operation's error.
fn failed(url: &ResultsUrl, op: Op, name: &str, source: impl Into<Box<dyn Error + Send + Sync>>) -> ResultsError {
    ResultsError::Failed { url: url.to_string(), op, name: name.to_string(), source: source.into() }
}

/// `NotFound` for `name`.
fn not_found(url: &ResultsUrl, name: &str) -> ResultsError {
    ResultsError::NotFound { url: url.to_string(), name: name.to_string() }
}

/// `range` within an object of `size` bytes: `None` when it starts at or past the end.
fn clamp(range: Option<Range<u64>>, size: u64) -> Option<Range<u64>> {
    let r = range.unwrap_or(0..size);
    let end = r.end.min(size);
    (r.start < end || (size == 0 && r.start == 0)).then_some(r.start..end)
}
