#!/usr/bin/env bash
# raftd against etcd, same machine, same workload, in one go (issue 7).
#
# Builds raftd and raftctl in release, starts a 3-node raftd cluster on loopback
# (`raftctl local up`), runs `raftctl bench` for each client count, records each node's RSS,
# stops exactly the nodes it started, then runs the etcd side (`etcd-compare.sh`, which
# installs Debian's etcd and a Go clientv3 load generator, and stops its own members).
# Workload on both sides: Put to a random key out of 100,000 ("bench/%08d"), VALUE-byte
# values, closed loop, clients sharing up to 16 connections, 2 s warm-up, DUR s measured.
#
# Usage: tests/bench/compare.sh
#        CLIENTS="1 256" DUR=10 VALUE=128 tests/bench/compare.sh
#        ETCD_COMPARE=/path/to/etcd-compare.sh tests/bench/compare.sh
#        SKIP_ETCD=1 tests/bench/compare.sh        (raftd only)
#        TLS=1 tests/bench/compare.sh              (both sides in TLS: raftd `local up --tls`,
#                                                    mutual TLS between nodes and client
#                                                    certificates; etcd with --cert-file,
#                                                    --peer-*, --client-cert-auth, see
#                                                    tests/bench/etcd-tls.sh)
# Prints, per client count, raftd's line, etcd's line, and the ratios raftd/etcd of ops/s
# (above 1: raftd is faster) and of p99 (below 1: raftd's tail is shorter); then RSS.
set -euo pipefail
ROOT="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
DUR=${DUR:-15}
CLIENTS=${CLIENTS:-"1 16 64 256"}
VALUE=${VALUE:-128}
TMP=${BENCH_TMP:-/tmp/raftd-compare}
ETCD_COMPARE=${ETCD_COMPARE:-$ROOT/../shared/bench/etcd-compare.sh}
TLS=${TLS:-0}
UP_FLAGS=()
[ "$TLS" = 1 ] && UP_FLAGS=(--tls)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RAFTCTL=$TARGET/release/raftctl
DIR=$TMP/raftd
PIDS=()

# Stops exactly the nodes this script started.
source "$ROOT/tests/bench/nodes.sh"
cleanup() { stop_pids; }
trap cleanup EXIT INT TERM

if [ -z "${SKIP_ETCD:-}" ] && [ ! -f "$ETCD_COMPARE" ]; then
  echo "compare.sh: the etcd side is missing: $ETCD_COMPARE does not exist." >&2
  echo "  It lives in the shared folder beside the repository (../shared/bench/etcd-compare.sh);" >&2
  echo "  set ETCD_COMPARE=/path/to/etcd-compare.sh, or SKIP_ETCD=1 to run raftd alone." >&2
  exit 1
fi

echo "== building raftd and raftctl (release)"
(cd "$ROOT" && cargo build --release -q -p raftd -p raftctl)

echo "== machine: $(nproc) cores; load at start: $(uptime | sed 's/.*load average: //')"
rm -rf "$DIR"
mkdir -p "$TMP"
unset RAFTCTL_CLUSTER
export RAFTD_LOCAL_DIR=$DIR
"$RAFTCTL" local up --dir "$DIR" "${UP_FLAGS[@]}" >"$TMP/up.txt"
mapfile -t PIDS < <(grep -o '"pid": *[0-9]*' "$DIR/cluster.json" | grep -o '[0-9]*$')
grep -q '^leader:' "$TMP/up.txt" || { cat "$TMP/up.txt"; echo "compare.sh: no raftd leader" >&2; exit 1; }

declare -A OURS THEIRS
for c in $CLIENTS; do
  echo "== raftd, $c clients"
  OURS[$c]=$("$RAFTCTL" bench --clients "$c" --duration "${DUR}s" --value-bytes "$VALUE" \
    --keys 100000 --warmup 2s) || true
  echo "${OURS[$c]}"
done
RSS=""
for p in "${PIDS[@]}"; do
  RSS+="raftd pid $p rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo ?)"$'\n'
done
"$RAFTCTL" local down --dir "$DIR" >/dev/null || true
cleanup
echo "== load after raftd: $(uptime | sed 's/.*load average: //')"

ETCD_OUT=""
if [ -z "${SKIP_ETCD:-}" ]; then
  echo "== etcd ($ETCD_COMPARE)"
  if [ "$TLS" = 1 ]; then
    ETCD_OUT=$(CLIENTS="$CLIENTS" DUR="$DUR" VALUE="$VALUE" ETCD_COMPARE="$ETCD_COMPARE" \
      bash "$ROOT/tests/bench/etcd-tls.sh")
  else
    ETCD_OUT=$(CLIENTS="$CLIENTS" DUR="$DUR" VALUE="$VALUE" bash "$ETCD_COMPARE")
  fi
  echo "$ETCD_OUT"
  for c in $CLIENTS; do
    THEIRS[$c]=$(grep -E "clients=$c " <<<"$ETCD_OUT" | head -1 || true)
  done
  echo "== load after etcd: $(uptime | sed 's/.*load average: //')"
fi

# field LINE KEY: the number after "KEY=" in a result line (units stripped).
field() { sed -nE "s|.* $2=([0-9.]+).*|\1|p" <<<"$1" | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "?"; else printf "%.2f", a / b }'; }

echo
echo "== summary (TLS=$TLS DUR=${DUR}s VALUE=${VALUE}B, 3 nodes each, $(nproc) cores, load now $(uptime | sed 's/.*load average: //'))"
for c in $CLIENTS; do
  echo "clients=$c"
  echo "  raftd: ${OURS[$c]:-(no result)}"
  if [ -z "${SKIP_ETCD:-}" ]; then
    echo "  etcd:  ${THEIRS[$c]:-(no result)}"
    o=${OURS[$c]:-} t=${THEIRS[$c]:-}
    echo "  ratio raftd/etcd: ops/s x$(ratio "$(field "$o" ops/s)" "$(field "$t" ops/s)")" \
      " p99 x$(ratio "$(field "$o" p99)" "$(field "$t" p99)")"
  fi
done
printf '%s' "$RSS"
grep 'rss_kb' <<<"$ETCD_OUT" || true
