//! CPU time per request of the load generator, the broker and Redis, read from /proc.

/// CPU time (utime + stime, in USER_HZ ticks of 10 ms) of this process, the broker
/// (`beam.smp`) and Redis (`redis-server`), read from /proc; zero for a server on
/// another host. On a shared host it shows what each side costs the machine.
pub(crate) struct Cpu {
    ticks: [u64; 3],
}

impl Cpu {
    pub(crate) fn now() -> Cpu {
        let mut ticks = [proc_ticks("self"), 0, 0];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if !name.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let comm = std::fs::read_to_string(format!("/proc/{name}/comm")).unwrap_or_default();
                match comm.trim() {
                    "beam.smp" => ticks[1] += proc_ticks(&name),
                    "redis-server" => ticks[2] += proc_ticks(&name),
                    _ => {}
                }
            }
        }
        Cpu { ticks }
    }
}

/// CPU ticks summed over rounds, and the requests they served.
#[derive(Default)]
pub(crate) struct CpuPerRequest {
    ticks: [u64; 3],
    requests: usize,
}

impl CpuPerRequest {
    pub(crate) fn between(before: &Cpu, after: &Cpu, requests: usize) -> CpuPerRequest {
        CpuPerRequest { ticks: std::array::from_fn(|i| after.ticks[i].saturating_sub(before.ticks[i])), requests }
    }

    pub(crate) fn merge(&mut self, other: &CpuPerRequest) {
        for i in 0..3 {
            self.ticks[i] += other.ticks[i];
        }
        self.requests += other.requests;
    }

    fn per(&self, i: usize) -> f64 {
        self.ticks[i] as f64 * 10.0 / self.requests.max(1) as f64
    }

    /// Milliseconds of CPU per request, all three processes.
    pub(crate) fn total(&self) -> f64 {
        self.per(0) + self.per(1) + self.per(2)
    }
}

impl std::fmt::Display for CpuPerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loadgen {:.3} ms, broker {:.3} ms, redis {:.3} ms, total {:.3} ms",
            self.per(0),
            self.per(1),
            self.per(2),
            self.total()
        )
    }
}

fn proc_ticks(pid: &str) -> u64 {
    let fields = warmlane_tests::servers::proc_stat(pid).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    ticks(11) + ticks(12)
}

/// The host CPU's model name, from /proc/cpuinfo.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
