#!/usr/bin/env python3
"""Export Wan2.1 text-to-video components to ONNX for warmlane, and the tiny test model.

Why: the engine runs Wan2.1-derived pipelines (UMT5 text encoder -> WanTransformer3D
denoiser in a flow-matching Euler loop -> AutoencoderKLWan decoder) through ONNX Runtime.
To know that the Rust engine computes what the reference diffusers `WanPipeline`
computes, we need (a) ONNX files exported from the *real* reference classes, with a
fixed tensor interface, and (b) parity fixtures: the reference pipeline's own
intermediate results (token ids, text embeddings, scheduler timesteps/sigmas, per-step
latents, decoded video) for a few prompts. Real checkpoints are tens of GB, so the
default run builds the same classes from tiny configs with seeded random weights
(nothing is downloaded), exports them to `models/wan-tiny/` (a few MB, committed), and
writes the fixtures to `models/wan-tiny/parity/`.

What it does (default run, no --checkpoint):
  1. trains a small Unigram tokenizer (T5/SentencePiece-like: Metaspace, `<pad>`=0,
     `</s>`=1, `<unk>`=2, `</s>` appended) on a built-in corpus -> tokenizer.json;
  2. builds UMT5EncoderModel, WanTransformer3DModel and AutoencoderKLWan from small
     configs and re-initialises every parameter with a seeded normal (diffusers
     zero-inits some layers, which would make outputs trivial);
  3. exports the three ONNX files (interface below) and checks each against PyTorch with
     onnxruntime (max abs diff printed, tolerance asserted);
  4. runs the reference `WanPipeline` (FlowMatchEulerDiscreteScheduler, shift 3.0) on
     the PyTorch modules for the parity cases, records everything, and checks that a
     numpy + onnxruntime Euler loop over the ONNX files reproduces it;
  5. writes manifest.json (versions, configs, sha256s, interface).

ONNX interface (names are fixed; the engine is configured with them):
  text_encoder.onnx : input_ids int64 [B, T], attention_mask int64 [B, T]
                      -> last_hidden_state f32 [B, T, D]; rows where mask == 0 are zero
                      (what WanPipeline._get_t5_prompt_embeds does after the encoder).
                      B, T dynamic.
  denoiser.onnx     : hidden_states f32 [B, 16, F, H, W] (H, W even), timestep f32 [B],
                      encoder_hidden_states f32 [B, T, D] -> noise_pred f32 [B, 16, F, H, W].
                      B, F, H, W, T dynamic.
  vae_decoder.onnx  : latents f32 [1, 16, F, H, W] (normalised, as the transformer sees
                      them) -> video f32 [1, 3, 1 + 4(F-1), 8H, 8W] in [-1, 1]. The graph
                      de-normalises (latents / (1/std) + mean, as WanPipeline) and decodes.
                      H, W dynamic; F dynamic too (see below) unless --fixed-frames.

VAE frames: AutoencoderKLWan.decode runs the decoder one latent frame at a time with a
causal feature cache (a Python loop). This script exports an equivalent full-sequence
formulation instead: every causal conv sees the whole sequence with zero left padding
(which is what the cache reproduces), and each temporal upsampler applies its time conv
to frames 1.. only (frame 0 passes un-doubled, as the cache's "Rep" state does). The
script asserts in PyTorch that this equals `vae.decode` for several frame counts, so
the exported decoder has a dynamic F. `--fixed-frames` exports the traced frame loop
for exactly `--latent-frames` frames instead (the fallback).

Rotary embeddings: the installed diffusers already uses real cos/sin (no complex ops),
so no wrapper is needed; the denoiser wrapper only fixes the call signature.

Usage:
  ops/export_wan.py                          # tiny model + fixtures -> models/wan-tiny
  ops/export_wan.py --checkpoint DIR --out OUT [--latent-frames N] [--max-tokens 512]
                    [--fp16-denoiser] [--fixed-frames]
      # DIR in diffusers layout (transformer/, vae/, text_encoder/, tokenizer/), e.g.
      # Wan-AI/Wan2.1-T2V-1.3B-Diffusers. Large graphs are saved with external data.

Arguments and the checkpoint layout are validated before torch/diffusers are imported
(exit 2 with a one-line message naming the missing path; exit 3 if the packages are
missing). Requirements: ops/requirements-export.txt (accelerate is needed by diffusers'
from_pretrained for WanTransformer3DModel). Tests of the argument handling, runnable
without torch: python3 -m unittest ops/tests/test_export_wan_args.py

Real checkpoints: exported in float32 (the denoiser optionally in float16 with float32
I/O); the UMT5-XXL encoder alone is ~22 GB in float32, so expect to need that much RAM
plus headroom. ONNX-vs-PyTorch checks use small inputs and a tolerance relative to the
output magnitude; no parity fixtures are written for checkpoints.

The tiny output is deterministic: the same bytes on every run with the same package
versions (one torch thread, node metadata stripped, tokenizer scores rounded).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wan_export.spec import DEFAULT_OUT, REPO, TINY_MAX_TOKENS  # noqa: E402  (stdlib only)


def die(msg, code=2):
    print(f"export_wan.py: {msg}", file=sys.stderr)
    sys.exit(code)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", metavar="DIR", help="Wan2.1 checkpoint in diffusers layout (default: tiny model)")
    p.add_argument("--out", metavar="DIR", help=f"output dir (default {os.path.relpath(DEFAULT_OUT, REPO)})")
    p.add_argument("--latent-frames", type=positive_int, default=3, metavar="N",
                   help="latent frames of the VAE example input / fixed export (default 3 -> 9 video frames)")
    p.add_argument("--max-tokens", type=positive_int, metavar="N",
                   help=f"text length (default {TINY_MAX_TOKENS} tiny, 512 for a checkpoint)")
    p.add_argument("--fixed-frames", action="store_true",
                   help="export the VAE's traced frame loop for exactly --latent-frames frames")
    p.add_argument("--fp16-denoiser", action="store_true",
                   help="checkpoint only: store the denoiser in float16 (I/O stays float32)")
    p.add_argument("--skip-parity", action="store_true", help="tiny only: skip writing the parity fixtures")
    a = p.parse_args(argv)
    if a.fp16_denoiser and not a.checkpoint:
        p.error("--fp16-denoiser needs --checkpoint")
    if a.max_tokens is None:
        a.max_tokens = 512 if a.checkpoint else TINY_MAX_TOKENS
    return a


def validate_checkpoint(root):
    """Exit 2 naming the first missing piece of a diffusers-layout checkpoint."""
    if not os.path.isdir(root):
        die(f"checkpoint directory not found: {root}")
    for path in [
        os.path.join(root, "transformer", "config.json"),
        os.path.join(root, "vae", "config.json"),
        os.path.join(root, "text_encoder", "config.json"),
        os.path.join(root, "tokenizer", "tokenizer.json"),
    ]:
        if not os.path.isdir(os.path.dirname(path)):
            die(f"missing checkpoint subfolder: {os.path.dirname(path)}")
        if not os.path.isfile(path):
            die(f"missing checkpoint file: {path}")


def require_packages():
    missing = []
    for name in ["torch", "diffusers", "transformers", "tokenizers", "onnx", "onnxruntime", "onnxscript", "numpy",
                 "accelerate"]:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        die(f"missing Python packages ({', '.join(missing)}): pip install -r ops/requirements-export.txt", 3)


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if a.checkpoint:
        validate_checkpoint(a.checkpoint)
    require_packages()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from wan_export import run  # torch, diffusers, transformers are imported from here on

    if a.checkpoint:
        return run.export_checkpoint(a)
    return run.export_tiny(a)


if __name__ == "__main__":
    sys.exit(main())
