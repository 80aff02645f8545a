# shellcheck shell=bash
# What prov's scripts install on a machine and what they create there: the
# one list that the set-up scripts install from and scripts/fresh-check.sh
# removes, so the two cannot drift. Sourced, never run.
#
# Packages are Debian package names, optionally NAME=VERSION-GLOB.

# What a machine of the kind prov is developed on (Debian 12 + Rust) already
# has, and the scripts need: installed when missing, never purged by
# fresh-check (it clones with git; cargo links with gcc).
PROV_PKGS_BASE=(ca-certificates curl git gcc libc6-dev python3 python3-venv
  iproute2 util-linux procps)

# Building prov with its default features: the `virt` crate (libvirt
# provider) finds libvirt through pkg-config.
PROV_PKGS_BUILD=(pkg-config libvirt-dev)

# Running the quickstart and the deploy tests: Nix builds and copies closures,
# sshd runs inside each local host, the tests use OpenSSH's ssh and
# ssh-keygen as peers (prov makes its keys itself), age decrypts what prov
# encrypts (interop tests).
PROV_PKGS_HOSTS=(nix-bin openssh-server openssh-client age)

# The Kubernetes tests (src/kube): real etcd serving prov's certificates
# with client-certificate auth, etcdctl as its client, openssl verifying
# every chain. Only etcd's binaries are used: the tests start it on a free
# loopback port themselves.
PROV_PKGS_TEST=(etcd-server etcd-client openssl)
# kubectl for the same tests, installed only where the machine has none (the
# machines prov is developed on ship Google's `kubectl` package, which owns
# /usr/bin/kubectl and would clash with Debian's).
PROV_PKGS_KUBECTL=(kubernetes-client)

# The libvirt tests: libvirtd + the QEMU driver without systemd
# (libvirt-daemon-system wants it), QEMU 7.2 (qemu-utils pinned: the
# backports 10.x conflicts with qemu-system-x86 7.2), debootstrap for the
# guest image, two ISO readers that check prov's cloud-init seeds.
PROV_PKGS_LIBVIRT=(libvirt-daemon libvirt-clients libvirt-daemon-driver-qemu
  qemu-system-x86 'qemu-utils=1:7.2*' debootstrap genisoimage xorriso)

# Python tools for the tests (moto: local EC2 and S3; the AWS CLI reads
# what prov made), in a virtualenv under the tools directory.
PROV_PIP_TEST=('moto[server]>=5,<6' 'awscli>=1.33')

# Directories libvirtd, virtlogd and QEMU expect, as Debian's
# libvirt-daemon-system package would have made them (we do not install it).
PROV_LIBVIRT_DIRS=(/var/log/libvirt /var/log/libvirt/qemu /var/log/libvirt/lxc
  /var/lib/libvirt /var/lib/libvirt/boot /var/lib/libvirt/images
  /var/lib/libvirt/qemu /var/lib/libvirt/qemu/channel
  /var/lib/libvirt/qemu/channel/target /var/cache/libvirt
  /var/cache/libvirt/qemu /etc/libvirt/qemu/networks/autostart)

prov_tools_dir() { printf '%s\n' "${PROV_TOOLS_DIR:-$HOME/.cache/prov-tools}"; }

# Everything the scripts (and what they run: nix, cargo, libvirtd, local
# hosts) create outside a clone. fresh-check removes each of them.
prov_created_paths() {
  printf '%s\n' \
    /etc/nix/nix.conf \
    /nix \
    /etc/libvirt \
    "${PROV_LIBVIRT_DIRS[@]}" \
    /run/libvirt \
    "${PROV_LOCAL_ROOT:-/var/lib/prov/local}" \
    /var/lib/prov \
    "${PROV_LIBVIRT_POOL_DIR:-/var/lib/prov-test/pool}" \
    /var/lib/prov-test \
    "$(prov_tools_dir)" \
    "$HOME/.cache/prov-target" \
    "$HOME/.cache/prov-fuzz-target" \
    "$HOME/.cargo/bin/cargo-fuzz" \
    "$HOME/.cargo/bin/cargo-deny" \
    "$HOME/.cargo/advisory-dbs" \
    "$HOME/.cache/nix" \
    "$HOME/.nix-defexpr" \
    "$HOME/.nix-profile" \
    "$HOME/.nix-channels" \
    "$HOME/.cargo/registry" \
    "$HOME/.cargo/git" \
    "$HOME/.cargo/.global-cache" \
    "$HOME/.cargo/.package-cache" \
    "$HOME/.cargo/.package-cache-mutate" \
    /run/sshd
}

# Users and groups the scripts create (libvirtd's QEMU driver needs them).
PROV_CREATED_USERS=(libvirt-qemu)
PROV_CREATED_GROUPS=(libvirt-qemu)

# Pidfiles of the daemons the scripts start and leave running.
prov_daemon_pidfiles() {
  local tools root
  tools="$(prov_tools_dir)"
  root="${PROV_LOCAL_ROOT:-/var/lib/prov/local}"
  printf '%s\n' /run/libvirtd.pid /run/virtlogd.pid
  # QEMU guests libvirtd started (a test that died may leave one behind).
  compgen -G '/run/libvirt/qemu/*.pid' || true
  compgen -G "$tools/moto-*.pid" || true
  # Local hosts: the outer process and the namespace's init (sshd's parent).
  compgen -G "$root/*/*/pid" || true
  compgen -G "$root/*/*/init.pid" || true
}

# Installed (and, when a version glob is given, at a matching version)?
prov_have_pkg() { # NAME [VERSION-GLOB]
  local status version
  status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
  [ "$status" = "install ok installed" ] || return 1
  [ -z "${2:-}" ] && return 0
  version="$(dpkg-query -W -f='${Version}' "$1")"
  # shellcheck disable=SC2254 # $2 is a glob on purpose
  case "$version" in $2) return 0 ;; *) return 1 ;; esac
}

# The package names of a list, without version globs.
prov_pkg_names() {
  local p
  for p in "$@"; do printf '%s\n' "${p%%=*}"; done
}

# Installs the packages of the lists given that are missing (or at another
# version than pinned), as root; says which. Fails without root.
prov_install_pkgs() { # PACKAGE...
  local p name glob missing=()
  for p in "$@"; do
    name="${p%%=*}"
    glob=""
    [ "$name" != "$p" ] && glob="${p#*=}"
    prov_have_pkg "$name" "$glob" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    printf 'setup: missing Debian packages: %s (run as root, or install them)\n' "${missing[*]}" >&2
    return 1
  fi
  printf 'setup: installing %s\n' "${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends --allow-downgrades \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >/dev/null
}
