#!/usr/bin/env bash
# Pack the GPU proof kit (issue #17): the release binaries and ONNX Runtime, split
# into parts small enough that each run on the GPU machine carries one of them.
#
#   ops/gpu/pack.sh [--provider cuda|cpu] [--out DIR] [--part-mib N] [--xz-level N] [--no-build]
#
#   --provider P   cuda (default): ORT from the onnxruntime-gpu 1.31.1 wheel with its CUDA
#                  provider; cpu: the CPU ORT of .ort/ (ops/fetch-onnxruntime.sh)
#   --out DIR      where the parts go (default <repo>/.gpu, gitignored)
#   --part-mib N   part size (default 60 minus the working tree's MiB rounded up, so
#                  working tree + one part stays under a run's 64 MiB)
#   --xz-level N   xz preset 0-9 (default 6)
#   --no-build     use the binaries already built (default: cargo build --release)
#   WARMLANE_GPU_BIN_DIR  the dir holding warmlane-consumer, gpu-check and engine-bench
#                  (gpu-check runs engine-bench from its own dir; default <repo>/target/release)
#
# Writes DIR/part-NN/kit.tar.xz.NN and DIR/MANIFEST (a copy in every part dir), then
# prints the runs to make: each carries one part dir; the last one runs the checks.
# kit.tar.xz is a concatenation of xz streams (ORT libs, binaries, KIT); `xz -d` and
# `tar -xJ` read it as one archive. The ORT stream is cached in .cache/gpu-kit, so a
# re-pack after a rebuild only compresses the binaries.
set -Eeuo pipefail

prog=pack.sh
ORT_VERSION="1.31.1"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# shellcheck source=ops/gpu/common.sh
source "$repo/ops/gpu/common.sh"

provider=cuda out="" part_mib="" xz_level=6 build=1
while [ $# -gt 0 ]; do
  opt=$1 val="" has_val=0
  case $opt in --*=*) val=${opt#*=}; opt=${opt%%=*}; has_val=1 ;; esac
  case $opt in
    --provider|--out|--part-mib|--xz-level)
      if [ "$has_val" = 0 ]; then
        [ $# -ge 2 ] || usage_err "$opt needs a value"
        val=$2; shift
      fi ;;
    --no-build|-h|--help) [ "$has_val" = 0 ] || usage_err "$opt takes no value" ;;
  esac
  case $opt in
    --provider) case $val in cuda|cpu) provider=$val ;; *) usage_err "--provider must be cuda or cpu, not '$val'" ;; esac ;;
    --out) [ -n "$val" ] || usage_err "--out needs a directory"; out=$val ;;
    --part-mib) [[ $val =~ ^[1-9][0-9]{0,4}$ ]] || usage_err "--part-mib must be a positive integer, not '$val'"; part_mib=$val ;;
    --xz-level) [[ $val =~ ^[0-9]$ ]] || usage_err "--xz-level must be 0-9, not '$val'"; xz_level=$val ;;
    --no-build) build=0 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) usage_err "unknown argument '$1'" ;;
  esac
  shift
done

for tool in git python3 xz split sha256sum strip; do
  command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done

