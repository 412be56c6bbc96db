//! The degraded worker's choice among the requests it holds (issue #16), as a
//! pure function in simulated seconds.
//!
//! The real worker holds a window of K deliveries (`degraded.window`) and asks
//! `consumer/src/schedule.rs::pick` which to handle next. [`pick`] applies the
//! same rules, in the same order, so the simulation's switch counts can be
//! checked against the worker's:
//!
//! 1. a held request that waited past the max wait is answered `wait_timeout`
//!    at once (it never reaches the engine);
//! 2. nothing held: idle; no model resident: the oldest runs;
//! 3. nothing for the resident model held: the oldest runs (a switch);
//! 4. only the resident model held: its oldest runs;
//! 5. both: the resident model's oldest runs while the oldest request for
//!    another model could still start in time after it
//!    (`now + inference(resident) + switch(other) <= its deadline`), else that
//!    oldest other request runs. A missing estimate falls back to the oldest
//!    (FIFO), as in the worker before it has measured anything.
//!
//! A window of one holds only the request about to run, so it is FIFO.

/// One held request, as the window sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Held {
    /// Index of the model it asks for.
    pub model: usize,
    /// When its degraded wait began (entry into the degraded queue), s.
    pub since_s: f64,
}

/// What the worker does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// Nothing is held.
    Idle,
    /// Answer these `wait_timeout` at once, in this order; none runs.
    Answer(Vec<usize>),
    /// Run this one (switching when its model is not resident).
    Run(usize),
}

/// What the worker believes each model costs, by model index; `None` where it
/// has no estimate (rule 5 then falls back to FIFO).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimates {
    /// Loading each model in place of the resident one, s.
    pub switch_s: Vec<Option<f64>>,
    /// One generation of each model once resident, s.
    pub inference_s: Vec<Option<f64>>,
}

impl Estimates {
    /// Every model known: the same switch time and each model's inference time.
    /// This is what the simulation uses: it knows the configured means, where
    /// the real worker measures them (the last load and run of each model).
    pub fn known(switch_s: f64, inference_s: impl IntoIterator<Item = f64>) -> Self {
        let inference_s: Vec<Option<f64>> = inference_s.into_iter().map(Some).collect();
        Self { switch_s: vec![Some(switch_s); inference_s.len()], inference_s }
    }

    /// Nothing known yet about `models` models: the real worker's start.
    pub fn unknown(models: usize) -> Self {
        Self { switch_s: vec![None; models], inference_s: vec![None; models] }
    }

    /// Records a load of `model` that took `s` (the last one counts, as in the worker).
    pub fn observe_switch(&mut self, model: usize, s: f64) {
        self.switch_s[model] = Some(s);
    }

    /// Records a generation of `model` that took `s`.
    pub fn observe_inference(&mut self, model: usize, s: f64) {
        self.inference_s[model] = Some(s);
    }

    fn switch(&self, model: usize) -> Option<f64> {
        self.switch_s.get(model).copied().flatten()
    }

    fn inference(&self, model: usize) -> Option<f64> {
        self.inference_s.get(model).copied().flatten()
    }
}

