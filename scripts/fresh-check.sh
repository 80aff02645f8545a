#!/usr/bin/env bash
# Proves the README's commands work on a brand-new machine: makes this
# machine as new as it came, then runs the README's first command (with
# --suite, the second too) from a fresh clone of main, exactly as written.
#
#   scripts/fresh-check.sh --yes [--suite] [--keep]
#
# "As new" means, from the one list in scripts/lib/requirements.sh that the
# set-up scripts install from:
#   - every daemon the scripts start (libvirtd, virtlogd, QEMU guests, moto,
#     local hosts) is stopped by its pid;
#   - every package they install is purged (apt-get purge, then autoremove),
#     except the base tools a machine of this kind comes with (git, gcc, …;
#     PROV_PKGS_BASE) and any package the machine's own packages depend on;
#   - every directory, file and cache they create is removed (/etc/nix/nix.conf,
#     /nix, /var/log/libvirt, the libvirt pool and image cache, local host
#     roots, ~/.cache/prov-tools, build target directories, cargo's download
#     cache), and the users and groups they add.
# It uninstalls things, so it refuses to run without --yes, and says what it
# would remove. Each step prints its wall time; a failing step ends the run
# with exit 1 and its last lines. --keep keeps the clone (in /var/tmp) afterwards.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=lib/requirements.sh
. "$here/lib/requirements.sh"

yes=0 suite=0 keep=0
for arg in "$@"; do
  case "$arg" in
    --yes) yes=1 ;;
    --suite) suite=1 ;;
    --keep) keep=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fresh-check: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'fresh-check: %s\n' "$*"; }

# --- what would go ------------------------------------------------------------

in_list() { # WORD LIST...
  local w="$1" x
  shift
  for x in "$@"; do [ "$x" = "$w" ] && return 0; done
  return 1
}

# Packages the scripts install that are installed now, minus the base tools.
candidates=()
base_names=()
mapfile -t base_names < <(prov_pkg_names "${PROV_PKGS_BASE[@]}")
while read -r name; do
  in_list "$name" "${base_names[@]}" && continue
  in_list "$name" "${candidates[@]}" && continue
  prov_have_pkg "$name" && candidates+=("$name")
done < <(prov_pkg_names "${PROV_PKGS_BUILD[@]}" "${PROV_PKGS_HOSTS[@]}" "${PROV_PKGS_TEST[@]}" "${PROV_PKGS_KUBECTL[@]}" "${PROV_PKGS_LIBVIRT[@]}")

# Of those, the ones whose purge removes nothing but our own packages and
# what they pulled in (apt would otherwise take the machine's packages too).
to_purge=()
kept=()
for name in "${candidates[@]}"; do
  # apt refuses some purges outright (the machine's own packages need the
  # package, and apt cannot resolve without them): such a package stays.
  if ! simulated="$(apt-get -s purge "$name" 2>/dev/null)"; then
    kept+=("$name (apt cannot purge it without breaking the machine's packages)")
    continue
  fi
  mapfile -t removes < <(sed -n 's/^Purg \([^ :]*\).*/\1/p' <<<"$simulated")
  extra=()
  for r in "${removes[@]}"; do
    in_list "$r" "${candidates[@]}" && continue
    # A dependency apt installed automatically goes with its package.
    apt-mark showauto "$r" 2>/dev/null | grep -qx "$r" && continue
    extra+=("$r")
  done
  if [ "${#extra[@]}" -eq 0 ]; then
    to_purge+=("$name")
  else
    kept+=("$name (the machine's ${extra[*]} depend on it)")
  fi
done

paths=()
while read -r p; do
  [ -n "$p" ] && { [ -e "$p" ] || [ -L "$p" ]; } && paths+=("$p")
done < <(prov_created_paths)

pidfiles=()
while read -r f; do
  [ -n "$f" ] && [ -s "$f" ] && pidfiles+=("$f")
done < <(prov_daemon_pidfiles)

users=() groups=()
for u in "${PROV_CREATED_USERS[@]}"; do getent passwd "$u" >/dev/null && users+=("$u"); done
for g in "${PROV_CREATED_GROUPS[@]}"; do getent group "$g" >/dev/null && groups+=("$g"); done

readme_commands() {
  # The first ```sh block of the README, one command per line, comments cut.
  awk '/^```sh$/ { inside = 1; next } inside && /^```/ { exit } inside' "$repo/README.md" |
    sed 's/[[:space:]]#.*$//; s/[[:space:]]*$//' | grep -v '^$'
}
mapfile -t commands < <(readme_commands)
[ "${#commands[@]}" -ge 2 ] || { say "the README's first sh block holds fewer than two commands"; exit 1; }
run_commands=("${commands[0]}")
[ "$suite" = 1 ] && run_commands+=("${commands[1]}")

list() { # TITLE ITEM...
  local title="$1"
  shift
  if [ "$#" -eq 0 ]; then say "$title: none"; return; fi
  say "$title:"
  printf '    %s\n' "$@"
}

