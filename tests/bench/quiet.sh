#!/usr/bin/env bash
# Runs a command while every process at nice 19 is kept stopped (SIGSTOP, checked every
# 0.3 s so that new ones are caught too), then resumes them all (SIGCONT): on a shared
# machine, background work started with `nice -n 19` (builds, simulator sweeps) still takes
# the idle moments of a latency-bound benchmark, and its disk writes slow every fsync.
# Usage: tests/bench/quiet.sh COMMAND [ARGS...]
# Exits with the command's status. Processes of other users are not touched unless run as
# root.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
niced() { ps -eo pid=,ni=,stat= | awk -v me=$$ '$2 == 19 && $1 != me { print $1, $3 }'; }
stopper() {
  while true; do
    pids=$(niced | awk '$2 !~ /T/ { print $1 }')
    [ -n "$pids" ] && kill -STOP $pids 2>/dev/null
    sleep 0.3
  done
}
resume() {
  kill "$STOPPER" 2>/dev/null
  wait "$STOPPER" 2>/dev/null
  pids=$(niced | awk '{ print $1 }')
  [ -n "$pids" ] && kill -CONT $pids 2>/dev/null
}
stopper &
STOPPER=$!
trap resume EXIT INT TERM
sleep 3 # let the stopped work's dirty pages start draining
"$@"
