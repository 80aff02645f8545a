#!/usr/bin/env bash
# Installs what prov needs on a fresh Debian 12 (or newer) machine, as root,
# idempotently. The packages come from scripts/lib/requirements.sh, the one
# list shared with scripts/fresh-check.sh:
#   scripts/setup.sh quickstart   base tools (git, curl, gcc, python3-venv, …)
#                                 when missing, the build dependencies of the
#                                 default features (pkg-config, libvirt-dev),
#                                 nix-bin, openssh, age; /etc/nix/nix.conf for
#                                 offline single-user Nix
#   scripts/setup.sh [test]       all of that, etcd, etcdctl, openssl and (where
#                                 none is) kubectl for the Kubernetes tests, and
#                                 a Python virtualenv with
#                                 moto[server] (local EC2 and S3) and the AWS
#                                 CLI under $PROV_TOOLS_DIR (~/.cache/prov-tools)
# (libvirt and QEMU for the VM tests: scripts/libvirt-setup.sh.)
# Prints the environment to export on stdout (PATH with the venv's bin).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib/requirements.sh
. "$here/lib/requirements.sh"

purpose="${1:-test}"
case "$purpose" in
  quickstart | test) ;;
  *) echo "usage: scripts/setup.sh [quickstart|test]" >&2; exit 2 ;;
esac

log() { printf 'setup: %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo is missing: install the Rust toolchain first (https://rustup.rs), then run this again"
  exit 1
fi

prov_install_pkgs "${PROV_PKGS_BASE[@]}" "${PROV_PKGS_BUILD[@]}" "${PROV_PKGS_HOSTS[@]}"
if [ "$purpose" = test ]; then
  prov_install_pkgs "${PROV_PKGS_TEST[@]}"
  command -v kubectl >/dev/null 2>&1 || prov_install_pkgs "${PROV_PKGS_KUBECTL[@]}"
fi

# Nix without a daemon, build users or network (as on CI machines): build as
# root, no sandbox, no binary cache. Only written when there is no config yet.
if [ ! -s /etc/nix/nix.conf ] && [ "$(id -u)" -eq 0 ]; then
  log "writing /etc/nix/nix.conf for offline single-user Nix"
  mkdir -p /etc/nix
  printf '%s\n' 'build-users-group =' 'sandbox = false' 'substituters =' \
    'experimental-features = nix-command' >/etc/nix/nix.conf
fi

if [ "$purpose" = test ]; then
  venv="$(prov_tools_dir)/venv"
  if [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/aws" ]; then
    log "creating $venv with ${PROV_PIP_TEST[*]}"
    mkdir -p "$(prov_tools_dir)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${PROV_PIP_TEST[@]}"
  else
    log "moto and awscli already in $venv"
  fi
  echo "export PATH=\"$venv/bin:\$PATH\""
fi
