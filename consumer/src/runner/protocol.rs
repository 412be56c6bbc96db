//! The runner protocol: length-prefixed MessagePack frames over the child's stdin
//! (requests) and stdout (responses). Logs never touch stdout; they go to stderr,
//! which the parent forwards.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! `rmp_serde::to_vec_named` output. Encoding and decoding are pure over `Read` and
//! `Write`, so they are tested on byte buffers.

use crate::engine::{EngineFailure, Output};
use crate::memory::PipelineReport;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use warmlane_shared::settings::pipeline::{ComponentRole, Provider};
use warmlane_shared::ErrorCode;

/// Largest frame accepted (a request is a few hundred bytes; a memory report a few KB).
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Test hooks carried by `Prepare`: failures the runner injects. Default none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerFaults {
    /// The engine's `FaultPlan.oom_next_runs`.
    pub oom_next_runs: u32,
    /// The engine's `FaultPlan.fail_at_step`.
    pub fail_at_step: Option<u32>,
    /// Exit the process (a crash) when this step is reported.
    pub exit_at_step: Option<u32>,
    /// Stop answering (a hang) when this step is reported.
    pub hang_at_step: Option<u32>,
    /// After reporting this step, in the next generation only, wait for the parent's
    /// next frame before going on (a test sends its `Cancel` there, with no race
    /// against the run's end).
    #[serde(default)]
    pub wait_frame_at_step: Option<u32>,
}

/// Parked bytes in a `Prepare` (see `warmlane_engine::park`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkRequest {
    /// Write each component's ORT form into a memfd while loading it from its file.
    pub save: bool,
    /// Components to load from parked bytes, each with the path that maps them
    /// (`/proc/<worker pid>/fd/<n>`).
    pub from: Vec<(ComponentRole, String)>,
}

/// One component's ORT form, written by a runner into a memfd it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedPart {
    /// Which component.
    pub role: ComponentRole,
    /// The descriptor number in the runner.
    pub fd: i32,
    /// Bytes written.
    pub len: u64,
}

/// Parent -> runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Load the runner's model. The settings travel in the frame so parent and child
    /// use the same checked settings (no second read of a file that may have changed).
    Prepare {
        /// The model to load.
        model: String,
        /// `inference_settings.json` text, as the parent holds it.
        settings_json: String,
        /// The directory relative pipeline paths resolve against.
        base_dir: String,
        /// Provider override.
        provider: Option<Provider>,
        /// Injected failures (tests).
        faults: RunnerFaults,
        /// Parked bytes to load from, and whether to park what loads from files.
        #[serde(default)]
        park: ParkRequest,
    },
    /// Generate one request.
    Generate {
        /// The validated request as MessagePack (`ValidRequest::to_msgpack`); the runner
        /// validates it again against the same settings.
        request: Vec<u8>,
        /// The lane serving it.
        lane: String,
        /// Where the video goes.
        out_dir: String,
    },
    /// Stop the generation of `task_id` after its current denoising step; sent while a
    /// `Generate` runs and never answered itself (the `Generate` ends `Failed` with
    /// `cancelled`). One that arrives after its generation ended is ignored.
    Cancel {
        /// The task whose generation to stop.
        task_id: String,
    },
    /// Release one component; answered with `Memory`.
    ReleaseComponent {
        /// Which component.
        role: ComponentRole,
    },
    /// Report memory; answered with `Memory`.
    Memory,
    /// Release everything and exit.
    Shutdown,
}

/// Runner -> parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The pipeline is loaded and warm.
    Loaded {
        /// Load plus warm-up time.
        load_ms: u64,
        /// Of which the warm-up run.
        #[serde(default)]
        warmup_ms: u64,
        /// Memfds this runner wrote components' ORT form into (when asked to save);
        /// the parent adopts them through `/proc/<runner pid>/fd/<fd>` before the
        /// runner exits.
        #[serde(default)]
        parked: Vec<ParkedPart>,
        /// Components that loaded from the offered parked bytes (the others fell back
        /// to their files).
        #[serde(default)]
        from_parked: Vec<ComponentRole>,
    },
    /// A denoising step finished.
    Progress {
        /// Steps done.
        step: u32,
        /// Steps in all.
        steps: u32,
    },
    /// The video is written.
    Done {
        /// What was written.
        output: Output,
    },
    /// The request failed with a contract code.
    Failed {
        /// `gpu_oom`, `inference_timeout`, `inference_failed`, ...
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// The pipeline's measurements (`None` when nothing is loaded).
    Memory {
        /// The report.
        report: Option<PipelineReport>,
    },
}

