#!/usr/bin/env bash
# How long a new learner takes to catch up with a large store, and what a membership change
# costs the clients: a local 3-node cluster is filled with about STATE_MIB of state (random
# writes of VALUE_BYTES values over KEYS keys), then throughput is measured for DUR seconds
# without a change, then again while a fresh node joins (`raftd --join`), is added as a
# learner, catches up (a snapshot of the whole store, then the log) and is promoted.
#
#   cargo build --release && tests/bench/learner-catchup.sh
#   KEYS=160000 VALUE_BYTES=8192 FILL=120 DUR=30 tests/bench/learner-catchup.sh
#
# Prints the store's size (the leader's snapshot file), the catch-up time (added -> its
# applied index reaches the leader's commit index at the time it was added), the promotion
# time, and ops/s and p99 of the two measurement windows.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release}
KEYS=${KEYS:-160000}
VALUE_BYTES=${VALUE_BYTES:-8192}
FILL=${FILL:-120}
DUR=${DUR:-30}
DIR=${DIR:-$(mktemp -d /tmp/raftd-catchup.XXXXXX)}
RAFTCTL="$BIN/raftctl"
PATH="$BIN:$PATH"

cleanup() {
  "$RAFTCTL" local down --dir "$DIR" >/dev/null 2>&1 || true
  [ -n "${JOINER:-}" ] && kill "$JOINER" 2>/dev/null || true
}
trap cleanup EXIT

"$RAFTCTL" local up --dir "$DIR" >/dev/null
RAFTCTL_CLUSTER=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(','.join(n['address'] for n in d['nodes']))" "$DIR/cluster.json")
export RAFTCTL_CLUSTER

echo "== filling: ${FILL}s of writes, ${VALUE_BYTES}-byte values over ${KEYS} keys"
"$RAFTCTL" bench --clients 64 --mode write --keys "$KEYS" --value-bytes "$VALUE_BYTES" --duration "${FILL}s" --timeout 30s | tail -1

leader_status() {
  "$RAFTCTL" --json status | python3 -c '
import json, sys
docs = json.load(sys.stdin)
docs = docs if isinstance(docs, list) else [docs]
leader = [d for d in docs if d.get("role") == "leader"][0]
print(leader["id"], leader["commit"], leader["keys"])'
}
read -r LEADER COMMIT KEYS_HELD < <(leader_status)
"$RAFTCTL" snapshot "$LEADER" >/dev/null
SNAP=$(ls -S "$DIR/node$LEADER/wal/"*.snap | head -1)
STATE_BYTES=$(stat -c %s "$SNAP")
echo "store: $KEYS_HELD keys, snapshot file $((STATE_BYTES / 1048576)) MiB, commit index $COMMIT"

echo "== ${DUR}s of writes, no change"
"$RAFTCTL" bench --clients 16 --mode write --duration "${DUR}s" | tail -1

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR="127.0.0.1:$PORT"
mkdir -p "$DIR/node4"
"$BIN/raftd" --id 4 --join --listen "$ADDR" --data-dir "$DIR/node4" >"$DIR/node4.log" 2>&1 &
JOINER=$!

echo "== ${DUR}s of writes while node 4 joins, catches up and is promoted"
"$RAFTCTL" bench --clients 16 --mode write --duration "${DUR}s" >"$DIR/bench-during.txt" &
BENCH=$!
sleep 2
read -r _ TARGET _ < <(leader_status)
T0=$(date +%s.%N)
"$RAFTCTL" member add 4 "$ADDR" --learner >/dev/null
while :; do
  # Not answering yet counts as nothing applied.
  APPLIED=$( ("$RAFTCTL" --cluster "$ADDR" --json status 2>/dev/null || true) | python3 -c 'import json,sys; d=json.load(sys.stdin); d=d[0] if isinstance(d,list) else d; print(d.get("applied",0))' 2>/dev/null || echo 0)
  [ "$APPLIED" -ge "$TARGET" ] && break
  sleep 0.2
done
T1=$(date +%s.%N)
# Promotion is refused while the learner trails the leader by more than 1,000 entries (the
# clients keep writing): ask until it is close enough.
for _ in $(seq 600); do
  "$RAFTCTL" member promote 4 >/dev/null 2>&1 && break
  sleep 0.1
done
T2=$(date +%s.%N)
wait "$BENCH"
tail -1 "$DIR/bench-during.txt"
python3 - "$T0" "$T1" "$T2" "$STATE_BYTES" <<'EOF'
import sys
t0, t1, t2, state = map(float, sys.argv[1:])
print(f"learner catch-up: {t1 - t0:.1f} s for {state / 1048576:.0f} MiB of state "
      f"({state / 1048576 / max(t1 - t0, 1e-9):.0f} MiB/s); "
      f"then {t2 - t1:.2f} s until it was close enough to the moving log to be promoted")
EOF
"$RAFTCTL" member list
