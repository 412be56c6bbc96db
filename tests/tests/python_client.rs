//! The Python client (`clients/python`) against a real fleet: real ONNX workers on the
//! anisora and phr00t lanes and the HTTP shim (with its reaper) run in this process,
//! and `python3 -m pytest clients/python/tests` drives them through the client's
//! AMQP + Redis path and its HTTP path, sync and asyncio.
//!
//! Needs Python 3.10+ with pytest and the client's dependencies (`ops/test.sh`
//! installs them: `python3 -m pip install -e 'clients/python[test]'`); without them
//! the test fails and says how to install them. `PYTHON` overrides the interpreter.

use std::process::{Command, Output};
use warmlane_producer::http::ServeArgs;
use warmlane_tests::fleet::Fleet;
use warmlane_tests::{prefix, repo_root, settings_with};

const API_KEY: &str = "python-client-test-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_tests_pass_against_a_real_fleet() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    check_python(&python);
    // Every delivery claimed before its run, so even a tiny task records `progress`
    // (by default a lane task shorter than 250 ms goes from `pending` to `done`).
    let settings = settings_with(|s| s["lanes"]["late_claim_ms"] = 0.into());
    let mut fleet = Fleet::start(&prefix("py"), settings).await;
    fleet.spawn_onnx_lanes(&["anisora", "phr00t"]).await;

    let args = ServeArgs { api_keys: vec![API_KEY.into()], ..ServeArgs::for_tests(fleet.results_dir.clone()) };
    let shim = fleet.serve_http(&args).await;
    let addr = shim.addr;

    let env = [
        ("WARMLANE_CLIENT_AMQP_URL", fleet.amqp_url.clone()),
        ("WARMLANE_CLIENT_REDIS_URL", fleet.redis_url.clone()),
        ("WARMLANE_CLIENT_PREFIX", fleet.prefix.clone()),
        ("WARMLANE_CLIENT_HTTP_URL", format!("http://{addr}")),
        ("WARMLANE_CLIENT_API_KEY", API_KEY.to_string()),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "clients/python/tests"])
            .current_dir(repo_root())
            .env("PYTHONPATH", client_src())
            .envs(env)
            .output()
            .expect("running pytest")
    })
    .await
    .expect("the pytest thread");
    let text = output_text(&out);
    shim.stop().await;
    fleet.cleanup().await;

    assert!(out.status.success(), "the Python client's tests failed ({}):\n{text}", out.status);
    assert!(!text.contains("skipped"), "no Python client test may be skipped here:\n{text}");
    println!("{text}");
}

/// Fails, naming the install command, when pytest or the client is missing.
fn check_python(python: &str) {
    let probe = Command::new(python)
        .args(["-c", "import pytest, aio_pika, redis, msgpack, httpx, warmlane_client"])
        .current_dir(repo_root())
        .env("PYTHONPATH", client_src())
        .output();
    let install = "python3 -m pip install -e 'clients/python[test]' (ops/test.sh does this)";
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the Python client's tests need pytest and the client installed; install them with: {install}\n{}",
            output_text(&out)
        ),
        Err(e) => panic!("cannot run {python} ({e}); install Python 3.10+ and then: {install}"),
    }
}

/// This checkout's client source, put first on `PYTHONPATH` so the tests import it
/// even where another checkout's copy is installed (the install brings the dependencies).
fn client_src() -> std::path::PathBuf {
    repo_root().join("clients/python/src")
}

fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
