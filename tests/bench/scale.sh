#!/usr/bin/env bash
# How raftd's cost grows with the data (issue 18), on a 3-node cluster on loopback that this
# script starts (and stops: exactly the PIDs it started, tests/bench/nodes.sh).
#
# Keys: the store is filled to each count of KEY_STEPS (`raftctl bench --mode prefill`, values
# of KEY_VALUE bytes, CLIENTS clients; default snapshot settings). At each step: the fill's
# throughput as the store grows, resident memory per node and bytes per key (RSS over the
# empty node's, divided by the keys), the time an operator's snapshot takes on a follower
# (`raftctl snapshot ID`: encode, write, sync) and its file's size, then the time that
# follower takes to restart from it: process start -> its status answers and it has applied
# everything it had before the stop, with its peak memory (VmHWM) while it recovered.
#
# WAL: a fresh cluster with snapshots pushed out (--snapshot-entries 1000000000
# --snapshot-wal-mib 1048576) takes writes of WAL_VALUE bytes until a follower's WAL holds
# each size of WAL_STEPS_MIB; at each size that follower is restarted and timed the same way.
#
# Usage: tests/bench/scale.sh
#        KEY_STEPS="1000000 10000000" KEY_VALUE=16 WAL_STEPS_MIB="256 1024" WAL_VALUE=128 \
#          CLIENTS=256 tests/bench/scale.sh
#        SKIP_KEYS=1 or SKIP_WAL=1 to run one half; SKIP_BUILD=1 to use the binaries as they are.
# The load average is printed at the start and end of each half: figures taken while other
# work runs on the machine are noisy.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(git -C "$HERE" rev-parse --show-toplevel)"
KEY_STEPS=${KEY_STEPS:-"1000000 10000000"}
KEY_VALUE=${KEY_VALUE:-16}
WAL_STEPS_MIB=${WAL_STEPS_MIB:-"256 1024"}
WAL_VALUE=${WAL_VALUE:-128}
CLIENTS=${CLIENTS:-256}
TMP=${BENCH_TMP:-/tmp/raftd-scale}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RAFTD=$TARGET/release/raftd
RAFTCTL=$TARGET/release/raftctl
PIDS=()

fail() { echo "scale.sh: $*" >&2; exit 1; }
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
ascending() { # LIST NAME: whole numbers, each larger than the one before
  local prev=0 x
  [ -n "$1" ] || fail "$2 is empty"
  for x in $1; do
    is_count "$x" || fail "$2: '$x' is not a positive whole number"
    [ "$x" -gt "$prev" ] || fail "$2 must go up (got '$1')"
    prev=$x
  done
}
ascending "$KEY_STEPS" KEY_STEPS
ascending "$WAL_STEPS_MIB" WAL_STEPS_MIB
is_count "$KEY_VALUE" && [ "$KEY_VALUE" -le 1048576 ] || fail "KEY_VALUE must be 1 to 1048576 bytes"
is_count "$WAL_VALUE" && [ "$WAL_VALUE" -le 1048576 ] || fail "WAL_VALUE must be 1 to 1048576 bytes"
is_count "$CLIENTS" && [ "$CLIENTS" -le 4096 ] || fail "CLIENTS must be 1 to 4096"

source "$HERE/nodes.sh"
# Stops exactly the nodes started here and removes their data (gigabytes at 10 M keys).
finish() { stop_pids; rm -rf "$TMP/data"; }
trap finish EXIT INT TERM

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "== building raftd and raftctl (release)"
  (cd "$ROOT" && nice cargo build --release -q -p raftd -p raftctl)
fi
[ -x "$RAFTD" ] && [ -x "$RAFTCTL" ] || fail "no release build in $TARGET/release; build it or unset SKIP_BUILD"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
proc_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

