//! An S3-compatible server of the test's own: `moto_server` (PyPI `moto[server]`)
//! on a free port of 127.0.0.1, stopped when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The install line, for a missing `moto_server`.
pub const INSTALL: &str = "python3 -m pip install 'moto[server]==5.2.1'";

/// The secret key the tests give the S3 client: it must never appear in a reply or
/// an error the tests read.
pub const SECRET_KEY: &str = "wl-test-secret-9f3e1c";

/// A running `moto_server`.
pub struct Moto {
    /// Its port.
    pub port: u16,
    child: Child,
}

impl Moto {
    /// Starts `moto_server` (`MOTO_SERVER` overrides the command) and waits for its port.
    pub fn start() -> Moto {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = crate::servers::free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `{bin}` ({e}): this test starts its own S3 server; install it with {INSTALL}")
            });
        let mut moto = Moto { port, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("`{bin}` exited ({status}) before it listened on {port}; reinstall it with {INSTALL}");
            }
            assert!(Instant::now() < deadline, "`{bin}` did not listen on port {port} within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// The `AWS_*` settings of a client of this server.
    pub fn env(&self) -> Vec<(String, String)> {
        s3_env(&format!("http://127.0.0.1:{}", self.port))
    }

    /// Creates `bucket` (moto takes an unsigned `PUT /<bucket>`).
    pub async fn create_bucket(&self, bucket: &str) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let (status, _, body) = crate::http::http(addr, "PUT", &format!("/{bucket}"), &[], None).await;
        assert_eq!(status, 200, "creating bucket {bucket}: {}", String::from_utf8_lossy(&body));
    }

    /// Stops the server (the store is then down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `AWS_*` settings of an S3 client of `endpoint` (plain HTTP, test keys).
pub fn s3_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "wl-test-key"),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
