//! Replies and task state as written to Redis.
//!
//! Exactly one terminal [`Reply`] is pushed per admitted task, on
//! `<prefix>:reply:<task_id>`; the task hash `<prefix>:task:<task_id>` carries
//! the live status. Field names of the hash live in [`field`].

use crate::error::{ErrorCode, Rejection};
use serde::{Deserialize, Serialize};

/// Terminal outcome of a task as the caller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    /// The video is ready.
    Done,
    /// Admitted, then failed.
    Failed,
    /// Refused before or at admission.
    Rejected,
}

/// Status values of the task hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Admitted, waiting in a queue.
    Pending,
    /// A worker is on it.
    Processing,
    /// Finished with a video.
    Done,
    /// Finished with an error code.
    Failed,
}

impl TaskStatus {
    /// The stable string stored in the hash.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Processing => "processing",
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
        }
    }

    /// Parses the stored string.
    pub fn parse(s: &str) -> Option<TaskStatus> {
        [TaskStatus::Pending, TaskStatus::Processing, TaskStatus::Done, TaskStatus::Failed]
            .into_iter()
            .find(|t| t.as_str() == s)
    }

    /// Whether no further change is expected.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Done | TaskStatus::Failed)
    }
}

/// Values of the task hash's `stage` field while a worker runs the task.
pub mod stage {
    /// The denoising steps (`progress` counts them).
    pub const DENOISING: &str = "denoising";
    /// After the last step: the VAE decode, then the video encode and write.
    pub const DECODING: &str = "decoding";
}

/// Content types of the files a result names, written once.
pub mod media {
    /// The video: H.264 in MP4.
    pub const MP4: &str = "video/mp4";
    /// The animated GIF preview (and the video of replies from before MP4).
    pub const GIF: &str = "image/gif";

    /// The content type of a result file, from its extension; `None` for anything
    /// that is neither an MP4 nor a GIF.
    pub fn of(path: &str) -> Option<&'static str> {
        match path.rsplit_once('.').map(|(_, ext)| ext) {
            Some("mp4") => Some(MP4),
            Some("gif") => Some(GIF),
            _ => None,
        }
    }

    /// `content_type` of a reply that has none: replies before MP4 named a GIF.
    pub(crate) fn legacy() -> String {
        GIF.to_string()
    }
}

/// Where the finished video is.
///
/// `content_type` and `preview_uri` are additions to the contract's `uri, frames,
/// width, height, bytes`; both are defaulted on decode, so replies written before
/// them still parse (as a GIF without a preview).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultInfo {
    /// `file://` URI of the video in the results directory (`<task_id>.mp4`).
    pub uri: String,
    /// Frames in the video.
    pub frames: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size of the video file.
    pub bytes: u64,
    /// Content type of `uri`: [`media::MP4`] (absent in older replies: [`media::GIF`]).
    #[serde(default = "media::legacy")]
    pub content_type: String,
    /// `file://` URI of the animated GIF preview beside the video (`<task_id>.gif`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_uri: Option<String>,
}

/// Timings that are known when the reply is written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// From admission to the start of inference (or to the refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ms: Option<u64>,
    /// Inference time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_ms: Option<u64>,
}

/// The terminal reply of the contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Wire version, 1.
    pub v: u32,
    /// The task.
    pub task_id: String,
    /// Outcome.
    pub status: ReplyStatus,
    /// `None` when done.
    pub code: Option<ErrorCode>,
    /// Detail for the code.
    pub reason: Option<String>,
    /// For humans; never secrets.
    pub message: String,
    /// `anisora`, `phr00t`, `degraded`, or nil when refused before routing.
    pub lane: Option<String>,
    /// The video, when done.
    pub result: Option<ResultInfo>,
    /// Timings.
    #[serde(default)]
    pub timings: Timings,
}

impl Reply {
    /// A successful reply.
    pub fn done(task_id: &str, lane: &str, result: ResultInfo, timings: Timings) -> Reply {
        Reply {
            v: 1,
            task_id: task_id.to_string(),
            status: ReplyStatus::Done,
            code: None,
            reason: None,
            message: "done".to_string(),
            lane: Some(lane.to_string()),
            result: Some(result),
            timings,
        }
    }

    /// A coded reply; `status` is `Rejected` or `Failed`.
    pub fn coded(
        task_id: &str,
        status: ReplyStatus,
        lane: Option<&str>,
        rejection: &Rejection,
        timings: Timings,
    ) -> Reply {
        Reply {
            v: 1,
            task_id: task_id.to_string(),
            status,
            code: Some(rejection.code),
            reason: Some(rejection.reason.clone()),
            message: rejection.message.clone(),
            lane: lane.map(str::to_string),
            result: None,
            timings,
        }
    }

