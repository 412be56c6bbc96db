//! The degraded worker's choice among the deliveries it holds (issue #16): serve the
//! resident model first, switch only when the oldest request for another model would
//! otherwise miss its wait budget, or when nothing for the resident model is held.
//!
//! [`pick`] is pure: the window executor ([`crate::window`]) feeds it what it holds,
//! the resident model, the clock and the [`Estimates`] it measured, and performs the
//! [`Pick`]. The rules, in order:
//!
//! 1. Anything that would not reach the engine is handled at once: a request that
//!    waited past `max_wait_ms` (answered `wait_timeout` by [`crate::handle`], as with
//!    FIFO) and a body that does not decode (dead-lettered).
//! 2. Nothing held: idle. No model resident: the oldest runs.
//! 3. Nothing for the resident model held: the oldest runs (a switch).
//! 4. Only the resident model held: its oldest runs.
//! 5. Both: the resident model's oldest runs while the oldest request for another
//!    model could still start in time after it, counting one more resident run and
//!    the other model's switch (`now + inference(resident) + switch(other) <= its
//!    deadline`); else that oldest other request runs. An estimate not measured yet
//!    falls back to the oldest (FIFO): the window never bets on a guess.
//!
//! No starvation: every held request either runs before its deadline or is answered
//! `wait_timeout` at the first pick after it, and a window of one is exactly FIFO.

use std::collections::BTreeMap;

/// One held delivery, as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held<'a> {
    /// The model it asks for; `None` for a body that does not decode.
    pub model: Option<&'a str>,
    /// When its degraded wait began, unix ms (the queue's entry header, else the
    /// submit time: `warmlane_shared::routing::degraded_waited_ms`).
    pub since_ms: u64,
}

/// What the worker does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// Nothing is held.
    Idle,
    /// Handle these at once, in this order; none reaches the engine (expired or undecodable).
    Answer(Vec<usize>),
    /// Handle this one: it runs the engine (switching when its model is not resident).
    Run(usize),
}

/// What a model costs the degraded worker, as last measured; `None` until measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Loading the model in place of the resident one, ms.
    pub switch_ms: Option<u64>,
    /// One generation once resident, ms.
    pub inference_ms: Option<u64>,
}

/// Per-model estimates: the last measured load and run of each model on this worker.
/// The last observation, not an average: a degraded worker serves few models, and a
/// load or a run that grew shows at the next pick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Estimates {
    models: BTreeMap<String, Estimate>,
}

impl Estimates {
    /// The estimate of `model` (unmeasured fields `None`).
    pub fn of(&self, model: &str) -> Estimate {
        self.models.get(model).copied().unwrap_or_default()
    }

    /// Records a load of `model` that took `ms`.
    pub fn observe_switch(&mut self, model: &str, ms: u64) {
        self.models.entry(model.to_string()).or_default().switch_ms = Some(ms);
    }

    /// Records a generation of `model` that took `ms`.
    pub fn observe_inference(&mut self, model: &str, ms: u64) {
        self.models.entry(model.to_string()).or_default().inference_ms = Some(ms);
    }
}

/// The next step for a worker holding `held` (in arrival order) with `resident`
/// loaded, at `now_ms`, where a request may wait `max_wait_ms`.
pub fn pick(held: &[Held<'_>], resident: Option<&str>, now_ms: u64, max_wait_ms: u64, estimates: &Estimates) -> Pick {
    let expired = |h: &Held<'_>| now_ms.saturating_sub(h.since_ms) > max_wait_ms;
    let answer: Vec<usize> =
        held.iter().enumerate().filter(|(_, h)| h.model.is_none() || expired(h)).map(|(i, _)| i).collect();
    if !answer.is_empty() {
        return Pick::Answer(answer);
    }
    let oldest = |keep: &dyn Fn(&str) -> bool| {
        held.iter()
            .enumerate()
            .filter(|(_, h)| h.model.is_some_and(keep))
            .min_by_key(|(i, h)| (h.since_ms, *i))
            .map(|(i, _)| i)
    };
    let Some(first) = oldest(&|_| true) else { return Pick::Idle };
    let Some(resident) = resident else { return Pick::Run(first) };
    let Some(mine) = oldest(&|m| m == resident) else { return Pick::Run(first) };
    let Some(other) = oldest(&|m| m != resident) else { return Pick::Run(mine) };
    let other_model = held[other].model.unwrap_or_default();
    let (Some(inference), Some(switch)) = (estimates.of(resident).inference_ms, estimates.of(other_model).switch_ms)
    else {
        return Pick::Run(first);
    };
    let deadline = held[other].since_ms + max_wait_ms;
    if now_ms + inference + switch <= deadline {
        Pick::Run(mine)
    } else {
        Pick::Run(other)
    }
}

#[cfg(test)]
mod tests;
