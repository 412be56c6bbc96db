//! The core of `degraded-bench` (issue #16): requests alternating between two models,
//! arriving faster than one degraded worker serves them, measured once per degraded
//! window (1 = FIFO, K = switch-aware) against the real RabbitMQ and Redis.
//!
//! [`run_mode`] performs one mode: a fresh fleet under its own prefix (producer, reaper,
//! the one degraded worker on the engine it is given; no lane worker, so every request
//! is routed degraded), a submitter that pushes the requests through
//! [`Producer::submit_json`] as fast as admission allows (a `queue_full` refusal is
//! submitted again under a new task id after [`RESUBMIT_PAUSE`]), and the figures read
//! back from each task's hash. [`ModeReport`] and [`verdict`] are pure, so the binary
//! (`src/bin/degraded-bench.rs`) and its test (`tests/degraded_bench.rs`) print the
//! same lines.
//!
//! A request's wait is `started_at_ms` (when the worker claimed it, before any model
//! load) minus its `submitted_at_ms` (its admission). The degraded entry header is
//! stamped one Redis round trip after admission, so this overstates a wait by a few
//! ms and never understates it: "served past the limit" errs on the strict side.

use crate::fleet::Fleet;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use warmlane_consumer::Engine;
use warmlane_producer::{Producer, ProducerError};
use warmlane_shared::{now_ms, ErrorCode, ReplyStatus, Settings};

/// The two models the requests alternate between.
pub const MODELS: [&str; 2] = ["anisora", "phr00t"];

/// Pause before a request refused `queue_full` is submitted again.
pub const RESUBMIT_PAUSE: Duration = Duration::from_millis(20);

/// Switch-aware throughput must reach this multiple of FIFO's.
pub const TARGET_RATIO: f64 = 3.0;

/// What one mode (one degraded window) did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModeReport {
    /// `degraded.window` of the worker.
    pub window: u32,
    /// Requests submitted (each admitted once, after any `queue_full` refusals).
    pub requests: u32,
    /// Answered `done`.
    pub done: u32,
    /// Answered `queue_overloaded`/`wait_timeout`.
    pub wait_timeout: u32,
    /// Answered anything else (counted, never expected).
    pub other: u32,
    /// Done requests whose run started after waiting more than `max_wait_ms`.
    pub past_limit: u32,
    /// Model loads of the degraded worker (the first load included).
    pub loads: u64,
    /// Submissions refused `queue_full` and submitted again.
    pub queue_full: u32,
    /// From the first submission to the last terminal write, ms.
    pub elapsed_ms: u64,
    /// Waits (admission to run start) of the done requests, ms, sorted.
    pub waits_ms: Vec<u64>,
}

impl ModeReport {
    /// Done requests per second over the whole run.
    pub fn throughput(&self) -> f64 {
        f64::from(self.done) / (self.elapsed_ms.max(1) as f64 / 1e3)
    }

    /// The `q` quantile (0..=1) of the done requests' waits, ms; 0 with none.
    pub fn wait_quantile(&self, q: f64) -> u64 {
        if self.waits_ms.is_empty() {
            return 0;
        }
        let rank = (q * self.waits_ms.len() as f64).ceil() as usize;
        self.waits_ms[rank.clamp(1, self.waits_ms.len()) - 1]
    }

    /// The mode's name: FIFO for a window of one.
    pub fn name(&self) -> String {
        if self.window <= 1 {
            "FIFO".into()
        } else {
            format!("switch-aware (window {})", self.window)
        }
    }

    /// One line of figures.
    pub fn line(&self) -> String {
        format!(
            "{:<26} done {:>3}/{:<3} wait_timeout {:>3}  other {:>2}  past limit {:>2}  loads {:>3}  queue_full {:>4}  \
             {:>6.1} s  {:>6.3} req/s  wait p50 {:>6.1} s  p99 {:>6.1} s",
            self.name(),
            self.done,
            self.requests,
            self.wait_timeout,
            self.other,
            self.past_limit,
            self.loads,
            self.queue_full,
            self.elapsed_ms as f64 / 1e3,
            self.throughput(),
            self.wait_quantile(0.5) as f64 / 1e3,
            self.wait_quantile(0.99) as f64 / 1e3,
        )
    }
}

