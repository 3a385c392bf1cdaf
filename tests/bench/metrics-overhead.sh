#!/usr/bin/env bash
# What `--metrics-listen` costs the hot path: `raftctl bench` at 256 clients against a
# 3-node cluster started without the flag ("off") and with it while every node is scraped
# once a second ("on"), alternating, ROUNDS times each, on fresh data directories. With
# BASELINE_RAFTD=/path/to/raftd (a build without the metrics code, e.g. of main) a third
# series "base" runs that binary, which shows what the counting itself costs (it must speak
# the same client protocol version as this raftctl: build it from `git merge-base HEAD main`).
#
# Usage: tests/bench/metrics-overhead.sh
#        ROUNDS=3 DUR=10 CLIENTS=256 BASELINE_RAFTD=/tmp/main/raftd tests/bench/metrics-overhead.sh
# Prints one line per run (ops/s, p50, p99, errors, the three nodes' CPU time per operation)
# and, per series, the means and their ratios to "off".
set -euo pipefail
ROOT="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-10}
CLIENTS=${CLIENTS:-256}
TMP=${BENCH_TMP:-/tmp/raftd-metrics-overhead}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RAFTD=$TARGET/release/raftd
RAFTCTL=$TARGET/release/raftctl
BASE=7311
PIDS=()
SCRAPER=""

source "$ROOT/tests/bench/nodes.sh"
stop_nodes() {
  [ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null || true
  SCRAPER=""
  stop_pids
}
trap stop_nodes EXIT INT TERM

echo "== building raftd and raftctl (release)"
(cd "$ROOT" && cargo build --release -q -p raftd -p raftctl)
PEERS="1=127.0.0.1:$BASE,2=127.0.0.1:$((BASE + 1)),3=127.0.0.1:$((BASE + 2))"
CLUSTER="127.0.0.1:$BASE,127.0.0.1:$((BASE + 1)),127.0.0.1:$((BASE + 2))"

# run SERIES BINARY [metrics]: one measured run on a fresh cluster.
run() {
  local series=$1 binary=$2 metrics=${3:-}
  rm -rf "$TMP/data"
  mkdir -p "$TMP/data"
  for id in 1 2 3; do
    local extra=()
    [ -n "$metrics" ] && extra=(--metrics-listen "127.0.0.1:$((BASE + 100 + id))")
    "$binary" --id "$id" --peers "$PEERS" --data-dir "$TMP/data/node$id" "${extra[@]}" \
      2>"$TMP/data/node$id.log" &
    PIDS+=($!)
  done
  sleep 2
  if [ -n "$metrics" ]; then
    ( while true; do
        for id in 1 2 3; do
          curl -s -o /dev/null "http://127.0.0.1:$((BASE + 100 + id))/metrics" || true
        done
        sleep 1
      done ) &
    SCRAPER=$!
  fi
  "$RAFTCTL" --cluster "$CLUSTER" bench --clients "$CLIENTS" --duration "${DUR}s" --json \
    >"$TMP/run.json"
  # The nodes' CPU time (user + system, in clock ticks) over the whole run: with other work
  # on the machine, CPU per operation is a steadier measure of the loop's cost than ops/s.
  local ticks=0
  for p in "${PIDS[@]}"; do
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$ticks $(getconf CLK_TCK)" >"$TMP/cpu.txt"
  stop_nodes
  python3 - "$series" "$TMP/run.json" "$TMP/cpu.txt" >>"$TMP/results.txt" <<'EOF'
import json, sys
r = json.load(open(sys.argv[2]))
ticks, hz = map(int, open(sys.argv[3]).read().split())
# Operations over warm-up and measurement alike (the CPU time covers both).
ops = r["ops_per_s"] * (r["warmup_s"] + r["duration_s"])
cpu_us_per_op = ticks / hz * 1e6 / ops
print(sys.argv[1], r["ops_per_s"], r["p50_ms"], r["p99_ms"], r["errors"], round(cpu_us_per_op, 2))
EOF
  tail -1 "$TMP/results.txt"
}

mkdir -p "$TMP"
: >"$TMP/results.txt"
echo "== machine: $(nproc) cores; load at start: $(uptime | sed 's/.*load average: //')"
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS (series ops/s p50_ms p99_ms errors cpu_us_per_op)"
  run off "$RAFTD"
  run on "$RAFTD" metrics
  [ -n "${BASELINE_RAFTD:-}" ] && run base "$BASELINE_RAFTD"
done
python3 - "$TMP/results.txt" <<'EOF'
import sys, statistics
runs = {}
for line in open(sys.argv[1]):
    series, ops, p50, p99, errors, cpu = line.split()
    if int(errors):
        sys.exit(f"a run had {errors} errors: {line.strip()}")
    runs.setdefault(series, []).append((float(ops), float(p50), float(p99), float(cpu)))
off = statistics.mean(r[0] for r in runs["off"])
off_cpu = statistics.mean(r[3] for r in runs["off"])
for series, rs in runs.items():
    ops = statistics.mean(r[0] for r in rs)
    p99 = statistics.mean(r[2] for r in rs)
    cpu = statistics.mean(r[3] for r in rs)
    print(f"{series:5} mean {ops:9.0f} ops/s over {len(rs)} runs ({ops / off * 100:6.1f} % of off), "
          f"mean p99 {p99:.2f} ms, nodes' CPU {cpu:.2f} us/op ({cpu / off_cpu * 100:6.1f} % of off)")
EOF
