#!/usr/bin/env bash
# Prepares this Debian 12 machine for prov's libvirt tests, idempotently:
#   - Debian packages PROV_PKGS_BUILD and PROV_PKGS_LIBVIRT of
#     scripts/lib/requirements.sh: libvirt (daemon, clients, QEMU driver,
#     headers for the `virt` crate), pkg-config, QEMU 7.2, debootstrap (builds
#     the guest image, see libvirt-image.sh), genisoimage and xorriso
#   - the directories Debian's libvirt-daemon-system would have made
#     (PROV_LIBVIRT_DIRS: /var/log/libvirt/qemu and the rest)
#   - the libvirt-qemu user and group exist (libvirtd's QEMU driver does not
#     start without them), and QEMU guests run as root (/etc/libvirt/qemu.conf)
#     unless qemu.conf already names a user
#   - virtlogd and libvirtd running (started with -d when there is no systemd
#     to do it; `virsh start` fails without virtlogd)
#   - a directory storage pool, $PROV_LIBVIRT_POOL (default prov-test), in
#     $PROV_LIBVIRT_POOL_DIR (default /var/lib/prov-test/pool), defined and active
# Guests use TCG (<domain type='qemu'>): KVM is not needed.
# Every wait is bounded. Prints the environment to export on stdout.
set -euo pipefail

uri="qemu:///system"
pool="${PROV_LIBVIRT_POOL:-prov-test}"
pool_dir="${PROV_LIBVIRT_POOL_DIR:-/var/lib/prov-test/pool}"
daemon_wait="${PROV_LIBVIRT_DAEMON_WAIT:-30}" # seconds

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# virsh against the system daemon, never hanging for long.
vsh() { timeout 20 virsh -q -c "$uri" "$@"; }

# --- packages and directories ---------------------------------------------

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib/requirements.sh
. "$here/lib/requirements.sh"
prov_install_pkgs "${PROV_PKGS_BUILD[@]}" "${PROV_PKGS_LIBVIRT[@]}"

# What libvirt-daemon-system would have made: without /var/log/libvirt/qemu
# `virsh start` fails ("Unable to open file: …/qemu/NAME-console.log").
missing_dirs=()
for d in "${PROV_LIBVIRT_DIRS[@]}"; do [ -d "$d" ] || missing_dirs+=("$d"); done
if [ "${#missing_dirs[@]}" -gt 0 ]; then
  is_root || die "missing directories: ${missing_dirs[*]} (run as root)"
  log "creating ${missing_dirs[*]}"
  mkdir -p "${missing_dirs[@]}"
fi

# --- QEMU's user ------------------------------------------------------------

# Debian builds libvirt to run QEMU as libvirt-qemu:libvirt-qemu, and libvirtd's
# QEMU driver refuses to initialize when that user does not exist, even with
# another user in qemu.conf ("Failed to parse user 'libvirt-qemu'"). The user
# comes with libvirt-daemon-system, which we do not install (it wants systemd):
# create it. QEMU itself runs as root, so that it can read kernels and images
# anywhere (e.g. under /root/.cache), unless qemu.conf already names a user.
qemu_conf=/etc/libvirt/qemu.conf
conf_changed=0
if ! getent group libvirt-qemu >/dev/null; then
  is_root || die "group libvirt-qemu is missing (run as root)"
  log "creating system group libvirt-qemu (libvirtd needs it to exist)"
  groupadd --system libvirt-qemu
  conf_changed=1
fi
if ! getent passwd libvirt-qemu >/dev/null; then
  is_root || die "user libvirt-qemu is missing (run as root)"
  log "creating system user libvirt-qemu (libvirtd needs it to exist)"
  useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt \
    --no-create-home --shell /usr/sbin/nologin libvirt-qemu
  conf_changed=1
fi
if ! grep -Eq '^[[:space:]]*user[[:space:]]*=' "$qemu_conf" 2>/dev/null; then
  is_root || die "$qemu_conf must set user = \"root\" (run as root)"
  log "QEMU runs as root ($qemu_conf)"
  mkdir -p /etc/libvirt
  had_group=0
  grep -Eq '^[[:space:]]*group[[:space:]]*=' "$qemu_conf" 2>/dev/null && had_group=1
  {
    echo '# Written by prov scripts/libvirt-setup.sh: QEMU guests run as root.'
    echo 'user = "root"'
    [ "$had_group" = 1 ] || echo 'group = "root"'
  } >>"$qemu_conf"
  conf_changed=1
else
  log "$qemu_conf already names QEMU's user"
fi

# --- daemons ----------------------------------------------------------------

daemon_ok() { timeout 10 virsh -q -c "$uri" version >/dev/null 2>&1; }

pid_alive() { # pidfile
  local pid
  [ -s "$1" ] || return 1
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    ! grep -q '^[^)]*) Z' "/proc/$pid/stat" 2>/dev/null
}

if [ "$conf_changed" = 1 ] && daemon_ok && pid_alive /run/libvirtd.pid; then
  # A running libvirtd read the old qemu.conf: restart it (bounded).
  pid="$(cat /run/libvirtd.pid)"
  log "restarting libvirtd (pid $pid) to apply $qemu_conf"
  kill "$pid"
  for _ in $(seq 1 $((daemon_wait * 5))); do
    pid_alive /run/libvirtd.pid || break
    sleep 0.2
  done
  pid_alive /run/libvirtd.pid && die "libvirtd (pid $pid) did not stop within ${daemon_wait}s"
fi

if ! pid_alive /run/virtlogd.pid; then
  is_root || die "virtlogd is not running (run as root)"
  log "starting virtlogd"
  virtlogd -d
else
  log "virtlogd already running"
fi

if daemon_ok; then
  log "libvirtd already answers on $uri"
else
  is_root || die "libvirtd does not answer on $uri (run as root)"
  log "starting libvirtd"
  libvirtd -d
  ok=0
  for _ in $(seq 1 "$daemon_wait"); do
    if [ -S /run/libvirt/libvirt-sock ] && daemon_ok; then ok=1; break; fi
    sleep 1
  done
  [ "$ok" = 1 ] || die "libvirtd did not answer on $uri within ${daemon_wait}s"
  log "libvirtd answers on $uri"
fi

# --- storage pool -----------------------------------------------------------

if ! vsh pool-info "$pool" >/dev/null 2>&1; then
  log "defining directory pool $pool in $pool_dir"
  vsh pool-define-as "$pool" dir --target "$pool_dir" >/dev/null
  vsh pool-build "$pool" >/dev/null
  vsh pool-autostart "$pool" >/dev/null || true
else
  xml="$(vsh pool-dumpxml "$pool")"
  target="$(sed -n 's:.*<path>\(.*\)</path>.*:\1:p' <<<"$xml")"
  [ "$target" = "$pool_dir" ] ||
    log "note: pool $pool already exists with target $target (not $pool_dir); using it"
fi
# (no `virsh | grep -q`: with pipefail, grep quitting early fails the pipeline)
info="$(vsh pool-info "$pool")"
if ! grep -Eq '^State:[[:space:]]+running' <<<"$info"; then
  log "starting pool $pool"
  # The directory may have been removed behind libvirt's back.
  vsh pool-build "$pool" >/dev/null 2>&1 || true
  vsh pool-start "$pool" >/dev/null
else
  log "pool $pool is active"
  vsh pool-refresh "$pool" >/dev/null
fi

echo "export PROV_LIBVIRT_URI=$uri"
echo "export PROV_LIBVIRT_POOL=$pool"
