#!/usr/bin/env bash
# Applies COUNT EC2 instances on moto at --parallelism P, then destroys
# them, RUNS times in a row; prints, per run, whether apply and destroy
# succeeded, how long they took, and the size of .prov after the apply.
# state-hardening 6 (saves racing at high parallelism) and 7 (history size).
#
#   scripts/stress-state.sh [COUNT] [PARALLELISM] [RUNS]   (500 50 10)
#
# Needs a built prov (PROV, default target/release/prov or $CARGO_TARGET_DIR)
# and moto (scripts/setup.sh test). Everything happens in a temporary
# directory; moto runs on PROV_MOTO_PORT (default 5077).
set -euo pipefail

count="${1:-500}"
parallelism="${2:-50}"
runs="${3:-10}"
here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$here/../target}"
prov="${PROV:-$target/release/prov}"
[ -x "$prov" ] || { echo "stress-state: no prov at $prov (cargo build --release, or set PROV)" >&2; exit 2; }
export PROV_MOTO_PORT="${PROV_MOTO_PORT:-5077}"
endpoint="$("$here/moto.sh")"
export AWS_ENDPOINT_URL="$endpoint" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failures=0
echo "run	apply	apply_s	destroy	destroy_s	prov_dir_bytes	latest_doc_bytes	versions"
for run in $(seq 1 "$runs"); do
  dir="$work/run-$run"
  mkdir -p "$dir"
  cat >"$dir/prov.toml" <<TOML
deployment = "stress$run"
[providers.ec2]
region = "us-east-1"
[hosts.web]
target = "ec2"
count = $count
ami = "ami-12c6146b"
instance_type = "t3.micro"
TOML
  start=$(date +%s.%N)
  if (cd "$dir" && "$prov" apply --auto-approve --parallelism "$parallelism" >apply.log 2>&1); then a=ok; else a=FAILED; failures=$((failures + 1)); fi
  mid=$(date +%s.%N)
  size=$(du -sb "$dir/.prov" | cut -f1)
  doc=$(cd "$dir" && "$prov" state pull 2>/dev/null | wc -c)
  versions=$(cd "$dir" && "$prov" state history 2>/dev/null | tail -n +2 | wc -l)
  if (cd "$dir" && "$prov" destroy --auto-approve --parallelism "$parallelism" >destroy.log 2>&1); then d=ok; else d=FAILED; failures=$((failures + 1)); fi
  end=$(date +%s.%N)
  printf '%s\t%s\t%.1f\t%s\t%.1f\t%s\t%s\t%s\n' "$run" "$a" "$(awk "BEGIN{print $mid - $start}")" "$d" "$(awk "BEGIN{print $end - $mid}")" "$size" "$doc" "$versions"
  if [ "$a" != ok ] || [ "$d" != ok ]; then
    echo "--- run $run: last lines of the failing log" >&2
    tail -n 15 "$dir/apply.log" "$dir/destroy.log" >&2 || true
  fi
done
echo "stress-state: $runs run(s) of $count instances at parallelism $parallelism: $failures failure(s)"
[ "$failures" -eq 0 ]
