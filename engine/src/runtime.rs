//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! Why: `ort` is built with `load-dynamic`, so nothing is downloaded at build time and
//! the same binary runs on CPU hosts and CUDA hosts; the library comes from the PyPI
//! wheel via `ops/fetch-onnxruntime.sh`. The search order is `ORT_DYLIB_PATH`, then
//! `<repo>/.ort/libonnxruntime.so.1.31.1` looking upward from the current directory
//! and from the executable's directory.

use crate::error::EngineError;
use ort::environment::GlobalThreadPoolOptions;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// File name of the library inside `.ort/`.
pub const ORT_LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";
/// The environment variable that overrides the search.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";
/// `1` lets idle intra-op threads spin (busy-wait) for the next run; off by default.
pub const ORT_SPIN_ENV: &str = "WARMLANE_ORT_SPIN";
/// `1` gives CPU sessions ONNX Runtime's CPU memory arena back (faster small
/// allocations; the largest request's memory is kept for the session's life); off by
/// default (see `components::without_cpu_arena`).
pub const ORT_CPU_ARENA_ENV: &str = "WARMLANE_ORT_CPU_ARENA";
/// `0` stops CUDA sessions from shrinking their arena at the end of each stage of a
/// generation (the default gives unused chunks back to the device after the text
/// encoder, the last denoiser step and the decoder; see `Pipeline::run_options`).
/// An experiment knob for the GPU kit's per-step timing.
pub const CUDA_SHRINK_ENV: &str = "WARMLANE_CUDA_ARENA_SHRINK";

/// Whether CUDA arenas shrink at stage ends: anything but `0` in [`CUDA_SHRINK_ENV`].
pub fn cuda_arena_shrink() -> bool {
    std::env::var(CUDA_SHRINK_ENV).map_or(true, |v| v != "0")
}

/// The process-wide ONNX Runtime: the loaded library and its environment.
pub struct Runtime {
    env: ort::environment::Environment,
    library: PathBuf,
    cpu_arena: bool,
}

/// Why initialisation failed, kept so every later call reports the same thing.
enum InitFailure {
    NotFound,
    Failed { path: String, message: String },
}

static RUNTIME: OnceLock<Result<Runtime, InitFailure>> = OnceLock::new();

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("library", &self.library).finish()
    }
}

impl Runtime {
    /// Finds and loads the library once; later calls return the same runtime (or the
    /// same error, as a fresh value).
    pub fn init() -> Result<&'static Runtime, EngineError> {
        let slot = RUNTIME.get_or_init(|| {
            let library = find_library().ok_or(InitFailure::NotFound)?;
            load(&library).map_err(|message| InitFailure::Failed { path: library.display().to_string(), message })
        });
        match slot {
            Ok(runtime) => Ok(runtime),
            Err(InitFailure::NotFound) => Err(EngineError::LibraryNotFound),
            Err(InitFailure::Failed { path, message }) => {
                Err(EngineError::RuntimeInit { path: path.clone(), message: message.clone() })
            }
        }
    }

    /// The library file that was loaded.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Whether CPU sessions use ONNX Runtime's CPU arena (`WARMLANE_ORT_CPU_ARENA`).
    pub fn cpu_arena(&self) -> bool {
        self.cpu_arena
    }

    /// The ONNX Runtime environment sessions are built in.
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.env
    }
}

fn load(library: &Path) -> Result<Runtime, String> {
    if !library.is_file() {
        return Err(format!("{} is not a file", library.display()));
    }
    // One intra-op thread pool for every session of the process: the components of a
    // pipeline run one after another, and per-session pools would leave idle threads
    // spinning on the same cores while the next component runs.
    let spin = spin_setting()?;
    let cpu_arena = cpu_arena_setting()?;
    let builder = ort::init_from(library).map_err(|e| e.to_string())?;
    // Spinning keeps idle pool threads busy-waiting after every run; a worker shares
    // its cores with the broker client, Redis calls and, on small hosts, the broker.
    let pool = GlobalThreadPoolOptions::default().with_spin_control(spin).map_err(|e| e.to_string())?;
    let env = builder.with_name("warmlane").with_global_thread_pool(pool).build().map_err(|e| e.to_string())?;
    tracing::info!(target: "warmlane::engine", library = %library.display(), spin, cpu_arena, "ONNX Runtime loaded");
    Ok(Runtime { env, library: library.to_path_buf(), cpu_arena })
}

/// Reads `WARMLANE_ORT_SPIN`; a process that starts ONNX Runtime only later (the
/// degraded worker's runners) checks it at start with this.
pub fn spin_setting() -> Result<bool, String> {
    spin_from_env(std::env::var(ORT_SPIN_ENV).ok().as_deref())
}

/// Reads `WARMLANE_ORT_CPU_ARENA`; checked at start like [`spin_setting`].
pub fn cpu_arena_setting() -> Result<bool, String> {
    switch_from_env(ORT_CPU_ARENA_ENV, std::env::var(ORT_CPU_ARENA_ENV).ok().as_deref())
}

/// The value of `WARMLANE_ORT_SPIN`: unset, empty or `0` is off, `1` is on.
fn spin_from_env(value: Option<&str>) -> Result<bool, String> {
    switch_from_env(ORT_SPIN_ENV, value)
}

/// An on/off environment switch: unset, empty or `0` is off, `1` is on.
fn switch_from_env(name: &str, value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim) {
        None | Some("") | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(format!("{name} must be 0 or 1, not `{other}`")),
    }
}

/// The library path by the documented search order, if any candidate exists.
pub fn find_library() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(ORT_DYLIB_ENV).filter(|p| !p.is_empty()) {
        // An explicit setting wins even when wrong, so the loader's error names it.
        return Some(PathBuf::from(path));
    }
    let mut starts = Vec::new();
    if let Ok(dir) = std::env::current_dir() {
        starts.push(dir);
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        starts.push(dir);
    }
    starts.iter().find_map(|start| search_upward(start))
}

/// `<ancestor>/.ort/libonnxruntime.so.1.31.1` for the nearest ancestor of `start` that has it.
pub fn search_upward(start: &Path) -> Option<PathBuf> {
    start.ancestors().map(|dir| dir.join(".ort").join(ORT_LIBRARY_FILE)).find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_is_off_unless_asked_for() {
        assert_eq!(spin_from_env(None), Ok(false));
        assert_eq!(spin_from_env(Some("0")), Ok(false));
        assert_eq!(spin_from_env(Some("1")), Ok(true));
        let err = spin_from_env(Some("yes please")).unwrap_err();
        assert!(err.contains(ORT_SPIN_ENV) && err.contains("yes please"), "{err}");
        assert_eq!(switch_from_env(ORT_CPU_ARENA_ENV, Some(" 1 ")), Ok(true));
        let err = switch_from_env(ORT_CPU_ARENA_ENV, Some("on")).unwrap_err();
        assert!(err.starts_with(ORT_CPU_ARENA_ENV), "{err}");
    }

    #[test]
    fn search_walks_up_to_the_repo() {
        let root = std::env::temp_dir().join(format!("warmlane-ort-search-{}", std::process::id()));
        let deep = root.join("a/b/c");
        std::fs::create_dir_all(&deep).expect("dirs");
        assert_eq!(search_upward(&deep), None);
        std::fs::create_dir_all(root.join(".ort")).expect("dir");
        std::fs::write(root.join(".ort").join(ORT_LIBRARY_FILE), b"").expect("file");
        assert_eq!(search_upward(&deep), Some(root.join(".ort").join(ORT_LIBRARY_FILE)));
        let _ = std::fs::remove_dir_all(&root);
    }
}
