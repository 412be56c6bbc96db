"""Argument handling of ops/export_wan.py, with any Python (torch not needed):
the checkpoint layout and arguments are validated before torch/diffusers are imported.

Run: python3 -m unittest ops/tests/test_export_wan_args.py
"""
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "export_wan.py")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=120)


def has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def make_checkpoint(root, skip=None):
    """A diffusers-layout checkpoint skeleton; `skip` is a relative path left out."""
    for rel in ["transformer/config.json", "vae/config.json", "text_encoder/config.json",
                "tokenizer/tokenizer.json"]:
        if rel == skip or (skip and rel.startswith(skip + "/")):
            continue
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("{}\n")


class ExportWanArgs(unittest.TestCase):
    def test_help_exits_0(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--checkpoint", r.stdout)
        self.assertIn("--latent-frames", r.stdout)

    def test_missing_checkpoint_dir_exits_2_naming_it(self):
        with tempfile.TemporaryDirectory() as tmp:
            missing = os.path.join(tmp, "no-such-checkpoint")
            r = run("--checkpoint", missing)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(missing, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

    def test_missing_vae_config_exits_2_naming_it(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_checkpoint(tmp, skip="vae/config.json")
            os.makedirs(os.path.join(tmp, "vae"))
            r = run("--checkpoint", tmp, "--out", os.path.join(tmp, "out"))
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(os.path.join(tmp, "vae", "config.json"), r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

    def test_missing_subfolder_exits_2_naming_it(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_checkpoint(tmp, skip="text_encoder")
            r = run("--checkpoint", tmp)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(os.path.join(tmp, "text_encoder"), r.stderr)

    def test_missing_tokenizer_json_exits_2(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_checkpoint(tmp, skip="tokenizer/tokenizer.json")
            os.makedirs(os.path.join(tmp, "tokenizer"))
            r = run("--checkpoint", tmp)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(os.path.join(tmp, "tokenizer", "tokenizer.json"), r.stderr)

    def test_bad_latent_frames_exits_2(self):
        for value in ["0", "-3", "x"]:
            r = run("--latent-frames", value)
            self.assertEqual(r.returncode, 2, (value, r.stderr))
            self.assertIn("--latent-frames", r.stderr)

    def test_fp16_needs_checkpoint(self):
        r = run("--fp16-denoiser")
        self.assertEqual(r.returncode, 2, r.stderr)

    @unittest.skipIf(has_torch(), "torch is installed here")
    def test_without_torch_says_what_to_install(self):
        with tempfile.TemporaryDirectory() as tmp:
            make_checkpoint(tmp)
            r = run("--checkpoint", tmp, "--out", os.path.join(tmp, "out"))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("pip install -r ops/requirements-export.txt", r.stderr)


if __name__ == "__main__":
    unittest.main()