ADDRS=() EXTRA=() PEERS=""
# start_cluster: three fresh nodes on free loopback ports, with EXTRA flags; waits for a leader.
start_cluster() {
  rm -rf "$TMP/data"
  mkdir -p "$TMP/data"
  mapfile -t ADDRS < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
for s in ss: print("127.0.0.1:%d" % s.getsockname()[1])')
  PEERS="1=${ADDRS[0]},2=${ADDRS[1]},3=${ADDRS[2]}"
  export RAFTCTL_CLUSTER="${ADDRS[0]},${ADDRS[1]},${ADDRS[2]}"
  for id in 1 2 3; do start_node "$id"; done
  for _ in $(seq 100); do leader_id >/dev/null 2>&1 && return; sleep 0.2; done
  fail "no leader within 20 s; see $TMP/data/node*.log"
}
start_node() {
  "$RAFTD" --id "$1" --peers "$PEERS" --data-dir "$TMP/data/node$1" "${EXTRA[@]}" \
    2>>"$TMP/data/node$1.log" &
  PIDS[$1 - 1]=$!
}
# status ID FIELD...: fields of node ID's status (one line, space-separated); fails if it does
# not answer.
status() {
  local id=$1
  shift
  "$RAFTCTL" --timeout 2s --cluster "${ADDRS[$id - 1]}" --json status 2>/dev/null |
    python3 -c 'import json, sys
d = json.load(sys.stdin); d = d[0] if isinstance(d, list) else d
if not d.get("ok", True) or "applied" not in d: sys.exit(1)
print(*(d[f] for f in sys.argv[1:]))' "$@"
}
leader_id() {
  local id role
  for id in 1 2 3; do
    role=$(status "$id" role || true)
    [ "$role" = leader ] && { echo "$id"; return; }
  done
  return 1
}
follower_id() { local l; l=$(leader_id); echo $((l % 3 + 1)); }
# wait_applied INDEX: until every node has applied INDEX.
wait_applied() {
  local id a
  for id in 1 2 3; do
    for _ in $(seq 600); do
      a=$(status "$id" applied || echo 0)
      [ "$a" -ge "$1" ] && break
      sleep 0.1
    done
  done
}
# restart ID: stops node ID (SIGTERM, waits), starts it again, and prints how long it took
# from process start until it answers status and has applied what it held before.
restart() {
  local id=$1 target pid t0 applied=0 secs
  target=$(status "$id" last_index)
  pid=${PIDS[$id - 1]}
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  t0=$(now)
  start_node "$id"
  for _ in $(seq 36000); do
    applied=$(status "$id" applied || echo 0)
    [ "$applied" -ge "$target" ] && break
    sleep 0.05
  done
  secs=$(since "$t0")
  [ "$applied" -ge "$target" ] || fail "node $id did not apply index $target within 30 min"
  echo "  restart of node $id: ${secs} s from process start to serving with index $target applied;" \
    "peak RSS while recovering $(($(proc_kb "${PIDS[$id - 1]}" VmHWM) / 1024)) MiB," \
    "RSS now $(($(proc_kb "${PIDS[$id - 1]}" VmRSS) / 1024)) MiB"
}
memory() { # BASELINE_KB KEYS
  local id rss
  for id in 1 2 3; do
    rss=$(proc_kb "${PIDS[$id - 1]}" VmRSS)
    echo "  node $id: RSS $((rss / 1024)) MiB (peak $(($(proc_kb "${PIDS[$id - 1]}" VmHWM) / 1024)) MiB)," \
      "$(awk -v r="$rss" -v b="$1" -v k="$2" 'BEGIN { printf "%.1f", (r - b) * 1024 / k }') bytes per key over the empty node"
  done
}
# fill_rates LOG: the prefill's rate per tenth of the keys, from its progress lines.
fill_rates() {
  python3 - "$1" <<'EOF'
import re, sys
points = [(int(m[1]), int(m[2]), float(m[3])) for m in
          (re.search(r"prefill (\d+)/(\d+) keys (\d+) ops/s", l) for l in open(sys.argv[1])) if m]
if points:
    total = points[0][1]
    tenths = {}
    for done, _, rate in points:
        tenths.setdefault(min(done * 10 // total, 9), []).append(rate)
    print("  fill rate by keys held: " + ", ".join(
        f"{t * total // 10:,}+: {sum(r) / len(r):,.0f}/s" for t, r in sorted(tenths.items())))
EOF
}

if [ -z "${SKIP_KEYS:-}" ]; then
  echo "== keys: steps $KEY_STEPS, ${KEY_VALUE}-byte values, $CLIENTS clients; load at start: $(load)"
  EXTRA=()
  start_cluster
  sleep 1
  BASE_KB=$(proc_kb "${PIDS[0]}" VmRSS)
  echo "  empty node: RSS $((BASE_KB / 1024)) MiB"
  for keys in $KEY_STEPS; do
    echo "-- filling to $keys keys (load $(load))"
    t0=$(now)
    "$RAFTCTL" --timeout 30s bench --mode prefill --keys "$keys" --clients "$CLIENTS" \
      --value-bytes "$KEY_VALUE" 2>"$TMP/fill.log" | sed 's/^/  /'
    echo "  filled in $(since "$t0") s"
    fill_rates "$TMP/fill.log"
    leader=$(leader_id)
    wait_applied "$(status "$leader" commit)"
    echo "  store: $(status "$leader" keys) keys"
    memory "$BASE_KB" "$keys"
    f=$(follower_id)
    t0=$(now)
    "$RAFTCTL" --timeout 600s snapshot "$f" | sed 's/^/  /'
    snap=$(ls -t "$TMP/data/node$f/wal/"*.snap | head -1)
    echo "  snapshot on node $f: $(since "$t0") s (raftctl round trip), file $(($(stat -c %s "$snap") / 1048576)) MiB" \
      "($(awk -v s="$(stat -c %s "$snap")" -v k="$keys" 'BEGIN { printf "%.1f", s / k }') bytes per key)"
    restart "$f"
  done
  stop_pids
  echo "== keys done; load at the end: $(load)"
fi

if [ -z "${SKIP_WAL:-}" ]; then
  echo "== WAL: steps $WAL_STEPS_MIB MiB, ${WAL_VALUE}-byte values, snapshots pushed out; load at start: $(load)"
  EXTRA=(--snapshot-entries 1000000000 --snapshot-wal-mib 1048576)
  start_cluster
  f=$(follower_id)
  for mib in $WAL_STEPS_MIB; do
    echo "-- writing until node $f's WAL holds $mib MiB (load $(load))"
    t0=$(now)
    while [ "$(status "$f" wal_bytes)" -lt $((mib << 20)) ]; do
      "$RAFTCTL" --timeout 30s bench --clients "$CLIENTS" --value-bytes "$WAL_VALUE" \
        --warmup 100ms --duration 5s 2>/dev/null | sed -E 's/^(.*ops\/s=[0-9]+).*/  \1/'
    done
    leader=$(leader_id)
    wait_applied "$(status "$leader" commit)"
    read -r wal segments first last < <(status "$f" wal_bytes wal_segments first_index last_index)
    echo "  written in $(since "$t0") s; node $f: WAL $((wal >> 20)) MiB in $segments segments," \
      "log $first..$last ($((last - first + 1)) entries), RSS $(($(proc_kb "${PIDS[$f - 1]}" VmRSS) / 1024)) MiB"
    restart "$f"
  done
  stop_pids
  echo "== WAL done; load at the end: $(load)"
fi
