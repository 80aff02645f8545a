#!/usr/bin/env bash
# The quickstart on a fresh Debian 12 (or newer) machine, as root, no cloud
# account needed: installs what prov needs to build and deploy
# (`scripts/setup.sh quickstart`: libvirt-dev + pkg-config for the default
# features, nix-bin, openssh, age), builds prov, and applies
# examples/quickstart.toml: three local hosts (namespace containers on
# 127.0.0.x, each with its own /nix and sshd), each given a NixOS system (a
# stand-in built with Nix: there is no nixpkgs here) that prov copies over
# SSH and activates with `switch`. Then shows what each host runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh quickstart

cargo build --locked --quiet --bin prov
prov="${CARGO_TARGET_DIR:-target}/debug/prov"

"$prov" -f examples/quickstart.toml apply --auto-approve
"$prov" -f examples/quickstart.toml plan --detailed-exitcode

echo
root="${PROV_LOCAL_ROOT:-/var/lib/prov/local}"
for host in "$root"/quickstart/web-*; do
  system="$(readlink -f "$host/nix/var/nix/profiles/system" || true)"
  echo "$(basename "$host"): system profile -> $system"
  echo "  activations: $(tr '\n' ';' <"$host/nix/var/prov-standin/activations")"
done
echo
echo "Log in: ssh -i examples/.prov/ssh/id_ed25519 root@\$(cat $root/quickstart/web-0/address)"
echo "Tear down: $prov -f examples/quickstart.toml destroy --auto-approve"
