"""The two entry points: the tiny model (+ fixtures) and a real checkpoint."""
import hashlib
import json
import os
import shutil
from importlib.metadata import version

import numpy as np
import torch

from . import models, onnx_io, parity
from .spec import (CASES, FLOW_SHIFT, GENERATOR_VERSION, LATENT_CHANNELS, OPSET, REPO, SEED, SPATIAL, TEMPORAL,
                   DEFAULT_OUT)

FILES = ["text_encoder.onnx", "denoiser.onnx", "vae_decoder.onnx"]


def _write_json(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _file_info(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "bytes": os.path.getsize(path)}


def _plain(cfg):
    return json.loads(json.dumps({k: v for k, v in dict(cfg).items() if not k.startswith("_")}, default=list))


def write_manifest(out, args, te_cfg, tr_cfg, vae_cfg, tokenizer, source, extra=None):
    files = {}
    for name in FILES + ["tokenizer.json"]:
        files[name] = _file_info(os.path.join(out, name))
        data = os.path.join(out, name + ".data")
        if os.path.exists(data):
            files[name + ".data"] = _file_info(data)
    doc = {
        "generator": "ops/export_wan.py", "generator_version": GENERATOR_VERSION, "source": source,
        "packages": {p: version(p) for p in ["torch", "diffusers", "transformers", "tokenizers", "onnx",
                                              "onnxruntime", "onnxscript", "numpy", "accelerate"]},
        "opset": OPSET,
        "configs": {"text_encoder": te_cfg, "transformer": tr_cfg, "vae": vae_cfg},
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "pad_id": tokenizer.pad_token_id,
                      "eos_id": tokenizer.eos_token_id, "unk_id": tokenizer.unk_token_id,
                      "appends_eos": True, "padding": "right, to max_tokens", "truncation": "right"},
        "files": files,
        "interface": onnx_io.INTERFACE,
        "text_dim": te_cfg["d_model"],
        "latent_channels": LATENT_CHANNELS, "spatial_compression": SPATIAL, "temporal_compression": TEMPORAL,
        "vae_frames": "fixed" if args.fixed_frames else "dynamic",
        "vae_latent_frames": args.latent_frames if args.fixed_frames else None,
        "scheduler": {"class": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                      "shift": FLOW_SHIFT, "use_dynamic_shifting": False},
        "flow_shift": FLOW_SHIFT, "max_tokens": args.max_tokens,
    }
    doc.update(extra or {})
    _write_json(os.path.join(out, "manifest.json"), doc)


def _export_all(out, te, tr, vae, text_dim, args, half_denoiser=False, external=False):
    te_w = models.TextEncoderExport(te).eval()
    dn_w = models.DenoiserExport(tr, half=half_denoiser).eval()
    vae_w = models.VaeDecoderExport(vae, loop=args.fixed_frames).eval()
    print("exporting text_encoder.onnx")
    onnx_io.export_text_encoder(te_w, os.path.join(out, "text_encoder.onnx"), args.max_tokens, external)
    print("exporting denoiser.onnx")
    onnx_io.export_denoiser(dn_w, os.path.join(out, "denoiser.onnx"), text_dim, args.max_tokens, external)
    print("exporting vae_decoder.onnx")
    onnx_io.export_vae_decoder(vae_w, os.path.join(out, "vae_decoder.onnx"), args.latent_frames,
                               args.fixed_frames, external)
    return te_w, dn_w, vae_w


def check_vae_equivalence(vae, frames=(1, 2, 3, 5)):
    """Full-sequence decoder == vae.decode (cached frame loop), in PyTorch."""
    wrapper = models.VaeDecoderExport(vae).eval()
    loop = models.VaeDecoderExport(vae, loop=True).eval()
    worst = 0.0
    for f in frames:
        z = torch.randn(1, 16, f, 2, 4, generator=torch.Generator().manual_seed(100 + f))
        with torch.no_grad():
            diff = float((wrapper(z) - loop(z)).abs().max())
        print(f"  vae full-sequence vs vae.decode, F={f}: max abs diff {diff:.3e}")
        assert diff <= 1e-5, diff
        worst = max(worst, diff)
    return worst


def _verify(out, te_w, dn_w, vae_w, text_dim, max_tokens, tol, latent_frames, fixed, relative=False):
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 200, (2, max_tokens), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 9:], ids[0, 9:], ids[0, 8] = 0, 0, 1
    short = (ids[1:, :7].clone(), mask[1:, :7].clone())
    worst = {"text_encoder.onnx": onnx_io.check("text_encoder", os.path.join(out, "text_encoder.onnx"), te_w,
                                                [(ids, mask), short], tol, relative)}
    dn_cases = [onnx_io.denoiser_example(text_dim, max_tokens),
                (torch.randn(1, 16, 2, 6, 4, generator=g), torch.tensor([12.5]), torch.randn(1, 9, text_dim, generator=g))]
    worst["denoiser.onnx"] = onnx_io.check("denoiser", os.path.join(out, "denoiser.onnx"), dn_w, dn_cases, tol,
                                           relative)
    frames = [latent_frames] if fixed else [latent_frames, 1, 5]
    vae_cases = [(torch.randn(1, 16, f, 2 + f % 3, 4, generator=g),) for f in frames]
    worst["vae_decoder.onnx"] = onnx_io.check("vae_decoder", os.path.join(out, "vae_decoder.onnx"), vae_w,
                                              vae_cases, tol, relative)
    return worst


