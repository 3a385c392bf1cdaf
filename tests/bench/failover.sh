#!/usr/bin/env bash
# Failover under load, measured (issue 7): a 3-node raftd cluster with default timeouts
# takes a closed-loop write load while its leader is killed with SIGKILL, KILLS times (default
# 20). For each kill, `raftctl bench` reports the longest gap between two successful writes:
# that is the write unavailability window. Prints each window, then median and max.
#
# Usage: tests/bench/failover.sh            KILLS=5 CLIENTS=16 tests/bench/failover.sh
set -euo pipefail
ROOT="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
KILLS=${KILLS:-20}
CLIENTS=${CLIENTS:-16}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RAFTCTL=$TARGET/release/raftctl
DIR=${BENCH_TMP:-/tmp/raftd-failover}

(cd "$ROOT" && cargo build --release -q -p raftd -p raftctl)
rm -rf "$DIR"
"$RAFTCTL" local down --dir "$DIR" >/dev/null 2>&1 || true
trap '"$RAFTCTL" local down --dir "$DIR" >/dev/null 2>&1 || true' EXIT INT TERM
"$RAFTCTL" local up --dir "$DIR" --nodes 3 >/dev/null
export RAFTCTL_CLUSTER
RAFTCTL_CLUSTER=$(python3 -c "import json;print(','.join(n['address'] for n in json.load(open('$DIR/cluster.json'))['nodes']))")

leader_pid() {
  "$RAFTCTL" status --json | python3 -c "
import json,sys
docs=json.load(sys.stdin)
nodes={n['id']:n for n in json.load(open('$DIR/cluster.json'))['nodes']}
for d in docs:
    if d.get('role')=='leader': print(d['id'], nodes[d['id']]['pid']); break"
}

gaps=()
for k in $(seq 1 "$KILLS"); do
  "$RAFTCTL" bench --clients "$CLIENTS" --warmup 1s --duration 6s --json --timeout 3s > "$DIR/bench.json" 2>/dev/null &
  bench=$!
  sleep 3
  read -r id pid < <(leader_pid)
  kill -9 "$pid"
  wait "$bench" || true
  gap=$(python3 -c "import json;print(json.load(open('$DIR/bench.json'))['write_gap_max_ms'])")
  gaps+=("$gap")
  printf 'kill %2d: leader node %s, writes resumed after %8.1f ms\n' "$k" "$id" "$gap"
  # Restart the killed node with its data directory, exactly as it was started.
  "$RAFTCTL" local restart "$id" --dir "$DIR" >/dev/null 2>&1 || {
    echo "cannot restart node $id; stopping"; break; }
  sleep 2
done
printf '%s\n' "${gaps[@]}" | sort -g | python3 -c "
import sys
v=[float(x) for x in sys.stdin if x.strip()]
if v: print(f'failover over {len(v)} kills: median {v[len(v)//2]:.0f} ms, max {max(v):.0f} ms')"