/// The ratio and verdict lines for a FIFO and a switch-aware run of the same workload.
pub fn verdict(fifo: &ModeReport, aware: &ModeReport, parked: Option<&ModeReport>) -> Vec<String> {
    let ratio = aware.throughput() / fifo.throughput().max(f64::MIN_POSITIVE);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let past = fifo.past_limit + aware.past_limit + parked.map_or(0, |p| p.past_limit);
    let mut lines = vec![
        format!(
            "switch-aware / FIFO throughput: {:.3} / {:.3} req/s = {ratio:.2}x",
            aware.throughput(),
            fifo.throughput()
        ),
        format!(
            "target: switch-aware throughput >= {TARGET_RATIO}x FIFO (parking off): {}",
            met(ratio >= TARGET_RATIO)
        ),
        format!("served past the limit: {past} ({})", met(past == 0)),
    ];
    if let Some(p) = parked {
        lines.push(format!(
            "switch-aware with parking / FIFO throughput: {:.3} / {:.3} req/s = {:.2}x (reported; no target)",
            p.throughput(),
            fifo.throughput(),
            p.throughput() / fifo.throughput().max(f64::MIN_POSITIVE)
        ));
    }
    lines
}

/// The request body of number `i` (models alternate), under `task_id`.
pub fn request(task_id: &str, i: u32) -> serde_json::Value {
    crate::request(task_id, MODELS[i as usize % 2])
}

/// Runs one mode: `requests` alternating requests through a fresh fleet whose one
/// degraded worker runs `engine` on `workers` (a runtime of its own keeps the
/// worker off the submitter's threads, as a separate process would).
pub async fn run_mode(
    name: &str,
    settings: Arc<Settings>,
    requests: u32,
    engine: Box<dyn Engine>,
    workers: &Handle,
) -> Result<ModeReport, String> {
    let p = crate::prefix(name);
    let window = settings.degraded.window;
    let max_wait_ms = settings.degraded.max_wait_ms;
    let mut fleet = Fleet::start(&p, settings).await;
    fleet.spawn_reaper();
    fleet.spawn_worker_with(workers, warmlane_shared::settings::DEGRADED_LANE, engine, None);
    let outcome = measure(&fleet, &p, requests, max_wait_ms).await;
    let loads = fleet.producer.store().loads(warmlane_shared::settings::DEGRADED_LANE).await;
    fleet.cleanup().await;
    let mut report = outcome?;
    report.window = window;
    report.loads = loads.map_err(|e| format!("reading the loads: {e}"))?;
    Ok(report)
}

/// Waits for the worker, submits, collects every reply and reads the task hashes.
async fn measure(fleet: &Fleet, p: &str, requests: u32, max_wait_ms: u64) -> Result<ModeReport, String> {
    wait_for_degraded_worker(fleet).await?;
    let started_ms = now_ms();
    let submitter = tokio::spawn(submit_all(fleet.producer.clone(), p.to_string(), requests));
    let (ids, queue_full) = submitter.await.map_err(|e| format!("submitter: {e}"))??;
    let mut report = ModeReport { requests, queue_full, ..ModeReport::default() };
    let store = fleet.producer.store();
    let mut last_ms = started_ms;
    for id in &ids {
        // Far above any wait: an admitted request is answered within max_wait + one run.
        let reply = store.wait_reply(id, Duration::from_secs(600)).await.map_err(|e| format!("{id}: {e}"))?;
        let reply = reply.ok_or_else(|| format!("{id}: no reply within 600 s"))?;
        let hash = store.task(id).await.map_err(|e| format!("{id}: {e}"))?;
        let field = |k: &str| hash.get(k).and_then(|v| v.parse::<u64>().ok());
        last_ms = last_ms.max(field("finished_at_ms").unwrap_or_else(now_ms));
        match (reply.status, reply.code, reply.reason.as_deref()) {
            (ReplyStatus::Done, _, _) => {
                let (Some(start), Some(admitted)) = (field("started_at_ms"), field("submitted_at_ms")) else {
                    return Err(format!("{id} is done without started_at_ms/submitted_at_ms: {hash:?}"));
                };
                let waited = start.saturating_sub(admitted);
                report.past_limit += u32::from(waited > max_wait_ms);
                report.waits_ms.push(waited);
                report.done += 1;
            }
            (_, Some(ErrorCode::QueueOverloaded), Some("wait_timeout")) => report.wait_timeout += 1,
            _ => {
                eprintln!("degraded-bench: {id}: unexpected reply {reply:?}");
                report.other += 1;
            }
        }
    }
    report.waits_ms.sort_unstable();
    report.elapsed_ms = last_ms.saturating_sub(started_ms);
    Ok(report)
}

