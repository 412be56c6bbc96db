use super::*;
use crate::memory::budget::BudgetSource;
use crate::memory::snapshot::ComponentReport;
use warmlane_shared::memory::Backend;
use ComponentRole::*;

const MB: u64 = 1_000_000;

fn budget(bytes: u64) -> Budget {
    Budget { bytes, source: BudgetSource::Flag, total_bytes: None, margin_bytes: 0 }
}

fn policy() -> Policy {
    Policy { headroom_bytes: 100 * MB, ..Policy::default() }
}

/// A pipeline of the demo shape: text encoder (between prompts), denoiser (when idle), VAE (pinned).
fn report(model: &str, te: u64, den: u64, vae: u64) -> PipelineReport {
    let c = |role: ComponentRole, placement, bytes| ComponentReport {
        role,
        placement,
        provider: Provider::Cpu,
        loaded: true,
        bytes,
    };
    PipelineReport {
        model: model.into(),
        process_rss_bytes: 0,
        device_process_bytes: None,
        components: vec![
            c(TextEncoder, Placement::OffloadBetweenPrompts, te),
            c(Denoiser, Placement::OffloadWhenIdle, den),
            c(VaeDecoder, Placement::Pinned, vae),
        ],
    }
}

fn estimate(weights: u64) -> MemoryEstimate {
    MemoryEstimate { weights_bytes: weights, runtime_bytes_per_voxel: 64 }
}

#[test]
fn record_replace_remove_keep_the_sum() {
    let mut l = Ledger::new(budget(1_000 * MB), policy());
    l.record(&report("a", 10 * MB, 200 * MB, 5 * MB), 1);
    l.record(&report("b", 10 * MB, 300 * MB, 5 * MB), 2);
    assert_eq!(l.used(), 530 * MB);
    l.record(&report("a", 10 * MB, 250 * MB, 5 * MB), 3);
    assert_eq!((l.used(), l.sum_of_components()), (580 * MB, 580 * MB));
    l.set_loaded("a", Denoiser, false, 0, 4);
    assert_eq!(l.used(), 330 * MB);
    l.set_loaded("a", Denoiser, true, 240 * MB, 5);
    assert_eq!(l.used(), l.sum_of_components());
    assert_eq!(l.remove("b"), 315 * MB);
    assert_eq!(l.remove("b"), 0);
    assert_eq!(l.free(), 1_000 * MB - 255 * MB);
    assert_eq!(l.models(), vec!["a".to_string()]);
}

#[test]
fn eviction_is_lru_text_encoders_first_never_pinned_never_active() {
    let mut l = Ledger::new(budget(1_000 * MB), policy());
    l.record(&report("a", 10 * MB, 200 * MB, 5 * MB), 100);
    l.record(&report("b", 20 * MB, 300 * MB, 5 * MB), 50);
    let cases: [(u64, Vec<Victim>); 5] = [
        (0, vec![]),
        (1, vec![("b".into(), TextEncoder)]),
        (25 * MB, vec![("b".into(), TextEncoder), ("a".into(), TextEncoder)]),
        (31 * MB, vec![("b".into(), TextEncoder), ("a".into(), TextEncoder), ("b".into(), Denoiser)]),
        (
            u64::MAX,
            vec![("b".into(), TextEncoder), ("a".into(), TextEncoder), ("b".into(), Denoiser), ("a".into(), Denoiser)],
        ),
    ];
    for (need, want) in cases {
        assert_eq!(l.eviction_plan(need, None), want, "need {need}");
    }
    l.mark_active("b", 200);
    assert_eq!(l.eviction_plan(u64::MAX, None), vec![("a".into(), TextEncoder), ("a".into(), Denoiser)]);
    assert_eq!(l.eviction_plan(u64::MAX, Some("a")), vec![]);
    assert_eq!(l.evictable_bytes(None), 210 * MB);
}

#[test]
fn headroom_and_idle_plans() {
    let mut l = Ledger::new(budget(400 * MB), policy());
    l.record(&report("a", 10 * MB, 250 * MB, 5 * MB), 0);
    // free 135 MB >= headroom 100 MB: nothing to do.
    assert!(l.headroom_plan().is_empty());
    l.set_loaded("a", Denoiser, true, 300 * MB, 0);
    // free 85 MB: 15 MB short of the headroom; the text encoder (10 MB) is not enough.
    assert_eq!(l.headroom_plan(), vec![("a".into(), TextEncoder), ("a".into(), Denoiser)]);
    l.mark_idle("a", 1_000);
    let limit = policy().idle_release.expect("default idle release").as_millis() as u64;
    assert!(l.idle_plan(1_000 + limit - 1).is_empty());
    assert_eq!(l.idle_plan(1_000 + limit), vec![("a".into(), Denoiser)]);
    l.mark_active("a", 2_000);
    assert!(l.idle_plan(u64::MAX).is_empty(), "a busy lane keeps its denoiser");
}

#[test]
fn after_generation_releases_text_encoder_only_on_device() {
    let mut l = Ledger::new(budget(400 * MB), policy());
    let mut r = report("a", 10 * MB, 250 * MB, 5 * MB);
    l.record(&r, 0);
    assert!(l.after_generation_plan("a").is_empty(), "CPU text encoder is already off the device");
    r.components[0].provider = Provider::Cuda;
    l.record(&r, 0);
    assert_eq!(l.after_generation_plan("a"), vec![TextEncoder]);
}

