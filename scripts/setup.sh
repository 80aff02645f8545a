#!/usr/bin/env bash
# Installs what prov's quickstart and test suite need on a fresh Debian 12
# machine, idempotently:
#   - a Python virtualenv with moto[server] (local EC2 and S3) and the AWS CLI,
#     under $PROV_TOOLS_DIR (default ~/.cache/prov-tools)
# Prints the environment to export (PATH with the venv's bin directory).
set -euo pipefail

tools_dir="${PROV_TOOLS_DIR:-$HOME/.cache/prov-tools}"
venv="$tools_dir/venv"
mkdir -p "$tools_dir"

log() { printf 'setup: %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/aws" ]; then
  log "creating $venv with moto[server] and awscli"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6' 'awscli>=1.33'
else
  log "moto and awscli already in $venv"
fi

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo is missing: install the Rust toolchain (rustup) first"
  exit 1
fi

echo "export PATH=\"$venv/bin:\$PATH\""
