//! Redis key names, under a prefix (`warmlane` by default).

/// How many task ids [`Keys::recent`] keeps (the oldest are trimmed as new ones come).
pub const RECENT_TASKS: usize = 10_000;

/// Key builder for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys { prefix: prefix.into() }
    }

    /// List the terminal reply is pushed to; callers BLPOP it.
    pub fn reply(&self, task_id: &str) -> String {
        format!("{}:reply:{task_id}", self.prefix)
    }

    /// Hash of the task's live state.
    pub fn task(&self, task_id: &str) -> String {
        format!("{}:task:{task_id}", self.prefix)
    }

    /// Sorted set of pending tasks by deadline (unix ms), read by the backstop sweeper.
    pub fn deadlines(&self) -> String {
        format!("{}:deadlines", self.prefix)
    }

    /// Sorted set of the tasks admitted to the degraded queue and not yet started or
    /// answered, by deadline (unix ms): the admission guard that keeps the degraded
    /// depth within its limit whatever the queue type (a quorum queue may overshoot
    /// `x-max-length`).
    pub fn degraded_admitted(&self) -> String {
        format!("{}:degraded:admitted", self.prefix)
    }

    /// Sorted set of a lane's ready workers by last heartbeat (unix ms).
    pub fn lane_workers(&self, lane: &str) -> String {
        format!("{}:lane:{lane}:workers", self.prefix)
    }

    /// Sorted set of every worker by last heartbeat, for status pages.
    pub fn all_workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// Hash of one worker's last heartbeat.
    pub fn worker(&self, worker_id: &str) -> String {
        format!("{}:worker:{worker_id}", self.prefix)
    }

    /// Hash present while an operator or the provider has taken a lane out (`cause`, `since_ms`, `note`).
    pub fn lane_disabled(&self, model: &str) -> String {
        format!("{}:lane:{model}:disabled", self.prefix)
    }

    /// Hash present while a lane's fallback to degraded is active (`cause`, `since_ms`).
    pub fn lane_fallback(&self, model: &str) -> String {
        format!("{}:lane:{model}:fallback", self.prefix)
    }

    /// Counter of cold starts (model loads) of a lane.
    pub fn lane_loads(&self, lane: &str) -> String {
        format!("{}:lane:{lane}:loads", self.prefix)
    }

    /// Sorted set of recent task ids by admission time (Redis clock, ms), newest last, capped
    /// at [`RECENT_TASKS`]; `GET /tasks` lists from it.
    pub fn recent(&self) -> String {
        format!("{}:tasks:recent", self.prefix)
    }

    /// Pub/sub channel on which cancels announce their task id to the workers.
    pub fn cancels(&self) -> String {
        format!("{}:cancels", self.prefix)
    }

    /// Sorted set of cancelled task ids by cancel time (unix ms), kept for the task
    /// lifetime: a worker that (re)subscribes to [`Keys::cancels`] reads it to catch up.
    pub fn cancelled(&self) -> String {
        format!("{}:cancelled", self.prefix)
    }

    /// Every key of this prefix, for cleanup in tests and tools.
    pub fn pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_keys() {
        let k = Keys::new("warmlane");
        assert_eq!(k.reply("abc"), "warmlane:reply:abc");
        assert_eq!(k.task("abc"), "warmlane:task:abc");
        assert_eq!(k.recent(), "warmlane:tasks:recent");
        assert_eq!(k.cancels(), "warmlane:cancels");
        assert_eq!(k.cancelled(), "warmlane:cancelled");
        assert_eq!(k.lane_workers("anisora"), "warmlane:lane:anisora:workers");
    }
}
