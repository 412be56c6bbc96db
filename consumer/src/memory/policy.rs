//! Per-component placement policies and the OOM retry limit, as pure rules.
//!
//! The defaults follow the VRAM offloader's video policies: the VAE decoder is pinned
//! (small, runs for every frame), the text encoder is released between prompts (it is
//! needed once per request), and the denoiser stays while the lane is busy and is
//! released only after it has been idle past a threshold. Placements come from the
//! settings (`models.<m>.pipeline.<component>.placement`); this module says what each
//! placement means in time.

use std::time::Duration;
use warmlane_shared::settings::pipeline::{Placement, Provider};

/// Default headroom below which idle components are evicted (1.5 GB).
pub const DEFAULT_HEADROOM_BYTES: u64 = 1_500_000_000;
/// Default idle time after which an `offload_when_idle` component is released.
pub const DEFAULT_IDLE_RELEASE: Duration = Duration::from_secs(300);
/// Consecutive OOM retries before a task fails `gpu_oom`.
pub const DEFAULT_MAX_OOM_RETRIES: u32 = 3;

/// When an `offload_between_prompts` component (the text encoder) is released after use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BetweenPrompts {
    /// After every generation.
    Always,
    /// After every generation when it holds device memory (a CUDA session); on the CPU
    /// provider it already sits where the offloader would move it, so it is kept and
    /// is first in line for eviction.
    #[default]
    OnDevice,
    /// Never eagerly; only LRU eviction releases it.
    Never,
}

/// The manager's tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Free bytes below which idle, non-pinned components are evicted.
    pub headroom_bytes: u64,
    /// Idle time after which `offload_when_idle` components are released; `None` keeps them.
    pub idle_release: Option<Duration>,
    /// What to do with `offload_between_prompts` components after a generation.
    pub between_prompts: BetweenPrompts,
    /// Consecutive `gpu_oom` retries of one task.
    pub max_oom_retries: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            headroom_bytes: DEFAULT_HEADROOM_BYTES,
            idle_release: Some(DEFAULT_IDLE_RELEASE),
            between_prompts: BetweenPrompts::default(),
            max_oom_retries: DEFAULT_MAX_OOM_RETRIES,
        }
    }
}

/// Eviction order: lower goes first. Pinned components are never evicted.
pub fn eviction_rank(placement: Placement) -> Option<u8> {
    match placement {
        Placement::OffloadBetweenPrompts => Some(0),
        Placement::OffloadWhenIdle => Some(1),
        Placement::Pinned => None,
    }
}

impl Policy {
    /// Whether a component is released right after a generation.
    pub fn release_after_generation(&self, placement: Placement, provider: Provider) -> bool {
        placement == Placement::OffloadBetweenPrompts
            && match self.between_prompts {
                BetweenPrompts::Always => true,
                BetweenPrompts::OnDevice => provider != Provider::Cpu,
                BetweenPrompts::Never => false,
            }
    }

    /// Whether an idle component is released after `idle` without use.
    pub fn release_when_idle(&self, placement: Placement, idle: Duration) -> bool {
        placement == Placement::OffloadWhenIdle && self.idle_release.is_some_and(|limit| idle >= limit)
    }
}

/// What to do after a `gpu_oom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomDecision {
    /// Evict, clean up and run again; `attempt` counts retries from 1.
    Retry {
        /// The retry about to run.
        attempt: u32,
    },
    /// The streak reached the limit: fail the task `gpu_oom`.
    GiveUp {
        /// Retries that were made.
        retries: u32,
    },
}

/// Consecutive OOM retries, reset by a success (and at the start of every task).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomRetry {
    limit: u32,
    streak: u32,
}

impl OomRetry {
    /// A counter allowing `limit` consecutive retries.
    pub fn new(limit: u32) -> Self {
        OomRetry { limit, streak: 0 }
    }

    /// Called on every `gpu_oom`.
    pub fn on_oom(&mut self) -> OomDecision {
        if self.streak >= self.limit {
            let retries = self.streak;
            self.streak = 0;
            return OomDecision::GiveUp { retries };
        }
        self.streak += 1;
        OomDecision::Retry { attempt: self.streak }
    }

    /// Called on a success.
    pub fn on_success(&mut self) {
        self.streak = 0;
    }

    /// Retries in the current streak.
    pub fn streak(&self) -> u32 {
        self.streak
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Placement::*;

    #[test]
    fn placements_in_time() {
        let p = Policy::default();
        let cases = [
            (Pinned, Provider::Cuda, false),
            (OffloadWhenIdle, Provider::Cuda, false),
            (OffloadBetweenPrompts, Provider::Cuda, true),
            (OffloadBetweenPrompts, Provider::Cpu, false),
        ];
        for (placement, provider, want) in cases {
            assert_eq!(p.release_after_generation(placement, provider), want, "{placement:?} on {provider:?}");
        }
        let always = Policy { between_prompts: BetweenPrompts::Always, ..p };
        assert!(always.release_after_generation(OffloadBetweenPrompts, Provider::Cpu));
        let never = Policy { between_prompts: BetweenPrompts::Never, ..p };
        assert!(!never.release_after_generation(OffloadBetweenPrompts, Provider::Cuda));
        let idle = [
            (OffloadWhenIdle, 299, false),
            (OffloadWhenIdle, 300, true),
            (Pinned, 10_000, false),
            (OffloadBetweenPrompts, 10_000, false),
        ];
        for (placement, secs, want) in idle {
            assert_eq!(p.release_when_idle(placement, Duration::from_secs(secs)), want, "{placement:?} {secs}s");
        }
        let keep = Policy { idle_release: None, ..p };
        assert!(!keep.release_when_idle(OffloadWhenIdle, Duration::MAX));
        assert_eq!(eviction_rank(Pinned), None);
        assert!(eviction_rank(OffloadBetweenPrompts) < eviction_rank(OffloadWhenIdle));
    }

    #[test]
    fn oom_retries_cap_at_three_and_reset() {
        let mut r = OomRetry::new(3);
        let seq: Vec<OomDecision> = (0..4).map(|_| r.on_oom()).collect();
        assert_eq!(
            seq,
            [
                OomDecision::Retry { attempt: 1 },
                OomDecision::Retry { attempt: 2 },
                OomDecision::Retry { attempt: 3 },
                OomDecision::GiveUp { retries: 3 },
            ]
        );
        assert_eq!(r.streak(), 0, "a give-up ends the streak: the next task starts fresh");
        r.on_oom();
        r.on_oom();
        r.on_success();
        assert_eq!(r.on_oom(), OomDecision::Retry { attempt: 1 });
        let mut none = OomRetry::new(0);
        assert_eq!(none.on_oom(), OomDecision::GiveUp { retries: 0 });
    }
}
