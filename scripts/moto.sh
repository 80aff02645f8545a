#!/usr/bin/env bash
# Starts a moto server (local EC2 and S3) on 127.0.0.1:${PROV_MOTO_PORT:-5055}
# in the background unless one already answers there, and waits until it
# does (at most 30 s). Prints the endpoint URL.
set -euo pipefail

port="${PROV_MOTO_PORT:-5055}"
endpoint="http://127.0.0.1:$port"
tools_dir="${PROV_TOOLS_DIR:-$HOME/.cache/prov-tools}"
# moto with S3's atomic conditional writes (see scripts/lib/moto-server).
if [ -n "${MOTO_SERVER:-}" ]; then
  moto=("$MOTO_SERVER")
else
  moto=("$tools_dir/venv/bin/python3" "$(cd "$(dirname "$0")" && pwd)/lib/moto-server")
fi
log_file="$tools_dir/moto-$port.log"

answers() { python3 - "$port" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(); s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

if ! answers; then
  mkdir -p "$tools_dir"
  nohup "${moto[@]}" -H 127.0.0.1 -p "$port" >"$log_file" 2>&1 &
  echo $! >"$tools_dir/moto-$port.pid"
  for _ in $(seq 1 60); do
    answers && break
    sleep 0.5
  done
  answers || { echo "moto did not start; see $log_file" >&2; exit 1; }
fi
echo "$endpoint"
