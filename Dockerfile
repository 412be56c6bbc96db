# syntax=docker/dockerfile:1
#
# warmlane image: both binaries, the ONNX Runtime library, the settings and the
# demo model pipelines.
#
#   docker build -t warmlane:cpu .                                   # CPU (runs anywhere)
#   docker build -t warmlane:gpu --build-arg ORT_FLAVOUR=gpu \
#       --build-arg RUNTIME_BASE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 .
#
# The GPU flavour needs the CUDA 13 runtime and cuDNN 9 beside onnxruntime-gpu 1.31,
# hence the CUDA base image; the host needs the NVIDIA container toolkit.

ARG RUNTIME_BASE=debian:bookworm-slim

# ---- build: both binaries, release profile ---------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p warmlane-producer -p warmlane-consumer \
 && mkdir -p /out \
 && cp target/release/warmlane-producer target/release/warmlane-consumer /out/

# ---- ONNX Runtime shared library from the PyPI wheel -------------------------
FROM python:3.12-slim-bookworm AS ort
ARG ORT_FLAVOUR=cpu
WORKDIR /src
COPY ops/fetch-onnxruntime.sh ops/fetch-onnxruntime.sh
RUN if [ "$ORT_FLAVOUR" = "gpu" ]; then bash ops/fetch-onnxruntime.sh --gpu; \
    else bash ops/fetch-onnxruntime.sh; fi \
 && ls -l .ort

# ---- runtime -----------------------------------------------------------------
FROM ${RUNTIME_BASE}
# Unpinned on purpose: the base image's suite decides the versions, and a pin breaks
# at the next Debian point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /home/warmlane warmlane \
 && mkdir -p /app /data/results \
 && chown warmlane /data/results
WORKDIR /app
COPY --from=builder /out/warmlane-producer /out/warmlane-consumer /usr/local/bin/
COPY --from=ort /src/.ort /app/.ort
COPY inference_settings.json /app/inference_settings.json
COPY models /app/models
ENV ORT_DYLIB_PATH=/app/.ort/libonnxruntime.so.1.31.1 \
    LD_LIBRARY_PATH=/app/.ort \
    WARMLANE_SETTINGS=/app/inference_settings.json \
    WARMLANE_RESULTS_DIR=/data/results \
    RUST_LOG=info
# Numeric, so the host and Kubernetes (runAsNonRoot) can resolve it: the warmlane user.
USER 10001
VOLUME ["/data/results"]
EXPOSE 8080
# Compose runs the services with `init: true`, so SIGTERM reaches the binary and a
# worker drains (finishes its task) before it exits.
CMD ["warmlane-producer", "--help"]
