//! The scheduler's table test and a small simulation of a held window against FIFO.

use super::*;
use std::collections::VecDeque;

const WAIT: u64 = 1_000;

/// Both models: a switch takes 100 ms, a generation 50 ms.
fn measured() -> Estimates {
    let mut e = Estimates::default();
    for m in ["a", "b", "c"] {
        e.observe_switch(m, 100);
        e.observe_inference(m, 50);
    }
    e
}

fn held<'a>(items: &[(Option<&'a str>, u64)]) -> Vec<Held<'a>> {
    items.iter().map(|&(model, since_ms)| Held { model, since_ms }).collect()
}

/// A table row: name, held (model, since), resident, now, expected pick.
type Case = (&'static str, Vec<(Option<&'static str>, u64)>, Option<&'static str>, u64, Pick);

#[test]
fn picks() {
    let (a, b, c) = (Some("a"), Some("b"), Some("c"));
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("empty window", vec![], None, 0, Pick::Idle),
        ("empty window, a resident", vec![], Some("a"), 0, Pick::Idle),
        ("no model resident: the oldest", vec![(a, 10), (b, 0)], None, 100, Pick::Run(1)),
        ("resident first", vec![(b, 0), (a, 10)], Some("a"), 100, Pick::Run(1)),
        ("resident first, its oldest", vec![(b, 0), (a, 10), (a, 5)], Some("a"), 100, Pick::Run(2)),
        ("only the resident model held", vec![(a, 0), (a, 5)], Some("a"), 100, Pick::Run(0)),
        ("nothing for the resident model: switch to the oldest", vec![(b, 20), (c, 10)], Some("a"), 100, Pick::Run(1)),
        // b's deadline is 1000: 850 + 50 (one more a) + 100 (switch to b) = 1000 still makes it.
        ("resident first up to the last safe moment", vec![(b, 0), (a, 10)], Some("a"), 850, Pick::Run(1)),
        ("deadline-driven switch", vec![(b, 0), (a, 10)], Some("a"), 851, Pick::Run(0)),
        ("deadline-driven switch to the oldest other", vec![(a, 10), (c, 5), (b, 0)], Some("a"), 900, Pick::Run(2)),
        ("not measured yet: FIFO", vec![(b, 0), (a, 10)], Some("a"), 100, Pick::Run(0)),
        ("expired ones are answered, not run", vec![(a, 0), (b, 500), (a, 1_200)], Some("a"), 1_600, Pick::Answer(vec![0, 1])),
        ("a wait of exactly max_wait_ms still runs", vec![(b, 0)], Some("a"), 1_000, Pick::Run(0)),
        ("an undecodable body is handled at once", vec![(a, 0), (None, 5)], Some("a"), 100, Pick::Answer(vec![1])),
    ];
    for (name, items, resident, now, want) in cases {
        let estimates = if name.starts_with("not measured") { Estimates::default() } else { measured() };
        let got = pick(&held(&items), resident, now, WAIT, &estimates);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn a_window_of_one_is_fifo() {
    for model in [Some("a"), Some("b"), None] {
        for resident in [None, Some("a"), Some("b")] {
            for now in [0, 500, 1_000, 1_001, 5_000] {
                let got = pick(&held(&[(model, 0)]), resident, now, WAIT, &measured());
                let expired = model.is_none() || now > WAIT;
                let want = if expired { Pick::Answer(vec![0]) } else { Pick::Run(0) };
                assert_eq!(got, want, "{model:?} with {resident:?} at {now}");
            }
        }
    }
}

#[test]
fn estimates_keep_the_last_measurement() {
    let mut e = Estimates::default();
    assert_eq!(e.of("a"), Estimate::default());
    e.observe_switch("a", 300);
    e.observe_inference("a", 40);
    e.observe_inference("a", 60);
    assert_eq!(e.of("a"), Estimate { switch_ms: Some(300), inference_ms: Some(60) });
    assert_eq!(e.of("b"), Estimate::default());
}

/// What a simulated worker did with each request.
#[derive(Debug, Default)]
struct Outcome {
    switches: u32,
    ran: u32,
    answered: u32,
}

/// Serves `arrivals` (model, arrival ms) through a window of `k` at 100 ms a switch and
/// 50 ms a generation, checking every request's bound as it goes.
fn simulate(arrivals: &[(&'static str, u64)], k: usize) -> Outcome {
    let (switch, inference) = (100, 50);
    let mut queue: VecDeque<(&str, u64)> = arrivals.iter().copied().collect();
    let mut window: Vec<(&str, u64)> = vec![];
    let (mut now, mut resident, mut out) = (0u64, None::<&str>, Outcome::default());
    loop {
        while window.len() < k && queue.front().is_some_and(|&(_, at)| at <= now) {
            window.extend(queue.pop_front());
        }
        let view: Vec<Held<'_>> = window.iter().map(|&(m, since_ms)| Held { model: Some(m), since_ms }).collect();
        match pick(&view, resident, now, WAIT, &measured()) {
            Pick::Idle => match queue.front() {
                Some(&(_, at)) => now = at,
                None => return out,
            },
            Pick::Answer(ix) => {
                for i in ix.into_iter().rev() {
                    let (_, since) = window.remove(i);
                    // Answered at the first pick after its deadline: at most one run late.
                    assert!(now - since <= WAIT + switch + inference, "answered {} ms after arrival", now - since);
                    out.answered += 1;
                }
            }
            Pick::Run(i) => {
                let (model, since) = window.remove(i);
                assert!(now - since <= WAIT, "a request ran after waiting {} ms", now - since);
                if resident != Some(model) {
                    out.switches += 1;
                    now += switch;
                    resident = Some(model);
                }
                now += inference;
                out.ran += 1;
            }
        }
    }
}

#[test]
fn a_window_switches_less_than_fifo_and_starves_nobody() {
    let alternating = |n: u64, every: u64| -> Vec<(&'static str, u64)> {
        (0..n).map(|i| (if i % 2 == 0 { "a" } else { "b" }, i * every)).collect()
    };
    for (name, arrivals) in [("a burst", alternating(40, 0)), ("a steady stream", alternating(40, 60))] {
        let fifo = simulate(&arrivals, 1);
        assert_eq!(fifo.ran + fifo.answered, 40, "{name}, FIFO: every request ends");
        for k in [2, 4, 8] {
            let window = simulate(&arrivals, k);
            assert_eq!(window.ran + window.answered, 40, "{name}, window {k}: every request ends");
            assert!(window.switches < fifo.switches, "{name}, window {k}: {window:?} vs FIFO {fifo:?}");
            assert!(window.ran >= fifo.ran, "{name}, window {k}: {window:?} vs FIFO {fifo:?}");
        }
    }
}
