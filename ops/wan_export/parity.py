"""Parity fixtures: the reference diffusers WanPipeline run on the tiny PyTorch modules,
and a numpy + onnxruntime Euler loop over the exported files checked against them."""
import json
import os

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from . import onnx_io
from .spec import FLOW_SHIFT

ONNX_LATENT_TOL = 1e-3


class RecordingTokenizer(PreTrainedTokenizerFast):
    """PreTrainedTokenizerFast that keeps what each call returned (ids and masks the
    pipeline actually produced)."""

    calls = None

    def __call__(self, *args, **kwargs):
        out = super().__call__(*args, **kwargs)
        if self.calls is not None:
            self.calls.append((args, kwargs, out))
        return out


def recording_tokenizer(tokenizer_json):
    return RecordingTokenizer(tokenizer_file=tokenizer_json, pad_token="<pad>", eos_token="</s>",
                              unk_token="<unk>", padding_side="right", truncation_side="right")


def scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=FLOW_SHIFT, use_dynamic_shifting=False)


def run_reference(tokenizer, text_encoder, transformer, vae, case, max_tokens):
    """Runs WanPipeline for one case; returns (json dict, ordered {name: array})."""
    from diffusers import WanPipeline
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    from .models import reference_decode

    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                       scheduler=scheduler())
    pipe.set_progress_bar_config(disable=True)
    guided = case["cfg"] > 1.0
    shape = (1, 16, (case["frames"] - 1) // 4 + 1, case["height"] // 8, case["width"] // 8)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(case["seed"]), dtype=torch.float32)

    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(case["prompt"], case["negative_prompt"], do_classifier_free_guidance=guided,
                                          max_sequence_length=max_tokens, device=torch.device("cpu"))
    fed, steps = [], []

    def pre_hook(_module, _args, kwargs):
        fed.append((kwargs["encoder_hidden_states"].clone(), kwargs["timestep"].clone()))

    def on_step_end(_pipe, _i, _t, kwargs):
        steps.append(kwargs["latents"].detach().clone())
        return {}

    tokenizer.calls = []
    handle = transformer.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        final = pipe(
            prompt=case["prompt"], negative_prompt=case["negative_prompt"], height=case["height"],
            width=case["width"], num_frames=case["frames"], num_inference_steps=case["steps"],
            guidance_scale=case["cfg"], latents=noise.clone(), output_type="latent",
            callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"],
            max_sequence_length=max_tokens,
        ).frames
    finally:
        handle.remove()
    calls, tokenizer.calls = tokenizer.calls, None
    assert len(calls) == (2 if guided else 1), len(calls)
    assert len(steps) == case["steps"] and torch.equal(steps[-1], final)
    # The embeddings the transformer was fed are encode_prompt's (cond, then uncond).
    per_step = 2 if guided else 1
    assert len(fed) == per_step * case["steps"]
    assert torch.equal(fed[0][0], cond) and (not guided or torch.equal(fed[1][0], uncond))
    sched = pipe.scheduler
    for i, (_, t) in enumerate(fed[::per_step]):
        assert float(t[0]) == float(sched.timesteps[i])
    with torch.no_grad():
        video = reference_decode(vae, final)

    def ids(call):
        out = call[2]
        return out["input_ids"][0].tolist(), out["attention_mask"][0].tolist()

    cond_ids, cond_mask = ids(calls[0])
    uncond_ids, uncond_mask = ids(calls[1]) if guided else (None, None)
    meta = {
        "case": case["case"], "prompt": case["prompt"], "negative_prompt": case["negative_prompt"],
        "steps": case["steps"], "cfg": case["cfg"], "width": case["width"], "height": case["height"],
        "frames": case["frames"], "max_tokens": max_tokens, "flow_shift": FLOW_SHIFT, "seed": case["seed"],
        "prompt_clean": prompt_clean(case["prompt"]),
        "negative_prompt_clean": prompt_clean(case["negative_prompt"] or "") if guided else None,
        "cond_ids": cond_ids, "cond_mask": cond_mask, "uncond_ids": uncond_ids, "uncond_mask": uncond_mask,
        "timesteps": sched.timesteps.tolist(), "sigmas": sched.sigmas.tolist(),
    }
    arrays = {"noise": noise, "cond_embeds": cond}
    if guided:
        arrays["uncond_embeds"] = uncond
    for i, s in enumerate(steps):
        arrays[f"latents_step_{i + 1}"] = s
    arrays["video"] = video
    return meta, {k: v.detach().float().numpy() for k, v in arrays.items()}


def _compact_json(doc):
    """One top-level key per line (lists stay on one line)."""
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items() if k != "tensors"]
    tensors = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in doc["tensors"].items()]
    return "{\n" + ",\n".join(lines + [' "tensors": {\n' + ",\n".join(tensors) + "\n }"]) + "\n}\n"


