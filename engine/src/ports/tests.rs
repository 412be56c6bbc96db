//! Table tests of slot binding: the demo contract, the Wan names, and each way a
//! graph and its settings can disagree.

use super::*;

fn t(name: &str, elem: Elem, shape: &[i64]) -> Declared {
    Declared { name: name.into(), elem: Some(elem), shape: shape.to_vec() }
}

fn settings(guidance: &str, denoiser_io: &str) -> PipelineSettings {
    serde_json::from_str(&format!(
        r#"{{ "dir": "m", "sampler": "flow_euler", "latent_channels": 16, "spatial_downsample": 8,
             "temporal_downsample": 4, "max_tokens": 8, "guidance": "{guidance}",
             "text_encoder": {{ "file": "t.onnx", "io": {{ "attention_mask": "attention_mask",
                                "text_embeds": "last_hidden_state" }} }},
             "denoiser": {{ "file": "d.onnx", "io": {denoiser_io} }},
             "vae_decoder": {{ "file": "v.onnx", "io": {{ "latent": "latents" }} }} }}"#
    ))
    .expect("test settings parse")
}

const WAN_IO: &str =
    r#"{ "latent": "hidden_states", "text_embeds": "encoder_hidden_states", "prediction": "noise_pred" }"#;

fn wan_denoiser() -> (Vec<Declared>, Vec<Declared>) {
    let inputs = vec![
        t("hidden_states", Elem::F32, &[-1, 16, -1, -1, -1]),
        t("timestep", Elem::F32, &[-1]),
        t("encoder_hidden_states", Elem::F32, &[-1, -1, 64]),
    ];
    (inputs, vec![t("noise_pred", Elem::F32, &[-1, 16, -1, -1, -1])])
}

#[test]
fn wan_names_bind() {
    let s = settings("batch", WAN_IO);
    let (inputs, outputs) = wan_denoiser();
    let ports = resolve(ComponentRole::Denoiser, &s, &inputs, &outputs).expect("binds");
    assert_eq!(ports.get(Slot::Latent).map(|p| p.name.as_str()), Some("hidden_states"));
    assert_eq!(ports.get(Slot::Prediction).map(|p| p.name.as_str()), Some("noise_pred"));
    let text_in = [t("input_ids", Elem::I64, &[-1, -1]), t("attention_mask", Elem::I64, &[-1, -1])];
    let text_out = [t("last_hidden_state", Elem::F32, &[-1, -1, 64])];
    let ports = resolve(ComponentRole::TextEncoder, &s, &text_in, &text_out).expect("binds");
    assert_eq!(ports.get(Slot::AttentionMask).map(|p| p.elem), Some(Elem::I64));
}

#[test]
fn demo_names_bind_without_io() {
    let s: PipelineSettings = serde_json::from_str(
        r#"{ "dir": "m", "sampler": "flow_euler", "latent_channels": 4, "spatial_downsample": 8,
             "temporal_downsample": 1, "max_tokens": 8, "text_encoder": { "file": "t" },
             "denoiser": { "file": "d" }, "vae_decoder": { "file": "v" } }"#,
    )
    .expect("parses");
    let inputs = [t("input_ids", Elem::I64, &[1, -1])];
    let ports = resolve(ComponentRole::TextEncoder, &s, &inputs, &[t("text_embeds", Elem::F32, &[1, -1, 64])]);
    let ports = ports.expect("binds");
    assert_eq!(ports.get(Slot::AttentionMask), None, "optional input left out is not fed");
    let den_in = [
        t("latent", Elem::F32, &[1, 4, -1, -1, -1]),
        t("timestep", Elem::F32, &[1]),
        t("text_embeds", Elem::F32, &[1, -1, 64]),
    ];
    assert!(resolve(ComponentRole::Denoiser, &s, &den_in, &[t("velocity", Elem::F32, &[1, 4, -1, -1, -1])]).is_ok());
}

#[test]
fn mismatches_are_named() {
    let (inputs, outputs) = wan_denoiser();
    let renamed = |from: &str, to: &str| -> Vec<Declared> {
        inputs
            .iter()
            .map(|d| if d.name == from { Declared { name: to.into(), ..d.clone() } } else { d.clone() })
            .collect()
    };
    let retyped = |name: &str, elem: Option<Elem>, shape: &[i64]| -> Vec<Declared> {
        inputs
            .iter()
            .map(|d| if d.name == name { Declared { elem, shape: shape.to_vec(), ..d.clone() } } else { d.clone() })
            .collect()
    };
    let wrong_out = [t("velocity", Elem::F32, &[-1, 16, -1, -1, -1])];
    let four_channels = [t("noise_pred", Elem::F32, &[-1, 4, -1, -1, -1])];
    let extra = [inputs.clone(), vec![t("encoder_attention_mask", Elem::I64, &[-1, -1])]].concat();
    let cases: Vec<(&str, Vec<Declared>, &[Declared], &str)> = vec![
        (
            "input renamed",
            renamed("hidden_states", "x"),
            &outputs,
            "denoiser.io.latent = \"hidden_states\": the graph has no input",
        ),
        (
            "output named wrong",
            inputs.clone(),
            &wrong_out,
            "denoiser.io.prediction = \"noise_pred\": the graph has no output",
        ),
        (
            "int latent",
            retyped("hidden_states", Some(Elem::I64), &[-1, 16, -1, -1, -1]),
            &outputs,
            "the engine feeds float32",
        ),
        ("unknown type", retyped("timestep", None, &[-1]), &outputs, "(unsupported type)"),
        ("rank", retyped("hidden_states", Some(Elem::F32), &[-1, 16, -1, -1]), &outputs, "rank 4"),
        ("channels", inputs.clone(), &four_channels, "channel dimension is 4 in the graph, but latent_channels is 16"),
        ("unfed input", extra, &outputs, "input `encoder_attention_mask` is fed by no slot"),
        ("fixed batch", retyped("hidden_states", Some(Elem::F32), &[1, 16, -1, -1, -1]), &outputs, "batch dimension"),
    ];
    let s = settings("batch", WAN_IO);
    for (what, inputs, outputs, want) in cases {
        let err = resolve(ComponentRole::Denoiser, &s, &inputs, outputs).expect_err(what);
        assert!(err.contains(want), "{what}: {err}");
    }
    // Batch 1 is fine with two passes.
    let fixed = retyped("hidden_states", Some(Elem::F32), &[1, 16, -1, -1, -1]);
    assert!(resolve(ComponentRole::Denoiser, &settings("two_pass", WAN_IO), &fixed, &outputs).is_ok());
}
