#!/usr/bin/env bash
# Receive the GPU proof kit part by part, then run the GPU checks (issue #17).
# Runs on the GPU machine (ops/gpu/pack.sh prints the runs); here too, as a CPU dry run.
#
#   ops/gpu/check.sh --receive [OPTIONS]   verify the parts carried so far; on the first
#                                          call print cheap facts and start making the
#                                          heavy models in the background
#   ops/gpu/check.sh [OPTIONS]             all parts: verify, extract, facts, heavy
#                                          models, then gpu-check; exits with its status
#
#   --provider cuda|cpu  (default cuda; cpu for a kit packed with --provider cpu)
#   --kit DIR            the parts (default <repo>/.gpu)
#   --out DIR            report, logs (default $OUT if set, else <repo>/gpu-out)
#   --work DIR           scratch: kit, heavy models, facts (default /tmp/warmlane-gpu)
#   --budget-s N         gpu-check's time limit, at most 360 (default 360)
#   --heavy-mb N         heavy denoiser size (default 8192 cuda, 48 cpu; phr00t gets N + N/4;
#                        on cuda a parkable mid pair of 1536 and 1920 MB is made too)
#   --requests N         the alternation's requests, checks 2 and 3 (default 20, 2..200)
#   --call-limit-s N     the run's timeout_s (default 480); the wait for the heavy models
#                        is cut so that the checks' budget still fits in it
#
# Every failure is one line `check.sh: ...` naming what is missing or wrong.
set -Eeuo pipefail

prog=check.sh
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# shellcheck source=ops/gpu/common.sh
source "$repo/ops/gpu/common.sh"

provider="" kit="" out="${OUT:-}" work=/tmp/warmlane-gpu budget=360 heavy_mb="" requests=20
receive=0 call_limit=480
int_opt() { # NAME VALUE MIN MAX
  [[ $2 =~ ^[0-9]{1,7}$ ]] || usage_err "$1 must be an integer, not '$2'"
  [ "$2" -ge "$3" ] || usage_err "$1 $2 is under the minimum $3"
  [ "$2" -le "$4" ] || usage_err "$1 $2 is over the maximum $4"
}
while [ $# -gt 0 ]; do
  opt=$1 val="" has_val=0
  case $opt in --*=*) val=${opt#*=}; opt=${opt%%=*}; has_val=1 ;; esac
  case $opt in
    --provider|--kit|--out|--work|--budget-s|--heavy-mb|--requests|--call-limit-s)
      if [ "$has_val" = 0 ]; then
        [ $# -ge 2 ] || usage_err "$opt needs a value"
        val=$2; shift
      fi ;;
    --receive|-h|--help) [ "$has_val" = 0 ] || usage_err "$opt takes no value" ;;
  esac
  case $opt in
    --provider) case $val in cuda|cpu) provider=$val ;; *) usage_err "--provider must be cuda or cpu, not '$val'" ;; esac ;;
    --kit) [ -n "$val" ] || usage_err "--kit needs a directory"; kit=$val ;;
    --out) [ -n "$val" ] || usage_err "--out needs a directory"; out=$val ;;
    --work) [ -n "$val" ] || usage_err "--work needs a directory"; work=$val ;;
    --budget-s) int_opt --budget-s "$val" 60 360; budget=$val ;;
    --heavy-mb) int_opt --heavy-mb "$val" 1 1000000; heavy_mb=$val ;;
    --requests) int_opt --requests "$val" 2 200; requests=$val ;;
    --call-limit-s) int_opt --call-limit-s "$val" 60 3600; call_limit=$val ;;
    --receive) receive=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) usage_err "unknown argument '$1'" ;;
  esac
  shift
