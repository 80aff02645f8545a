#!/bin/sh
# prov's activation helper, run on the target host, detached from the SSH
# session (setsid) so that a dropped connection cannot stop it halfway.
#
#   activate.sh run DIR SYSTEM GOAL CONFIRM_SECONDS
#     Sets the system profile (switch, boot), runs SYSTEM/bin/switch-to-configuration GOAL,
#     then waits CONFIRM_SECONDS (wall clock), counted from the end of activation, for prov
#     to confirm by deleting DIR/canary over a new SSH connection. Unconfirmed
#     (0: don't wait), or when activation fails, it rolls back to the previous
#     generation; with no previous generation it removes the new one.
#   activate.sh wait DIR SECONDS
#     Blocks until activation has finished (DIR/activated or DIR/result
#     exists), at most SECONDS; prints `activated STATUS` or `result RESULT`.
#   activate.sh result DIR SECONDS
#     Blocks until DIR/result exists, at most SECONDS; prints it (or nothing).
#   activate.sh rollback DIR
#     Rolls back what `run` did in DIR (after a failed health check).
#
# Progress is left in DIR: goal, previous (the system active before; empty
# when there was none), generation, activated (exit status of
# switch-to-configuration), result (confirmed | rolled-back |
# failed-rolled-back | failed-profile), log. The host's deadline and prov's
# confirmation race on one atomic step: prov removes DIR/canary, the host
# renames it to DIR/expired; whichever succeeds decides the result.
set -u
profile=/nix/var/nix/profiles/system
mode=$1
dir=$2

generation_of() {
  # system-12-link -> 12
  link=$(readlink "$profile" 2>/dev/null) || return 0
  link=${link#system-}
  echo "${link%-link}"
}

rollback() {
  goal=$(cat "$dir/goal")
  previous=$(cat "$dir/previous")
  case $goal in
    switch|boot)
      new=$(cat "$dir/generation" 2>/dev/null || true)
      if [ -n "$previous" ]; then
        echo "rolling back to $previous"
        nix-env -p "$profile" --rollback
        [ -n "$new" ] && nix-env -p "$profile" --delete-generations "$new"
      else
        # A first deploy: nothing to go back to. The new generation goes, so
        # that nothing on the host claims the failed system is its own.
        echo "no previous system to return to; removing generation ${new:-?}"
        rm -f "$profile"
        [ -n "$new" ] && rm -f "$profile-$new-link"
      fi
      ;;
    *)
      if [ -n "$previous" ]; then echo "returning to $previous"; else echo "no previous system to return to"; fi
      ;;
  esac
  if [ -n "$previous" ] && [ -x "$previous/bin/switch-to-configuration" ]; then
    "$previous/bin/switch-to-configuration" "$goal"
  fi
}

# Sleeps in short steps while the command "$@" succeeds, for at most LIMIT
# seconds by the wall clock (a slow host, under emulation say, sleeps longer
# than asked, so counting steps would stretch every deadline). Waits at
# least LIMIT seconds; the step count bounds it if the clock jumps back.
wait_while() {
  limit=$1
  shift
  deadline=$(($(date +%s) + limit))
  ticks=0
  while "$@" && [ "$(date +%s)" -le "$deadline" ] && [ "$ticks" -lt $((limit * 50 + 50)) ]; do
    sleep 0.02
    ticks=$((ticks + 1))
  done
}

unfinished() {
  [ ! -e "$dir/result" ] && [ ! -e "$dir/activated" ]
}

# Writes RESULT atomically (prov may read it at any moment).
result() {
  echo "$1" >"$dir/result.tmp" && mv "$dir/result.tmp" "$dir/result"
}

case $mode in
  run)
    mkdir -p "$dir"
    exec >>"$dir/log" 2>&1
    system=$3
    goal=$4
    confirm=$5
    echo "$goal" >"$dir/goal"
    if [ -e "$profile" ]; then
      readlink -f "$profile" >"$dir/previous"
    else
      : >"$dir/previous"
    fi
    case $goal in
      switch|boot)
        if ! nix-env -p "$profile" --set "$system"; then
          echo "setting $profile to $system failed"
          result failed-profile
          exit 1
        fi
        generation_of >"$dir/generation"
        ;;
    esac
    [ "$confirm" -gt 0 ] && : >"$dir/canary"
    "$system/bin/switch-to-configuration" "$goal"
    status=$?
    echo "$status" >"$dir/activated"
    if [ "$status" -ne 0 ]; then
      rm -f "$dir/canary"
      [ "$confirm" -gt 0 ] && rollback
      result failed-rolled-back
      exit 1
    fi
    if [ "$confirm" -gt 0 ]; then
      wait_while "$confirm" [ -e "$dir/canary" ]
      if mv "$dir/canary" "$dir/expired" 2>/dev/null; then
        echo "not confirmed within ${confirm}s"
        rollback
        result rolled-back
        exit 1
      fi
    fi
    result confirmed
    ;;
  wait)
    wait_while "$3" unfinished
    if [ -e "$dir/result" ]; then
      echo "result $(cat "$dir/result")"
    elif [ -e "$dir/activated" ]; then
      echo "activated $(cat "$dir/activated")"
    else
      echo waiting
    fi
    ;;
  result)
    wait_while "$3" [ ! -e "$dir/result" ]
    cat "$dir/result" 2>/dev/null || true
    ;;
  rollback)
    exec >>"$dir/log" 2>&1
    rollback
    result rolled-back
    ;;
  *)
    echo "usage: activate.sh run DIR SYSTEM GOAL CONFIRM_SECONDS | wait DIR SECONDS | result DIR SECONDS | rollback DIR" >&2
    exit 2
    ;;
esac
