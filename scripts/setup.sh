#!/usr/bin/env bash
# Installs what prov's quickstart and test suite need on a fresh Debian 12
# machine, idempotently:
#   - Debian packages: nix-bin (builds and copies NixOS closures), openssh
#     (sshd inside local hosts, ssh-keygen), age (secrets interop),
#     (util-linux, for unshare and setsid, is part of every Debian system)
#   - /etc/nix/nix.conf for offline, single-user Nix (when there is none)
#   - a Python virtualenv with moto[server] (local EC2 and S3) and the AWS CLI,
#     under $PROV_TOOLS_DIR (default ~/.cache/prov-tools)
# Prints the environment to export (PATH with the venv's bin directory).
set -euo pipefail

tools_dir="${PROV_TOOLS_DIR:-$HOME/.cache/prov-tools}"
venv="$tools_dir/venv"
mkdir -p "$tools_dir"

log() { printf 'setup: %s\n' "$*" >&2; }

missing=()
command -v nix-instantiate >/dev/null 2>&1 || missing+=(nix-bin)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v age >/dev/null 2>&1 || missing+=(age)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]} (run as root, or install them)"
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Nix without a daemon, build users or network (as on CI machines): build as
# root, no sandbox, no binary cache. Only written when there is no config yet.
if [ ! -s /etc/nix/nix.conf ] && [ "$(id -u)" -eq 0 ]; then
  log "writing /etc/nix/nix.conf for offline single-user Nix"
  mkdir -p /etc/nix
  printf '%s\n' 'build-users-group =' 'sandbox = false' 'substituters =' \
    'experimental-features = nix-command' >/etc/nix/nix.conf
fi

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
