#!/usr/bin/env bash
# Two builds of raftd against each other, in turn, on the same workload: where each one's CPU
# goes, node by node (issue 18). For each round and build: a fresh 3-node cluster
# (`raftctl local up`), `raftctl bench` (Put of VALUE-byte values, 128 by default, to a random key out of
# 100,000, closed loop) for 10 s after 2 s of warm-up, and over 6 s in the middle of it the
# user and system CPU of each node (/proc/PID/stat fields 14 and 15) divided by the entries
# the leader committed meanwhile (its commit index, from `raftctl status`). Prints one line
# per run: ops/s over that window, the total CPU per write, the bench's p99, each node's peak
# resident memory (VmHWM, MiB, leader and followers in node order) and each node's
# user/system share (the leader's is the largest).
#
# Usage: tests/bench/ab.sh DIR_A DIR_B           (each DIR holds raftd and raftctl, e.g. a
#                                                  CARGO_TARGET_DIR's release/ folder)
#        ROUNDS=3 CLIENTS=256 VALUE=128 tests/bench/ab.sh DIR_A DIR_B
# Builds alternate (A, B, A, B, ...) so that a machine whose speed drifts over minutes (a
# shared virtual machine does) weighs on both alike; compare the pairs, not absolute figures
# from different hours.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 DIR_A DIR_B (folders holding raftd and raftctl)" >&2; exit 2; }
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-256}
VALUE=${VALUE:-128}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a whole number (got '$ROUNDS')" >&2; exit 2; }
[[ $CLIENTS =~ ^[1-9][0-9]*$ ]] || { echo "CLIENTS must be a whole number (got '$CLIENTS')" >&2; exit 2; }
[[ $VALUE =~ ^[1-9][0-9]*$ ]] || { echo "VALUE must be a whole number of bytes (got '$VALUE')" >&2; exit 2; }
for d in "$1" "$2"; do
  [ -x "$d/raftd" ] && [ -x "$d/raftctl" ] || { echo "$d: no raftd and raftctl there" >&2; exit 2; }
done
TMP=${BENCH_TMP:-/tmp/raftd-ab}
unset RAFTCTL_CLUSTER

run() { # LABEL DIR
  local label=$1 bin=$2 dir=$TMP/cluster
  export RAFTD_LOCAL_DIR=$dir
  rm -rf "$dir"
  RAFTD_BIN="$bin/raftd" "$bin/raftctl" local up --dir "$dir" --nodes 3 >/dev/null
  local pids
  pids=$(grep -o '"pid": *[0-9]*' "$dir/cluster.json" | grep -o '[0-9]*$' | tr '\n' ' ')
  commit() { "$bin/raftctl" status 2>/dev/null | awk '$4 == "leader" { print $7 }'; }
  ticks() { for p in $pids; do awk '{ printf "%s %s ", $14, $15 }' "/proc/$p/stat"; done; }
  "$bin/raftctl" bench --clients "$CLIENTS" --duration 10s --value-bytes "$VALUE" --keys 100000 \
    --warmup 2s --mode write >"$dir.bench" 2>&1 &
  local bench=$!
  sleep 4
  local c0 t0 c1 t1
  c0=$(commit); t0=$(ticks)
  sleep 6
  t1=$(ticks); c1=$(commit)
  wait "$bench" || true
  local p99 hwm
  p99=$(grep -o ' p99=[0-9.]*ms' "$dir.bench" | tail -1 | tr -d ' ' || true)
  hwm=$(for p in $pids; do awk '/^VmHWM/ { printf "%d/", $2 / 1024 }' "/proc/$p/status"; done)
  "$bin/raftctl" local down --dir "$dir" >/dev/null 2>&1 || true
  awk -v label="$label" -v ops="$((c1 - c0))" -v p99="${p99:-p99=?}" -v hwm="${hwm%/}" -v hz="$(getconf CLK_TCK)" -v a="$t0" -v b="$t1" 'BEGIN {
    n = split(a, x, " "); split(b, y, " "); total = 0; nodes = ""
    for (i = 1; i <= n; i += 2) {
      u = (y[i] - x[i]) / hz * 1e6 / ops; s = (y[i+1] - x[i+1]) / hz * 1e6 / ops; total += u + s
      nodes = nodes sprintf(" | node %d user %.2f sys %.2f", (i + 1) / 2, u, s)
    }
    printf "%s ops/s=%d cpu_us_per_write=%.2f %s peak_rss_mb=%s%s\n", label, ops / 6, total, p99, hwm, nodes
  }'
  rm -rf "$dir" "$dir.bench"
}

echo "== load at start: $(cut -d' ' -f1-3 /proc/loadavg); A=$1 B=$2, $CLIENTS clients, $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
  run "A round $r" "$1"
  run "B round $r" "$2"
done
echo "== load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
