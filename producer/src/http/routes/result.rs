//! The files of a done task: `GET /tasks/{id}/result`, the video (`video/mp4`), and
//! `GET /tasks/{id}/preview`, its animated GIF (`image/gif`).
//!
//! Both answer HTTP range requests (`206 Partial Content`, `Accept-Ranges: bytes`):
//! a browser's media stack fetches video in ranges and seeks with them. From the
//! file store, through tower-http's `ServeFile`, path-checked: the task hash names the
//! file by a `file://` URI, and only `<results_dir>/<task_id>.mp4` (or `.gif`) is
//! ever served, after both paths are canonicalized (no links out of the directory).
//! From a remote store (`s3://`, [`super::stored`]): only when the URI names
//! `<task_id>.<ext>` directly under the configured store ([`expected_result_name`]).

use super::tasks::{checked_id, task_view, unknown};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use std::path::{Path as FsPath, PathBuf};
use tower_http::services::ServeFile;
use warmlane_infra::ResultsUrl;
use warmlane_shared::reply::{field, media};
use warmlane_shared::request::task_id_ok;
use warmlane_shared::TaskStatus;

/// Which file of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFile {
    /// The video: the hash's `result`, `<task_id>.mp4` (or `<task_id>.gif` for a task
    /// finished before MP4).
    Video,
    /// The preview: the hash's `preview`, `<task_id>.gif`.
    Preview,
}

impl ResultFile {
    /// The task hash field holding its URI.
    fn field(self) -> &'static str {
        match self {
            ResultFile::Video => field::RESULT,
            ResultFile::Preview => field::PREVIEW,
        }
    }

    /// The file extensions it may have, with their content types.
    fn accepted(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ResultFile::Video => &[("mp4", media::MP4), ("gif", media::GIF)],
            ResultFile::Preview => &[("gif", media::GIF)],
        }
    }

    fn what(self) -> &'static str {
        match self {
            ResultFile::Video => "result",
            ResultFile::Preview => "preview",
        }
    }
}

/// Where a done task's file must be, `<results_dir>/<task_id>.<ext>`, and its content
/// type, when the reply's `file://` URI names that file. Pure; `None` when the URI
/// names anything else.
pub fn expected_result_path(
    results_dir: &FsPath,
    task_id: &str,
    uri: &str,
    which: ResultFile,
) -> Option<(PathBuf, &'static str)> {
    if !task_id_ok(task_id) {
        return None;
    }
    let path = FsPath::new(uri.strip_prefix("file://")?);
    let name = path.file_name()?.to_str()?;
    if !path.is_absolute() {
        return None;
    }
    which.accepted().iter().find_map(|&(ext, content_type)| {
        let expected = format!("{task_id}.{ext}");
        (name == expected).then(|| (results_dir.join(expected), content_type))
    })
}

/// The name a done task's file must have in a remote store, `<task_id>.<ext>`
/// directly under it, and its content type, when the reply's URI names that
/// object. Pure; `None` when the URI names anything else.
pub fn expected_result_name(
    store: &ResultsUrl,
    task_id: &str,
    uri: &str,
    which: ResultFile,
) -> Option<(String, &'static str)> {
    if !task_id_ok(task_id) {
        return None;
    }
    let name = store.name_of(uri)?;
    which.accepted().iter().find_map(|&(ext, content_type)| {
        let expected = format!("{task_id}.{ext}");
        (name == expected).then_some((expected, content_type))
    })
}

