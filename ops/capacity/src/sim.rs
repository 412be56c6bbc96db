//! The event loop: arrivals, warm lanes, the degraded queue and its workers.
//!
//! This is a model of the routing contract, not of the code: FR-020 order
//! (warm lane if ready, else degraded if admission passes, else
//! `queue_overloaded`), FR-021(c) (a request not started on its lane within
//! the lane wait limit moves to degraded), FR-017 (degraded depth and max
//! wait) and FR-001/FR-002 (a degraded worker holds one model and pays a
//! switch to change it). Queues are FIFO; a RabbitMQ consumer with prefetch 1
//! behaves that way. A single degraded worker may hold a window of K
//! deliveries and pick among them ([`crate::window::pick`], issue #16); K = 1
//! is that FIFO. Requests stop arriving at the horizon (or after a closed
//! burst) and the system then drains, so every arrival has an outcome.

use crate::config::{Burst, Estimating, Mix, SimConfig};
use crate::degraded::DegradedWorker;
use crate::dist::exponential;
use crate::event::EventQueue;
use crate::rng::Rng;
use crate::stats::{Report, Tally};
use crate::window::Estimates;
use std::collections::VecDeque;

mod degraded_queue;

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Being published (admission delay).
    Publishing,
    /// Ready in its lane's queue.
    LaneWaiting,
    /// Ready in the degraded queue.
    DegradedWaiting,
    /// Delivered to the degraded worker's window, not yet picked.
    Held,
    /// Picked up by a worker.
    Started,
    /// Answered `queue_overloaded`.
    Rejected,
}

#[derive(Debug, Clone)]
struct Request {
    model: usize,
    arrival: f64,
    /// When it entered the degraded queue (its degraded wait began).
    degraded_since: f64,
    state: State,
}

/// Simulation events; requests are referred to by index.
#[derive(Debug, Clone, Copy)]
enum Ev {
    /// Next arrival of stream `s` (a model, or the single alternating stream).
    Arrival(usize),
    /// Next submission of the burst (a new request, or a refused one again).
    Submit,
    /// Publish to the lane queue has completed.
    PublishLane(usize),
    /// Publish to the degraded queue has completed (admission happens here).
    PublishDegraded(usize),
    /// Lane wait limit of a request.
    LaneTimeout(usize),
    /// Degraded max wait of a request.
    DegradedTimeout(usize),
    /// A warm worker of lane `model` finished.
    LaneDone { model: usize, req: usize },
    /// Degraded worker `worker` finished `req`.
    DegradedDone { worker: usize, req: usize },
    /// Lane `model` flips between available and unavailable.
    LaneToggle(usize),
}

#[derive(Debug)]
struct Lane {
    queue: VecDeque<usize>,
    idle: usize,
    available: bool,
}

/// The burst's submitter: the next request to create and the one not yet admitted.
#[derive(Debug, Default)]
struct Submitter {
    next: u64,
    pending: Option<usize>,
}

/// Random streams; one per purpose so configurations share arrivals.
struct Streams {
    arrivals: Vec<Rng>,
    service: Vec<Rng>,
    outages: Vec<Rng>,
}