/// The next step for a worker holding `held` (in the order it received them)
/// with `resident` loaded, at `now_s`, where a request may wait `max_wait_s`
/// (`None`: no limit, so nobody expires and rule 5 never forces a switch).
///
/// A request's deadline is `since_s + max_wait_s`, the instant its timeout event
/// fires in the simulation; it expires strictly after it, so a request picked
/// exactly at its deadline still runs (as a wait of exactly `max_wait_ms` does).
pub fn pick(held: &[Held], resident: Option<usize>, now_s: f64, max_wait_s: Option<f64>, est: &Estimates) -> Pick {
    let deadline = |h: &Held| max_wait_s.map_or(f64::INFINITY, |w| h.since_s + w);
    let answer: Vec<usize> = held.iter().enumerate().filter(|(_, h)| now_s > deadline(h)).map(|(i, _)| i).collect();
    if !answer.is_empty() {
        return Pick::Answer(answer);
    }
    let oldest = |keep: &dyn Fn(usize) -> bool| {
        held.iter()
            .enumerate()
            .filter(|(_, h)| keep(h.model))
            .min_by(|(i, a), (j, b)| a.since_s.total_cmp(&b.since_s).then(i.cmp(j)))
            .map(|(i, _)| i)
    };
    let Some(first) = oldest(&|_| true) else { return Pick::Idle };
    let Some(resident) = resident else { return Pick::Run(first) };
    let Some(mine) = oldest(&|m| m == resident) else { return Pick::Run(first) };
    let Some(other) = oldest(&|m| m != resident) else { return Pick::Run(mine) };
    let (Some(inference), Some(switch)) = (est.inference(resident), est.switch(held[other].model)) else {
        return Pick::Run(first);
    };
    if now_s + inference + switch <= deadline(&held[other]) {
        Pick::Run(mine)
    } else {
        Pick::Run(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Option<f64> = Some(1.0);

    /// Three models: a switch takes 0.1 s, a generation 0.05 s (the worker's
    /// table test, `consumer/src/schedule/tests.rs`, in seconds).
    fn measured() -> Estimates {
        Estimates::known(0.1, [0.05; 3])
    }

    fn held(items: &[(usize, f64)]) -> Vec<Held> {
        items.iter().map(|&(model, since_s)| Held { model, since_s }).collect()
    }

    /// A table row: name, held (model, since), resident, now, expected pick.
    type Case = (&'static str, Vec<(usize, f64)>, Option<usize>, f64, Pick);

    #[test]
    fn picks_as_the_worker_does() {
        let (a, b, c) = (0, 1, 2);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("empty window", vec![], None, 0.0, Pick::Idle),
            ("empty window, a resident", vec![], Some(a), 0.0, Pick::Idle),
            ("no model resident: the oldest", vec![(a, 0.01), (b, 0.0)], None, 0.1, Pick::Run(1)),
            ("resident first", vec![(b, 0.0), (a, 0.01)], Some(a), 0.1, Pick::Run(1)),
            ("resident first, its oldest", vec![(b, 0.0), (a, 0.01), (a, 0.005)], Some(a), 0.1, Pick::Run(2)),
            ("only the resident model held", vec![(a, 0.0), (a, 0.005)], Some(a), 0.1, Pick::Run(0)),
            ("nothing for the resident model: the oldest", vec![(b, 0.02), (c, 0.01)], Some(a), 0.1, Pick::Run(1)),
            // b's deadline is 1.0: 0.85 + 0.05 (one more a) + 0.1 (switch to b) still makes it.
            ("resident first up to the last safe moment", vec![(b, 0.0), (a, 0.01)], Some(a), 0.85, Pick::Run(1)),
            ("deadline-driven switch", vec![(b, 0.0), (a, 0.01)], Some(a), 0.851, Pick::Run(0)),
            ("deadline-driven switch to the oldest other", vec![(a, 0.01), (c, 0.005), (b, 0.0)], Some(a), 0.9, Pick::Run(2)),
            ("not measured yet: FIFO", vec![(b, 0.0), (a, 0.01)], Some(a), 0.1, Pick::Run(0)),
            ("expired ones are answered, not run", vec![(a, 0.0), (b, 0.5), (a, 1.2)], Some(a), 1.6, Pick::Answer(vec![0, 1])),
            ("a wait of exactly the max wait still runs", vec![(b, 0.0)], Some(a), 1.0, Pick::Run(0)),
            ("equal arrival times: the first received", vec![(b, 0.0), (c, 0.0)], Some(a), 0.1, Pick::Run(0)),
        ];
        for (name, items, resident, now, want) in cases {
            let est = if name.starts_with("not measured") { Estimates::default() } else { measured() };
            assert_eq!(pick(&held(&items), resident, now, WAIT, &est), want, "{name}");
        }
    }

    #[test]
    fn without_a_wait_limit_nobody_expires_and_the_resident_model_goes_first() {
        let items = held(&[(1, 0.0), (0, 50.0)]);
        assert_eq!(pick(&items, Some(0), 1e6, None, &measured()), Pick::Run(1));
    }

    #[test]
    fn observations_fill_the_estimates_one_model_at_a_time() {
        let mut e = Estimates::unknown(2);
        let items = held(&[(1, 0.0), (0, 0.01)]);
        assert_eq!(pick(&items, Some(0), 0.1, WAIT, &e), Pick::Run(0), "nothing measured: FIFO");
        e.observe_inference(0, 0.05);
        assert_eq!(pick(&items, Some(0), 0.1, WAIT, &e), Pick::Run(0), "b's switch not measured: FIFO");
        e.observe_switch(1, 0.1);
        assert_eq!(pick(&items, Some(0), 0.1, WAIT, &e), Pick::Run(1), "both measured: resident first");
        assert_eq!(e, Estimates { switch_s: vec![None, Some(0.1)], inference_s: vec![Some(0.05), None] });
    }

    #[test]
    fn a_window_of_one_is_fifo() {
        for model in [0, 1] {
            for resident in [None, Some(0), Some(1)] {
                for now in [0.0, 0.5, 1.0, 1.001, 5.0] {
                    let got = pick(&held(&[(model, 0.0)]), resident, now, WAIT, &measured());
                    let want = if now > 1.0 { Pick::Answer(vec![0]) } else { Pick::Run(0) };
                    assert_eq!(got, want, "model {model} with {resident:?} at {now}");
                }
            }
        }
    }
}
