//! The degraded shared worker's residency rule, as a pure function.
//!
//! FR-001/FR-002: a degraded worker holds at most one heavy model and must
//! fully unload it before loading another. In capacity terms every change of
//! model costs a switch (unload + cleanup + load), and that dead time is what
//! makes a degraded-only fleet collapse under mixed traffic. The rule lives
//! here, apart from the event loop, so it is table-tested on its own.

use serde::Serialize;

/// What a degraded worker must do before it can run the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Prep {
    /// The requested model is already resident: serve at once.
    Ready,
    /// Nothing is resident: load (cold start).
    ColdLoad,
    /// Another model is resident: unload, clean up, load.
    Switch,
}

/// The preparation needed to serve `next` when `loaded` is resident.
pub fn prepare(loaded: Option<usize>, next: usize) -> Prep {
    match loaded {
        None => Prep::ColdLoad,
        Some(m) if m == next => Prep::Ready,
        Some(_) => Prep::Switch,
    }
}

/// One degraded worker: its resident model and whether it is busy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DegradedWorker {
    /// Index of the resident model, if any.
    pub loaded: Option<usize>,
    /// Whether the worker is preparing or serving a request.
    pub busy: bool,
}

impl DegradedWorker {
    /// Takes a request for `model`: marks the worker busy, makes `model`
    /// resident and returns the preparation and its duration in seconds.
    pub fn begin(&mut self, model: usize, switch_s: f64) -> (Prep, f64) {
        let prep = prepare(self.loaded, model);
        self.loaded = Some(model);
        self.busy = true;
        let secs = match prep {
            Prep::Ready => 0.0,
            Prep::ColdLoad | Prep::Switch => switch_s,
        };
        (prep, secs)
    }

    /// The request finished; the model stays resident for the next one.
    pub fn finish(&mut self) {
        self.busy = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_table() {
        let cases = [
            (None, 0, Prep::ColdLoad),
            (None, 1, Prep::ColdLoad),
            (Some(0), 0, Prep::Ready),
            (Some(1), 1, Prep::Ready),
            (Some(0), 1, Prep::Switch),
            (Some(1), 0, Prep::Switch),
        ];
        for (loaded, next, want) in cases {
            assert_eq!(prepare(loaded, next), want, "loaded {loaded:?} next {next}");
        }
    }

    fn run(seq: &[usize]) -> Vec<Prep> {
        let mut w = DegradedWorker::default();
        seq.iter()
            .map(|&m| {
                let (p, _) = w.begin(m, 20.0);
                w.finish();
                p
            })
            .collect()
    }

    #[test]
    fn alternating_models_switch_on_every_request() {
        let preps = run(&[0, 1, 0, 1, 0, 1]);
        assert_eq!(preps[0], Prep::ColdLoad);
        assert!(preps[1..].iter().all(|p| *p == Prep::Switch));
    }

    #[test]
    fn same_model_runs_never_switch() {
        let preps = run(&[1, 1, 1, 1, 1]);
        assert_eq!(preps[0], Prep::ColdLoad);
        assert!(preps[1..].iter().all(|p| *p == Prep::Ready));
    }

    #[test]
    fn switch_costs_the_switch_time() {
        let mut w = DegradedWorker { loaded: Some(0), busy: false };
        assert_eq!(w.begin(1, 20.0), (Prep::Switch, 20.0));
        assert!(w.busy);
        w.finish();
        assert_eq!(w.begin(1, 20.0), (Prep::Ready, 0.0));
    }
}