done
kit=${kit:-$repo/.gpu}
out=${out:-$repo/gpu-out}
[ -d "$kit" ] || die "missing MANIFEST: no kit dir $kit (carry .gpu/part-01 in a run first)"
kit="$(cd "$kit" && pwd)"
case $kit/ in "$repo"/*) rel_kit=${kit#"$repo"/} ;; *) rel_kit=$kit ;; esac
mkdir -p "$work" || die "cannot create --work $work"
work="$(cd "$work" && pwd)"

# Phase clock, milliseconds.
now_ms() {
  if [ -n "${EPOCHREALTIME:-}" ]; then local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000))
  else echo $(( $(date +%s%N) / 1000000 )); fi
}
start_ms=$(now_ms) phase_ms=$start_ms phases=()
phase_done() {
  local t; t=$(now_ms)
  phases+=("$(printf '%-8s %6d.%01d s' "$1" $(((t - phase_ms) / 1000)) $((((t - phase_ms) % 1000) / 100)))")
  echo "phase ${phases[-1]}"
  phase_ms=$t
}
elapsed_s() { echo $(( ($(now_ms) - start_ms) / 1000 )); }

# --- MANIFEST and parts -------------------------------------------------------
shopt -s nullglob
manifests=("$kit"/part-*/MANIFEST)
shopt -u nullglob
[ -f "$kit/MANIFEST" ] && manifests+=("$kit/MANIFEST")
[ ${#manifests[@]} -gt 0 ] || die "missing MANIFEST in $rel_kit (carry $rel_kit/part-01 in a run first)"
manifest=${manifests[0]}
for m in "${manifests[@]:1}"; do
  cmp -s "$manifest" "$m" ||
    die "MANIFEST copies differ (${manifest#"$kit"/} vs ${m#"$kit"/}): parts of two packs in $rel_kit; re-pack and carry every part again"
done
{ read -r l1; read -r l2; } < "$manifest" || die "MANIFEST ${manifest#"$kit"/} is truncated"
[ "$l1" = "# warmlane-gpu-kit 1" ] || die "MANIFEST ${manifest#"$kit"/} is not a warmlane-gpu-kit 1 manifest"
read -r _ _ kit_rev _ kit_provider _ nparts _ kit_bytes <<< "$l2"
[[ ${nparts:-} =~ ^[0-9]+$ && ${kit_bytes:-} =~ ^[0-9]+$ ]] || die "MANIFEST header line 2 is malformed: $l2"
[ "$nparts" -ge 1 ] || die "MANIFEST names no parts (header line 2: $l2)"
case $kit_provider in cuda|cpu) ;; *) die "MANIFEST names an unknown provider '$kit_provider'" ;; esac
provider=${provider:-$kit_provider}
if [ -z "$heavy_mb" ]; then
  if [ "$provider" = cuda ]; then heavy_mb=8192; else heavy_mb=48; fi
fi
if [ "$kit_provider" = cpu ] && [ "$provider" = cuda ]; then
  die "the kit was packed for --provider cpu (no CUDA provider in it); re-pack with --provider cuda or run with --provider cpu"
fi
manifest_sha() { awk -v n="$1" '$2 == n { print $1; exit }' "$manifest"; }
kit_sha="$(manifest_sha kit.tar.xz)"
[ -n "$kit_sha" ] || die "MANIFEST lacks the kit.tar.xz line"

have=() missing=() part_files=()
for i in $(seq 1 "$nparts"); do
  nn="$(printf '%02d' "$i")"
  name="part-$nn/kit.tar.xz.$nn"
  want="$(manifest_sha "$name")"
  [ -n "$want" ] || die "MANIFEST lacks the $name line"
  part_files+=("$kit/$name")
  if [ -f "$kit/$name" ]; then
    got="$(sha256sum "$kit/$name" | cut -d' ' -f1)"
    [ "$got" = "$want" ] || die "sha256 mismatch in part-$nn ($rel_kit/$name): corrupt or from another pack; re-pack or carry $rel_kit/part-$nn again"
    have+=("part-$nn")
  else
    missing+=("part-$nn")
  fi
