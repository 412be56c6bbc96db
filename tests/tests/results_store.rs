//! The results store (issue #19, part 2) against servers the tests start: an S3
//! store on the test's own `moto_server` end to end (a real worker uploads, the reply
//! names `s3://bucket/prefix/<id>.mp4`, a shim on the same store serves it, the
//! CLI downloads it, and no local copy is left); a store that is down fails the
//! task `inference_failed`/`storage` with one reply while the worker goes on; and
//! retention deletes only expired results, on S3 and in the worker's own sweeper.
//!
//! Needs `moto_server` (`python3 -m pip install 'moto[server]==5.2.1'`, done by
//! ops/test.sh); without it the tests fail and say so.

use std::process::Command;
use std::time::{Duration, SystemTime};
use warmlane_consumer::results::ResultsConfig;
use warmlane_infra::results::sweep;
use warmlane_infra::ResultStore;
use warmlane_shared::{ErrorCode, ReplyStatus};
use warmlane_tests::engines::GateEngine;
use warmlane_tests::fleet::Fleet;
use warmlane_tests::http::http;
use warmlane_tests::moto::{s3_env, Moto, SECRET_KEY};
use warmlane_tests::servers::{consumer_binary, free_port, producer_binary};
use warmlane_tests::watched::Watched;
use warmlane_tests::{amqp_url, prefix, redis_url, repo_root, request, settings_with};

const HOUR: Duration = Duration::from_secs(3_600);

