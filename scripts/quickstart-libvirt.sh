#!/usr/bin/env bash
# The libvirt quickstart on a Debian 12 machine, as root: installs libvirt
# and QEMU, starts libvirtd, makes the pool `prov-test`, builds (once) the
# Debian guest image, builds prov and applies examples/libvirt.toml: two VMs
# boot under QEMU, each with an SSH host key prov generated and handed over
# in a cloud-init seed, and get the stand-in NixOS system over SSH. Then logs
# into each with plain OpenSSH, trusting only the key prov recorded.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh quickstart
eval "$(scripts/libvirt-setup.sh)"
eval "$(scripts/libvirt-image.sh)"

cargo build --quiet --bin prov
prov="${CARGO_TARGET_DIR:-target}/debug/prov"
spec=examples/libvirt.toml

"$prov" -f "$spec" apply --auto-approve
"$prov" -f "$spec" plan --detailed-exitcode

echo
known="$(mktemp)"
trap 'rm -f "$known"' EXIT
state="$("$prov" -f "$spec" state pull)"
for i in 0 1; do
  attribute() { python3 -c 'import json, sys; print(json.load(sys.stdin)["resources"][sys.argv[1]]["attributes"][sys.argv[2]])' "web[$i]" "$1" <<<"$state"; }
  port="$(attribute ssh_port)"
  key="$(attribute host_key)"
  echo "[127.0.0.1]:$port $key" >"$known"
  echo "web[$i] (127.0.0.1:$port): $(ssh -o BatchMode=yes -o StrictHostKeyChecking=yes \
    -o UserKnownHostsFile="$known" -i examples/.prov/ssh/id_ed25519 -p "$port" \
    root@127.0.0.1 'echo "$(hostname) runs $(readlink -f /nix/var/nix/profiles/system)"')"
done
echo
echo "Console: virsh console prov-lv-web-0    Tear down: $prov -f $spec destroy --auto-approve"
