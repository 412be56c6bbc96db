#!/usr/bin/env bash
# CPU-only test of the GPU proof kit (ops/gpu/pack.sh, ops/gpu/check.sh), for CI.
#
#   ops/gpu/test-kit.sh          pack a cpu kit in several parts, then: MANIFEST and its
#                                copies, --receive with one part, a missing part, a
#                                corrupt part, a missing MANIFEST, bad flags
#   ops/gpu/test-kit.sh --full   the same, then the full CPU dry run (check.sh without
#                                --receive runs gpu-check) and its report validated
#
# Needs the release binaries (target/release/{warmlane-consumer,gpu-check,engine-bench}, or the dir
# in WARMLANE_GPU_BIN_DIR), python3, xz; --full also numpy and onnx (heavy models).
# Each failed assertion prints `FAIL: ...` and exits 1.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
pack="$repo/ops/gpu/pack.sh"
check="$repo/ops/gpu/check.sh"

full=0
for arg in "$@"; do
  case $arg in
    --full) full=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "test-kit.sh: unknown argument '$arg' (expected --full)" >&2; exit 2 ;;
  esac
done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/warmlane-test-kit.XXXXXX")"
cleanup() {
  local pidfile pid
  # check.sh --receive starts the heavy-model generator in its own session: stop it.
  for pidfile in "$tmp"/*/gen.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
# run CMD...: sets $out (stdout+stderr) and $rc, never exits.
run() { set +e; out="$("$@" 2>&1)"; rc=$?; set -e; }
lines() { printf '%s' "$out" | grep -c '' || true; }
# expect_one_line_error WHAT RC NEEDLE: the last run failed with RC, in one line naming NEEDLE.
expect_one_line_error() {
  [ "$rc" = "$2" ] || fail "$1: exit $rc, expected $2; output: $out"
  [ "$(lines)" = 1 ] || fail "$1: expected one line, got $(lines): $out"
  [[ $out == *"$3"* ]] || fail "$1: the error does not name '$3': $out"
  ok "$1 -> exit $rc: $out"
}

# --- pack -----------------------------------------------------------------------
kit="$tmp/.gpu"
run "$pack" --provider cpu --no-build --out "$kit" --part-mib 8 --xz-level 1
[ "$rc" = 0 ] || fail "pack.sh --provider cpu exited $rc: $(printf '%s' "$out" | tail -n1)"
ok "pack.sh --provider cpu --part-mib 8 --xz-level 1"
grep -q '^run 1/' <<< "$out" || fail "pack.sh printed no run sequence"

manifest="$kit/MANIFEST"
[ -f "$manifest" ] || fail "no $manifest"
[ "$(head -n1 "$manifest")" = "# warmlane-gpu-kit 1" ] || fail "MANIFEST line 1 is not '# warmlane-gpu-kit 1'"
read -r _ _ _ _ provider _ n _ bytes <<< "$(sed -n 2p "$manifest")"
[ "$provider" = cpu ] || fail "MANIFEST provider '$provider', expected cpu"
[[ $n =~ ^[0-9]+$ ]] && [ "$n" -gt 1 ] || fail "MANIFEST names '$n' parts, expected more than 1 (part-mib 8)"
[ "$(grep -c '  part-[0-9][0-9]/kit.tar.xz.[0-9][0-9]$' "$manifest")" = "$n" ] || fail "MANIFEST lists other than $n part lines"
parts=()
for i in $(seq 1 "$n"); do
  nn="$(printf '%02d' "$i")"
  f="$kit/part-$nn/kit.tar.xz.$nn"
  [ -f "$f" ] || fail "missing $f"
  [ "$(stat -c %s "$f")" -le $((8 * 1024 * 1024)) ] || fail "part-$nn is over 8 MiB"
  cmp -s "$manifest" "$kit/part-$nn/MANIFEST" || fail "part-$nn/MANIFEST is not a copy of MANIFEST"
  parts+=("$f")
done
[ -z "$(find "$kit" -maxdepth 1 -name "part-$(printf '%02d' $((n + 1)))")" ] || fail "a part dir beyond $n"
(cd "$kit" && sha256sum -c --quiet --ignore-missing MANIFEST) >/dev/null || fail "sha256sum -c MANIFEST fails"
[ "$(cat "${parts[@]}" | sha256sum | cut -d' ' -f1)" = "$(awk '$2 == "kit.tar.xz" {print $1}' "$manifest")" ] ||
  fail "the parts do not reassemble to kit.tar.xz's sha256"
[ "$(cat "${parts[@]}" | wc -c)" = "$bytes" ] || fail "the parts' bytes differ from MANIFEST's $bytes"
listing="$(cat "${parts[@]}" | xz -dc | tar -tf -)"
for m in kit/KIT kit/bin/warmlane-consumer kit/bin/gpu-check kit/bin/engine-bench kit/ort/libonnxruntime.so.1.31.1; do
  grep -qx "$m" <<< "$listing" || fail "kit.tar.xz lacks $m"
done
ok "MANIFEST: $n parts, a copy in each part dir, sha256s and contents right"

# --- receive with part-01 only ---------------------------------------------------
mkdir -p "$tmp/k1"
cp -r "$kit/part-01" "$tmp/k1/"
run "$check" --receive --provider cpu --kit "$tmp/k1" --work "$tmp/work-receive" --heavy-mb 1
[ "$rc" = 0 ] || fail "check.sh --receive with part-01 only exited $rc: $out"
want="have part-01; missing $(for i in $(seq 2 "$n"); do printf 'part-%02d ' "$i"; done)"
want=${want% }
grep -qxF "$want" <<< "$out" || fail "check.sh --receive did not print '$want': $out"
ok "check.sh --receive with part-01 only -> exit 0, '$want'"

# --- a full run with part-02 missing ------------------------------------------------
cp -r "$kit" "$tmp/k2"
rm -rf "$tmp/k2/part-02"
run "$check" --provider cpu --kit "$tmp/k2" --work "$tmp/work-missing" --out "$tmp/out-missing"
[ "$rc" != 0 ] || fail "check.sh with part-02 missing exited 0"
expect_one_line_error "check.sh with part-02 missing" "$rc" part-02

# --- a corrupt part ---------------------------------------------------------------------
cp -r "$kit" "$tmp/k3"
python3 - "$tmp/k3/part-02/kit.tar.xz.02" <<'PY'
import os, sys
path = sys.argv[1]
with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 0xFF]))
PY
run "$check" --provider cpu --kit "$tmp/k3" --work "$tmp/work-corrupt" --out "$tmp/out-corrupt"
[ "$rc" != 0 ] || fail "check.sh with a corrupt part-02 exited 0"
expect_one_line_error "check.sh with a corrupt part-02" "$rc" part-02
run "$check" --receive --provider cpu --kit "$tmp/k3" --work "$tmp/work-corrupt"
[ "$rc" != 0 ] || fail "check.sh --receive with a corrupt part-02 exited 0"
expect_one_line_error "check.sh --receive with a corrupt part-02" "$rc" part-02

# --- MANIFEST missing, MANIFEST copies differing ------------------------------------------
mkdir -p "$tmp/k4/part-01"
cp "$kit/part-01/kit.tar.xz.01" "$tmp/k4/part-01/"
run "$check" --receive --provider cpu --kit "$tmp/k4" --work "$tmp/work-nomanifest"
expect_one_line_error "check.sh --receive without MANIFEST" 1 MANIFEST
cp -r "$kit" "$tmp/k5"
sed -i '2s/$/ x/' "$tmp/k5/part-02/MANIFEST"
run "$check" --receive --provider cpu --kit "$tmp/k5" --work "$tmp/work-manifests"
expect_one_line_error "check.sh --receive with differing MANIFEST copies" 1 MANIFEST

# --- bad flags ------------------------------------------------------------------------------
run "$check" --provider rocm
expect_one_line_error "check.sh --provider rocm" 2 rocm
run "$check" --budget-s 9999
expect_one_line_error "check.sh --budget-s 9999" 2 9999
run "$check" --bogus
expect_one_line_error "check.sh --bogus" 2 --bogus
run "$pack" --bogus
expect_one_line_error "pack.sh --bogus" 2 --bogus
run "$pack" --provider rocm
expect_one_line_error "pack.sh --provider rocm" 2 rocm
run "$pack" --part-mib 0
expect_one_line_error "pack.sh --part-mib 0" 2 part-mib

# --- the full CPU dry run ---------------------------------------------------------------------
if [ "$full" = 1 ]; then
  echo "== full CPU dry run: check.sh --provider cpu --requests 4 --budget-s 300"
  set +e
  "$check" --provider cpu --kit "$kit" --out "$tmp/out" --work "$tmp/work" --requests 4 --budget-s 300
  rc=$?
  set -e
  report="$tmp/out/gpu-report.json"
  [ -f "$report" ] || fail "full dry run (exit $rc) wrote no $report"
  python3 - "$report" "$rc" <<'PY' || exit 1
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
def fail(msg):
    print(f"FAIL: {path}: {msg}", file=sys.stderr)
    sys.exit(1)
try:
    r = json.load(open(path))
except ValueError as exc:
    fail(f"not JSON: {exc}")
if not isinstance(r, dict):
    fail("not a JSON object")
for key in ("provider", "checks", "facts"):
    if key not in r:
        fail(f"no top-level key '{key}'")
if r["provider"] != "cpu":
    fail(f"provider {r['provider']!r}, expected 'cpu'")
if not isinstance(r["checks"], list):
    fail("'checks' is not a list")
want = ["cuda_provider", "release_after_exit", "sc001", "real_oom", "arena", "switch_time"]
names = [c.get("name") if isinstance(c, dict) else None for c in r["checks"]]
if sorted(map(str, names)) != sorted(want):
    fail(f"check names {names}, expected exactly {want}")
for c in r["checks"]:
    if c.get("status") not in ("passed", "failed", "skipped", "error"):
        fail(f"check {c['name']}: status {c.get('status')!r}")
    if not isinstance(c.get("summary"), str):
        fail(f"check {c['name']}: summary is not a string")
# gpu-check exits 0 only when every check passed (skipped counts against it).
bad = [f"{c['name']} ({c['status']}: {c['summary']})" for c in r["checks"] if c["status"] != "passed"]
if rc not in (0, 1):
    fail(f"gpu-check exited {rc} (0: all passed, 1: a check did not pass)")
if (rc == 0) != (not bad):
    fail(f"exit {rc} does not match the checks' statuses: {bad}")
if bad:
    fail(f"checks that did not pass on the CPU dry run: {'; '.join(bad)}")
print(f"ok: full CPU dry run: report valid, {len(names)} checks, exit {rc}")
PY
fi
echo "test-kit: all passed"
