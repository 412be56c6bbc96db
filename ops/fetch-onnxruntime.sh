#!/usr/bin/env bash
# Fetch the ONNX Runtime shared library from the PyPI wheel (no other download
# source is needed) and unpack it into <repo>/.ort/, which the engine searches.
#
#   ops/fetch-onnxruntime.sh          # CPU build: onnxruntime==1.31.1
#   ops/fetch-onnxruntime.sh --gpu    # CUDA build: onnxruntime-gpu==1.31.1
#
# Idempotent: when the library is already unpacked it only prints its path.
# Wheels are cached in <repo>/.cache/ort-wheels/ (gitignored).
set -euo pipefail

ORT_VERSION="1.31.1"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${repo_root}/.ort"
cache="${repo_root}/.cache/ort-wheels"
package="onnxruntime"
gpu=0

for arg in "$@"; do
  case "$arg" in
    --gpu) gpu=1; package="onnxruntime-gpu" ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (expected --gpu)" >&2; exit 2 ;;
  esac
done

lib="${dest}/libonnxruntime.so.${ORT_VERSION}"
marker="${dest}/.flavour"
want_flavour="cpu"
[ "$gpu" = 1 ] && want_flavour="gpu"

if [ -f "$lib" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want_flavour" ]; then
  echo "$lib"
  exit 0
fi

mkdir -p "$cache" "$dest"
PIP="${PIP:-python3 -m pip}"
wheel="$(ls "$cache"/${package//-/_}-${ORT_VERSION}-*.whl 2>/dev/null | head -n1 || true)"
if [ -z "$wheel" ]; then
  $PIP download --quiet --no-deps --only-binary=:all: \
    --dest "$cache" "${package}==${ORT_VERSION}" >&2
  wheel="$(ls "$cache"/${package//-/_}-${ORT_VERSION}-*.whl | head -n1)"
fi

# A wheel is a zip; python's zipfile avoids depending on `unzip` being installed.
python3 - "$wheel" "$dest" "$gpu" <<'PY'
import os, sys, zipfile
wheel, dest, gpu = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if not name.startswith("onnxruntime/capi/"):
            continue
        wanted = base.startswith("libonnxruntime.so") or (
            gpu and base.startswith("libonnxruntime_providers_"))
        if not wanted:
            continue
        tmp = os.path.join(dest, base + ".tmp")
        with z.open(name) as src, open(tmp, "wb") as out:
            out.write(src.read())
        os.replace(tmp, os.path.join(dest, base))
PY

echo "$want_flavour" > "$marker"
echo "$lib"
