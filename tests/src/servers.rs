//! Servers a test owns: a second RabbitMQ node and a Redis server on free ports,
//! so a test can restart them without disturbing the shared ones.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The fields of `/proc/<pid>/stat` after the command name (`pid` may also be
/// `self` or `self/task/<tid>`): field 0 is the state, 11 and 12 the user and system
/// CPU ticks. `None` when the process is gone.
pub fn proc_stat(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces or ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether process `pid` exists and has not exited (a zombie waiting to be reaped
/// counts as exited).
pub fn process_running(pid: u32) -> bool {
    proc_stat(&pid.to_string()).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`; panics naming
/// `what` after `secs`.
pub fn wait_port(port: u16, what: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !port_open(port) {
        assert!(Instant::now() < deadline, "{what} did not open port {port} within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A RabbitMQ node of the test's own, on its own ports and data directory.
pub struct RabbitNode {
    /// AMQP port.
    pub port: u16,
    dist_port: u16,
    node: String,
    dir: PathBuf,
    /// The node's OS process, from its pid file once it has started.
    pid: Option<u32>,
    /// Whether `port` is a TLS listener (and the node has no plain one).
    tls: bool,
}

impl RabbitNode {
    /// Starts a node; fails loudly when RabbitMQ is not installed.
    pub fn start(dir: &Path) -> RabbitNode {
        let mut n = RabbitNode::launch(dir, false, "listeners.tcp.local = 127.0.0.1:{port}\n");
        n.await_startup();
        n.read_pid();
        n
    }

    /// Starts a node whose only listener is AMQP over TLS (`amqps://`) on [`RabbitNode::port`];
    /// `config` adds to its `rabbitmq.conf` (the `ssl_options`, a default user). Ready
    /// as soon as the TLS port accepts connections: the listeners open last in a
    /// node's boot, so no `rabbitmqctl await_startup` (a second Erlang VM) is needed.
    pub fn start_tls(dir: &Path, config: &str) -> RabbitNode {
        let conf = format!("listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{{port}}\n{config}");
        let mut n = RabbitNode::launch(dir, true, &conf);
        wait_port(n.port, "RabbitMQ's TLS listener", 90);
        n.read_pid();
        n
    }

    /// Writes the node's files and runs `rabbitmq-server -detached`; `{port}` in
    /// `conf` is the node's port.
    fn launch(dir: &Path, tls: bool, conf: &str) -> RabbitNode {
        assert!(
            Path::new(RABBIT_BIN).join("rabbitmq-server").exists(),
            "this test starts its own RabbitMQ node and needs rabbitmq-server installed (apt-get install rabbitmq-server)"
        );
        let port = free_port();
        let node = format!("wl{port}@localhost");
        std::fs::create_dir_all(dir.join("mnesia")).unwrap();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].").unwrap();
        std::fs::write(dir.join("rabbitmq.conf"), conf.replace("{port}", &port.to_string())).unwrap();
        let n = RabbitNode { port, dist_port: free_port(), node, dir: dir.to_path_buf(), pid: None, tls };
        let status = n.command("rabbitmq-server").arg("-detached").status().expect("rabbitmq-server");
        assert!(status.success(), "rabbitmq-server -detached failed");
        n
    }

    fn read_pid(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pid.is_none() && Instant::now() < deadline {
            self.pid = std::fs::read_to_string(self.dir.join("pid")).ok().and_then(|s| s.trim().parse().ok());
            if self.pid.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        assert!(self.pid.is_some(), "RabbitMQ node {} wrote no pid file in {}", self.node, self.dir.display());
    }

    fn command(&self, bin: &str) -> Command {
        let mut c = Command::new(Path::new(RABBIT_BIN).join(bin));
        let d = &self.dir;
        // A TLS node has no plain listener: RABBITMQ_NODE_PORT would add one.
        if !self.tls {
            c.env("RABBITMQ_NODE_PORT", self.port.to_string());
        }
        c.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("HOME", d)
            .env("ERL_CRASH_DUMP", d.join("erl_crash.dump"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn ctl(&self, args: &[&str]) -> bool {
        self.command("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .arg("-q")
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn await_startup(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.ctl(&["await_startup"]) {
            assert!(
                Instant::now() < deadline,
                "RabbitMQ node {} did not start; see {}/log",
                self.node,
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        wait_port(self.port, "RabbitMQ", 30);
    }

    /// The node's OS process id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The AMQP URL of this node.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Restarts the broker application: every connection drops, durable queues and
    /// persistent messages stay.
    pub fn restart(&self) {
        assert!(self.ctl(&["stop_app"]), "stop_app failed");
        assert!(self.ctl(&["start_app"]), "start_app failed");
        self.await_startup();
    }

    /// Boots a node that can join a cluster (see `cluster::RabbitCluster`): its HOME
    /// holds `cookie` as `.erlang.cookie` (mode 0400), the Erlang cookie every node
    /// of a cluster and their `rabbitmqctl` must share. Returns once the VM is
    /// launched, so several nodes boot at once; [`RabbitNode::wait_started`] waits.
    pub fn launch_with_cookie(dir: &Path, cookie: &str) -> RabbitNode {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(".erlang.cookie");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        file.write_all(cookie.as_bytes()).unwrap();
        RabbitNode::launch(dir, false, "listeners.tcp.local = 127.0.0.1:{port}\n")
    }

    /// Waits until a launched node has booted and reads its OS pid: first for its
    /// AMQP port (the listeners open last in a boot; polling a port costs nothing,
    /// while each `rabbitmqctl` is an Erlang VM of its own), then `await_startup`.
    pub fn wait_started(&mut self) {
        wait_port(self.port, "RabbitMQ", 90);
        self.await_startup();
        self.read_pid();
    }

    /// The node's Erlang name (`wl<port>@localhost`), as `rabbitmqctl -n` and the
    /// cluster commands name it.
    pub fn name(&self) -> &str {
        &self.node
    }

    /// Runs `rabbitmqctl -n <this node> -q <args>`: its stdout, or one line with the
    /// exit status and stderr when it fails (the node is down, the command failed).
    pub fn ctl_output(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command("rabbitmqctl")
            .arg("-n")
            .arg(&self.node)
            .arg("-q")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("rabbitmqctl {args:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!("rabbitmqctl -n {} {args:?}: {} {}", self.node, out.status, err.trim().replace('\n', " ")))
        }
    }

    /// Kills the node's VM with SIGKILL (a crash: no goodbye to its peers or
    /// clients) and waits until the process is gone; [`RabbitNode::start_again`]
    /// boots it again on the same data.
    pub fn kill(&mut self) {
        let pid = self.pid.take().expect("kill: the node has no known pid (not started, or already killed)");
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while process_running(pid) {
            assert!(Instant::now() < deadline, "RabbitMQ node {} (pid {pid}) outlived SIGKILL by 15 s", self.node);
            std::thread::sleep(Duration::from_millis(20));
        }
        // The stale pid file would otherwise be read back as the next boot's pid.
        let _ = std::fs::remove_file(self.dir.join("pid"));
    }

    /// Boots a killed node again with the same name, ports, cookie and data, and
    /// waits until it has started (a cluster member rejoins its cluster by itself).
    pub fn start_again(&mut self) {
        assert!(self.pid.is_none(), "start_again: RabbitMQ node {} still runs", self.node);
        let status = self.command("rabbitmq-server").arg("-detached").status().expect("rabbitmq-server");
        assert!(status.success(), "rabbitmq-server -detached failed for {}", self.node);
        self.wait_started();
    }
}

impl Drop for RabbitNode {
    /// Stops the node with `rabbitmqctl stop`, or, when that fails (its data
    /// directory, which holds the Erlang cookie, may be gone), with SIGTERM and then
    /// SIGKILL, and waits until the process has exited, so no node outlives its test.
    fn drop(&mut self) {
        let stopped = self.ctl(&["stop"]);
        let Some(pid) = self.pid else { return };
        let exited = |secs: u64| {
            let deadline = Instant::now() + Duration::from_secs(secs);
            while process_running(pid) {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            true
        };
        if stopped && exited(15) {
            return;
        }
        let _ = Command::new("kill").arg(pid.to_string()).stderr(Stdio::null()).status();
        if !exited(15) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status();
            exited(5);
        }
    }
}

/// A Redis server of the test's own, persisting every write (AOF, fsync always),
/// so a restart keeps task hashes as a production Redis must.
pub struct RedisServer {
    /// Port.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server; fails loudly when redis-server is not installed.
    pub fn start(dir: &Path) -> RedisServer {
        let mut s = RedisServer::reserve(dir);
        s.spawn();
        s
    }

    /// A server with its port chosen but not started yet ([`RedisServer::spawn`] starts it):
    /// for services that must wait for Redis.
    pub fn reserve(dir: &Path) -> RedisServer {
        std::fs::create_dir_all(dir).unwrap();
        RedisServer { port: free_port(), dir: dir.to_path_buf(), child: None }
    }

    /// Starts the server and waits for its port.
    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("this test starts its own Redis and needs redis-server installed (apt-get install redis-server)");
        self.child = Some(child);
        wait_port(self.port, "Redis", 20);
    }

    /// The Redis URL of this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server (SIGTERM: it flushes the AOF) and starts it again on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The built `warmlane-producer` binary next to the test executable.
pub fn producer_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("warmlane-producer")).expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p warmlane-producer, or ops/test.sh)",
        bin.display()
    );
    bin
}

/// The built `warmlane-consumer` binary next to the test executable.
pub fn consumer_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("warmlane-consumer")).expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p warmlane-consumer, or ops/test.sh)",
        bin.display()
    );
    bin
}
