//! Readings for the manager. They are taken by `warmlane_engine::memory`, the one
//! reader of `/proc` and NVML; this module names what the manager uses.

pub use warmlane_engine::memory::{device_bytes_of, device_total_bytes, host_total_bytes, rss_of};
use warmlane_shared::memory::Backend;

/// NVML when a GPU is visible, else RSS: what the manager measures against.
pub fn backend() -> Backend {
    if warmlane_engine::memory::device_available() {
        Backend::Nvml
    } else {
        Backend::Rss
    }
}