done
parts_line="have ${have[*]:-none}; missing ${missing[*]:-none}"

# --- environment ----------------------------------------------------------------
# Sets `problem` to the first thing missing (empty when none) and `cuda_dirs`.
cuda_dirs=() problem=""
check_env() {
  problem="" cuda_dirs=()
  command -v python3 >/dev/null 2>&1 || { problem="missing python3"; return 0; }
  local mods="numpy onnx" sp d lib found
  [ "$provider" = cpu ] || mods="numpy onnx torch"
  # shellcheck disable=SC2086 # the module names are words
  problem="$(python3 - $mods 2>&1 <<'PY'
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - broken counts as missing
        print(f"missing python3 module {name} ({sys.executable}: {type(exc).__name__})")
        break
PY
)" || problem="python3 does not run: $problem"
  problem=${problem%%$'\n'*}
  [ -z "$problem" ] || return 0
  [ "$provider" = cuda ] || return 0
  command -v nvidia-smi >/dev/null 2>&1 || { problem="missing nvidia-smi (no NVIDIA driver tools on PATH)"; return 0; }
  while IFS= read -r sp; do
    [ -d "$sp/nvidia" ] || continue
    while IFS= read -r d; do cuda_dirs+=("$d"); done < <(find "$sp/nvidia" -mindepth 2 -maxdepth 2 -type d -name lib | sort)
  done < <(python3 -c 'import site; print("\n".join(site.getsitepackages()))')
  if [ ${#cuda_dirs[@]} = 0 ]; then
    problem="missing CUDA library dirs (site-packages/nvidia/*/lib) under $(python3 -c 'import site; print(site.getsitepackages()[0])')"
    return 0
  fi
  for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudnn.so.9; do
    found=0
    for d in "${cuda_dirs[@]}"; do if [ -e "$d/$lib" ]; then found=1; break; fi; done
    if [ "$found" = 0 ]; then
      problem="missing CUDA library $lib in site-packages/nvidia/*/lib (${#cuda_dirs[@]} dirs searched)"
      return 0
    fi
  done
}

# --- heavy models (background generation) ----------------------------------------
heavy="$work/heavy"
# A parkable mid-size pair (under the 2 GiB ORT form) for the switch-time check, on CUDA.
mid_mb=0
[ "$provider" = cpu ] || mid_mb=1536
heavy_params="anisora=$heavy_mb phr00t=$((heavy_mb + heavy_mb / 4)) mid=$mid_mb"
# shellcheck disable=SC2329 # run by start_heavy through `declare -f`
gen_heavy() { # REPO HEAVY_DIR MB MID_MB; stdout is gen.log
  local repo=$1 dir=$2 mb=$3 mb2=$(($3 + $3 / 4)) mid=$4 rc=0
  mkdir -p "$dir"
  echo "started $(date -u +%Y-%m-%dT%H:%M:%SZ): anisora $mb MB, phr00t $mb2 MB"
  python3 "$repo/ops/gen_demo_models.py" --heavy --size-mb "$mb" --model anisora --out "$dir/anisora" || rc=$?
  if [ "$rc" = 0 ]; then
    python3 "$repo/ops/gen_demo_models.py" --heavy --size-mb "$mb2" --model phr00t --out "$dir/phr00t" || rc=$?
  fi
  if [ "$rc" = 0 ] && [ "$mid" -gt 0 ]; then
    python3 "$repo/ops/gen_demo_models.py" --heavy --size-mb "$mid" --model anisora --out "$dir/mid/anisora" || rc=$?
    [ "$rc" != 0 ] || python3 "$repo/ops/gen_demo_models.py" --heavy --size-mb $((mid + mid / 4)) --model phr00t --out "$dir/mid/phr00t" || rc=$?
  fi
  if [ "$rc" = 0 ]; then
    echo "anisora=$mb phr00t=$mb2 mid=$mid" > "$dir/.done"
    echo "done $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  else
    echo "gen_demo_models.py exited $rc: $(grep -v '^ *$' "$dir/../gen.log" 2>/dev/null | tail -n1)" > "$dir/.failed"
    echo "failed (exit $rc)"
  fi
}
gen_alive() { [ -f "$work/gen.pid" ] && kill -0 "$(cat "$work/gen.pid")" 2>/dev/null; }
stop_gen() { local pid; pid="$(cat "$work/gen.pid")"; kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; }
heavy_ready() { [ -f "$heavy/.done" ] && [ "$(cat "$heavy/.done")" = "$heavy_params" ]; }
start_heavy() { # in its own session, so it outlives this call
  if gen_alive; then
    [ "$(cat "$heavy/.params" 2>/dev/null)" = "$heavy_params" ] && return 0
    stop_gen # other sizes: stop that one
  fi
  mkdir -p "$heavy"
  rm -f "$heavy/.done" "$heavy/.failed"
  echo "$heavy_params" > "$heavy/.params"
  local launcher=(setsid nohup)
  command -v setsid >/dev/null 2>&1 || launcher=(nohup)
  # The child writes its own pid: the session leader, whether setsid forked or not.
  rm -f "$work/gen.pid"
  "${launcher[@]}" bash -c "echo \$\$ > \"\$1/gen.pid\"; shift; $(declare -f gen_heavy); gen_heavy \"\$@\"" \
    gen_heavy "$work" "$repo" "$heavy" "$heavy_mb" "$mid_mb" > "$work/gen.log" 2>&1 < /dev/null &
  local i
  for i in $(seq 50); do [ -s "$work/gen.pid" ] && break; sleep 0.1; done
  [ -s "$work/gen.pid" ] || echo "$!" > "$work/gen.pid"
  echo "heavy models: generating in the background ($heavy_params; log $work/gen.log)"
}

# --- receive ------------------------------------------------------------------------
if [ "$receive" = 1 ]; then
  echo "kit rev $kit_rev provider $kit_provider, $nparts part(s) (present ones verified)"
  echo "$parts_line"
  check_env
  [ -z "$problem" ] || warn "$problem (the final run will stop on it)"
  if [ ! -f "$work/.facts-done" ]; then
    if command -v nvidia-smi >/dev/null 2>&1; then
      echo "gpu: $(timeout 30 nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader 2>&1 | paste -sd'|' -)"
    else
      echo "gpu: no nvidia-smi"
    fi
    if command -v python3 >/dev/null 2>&1; then
      python3 - <<'PY' 2>&1 || true
import platform
def ver(name):
    try:
        m = __import__(name)
    except Exception as exc:  # noqa: BLE001
        return None, f"absent ({type(exc).__name__})"
    return m, getattr(m, "__version__", "?")
torch, tv = ver("torch")
cuda = f" cuda {torch.version.cuda} available {torch.cuda.is_available()}" if torch else ""
print(f"python {platform.python_version()}; torch {tv}{cuda}; onnx {ver('onnx')[1]}; numpy {ver('numpy')[1]}")
PY
    else
      echo "python3: absent"
    fi
    echo "/tmp free $(df -h --output=avail /tmp | tail -n1 | tr -d ' '); nproc $(nproc); $(grep MemTotal /proc/meminfo | tr -s ' ')"
    touch "$work/.facts-done"
  fi
  if heavy_ready; then
    echo "heavy models: ready ($heavy_params)"
  elif command -v python3 >/dev/null 2>&1; then
    start_heavy
  fi
  [ ${#missing[@]} -gt 0 ] || echo "all $nparts parts here: the final run (without --receive) can start"
  exit 0
fi

# --- full run ------------------------------------------------------------------------
if [ ${#missing[@]} -gt 0 ]; then
  die "missing ${missing[*]} of $nparts in $rel_kit: carry $rel_kit/${missing[0]} in a run first"
fi
check_env
[ -z "$problem" ] || die "$problem"
echo "kit rev $kit_rev provider $kit_provider, $nparts part(s): all verified"

got="$(cat "${part_files[@]}" | sha256sum | cut -d' ' -f1)"
[ "$got" = "$kit_sha" ] || die "reassembled kit.tar.xz sha256 mismatch (parts of two packs?); re-pack and carry every part again"
phase_done verify

rm -rf "$work/kit"
if command -v xz >/dev/null 2>&1; then
  decompress=(xz -dc)
else # python's lzma, reading the concatenated xz streams one after another
  decompress=(python3 -c '
import lzma, os, sys
inp, out, d = sys.stdin.buffer, sys.stdout.buffer, lzma.LZMADecompressor()
try:
    while chunk := inp.read(1 << 20):
        while chunk:
            if d.eof:
                d = lzma.LZMADecompressor()
            out.write(d.decompress(chunk))
            chunk = d.unused_data if d.eof else b""
except BrokenPipeError:  # tar stopped at the end-of-archive blocks: as xz would, 141
    os._exit(141)
')
fi
st=(0 0 0)
if ! cat "${part_files[@]}" | "${decompress[@]}" 2> "$work/extract.err" | tar -C "$work" -xf - 2>> "$work/extract.err"; then
  st=("${PIPESTATUS[@]}")
fi
# The sha256 matched, so a decompressor cut short (141, SIGPIPE) by tar's stop at the
# end-of-archive blocks is no harm; anything else is.
if [ "${st[0]}" != 0 ] || [ "${st[2]}" != 0 ] || { [ "${st[1]}" != 0 ] && [ "${st[1]}" != 141 ]; }; then
  die "extracting kit.tar.xz into $work failed (cat/${decompress[0]}/tar exit ${st[*]}): $(head -n1 "$work/extract.err")"
fi
for f in kit/bin/gpu-check kit/bin/warmlane-consumer kit/bin/engine-bench "kit/ort/libonnxruntime.so.1.31.1"; do
  [ -f "$work/$f" ] || die "the kit lacks $f"
done
[ "$provider" = cpu ] || [ -f "$work/kit/ort/libonnxruntime_providers_cuda.so" ] ||
  die "the kit lacks kit/ort/libonnxruntime_providers_cuda.so (packed for cpu?)"
echo "kit: $(paste -sd' ' "$work/kit/KIT")"
phase_done extract

export ORT_DYLIB_PATH="$work/kit/ort/libonnxruntime.so.1.31.1"
if [ "$provider" = cuda ]; then
  ld="$work/kit/ort"
  for d in "${cuda_dirs[@]}"; do ld+=":$d"; done
  [ -d /usr/local/nvidia/lib64 ] && ld+=":/usr/local/nvidia/lib64"
  export LD_LIBRARY_PATH="$ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "LD_LIBRARY_PATH: kit/ort + ${#cuda_dirs[@]} nvidia lib dirs$([ -d /usr/local/nvidia/lib64 ] && echo " + /usr/local/nvidia/lib64")"
fi

mkdir -p "$out" || die "cannot create --out $out"
out="$(cd "$out" && pwd)"
if ! python3 "$repo/ops/gpu/facts.py" --out "$work/facts.json" > "$work/facts.err" 2>&1; then
  warn "facts.py failed: $(tail -n1 "$work/facts.err")"
  printf '{"error": "facts.py failed"}\n' > "$work/facts.json"
fi
cp "$work/facts.json" "$out/facts.json"
python3 - "$work/facts.json" <<'PY' || true
import json, sys
f = json.load(open(sys.argv[1]))
print("facts: " + ", ".join(f"{k} {v}" for k, v in f.items()))
PY
phase_done facts

# Heavy models: ready, being made (wait, bounded), or start them now (same wait).
heavy_dir=$heavy
if ! heavy_ready; then
  if ! gen_alive || [ "$(cat "$heavy/.params" 2>/dev/null)" != "$heavy_params" ]; then start_heavy; fi
  # Cut the wait so that gpu-check's budget (+20 s kill grace, +10 s margin) fits the call.
  wait_s=$((call_limit - $(elapsed_s) - budget - 30))
  [ "$wait_s" -le 120 ] || wait_s=120
  [ "$wait_s" -ge 5 ] || wait_s=5
  echo "heavy models: waiting up to ${wait_s} s"
  deadline=$((SECONDS + wait_s))
  while ! heavy_ready && [ ! -f "$heavy/.failed" ] && gen_alive && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 1
  done
  if ! heavy_ready; then
    if [ -f "$heavy/.failed" ]; then
      reason="$(cat "$heavy/.failed")"
    elif gen_alive; then
      reason="not done after ${wait_s} s (stopped)"
      stop_gen
    else
      reason="generator ended without a result (see gen.log)"
    fi
    warn "heavy models not ready: $reason; gpu-check gets an empty heavy dir"
    heavy_dir="$work/heavy-none"
    rm -rf "$heavy_dir"
    mkdir -p "$heavy_dir"
  fi
fi
heavy_ready && echo "heavy models: ready ($heavy_params)"
phase_done heavy

# --- gpu-check ---------------------------------------------------------------------
mid_args=()
if [ "$mid_mb" -gt 0 ] && heavy_ready; then mid_args=(--mid-dir "$heavy_dir/mid"); fi
echo "== gpu-check --provider $provider (budget ${budget} s)"
status=0
if ! timeout --signal=INT --kill-after=20 "$budget" "$work/kit/bin/gpu-check" --provider "$provider" \
  --report "$out/gpu-report.json" --facts "$work/facts.json" --heavy-dir "$heavy_dir" \
  --runner-exe "$work/kit/bin/warmlane-consumer" --settings "$repo/inference_settings.json" \
  --models-dir "$repo/models" --requests "$requests" --budget-s $((budget - 20)) "${mid_args[@]}" 2>&1 |
  tee "$out/gpu-check.log"; then
  status=${PIPESTATUS[0]}
  [ "$status" != 0 ] || status=1 # tee failed
fi
phase_done checks

[ -f "$work/gen.log" ] && cp "$work/gen.log" "$out/gen.log"
# Files over 16 MiB do not come back from the GPU machine: keep head and tail.
for f in "$out/gpu-check.log" "$out/gen.log"; do
  if [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt $((15 * 1024 * 1024)) ]; then
    { head -c $((4 * 1024 * 1024)) "$f"; printf '\n[... cut by check.sh ...]\n'; tail -c $((10 * 1024 * 1024)) "$f"; } > "$f.cut"
    mv "$f.cut" "$f"
  fi
done

echo
echo "phases (total $(elapsed_s) s):"
printf '  %s\n' "${phases[@]}"
case $status in
  124|137) echo "gpu-check: ran past --budget-s $budget (exit $status)" ;;
esac
if [ ! -f "$out/gpu-report.json" ]; then
  printf '%s: missing report %s (gpu-check exited %s; see gpu-check.log)\n' "$prog" "$out/gpu-report.json" "$status" >&2
  [ "$status" != 0 ] || status=1
  exit "$status"
fi
python3 - "$out/gpu-report.json" <<'PY' || warn "cannot read $out/gpu-report.json"
import json, sys
r = json.load(open(sys.argv[1]))
checks = r.get("checks") or []
w = max([len(str(c.get("name", ""))) for c in checks] + [5])
print(f"{'check':<{w}}  {'status':<7}  summary")
for c in checks:
    print(f"{str(c.get('name', '?')):<{w}}  {str(c.get('status', '?')):<7}  {c.get('summary', '')}")
PY
echo "gpu-check exit $status; report $out/gpu-report.json"
exit "$status"