/// The files a worker left in its results directory.
fn local_files(fleet: &Fleet) -> Vec<String> {
    let entries = std::fs::read_dir(&fleet.results_dir).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
    entries.iter().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_results_go_from_the_worker_through_the_shim_and_the_cli() {
    let moto = Moto::start();
    moto.create_bucket("wl-e2e").await;
    let p = prefix("s3-e2e");
    let url = format!("s3://wl-e2e/runs/{p}");
    let store = ResultStore::open_with_env(&url, moto.env()).expect("the S3 store");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    fleet.results = ResultsConfig { store: Some(store.clone()), ttl: Some(24 * HOUR) };
    fleet.spawn_onnx_lanes(&["anisora"]).await;
    let mut config = warmlane_producer::http::HttpConfig::from_args(&warmlane_producer::http::ServeArgs::for_tests(
        repo_root().join("target/test-output/no-such-dir"),
    ))
    .expect("config");
    config.results = store.clone();
    let shim = fleet.serve_http_config(config).await;

    let id = format!("{p}-a");
    fleet.producer.submit_json(&request(&id, "anisora")).await.expect("admitted");
    let reply = fleet.reply(&id, 120).await;
    assert_eq!(reply.status, ReplyStatus::Done, "{reply:?}");
    let result = reply.result.expect("a result");
    assert_eq!(result.uri, format!("{url}/{id}.mp4"));
    assert_eq!(result.preview_uri, Some(format!("{url}/{id}.gif")));

    // The object in the bucket is an MP4 of the reply's size ...
    let stored = store.get(&format!("{id}.mp4"), None).await.expect("the object");
    let object: Vec<u8> = futures_util::TryStreamExt::try_collect::<Vec<_>>(stored.body).await.expect("read").concat();
    assert_eq!((object.len() as u64, &object[4..8]), (result.bytes, &b"ftyp"[..]), "an MP4 of the reply's size");
    // ... served whole and in a range by the shim, which reads the same store ...
    let (status, head, body) = http(shim.addr, "GET", &format!("/tasks/{id}/result"), &[], None).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: video/mp4") && head.contains("accept-ranges: bytes"), "{head}");
    assert!(body == object, "the shim serves the object's bytes");
    let (status, head, part) =
        http(shim.addr, "GET", &format!("/tasks/{id}/result"), &[("range", "bytes=4-11")], None).await;
    assert_eq!((status, part.as_slice()), (206, &object[4..12]), "{head}");
    assert!(head.contains(&format!("content-range: bytes 4-11/{}", object.len())), "{head}");
    let (status, _, gif) = http(shim.addr, "GET", &format!("/tasks/{id}/preview"), &[], None).await;
    assert_eq!((status, &gif[..6]), (200, &b"GIF89a"[..]), "the preview");
    // ... and by the CLI, with the same AWS_* settings as the workers.
    let out = repo_root().join("target/test-output").join(format!("{p}.mp4"));
    let mut cmd = Command::new(producer_binary());
    cmd.current_dir(repo_root())
        .envs([("AMQP_URL", amqp_url()), ("REDIS_URL", redis_url()), ("WARMLANE_PREFIX", p.clone())])
        .envs(moto.env())
        .args(["result", &id, "--output"])
        .arg(&out);
    let cli = tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("the CLI runs");
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert!(std::fs::read(&out).expect("the download") == object, "the CLI saves the object's bytes");
    let _ = std::fs::remove_file(&out);
    assert_eq!(local_files(&fleet), Vec::<String>::new(), "no local copy is left behind");

    shim.stop().await;
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_fails_the_task_with_storage_and_the_worker_goes_on() {
    // Nothing listens on a port just freed: the store is down from the start.
    let down = format!("http://127.0.0.1:{}", free_port());
    let store = ResultStore::open_with_env("s3://wl-down/x", s3_env(&down)).expect("the S3 store");
    let p = prefix("s3-down");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    fleet.results = ResultsConfig { store: Some(store), ttl: None };
    fleet.spawn_worker("anisora", Box::new(GateEngine::open()));
    fleet.wait_ready("anisora", 1).await;

    for n in ["a", "b"] {
        let id = format!("{p}-{n}");
        fleet.producer.submit_json(&request(&id, "anisora")).await.expect("admitted");
        let reply = fleet.reply(&id, 60).await;
        let coded = (reply.status, reply.code, reply.reason.as_deref());
        assert_eq!(coded, (ReplyStatus::Failed, Some(ErrorCode::InferenceFailed), Some("storage")), "{reply:?}");
        assert!(reply.result.is_none() && !reply.message.contains(SECRET_KEY), "{reply:?}");
        assert_eq!(fleet.replies_left(&id).await, 0, "exactly one reply");
        fleet.wait_task_field(&id, "status", "failed", 10).await;
    }
    // Both deliveries were acked (no redelivery), and nothing was left on the disk.
    assert_eq!(fleet.depth(&fleet.topology().queue_of_lane("anisora")).await, 0);
    assert_eq!(local_files(&fleet), Vec::<String>::new(), "the scratch copies are removed");
    fleet.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_retention_deletes_only_expired_results() {
    let moto = Moto::start();
    moto.create_bucket("wl-retention").await;
    let store = ResultStore::open_with_env("s3://wl-retention/keep", moto.env()).expect("store");
    let deeper = ResultStore::open_with_env("s3://wl-retention/keep/sub", moto.env()).expect("store");
    let dir = repo_root().join("target/test-output").join(prefix("s3-retention"));
    std::fs::create_dir_all(&dir).expect("dir");
    for name in ["t1.mp4", "t1.gif", "t1.json", "notes.txt"] {
        std::fs::write(dir.join(name), name).expect("file");
        store.put_file(name, &dir.join(name)).await.expect("put");
    }
    deeper.put_file("t2.mp4", &dir.join("t1.mp4")).await.expect("put");
    let names = |store: ResultStore| async move {
        let mut names: Vec<String> = store.list().await.expect("list").into_iter().map(|l| l.name).collect();
        names.sort();
        names
    };

    // Within the TTL (the sweeper's clock 30 minutes on): everything survives.
    let within = sweep(&store, Some(HOUR), SystemTime::now() + HOUR / 2).await.expect("sweep");
    assert!(within.deleted.is_empty() && within.failed.is_empty(), "{within:?}");
    assert_eq!(names(store.clone()).await, ["notes.txt", "t1.gif", "t1.json", "t1.mp4"]);
    // Past it: the results go; a non-result and a deeper key stay.
    let past = sweep(&store, Some(HOUR), SystemTime::now() + 2 * HOUR).await.expect("sweep");
    let mut deleted = past.deleted.clone();
    deleted.sort();
    assert_eq!(deleted, ["t1.gif", "t1.json", "t1.mp4"], "{past:?}");
    assert_eq!(names(store.clone()).await, ["notes.txt"]);
    assert_eq!(names(deeper).await, ["t2.mp4"], "keys below the prefix are not this store's");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_sweeps_expired_files_and_keeps_fresh_ones() {
    let p = prefix("sweeper");
    let mut fleet = Fleet::start(&p, settings_with(|_| {})).await;
    std::fs::create_dir_all(&fleet.results_dir).expect("dir");
    let now = SystemTime::now();
    let files = [
        ("old.mp4", 2 * HOUR),
        ("old.gif", 2 * HOUR),
        ("old.json", 2 * HOUR),
        ("fresh.mp4", HOUR / 2),
        ("fresh.json", HOUR / 2),
        ("intro.mp4", 9 * HOUR),
        ("notes.txt", 9 * HOUR),
    ];
    for (name, age) in files {
        let file = std::fs::File::create(fleet.results_dir.join(name)).expect("create");
        file.set_modified(now - age).expect("set the mtime back");
    }
    fleet.results = ResultsConfig { store: None, ttl: Some(HOUR) };
    fleet.spawn_worker("anisora", Box::new(GateEngine::open()));
    // The sweeper runs at start, then every minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let gone = |name: &str| !fleet.results_dir.join(name).exists();
    while !(gone("old.mp4") && gone("old.gif") && gone("old.json")) {
        assert!(std::time::Instant::now() < deadline, "expired results not swept: {:?}", local_files(&fleet));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut left = local_files(&fleet);
    left.sort();
    assert_eq!(
        left,
        ["fresh.json", "fresh.mp4", "intro.mp4", "notes.txt"],
        "a result within its TTL and non-results stay"
    );
    fleet.cleanup().await;
}

/// Waits until the shim's `GET /lanes` calls every one of `models` ready: routing
/// takes a lane once the shim has seen its worker consume, just after "lane ready".
fn wait_lanes_ready(rt: &tokio::runtime::Runtime, addr: std::net::SocketAddr, models: &[&str], limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let (_, _, body) = rt.block_on(http(addr, "GET", "/lanes", &[], None));
        let lanes: serde_json::Value = serde_json::from_slice(&body).expect("the lanes");
        if models.iter().all(|m| lanes["lanes"][m]["ready"] == true) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "lanes not ready in the shim: {lanes}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The binaries as compose runs them: `WARMLANE_RESULTS_URL` and the `AWS_*`
/// environment. A `warmlane-consumer` uploads, `warmlane-producer serve` on another
/// results directory serves the object; a second worker whose store is down answers
/// `inference_failed`/`storage`; keys in the results URL are refused at start. No
/// process prints the secret key.
#[test]
fn the_binaries_take_the_store_from_their_environment_and_print_no_secret() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let moto = Moto::start();
    rt.block_on(moto.create_bucket("wl-bin"));
    let p = prefix("s3-bin");
    let url = format!("s3://wl-bin/{p}");
    let dir = repo_root().join("target/test-output").join(&p);
    let down = s3_env(&format!("http://127.0.0.1:{}", free_port()));
    let base = |binary: std::path::PathBuf, results_dir: &str, env: &[(String, String)]| {
        let mut cmd = Command::new(binary);
        cmd.current_dir(repo_root())
            .envs([("AMQP_URL", amqp_url()), ("REDIS_URL", redis_url()), ("WARMLANE_PREFIX", p.clone())])
            .env("WARMLANE_RESULTS_URL", &url)
            .env("WARMLANE_RESULTS_DIR", dir.join(results_dir))
            .envs(env.iter().cloned())
            .env("NO_COLOR", "1")
            .env_remove("WARMLANE_JSON_LOGS")
            .env_remove("WARMLANE_STATSD")
            .env_remove("RUST_LOG");
        cmd
    };
    let port = free_port();
    let mut shim = base(producer_binary(), "shim", &moto.env());
    let mut shim = Watched::spawn(shim.args(["serve", "--listen", &format!("127.0.0.1:{port}")]));
    let mut good = base(consumer_binary(), "good", &moto.env());
    let mut good = Watched::spawn(good.args(["--lane", "anisora", "--worker-id", &format!("{p}-anisora")]));
    let mut bad = base(consumer_binary(), "bad", &down);
    let mut bad = Watched::spawn(bad.args(["--lane", "phr00t", "--worker-id", &format!("{p}-phr00t")]));
    let limit = Duration::from_secs(120);
    assert!(shim.wait_line(|l| l.contains("HTTP shim listening"), limit), "{}", shim.output());
    for worker in [&mut good, &mut bad] {
        assert!(worker.wait_line(|l| l.contains("lane ready"), limit), "{}", worker.output());
    }
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    wait_lanes_ready(&rt, addr, &["anisora", "phr00t"], limit);
    let finish = |id: &str, model: &str| {
        let (status, _, body) = rt.block_on(http(addr, "POST", "/generate", &[], Some(&request(id, model))));
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
        let deadline = std::time::Instant::now() + limit;
        loop {
            let (_, _, body) = rt.block_on(http(addr, "GET", &format!("/tasks/{id}?wait=20"), &[], None));
            let task: serde_json::Value = serde_json::from_slice(&body).expect("a task view");
            if task["terminal"] == true {
                return task;
            }
            assert!(std::time::Instant::now() < deadline, "{id} has no terminal reply: {task}");
        }
    };

    let id = format!("{p}-good");
    let task = finish(&id, "anisora");
    assert_eq!(task["status"], "done", "{task}\n{}", good.output());
    let store = ResultStore::open_with_env(&url, moto.env()).expect("store");
    let stored = rt.block_on(store.get(&format!("{id}.mp4"), None)).expect("the object is in the bucket");
    let object: Vec<u8> =
        rt.block_on(futures_util::TryStreamExt::try_collect::<Vec<_>>(stored.body)).expect("read").concat();
    let (status, _, served) = rt.block_on(http(addr, "GET", &format!("/tasks/{id}/result"), &[], None));
    assert!(status == 200 && served == object, "the shim serves the worker's object ({status})");
    let left = std::fs::read_dir(dir.join("good")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the worker's scratch copies are gone");

    let id = format!("{p}-bad");
    let task = finish(&id, "phr00t");
    let error = (&task["status"], &task["error"]["code"], &task["error"]["reason"]);
    assert_eq!(error, (&"failed".into(), &"inference_failed".into(), &"storage".into()), "{task}");
    assert!(bad.wait_line(|l| l.contains("storing the result failed"), limit), "{}", bad.output());

    for (name, process) in [("serve", &shim), ("the worker", &good), ("the worker with no store", &bad)] {
        assert!(!process.output().contains(SECRET_KEY), "{name} printed the secret key:\n{}", process.output());
    }
    drop((shim, good, bad));

    // Keys written into the results URL: refused at start, in one line, redacted.
    let keyed = format!("s3://AKIA:{SECRET_KEY}@wl-bin/{p}");
    let runs =
        [(producer_binary(), ["serve", "--listen", "127.0.0.1:0"]), (consumer_binary(), ["--lane", "anisora", ""])];
    for (binary, args) in runs {
        let mut cmd = base(binary, "keyed", &[]);
        cmd.env("WARMLANE_RESULTS_URL", &keyed).args(args.iter().filter(|a| !a.is_empty()));
        let mut process = Watched::spawn(&mut cmd);
        assert!(process.wait_exit(limit).is_some_and(|s| !s.success()), "{}", process.output());
        let output = process.output();
        assert!(output.contains("keys do not belong in the URL") && output.contains(":***@wl-bin"), "{output}");
        assert!(!output.contains(SECRET_KEY), "the secret key was printed:\n{output}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