list "daemons to stop (pidfiles)" "${pidfiles[@]}"
list "packages to purge" "${to_purge[@]}"
list "packages kept" "${kept[@]}"
list "paths to remove" "${paths[@]}"
list "users and groups to delete" "${users[@]/#/user }" "${groups[@]/#/group }"
list "then, from a fresh clone of main of $repo" "${run_commands[@]}"

if [ "$yes" != 1 ]; then
  say "this uninstalls and deletes the above; run again with --yes to do it"
  exit 2
fi
[ "$(id -u)" -eq 0 ] || { say "must run as root (it purges packages)"; exit 1; }

# --- steps ----------------------------------------------------------------------

# Not under /tmp: tests scan /tmp for leaked plaintext, and the clone's
# build output would be gigabytes of it.
mkdir -p /var/tmp
logs="$(mktemp -d /var/tmp/prov-fresh-check.XXXXXX)"
clone="$logs/prov"
step_no=0
total_start="$(date +%s.%N)"

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }'; }

# step NAME LIVE COMMAND...: runs COMMAND, its output to a log (and to the
# terminal too when LIVE=1), then prints the wall time; on failure prints
# the log's last lines and exits 1.
step() {
  local name="$1" live="$2" start log rc
  shift 2
  step_no=$((step_no + 1))
  log="$logs/$(printf '%02d' "$step_no")-$(printf '%s' "$name" | tr -c 'A-Za-z0-9.' '-').log"
  say "[$step_no] $name"
  start="$(date +%s.%N)"
  # In a subshell with errexit on: a step fails at its first failing
  # command (`set +e` around a function would let it go on and end in
  # success: stop 28's purge step said ok when apt had purged nothing).
  set +e
  if [ "$live" = 1 ]; then
    (set -e; "$@") 2>&1 | tee "$log"
    rc="${PIPESTATUS[0]}"
  else
    (set -e; "$@") >"$log" 2>&1
    rc=$?
  fi
  set -e
  if [ "$rc" -ne 0 ]; then
    say "[$step_no] $name FAILED (exit $rc) after $(elapsed "$start"); last lines of $log:"
    tail -n 40 "$log" | sed 's/^/    /'
    exit 1
  fi
  say "[$step_no] $name: ok in $(elapsed "$start")"
}

stop_daemons() {
  local f pid alive=()
  for f in "${pidfiles[@]}"; do
    pid="$(tr -dc '0-9' <"$f" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
    echo "stopping pid $pid ($f)"
    kill -TERM "$pid" 2>/dev/null || true
    alive+=("$pid")
  done
  # Bounded: 10 s for all of them, then SIGKILL.
  for _ in $(seq 1 50); do
    local left=()
    for pid in "${alive[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    alive=("${left[@]}")
    [ "${#alive[@]}" -eq 0 ] && return 0
    sleep 0.2
  done
  echo "killing ${alive[*]} (still running after 10 s)"
  kill -KILL "${alive[@]}" 2>/dev/null || true
}

purge_packages() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "${#to_purge[@]}" -gt 0 ]; then
    apt-get purge -y "${to_purge[@]}"
  fi
  apt-get autoremove --purge -y
}

remove_paths() {
  local p m
  for p in "${paths[@]}"; do
    # Mounts a local host or QEMU left below the path go first.
    findmnt -rn -o TARGET | awk -v p="$p" 'index($0, p "/") == 1 || $0 == p' | sort -r |
      while read -r m; do echo "unmounting $m"; umount -l "$m" || true; done
    echo "removing $p"
    rm -rf --one-file-system "$p"
  done
  for u in "${users[@]}"; do echo "deleting user $u"; userdel "$u"; done
  for g in "${groups[@]}"; do
    getent group "$g" >/dev/null || continue
    echo "deleting group $g"
    groupdel "$g"
  done
}

clone_main() {
  git clone --quiet --branch main "file://$repo" "$clone"
  git -C "$clone" log -1 --format='clone of main at %h: %s'
}

# A new user's shell: the machine's PATH without any directory of prov's
# tools, none of prov's or cargo's variables.
clean_path="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v "^$(prov_tools_dir)" | paste -sd: -)"
run_readme_command() { # COMMAND
  cd "$clone"
  env -i HOME="$HOME" USER="${USER:-root}" LOGNAME="${LOGNAME:-root}" SHELL=/bin/bash \
    TERM="${TERM:-dumb}" LANG=C.UTF-8 PATH="$clean_path" bash -c "$1"
}

step "stop daemons" 0 stop_daemons
step "purge packages" 0 purge_packages
step "remove paths" 0 remove_paths
step "fresh clone" 1 clone_main
for command in "${run_commands[@]}"; do
  step "$command" 1 run_readme_command "$command"
done

if [ "$keep" = 1 ]; then
  say "the clone is kept in $clone"
else
  rm -rf "$clone"
fi
say "all steps passed in $(elapsed "$total_start") (logs in $logs)"
