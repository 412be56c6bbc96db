"""torch.onnx export of the three wrappers with the engine's names and dynamic dims, and
the onnxruntime-vs-PyTorch checks."""
import os
import warnings

import numpy as np
import onnx
import torch
from torch.export import Dim

from .spec import OPSET

TOLERANCE = 1e-4

INTERFACE = {
    "text_encoder.onnx": {
        "inputs": {"input_ids": ["int64", ["B", "T"]], "attention_mask": ["int64", ["B", "T"]]},
        "outputs": {"last_hidden_state": ["float32", ["B", "T", "D"]]},
        "dynamic": ["B", "T"],
        "note": "rows where attention_mask == 0 are zero",
    },
    "denoiser.onnx": {
        "inputs": {
            "hidden_states": ["float32", ["B", 16, "F", "H", "W"]],
            "timestep": ["float32", ["B"]],
            "encoder_hidden_states": ["float32", ["B", "T", "D"]],
        },
        "outputs": {"noise_pred": ["float32", ["B", 16, "F", "H", "W"]]},
        "dynamic": ["B", "F", "H", "W", "T"],
        "note": "H and W even (patch 1x2x2); timestep = scheduler timestep (sigma * 1000)",
    },
    "vae_decoder.onnx": {
        "inputs": {"latents": ["float32", [1, 16, "F", "H", "W"]]},
        "outputs": {"video": ["float32", [1, 3, "1 + 4 * (F - 1)", "8 * H", "8 * W"]]},
        "dynamic": ["F", "H", "W"],
        "note": "latents as the transformer sees them; de-normalised inside; output clamped to [-1, 1]",
    },
}


def export(module, args, path, input_names, output_names, dynamic_shapes, external_data=False):
    """torch.onnx.export (dynamo exporter); returns the path."""
    tmp = path + ".tmp"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, tmp, input_names=input_names, output_names=output_names,
            dynamic_shapes=dynamic_shapes, opset_version=OPSET, dynamo=True,
            external_data=external_data, verbose=False, optimize=True,
        )
    # Node metadata carries stack traces with local paths and function addresses: drop it
    # so the files are byte-identical across runs and machines.
    model = onnx.load(tmp)
    for f in [tmp, tmp + ".data"]:
        if os.path.exists(f):
            os.remove(f)
    _strip(model.graph)
    for func in model.functions:
        del func.metadata_props[:]
        for node in func.node:
            del node.metadata_props[:]
            node.doc_string = ""
    if external_data:
        if os.path.exists(path + ".data"):
            os.remove(path + ".data")  # onnx appends to an existing data file
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data")
        os.chmod(path + ".data", 0o644)
    else:
        with open(tmp, "wb") as f:
            f.write(model.SerializeToString(deterministic=True))
        os.replace(tmp, path)
    return path


def _strip(graph):
    del graph.metadata_props[:]
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        del vi.metadata_props[:]
    for init in graph.initializer:
        del init.metadata_props[:]
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _strip(attr.g)
            for g in attr.graphs:
                _strip(g)


def export_text_encoder(wrapper, path, max_tokens, external_data=False):
    ids = torch.tensor([[5, 6, 7, 1] + [0] * (max_tokens - 4), [8, 9, 1] + [0] * (max_tokens - 3)])
    mask = (torch.arange(max_tokens)[None] < torch.tensor([[4], [3]])).long()
    b, t = Dim("B", min=1, max=64), Dim("T", min=2, max=4096)
    return export(wrapper, (ids, mask), path, ["input_ids", "attention_mask"], ["last_hidden_state"],
                  {"input_ids": {0: b, 1: t}, "attention_mask": {0: b, 1: t}}, external_data)


def denoiser_example(text_dim, max_tokens, dtype=torch.float32):
    g = torch.Generator().manual_seed(7)
    return (torch.randn(2, 16, 3, 4, 6, generator=g), torch.tensor([999.0, 500.0]),
            torch.randn(2, max_tokens, text_dim, generator=g))


def export_denoiser(wrapper, path, text_dim, max_tokens, external_data=False):
    b = Dim("B", min=1, max=64)
    f = Dim("F", min=1, max=1024)
    h2, w2 = Dim("H_half", min=1, max=512), Dim("W_half", min=1, max=512)
    t = Dim("T", min=2, max=4096)
    shapes = {
        "hidden_states": {0: b, 2: f, 3: 2 * h2, 4: 2 * w2},
        "timestep": {0: b},
        "encoder_hidden_states": {0: b, 1: t},
    }
    return export(wrapper, denoiser_example(text_dim, max_tokens), path,
                  ["hidden_states", "timestep", "encoder_hidden_states"], ["noise_pred"], shapes, external_data)


def export_vae_decoder(wrapper, path, latent_frames, fixed_frames, external_data=False):
    z = torch.randn(1, 16, latent_frames, 4, 6, generator=torch.Generator().manual_seed(8))
    dims = {3: Dim("H", min=1, max=1024), 4: Dim("W", min=1, max=1024)}
    if not fixed_frames:
        dims[2] = Dim("F", min=1, max=1024)
    return export(wrapper, (z,), path, ["latents"], ["video"], {"latents": dims}, external_data)


def session(path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def check(name, path, torch_module, cases, tol=TOLERANCE, relative=False):
    """Runs the ONNX file and the module on each case (a tuple of tensors); asserts
    max |onnx - torch| <= tol (times max(1, max |torch|) if `relative`, for real
    checkpoints whose activations are large); returns the largest difference."""
    sess = session(path)
    names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    for args in cases:
        with torch.no_grad():
            want = torch_module(*args).float().numpy()
        got = sess.run(None, {n: a.numpy() for n, a in zip(names, args)})[0]
        assert got.shape == want.shape, (name, got.shape, want.shape)
        diff = float(np.max(np.abs(got - want))) if want.size else 0.0
        worst = max(worst, diff)
        print(f"  {name}: onnx vs torch {tuple(want.shape)} max abs diff {diff:.3e}")
        limit = tol * max(1.0, float(np.abs(want).max())) if relative and want.size else tol
        assert diff <= limit, f"{name}: max abs diff {diff} > {limit}"
    return worst
