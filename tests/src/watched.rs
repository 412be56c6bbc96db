//! [`Watched`]: a service binary a test runs as a process, its stdout and stderr
//! collected line by line so the test can wait for a line, for the exit, and read
//! everything it printed. Killed when dropped, also when the test fails.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running process and the lines it printed so far.
pub struct Watched {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Watched {
    /// Starts `command` with stdout and stderr piped into the collector.
    pub fn spawn(command: &mut Command) -> Watched {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(collect(out, lines.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect(err, lines.clone()));
        }
        Watched { child, lines, readers }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Kills the process with SIGKILL (a crash: no shutdown, no goodbye to the broker
    /// or Redis) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything printed so far, one line each.
    pub fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits until a printed line satisfies `found` (true) or the process has exited
    /// or `limit` has passed (false).
    pub fn wait_line(&mut self, found: impl Fn(&str) -> bool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.lines.lock().expect("lines").iter().any(|l| found(l)) {
                return true;
            }
            if self.child.try_wait().ok().flatten().is_some() || Instant::now() >= deadline {
                self.drain();
                return self.lines.lock().expect("lines").iter().any(|l| found(l));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status once the process has exited by itself within `limit`; `None`
    /// (the process is then killed) when it was still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.drain();
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.drain();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Watched {
    /// After the exit: waits (at most 2 s, a child of the process may hold a pipe)
    /// until the readers have read the pipes to their end.
    fn drain(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.readers.iter().all(JoinHandle::is_finished) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            lines.lock().expect("lines").push(line);
        }
    })
}
