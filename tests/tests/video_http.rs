//! The MP4 a user downloads, checked by ffprobe: a model's real worker (a demo model,
//! and the real Wan2.1 architecture, `wan-tiny`)
//! (ONNX Runtime on CPU) generates through the fleet, the HTTP shim serves
//! `GET /tasks/{id}/result`, and ffprobe must read H.264, yuv420p, the requested
//! width and height, and exactly the requested number of frames (`-count_frames`).
//!
//! [`check_mp4_through_http`] takes the model and the request, so every model the
//! fleet ships gets the same check with one more `#[tokio::test]`.
//!
//! Needs `ffprobe` (Debian's `ffmpeg`, installed by ops/test.sh; `FFPROBE` overrides
//! the path); without it the test fails and says how to install it.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warmlane_producer::http::ServeArgs;
use warmlane_tests::fleet::Fleet;
use warmlane_tests::http::http;
use warmlane_tests::{prefix, settings_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anisora_mp4_through_the_shim_is_h264_yuv420p_at_the_requested_size() {
    let request = json!({"model": "anisora", "prompt": "a paper boat on a river at dusk",
                         "width": 48, "height": 32, "frames": 6, "seed": 42});
    check_mp4_through_http("anisora", request).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_tiny_mp4_through_the_shim_is_h264_with_the_requested_frames() {
    // The real Wan2.1 architecture; 13 frames = 4 latent frames, 4x temporal compression.
    let request = json!({"model": "wan-tiny", "prompt": "a red fox runs through fresh snow at dawn",
                         "width": 48, "height": 32, "frames": 13, "steps": 4, "cfg": 5.0, "seed": 7});
    check_mp4_through_http("wan-tiny", request).await;
}

/// What ffprobe says of the first video stream.
#[derive(Debug, PartialEq)]
struct Probe {
    codec: String,
    pix_fmt: String,
    width: u64,
    height: u64,
    frames: u64,
}

/// Submits `request` (for `model`) to a shim in front of a fleet with one real worker
/// on `model`'s lane, downloads the finished MP4 over HTTP and checks it with ffprobe
/// against the request's width, height and frames.
async fn check_mp4_through_http(model: &str, request: Value) {
    let ffprobe = ffprobe();
    let want = |field: &str| request[field].as_u64().unwrap_or_else(|| panic!("the request sets `{field}`"));
    let (width, height, frames) = (want("width"), want("height"), want("frames"));
    let mut fleet = Fleet::start(&prefix(&format!("mp4-{model}")), settings_with(|_| {})).await;
    fleet.spawn_onnx_lanes(&[model]).await;
    let shim = fleet.serve_http(&ServeArgs::for_tests(fleet.results_dir.clone())).await;
    let addr = shim.addr;

    let (status, _, body) = http(addr, "POST", "/generate", &[], Some(&request)).await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let accepted: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(accepted["lane"], model, "the warm lane takes it");
    let task = wait_done(addr, accepted["task_id"].as_str().expect("task_id")).await;
    assert_eq!(task["content_type"], "video/mp4");
    let (status, headers, mp4) = http(addr, "GET", task["result_url"].as_str().expect("result_url"), &[], None).await;
    assert_eq!(status, 200);
    assert!(headers.contains("content-type: video/mp4"), "{headers}");

    let file = fleet.results_dir.join(format!("downloaded-{model}.mp4"));
    std::fs::write(&file, &mp4).expect("saving the download");
    let probe = probe(&ffprobe, &file);
    let expected = Probe { codec: "h264".into(), pix_fmt: "yuv420p".into(), width, height, frames };
    assert_eq!(probe, expected, "ffprobe of the MP4 served for {model}");

    shim.stop().await;
    fleet.cleanup().await;
}

fn ffprobe() -> PathBuf {
    let path = std::env::var("FFPROBE").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/usr/bin/ffprobe"));
    assert!(
        path.exists(),
        "{} not found (set FFPROBE to override); install it with: apt-get update && apt-get install -y ffmpeg",
        path.display()
    );
    path
}

/// Runs ffprobe, decoding every frame to count them.
fn probe(ffprobe: &Path, file: &Path) -> Probe {
    let out = std::process::Command::new(ffprobe)
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries"])
        .arg("stream=codec_name,pix_fmt,width,height,nb_read_frames")
        .args(["-of", "json"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", ffprobe.display()));
    assert!(out.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).expect("ffprobe prints JSON");
    let stream = &json["streams"][0];
    let text = |k: &str| stream[k].as_str().unwrap_or_default().to_string();
    Probe {
        codec: text("codec_name"),
        pix_fmt: text("pix_fmt"),
        width: stream["width"].as_u64().unwrap_or_default(),
        height: stream["height"].as_u64().unwrap_or_default(),
        frames: text("nb_read_frames").parse().unwrap_or_default(),
    }
}

/// Long-polls the task until it is terminal (at most 3 minutes) and expects `done`.
async fn wait_done(addr: SocketAddr, task_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, _, body) = http(addr, "GET", &format!("/tasks/{task_id}?wait=20"), &[], None).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let task: Value = serde_json::from_slice(&body).expect("JSON");
        if task["terminal"] == true {
            assert_eq!(task["status"], "done", "{task}");
            return task;
        }
        assert!(Instant::now() < deadline, "task {task_id} not done after 3 minutes: {task}");
    }
}
