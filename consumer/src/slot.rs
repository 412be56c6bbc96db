//! The degraded worker's pipeline slot: at most one heavy pipeline (FR-001), swapped
//! only after the previous one's memory is confirmed free (FR-002, FR-003).
//!
//! A plain state machine. The supervisor ([`crate::runner::RunnerEngine`]) feeds it
//! events (a request for a model, a runner that loaded, failed, died or was released)
//! and performs the actions it returns (start or stop a runner, serve, fail). Nothing
//! here does I/O, so every transition is a row in the table test below.

/// Where the slot is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// No runner.
    Empty,
    /// A runner for the model is starting and loading its pipeline.
    Loading(String),
    /// A runner holds the model's pipeline and serves requests for it.
    Serving(String),
    /// The model's runner is being stopped; `next` loads once memory is confirmed free.
    Releasing {
        /// The model being released.
        model: String,
        /// The model requested meanwhile, if any.
        next: Option<String>,
    },
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotEvent {
    /// A request for a model.
    Request(String),
    /// The runner loaded its pipeline.
    Loaded,
    /// The runner could not load; it has been stopped.
    LoadFailed(String),
    /// The runner exited and its memory is confirmed free.
    Released,
    /// The runner exited but the memory check failed.
    ReleaseUnconfirmed(String),
    /// The runner crashed or was killed after a hang; it has been reaped.
    RunnerDied,
    /// Release what is resident (idle eviction, shutdown).
    Evict,
}

/// What the supervisor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotAction {
    /// Start a runner for the model and load its pipeline.
    StartRunner(String),
    /// Stop the model's runner and confirm its memory came back.
    StopRunner(String),
    /// The model is resident: run the request.
    Serve(String),
    /// Fail the request with this message.
    Fail(String),
}

/// The slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    state: SlotState,
}

impl Default for Slot {
    fn default() -> Self {
        Slot::new()
    }
}

impl Slot {
    /// An empty slot.
    pub fn new() -> Slot {
        Slot { state: SlotState::Empty }
    }

    /// The current state.
    pub fn state(&self) -> &SlotState {
        &self.state
    }

    /// The model being served, if any.
    pub fn serving(&self) -> Option<&str> {
        match &self.state {
            SlotState::Serving(m) => Some(m),
            _ => None,
        }
    }