    /// MessagePack map with string keys.
    pub fn to_msgpack(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// Decodes a reply body.
    pub fn from_msgpack(body: &[u8]) -> Result<Reply, rmp_serde::decode::Error> {
        rmp_serde::from_slice(body)
    }

    /// The task hash status this reply ends in.
    pub fn task_status(&self) -> TaskStatus {
        match self.status {
            ReplyStatus::Done => TaskStatus::Done,
            ReplyStatus::Failed | ReplyStatus::Rejected => TaskStatus::Failed,
        }
    }
}

/// Field names of the task hash.
pub mod field {
    /// `pending`, `processing`, `done`, `failed`.
    pub const STATUS: &str = "status";
    /// Lane the task was routed to.
    pub const LANE: &str = "lane";
    /// Model of the task.
    pub const MODEL: &str = "model";
    /// `<step>/<steps>`.
    pub const PROGRESS: &str = "progress";
    /// Last update, unix ms.
    pub const UPDATED_AT_MS: &str = "updated_at_ms";
    /// Admission time, unix ms.
    pub const SUBMITTED_AT_MS: &str = "submitted_at_ms";
    /// When a worker took it, unix ms.
    pub const STARTED_AT_MS: &str = "started_at_ms";
    /// When it ended, unix ms.
    pub const FINISHED_AT_MS: &str = "finished_at_ms";
    /// Error code on failure.
    pub const CODE: &str = "code";
    /// Reason of the code.
    pub const REASON: &str = "reason";
    /// Human message of the code.
    pub const MESSAGE: &str = "message";
    /// Result URI on success (the MP4).
    pub const RESULT: &str = "result";
    /// Preview URI on success (the GIF), when the reply has one.
    pub const PREVIEW: &str = "preview";
    /// Content type of the result on success.
    pub const CONTENT_TYPE: &str = "content_type";
    /// Fallback cause when routed degraded: `capacity`, `quota`, `manual`.
    pub const FALLBACK_CAUSE: &str = "fallback_cause";
    /// Deliveries so far (poison detection).
    pub const ATTEMPTS: &str = "attempts";
    /// Worker that processed it.
    pub const WORKER: &str = "worker";
    /// Inference duration, ms.
    pub const INFERENCE_MS: &str = "inference_ms";
    /// Time in queue before processing, ms.
    pub const QUEUED_MS: &str = "queued_ms";
    /// What a running task is doing (see [`super::stage`]); removed when it ends.
    pub const STAGE: &str = "stage";
    /// `1` once a cancel asked the worker running the task to stop.
    pub const CANCEL_REQUESTED: &str = "cancel_requested";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_a_named_map_with_nil_code_when_done() {
        let r = Reply::done(
            "t1",
            "anisora",
            ResultInfo {
                uri: "file:///r/t1.mp4".into(),
                frames: 8,
                width: 64,
                height: 64,
                bytes: 10,
                content_type: media::MP4.into(),
                preview_uri: Some("file:///r/t1.gif".into()),
            },
            Timings { queued_ms: Some(3), inference_ms: None },
        );
        let bytes = r.to_msgpack();
        let value = rmpv::decode::read_value(&mut bytes.as_slice()).unwrap();
        let map = value.as_map().unwrap();
        let get = |k: &str| map.iter().find(|(key, _)| key.as_str() == Some(k)).map(|(_, v)| v.clone());
        assert_eq!(get("status").unwrap().as_str(), Some("done"));
        assert!(get("code").unwrap().is_nil());
        let timings = get("timings").unwrap();
        assert_eq!(timings.as_map().unwrap().len(), 1, "unknown timings are left out");
        assert_eq!(Reply::from_msgpack(&bytes).unwrap(), r);
    }

    #[test]
    fn result_carries_the_video_its_type_and_the_preview() {
        let result = ResultInfo {
            uri: "file:///r/t.mp4".into(),
            frames: 4,
            width: 32,
            height: 24,
            bytes: 9,
            content_type: media::MP4.into(),
            preview_uri: Some("file:///r/t.gif".into()),
        };
        let r = Reply::done("t", "anisora", result, Timings::default());
        let value = rmpv::decode::read_value(&mut r.to_msgpack().as_slice()).unwrap();
        let map = value.as_map().unwrap();
        let result = map.iter().find(|(k, _)| k.as_str() == Some("result")).unwrap().1.as_map().unwrap().clone();
        let get = |k: &str| result.iter().find(|(key, _)| key.as_str() == Some(k)).map(|(_, v)| v.clone());
        assert_eq!(get("uri").unwrap().as_str(), Some("file:///r/t.mp4"));
        assert_eq!(get("content_type").unwrap().as_str(), Some("video/mp4"));
        assert_eq!(get("preview_uri").unwrap().as_str(), Some("file:///r/t.gif"));
    }

    #[test]
    fn a_result_from_before_mp4_still_parses_as_a_gif() {
        #[derive(Serialize)]
        struct OldResult<'a> {
            uri: &'a str,
            frames: u32,
            width: u32,
            height: u32,
            bytes: u64,
        }
        let old = OldResult { uri: "file:///r/t.gif", frames: 2, width: 16, height: 16, bytes: 5 };
        let result: ResultInfo = rmp_serde::from_slice(&rmp_serde::to_vec_named(&old).unwrap()).unwrap();
        assert_eq!((result.content_type.as_str(), result.preview_uri), ("image/gif", None));
        assert_eq!(result.uri, "file:///r/t.gif");
    }

    #[test]
    fn media_types_by_extension() {
        assert_eq!(media::of("/r/t.mp4"), Some("video/mp4"));
        assert_eq!(media::of("file:///r/t.gif"), Some("image/gif"));
        assert_eq!(media::of("/r/t.json"), None);
        assert_eq!(media::of("mp4"), None);
    }

    #[test]
    fn coded_reply_carries_code_and_reason() {
        let r = Reply::coded("t2", ReplyStatus::Rejected, None, &Rejection::queue_full(25), Timings::default());
        assert_eq!(r.code, Some(ErrorCode::QueueOverloaded));
        assert_eq!(r.reason.as_deref(), Some("queue_full"));
        assert_eq!(r.task_status(), TaskStatus::Failed);
        assert_eq!(Reply::from_msgpack(&r.to_msgpack()).unwrap(), r);
    }

    #[test]
    fn task_status_strings() {
        for s in ["pending", "processing", "done", "failed"] {
            assert_eq!(TaskStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(TaskStatus::Done.is_terminal() && !TaskStatus::Processing.is_terminal());
    }
}