/// The finished video (`video/mp4`), with range requests.
#[utoipa::path(
    get, path = "/tasks/{id}/result", tag = "tasks",
    params(
        ("id" = String, Path, description = "Task id"),
        ("Range" = Option<String>, Header, description = "A byte range, e.g. `bytes=0-1023`; answered with 206"),
    ),
    responses(
        (status = 200, description = "The video: H.264 in MP4, yuv420p, 16 fps, `moov` before `mdat` (tasks finished before MP4: an `image/gif`). `Accept-Ranges: bytes`", content_type = "video/mp4", body = Vec<u8>),
        (status = 206, description = "The requested byte range (`Content-Range`)", content_type = "video/mp4", body = Vec<u8>),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown task, not done, or the file is gone", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`: the range is outside the file (`Content-Range: bytes */<size>`)", body = ErrorBody),
        (status = 422, description = "`invalid_parameter`: bad task id", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn result(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    serve(&state, &id, ResultFile::Video, request).await
}

/// The animated GIF preview of the video (`image/gif`), with range requests.
#[utoipa::path(
    get, path = "/tasks/{id}/preview", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "The GIF: the same frames as the video", content_type = "image/gif", body = Vec<u8>),
        (status = 206, description = "The requested byte range (`Content-Range`)", content_type = "image/gif", body = Vec<u8>),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`: unknown task, not done, no preview, or the file is gone", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`: the range is outside the file (`Content-Range: bytes */<size>`)", body = ErrorBody),
        (status = 422, description = "`invalid_parameter`: bad task id", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn preview(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    serve(&state, &id, ResultFile::Preview, request).await
}

async fn serve(state: &AppState, id: &str, which: ResultFile, request: Request) -> Result<Response, ApiError> {
    checked_id(id)?;
    let hash = super::bounded("reading the task", state.backend.task(id)).await?;
    let view = task_view(id, &hash).ok_or_else(|| unknown(id))?;
    let what = which.what();
    let missing = |message: String| ApiError::NotFound { what, message };
    if view.status != TaskStatus::Done.as_str() {
        return Err(missing(format!("task `{id}` is {}; it has no {what}", view.status)));
    }
    let uri = hash.get(which.field()).cloned().ok_or_else(|| missing(format!("task `{id}` has no {what}")))?;
    let store = &state.config.results;
    if store.url().dir().is_none() {
        let outside = || missing(format!("the {what} of `{id}` is not a result of the results store"));
        let (name, content_type) = expected_result_name(store.url(), id, &uri, which).ok_or_else(|| {
            tracing::warn!(task_id = %id, "a {what} is outside the results store; check WARMLANE_RESULTS_URL of the shim and the workers");
            outside()
        })?;
        return super::stored::serve(store, &name, content_type, request.headers()).await;
    }
    let dir = &state.config.results_dir;
    let outside = || missing(format!("the {what} of `{id}` is not a file of the results directory"));
    let (path, content_type) = expected_result_path(dir, id, &uri, which).ok_or_else(outside)?;
    // The file the reply names must be the one in the results directory (no links out of it).
    let (named, served) =
        (tokio::fs::canonicalize(&uri["file://".len()..]).await, tokio::fs::canonicalize(&path).await);
    let canonical_dir = tokio::fs::canonicalize(dir).await;
    let served = match (named, served, canonical_dir) {
        (Ok(named), Ok(served), Ok(cdir)) if named == served && served.parent() == Some(cdir.as_path()) => served,
        (Ok(_), Ok(_), Ok(_)) => {
            tracing::warn!(task_id = %id, "a {what} is outside the results directory; check WARMLANE_RESULTS_DIR of the shim and the workers");
            return Err(outside());
        }
        _ => return Err(missing(format!("the {what} file of `{id}` is gone"))),
    };
    let answer = ServeFile::new(&served).try_call(request).await;
    let mut response = answer.map_err(|_| missing(format!("the {what} of `{id}` could not be read")))?.map(Body::new);
    match response.status() {
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED => {
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
            Ok(response)
        }
        StatusCode::NOT_FOUND => Err(missing(format!("the {what} file of `{id}` is gone"))),
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let size = tokio::fs::metadata(&served).await.map(|m| m.len()).unwrap_or(0);
            Err(ApiError::RangeNotSatisfiable { size })
        }
        _ => Ok(response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_paths_stay_in_the_results_dir() {
        let dir = FsPath::new("/srv/results");
        let video = |id: &str, uri: &str| expected_result_path(dir, id, uri, ResultFile::Video);
        assert_eq!(video("abc", "file:///srv/results/abc.mp4"), Some((dir.join("abc.mp4"), "video/mp4")));
        assert_eq!(
            video("abc", "file:///etc/abc.mp4"),
            Some((dir.join("abc.mp4"), "video/mp4")),
            "checked against the dir after canonicalizing"
        );
        assert_eq!(video("abc", "file:///srv/results/abc.gif"), Some((dir.join("abc.gif"), "image/gif")), "pre-MP4");
        assert_eq!(video("abc", "file:///srv/results/other.mp4"), None);
        assert_eq!(video("abc", "file:///srv/results/abc.json"), None);
        assert_eq!(video("abc", "http://x/abc.mp4"), None);
        assert_eq!(video("abc", "file://relative/abc.mp4"), None);
        assert_eq!(video("../x", "file:///srv/results/../x.mp4"), None);
    }

    #[test]
    fn previews_are_gifs_only() {
        let dir = FsPath::new("/srv/results");
        let preview = |uri: &str| expected_result_path(dir, "abc", uri, ResultFile::Preview);
        assert_eq!(preview("file:///srv/results/abc.gif"), Some((dir.join("abc.gif"), "image/gif")));
        assert_eq!(preview("file:///srv/results/abc.mp4"), None);
    }

    #[test]
    fn store_names_are_the_task_s_own_directly_under_the_store() {
        let store = ResultsUrl::parse("s3://videos/wl").expect("url");
        let video = |id: &str, uri: &str| expected_result_name(&store, id, uri, ResultFile::Video);
        assert_eq!(video("abc", "s3://videos/wl/abc.mp4"), Some(("abc.mp4".into(), "video/mp4")));
        assert_eq!(video("abc", "s3://videos/wl/abc.gif"), Some(("abc.gif".into(), "image/gif")), "pre-MP4");
        assert_eq!(video("abc", "s3://videos/wl/other.mp4"), None, "another task's video");
        assert_eq!(video("abc", "s3://videos/wl/abc.json"), None, "not a video");
        assert_eq!(video("abc", "s3://videos/other/abc.mp4"), None, "another prefix");
        assert_eq!(video("abc", "s3://videos/wl/x/abc.mp4"), None, "a deeper key");
        assert_eq!(video("abc", "s3://other/wl/abc.mp4"), None, "another bucket");
        assert_eq!(video("abc", "file:///srv/results/abc.mp4"), None, "a file of another store");
        assert_eq!(video("../x", "s3://videos/wl/../x.mp4"), None);
        let preview = expected_result_name(&store, "abc", "s3://videos/wl/abc.gif", ResultFile::Preview);
        assert_eq!(preview, Some(("abc.gif".into(), "image/gif")));
        assert_eq!(expected_result_name(&store, "abc", "s3://videos/wl/abc.mp4", ResultFile::Preview), None);
    }
}
