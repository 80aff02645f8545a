#!/bin/sh
# prov's activation helper, run on the target host, detached from the SSH
# session (setsid) so that a dropped connection cannot stop it halfway.
#
#   activate.sh start DIR SYSTEM GOAL CONFIRM_SECONDS
#     Prints `active` when the profile already points at SYSTEM (switch,
#     boot: nothing to do). Else takes DIR's locks and starts `run` detached
#     (it inherits them), and prints `started`.
#   activate.sh run DIR SYSTEM GOAL CONFIRM_SECONDS
#     Sets the system profile (switch, boot), runs SYSTEM/bin/switch-to-configuration GOAL,
#     then waits CONFIRM_SECONDS (wall clock), counted from the end of activation, for prov
#     to confirm by deleting DIR/canary over a new SSH connection. Unconfirmed
#     (0: don't wait), or when activation fails, it rolls back to the previous
#     generation; with no previous generation it removes the new one.
#   activate.sh wait DIR SECONDS
#     Blocks until activation has finished (DIR/activated or DIR/result
#     exists), at most SECONDS; prints `activated STATUS` or `result RESULT`.
#   activate.sh confirm DIR SECONDS
#     prov's confirmation, over a new connection: deletes DIR/canary and
#     prints `confirming` (or `closed` when the host had closed the window),
#     then waits at most SECONDS for the host's result and prints `result
#     RESULT` and `generation N`.
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
# renames it to DIR/expired; whichever succeeds decides the result. Only
# `run` (and `rollback`) write the result.
#
# Waiting is blocking, not polling, where flock(1) (util-linux, like setsid)
# is there: `run` holds DIR/activating.lock until activation has finished
# and DIR/deciding.lock until the result is written; waiters block on them.
# Without flock, waiters look every 20 ms.
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
    "$previous/bin/switch-to-configuration" "$goal" 7>&- 8>&- 9>&-
  fi
}

# Sleeps in short steps while the command "$@" succeeds, for at most LIMIT
# seconds by the wall clock (a slow host, under emulation say, sleeps longer
# than asked, so counting steps would stretch every deadline). Waits at
# least LIMIT seconds; the step count bounds it if the clock jumps back.
wait_while() {
  limit=$1
  shift
  "$@" || return 0
  deadline=$(($(date +%s) + limit))
  ticks=0
  while "$@" && [ "$(date +%s)" -le "$deadline" ] && [ "$ticks" -lt $((limit * 50 + 50)) ]; do
    sleep 0.02
    ticks=$((ticks + 1))
  done
}

# Waits until prov's confirmation wakes it (`confirm` writes to DIR/wake
# after removing the canary) or LIMIT seconds have passed by the wall clock
# (a timer writes `expired`), whichever comes first; the canary's rm or mv
# then decides. Without the pipe (mkfifo failed), or should reading it fail
# inside the window, it looks every 20 ms for the rest of the window.
await_confirmation() {
  limit=$1
  deadline=$(($(date +%s) + limit))
  if [ -p "$dir/wake" ]; then
    (
      steps=0
      while [ "$(date +%s)" -le "$deadline" ] && [ "$steps" -lt $((limit * 2 + 2)) ]; do
        sleep 0.5
        steps=$((steps + 1))
      done
      echo expired >&7
    ) 8>&- 9>&- &
    timer=$!
    while [ -e "$dir/canary" ] && read -r word <&7 && [ "$word" != expired ]; do :; done
    kill "$timer" 2>/dev/null
  fi
  [ -e "$dir/canary" ] || return 0
  remaining=$((deadline - $(date +%s)))
  if [ "$remaining" -gt 0 ]; then
    wait_while "$remaining" [ -e "$dir/canary" ]
  fi
  return 0
}

# Blocks until `run` lets go of DIR/LOCK, at most LIMIT seconds; returns at
# once when flock is missing or nobody holds the lock (the caller then
# looks at the files, waiting with wait_while for what is still missing).
wait_lock() {
  [ -e "$dir/$1" ] && command -v flock >/dev/null 2>&1 || return 0
  flock -s -w "$2" "$dir/$1" true 2>/dev/null || true
}

