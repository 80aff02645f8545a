#!/bin/sh
# prov's activation helper, run on the target host, detached from the SSH
# session (setsid) so that a dropped connection cannot stop it halfway.
#
#   activate.sh run DIR SYSTEM GOAL CONFIRM_SECONDS
#     Sets the system profile (switch, boot), runs SYSTEM/bin/switch-to-configuration GOAL,
#     then waits for prov to confirm by deleting DIR/canary over a new SSH
#     connection. Unconfirmed after CONFIRM_SECONDS (0: don't wait), or when
#     activation fails, it rolls back to the previous generation.
#   activate.sh rollback DIR
#     Rolls back what `run` did in DIR (after a failed health check).
#
# Progress is left in DIR: previous, generation, activated (exit status of
# switch-to-configuration), result (confirmed | rolled-back | failed-rolled-back),
# log.
set -u
profile=/nix/var/nix/profiles/system
mode=$1
dir=$2
mkdir -p "$dir"
exec >>"$dir/log" 2>&1

generation_of() {
  # system-12-link -> 12
  link=$(readlink "$profile" 2>/dev/null) || return 0
  link=${link#system-}
  echo "${link%-link}"
}

rollback() {
  goal=$(cat "$dir/goal")
  previous=$(cat "$dir/previous")
  echo "rolling back to ${previous:-nothing}"
  case $goal in
    switch|boot)
      new=$(cat "$dir/generation" 2>/dev/null || true)
      if [ -n "$previous" ]; then
        nix-env -p "$profile" --rollback
        [ -n "$new" ] && nix-env -p "$profile" --delete-generations "$new"
      fi
      ;;
  esac
  if [ -n "$previous" ] && [ -x "$previous/bin/switch-to-configuration" ]; then
    "$previous/bin/switch-to-configuration" "$goal"
  fi
}

case $mode in
  run)
    system=$3
    goal=$4
    confirm=$5
    echo "$goal" >"$dir/goal"
    readlink -f "$profile" >"$dir/previous" 2>/dev/null || : >"$dir/previous"
    case $goal in
      switch|boot)
        nix-env -p "$profile" --set "$system" || { echo failed-profile >"$dir/result"; exit 1; }
        generation_of >"$dir/generation"
        ;;
    esac
    [ "$confirm" -gt 0 ] && : >"$dir/canary"
    "$system/bin/switch-to-configuration" "$goal"
    status=$?
    echo "$status" >"$dir/activated"
    if [ "$status" -ne 0 ]; then
      [ "$confirm" -gt 0 ] && rollback
      echo failed-rolled-back >"$dir/result"
      exit 1
    fi
    if [ "$confirm" -gt 0 ]; then
      ticks=0
      while [ -e "$dir/canary" ] && [ "$ticks" -lt $((confirm * 5)) ]; do
        sleep 0.2
        ticks=$((ticks + 1))
      done
      if [ -e "$dir/canary" ]; then
        rm -f "$dir/canary"
        rollback
        echo rolled-back >"$dir/result"
        exit 1
      fi
    fi
    echo confirmed >"$dir/result"
    ;;
  rollback)
    rollback
    echo rolled-back >"$dir/result"
    ;;
  *)
    echo "usage: activate.sh run DIR SYSTEM GOAL CONFIRM_SECONDS | rollback DIR" >&2
    exit 2
    ;;
esac