    /// Applies an event; returns the actions to perform, in order.
    pub fn handle(&mut self, event: SlotEvent) -> Vec<SlotAction> {
        use SlotAction as A;
        use SlotEvent as E;
        use SlotState as S;
        let state = std::mem::replace(&mut self.state, S::Empty);
        let (next, actions) = match (state, event) {
            (S::Empty, E::Request(m)) => (S::Loading(m.clone()), vec![A::StartRunner(m)]),
            (S::Serving(cur), E::Request(m)) if cur == m => (S::Serving(cur), vec![A::Serve(m)]),
            (S::Serving(cur), E::Request(m)) => {
                (S::Releasing { model: cur.clone(), next: Some(m) }, vec![A::StopRunner(cur)])
            }
            (S::Serving(cur), E::Evict) => (S::Releasing { model: cur.clone(), next: None }, vec![A::StopRunner(cur)]),
            (S::Serving(_), E::RunnerDied) => (S::Empty, vec![]),
            (S::Loading(m), E::Loaded) => (S::Serving(m.clone()), vec![A::Serve(m)]),
            (S::Loading(_), E::LoadFailed(why)) => (S::Empty, vec![A::Fail(why)]),
            (S::Loading(m), E::RunnerDied) => {
                (S::Empty, vec![A::Fail(format!("the runner for `{m}` died while loading"))])
            }
            (S::Releasing { next: Some(m), .. }, E::Released) => (S::Loading(m.clone()), vec![A::StartRunner(m)]),
            (S::Releasing { next: None, .. }, E::Released) => (S::Empty, vec![]),
            (S::Releasing { model, .. }, E::ReleaseUnconfirmed(why)) => {
                (S::Empty, vec![A::Fail(format!("memory of `{model}` not confirmed free: {why}"))])
            }
            (s @ (S::Loading(_) | S::Releasing { .. }), E::Request(m)) => {
                let why = format!("slot busy ({s:?}); request for `{m}` refused");
                (s, vec![A::Fail(why)])
            }
            // Stale or irrelevant events (a death while releasing is expected: the
            // supervisor confirms and sends Released).
            (s, _) => (s, vec![]),
        };
        self.state = next;
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SlotAction as A;
    use SlotEvent as E;
    use SlotState as S;

    fn s(m: &str) -> String {
        m.to_string()
    }

    fn releasing(m: &str, next: Option<&str>) -> SlotState {
        S::Releasing { model: s(m), next: next.map(s) }
    }

    #[test]
    fn transitions() {
        let cases: Vec<(SlotState, SlotEvent, SlotState, Vec<SlotAction>)> = vec![
            (S::Empty, E::Request(s("a")), S::Loading(s("a")), vec![A::StartRunner(s("a"))]),
            (S::Empty, E::Evict, S::Empty, vec![]),
            (S::Empty, E::Released, S::Empty, vec![]),
            (S::Empty, E::RunnerDied, S::Empty, vec![]),
            (S::Loading(s("a")), E::Loaded, S::Serving(s("a")), vec![A::Serve(s("a"))]),
            (S::Loading(s("a")), E::LoadFailed(s("bad file")), S::Empty, vec![A::Fail(s("bad file"))]),
            (S::Loading(s("a")), E::RunnerDied, S::Empty, vec![A::Fail(s("the runner for `a` died while loading"))]),
            (S::Loading(s("a")), E::Released, S::Loading(s("a")), vec![]),
            (S::Serving(s("a")), E::Request(s("a")), S::Serving(s("a")), vec![A::Serve(s("a"))]),
            (S::Serving(s("a")), E::Request(s("b")), releasing("a", Some("b")), vec![A::StopRunner(s("a"))]),
            (S::Serving(s("a")), E::Evict, releasing("a", None), vec![A::StopRunner(s("a"))]),
            (S::Serving(s("a")), E::RunnerDied, S::Empty, vec![]),
            (S::Serving(s("a")), E::Loaded, S::Serving(s("a")), vec![]),
            (releasing("a", Some("b")), E::Released, S::Loading(s("b")), vec![A::StartRunner(s("b"))]),
            (releasing("a", None), E::Released, S::Empty, vec![]),
            (releasing("a", Some("b")), E::RunnerDied, releasing("a", Some("b")), vec![]),
            (
                releasing("a", Some("b")),
                E::ReleaseUnconfirmed(s("rss grew")),
                S::Empty,
                vec![A::Fail(s("memory of `a` not confirmed free: rss grew"))],
            ),
        ];
        for (from, event, to, actions) in cases {
            let mut slot = Slot { state: from.clone() };
            let got = slot.handle(event.clone());
            assert_eq!((slot.state(), &got), (&to, &actions), "{from:?} + {event:?}");
        }
    }

    #[test]
    fn busy_slot_refuses_and_stays() {
        for from in [S::Loading(s("a")), releasing("a", Some("b"))] {
            let mut slot = Slot { state: from.clone() };
            let got = slot.handle(E::Request(s("c")));
            assert_eq!(slot.state(), &from);
            assert!(matches!(got.as_slice(), [A::Fail(m)] if m.contains("slot busy")), "{got:?}");
        }
    }

    #[test]
    fn alternating_requests_never_hold_two() {
        let mut slot = Slot::new();
        let mut starts = 0;
        for i in 0..20 {
            let model = if i % 2 == 0 { "anisora" } else { "phr00t" };
            let mut actions = slot.handle(E::Request(s(model)));
            while let Some(action) = actions.pop() {
                match action {
                    A::StartRunner(_) => {
                        starts += 1;
                        assert!(slot.serving().is_none());
                        actions.extend(slot.handle(E::Loaded));
                    }
                    A::StopRunner(_) => actions.extend(slot.handle(E::Released)),
                    A::Serve(m) => assert_eq!(m, model),
                    A::Fail(m) => panic!("{m}"),
                }
            }
            assert_eq!(slot.serving(), Some(model));
        }
        assert_eq!(starts, 20);
    }
}
