#!/usr/bin/env python3
"""Generate the small demo video pipelines (and optional heavy variants) for warmlane.

Why: the real AniSora / Phr00t checkpoints are tens of GB; the engine, its tests and
its benchmark need pipelines with the *same shape* (text encoder -> denoiser run in a
sampler loop -> VAE decoder, Wan-style 5-D video latents, dynamic sizes) that fit in
git and run on a CPU in milliseconds. Heavy variants carry N MB of real, used weights
so memory tests can see ORT load and release them.

ONNX contract the engine relies on (names are fixed):
  text_encoder.onnx : input_ids int64 [1, T]                      -> text_embeds f32 [1, T, D]
  denoiser.onnx     : latent f32 [1, C, F, h, w], timestep f32 [1],
                      text_embeds f32 [1, T, D]                   -> velocity f32 [1, C, F, h, w]
  vae_decoder.onnx  : latent f32 [1, C, F, h, w]                  -> video f32 [1, 3, F, 8h, 8w] in [-1, 1]

Usage:
  python3 ops/gen_demo_models.py                      # writes models/anisora, models/phr00t
  python3 ops/gen_demo_models.py --heavy --size-mb 200 [--model anisora] [--out DIR]
      # heavy variant (default DIR .cache/heavy-models/<model>), idempotent

Output is deterministic: re-running writes byte-identical files.
Requirements: ops/requirements-models.txt (onnx, numpy).
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Bump when the graphs change, so cached heavy variants are regenerated.
GENERATOR_VERSION = 2
OPSET = 17
IR_VERSION = 8
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Per-model shapes. Vocab matches the engine's hash tokenizer (ids in [0, vocab)).
SPECS = {
    "anisora": dict(seed=1001, vocab=512, dim=64, hidden=32, channels=4),
    "phr00t": dict(seed=2002, vocab=512, dim=48, hidden=24, channels=4),
}


# Heavy weights above this go to an external data file, in tensors of at most this size.
EXTERNAL_CHUNK_BYTES = 1 << 30
# External tensors start on this boundary, so ONNX Runtime can map them.
EXTERNAL_ALIGN = 1 << 16


def external_chunks(rng_seed, hd, floats, data_path, inits):
    """Writes `floats` float32 weights as [hd, k] tensors of at most 1 GiB into
    `data_path` and appends their external TensorProtos to `inits`; returns the names.
    The values are a 16 MiB random block (not zeros) repeated, so writing tens of GB
    takes seconds rather than minutes of random number generation."""
    block = np.random.default_rng(rng_seed).standard_normal((4 << 20,), dtype=np.float32)
    block *= np.float32(1e-3)
    raw = block.tobytes()
    per_chunk = (EXTERNAL_CHUNK_BYTES // 4 // hd) * hd
    names, offset, left, i = [], 0, floats, 0
    tmp = data_path + ".tmp"
    with open(tmp, "wb") as f:
        while left > 0:
            n = min(per_chunk, left)
            nbytes = n * 4
            pad = (-offset) % EXTERNAL_ALIGN
            f.write(b"\0" * pad)
            offset += pad
            written = 0
            while written < nbytes:
                piece = raw[: min(len(raw), nbytes - written)]
                f.write(piece)
                written += len(piece)
            t = onnx.TensorProto()
            t.name = "heavy_w" if i == 0 else f"heavy_w_{i}"
            t.data_type = TensorProto.FLOAT
            t.dims.extend([hd, n // hd])
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", os.path.basename(data_path)), ("offset", str(offset)), ("length", str(nbytes))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            inits.append(t)
            names.append(t.name)
            offset += nbytes
            left -= n
            i += 1
    os.replace(tmp, data_path)
    return names


def rand(rng, shape, scale):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def init(name, array):
    return numpy_helper.from_array(array, name)


def save(graph, path, doc):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="warmlane-gen-demo-models",
        producer_version="1",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    # With external data the checker must read the file beside the model: check by path.
    external = any(t.data_location == TensorProto.EXTERNAL for t in graph.initializer)
    if not external:
        onnx.checker.check_model(model)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model.SerializeToString(deterministic=True))
    if external:
        onnx.checker.check_model(tmp)
    os.replace(tmp, path)


def text_encoder(spec, rng, path):
    v, d = spec["vocab"], spec["dim"]
    inits = [
        init("embedding", rand(rng, (v, d), 0.5)),
        init("proj_w", rand(rng, (d, d), 1.0 / np.sqrt(d))),
        init("proj_b", rand(rng, (d,), 0.1)),
    ]
    nodes = [
        helper.make_node("Gather", ["embedding", "input_ids"], ["emb"], axis=0),
        helper.make_node("MatMul", ["emb", "proj_w"], ["proj"]),
        helper.make_node("Add", ["proj", "proj_b"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["text_embeds"]),
    ]
    graph = helper.make_graph(
        nodes, "text_encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "T"])],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, [1, "T", d])],
        inits,
    )
    save(graph, path, "token ids -> text embeddings")


def denoiser(spec, rng, path, heavy_floats=0):
    c, d, hd = spec["channels"], spec["dim"], spec["hidden"]
    inits = [
        init("cond_w", rand(rng, (d + 1, hd), 1.0 / np.sqrt(d + 1))),
        init("conv1_w", rand(rng, (hd, c, 3, 3, 3), 1.0 / np.sqrt(c * 27))),
        init("conv1_b", rand(rng, (hd,), 0.05)),
        init("conv2_w", rand(rng, (c, hd, 1, 1, 1), 1.0 / np.sqrt(hd))),
        init("conv2_b", rand(rng, (c,), 0.05)),
        init("cond_shape", np.array([1, hd, 1, 1, 1], dtype=np.int64)),
        init("t_shape", np.array([1, 1], dtype=np.int64)),
    ]
    nodes = [
        # Text + timestep conditioning: mean-pooled embedding concat timestep -> per-channel bias.
        helper.make_node("ReduceMean", ["text_embeds"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("Reshape", ["timestep", "t_shape"], ["t2"]),
        helper.make_node("Concat", ["pooled", "t2"], ["cond_in"], axis=1),
        helper.make_node("MatMul", ["cond_in", "cond_w"], ["cond"]),
        helper.make_node("Reshape", ["cond", "cond_shape"], ["cond5"]),
        helper.make_node("Conv", ["latent", "conv1_w", "conv1_b"], ["h1"], pads=[1] * 6),
        helper.make_node("Add", ["h1", "cond5"], ["h2"]),
        helper.make_node("Tanh", ["h2"], ["h3"]),
        helper.make_node("Conv", ["h3", "conv2_w", "conv2_b"], ["v0"]),
    ]
    out = "v0"
    if heavy_floats and heavy_floats * 4 > EXTERNAL_CHUNK_BYTES:
        # Multi-GB variants (the GPU kit's realistic sizes): the weight is split into
        # tensors of at most 1 GiB written to `denoiser.onnx.data` (a protobuf holds at
        # most 2 GiB, and one tensor over 2^31 elements is asking for int32 trouble).
        data = path + ".data"
        names = external_chunks(rng_seed=spec["seed"] + 7, hd=hd, floats=heavy_floats, data_path=data, inits=inits)
        for i, name in enumerate(names):
            nodes += [
                helper.make_node("MatMul", ["cond", name], [f"heavy_h{i}"]),
                helper.make_node("ReduceMean", [f"heavy_h{i}"], [f"heavy_m{i}"], keepdims=0),
            ]
        inits.append(init("heavy_scale", np.array([1e-3 / len(names)], dtype=np.float32)))
        nodes += [
            helper.make_node("Sum", [f"heavy_m{i}" for i in range(len(names))], ["heavy_m"]),
            helper.make_node("Mul", ["heavy_m", "heavy_scale"], ["heavy_s"]),
            helper.make_node("Add", ["v0", "heavy_s"], ["v1"]),
        ]
        out = "v1"
    elif heavy_floats:
        # A large weight that ORT must load and actually use every step: cond [1,hd] x big
        # [hd, K] -> mean -> tiny scalar shift of the velocity. Depends on inputs, so it
        # cannot be constant-folded away.
        k = max(1, heavy_floats // hd)
        big = np.random.default_rng(spec["seed"] + 7).standard_normal((hd, k), dtype=np.float32)
        big *= np.float32(1e-3)
        inits += [init("heavy_w", big), init("heavy_scale", np.array([1e-3], dtype=np.float32))]
        nodes += [
            helper.make_node("MatMul", ["cond", "heavy_w"], ["heavy_h"]),
            helper.make_node("ReduceMean", ["heavy_h"], ["heavy_m"], keepdims=0),
            helper.make_node("Mul", ["heavy_m", "heavy_scale"], ["heavy_s"]),
            helper.make_node("Add", ["v0", "heavy_s"], ["v1"]),
        ]
        out = "v1"
    nodes.append(helper.make_node("Identity", [out], ["velocity"]))
    lat = [1, c, "F", "h", "w"]
    graph = helper.make_graph(
        nodes, "denoiser",
        [
            helper.make_tensor_value_info("latent", TensorProto.FLOAT, lat),
            helper.make_tensor_value_info("timestep", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, [1, "T", d]),
        ],
        [helper.make_tensor_value_info("velocity", TensorProto.FLOAT, lat)],
        inits,
    )
    save(graph, path, "flow-matching velocity predictor (latent, timestep, text) -> velocity")


def vae_decoder(spec, rng, path):
    c, hd = spec["channels"], spec["hidden"]
    inits = [
        init("conv_in_w", rand(rng, (hd, c, 3, 3), 1.0 / np.sqrt(c * 9))),
        init("conv_in_b", rand(rng, (hd,), 0.05)),
        init("to_rgb_w", rand(rng, (3, hd, 1, 1), 2.0 / np.sqrt(hd))),
        init("to_rgb_b", rand(rng, (3,), 0.05)),
        init("conv_out_w", rand(rng, (3, 3, 3, 3), 1.0 / np.sqrt(27))),
        init("conv_out_b", rand(rng, (3,), 0.05)),
        init("axis0", np.array([0], dtype=np.int64)),
        init("scales", np.array([1.0, 1.0, 8.0, 8.0], dtype=np.float32)),
    ]
    nodes = [
        # [1,C,F,h,w] -> frames as batch [F,C,h,w]
        helper.make_node("Transpose", ["latent"], ["lt"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Squeeze", ["lt", "axis0"], ["frames"]),
        helper.make_node("Conv", ["frames", "conv_in_w", "conv_in_b"], ["f1"], pads=[1] * 4),
        helper.make_node("Tanh", ["f1"], ["f2"]),
        helper.make_node("Conv", ["f2", "to_rgb_w", "to_rgb_b"], ["f3"]),
        # x8 spatial upsampling (bilinear), then a smoothing conv.
        helper.make_node("Resize", ["f3", "", "scales"], ["f4"], mode="linear"),
        helper.make_node("Conv", ["f4", "conv_out_w", "conv_out_b"], ["f5"], pads=[1] * 4),
        helper.make_node("Tanh", ["f5"], ["f6"]),
        # [F,3,H,W] -> [1,3,F,H,W]
        helper.make_node("Unsqueeze", ["f6", "axis0"], ["f7"]),
        helper.make_node("Transpose", ["f7"], ["video"], perm=[0, 2, 1, 3, 4]),
    ]
    graph = helper.make_graph(
        nodes, "vae_decoder",
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, [1, c, "F", "h", "w"])],
        [helper.make_tensor_value_info("video", TensorProto.FLOAT, [1, 3, "F", "H", "W"])],
        inits,
    )
    save(graph, path, "video latent -> RGB frames in [-1, 1], x8 bilinear spatial upsampling")


def write_pipeline(name, out_dir, heavy_floats=0):
    spec = SPECS[name]
    os.makedirs(out_dir, exist_ok=True)
    # Separate RNG streams per component so changing one never changes the others.
    text_encoder(spec, np.random.default_rng(spec["seed"]), os.path.join(out_dir, "text_encoder.onnx"))
    denoiser(spec, np.random.default_rng(spec["seed"] + 1), os.path.join(out_dir, "denoiser.onnx"), heavy_floats)
    vae_decoder(spec, np.random.default_rng(spec["seed"] + 2), os.path.join(out_dir, "vae_decoder.onnx"))
    manifest = {
        "model": name,
        "latent_channels": spec["channels"],
        "text_dim": spec["dim"],
        "vocab": spec["vocab"],
        "heavy_bytes": heavy_floats * 4,
        "generator": GENERATOR_VERSION,
    }
    tmp = os.path.join(out_dir, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, "manifest.json"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--heavy", action="store_true", help="write a heavy variant outside git")
    p.add_argument("--size-mb", type=int, default=200, help="heavy denoiser weight size in MB")
    p.add_argument("--model", choices=sorted(SPECS), default="anisora", help="heavy variant's model")
    p.add_argument("--out", help="output dir (default models/<model> or .cache/heavy-models/<model>)")
    a = p.parse_args()
    if not a.heavy:
        for name in SPECS:
            out = a.out and os.path.join(a.out, name) or os.path.join(REPO, "models", name)
            write_pipeline(name, out)
            print(out)
        return 0
    out = a.out or os.path.join(REPO, ".cache", "heavy-models", a.model)
    hidden = SPECS[a.model]["hidden"]
    heavy_floats = (a.size_mb * 1024 * 1024 // 4 // hidden) * hidden
    manifest = os.path.join(out, "manifest.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            cached = json.load(f)
        if cached.get("heavy_bytes") == heavy_floats * 4 and cached.get("generator") == GENERATOR_VERSION:
            print(out)
            return 0
    write_pipeline(a.model, out, heavy_floats)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
