//! [`ResultsUrl`]: where results are kept, parsed once at start from
//! `file:///abs/dir` or `s3://bucket/optional/prefix`, and the pure rules that turn
//! a result's name into the URI a reply carries and back.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where results are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultsUrl {
    /// A directory (absolute): `file:///dir`; the default, the workers' `--results-dir`.
    Files(PathBuf),
    /// An S3-compatible bucket, with an optional key prefix (no leading or trailing `/`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix, `""` for the bucket's root.
        prefix: String,
    },
}

/// Why a results URL was refused: a one-line message naming the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("results URL `{url}`: {why} (use file:///absolute/dir or s3://bucket/prefix)")]
pub struct BadResultsUrl {
    /// The URL given.
    pub url: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl ResultsUrl {
    /// Parses `file:///abs/dir` or `s3://bucket/prefix` (a trailing `/` is allowed).
    pub fn parse(url: &str) -> Result<ResultsUrl, BadResultsUrl> {
        // The message repeats the URL: never with a password someone put in it.
        let bad = |why| BadResultsUrl { url: crate::config::redact_url(url), why };
        let url_trimmed = url.trim();
        if let Some(path) = url_trimmed.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("a file URL needs an absolute path and no host (file:///dir)"));
            }
            if path.split('/').any(|s| s == "..") {
                return Err(bad("`..` is not allowed in the path"));
            }
            // Components drop a trailing `/` and doubled ones.
            return Ok(ResultsUrl::Files(Path::new(path).components().collect()));
        }
        let Some(rest) = url_trimmed.strip_prefix("s3://") else {
            return Err(bad("unsupported scheme"));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') {
            return Err(bad("keys do not belong in the URL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"));
        }
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(bad("the bucket must be 3-63 characters of [a-z0-9.-]"));
        }
        let prefix = prefix.trim_end_matches('/');
        let segment_ok = |s: &str| {
            !s.is_empty() && s != "." && s != ".." && s.bytes().all(|b| b.is_ascii_graphic() && !b"?#%\\".contains(&b))
        };
        if !prefix.is_empty() && !prefix.split('/').all(segment_ok) {
            return Err(bad(
                "the prefix must be `/`-separated names of printable characters, without ?, #, %, \\, . or ..",
            ));
        }
        Ok(ResultsUrl::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }

    /// The file store in `dir`, made absolute against the working directory.
    pub fn files(dir: &Path) -> ResultsUrl {
        ResultsUrl::Files(std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()))
    }

    /// The URI a reply carries for the result `name` (`<task_id>.mp4`).
    pub fn uri_of(&self, name: &str) -> String {
        match self {
            ResultsUrl::Files(dir) => format!("file://{}", dir.join(name).display()),
            ResultsUrl::S3 { .. } => format!("{self}/{name}"),
        }
    }

    /// The name a result URI gives directly under this store, when it names one
    /// there; `None` for anything else (another store, a nested key, a bare prefix).
    /// For a file store the comparison is lexical; the shim still canonicalizes.
    pub fn name_of<'u>(&self, uri: &'u str) -> Option<&'u str> {
        let rest = match self {
            ResultsUrl::Files(dir) => {
                let path = Path::new(uri.strip_prefix("file://")?);
                if path.parent()? != dir.as_path() {
                    return None;
                }
                path.file_name()?.to_str()?
            }
            ResultsUrl::S3 { .. } => uri.strip_prefix(&self.to_string())?.strip_prefix('/')?,
        };
        (!rest.is_empty() && !rest.contains('/') && rest != "." && rest != "..").then_some(rest)
    }

    /// The store's own directory, when it is a file store.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            ResultsUrl::Files(dir) => Some(dir),
            ResultsUrl::S3 { .. } => None,
        }
    }
}

impl fmt::Display for ResultsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResultsUrl::Files(dir) => write!(f, "file://{}", dir.display()),
            ResultsUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            ResultsUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> ResultsUrl {
        ResultsUrl::S3 { bucket: bucket.into(), prefix: prefix.into() }
    }

    #[test]
    fn urls_parse_or_say_why_not() {
        let cases: [(&str, Result<ResultsUrl, &str>); 15] = [
            ("file:///srv/results", Ok(ResultsUrl::Files("/srv/results".into()))),
            ("file:///srv//results/", Ok(ResultsUrl::Files("/srv/results".into()))),
            ("s3://videos", Ok(s3("videos", ""))),
            ("s3://videos/", Ok(s3("videos", ""))),
            ("s3://videos/warmlane/prod/", Ok(s3("videos", "warmlane/prod"))),
            (" s3://my.bucket-1/a ", Ok(s3("my.bucket-1", "a"))),
            ("file://relative/dir", Err("absolute path")),
            ("file:///srv/../etc", Err("`..`")),
            ("http://example.com/x", Err("unsupported scheme")),
            ("/srv/results", Err("unsupported scheme")),
            ("s3://", Err("bucket must be")),
            ("s3://Upper/x", Err("bucket must be")),
            ("s3://videos/a//b", Err("prefix must be")),
            ("s3://videos/a/../b", Err("prefix must be")),
            ("s3://AKIA:sekrit@videos/p", Err("keys do not belong in the URL")),
        ];
        for (url, want) in cases {
            match (ResultsUrl::parse(url), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{url}"),
                (Err(e), Err(part)) => {
                    let text = e.to_string();
                    let shown = crate::config::redact_url(url);
                    assert!(text.contains(part) && text.contains(&shown) && !text.contains('\n'), "{url}: {text}");
                    assert!(!text.contains("sekrit"), "{text}");
                }
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn uris_round_trip_only_under_the_store() {
        let files = ResultsUrl::Files("/srv/results".into());
        let bucket = s3("videos", "");
        let prefixed = s3("videos", "wl/prod");
        assert_eq!(files.uri_of("t1.mp4"), "file:///srv/results/t1.mp4");
        assert_eq!(bucket.uri_of("t1.mp4"), "s3://videos/t1.mp4");
        assert_eq!(prefixed.uri_of("t1.gif"), "s3://videos/wl/prod/t1.gif");
        let cases = [
            (&files, "file:///srv/results/t1.mp4", Some("t1.mp4")),
            (&files, "file:///srv/other/t1.mp4", None),
            (&files, "file:///srv/results/sub/t1.mp4", None),
            (&files, "s3://videos/t1.mp4", None),
            (&bucket, "s3://videos/t1.mp4", Some("t1.mp4")),
            (&bucket, "s3://videos/wl/t1.mp4", None),
            (&bucket, "s3://videosx/t1.mp4", None),
            (&bucket, "s3://videos/", None),
            (&prefixed, "s3://videos/wl/prod/t1.mp4", Some("t1.mp4")),
            (&prefixed, "s3://videos/wl/prodx/t1.mp4", None),
            (&prefixed, "s3://videos/wl/prod/../t1.mp4", None),
            (&prefixed, "s3://videos/t1.mp4", None),
            (&prefixed, "file:///srv/results/t1.mp4", None),
        ];
        for (store, uri, want) in cases {
            assert_eq!(store.name_of(uri), want, "{store} {uri}");
        }
        for store in [&files, &bucket, &prefixed] {
            assert_eq!(store.name_of(&store.uri_of("t9.json")), Some("t9.json"), "{store}");
        }
    }
}
