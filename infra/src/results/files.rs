//! The file store: results as files directly in one directory (`file:///dir`).

use super::{clamp, failed, not_found, Fetched, Listed, Op, ResultsError, ResultsUrl};
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::ErrorKind;
use std::ops::Range;
use std::path::Path;

/// Copies `path` in as `name` (written beside it, then renamed, so a reader never
/// sees half a file); nothing to do when `path` is that file already.
pub(super) async fn put_file(url: &ResultsUrl, dir: &Path, name: &str, path: &Path) -> Result<(), ResultsError> {
    let dest = dir.join(name);
    let fail = |e: std::io::Error| failed(url, Op::Put, name, e);
    if let (Ok(a), Ok(b)) = (tokio::fs::canonicalize(path).await, tokio::fs::canonicalize(&dest).await) {
        if a == b {
            return Ok(());
        }
    }
    tokio::fs::create_dir_all(dir).await.map_err(fail)?;
    let partial = dir.join(format!(".{name}.partial"));
    tokio::fs::copy(path, &partial).await.map_err(fail)?;
    tokio::fs::rename(&partial, &dest).await.map_err(fail)
}

/// Reads `name` (or a range of it) whole: the shim serves files itself, so this
/// is for the CLI and tests, and results are at most tens of MB.
pub(super) async fn get(
    url: &ResultsUrl,
    dir: &Path,
    name: &str,
    range: Option<Range<u64>>,
) -> Result<Fetched, ResultsError> {
    let bytes = tokio::fs::read(dir.join(name)).await.map_err(|e| io_error(url, Op::Get, name, e))?;
    let size = bytes.len() as u64;
    let range = clamp(range, size).ok_or_else(|| failed(url, Op::Get, name, format!("range outside {size} bytes")))?;
    let chunk = Bytes::from(bytes).slice(range.start as usize..range.end as usize);
    Ok(Fetched { size, range, body: futures_util::stream::once(async move { Ok(chunk) }).boxed() })
}

/// The size of `name`.
pub(super) async fn size(url: &ResultsUrl, dir: &Path, name: &str) -> Result<u64, ResultsError> {
    let meta = tokio::fs::metadata(dir.join(name)).await.map_err(|e| io_error(url, Op::Get, name, e))?;
    Ok(meta.len())
}

/// Removes `name`; one already gone is fine.
pub(super) async fn delete(url: &ResultsUrl, dir: &Path, name: &str) -> Result<(), ResultsError> {
    match tokio::fs::remove_file(dir.join(name)).await {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(failed(url, Op::Delete, name, e)),
        _ => Ok(()),
    }
}

/// The plain files of the directory (not sub-directories, not links' targets).
pub(super) async fn list(url: &ResultsUrl, dir: &Path) -> Result<Vec<Listed>, ResultsError> {
    let fail = |e: std::io::Error| failed(url, Op::List, "", e);
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        // No directory yet: nothing stored yet.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(fail(e)),
    };
    let mut listed = vec![];
    while let Some(entry) = entries.next_entry().await.map_err(fail)? {
        // An entry removed meanwhile, or not a plain file, is skipped.
        let Ok(meta) = entry.metadata().await else { continue };
        let (Some(name), true) = (entry.file_name().to_str().map(str::to_string), meta.is_file()) else { continue };
        if let Ok(modified) = meta.modified() {
            listed.push(Listed { name, size: meta.len(), modified });
        }
    }
    Ok(listed)
}

fn io_error(url: &ResultsUrl, op: Op, name: &str, e: std::io::Error) -> ResultsError {
    if e.kind() == ErrorKind::NotFound {
        not_found(url, name)
    } else {
        failed(url, op, name, e)
    }
}
