//! Parked model bytes: a component in ONNX Runtime's ready-to-load form (ORT format),
//! held in sealed shared memory (a memfd) so that a later process can create its
//! session from it without disk I/O, protobuf parsing, initializer copies or
//! prepacking.
//!
//! Why: a degraded switch at real model sizes is dominated by session creation, and
//! most of that is turning the file into initializers. An ORT-format buffer that stays
//! mapped while the session lives lets ONNX Runtime point its initializers into the
//! buffer (`session.use_ort_model_bytes_directly`,
//! `session.use_ort_model_bytes_for_initializers`); prepacking is off for such
//! sessions because it would copy the weights again.
//!
//! Who does what: the process that loads a component cold from its `.onnx` file can
//! also write the ORT form into a memfd it creates ([`ParkTarget`]); another process
//! (the degraded worker) opens that memfd through `/proc/<pid>/fd/<n>`, seals it
//! ([`seal`]) and keeps it; a later process maps it read-only ([`Mapping::open`]).
//!
//! `unsafe` here: the mapping is an FFI edge (mmap/munmap and a slice over the mapped
//! bytes), kept to [`Mapping`]'s three blocks.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The largest component (model file plus `<file>.data`) whose ORT form is written
/// for parking: an ORT-format file is a flatbuffer, which holds at most 2 GiB; the
/// margin leaves room for the graph beside the weights.
pub const ORT_FORM_MAX_BYTES: u64 = (2 << 30) - (64 << 20);

/// Whether a component of `file_bytes` can be parked in ORT form (pure).
pub fn ort_form_fits(file_bytes: u64) -> bool {
    file_bytes <= ORT_FORM_MAX_BYTES
}

/// Bytes of a model file on disk with its external data, `<file>.data`, as this
/// project's exporters write it (`ops/export_wan.py`, `ops/gen_demo_models.py`).
/// External data under other names is not counted.
pub fn model_file_bytes(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut data = path.as_os_str().to_owned();
    data.push(".data");
    size(path) + size(Path::new(&data))
}

/// How a pipeline load uses parked bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParkPlan {
    /// Write each component's ORT form into a new memfd while loading it from its file.
    pub save: bool,
    /// Components to load from parked bytes, each from a path that maps them
    /// (`/proc/<pid>/fd/<n>`); a component whose parked bytes do not load falls back to
    /// its file, and [`crate::Pipeline::parked_loads`] tells which did not.
    pub from: Vec<(warmlane_shared::settings::pipeline::ComponentRole, PathBuf)>,
}

/// A memfd that a cold load writes the ORT form into.
#[derive(Debug)]
pub struct ParkTarget {
    fd: OwnedFd,
}

impl ParkTarget {
    /// A new empty memfd (sealable) named after the component.
    pub fn new(name: &str) -> std::io::Result<ParkTarget> {
        use rustix::fs::{memfd_create, MemfdFlags};
        let fd = memfd_create(format!("warmlane-park-{name}"), MemfdFlags::ALLOW_SEALING | MemfdFlags::CLOEXEC)?;
        Ok(ParkTarget { fd })
    }

    /// The path ONNX Runtime writes the optimized model to.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The descriptor number in this process (for another process's `/proc/<pid>/fd/<n>`).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Bytes written so far.
    pub fn len(&self) -> std::io::Result<u64> {
        Ok(rustix::fs::fstat(&self.fd)?.st_size as u64)
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Drops whatever a failed write left, so the target is not offered for parking.
    pub fn clear(&self) -> std::io::Result<()> {
        rustix::fs::ftruncate(&self.fd, 0)?;
        Ok(())
    }
}

/// Opens another process's parked memfd read-write (`/proc/<pid>/fd/<n>`) and seals it
/// against any further change, so no process can alter or resize bytes that sessions
/// map. Returns the file and its length.
pub fn adopt(path: &Path) -> std::io::Result<(File, u64)> {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    seal(&file)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

/// Seals a memfd: no write, shrink or grow, and no more seals.
pub fn seal(fd: impl AsFd) -> std::io::Result<()> {
    use rustix::fs::{fcntl_add_seals, SealFlags};
    fcntl_add_seals(fd, SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(())
}

/// Parked bytes mapped read-only into this process; unmapped on drop. A session built
/// from them must be dropped before the mapping.
#[derive(Debug)]
pub struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only shared memory owned by this value; the bytes never
// change (the memfd is sealed) and are only read through `as_slice`.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared references only read.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `path` (a parked memfd, seen as `/proc/<pid>/fd/<n>`) read-only.
    pub fn open(path: &Path) -> std::io::Result<Mapping> {
        use rustix::mm::{mmap, MapFlags, ProtFlags};
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
        if len == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the parked bytes are empty"));
        }
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file; the
        // pointer is owned by the returned value and unmapped once, in `drop`.
        let ptr = unsafe { mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::SHARED, &file, 0)? };
        let ptr = std::ptr::NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the life of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Mapped length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true for a mapping (empty files are refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `open` mapped, once.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn ort_form_size_limit() {
        for (bytes, fits) in [
            (0, true),
            (200 << 20, true),
            (ORT_FORM_MAX_BYTES, true),
            (ORT_FORM_MAX_BYTES + 1, false),
            (8 << 30, false),
        ] {
            assert_eq!(ort_form_fits(bytes), fits, "{bytes}");
        }
    }
}