unfinished() {
  [ ! -e "$dir/result" ] && [ ! -e "$dir/activated" ]
}

# Blocks until the result is written, at most LIMIT seconds.
until_result() {
  wait_lock deciding.lock "$1"
  wait_while "$1" [ ! -e "$dir/result" ]
}

# Writes RESULT atomically (prov may read it at any moment).
result() {
  echo "$1" >"$dir/result.tmp" && mv "$dir/result.tmp" "$dir/result"
}

case $mode in
  start)
    system=$3
    goal=$4
    case $goal in
      switch|boot)
        if [ "$(readlink -f "$profile" 2>/dev/null)" = "$system" ]; then
          echo active
          exit 0
        fi
        ;;
    esac
    mkdir -p "$dir" || exit 1
    # Taken here, before `run` starts, so that a waiter coming right after
    # this returns finds them held; `run` inherits both. Not taken (no
    # flock): waiters look every 20 ms instead.
    exec 8>"$dir/deciding.lock" 9>"$dir/activating.lock"
    if command -v flock >/dev/null 2>&1; then
      flock -n 8 2>/dev/null
      flock -n 9 2>/dev/null
    fi
    setsid -f sh "$0" run "$dir" "$system" "$goal" "$5" </dev/null >/dev/null 2>&1 || exit 1
    echo started
    ;;
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
    if [ "$confirm" -gt 0 ]; then
      # Opened read-write before the canary exists: a wake-up written any
      # time after this is kept until it is read, and no open blocks.
      mkfifo "$dir/wake" && exec 7<>"$dir/wake"
      : >"$dir/canary"
    fi
    "$system/bin/switch-to-configuration" "$goal" 7>&- 8>&- 9>&-
    status=$?
    echo "$status" >"$dir/activated"
    # Lets waiters for the end of activation go: nothing else holds the
    # lock's descriptor (the children above had it closed).
    exec 9>&-
    if [ "$status" -ne 0 ]; then
      rm -f "$dir/canary"
      [ "$confirm" -gt 0 ] && rollback
      result failed-rolled-back
      exit 1
    fi
    if [ "$confirm" -gt 0 ]; then
      await_confirmation "$confirm"
      # The one atomic step that decides (prov's rm of the canary is the
      # other); skipped when the canary is already gone.
      if [ -e "$dir/canary" ] && mv "$dir/canary" "$dir/expired" 2>/dev/null; then
        echo "not confirmed within ${confirm}s"
        rollback
        result rolled-back
        exit 1
      fi
    fi
    result confirmed
    # Exiting lets waiters for the result go (the lock on 8 goes with it).
    ;;
  wait)
    wait_lock activating.lock "$3"
    wait_while "$3" unfinished
    if [ -e "$dir/result" ]; then
      echo "result $(cat "$dir/result")"
    elif [ -e "$dir/activated" ]; then
      echo "activated $(cat "$dir/activated")"
    else
      echo waiting
    fi
    ;;
  confirm)
    if rm "$dir/canary" 2>/dev/null; then
      echo confirming
      # Wakes `run` at once (read-write: never blocks, also when it is gone).
      [ -p "$dir/wake" ] && echo confirmed 1<>"$dir/wake"
    else
      echo closed
    fi
    until_result "$3"
    if [ -e "$dir/result" ] && read -r outcome <"$dir/result"; then
      echo "result $outcome"
    fi
    generation=
    [ -e "$dir/generation" ] && read -r generation <"$dir/generation"
    echo "generation $generation"
    ;;
  result)
    until_result "$3"
    cat "$dir/result" 2>/dev/null || true
    ;;
  rollback)
    exec >>"$dir/log" 2>&1
    rollback
    result rolled-back
    ;;
  *)
    echo "usage: activate.sh start|run DIR SYSTEM GOAL CONFIRM_SECONDS | wait|confirm|result DIR SECONDS | rollback DIR" >&2
    exit 2
    ;;
esac