def export_tiny(args):
    out = os.path.abspath(args.out or DEFAULT_OUT)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # fixed reduction order: the same fixture bytes on any machine

    tok = models.train_tokenizer()
    tok_path = os.path.join(out, "tokenizer.json")
    tok.save(tok_path + ".tmp", pretty=True)
    os.replace(tok_path + ".tmp", tok_path)
    hf_tok = parity.recording_tokenizer(tok_path)
    print(f"tokenizer: vocab {hf_tok.vocab_size} -> {tok_path}")

    te, tr, vae = models.build_tiny(hf_tok.vocab_size, SEED)
    text_dim = te.config.d_model
    check_vae_equivalence(vae)

    te_w, dn_w, vae_w = _export_all(out, te, tr, vae, text_dim, args)
    worst = _verify(out, te_w, dn_w, vae_w, text_dim, args.max_tokens, onnx_io.TOLERANCE, args.latent_frames,
                    args.fixed_frames)

    extra = {"onnx_vs_torch_max_abs_diff": worst, "seed": SEED}
    if not args.skip_parity:
        pdir = os.path.join(out, "parity")
        results, euler = {}, {}
        for case in CASES:
            meta, arrays = parity.run_reference(hf_tok, te, tr, vae, case, args.max_tokens)
            parity.write_fixture(pdir, meta, arrays)
            results[case["case"]] = (meta, arrays)
            print(f"parity {case['case']}: timesteps {meta['timesteps']} sigmas {meta['sigmas']}")
            if args.fixed_frames and arrays["noise"].shape[2] != args.latent_frames:
                print(f"  (skipping ONNX euler check: VAE exported for {args.latent_frames} latent frames)")
                continue
            euler[case["case"]] = parity.onnx_euler(out, meta, arrays)
        _sanity(results)
        _text_matters(tr, results)
        extra["parity"] = {"cases": [c["case"] for c in CASES], "onnx_euler_max_abs_err": euler}
    vae_cfg = _plain(vae.config)
    write_manifest(out, args, models.text_encoder_config(hf_tok.vocab_size), _plain(tr.config),
                   vae_cfg, hf_tok, "tiny random weights (seeded), built from configs", extra)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in FILES)
    print(f"wrote {out} ({total / 1e6:.2f} MB of ONNX)")
    return 0


def _sanity(results):
    """Non-trivial, input-dependent outputs: prompts differ -> embeddings and final
    latents differ; the video has varied pixels, mostly inside (-1, 1)."""
    (ma, a), (mb, b) = list(results.values())[:2]
    d_emb = float(np.abs(a["cond_embeds"] - b["cond_embeds"]).max())
    assert d_emb > 1e-2, d_emb
    for meta, arr in results.values():
        last = arr[f"latents_step_{meta['steps']}"]
        assert float(np.abs(last - arr["noise"]).max()) > 1e-2
        video = arr["video"]
        clamped = float((np.abs(video) >= 1.0).mean())
        print(f"  {meta['case']}: video mean {video.mean():.3f} std {video.std():.3f} "
              f"min {video.min():.3f} max {video.max():.3f} clamped {clamped:.2%}")
        assert video.std() > 0.05 and clamped < 0.2


def _text_matters(transformer, results):
    """Different prompts -> different noise predictions (hence different final latents)."""
    (ma, a), (mb, b) = list(results.values())[:2]
    x = torch.from_numpy(a["noise"])
    t = torch.tensor([float(ma["timesteps"][0])])
    with torch.no_grad():
        va = transformer(hidden_states=x, timestep=t, encoder_hidden_states=torch.from_numpy(a["cond_embeds"]),
                         return_dict=False)[0]
        vb = transformer(hidden_states=x, timestep=t, encoder_hidden_states=torch.from_numpy(b["cond_embeds"]),
                         return_dict=False)[0]
    diff = float((va - vb).abs().max())
    print(f"  same latents, prompts {ma['case']!r} vs {mb['case']!r}: noise_pred max abs diff {diff:.3f}")
    assert diff > 1e-2, diff


def export_checkpoint(args):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    root = args.checkpoint
    out = os.path.abspath(args.out or os.path.join(REPO, ".cache", "wan-export",
                                                   os.path.basename(os.path.normpath(root))))
    os.makedirs(out, exist_ok=True)
    shutil.copyfile(os.path.join(root, "tokenizer", "tokenizer.json"), os.path.join(out, "tokenizer.json"))
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(root, "tokenizer"))
    te = UMT5EncoderModel.from_pretrained(os.path.join(root, "text_encoder"), torch_dtype=torch.float32).eval()
    tr_dtype = torch.float16 if args.fp16_denoiser else torch.float32
    tr = WanTransformer3DModel.from_pretrained(os.path.join(root, "transformer"), torch_dtype=tr_dtype).eval()
    vae = AutoencoderKLWan.from_pretrained(os.path.join(root, "vae"), torch_dtype=torch.float32).eval()
    text_dim = te.config.d_model
    if not args.fixed_frames:
        check_vae_equivalence(vae, frames=(1, 2, 3))
    # Weights of real checkpoints exceed protobuf's 2 GB: saved as <file>.onnx.data.
    te_w, dn_w, vae_w = _export_all(out, te, tr, vae, text_dim, args, half_denoiser=args.fp16_denoiser,
                                    external=True)
    worst = _verify(out, te_w, dn_w, vae_w, text_dim, min(args.max_tokens, 64), 1e-2 if args.fp16_denoiser else 1e-3,
                    args.latent_frames, args.fixed_frames, relative=True)
    write_manifest(out, args, _plain(te.config.to_diff_dict()) | {"d_model": text_dim}, _plain(tr.config),
                   _plain(vae.config), tokenizer, f"checkpoint {os.path.abspath(root)}",
                   {"onnx_vs_torch_max_abs_diff": worst, "fp16_denoiser": args.fp16_denoiser})
    print(f"wrote {out}")
    return 0