out=${out:-$repo/.gpu}
mkdir -p "$out"
out="$(cd "$out" && pwd)"
[ "$out" != "$repo" ] || die "--out must not be the repository root"
# The dir as a run's carry names it: relative to the repo root when inside it.
case $out/ in
  "$repo"/*) rel_out=${out#"$repo"/}
    if ! git -C "$repo" check-ignore -q "$rel_out/part-01" 2>/dev/null; then
      warn "$rel_out is not gitignored: every run would copy it with the working tree (add it to .gitignore)"
    fi ;;
  *) rel_out=$out
    warn "$out is outside the repository; a run's carry names paths inside it" ;;
esac

mib=$((1024 * 1024))
# The working tree a run copies: tracked files plus untracked, not ignored ones.
tree_bytes="$(cd "$repo" && { git ls-files -z; git ls-files -z --others --exclude-standard; } |
  du -cb --files0-from=- 2>/dev/null | tail -n1 | cut -f1 || true)"
[[ ${tree_bytes:-} =~ ^[0-9]+$ ]] || die "could not measure the working tree (git ls-files | du)"
tree_mib=$(( (tree_bytes + mib - 1) / mib ))
if [ -z "$part_mib" ]; then
  part_mib=$((60 - tree_mib))
  [ "$part_mib" -ge 1 ] || die "the working tree is ${tree_mib} MiB: no room for a part under 64 MiB"
fi
if [ $((part_mib + tree_mib)) -gt 63 ]; then
  warn "a part of ${part_mib} MiB plus the ${tree_mib} MiB working tree is over a run's 64 MiB"
fi

# --- binaries ---------------------------------------------------------------
# gpu-check runs warmlane-consumer and engine-bench (warmlane-engine) from its own dir.
kit_bins=(warmlane-consumer gpu-check engine-bench)
if [ "$build" = 1 ]; then
  echo "== cargo build --release --locked -p warmlane-consumer --bins -p warmlane-engine --bin engine-bench"
  (cd "$repo" && cargo build --release --locked -p warmlane-consumer --bins &&
    cargo build --release --locked -p warmlane-engine --bin engine-bench) ||
    die "cargo build --release failed"
fi
bin_dir=${WARMLANE_GPU_BIN_DIR:-$repo/target/release}
for b in "${kit_bins[@]}"; do
  [ -f "$bin_dir/$b" ] ||
    die "missing binary $bin_dir/$b (build: cargo build --release -p warmlane-consumer --bins; cargo build --release -p warmlane-engine --bin engine-bench)"
done

# --- ONNX Runtime -----------------------------------------------------------
cache="$repo/.cache/ort-wheels"
# Unpack NAMES from the PACKAGE==1.31.1 wheel (downloaded into $cache if absent)
# into $cache/PACKAGE-1.31.1/ once; prints that dir.
wheel_libs() {
  local package=$1; shift
  local dest="$cache/$package-$ORT_VERSION" wheel name missing=0
  for name in "$@"; do [ -f "$dest/$name" ] || missing=1; done
  if [ "$missing" = 1 ]; then
    mkdir -p "$cache" "$dest"
    wheel="$(find "$cache" -maxdepth 1 -name "${package//-/_}-${ORT_VERSION}-*.whl" | sort | head -n1)"
    if [ -z "$wheel" ]; then
      echo "== pip download ${package}==${ORT_VERSION}" >&2
      ${PIP:-python3 -m pip} download --quiet --no-deps --only-binary=:all: \
        --dest "$cache" "${package}==${ORT_VERSION}" >&2 || return 1
      wheel="$(find "$cache" -maxdepth 1 -name "${package//-/_}-${ORT_VERSION}-*.whl" | sort | head -n1)"
      [ -n "$wheel" ] || return 1
    fi
    # A wheel is a zip; python's zipfile avoids depending on `unzip`.
    python3 - "$wheel" "$dest" "$@" <<'PY' || return 1
import os, shutil, sys, zipfile
wheel, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        tmp = os.path.join(dest, name + ".tmp")
        with z.open("onnxruntime/capi/" + name) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, os.path.join(dest, name))
PY
  fi
  echo "$dest"
}

ort_core="libonnxruntime.so.$ORT_VERSION"
ort_files=()
if [ "$provider" = cuda ]; then
  gpu_names=("$ort_core" libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so)
  gpu_dir="$(wheel_libs onnxruntime-gpu "${gpu_names[@]}")" || die "could not unpack the onnxruntime-gpu $ORT_VERSION wheel into $cache"
  for name in "${gpu_names[@]}"; do ort_files+=("$gpu_dir/$name"); done
else
  if [ ! -f "$repo/.ort/$ort_core" ]; then
    "$repo/ops/fetch-onnxruntime.sh" >/dev/null || die "ops/fetch-onnxruntime.sh failed"
  fi
  if [ "$(cat "$repo/.ort/.flavour" 2>/dev/null || true)" = cpu ]; then
    ort_files+=("$repo/.ort/$ort_core")
  else # .ort holds the GPU build: take the CPU one from its wheel, leave .ort alone
    cpu_dir="$(wheel_libs onnxruntime "$ort_core")" || die "could not unpack the onnxruntime $ORT_VERSION wheel into $cache"
    ort_files+=("$cpu_dir/$ort_core")
  fi
fi

# --- stage ------------------------------------------------------------------
build_dir="$out/.build"
stage="$build_dir/stage"
rm -rf "$build_dir"
mkdir -p "$stage/kit/bin" "$stage/kit/ort"
for b in "${kit_bins[@]}"; do
  cp "$bin_dir/$b" "$stage/kit/bin/$b"
  chmod 755 "$stage/kit/bin/$b"
  strip --strip-all "$stage/kit/bin/$b" 2>/dev/null || warn "strip failed for $b (not an ELF file?); packed unstripped"
done
for f in "${ort_files[@]}"; do
  # A hard link keeps the cached file's mtime, so the cached ORT stream stays valid.
  ln "$f" "$stage/kit/ort/" 2>/dev/null || cp -p "$f" "$stage/kit/ort/"
done

echo "== glibc (highest GLIBC_ symbol version needed; warn above 2.35)"
for f in "$stage"/kit/bin/* "$stage"/kit/ort/*; do
  v="$(objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1 || true)"
  if [ -z "$v" ]; then
    v="$(strings "$f" 2>/dev/null | grep -o '^GLIBC_[0-9][0-9.]*$' | sed 's/GLIBC_//' | sort -uV | tail -n1 || true)"
  fi
  printf '  %-44s %s\n' "${f#"$stage"/}" "${v:-n/a}"
  if [ -n "$v" ] && [ "$(printf '%s\n2.35\n' "$v" | sort -V | tail -n1)" != 2.35 ]; then
    warn "${f#"$stage"/} needs glibc $v (> 2.35): it may not load on the GPU machine"
  fi
done

rev="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$repo" status --porcelain 2>/dev/null || true)" ]; then rev="$rev-dirty"; fi

# --- tar segments, compressed -----------------------------------------------
# Python writes each segment's members without the end-of-archive blocks (the
# last segment, KIT, carries them), so the xz streams concatenate into one tar.
# eof:OFFSET ends the archive: two zero blocks, then zeros up to a whole 10 KiB
# record counted from the archive's start (OFFSET: bytes of the segments before),
# so that tar reads the decompressor's output to its end.
tar_segment() { # OUT noeof|eof:OFFSET MEMBER...
  python3 - "$stage" "$@" <<'PY'
import os, sys, tarfile
stage, out, eof, members = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
f = open(out, "wb")
tf = tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT)
for rel in members:
    ti = tf.gettarinfo(os.path.join(stage, rel), arcname=rel)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    if ti.isdir():
        ti.mtime = 0  # the stage dirs are new each time; keep the segment's bytes stable
    if ti.isfile():
        with open(os.path.join(stage, rel), "rb") as src:
            tf.addfile(ti, src)
    else:
        tf.addfile(ti)
if eof.startswith("eof:"):
    end = int(eof[4:]) + f.tell() + 2 * tarfile.BLOCKSIZE
    f.write(b"\0" * (2 * tarfile.BLOCKSIZE + (-end) % tarfile.RECORDSIZE))
f.close()  # not tf.close(): that would write its own end blocks
PY
}
xz_file() { xz -T0 "-$xz_level" -c "$1" > "$2.tmp" && mv "$2.tmp" "$2"; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }
fmt_mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

seg="$build_dir/seg"
mkdir -p "$seg"
(cd "$stage" && find kit/ort -mindepth 1 | sort) > "$seg/ort.list"
mapfile -t ort_members < "$seg/ort.list"
tar_segment "$seg/ort.tar" noeof kit kit/ort "${ort_members[@]}"
mapfile -t bin_members < <(cd "$stage" && find kit/bin -mindepth 1 | sort)
tar_segment "$seg/bin.tar" noeof kit/bin "${bin_members[@]}"

kit_cache="$repo/.cache/gpu-kit"
mkdir -p "$kit_cache"
ort_sha="$(sha_of "$seg/ort.tar")"
ort_xz="$kit_cache/ort-$provider-${ort_sha:0:16}-xz$xz_level.xz"
if [ -f "$ort_xz" ]; then
  echo "== ORT stream: cached $(fmt_mib "$(size_of "$ort_xz")") (${ort_xz#"$repo"/})"
else
  echo "== xz -$xz_level ORT libs ($(fmt_mib "$(size_of "$seg/ort.tar")"); the CUDA provider takes minutes)"
  xz_file "$seg/ort.tar" "$ort_xz.$$"
  mv "$ort_xz.$$" "$ort_xz"
  # Keep the last few cached streams only.
  find "$kit_cache" -maxdepth 1 -name 'ort-*.xz' -printf '%T@ %p\n' | sort -rn | tail -n +5 |
    cut -d' ' -f2- | while read -r old; do rm -f "$old"; done
fi
echo "== xz -$xz_level binaries ($(fmt_mib "$(size_of "$seg/bin.tar")"))"
xz_file "$seg/bin.tar" "$seg/bin.tar.xz"
tar_before=$(( $(size_of "$seg/ort.tar") + $(size_of "$seg/bin.tar") ))
rm -f "$seg/ort.tar" "$seg/bin.tar"

part_bytes=$((part_mib * mib))
payload=$(( $(size_of "$ort_xz") + $(size_of "$seg/bin.tar.xz") ))
# KIT names the part count, which depends on the compressed size: KIT is the last,
# tiny stream, so recompute it until the count it names is the count it makes.
parts=$(( (payload + part_bytes - 1) / part_bytes ))
for _ in 1 2 3; do
  printf 'warmlane-gpu-kit 1\nrev %s\nprovider %s\ndate %s\nparts %s\nort %s\n' \
    "$rev" "$provider" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$parts" "$ORT_VERSION" > "$stage/kit/KIT"
  tar_segment "$seg/kit.tar" "eof:$tar_before" kit/KIT
  xz_file "$seg/kit.tar" "$seg/kit.tar.xz"
  total=$((payload + $(size_of "$seg/kit.tar.xz")))
  need=$(( (total + part_bytes - 1) / part_bytes ))
  [ "$need" != "$parts" ] || break
  parts=$need
done
[ "$need" = "$parts" ] || die "part count did not settle ($parts vs $need)"
[ "$parts" -le 99 ] || die "$parts parts (over 99): raise --part-mib"

kit_xz="$build_dir/kit.tar.xz"
cat "$ort_xz" "$seg/bin.tar.xz" "$seg/kit.tar.xz" > "$kit_xz"
kit_sha="$(sha_of "$kit_xz")"
kit_bytes="$(size_of "$kit_xz")"

# --- parts and MANIFEST -------------------------------------------------------
find "$out" -mindepth 1 -maxdepth 1 -name 'part-*' -exec rm -rf {} +
rm -f "$out/MANIFEST"
(cd "$build_dir" && split -b "$part_bytes" -d -a 2 --numeric-suffixes=1 kit.tar.xz kit.tar.xz.)
{
  echo "# warmlane-gpu-kit 1"
  echo "# rev $rev provider $provider parts $parts bytes $kit_bytes"
  echo "$kit_sha  kit.tar.xz"
} > "$build_dir/MANIFEST"
for i in $(seq 1 "$parts"); do
  nn="$(printf '%02d' "$i")"
  [ -f "$build_dir/kit.tar.xz.$nn" ] || die "split made no part $nn"
  mkdir -p "$out/part-$nn"
  mv "$build_dir/kit.tar.xz.$nn" "$out/part-$nn/kit.tar.xz.$nn"
  echo "$(sha_of "$out/part-$nn/kit.tar.xz.$nn")  part-$nn/kit.tar.xz.$nn" >> "$build_dir/MANIFEST"
done
[ ! -e "$build_dir/kit.tar.xz.$(printf '%02d' $((parts + 1)))" ] || die "split made more than $parts parts"
mv "$build_dir/MANIFEST" "$out/MANIFEST"
for i in $(seq 1 "$parts"); do cp "$out/MANIFEST" "$out/part-$(printf '%02d' "$i")/MANIFEST"; done
rm -rf "$build_dir"

# --- report -------------------------------------------------------------------
echo
echo "kit: rev $rev, provider $provider, $parts part(s), kit.tar.xz $(fmt_mib "$kit_bytes") ($kit_bytes bytes)"
echo "working tree ${tree_mib} MiB (rounded up) + part <= ${part_mib} MiB per run (limit 64 MiB)"
for i in $(seq 1 "$parts"); do
  nn="$(printf '%02d' "$i")"
  printf '  %s/part-%s  %s\n' "$rel_out" "$nn" "$(fmt_mib "$(du -cb "$out/part-$nn" | tail -n1 | cut -f1)")"
done
flags=""
[ "$provider" = cuda ] || flags+=" --provider $provider"
[ "$rel_out" = .gpu ] || flags+=" --kit $rel_out"
echo
echo "Runs, in this order (one part each):"
for i in $(seq 1 "$parts"); do
  nn="$(printf '%02d' "$i")"
  if [ "$i" -lt "$parts" ]; then
    echo "run $i/$parts: carry [\"$rel_out/part-$nn\"]  command: ops/gpu/check.sh$flags --receive"
  else
    echo "run $i/$parts: carry [\"$rel_out/part-$nn\"]  command: ops/gpu/check.sh$flags  (timeout_s 480)"
  fi
done
echo "Make each call within 30 s of the previous one: the machine goes back after 30 s idle,"
echo "and with it the parts already carried; then start over from run 1."