#[test]
fn can_fit_counts_weights_only_when_not_resident() {
    let mut l = Ledger::new(budget(500 * MB), policy());
    l.record(&report("a", 10 * MB, 200 * MB, 5 * MB), 0);
    let e = estimate(300 * MB);
    let resident = l.can_fit("a", &e, 64, 64, 8);
    assert!(resident.fits);
    assert_eq!(resident.required_bytes, 64 * 64 * 64 * 8);
    let other = l.can_fit("b", &e, 64, 64, 8);
    assert!(!other.fits && !other.never_fits(), "{}", other.message);
    assert_eq!(other.evictable_bytes, 210 * MB);
    assert!(other.message.contains("b at 64x64x8"), "{}", other.message);
    let huge = l.can_fit("b", &e, 1280, 720, 81);
    assert!(huge.never_fits(), "{}", huge.message);
}

#[test]
fn admission_table() {
    let e1 = estimate(200 * MB);
    let cases: [(u64, &[&str], &str, LoadDecision); 4] = [
        (1_000 * MB, &["a"], "b", LoadDecision::Fits),
        (300 * MB, &["a"], "b", LoadDecision::AfterReleasing(vec!["a".into()])),
        (300 * MB, &["a"], "a", LoadDecision::Resident),
        (1_000 * MB, &["a", "c"], "b", LoadDecision::Fits),
    ];
    for (bytes, resident, model, want) in cases {
        let mut l = Ledger::new(budget(bytes), policy());
        for (i, m) in resident.iter().enumerate() {
            l.record(&report(m, 10 * MB, 200 * MB, 5 * MB), i as u64);
        }
        assert_eq!(l.admit(model, &e1, 64, 64, 8), want, "budget {bytes} resident {resident:?} admit {model}");
    }
    let mut l = Ledger::new(budget(600 * MB), policy());
    l.record(&report("a", 10 * MB, 200 * MB, 5 * MB), 5);
    l.record(&report("c", 10 * MB, 200 * MB, 5 * MB), 1);
    assert_eq!(l.admit("b", &e1, 64, 64, 8), LoadDecision::AfterReleasing(vec!["c".into()]), "LRU pipeline goes first");
    let small = Ledger::new(budget(100 * MB), policy());
    match small.admit("b", &e1, 64, 64, 8) {
        LoadDecision::Never(check) => assert!(check.message.contains("budget is 100.0 MB"), "{}", check.message),
        other => panic!("want Never, got {other:?}"),
    }
}

#[test]
fn snapshot_names_and_devices() {
    let mut l = Ledger::new(budget(500 * MB), policy());
    l.record(&report("a", 10 * MB, 200 * MB, 5 * MB), 7);
    l.set_loaded("a", TextEncoder, false, 0, 8);
    let snap = serde_json::to_value(l.snapshot(Measured::default(), Backend::Rss)).expect("json");
    assert_eq!(snap["budget_bytes"], 500 * MB);
    assert_eq!(snap["used_bytes"], 205 * MB);
    assert_eq!(snap["free_bytes"], 295 * MB);
    let comps = &snap["pipelines"][0]["components"];
    assert_eq!(snap["pipelines"][0]["model"], "a");
    assert_eq!(comps[0]["role"], "text_encoder");
    assert_eq!(comps[0]["device"], "offloaded");
    assert_eq!(comps[0]["bytes"], 0);
    assert_eq!(comps[1]["placement"], "offload_when_idle");
    assert_eq!(comps[2]["device"], "cpu");
    assert_eq!(comps[2]["last_used_ms"], 7);
}

#[test]
fn measured_memory_beyond_the_components_is_not_lent_out() {
    let mut l = Ledger::new(budget(500 * MB), policy());
    l.record(&report("a", 10 * MB, 200 * MB, 5 * MB), 7);
    assert_eq!((l.used(), l.in_use(), l.free()), (215 * MB, 215 * MB, 285 * MB));
    // (measured, unaccounted, in use, free)
    let cases = [
        (300 * MB, 85 * MB, 300 * MB, 200 * MB),
        (215 * MB, 0, 215 * MB, 285 * MB),
        (100 * MB, 0, 215 * MB, 285 * MB),
        (600 * MB, 385 * MB, 600 * MB, 0),
    ];
    for (measured, unaccounted, in_use, free) in cases {
        l.observe(measured);
        assert_eq!((l.unaccounted(), l.in_use(), l.free()), (unaccounted, in_use, free), "measured {measured}");
        let snap = l.snapshot(Measured::default(), Backend::Rss);
        assert_eq!((snap.used_bytes, snap.free_bytes), (in_use, free));
        assert_eq!(l.used(), l.sum_of_components(), "the components' account is unchanged");
    }
    // A request that fits the estimates but not what is measured is refused up front.
    l.observe(450 * MB);
    let e = warmlane_shared::settings::MemoryEstimate { weights_bytes: 0, runtime_bytes_per_voxel: 1_000 };
    let check = l.can_fit("a", &e, 256, 256, 1);
    assert!(!check.fits, "65.5 MB needed, 50 MB free: {}", check.message);
    l.observe(215 * MB);
    assert!(l.can_fit("a", &e, 256, 256, 1).fits);
}
