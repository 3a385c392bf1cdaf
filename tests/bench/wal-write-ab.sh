#!/usr/bin/env bash
# The WAL's two write modes side by side, in one run (issue 18): `raftd --wal-write pwrite`
# (appends copied into the file with pwrite, made durable with fdatasync) against
# `--wal-write mmap` (written through a shared map, made durable with msync). Both keep the
# segments mapped for reads. Each round starts a fresh 3-node cluster on loopback per mode, in
# turn (so the disk's throttling and other load hit both), and runs `raftctl bench` at each
# client count.
#
#   tests/bench/wal-write-ab.sh                      # ROUNDS=3 CLIENTS="1 256" DUR=10
#   ROUNDS=5 CLIENTS="1 16 256" DUR=10 VALUE=128 tests/bench/wal-write-ab.sh
#
# Prints one line per (round, mode, clients): ops/s, p50, p99 and CPU per operation (user +
# system CPU of the three nodes over the measured window, /proc/PID/stat, divided by its
# operations);
# then per mode and client count the median over the rounds.
set -euo pipefail
ROOT="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-"1 256"}
DUR=${DUR:-10}
VALUE=${VALUE:-128}
TMP=${BENCH_TMP:-/tmp/raftd-wal-ab}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
PIDS=()
source "$ROOT/tests/bench/nodes.sh"
trap stop_pids EXIT INT TERM
for v in ROUNDS DUR VALUE; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "wal-write-ab.sh: $v must be a positive integer, not '${!v}'" >&2; exit 1; }
done

echo "== building raftd and raftctl (release)"
(cd "$ROOT" && cargo build --release -q -p raftd -p raftctl)
HZ=$(getconf CLK_TCK)

echo "== machine: $(nproc) cores; load at start: $(uptime | sed 's/.*load average: //')"
RESULTS=$TMP/results.txt
mkdir -p "$TMP"; : >"$RESULTS"
base=$((7600 + RANDOM % 300))
for round in $(seq 1 "$ROUNDS"); do
  for mode in pwrite mmap; do
    dir=$TMP/$mode; rm -rf "$dir"; mkdir -p "$dir"
    peers="1=127.0.0.1:$((base + 1)),2=127.0.0.1:$((base + 2)),3=127.0.0.1:$((base + 3))"
    for id in 1 2 3; do
      "$BIN/raftd" --id "$id" --peers "$peers" --data-dir "$dir/node$id" --wal-write "$mode" \
        >"$dir/node$id.log" 2>&1 &
      PIDS+=($!)
    done
    export RAFTCTL_CLUSTER="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
    for _ in $(seq 1 100); do "$BIN/raftctl" status 2>/dev/null | grep -q '^leader' && break; sleep 0.1; done
    for c in $CLIENTS; do
      # CPU is counted over the measured window only: from the end of the 2 s warm-up.
      "$BIN/raftctl" bench --clients "$c" --duration "${DUR}s" --value-bytes "$VALUE" \
        --keys 100000 --warmup 2s >"$dir/bench.txt" 2>&1 &
      bench=$!
      sleep 2
      t0=$(cpu_ticks)
      wait "$bench" || true
      t1=$(cpu_ticks)
      line=$(grep 'ops/s=' "$dir/bench.txt" || cat "$dir/bench.txt")
      ops=$(field "$line" ops)
      cpu=$(awk -v t="$((t1 - t0))" -v hz="$HZ" -v n="${ops:-0}" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "?" }')
      out="round=$round mode=$mode clients=$c ops/s=$(field "$line" ops/s) p50=$(field "$line" p50)ms p99=$(field "$line" p99)ms cpu_us_per_op=$cpu errors=$(field "$line" errors)"
      echo "$out" | tee -a "$RESULTS"
    done
    stop_pids
    base=$((base + 10))
  done
done
echo "== load at end: $(uptime | sed 's/.*load average: //')"
echo "== medians over $ROUNDS rounds (DUR=${DUR}s VALUE=${VALUE}B, 3 nodes)"
python3 - "$RESULTS" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = dict(re.findall(r'(\S+?)=([0-9.?]+)', line))
    m = re.search(r'mode=(\w+)', line).group(1)
    rows.setdefault((int(f['clients']), m), []).append(f)
def med(rs, k):
    vals = [float(r[k]) for r in rs if r.get(k, '?') not in ('?', '')]
    return statistics.median(vals) if vals else float('nan')
print(f"{'clients':>7} {'mode':>6} {'ops/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'cpu us/op':>9}")
for (c, m), rs in sorted(rows.items()):
    print(f"{c:>7} {m:>6} {med(rs,'ops/s'):>9.0f} {med(rs,'p50'):>7.2f} {med(rs,'p99'):>7.2f} {med(rs,'cpu_us_per_op'):>9.1f}")
PY
