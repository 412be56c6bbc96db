//! Parked model bytes (issue #16): a load from the `.onnx` files writes each
//! component's ORT form into a memfd; a later load maps those bytes and generates the
//! same video; parked bytes that are truncated or garbage fall back to the file.

mod common;

use common::{capture, demo_settings, init_runtime, job, repo_root, scratch};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use warmlane_engine::park::{self, ParkPlan};
use warmlane_engine::{ComponentRole, LoadOptions, Pipeline};

fn load(plan: ParkPlan) -> Pipeline {
    init_runtime();
    let opts = LoadOptions { park: plan, ..LoadOptions::default() };
    Pipeline::load("anisora", &demo_settings("anisora"), &repo_root(), &opts).expect("load")
}

/// The parked memfds of a cold load, adopted (sealed) the way the degraded worker does.
fn park_anisora(test: &str) -> (Vec<(ComponentRole, File, u64)>, Vec<u8>) {
    let out = scratch(&format!("park-cold-{test}"));
    let mut cold = load(ParkPlan { save: true, from: vec![] });
    assert!(cold.parked_loads().is_empty(), "a cold load reads the files");
    let parked = cold.parked_out();
    let roles: Vec<ComponentRole> = parked.iter().map(|(r, _, _)| *r).collect();
    assert_eq!(roles, ComponentRole::ALL.to_vec(), "every component parked");
    let adopted = parked
        .into_iter()
        .map(|(role, fd, len)| {
            assert!(len > 0, "{role:?} parked bytes written");
            let (file, sealed_len) = park::adopt(&PathBuf::from(format!("/proc/self/fd/{fd}"))).expect("adopt");
            assert_eq!(sealed_len, len);
            (role, file, len)
        })
        .collect();
    let video = cold
        .generate(&job("cold", 8, 5.0, 42, &out), &mut |_, _| std::ops::ControlFlow::Continue(()))
        .expect("cold generation");
    (adopted, std::fs::read(video.path).expect("video"))
}

fn from(files: &[(ComponentRole, File, u64)]) -> ParkPlan {
    let from = files.iter().map(|(r, f, _)| (*r, PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())))).collect();
    ParkPlan { save: false, from }
}

#[test]
fn a_parked_load_generates_the_same_video() {
    let (files, cold_video) = park_anisora("same");
    let out = scratch("park-warm");
    let mut warm = load(from(&files));
    assert_eq!(warm.parked_loads(), ComponentRole::ALL.to_vec(), "every component from parked bytes");
    let video = warm
        .generate(&job("warm", 8, 5.0, 42, &out), &mut |_, _| std::ops::ControlFlow::Continue(()))
        .expect("parked generation");
    assert_eq!(std::fs::read(video.path).expect("video"), cold_video, "same seed, same video");

    // Sealed: nobody can change bytes that sessions map.
    let (_, file, _) = &files[1];
    let mut writable = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("open for write");
    assert!(writable.write_all(b"garbage").is_err(), "a sealed memfd refuses writes");
}

#[test]
fn truncated_or_garbage_parked_bytes_fall_back_to_the_file() {
    let (files, cold_video) = park_anisora("bad");
    let denoiser = &files[ComponentRole::Denoiser.index()];
    let whole = std::fs::read(format!("/proc/self/fd/{}", denoiser.1.as_raw_fd())).expect("read parked");
    let dir = scratch("park-bad");
    let bad: Vec<(ComponentRole, File, u64)> = [whole[..whole.len() / 2].to_vec(), vec![0x5a; 4096], vec![]]
        .into_iter()
        .map(|bytes| {
            let path = dir.join(format!("denoiser-{}.ort", bytes.len()));
            std::fs::write(&path, &bytes).expect("write bad bytes");
            (ComponentRole::Denoiser, File::open(&path).expect("open"), bytes.len() as u64)
        })
        .collect();
    for case in &bad {
        let out = scratch(&format!("park-fallback-{}", case.2));
        let plan = from(std::slice::from_ref(case));
        let (mut pipeline, captured) = capture(|| load(plan));
        assert!(pipeline.parked_loads().is_empty(), "{} bad bytes: loaded from the file", case.2);
        let warnings: Vec<_> = captured
            .target("warmlane::engine")
            .into_iter()
            .filter(|l| l["message"] == "parked bytes did not load; loading from the file")
            .collect();
        assert_eq!(warnings.len(), 1, "one warning naming the fallback: {:?}", captured.lines());
        assert_eq!(warnings[0]["component"], "denoiser");
        let video = pipeline
            .generate(&job("fallback", 8, 5.0, 42, &out), &mut |_, _| std::ops::ControlFlow::Continue(()))
            .expect("generation");
        assert_eq!(std::fs::read(video.path).expect("video"), cold_video, "the file's pipeline, same video");
    }
}
