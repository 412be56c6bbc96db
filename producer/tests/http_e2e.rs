//! End to end on a real socket: the shim (with its reaper) on 127.0.0.1:0, the
//! real broker and Redis, and a stand-in worker on the anisora lane. A request
//! goes from `POST /generate` to `done`, a downloadable MP4 and its GIF preview.

mod http_support;

use http_support::*;

#[tokio::test]
async fn post_to_done_and_download_the_video_and_preview() {
    let h = Harness::new().await;
    let worker = stand_in_worker(&h, "anisora").await;
    let mut args = h.args();
    args.api_keys = vec!["e2e-key".into()];
    let server = Server::start(&h, &args).await;
    let key = [("x-api-key", "e2e-key")];

    let ready = http("GET", &server.url("/ready"), None, &[]).await;
    assert_eq!(ready.status, 200);
    let accepted = http("POST", &server.url("/generate"), Some(&anisora("a paper boat on a river")), &key).await;
    assert_eq!(accepted.status, 202, "{}", String::from_utf8_lossy(&accepted.bytes));
    let accepted = accepted.json();
    assert_eq!(accepted["lane"], "anisora", "the stand-in worker's heartbeat makes the lane warm");
    assert!(accepted["fallback_cause"].is_null());

    let status_url = server.url(accepted["status_url"].as_str().unwrap());
    let done = http("GET", &format!("{status_url}?wait=30"), None, &key).await.json();
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["progress"]["step"], done["progress"]["steps"]);
    assert!(done["timings"]["inference_ms"].is_u64());

    let mp4 = http("GET", &server.url(done["result_url"].as_str().unwrap()), None, &key).await;
    assert_eq!(mp4.status, 200);
    assert_eq!(mp4.headers["content-type"], "video/mp4");
    assert_eq!(&mp4.bytes[4..8], b"ftyp", "an MP4");
    let range = [key[0], ("range", "bytes=0-99")];
    let head = http("GET", &server.url(done["result_url"].as_str().unwrap()), None, &range).await;
    assert_eq!((head.status.as_u16(), head.bytes.as_slice()), (206, &mp4.bytes[..100]));

    let gif = http("GET", &server.url(done["preview_url"].as_str().unwrap()), None, &key).await;
    assert_eq!(gif.status, 200);
    assert_eq!(gif.headers["content-type"], "image/gif");
    assert!(gif.bytes.starts_with(b"GIF89a"), "a GIF");
    let decoder = gif::DecodeOptions::new().read_info(gif.bytes.as_slice()).expect("a decodable GIF");
    assert_eq!((decoder.width(), decoder.height()), (32, 24));

    let events = http("GET", &format!("{status_url}/events"), None, &key).await;
    assert!(String::from_utf8_lossy(&events.bytes).contains("\"status\":\"done\""));
    let unauthorized = http("GET", &status_url, None, &[]).await;
    unauthorized.envelope(401, "unauthorized");

    server.stop().await;
    worker.abort();
    h.cleanup().await;
}
