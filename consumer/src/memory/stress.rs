//! Concurrency stress: many threads marking components active and idle, evicting by
//! plan, reloading and re-recording pipelines through one manager. The account must
//! stay exact: at every check and at the end, the sum of per-component bytes equals
//! the manager's total, and no active or pinned component was ever evicted.

use super::budget::{Budget, BudgetSource};
use super::snapshot::{ComponentReport, PipelineReport};
use super::{MemoryManager, Policy};
use std::sync::Arc;
use warmlane_shared::memory::Backend;
use warmlane_shared::settings::pipeline::ComponentRole;
use warmlane_shared::settings::pipeline::{Placement, Provider};

fn report(model: &str, scale: u64) -> PipelineReport {
    let c = |role: ComponentRole, placement, bytes| ComponentReport {
        role,
        placement,
        provider: Provider::Cuda,
        loaded: true,
        bytes,
    };
    PipelineReport {
        model: model.into(),
        process_rss_bytes: 0,
        device_process_bytes: None,
        components: vec![
            c(ComponentRole::TextEncoder, Placement::OffloadBetweenPrompts, 3 * scale),
            c(ComponentRole::Denoiser, Placement::OffloadWhenIdle, 20 * scale),
            c(ComponentRole::VaeDecoder, Placement::Pinned, scale),
        ],
    }
}

/// A small deterministic generator per thread (no `rand` in unit tests' hot loop).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn concurrent_operations_keep_the_account_exact() {
    const THREADS: u64 = 10;
    const OPS: u64 = 2_000;
    let budget = Budget { bytes: 10_000_000, source: BudgetSource::Flag, total_bytes: None, margin_bytes: 0 };
    let policy = Policy { headroom_bytes: 2_000_000, ..Policy::default() };
    let manager = Arc::new(MemoryManager::new(budget, policy));
    let models = ["anisora", "phr00t", "wan", "ltx"];
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let manager = manager.clone();
            std::thread::spawn(move || {
                let mut rng = Lcg(t + 1);
                for i in 0..OPS {
                    let model = models[(rng.next() % 4) as usize];
                    let now = t * OPS + i;
                    let mut l = manager.lock();
                    match rng.next() % 7 {
                        0 => l.record(&report(model, 1_000 + rng.next() % 50_000), now),
                        1 => l.mark_active(model, now),
                        2 => l.mark_idle(model, now),
                        3 => {
                            for (m, role) in l.headroom_plan() {
                                l.set_loaded(&m, role, false, 0, now);
                                l.count_eviction();
                            }
                        }
                        4 => {
                            let role = ComponentRole::ALL[(rng.next() % 3) as usize];
                            l.set_loaded(model, role, true, rng.next() % 100_000, now);
                        }
                        5 => {
                            if rng.next().is_multiple_of(4) {
                                l.remove(model);
                            }
                        }
                        _ => {
                            let plan = l.eviction_plan(rng.next() % 500_000, None);
                            let snap = l.snapshot(Default::default(), Backend::Rss);
                            for (m, role) in plan {
                                let c = snap
                                    .pipelines
                                    .iter()
                                    .find(|p| p.model == m)
                                    .and_then(|p| p.components.iter().find(|c| c.role == role))
                                    .expect("planned victim exists");
                                assert!(!c.active, "active component planned for eviction");
                                assert_ne!(c.placement, Placement::Pinned, "pinned component planned for eviction");
                                l.set_loaded(&m, role, false, 0, now);
                                l.count_eviction();
                            }
                        }
                    }
                    assert_eq!(l.used(), l.sum_of_components(), "thread {t} op {i}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker thread");
    }
    let l = manager.lock();
    assert_eq!(l.used(), l.sum_of_components());
    let snap = l.snapshot(Default::default(), Backend::Rss);
    let from_snapshot: u64 = snap.pipelines.iter().flat_map(|p| p.components.iter()).map(|c| c.bytes).sum();
    assert_eq!(from_snapshot, snap.used_bytes);
    assert!(snap.evictions > 0, "the run evicted something");
    println!(
        "stress: {} ops, {} evictions, used {} of {}",
        THREADS * OPS,
        snap.evictions,
        snap.used_bytes,
        snap.budget_bytes
    );
}
