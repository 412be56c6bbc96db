# shellcheck shell=bash disable=SC2154 # prog is set by the sourcing script
# What ops/gpu/pack.sh and ops/gpu/check.sh share: one-line errors named after the
# script (`prog`, set before sourcing) and an ERR trap that reports an unexpected
# failure in one line.

die() { printf '%s: %s\n' "$prog" "$*" >&2; exit 1; }
usage_err() { printf '%s: %s (see --help)\n' "$prog" "$*" >&2; exit 2; }
warn() { printf '%s: warning: %s\n' "$prog" "$*" >&2; }
# shellcheck disable=SC2329 # called by the ERR trap
on_err() { # one line for an unexpected failure; a subshell leaves it to its parent
  local rc=$?
  [ "$BASH_SUBSHELL" -gt 0 ] || printf '%s: unexpected failure (exit %s) at line %s: %s\n' "$prog" "$rc" "$1" "$2" >&2
  exit "$rc"
}
trap 'on_err "$LINENO" "$BASH_COMMAND"' ERR