/// Submits request 0..n in order, each until admitted; returns the admitted task ids
/// and how many submissions were refused `queue_full`.
async fn submit_all(producer: Arc<Producer>, p: String, n: u32) -> Result<(Vec<String>, u32), String> {
    let (mut ids, mut queue_full) = (Vec::with_capacity(n as usize), 0);
    for i in 0..n {
        for attempt in 0.. {
            let id = format!("{p}-{i}-{attempt}");
            match producer.submit_json(&request(&id, i)).await {
                Ok(accepted) if accepted.lane == warmlane_shared::settings::DEGRADED_LANE => {
                    ids.push(id);
                    break;
                }
                Ok(accepted) => return Err(format!("{id} went to lane {}, not degraded", accepted.lane)),
                Err(ProducerError::Rejected(r)) if r.code == ErrorCode::QueueOverloaded && r.reason == "queue_full" => {
                    queue_full += 1;
                    tokio::time::sleep(RESUBMIT_PAUSE).await;
                }
                Err(e) => return Err(format!("{id} was not admitted: {e}")),
            }
        }
    }
    Ok((ids, queue_full))
}

/// Waits until the degraded worker's heartbeat is in Redis (it consumes from then on),
/// and a second more for its spare runner to start.
async fn wait_for_degraded_worker(fleet: &Fleet) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let workers = fleet.producer.store().workers().await.map_err(|e| format!("heartbeats: {e}"))?;
        if workers.iter().any(|h| h.lane == warmlane_shared::settings::DEGRADED_LANE) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err("the degraded worker sent no heartbeat within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The host in one line: cores and CPU model.
pub fn host_line() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("host: {cores} cores, {model}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(window: u32, done: u32, elapsed_ms: u64, past_limit: u32) -> ModeReport {
        ModeReport { window, requests: done, done, past_limit, elapsed_ms, ..ModeReport::default() }
    }

    #[test]
    fn verdicts_compare_throughput_and_count_late_runs() {
        let cases = [
            (report(1, 40, 40_000, 0), report(8, 40, 10_000, 0), "4.00x", "met", "0 (met)"),
            (report(1, 40, 40_000, 0), report(8, 40, 20_000, 0), "2.00x", "NOT met", "0 (met)"),
            (report(1, 40, 40_000, 1), report(8, 40, 10_000, 0), "4.00x", "met", "1 (NOT met)"),
        ];
        for (fifo, aware, ratio, target, late) in cases {
            let lines = verdict(&fifo, &aware, None);
            assert!(lines[0].ends_with(ratio), "{lines:?}");
            assert!(lines[1].ends_with(&format!("(parking off): {target}")), "{lines:?}");
            assert_eq!(lines[2], format!("served past the limit: {late}"));
            assert_eq!(lines.len(), 3);
        }
        // With parking: its ratio is reported, and its late runs count.
        let lines = verdict(&report(1, 40, 40_000, 0), &report(8, 40, 10_000, 0), Some(&report(8, 40, 5_000, 2)));
        assert_eq!(lines[2], "served past the limit: 2 (NOT met)");
        assert!(lines[3].contains("= 8.00x (reported; no target)"), "{lines:?}");
    }

    #[test]
    fn wait_quantiles_take_the_nearest_rank() {
        let r = ModeReport { waits_ms: (1..=100).collect(), ..ModeReport::default() };
        assert_eq!((r.wait_quantile(0.5), r.wait_quantile(0.99), r.wait_quantile(1.0)), (50, 99, 100));
        assert_eq!(ModeReport::default().wait_quantile(0.5), 0);
        assert_eq!(report(1, 0, 0, 0).name(), "FIFO");
        assert_eq!(report(8, 0, 0, 0).name(), "switch-aware (window 8)");
    }
}
