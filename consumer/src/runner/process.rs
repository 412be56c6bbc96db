//! One runner child process: spawn, frame I/O with deadlines, stop, reap.
//!
//! Why threads and channels: a frame read blocks, and a hung runner must not hang the
//! worker. A reader thread turns stdout frames into channel messages, so every wait
//! has a deadline (`recv_timeout`); a second thread forwards the child's stderr log
//! lines into the worker's log with the runner's model and pid.

use super::protocol::{read_frame, write_frame, Request, Response};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Why a call to the runner did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No answer before the deadline (a hang).
    Timeout,
    /// The runner's stdout ended or broke (a crash); the detail names the stream error.
    Died(String),
}

/// A running child.
pub struct RunnerProcess {
    model: String,
    child: Child,
    stdin: Option<ChildStdin>,
    frames: Receiver<Result<Response, String>>,
    pid: u32,
    /// The worker's RSS when the child was started, for the release check.
    pub parent_rss_at_spawn: u64,
}

impl RunnerProcess {
    /// Starts `exe runner [--model <model>]` with piped stdin, stdout and stderr;
    /// without a model it is a spare that takes the model of its first `Prepare`.
    pub fn spawn(exe: &Path, model: Option<&str>) -> std::io::Result<RunnerProcess> {
        let parent_rss_at_spawn = warmlane_engine::memory::rss_bytes();
        let mut command = Command::new(exe);
        command.arg("runner");
        if let Some(model) = model {
            command.args(["--model", model]);
        }
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("runner stdout not piped"))?;
        let stderr = child.stderr.take().ok_or_else(|| std::io::Error::other("runner stderr not piped"))?;
        let (tx, frames) = mpsc::channel();
        std::thread::Builder::new().name(format!("runner-{pid}-out")).spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                match read_frame::<_, Response>(&mut reader) {
                    Ok(Some(frame)) => {
                        if tx.send(Ok(frame)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Err("stdout closed".to_string()));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        })?;
        let runner = model.unwrap_or("(spare)").to_string();
        std::thread::Builder::new().name(format!("runner-{pid}-log")).spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                forward_log_line(&runner, pid, &line);
            }
        })?;
        tracing::info!(model = model.unwrap_or("(spare)"), pid, "runner started");
        Ok(RunnerProcess {
            model: model.unwrap_or_default().to_string(),
            child,
            stdin,
            frames,
            pid,
            parent_rss_at_spawn,
        })
    }

    /// Names the model a spare is about to load (for logs and the release check).
    pub fn assign(&mut self, model: &str) {
        self.model = model.to_string();
        self.parent_rss_at_spawn = warmlane_engine::memory::rss_bytes();
    }

    /// True while the process has not exited.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The model it serves.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends a request.
    pub fn send(&mut self, request: &Request) -> Result<(), CallError> {
        let stdin = self.stdin.as_mut().ok_or_else(|| CallError::Died("stdin closed".into()))?;
        write_frame(stdin, request).map_err(|e| CallError::Died(format!("writing to the runner: {e}")))
    }

    /// Waits for the next frame until `deadline`.
    pub fn recv(&mut self, deadline: Instant) -> Result<Response, CallError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.frames.recv_timeout(wait) {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(e)) => Err(CallError::Died(e)),
            Err(RecvTimeoutError::Timeout) => Err(CallError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(CallError::Died("reader thread ended".into())),
        }
    }

    /// Sends a request and returns the first answer that is not `Progress`.
    pub fn call(&mut self, request: &Request, timeout: Duration) -> Result<Response, CallError> {
        self.send(request)?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv(deadline)? {
                Response::Progress { .. } => continue,
                other => return Ok(other),
            }
        }
    }

    /// Asks the runner to exit, waits up to `grace`, then kills it; always reaps it
    /// (waitpid), so on return the process and its memory are gone.
    pub fn stop(mut self, grace: Duration) -> (ExitStatus, bool) {
        let asked = self.send(&Request::Shutdown).is_ok();
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        if asked {
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(status)) => return (status, false),
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        }
        (self.kill_and_reap(), true)
    }

    /// Kills (SIGKILL) and reaps the child; returns how it ended.
    pub fn kill_and_reap(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        loop {
            match self.child.wait() {
                Ok(status) => return status,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(pid = self.pid, error = %e, "waitpid on the runner failed");
                    return std::os::unix::process::ExitStatusExt::from_raw(-1);
                }
            }
        }
    }
}

/// Re-emits one of the runner's log lines (`LEVEL target: message fields`) at its level.
fn forward_log_line(runner: &str, pid: u32, line: &str) {
    let trimmed = line.trim_start();
    let (level, rest) = trimmed.split_once(' ').unwrap_or(("", trimmed));
    let rest = rest.trim_start();
    match level {
        "ERROR" => tracing::error!(target: "warmlane::runner", runner, pid, "{rest}"),
        "WARN" => tracing::warn!(target: "warmlane::runner", runner, pid, "{rest}"),
        "DEBUG" | "TRACE" => tracing::debug!(target: "warmlane::runner", runner, pid, "{rest}"),
        "INFO" => tracing::info!(target: "warmlane::runner", runner, pid, "{rest}"),
        _ => tracing::info!(target: "warmlane::runner", runner, pid, "{trimmed}"),
    }
}

impl Drop for RunnerProcess {
    /// A runner is never left behind: dropping the handle kills and reaps it.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