impl From<EngineFailure> for Response {
    fn from(f: EngineFailure) -> Self {
        Response::Failed { code: f.code, message: f.message }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended inside a frame.
    #[error("runner stream: {0}")]
    Io(#[from] io::Error),
    /// The length prefix is over the limit.
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    /// The bytes are not the expected message.
    #[error("undecodable frame")]
    Decode(#[from] rmp_serde::decode::Error),
}

/// Writes one frame and flushes.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = rmp_serde::to_vec_named(msg).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {} bytes is over the limit", body.len()),
        ));
    }
    w.write_all(&(body.len() as u32).to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<Option<T>, FrameError> {
    let mut len = [0_u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0_u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(rmp_serde::from_slice(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msgs: &[T]) {
        let mut buf = Vec::new();
        for m in msgs {
            write_frame(&mut buf, m).expect("write");
        }
        let mut r = buf.as_slice();
        for m in msgs {
            let got: T = read_frame(&mut r).expect("read").expect("a frame");
            assert_eq!(&got, m);
        }
        assert!(read_frame::<_, T>(&mut r).expect("clean end").is_none());
    }

    #[test]
    fn frames_roundtrip() {
        roundtrip(&[
            Request::Prepare {
                model: "anisora".into(),
                settings_json: "{}".into(),
                base_dir: "/x".into(),
                provider: Some(Provider::Cuda),
                faults: RunnerFaults::default(),
                park: ParkRequest { save: true, from: vec![(ComponentRole::Denoiser, "/proc/1/fd/9".into())] },
            },
            Request::Generate {
                request: vec![0x81, 0xa1, 0x76, 1],
                lane: "degraded".into(),
                out_dir: "results".into(),
            },
            Request::ReleaseComponent { role: ComponentRole::Denoiser },
            Request::Memory,
            Request::Shutdown,
        ]);
        let output = Output {
            path: PathBuf::from("r/t.gif"),
            bytes: 10,
            preview_path: None,
            frames: 8,
            width: 64,
            height: 64,
            inference_ms: 12,
        };
        roundtrip(&[
            Response::Loaded { load_ms: 3, warmup_ms: 1, parked: vec![], from_parked: vec![] },
            Response::Loaded {
                load_ms: 3,
                warmup_ms: 0,
                parked: vec![ParkedPart { role: ComponentRole::VaeDecoder, fd: 7, len: 4096 }],
                from_parked: vec![ComponentRole::TextEncoder],
            },
            Response::Progress { step: 1, steps: 8 },
            Response::Done { output },
            Response::Failed { code: ErrorCode::GpuOom, message: "x".into() },
            Response::Memory { report: None },
        ]);
    }

    #[test]
    fn bad_frames_are_errors() {
        let cut: &[u8] = &[0, 0];
        assert!(matches!(read_frame::<_, Request>(&mut &cut[..]), Err(FrameError::Io(_))));
        let huge = (u32::MAX).to_be_bytes();
        assert!(matches!(read_frame::<_, Request>(&mut &huge[..]), Err(FrameError::TooLarge(_))));
        let short: &[u8] = &[0, 0, 0, 9, 1, 2];
        assert!(matches!(read_frame::<_, Request>(&mut &short[..]), Err(FrameError::Io(_))));
        let junk: &[u8] = &[0, 0, 0, 1, 0xc1];
        assert!(matches!(read_frame::<_, Request>(&mut &junk[..]), Err(FrameError::Decode(_))));
    }
}
