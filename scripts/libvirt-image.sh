#!/usr/bin/env bash
# Builds, once, the Debian 12 guest image that prov's libvirt tests boot, and
# caches it under ${PROV_TOOLS_DIR:-~/.cache/prov-tools}/libvirt/:
#   debian-12-prov-<stamp>/debian-12-prov.qcow2  root ext4 filesystem of the
#                                                whole disk (no partition table)
#   debian-12-prov-<stamp>/vmlinuz               kernel  } for direct kernel boot:
#   debian-12-prov-<stamp>/initrd.img            initrd  } root=/dev/vda rw console=ttyS0
#   current -> debian-12-prov-<stamp>            the newest image
# <stamp> is a hash of this script: a changed script builds a new image, an
# unchanged one reuses the cached image. Images of older versions of the script
# are removed once unused for a day (domains may still boot their kernels).
#
# The guest: debootstrap minbase bookworm with systemd, udev, openssh-server,
# nix-bin (single-user, offline: root uses /nix/store directly, no daemon),
# linux-image-cloud-amd64, iproute2 and cloud-init. systemd-networkd does DHCP
# on en*/eth*. cloud-init reads a NoCloud seed (a filesystem labelled cidata,
# e.g. an ISO from `genisoimage -volid cidata -joliet -rock`, attached as a
# virtio disk), and only sets the hostname, root's authorized keys and the SSH
# host keys (ssh_keys), runs write_files/bootcmd/runcmd, and grows / when the
# disk is bigger than the image. The image has no SSH host keys and no
# authorized keys, and root has no password: keys come from the seed.
#
# Needs root (debootstrap, chroot) and the packages of scripts/libvirt-setup.sh.
# Prints the paths as shell `export` lines on stdout; logs go to stderr.
set -euo pipefail

tools_dir="${PROV_TOOLS_DIR:-$HOME/.cache/prov-tools}"
cache="$tools_dir/libvirt"
mirror="${PROV_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
disk_size=2G         # ext4 size; qcow2 overlays may be bigger (cloud-init grows /)
lock_wait=1800       # seconds to wait for another build of the image
name=debian-12-prov

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

self="$(readlink -f "${BASH_SOURCE[0]}")"
stamp="$(sha256sum "$self" | cut -c1-16)"
out="$cache/$name-$stamp"

