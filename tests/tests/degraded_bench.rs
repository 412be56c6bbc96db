//! `degraded-bench`'s core with tiny numbers, so the bench cannot rot: both modes run
//! through the real producer, broker, Redis and degraded worker (on a test-double
//! engine whose switch costs several generations), answer every request, run none
//! past the limit, and print the bench's lines. Speed is the bench's business; this
//! only checks behaviour.

use std::time::Duration;
use warmlane_tests::degraded_bench::{run_mode, verdict};
use warmlane_tests::engines::SleepEngine;
use warmlane_tests::settings_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_degraded_bench_runs_fifo_and_switch_aware_and_reports_both() {
    let n = 6;
    let mut reports = vec![];
    for (name, window) in [("dbench-t-fifo", 1), ("dbench-t-aware", 4)] {
        let settings = settings_with(|s| s["degraded"]["window"] = window.into());
        let engine = SleepEngine::with_switch(Duration::from_millis(10), Duration::from_millis(100));
        let handle = tokio::runtime::Handle::current();
        let report = run_mode(name, settings, n, Box::new(engine), &handle).await.expect("the mode runs");
        eprintln!("{}", report.line());
        assert_eq!(
            (report.window, report.requests, report.done),
            (window, n, n),
            "nothing waits 30 s here: {report:?}"
        );
        assert_eq!((report.wait_timeout, report.other, report.past_limit), (0, 0, 0), "{report:?}");
        assert_eq!(report.waits_ms.len(), n as usize);
        assert!(report.elapsed_ms > 0 && report.throughput() > 0.0, "{report:?}");
        reports.push(report);
    }
    let (fifo, aware) = (&reports[0], &reports[1]);
    assert_eq!(fifo.loads, u64::from(n), "FIFO loads a model for every alternating request: {fifo:?}");
    assert!(aware.loads >= 2 && aware.loads <= fifo.loads, "{aware:?}");
    let lines = verdict(fifo, aware, None);
    for line in &lines {
        eprintln!("{line}");
    }
    assert!(lines[1].starts_with("target: switch-aware throughput >= 3x FIFO (parking off): "), "{lines:?}");
    assert_eq!(lines[2], "served past the limit: 0 (met)");
}
