//! Engine errors and their one mapping to the contract's error codes.
//!
//! Why a classifier: ONNX Runtime reports allocation failures only as text inside a
//! generic error. [`classify_ort_message`] is the single place that decides whether a
//! failed run was an out-of-memory (`gpu_oom`, retried by the memory manager) or any
//! other failure (`inference_failed`); simulated faults go through the same function.

use warmlane_shared::ErrorCode;

/// The cause of an engine error: ONNX Runtime's error, an I/O or encoding error, or
/// the engine's own description of what it found.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one line printed when the ONNX Runtime shared library cannot be found.
pub const LIBRARY_NOT_FOUND: &str =
    "ONNX Runtime library not found: set ORT_DYLIB_PATH or run ops/fetch-onnxruntime.sh";

/// Everything that can go wrong in the engine. Messages name the stage, file or field.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No `libonnxruntime` was found (see [`LIBRARY_NOT_FOUND`]).
    #[error("{}", LIBRARY_NOT_FOUND)]
    LibraryNotFound,
    /// The library was found but could not be loaded or initialised. The process
    /// keeps the first outcome and hands out copies, so the cause is kept as text.
    #[error("ONNX Runtime initialisation failed ({path}): {message}")]
    RuntimeInit {
        /// The library that was tried.
        path: String,
        /// What ONNX Runtime or the loader said.
        message: String,
    },
    /// A component's session could not be created.
    #[error("loading {component} from {path} failed")]
    Load {
        /// `text_encoder`, `denoiser` or `vae_decoder`.
        component: &'static str,
        /// The ONNX file.
        path: String,
        /// What ONNX Runtime (or the settings check) said.
        #[source]
        source: BoxError,
    },
    /// A configured feature this build cannot serve (e.g. a `tokenizer.json`).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A job parameter the pipeline cannot run (e.g. width not a multiple of 8).
    #[error("invalid job parameter {field}: {message}")]
    InvalidJob {
        /// The job field.
        field: &'static str,
        /// Rule and value.
        message: String,
    },
    /// The job ran past its time limit.
    #[error("inference ran past its limit of {limit_ms} ms (at {stage}, {elapsed_ms} ms elapsed)")]
    Timeout {
        /// Where it was noticed, e.g. `step 3/8`.
        stage: String,
        /// Time spent so far.
        elapsed_ms: u64,
        /// The job's limit.
        limit_ms: u64,
    },
    /// An allocation failed (device or host memory).
    #[error("out of memory at {stage}")]
    OutOfMemory {
        /// The stage, e.g. `denoiser step 2/4`.
        stage: String,
        /// What ONNX Runtime said.
        #[source]
        source: BoxError,
    },
    /// Any other failed run.
    #[error("inference failed at {stage}")]
    Inference {
        /// The stage, e.g. `vae_decoder`.
        stage: String,
        /// What ONNX Runtime (or the engine's check of its output) said.
        #[source]
        source: BoxError,
    },
    /// Writing the result failed.
    #[error("writing {path} failed")]
    Output {
        /// The file.
        path: String,
        /// The I/O or encoding error.
        #[source]
        source: BoxError,
    },
    /// The caller's progress callback asked to stop (a cancelled task).
    #[error("cancelled after {stage}")]
    Cancelled {
        /// The last stage that ran, e.g. `denoiser step 2/8`.
        stage: String,
    },
}

impl EngineError {
    /// The contract error code for this error (also the metric label).
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::InvalidJob { .. } => ErrorCode::InvalidParameter,
            EngineError::Timeout { .. } => ErrorCode::InferenceTimeout,
            EngineError::OutOfMemory { .. } => ErrorCode::GpuOom,
            EngineError::Cancelled { .. } => ErrorCode::Cancelled,
            EngineError::LibraryNotFound
            | EngineError::RuntimeInit { .. }
            | EngineError::Load { .. }
            | EngineError::Unsupported(_)
            | EngineError::Inference { .. }
            | EngineError::Output { .. } => ErrorCode::InferenceFailed,
        }
    }

    /// True for allocation failures, which a memory manager may retry after freeing memory.
    pub fn is_oom(&self) -> bool {
        matches!(self, EngineError::OutOfMemory { .. })
    }

    /// Classifies a failed ONNX Runtime call at `stage` into OOM or a generic failure
    /// by its message (ONNX Runtime has no error kind for allocation failures).
    pub(crate) fn from_ort(stage: impl Into<String>, source: impl Into<BoxError>) -> Self {
        let (stage, source) = (stage.into(), source.into());
        match classify_ort_message(&source.to_string()) {
            ErrorCode::GpuOom => EngineError::OutOfMemory { stage, source },
            _ => EngineError::Inference { stage, source },
        }
    }

    /// A failed stage with the engine's own description (a shape that does not match,
    /// a session that is not loaded, an injected fault).
    pub(crate) fn inference(stage: impl Into<String>, why: impl Into<String>) -> Self {
        EngineError::Inference { stage: stage.into(), source: why.into().into() }
    }
}

/// Substrings of ONNX Runtime / CUDA messages that mean an allocation failed.
const OOM_MARKERS: [&str; 5] =
    ["failed to allocate memory", "out of memory", "cuda failure 2", "bfcarena", "cudaerrormemoryallocation"];

/// Maps an ONNX Runtime error message to `gpu_oom` or `inference_failed`.
pub fn classify_ort_message(message: &str) -> ErrorCode {
    let lower = message.to_ascii_lowercase();
    if OOM_MARKERS.iter().any(|m| lower.contains(m)) {
        ErrorCode::GpuOom
    } else {
        ErrorCode::InferenceFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_allocation_failures() {
        let cases = [
            ("Failed to allocate memory for requested buffer of size 123", ErrorCode::GpuOom),
            ("CUDA failure 2: out of memory ; GPU=0", ErrorCode::GpuOom),
            ("BFCArena::AllocateRawInternal Available memory of 0 is smaller", ErrorCode::GpuOom),
            ("Got invalid dimensions for input: latent", ErrorCode::InferenceFailed),
            ("", ErrorCode::InferenceFailed),
        ];
        for (text, want) in cases {
            assert_eq!(classify_ort_message(text), want, "{text}");
        }
    }

    #[test]
    fn codes_are_exhaustive() {
        let timeout = EngineError::Timeout { stage: "step 1/2".into(), elapsed_ms: 2, limit_ms: 1 };
        assert_eq!(timeout.code(), ErrorCode::InferenceTimeout);
        assert_eq!(EngineError::from_ort("denoiser", "CUDA failure 2").code(), ErrorCode::GpuOom);
        assert_eq!(EngineError::from_ort("denoiser", "shape mismatch").code(), ErrorCode::InferenceFailed);
        assert_eq!(EngineError::LibraryNotFound.to_string(), LIBRARY_NOT_FOUND);
        let cancelled = EngineError::Cancelled { stage: "denoiser step 2/8".into() };
        assert_eq!(
            (cancelled.code(), cancelled.to_string().as_str()),
            (ErrorCode::Cancelled, "cancelled after denoiser step 2/8")
        );
        // The cause is the source, and the chain reads as one line.
        let oom = EngineError::from_ort("denoiser step 2/4", "CUDA failure 2");
        assert_eq!(oom.to_string(), "out of memory at denoiser step 2/4");
        let chain = warmlane_shared::error::Report(&oom).to_string();
        assert_eq!(chain, "out of memory at denoiser step 2/4: CUDA failure 2");
    }
}
