//! Returning freed heap memory to the operating system (glibc `malloc_trim`).
//!
//! Why: after a heavy session is dropped, glibc keeps freed chunks in its arenas, so
//! the process RSS (what the memory budget and the operator see) stays high. This is
//! the engine's only foreign call besides ONNX Runtime itself, hence the only module
//! allowed `unsafe`.
#![allow(unsafe_code)]

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    fn malloc_trim(pad: usize) -> std::os::raw::c_int;
}

/// Asks the allocator to give free heap pages back; true if memory was released.
pub(crate) fn release_free_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a plain size, touches only allocator-internal
        // state under its own locks, and is documented as safe to call at any time.
        unsafe { malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