/// Runs one configuration and returns its figures. The config must have
/// passed [`SimConfig::validate`].
pub fn simulate(cfg: &SimConfig) -> Report {
    let mut sim = Sim::new(cfg);
    sim.run();
    sim.tally.into_report(cfg)
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    now: f64,
    events: EventQueue<Ev>,
    requests: Vec<Request>,
    lanes: Vec<Lane>,
    degraded_queue: VecDeque<usize>,
    degraded_ready: usize,
    workers: Vec<DegradedWorker>,
    /// Requests held in the window of a single degraded worker, in delivery order.
    held: Vec<usize>,
    /// What the windowed worker believes each model costs.
    estimates: Estimates,
    submitter: Submitter,
    rng: Streams,
    next_alternating: usize,
    tally: Tally,
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a SimConfig) -> Self {
        let n = cfg.models.len();
        let stream = |base: u64| (0..n as u64).map(|i| Rng::new(cfg.seed, base + i)).collect();
        Self {
            cfg,
            now: 0.0,
            events: EventQueue::new(),
            requests: Vec::new(),
            lanes: cfg
                .models
                .iter()
                .map(|m| Lane { queue: VecDeque::new(), idle: m.warm_workers, available: true })
                .collect(),
            degraded_queue: VecDeque::new(),
            degraded_ready: 0,
            workers: vec![DegradedWorker::default(); cfg.degraded_workers],
            held: Vec::with_capacity(cfg.degraded_window),
            estimates: match cfg.degraded_estimates {
                Estimating::Configured => Estimates::known(cfg.switch_s, cfg.models.iter().map(|m| m.service.mean_s)),
                Estimating::Measured => Estimates::unknown(n),
            },
            submitter: Submitter::default(),
            rng: Streams { arrivals: stream(100), service: stream(200), outages: stream(300) },
            next_alternating: 0,
            tally: Tally::new(n),
        }
    }

    fn total_rate(&self) -> f64 {
        self.cfg.models.iter().map(|m| m.arrival_rate_per_s).sum()
    }

    fn stream_rate(&self, s: usize) -> f64 {
        match self.cfg.mix {
            Mix::Independent => self.cfg.models[s].arrival_rate_per_s,
            Mix::Alternating => self.total_rate(),
        }
    }

    fn schedule_arrival(&mut self, s: usize) {
        let rate = self.stream_rate(s);
        if rate <= 0.0 {
            return;
        }
        let t = self.now + exponential(&mut self.rng.arrivals[s], 1.0 / rate);
        if t < self.cfg.horizon_s {
            self.events.push(t, Ev::Arrival(s));
        }
    }

    fn run(&mut self) {
        let streams = match (self.cfg.burst, self.cfg.mix) {
            (Some(_), _) => 0,
            (None, Mix::Independent) => self.cfg.models.len(),
            (None, Mix::Alternating) => 1,
        };
        if self.cfg.burst.is_some() {
            self.events.push(0.0, Ev::Submit);
        }
        for s in 0..streams {
            self.schedule_arrival(s);
        }
        for m in 0..self.cfg.models.len() {
            self.start_outages(m);
        }
        while let Some((t, ev)) = self.events.pop() {
            self.now = t;
            self.handle(ev);
        }
    }

    /// Lanes alternate up/down with exponential periods whose long-run down
    /// fraction is `unavailable_fraction`; the initial state is drawn from it.
    fn start_outages(&mut self, m: usize) {
        let f = self.cfg.models[m].unavailable_fraction;
        if f <= 0.0 || self.cfg.models[m].warm_workers == 0 {
            return;
        }
        let r = &mut self.rng.outages[m];
        self.lanes[m].available = r.uniform_open() >= f;
        self.schedule_toggle(m);
    }

    fn schedule_toggle(&mut self, m: usize) {
        let f = self.cfg.models[m].unavailable_fraction;
        let down = self.cfg.outage_mean_s;
        let mean = if self.lanes[m].available { down * (1.0 - f) / f } else { down };
        let t = self.now + exponential(&mut self.rng.outages[m], mean);
        if t < self.cfg.horizon_s {
            self.events.push(t, Ev::LaneToggle(m));
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrival(s) => self.on_arrival(s),
            Ev::Submit => self.on_submit(),
            Ev::PublishLane(r) => self.on_publish_lane(r),
            Ev::PublishDegraded(r) => self.on_publish_degraded(r),
            Ev::LaneTimeout(r) => {
                if self.requests[r].state == State::LaneWaiting {
                    // FR-021(c): no warm lane within the limit; the stale
                    // entry stays in the lane queue and is skipped later.
                    let m = self.requests[r].model;
                    self.tally.models[m].moved_to_degraded += 1;
                    self.publish(r, false);
                }
            }
            Ev::DegradedTimeout(r) => {
                // A held request is answered at the worker's next pick instead.
                if self.requests[r].state == State::DegradedWaiting {
                    self.degraded_ready -= 1;
                    self.answer_wait_timeout(r);
                }
            }
            Ev::LaneDone { model, req } => {
                self.complete(req);
                self.lanes[model].idle += 1;
                self.dispatch_lane(model);
            }
            Ev::DegradedDone { worker, req } => {
                self.complete(req);
                self.workers[worker].finish();
                self.dispatch_degraded();
            }
            Ev::LaneToggle(m) => {
                self.lanes[m].available = !self.lanes[m].available;
                self.schedule_toggle(m);
            }
        }
    }

    fn on_arrival(&mut self, s: usize) {
        let model = match self.cfg.mix {
            Mix::Independent => s,
            Mix::Alternating => self.next_alternating_model(),
        };
        let r = self.new_request(model);
        self.route(r);
        self.schedule_arrival(s);
    }

    fn new_request(&mut self, model: usize) -> usize {
        let r = self.requests.len();
        self.requests.push(Request { model, arrival: self.now, degraded_since: self.now, state: State::Publishing });
        self.tally.models[model].arrivals += 1;
        r
    }

    /// FR-020 step 1: the producer routes to the warm lane if it is ready.
    fn route(&mut self, r: usize) {
        let model = self.requests[r].model;
        let lane_ready = self.cfg.models[model].warm_workers > 0 && self.lanes[model].available;
        self.publish(r, lane_ready);
    }

    /// The burst submits its requests one after another, models alternating;
    /// a refused one is submitted again (a new task: its wait starts afresh).
    fn on_submit(&mut self) {
        let r = match self.submitter.pending {
            Some(r) => {
                self.requests[r].arrival = self.now;
                r
            }
            None => {
                let model = (self.submitter.next % self.cfg.models.len() as u64) as usize;
                let r = self.new_request(model);
                self.submitter.pending = Some(r);
                r
            }
        };
        self.route(r);
    }

    /// `r` was admitted; the burst moves on to its next request.
    fn admitted(&mut self, r: usize) {
        let Some(Burst { requests, .. }) = self.cfg.burst else { return };
        if self.submitter.pending != Some(r) {
            return;
        }
        self.submitter.pending = None;
        self.submitter.next += 1;
        if self.submitter.next < requests {
            self.events.push(self.now, Ev::Submit);
        }
    }

    /// Whether the refused `r` is the burst's pending submission, now retried.
    fn resubmitted(&mut self, r: usize) -> bool {
        let Some(Burst { retry_s, .. }) = self.cfg.burst else { return false };
        if self.submitter.pending != Some(r) {
            return false;
        }
        self.tally.resubmits += 1;
        self.events.push(self.now + retry_s, Ev::Submit);
        true
    }

    /// Round-robin over models that have demand.
    fn next_alternating_model(&mut self) -> usize {
        let n = self.cfg.models.len();
        for _ in 0..n {
            let m = self.next_alternating % n;
            self.next_alternating += 1;
            if self.cfg.models[m].arrival_rate_per_s > 0.0 {
                return m;
            }
        }
        0
    }

    fn publish(&mut self, r: usize, to_lane: bool) {
        self.requests[r].state = State::Publishing;
        let ev = if to_lane { Ev::PublishLane(r) } else { Ev::PublishDegraded(r) };
        let d = self.cfg.admission_delay_s;
        if d > 0.0 {
            self.events.push(self.now + d, ev);
        } else {
            self.handle(ev);
        }
    }

    fn on_publish_lane(&mut self, r: usize) {
        let m = self.requests[r].model;
        self.requests[r].state = State::LaneWaiting;
        self.lanes[m].queue.push_back(r);
        self.admitted(r);
        if let Some(limit) = self.cfg.lane_wait_limit_s {
            self.events.push(self.requests[r].arrival + limit, Ev::LaneTimeout(r));
        }
        self.dispatch_lane(m);
    }

    /// Adds the part of `[now, now + busy)` that falls inside the horizon.
    fn busy_in_horizon(&self, busy: f64) -> f64 {
        let h = self.cfg.horizon_s;
        (self.now + busy).min(h) - self.now.min(h)
    }

    fn start(&mut self, r: usize) {
        let m = self.requests[r].model;
        self.requests[r].state = State::Started;
        let wait = self.now - self.requests[r].arrival;
        self.tally.models[m].waits.push(wait);
    }

    fn dispatch_lane(&mut self, m: usize) {
        while self.lanes[m].idle > 0 {
            let Some(r) = self.lanes[m].queue.pop_front() else {
                return;
            };
            if self.requests[r].state != State::LaneWaiting {
                continue;
            }
            self.start(r);
            self.lanes[m].idle -= 1;
            let s = self.cfg.models[m].service.sample(&mut self.rng.service[m]);
            let busy = self.busy_in_horizon(s);
            let t = &mut self.tally.models[m];
            t.lane_busy_s += busy;
            t.served_lane += 1;
            self.events.push(self.now + s, Ev::LaneDone { model: m, req: r });
        }
    }

    fn complete(&mut self, r: usize) {
        let req = &self.requests[r];
        self.tally.models[req.model].latencies.push(self.now - req.arrival);
        self.tally.last_outcome_s = self.now;
    }
}