def write_fixture(out_dir, meta, arrays):
    os.makedirs(out_dir, exist_ok=True)
    name = meta["case"]
    tensors, offset, blobs = {}, 0, []
    for key, arr in arrays.items():
        tensors[key] = {"offset": offset, "shape": list(arr.shape)}
        blobs.append(np.ascontiguousarray(arr, dtype="<f4").tobytes())
        offset += arr.size
    doc = dict(meta, bin=f"{name}.bin", tensors=tensors)
    for path, data in [(f"{name}.bin", b"".join(blobs)),
                       (f"{name}.json", _compact_json(doc).encode())]:
        tmp = os.path.join(out_dir, path + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(out_dir, path))


def onnx_euler(model_dir, meta, arrays):
    """The engine's job in numpy + onnxruntime: encode, Euler loop with CFG, decode.
    Prints and returns the max abs error per step against the reference."""
    te = onnx_io.session(os.path.join(model_dir, "text_encoder.onnx"))
    dn = onnx_io.session(os.path.join(model_dir, "denoiser.onnx"))
    vae = onnx_io.session(os.path.join(model_dir, "vae_decoder.onnx"))

    def encode(ids, mask):
        out = te.run(None, {"input_ids": np.array([ids], np.int64), "attention_mask": np.array([mask], np.int64)})[0]
        return out

    report = {}
    cond = encode(meta["cond_ids"], meta["cond_mask"])
    report["cond_embeds"] = float(np.abs(cond - arrays["cond_embeds"]).max())
    guided = meta["uncond_ids"] is not None
    if guided:
        uncond = encode(meta["uncond_ids"], meta["uncond_mask"])
        report["uncond_embeds"] = float(np.abs(uncond - arrays["uncond_embeds"]).max())
    x = arrays["noise"].copy()
    sig = np.array(meta["sigmas"], np.float32)
    cfg = np.float32(meta["cfg"])
    for i, t in enumerate(meta["timesteps"]):
        ts = np.array([t], np.float32)
        v = dn.run(None, {"hidden_states": x, "timestep": ts, "encoder_hidden_states": cond})[0]
        if guided:
            vu = dn.run(None, {"hidden_states": x, "timestep": ts, "encoder_hidden_states": uncond})[0]
            v = vu + cfg * (v - vu)
        x = (x + (sig[i + 1] - sig[i]) * v).astype(np.float32)
        report[f"latents_step_{i + 1}"] = float(np.abs(x - arrays[f"latents_step_{i + 1}"]).max())
    video = vae.run(None, {"latents": x})[0]
    assert video.shape == arrays["video"].shape, (video.shape, arrays["video"].shape)
    report["video"] = float(np.abs(video - arrays["video"]).max())
    for k, v in report.items():
        print(f"  {meta['case']}: onnx euler vs reference {k}: max abs err {v:.3e}")
    worst = max(v for k, v in report.items() if k.startswith("latents"))
    assert worst <= ONNX_LATENT_TOL, f"{meta['case']}: latents err {worst}"
    assert report["video"] <= ONNX_LATENT_TOL * 10, f"{meta['case']}: video err {report['video']}"
    return report
