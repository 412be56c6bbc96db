#!/usr/bin/env bash
# The project's test command (README "Tests"; .ci/run calls it):
#   servers up, ONNX Runtime in place, everything built, every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

ops/ensure-services.sh
ops/fetch-onnxruntime.sh
# The engine's memory tests build heavy demo pipelines with Python's `onnx`.
python3 -c "import onnx, numpy" 2>/dev/null || python3 -m pip install -q -r ops/requirements-models.txt

echo "== build (workspace, all targets)"
cargo build --workspace --all-targets --locked

echo "== tests"
cargo test --workspace --locked -- --test-threads="${WARMLANE_TEST_THREADS:-4}"
