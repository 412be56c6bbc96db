//! Settings tests; [`fixture`] is the repository's own `inference_settings.json`.

use super::*;

/// Path of the repository's settings file.
pub(crate) fn repo_settings_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../inference_settings.json")
}

/// The repository's settings, as every binary loads them.
pub(crate) fn fixture() -> Settings {
    match Settings::load(&repo_settings_path()) {
        Ok(s) => s,
        Err(e) => panic!("repository settings do not load: {e}"),
    }
}

fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Settings, SettingsError> {
    let path = repo_settings_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    edit(&mut json);
    let dir = path.parent().unwrap_or(Path::new("."));
    Settings::from_json(&json.to_string(), Path::new("inference_settings.json"), dir)
}

#[test]
fn repository_settings_hold_the_contract_defaults() {
    let s = fixture();
    assert_eq!(s.degraded.max_depth, 25);
    assert_eq!(s.degraded.max_wait_ms, 30_000);
    assert_eq!(s.lanes.lane_wait_ms, 30_000);
    let a = s.model("anisora").unwrap();
    assert!(a.steps.fixed && a.steps.default == 8);
    let p = s.model("phr00t").unwrap();
    assert!(p.steps.fixed && p.steps.default == 4);
    assert!(p.cfg.fixed && p.cfg.default == 1.0);
}

#[test]
fn late_claims_default_to_a_quarter_second_when_the_file_predates_them() {
    assert_eq!(fixture().lanes.late_claim_ms, 250);
    let older = edited(|j| {
        j["lanes"].as_object_mut().unwrap().remove("late_claim_ms");
    })
    .unwrap();
    assert_eq!(older.lanes.late_claim_ms, 250);
    assert_eq!(edited(|j| j["lanes"]["late_claim_ms"] = 0.into()).unwrap().lanes.late_claim_ms, 0);
    assert!(edited(|j| j["lanes"]["late_claim_ms"] = (-1).into()).is_err());
}

#[test]
fn errors_name_file_model_and_field() {
    let err = edited(|j| j["models"]["phr00t"]["prompt_max_chars"] = 5000.into()).unwrap_err();
    assert_eq!(err.model.as_deref(), Some("phr00t"));
    assert_eq!(err.field, "prompt_max_chars");
    let text = err.to_string();
    assert!(
        text.contains("inference_settings.json") && text.contains("phr00t") && text.contains("prompt_max_chars"),
        "{text}"
    );

    let err = edited(|j| j["models"]["anisora"]["steps"]["default"] = 0.into()).unwrap_err();
    assert_eq!((err.model.as_deref(), err.field.as_str()), (Some("anisora"), "steps"));

    let err = edited(|j| j["models"]["anisora"]["stepz"] = 8.into()).unwrap_err();
    assert!(err.to_string().contains("stepz"), "{err}");

    let err = edited(|j| j["degraded"]["max_depth"] = 0.into()).unwrap_err();
    assert_eq!(err.field, "degraded.max_depth");

    let err = edited(|j| {
        let m = j["models"]["anisora"].clone();
        j["models"]["degraded"] = m;
    })
    .unwrap_err();
    assert_eq!(err.model.as_deref(), Some("degraded"));

    let err = edited(|j| j["models"]["anisora"]["cfg"]["default"] = 99.0.into()).unwrap_err();
    assert_eq!(err.field, "cfg");
}

#[test]
fn a_third_model_is_a_settings_change_only() {
    let s = edited(|j| {
        let mut m = j["models"]["phr00t"].clone();
        m["display_name"] = "Wan Mini".into();
        m["steps"] = serde_json::json!({"default": 6, "fixed": true, "min": 6, "max": 6});
        j["models"]["wanmini"] = m;
    })
    .unwrap();
    assert!(s.lane_models().any(|m| m == "wanmini"));
    let topo = crate::Topology::new("warmlane").declarations(&s);
    assert!(topo.queues.iter().any(|q| q.name == "warmlane.lane.wanmini"));
    let body =
        serde_json::json!({"v": 1, "task_id": "t3", "model": "wanmini", "prompt": "a fox", "steps": 6, "cfg": 1.0});
    let req = crate::validate_json(&body, &s).unwrap();
    assert_eq!((req.model.as_str(), req.steps), ("wanmini", 6));
    let body = serde_json::json!({"v": 1, "task_id": "t3", "model": "wanmini", "prompt": "a fox", "steps": 4});
    assert_eq!(crate::validate_json(&body, &s).unwrap_err().rejection.reason, "steps");
}

#[test]
fn pipeline_io_and_pixel_multiples_are_checked() {
    let wan = fixture();
    let p = &wan.model("wan-tiny").expect("wan-tiny is configured").pipeline;
    use crate::settings::pipeline::{ComponentRole, Guidance, Slot, TimestepSpacing};
    assert_eq!(
        (p.timestep_spacing, p.guidance, p.pixel_multiple()),
        (TimestepSpacing::ToSigmaMin, Guidance::Batch, 16)
    );
    assert_eq!(p.tensor(ComponentRole::Denoiser, Slot::Prediction), Some("noise_pred"));
    // The demo models keep the defaults.
    let a = &wan.model("anisora").unwrap().pipeline;
    assert_eq!((a.timestep_spacing, a.guidance, a.pixel_multiple()), (TimestepSpacing::Uniform, Guidance::TwoPass, 8));
    assert_eq!(a.tensor(ComponentRole::Denoiser, Slot::Prediction), Some("velocity"));

    // (edit, field named in the error)
    type Edit = fn(&mut serde_json::Value);
    let cases: [(Edit, &str); 5] = [
        (|j| j["models"]["wan-tiny"]["width"]["multiple_of"] = 8.into(), "width.multiple_of"),
        (|j| j["models"]["wan-tiny"]["pipeline"]["latent_multiple"] = 0.into(), "pipeline.latent_multiple"),
        (
            |j| j["models"]["wan-tiny"]["pipeline"]["vae_decoder"]["io"]["timestep"] = "t".into(),
            "pipeline.vae_decoder.io.timestep",
        ),
        (
            |j| j["models"]["wan-tiny"]["pipeline"]["denoiser"]["io"]["latent"] = "".into(),
            "pipeline.denoiser.io.latent",
        ),
        (|j| j["models"]["wan-tiny"]["pipeline"]["guidance"] = "triple".into(), "expected `two_pass` or `batch`"),
    ];
    for (edit, field) in cases {
        let err = edited(edit).expect_err(field);
        assert!(err.to_string().contains(field), "{field}: {err}");
        assert_eq!(err.model.as_deref().unwrap_or("wan-tiny"), "wan-tiny");
    }
}

#[test]
fn the_degraded_window_defaults_to_one_and_stays_within_max_depth() {
    assert_eq!(fixture().degraded.window, 1);
    assert_eq!(edited(|j| j["degraded"]["window"] = 4.into()).unwrap().degraded.window, 4);
    assert_eq!(edited(|j| j["degraded"]["window"] = 25.into()).unwrap().degraded.window, 25);
    for bad in [0, 26] {
        let err = edited(|j| j["degraded"]["window"] = bad.into()).unwrap_err();
        assert_eq!(err.field, "degraded.window", "{err}");
        assert!(err.to_string().contains(&format!("got {bad}")), "{err}");
    }
}
