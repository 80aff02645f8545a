#!/usr/bin/env bash
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs every fuzz target in fuzz/ (or the TARGETs named) for SECONDS each
# (default 60) with cargo
# fuzz (nightly, libFuzzer, AddressSanitizer), one after another, and prints
# for each: executions, executions per second, corpus size, crashes and
# timeouts. Exits 1 when any target crashed or timed out; the input is kept
# under fuzz/artifacts/TARGET/ (make it a regression case in the unit tests).
#
# Seeds are checked in under fuzz/seeds/TARGET/; what a run finds goes to
# fuzz/corpus/TARGET/ (not checked in, kept between runs).
# Installs the nightly toolchain and cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
shift $(($# > 0 ? 1 : 0))
log() { printf 'fuzz: %s\n' "$*" >&2; }

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "installing the nightly toolchain (cargo fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo +nightly install --locked --quiet cargo-fuzz
fi

target_dir="${PROV_FUZZ_TARGET_DIR:-$HOME/.cache/prov-fuzz-target}"
fuzz() { cargo +nightly fuzz "$@"; }
log "building the targets (release, debug assertions, AddressSanitizer)"
fuzz build --fuzz-dir fuzz --target-dir "$target_dir"

failed=0
printf '%-22s %12s %10s %8s %8s %9s\n' target executions exec/s corpus crashes timeouts
known="$(fuzz list --fuzz-dir fuzz)"
for target in "$@"; do
  grep -qx -- "$target" <<<"$known" || { log "no fuzz target $target (there are: $(echo $known))"; exit 2; }
done
for target in ${*:-$known}; do
  corpus="fuzz/corpus/$target"
  artifacts="fuzz/artifacts/$target"
  seeds="fuzz/seeds/$target"
  mkdir -p "$corpus" "$artifacts" "$seeds"
  out="$(mktemp)"
  # What the run leaves in artifacts/ is newer than this (the log is not:
  # it is written to until the end).
  stamp="$(mktemp)"
  set +e
  fuzz run --fuzz-dir fuzz --target-dir "$target_dir" "$target" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$out" 2>&1
  rc=$?
  set -e
  stat() { sed -n "s/^stat::$1: *//p" "$out" | tail -n 1; }
  execs="$(stat number_of_executed_units)"
  rate="$(stat average_exec_per_sec)"
  crashes="$(find "$artifacts" -type f -name 'crash-*' -newer "$stamp" | wc -l)"
  timeouts="$(find "$artifacts" -type f \( -name 'timeout-*' -o -name 'oom-*' \) -newer "$stamp" | wc -l)"
  size="$(find "$corpus" -type f | wc -l)"
  printf '%-22s %12s %10s %8s %8s %9s\n' "$target" "${execs:-?}" "${rate:-?}" "$size" "$crashes" "$timeouts"
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ] || [ "$timeouts" -ne 0 ]; then
    failed=1
    log "$target failed (exit $rc); what it reported:"
    grep -E -A6 'panicked at|ERROR: |^SUMMARY|^Failing input|^Reproduce' "$out" | cut -c1-400 | head -n 60 >&2
  fi
  rm -f "$out" "$stamp"
done
exit "$failed"