emit() {
  # A stable name for the newest image (examples/libvirt.toml's default).
  ln -sfn "$(basename "$out")" "$cache/current"
  echo "export PROV_LIBVIRT_IMAGE=$out/$name.qcow2"
  echo "export PROV_LIBVIRT_KERNEL=$out/vmlinuz"
  echo "export PROV_LIBVIRT_INITRD=$out/initrd.img"
}
cached() { [ -s "$out/$name.qcow2" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; }

if cached; then
  log "using cached image $out"
  touch "$out" 2>/dev/null || true # marks it as in use (see the pruning below)
  emit
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the image needs root (debootstrap, chroot)"
for tool in debootstrap mkfs.ext4 qemu-img chroot systemctl flock; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool is missing: run scripts/libvirt-setup.sh first"
done

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w "$lock_wait" 9 || die "another build holds $cache/.lock for over ${lock_wait}s"
if cached; then # built by whoever held the lock
  log "using cached image $out"
  emit
  exit 0
fi

# Unmounts whatever is still mounted below $1 (debootstrap mounts /proc, /sys
# and sometimes binds /dev into its target; a killed build can leave them),
# then removes $1 without crossing into another filesystem.
remove_tree() {
  local dir="$1" mnt
  [ -d "$dir" ] || return 0
  dir="$(readlink -f "$dir")"
  for _ in 1 2 3; do
    mnt="$(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)"
    [ -z "$mnt" ] && break
    while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done <<<"$mnt"
  done
  if awk -v d="$dir/" 'index($2, d) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
    log "not removing $dir: something is still mounted below it"
    return 1
  fi
  rm -rf --one-file-system "$dir"
}

# Leftovers of killed builds (we hold the lock: nobody else is building).
for old in "$cache"/.build-*; do
  [ -e "$old" ] || continue
  log "removing leftover build $old"
  remove_tree "$old" || true
done

work="$(mktemp -d "$cache/.build-XXXXXX")"
child="" # process group of a running debootstrap
cleanup() {
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    log "stopping debootstrap"
    kill -TERM -- "-$child" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$child" 2>/dev/null || true
  fi
  remove_tree "$work" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
root="$work/root"
started=$SECONDS

# --- debootstrap ---------------------------------------------------------------
# debootstrap resolves dependencies naively (no virtual packages, first
# alternative only), so some are spelt out: libdbi-perl for nix-bin, and
# python3-cffi-backend (provides python3-cffi-backend-api-*) for
# python3-cryptography, which cloud-init needs through python3-oauthlib.
# dbus: systemd-logind needs it, and without logind the guest ignores the ACPI
# power button (`virsh shutdown`).
include=systemd-sysv,udev,dbus,openssh-server,nix-bin,libdbi-perl,linux-image-cloud-amd64
include="$include,iproute2,cloud-init,python3-cffi-backend"
mkdir -p "$cache/debs" # downloaded .debs, kept across builds
log "debootstrap bookworm from $mirror (a minute or two; log: $work/debootstrap.log)"
# In its own process group (setsid), in the background: a signal to this
# script then stops it and everything it started (see cleanup).
setsid -w debootstrap --variant=minbase --include="$include" --cache-dir="$cache/debs" \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 </dev/null &
child=$!
rc=0
wait "$child" || rc=$?
child=""
if [ "$rc" -ne 0 ]; then
  tail -n 30 "$work/debootstrap.log" >&2
  cp "$root/debootstrap/debootstrap.log" "$cache/debootstrap-failed.log" 2>/dev/null &&
    log "dpkg's side of it: $cache/debootstrap-failed.log"
  die "debootstrap failed"
fi
log "debootstrap done after $((SECONDS - started))s"

# --- configuration -------------------------------------------------------------

# Identity comes from cloud-init at boot: no hostname, machine-id or SSH keys
# of the build machine or of the build.
echo localhost >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
: >"$root/etc/machine-id" # empty: systemd derives one from the domain's UUID
rm -f "$root/var/lib/dbus/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
# root: locked password (no password login anywhere), key login over SSH.
sed -i 's/^root:[^:]*:/root:*:/' "$root/etc/shadow"

cat >"$root/etc/fstab" <<'EOF'
# The whole virtio disk is the root filesystem (no partition table).
/dev/vda  /  ext4  rw,errors=remount-ro  0  0
EOF

# Networking: systemd-networkd, DHCPv4 on the (single) NIC.
cat >"$root/etc/systemd/network/10-prov-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
systemctl --root="$root" enable systemd-networkd.service >/dev/null 2>&1
# Boot-time work these throwaway VMs do not need (a single TCG vCPU does all of
# it before SSH is up): timers, pseudo filesystems, module loads, and KVM
# modules, which udev loads because <cpu mode='maximum'/> shows SVM/VMX.
systemctl --root="$root" disable e2scrub_reap.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
systemctl --root="$root" mask systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-fs-fuse-connections.mount \
  sys-kernel-config.mount dev-hugepages.mount systemd-pstore.service getty-static.service \
  modprobe@dm_mod.service modprobe@efi_pstore.service modprobe@fuse.service \
  modprobe@loop.service modprobe@configfs.service modprobe@drm.service >/dev/null 2>&1
cat >"$root/etc/modprobe.d/prov.conf" <<'EOF'
blacklist kvm
blacklist kvm_amd
blacklist kvm_intel
blacklist powernow_k8
blacklist pcspkr
EOF

# SSH: root with keys only. Host keys come from cloud-init (ssh_keys in the
# seed), which runs before ssh.service (cloud-init.service has
# Before=sshd.service, ssh.service's alias); the drop-in makes the order
# explicit and, should no key have been written at all, makes an ed25519 key
# before Debian's `sshd -t` check (which fails without host keys), so that sshd
# still starts.
cat >"$root/etc/ssh/sshd_config.d/prov.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat >"$root/etc/systemd/system/ssh.service.d/prov.conf" <<'EOF'
[Unit]
After=cloud-init.service

[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
EOF

# cloud-init is always on: its systemd generator need not run ds-identify (a
# long shell script probing DMI and block devices) at every boot.
echo 'policy: enabled' >"$root/etc/cloud/ds-identify.cfg"

# cloud-init's local stage (cloud-init-local.service) stays on, as on real
# cloud images: it is the stage that compares the seed's instance-id with the
# cached one. Without it the network stage trusts its cache forever, and a VM
# never takes the new seed prov writes to give it new authorized keys.

# No default user ("debian"): Debian's cloud.cfg asks for one with
# `users: [default]`; without a users key there is none ("users: []" fails
# cloud-init's schema check, "users: {}" is deprecated). Keys go to root.
sed -i -e '/^users:$/{N;s/^users:\n *- default$/# users: [default]  (removed by prov: no default user)/}' \
  "$root/etc/cloud/cloud.cfg"
if grep -q '^users:' "$root/etc/cloud/cloud.cfg"; then die "could not drop the default user from cloud.cfg"; fi

# cloud-init: NoCloud only, no network configuration (systemd-networkd above
# does it), and only the modules prov needs (each one costs time under TCG).
cat >"$root/etc/cloud/cloud.cfg.d/90-prov.cfg" <<'EOF'
# Written by prov scripts/libvirt-image.sh.
datasource_list: [NoCloud, None]
network: {config: disabled}
disable_root: false
# Host keys: those of the seed (ssh_keys); only a missing ed25519 key is made.
ssh_deletekeys: true
ssh_genkeytypes: [ed25519]
preserve_hostname: false
resize_rootfs: true
cloud_init_modules:
  - seed_random
  - bootcmd
  - write-files
  - resizefs
  - set_hostname
  - update_hostname
  - update_etc_hosts
  - users-groups
  - ssh
cloud_config_modules:
  - runcmd
cloud_final_modules:
  - scripts-per-once
  - scripts-per-boot
  - scripts-per-instance
  - scripts-user
  - write-files-deferred
  - ssh-authkey-fingerprints
  - keys-to-console
  - final-message
EOF

# Nix: single-user and offline. root owns /nix and uses the store directly
# (no nix-daemon, no build users, no sandbox, no binary cache).
mkdir -p "$root/etc/nix" "$root/nix/store" "$root/nix/var/nix"
cat >"$root/etc/nix/nix.conf" <<'EOF'
build-users-group =
sandbox = false
substituters =
experimental-features = nix-command
EOF

# Smaller image: no package lists, downloaded packages, logs or documentation.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
  "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log \
  "$root"/var/log/apt/* "$root/var/cache/debconf"/*-old \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

# A small initrd: the root filesystem (ext4) is built into the kernel, only
# virtio's PCI and block drivers are needed to find /dev/vda. (MODULES=most
# makes udev load IDE, SCSI and more in the initrd: slower under TCG.)
echo 'MODULES=list' >"$root/etc/initramfs-tools/conf.d/prov.conf"
printf '%s\n' virtio_pci virtio_blk >>"$root/etc/initramfs-tools/modules"
if ! chroot "$root" update-initramfs -u -k all >"$work/initramfs.log" 2>&1; then
  cat "$work/initramfs.log" >&2
  die "update-initramfs failed"
fi

# --- kernel, initrd, disk ------------------------------------------------------

kernel="$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)"
initrd="$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort | tail -n 1)"
{ [ -n "$kernel" ] && [ -n "$initrd" ]; } || die "no kernel or initrd in $root/boot"
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"

log "making the $disk_size ext4 filesystem"
truncate -s "$disk_size" "$work/disk.raw"
mkfs.ext4 -q -F -L prov-root -d "$root" "$work/disk.raw"
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/$name.qcow2"
rm -f "$work/disk.raw"

# --- into place ----------------------------------------------------------------

mkdir "$work/out"
mv "$work/$name.qcow2" "$work/vmlinuz" "$work/initrd.img" "$work/out/"
chmod 0644 "$work/out"/*
rm -rf "$out" # an incomplete directory (cached() said no)
mv -T "$work/out" "$out"
# Images of earlier versions of this script, unused for a day.
find "$cache" -mindepth 1 -maxdepth 1 -type d -name "$name-*" ! -path "$out" -mmin +1440 |
  while IFS= read -r old; do
    log "removing old image $old"
    rm -rf "$old"
  done
log "built $out in $((SECONDS - started))s ($(du -sh "$out/$name.qcow2" | cut -f1) qcow2)"
emit
