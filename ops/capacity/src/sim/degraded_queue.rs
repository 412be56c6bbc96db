//! The degraded queue and its workers: admission (FR-017 depth), several
//! workers taking the head (FIFO), or one worker picking among a window of K
//! held deliveries ([`window::pick`], issue #16).

use super::{Ev, Sim, State};
use crate::config::Estimating;
use crate::degraded::{DegradedWorker, Prep};
use crate::window::{self, Pick};

impl Sim<'_> {
    pub(super) fn on_publish_degraded(&mut self, r: usize) {
        let m = self.requests[r].model;
        // FR-017/FR-018: a publish beyond the depth limit is refused; with a
        // window of K the queue holds `depth - K + 1` ready messages.
        if self.cfg.degraded_ready_limit().is_some_and(|d| self.degraded_ready >= d) {
            self.requests[r].state = State::Rejected;
            if !self.resubmitted(r) {
                self.tally.models[m].queue_full += 1;
                self.tally.last_outcome_s = self.now;
            }
            return;
        }
        self.requests[r].state = State::DegradedWaiting;
        self.requests[r].degraded_since = self.now;
        self.degraded_queue.push_back(r);
        self.degraded_ready += 1;
        self.admitted(r);
        if let Some(w) = self.cfg.degraded_max_wait_s {
            self.events.push(self.now + w, Ev::DegradedTimeout(r));
        }
        self.dispatch_degraded();
    }

    pub(super) fn dispatch_degraded(&mut self) {
        if self.workers.len() == 1 {
            self.dispatch_window();
        } else {
            self.dispatch_fifo();
        }
    }

    /// Drops entries that timed out while ready; returns the head, if any.
    fn ready_head(&mut self) -> Option<usize> {
        while let Some(&r) = self.degraded_queue.front() {
            if self.requests[r].state == State::DegradedWaiting {
                return Some(r);
            }
            self.degraded_queue.pop_front();
        }
        None
    }

    /// Several degraded workers (window 1): the head goes to an idle worker.
    fn dispatch_fifo(&mut self) {
        loop {
            let Some(r) = self.ready_head() else { return };
            let m = self.requests[r].model;
            // Prefer an idle worker that already holds the model.
            let idle = |w: &DegradedWorker| !w.busy;
            let pick = self
                .workers
                .iter()
                .position(|w| idle(w) && w.loaded == Some(m))
                .or_else(|| self.workers.iter().position(idle));
            let Some(w) = pick else { return };
            self.degraded_queue.pop_front();
            self.degraded_ready -= 1;
            self.run_degraded(w, r);
        }
    }

    /// One degraded worker holding a window of K: the broker tops the window up
    /// to K unacked deliveries (the one running counts, as with prefetch K), and
    /// whenever the worker is free it asks [`window::pick`]. With K = 1 the
    /// window only ever holds the head, so this is FIFO, draw for draw.
    fn dispatch_window(&mut self) {
        self.fill_and_pick();
        // Ready plus held (the one running aside) stays within the depth.
        debug_assert!(
            self.cfg.degraded_depth.is_none_or(|d| self.degraded_ready + self.held.len() <= d),
            "ready {} + held {} over the depth {:?}",
            self.degraded_ready,
            self.held.len(),
            self.cfg.degraded_depth
        );
    }

    fn fill_and_pick(&mut self) {
        let k = self.cfg.degraded_window;
        loop {
            let busy = usize::from(self.workers[0].busy);
            while self.held.len() + busy < k {
                let Some(r) = self.ready_head() else { break };
                self.degraded_queue.pop_front();
                self.degraded_ready -= 1;
                self.requests[r].state = State::Held;
                self.held.push(r);
            }
            if busy == 1 {
                return;
            }
            let view: Vec<window::Held> = self
                .held
                .iter()
                .map(|&r| window::Held { model: self.requests[r].model, since_s: self.requests[r].degraded_since })
                .collect();
            let loaded = self.workers[0].loaded;
            match window::pick(&view, loaded, self.now, self.cfg.degraded_max_wait_s, &self.estimates) {
                Pick::Idle => return,
                Pick::Answer(expired) => {
                    for i in expired.into_iter().rev() {
                        let r = self.held.remove(i);
                        self.answer_wait_timeout(r);
                    }
                }
                Pick::Run(i) => {
                    let r = self.held.remove(i);
                    self.run_degraded(0, r);
                }
            }
        }
    }

    /// Degraded worker `w` starts `r`: a load if its model is not resident, then the run.
    fn run_degraded(&mut self, w: usize, r: usize) {
        let m = self.requests[r].model;
        self.start(r);
        let (prep, prep_s) = self.workers[w].begin(m, self.cfg.switch_s);
        match prep {
            Prep::Ready => {}
            Prep::ColdLoad => self.tally.cold_loads += 1,
            Prep::Switch => self.tally.switches += 1,
        }
        let run_s = self.cfg.models[m].service.sample(&mut self.rng.service[m]);
        if self.cfg.degraded_estimates == Estimating::Measured {
            // The worker records these when the run ends, before its next pick.
            if prep != Prep::Ready {
                self.estimates.observe_switch(m, prep_s);
            }
            self.estimates.observe_inference(m, run_s);
        }
        let s = prep_s + run_s;
        self.tally.degraded_busy_s += self.busy_in_horizon(s);
        self.tally.models[m].served_degraded += 1;
        self.events.push(self.now + s, Ev::DegradedDone { worker: w, req: r });
    }

    /// FR-017: answered `queue_overloaded`/`wait_timeout` (it never runs).
    pub(super) fn answer_wait_timeout(&mut self, r: usize) {
        self.requests[r].state = State::Rejected;
        let m = self.requests[r].model;
        self.tally.models[m].wait_timeout += 1;
        self.tally.last_outcome_s = self.now;
    }
}
