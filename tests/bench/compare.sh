#!/usr/bin/env bash
# raftd against etcd, same machine, same workload, in one go (issues 7 and 18).
#
# Builds raftd and raftctl in release, starts a raftd cluster of MEMBERS nodes on loopback
# (`raftctl local up --nodes MEMBERS`), runs `raftctl bench` for each client count, records
# each node's RSS, stops exactly the nodes it started, then runs the etcd side
# (`etcd-compare.sh`, which installs Debian's etcd and a Go clientv3 load generator, and stops
# its own members). Workload on both sides: MODE (write: Put; read: linearizable Get; mixed:
# READ_PCT % Gets, the rest Puts) on a random key out of 100,000 ("bench/%08d"), VALUE-byte
# values, closed loop, clients sharing up to 16 connections, 2 s warm-up, DUR s measured. For
# read and mixed, every key is written once first (not measured), on both sides.
#
# CPU per operation, the same way on both sides: user + system CPU of all the cluster's nodes
# (/proc/PID/stat fields 14 and 15) over the whole run of one point, warm-up included, divided
# by the successful operations of that run, warm-up included (`ops_incl_warmup=`).
#
# Usage: tests/bench/compare.sh
#        CLIENTS="1 256" DUR=10 VALUE=128 MODE=write|read|mixed READ_PCT=50 MEMBERS=3|5 \
#          tests/bench/compare.sh
#        ETCD_COMPARE=/path/to/etcd-compare.sh tests/bench/compare.sh
#        SKIP_ETCD=1 tests/bench/compare.sh        (raftd only)
#        CSV=file.csv tests/bench/compare.sh       (also append one row per system and point)
#        SKIP_BUILD=1 ...                          (use the release binaries as they are)
#        TLS=1 tests/bench/compare.sh              (both sides in TLS: raftd `local up --tls`,
#                                                    mutual TLS between nodes and client
#                                                    certificates; etcd with --cert-file,
#                                                    --peer-*, --client-cert-auth, see
#                                                    tests/bench/etcd-tls.sh: MODE=write and
#                                                    MEMBERS=3 only)
#        KEEP_DATA=1 ...                           (keep both sides' data directories)
#        DISK_PROBE=0 ...                          (skip the disk probe below)
# Prints, per client count, raftd's line, etcd's line, and the ratios raftd/etcd of ops/s
# (above 1: raftd is faster), of p99 (below 1: raftd's tail is shorter) and etcd/raftd of
# CPU per operation (above 1: raftd spends less); then RSS. The machine's load average is
# printed at the start and end of each side: figures taken while other work runs are noisy.
# Before the raftd side, `disk-floor` (wal/examples/disk-floor.rs) probes the disk under
# BENCH_TMP: one small pwrite + fdatasync alone, and MEMBERS of them at once, one per file,
# whose majority-th completion is the disk's share of a 1-client write for either system
# (every node syncs its own copy on the same device), and the bare skeleton of a replicated
# write (client, leader and followers as threads over loopback, each syncing its copy: the
# 1-client latency no implementation can beat here); printed with the summary, and probed
# again between raftd's side and etcd's (the disk slows after minutes of syncing).
set -euo pipefail
ROOT="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
DUR=${DUR:-15}
CLIENTS=${CLIENTS:-"1 16 64 256"}
VALUE=${VALUE:-128}
MODE=${MODE:-write}
READ_PCT=${READ_PCT:-50}
MEMBERS=${MEMBERS:-3}
KEYS=100000
TMP=${BENCH_TMP:-/tmp/raftd-compare}
ETCD_COMPARE=${ETCD_COMPARE:-$ROOT/../shared/bench/etcd-compare.sh}
TLS=${TLS:-0}
UP_FLAGS=()
[ "$TLS" = 1 ] && UP_FLAGS=(--tls)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RAFTCTL=$TARGET/release/raftctl
DIR=$TMP/raftd
PIDS=()

fail() { echo "compare.sh: $*" >&2; exit 1; }
is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
[ -n "$CLIENTS" ] || fail "CLIENTS is empty; give client counts, e.g. CLIENTS=\"1 16 256\""
for c in $CLIENTS; do
  is_count "$c" && [ "$c" -le 4096 ] || fail "CLIENTS: '$c' is not a client count from 1 to 4096"
done
is_count "$DUR" || fail "DUR must be a whole number of seconds (got '$DUR')"
is_count "$VALUE" && [ "$VALUE" -le 1048576 ] || fail "VALUE must be 1 to 1048576 bytes (got '$VALUE')"
case "$MODE" in write | read | mixed) ;; *) fail "MODE must be write, read or mixed (got '$MODE')" ;; esac
[[ $READ_PCT =~ ^[0-9]+$ ]] && [ "$READ_PCT" -le 100 ] || fail "READ_PCT must be 0 to 100 (got '$READ_PCT')"
case "$MEMBERS" in 3 | 5) ;; *) fail "MEMBERS must be 3 or 5 (got '$MEMBERS')" ;; esac
case "$TLS" in 0 | 1) ;; *) fail "TLS must be 0 or 1 (got '$TLS')" ;; esac
if [ "$TLS" = 1 ] && [ -z "${SKIP_ETCD:-}" ] && { [ "$MODE" != write ] || [ "$MEMBERS" != 3 ]; }; then
  fail "TLS=1 runs etcd through tests/bench/etcd-tls.sh, which has MODE=write and MEMBERS=3 only (or set SKIP_ETCD=1)"
fi
if [ -z "${SKIP_ETCD:-}" ] && [ ! -f "$ETCD_COMPARE" ]; then
  echo "compare.sh: the etcd side is missing: $ETCD_COMPARE does not exist." >&2
  echo "  It lives in the shared folder beside the repository (../shared/bench/etcd-compare.sh);" >&2
  echo "  set ETCD_COMPARE=/path/to/etcd-compare.sh, or SKIP_ETCD=1 to run raftd alone." >&2
  exit 1
fi

# Stops exactly the nodes this script started.
source "$ROOT/tests/bench/nodes.sh"
cleanup() { stop_pids; }
trap cleanup EXIT INT TERM

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "== building raftd and raftctl (release)"
  (cd "$ROOT" && nice cargo build --release -q -p raftd -p raftctl)
  [ "${DISK_PROBE:-1}" = 0 ] || (cd "$ROOT" && nice cargo build --release -q -p wal --example disk-floor)
fi
[ -x "$RAFTCTL" ] || fail "$RAFTCTL is missing; build it (cargo build --release) or unset SKIP_BUILD"

HZ=$(getconf CLK_TCK)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "?"; else printf "%.2f", a / b }'; }
mbps() { awk -v o="$1" -v v="$VALUE" 'BEGIN { if (o == "") print ""; else printf "%.2f", o * v / 1e6 }'; }

echo "== machine: $(nproc) cores; load at start: $(load)"
echo "== workload: MODE=$MODE VALUE=${VALUE}B MEMBERS=$MEMBERS DUR=${DUR}s CLIENTS=\"$CLIENTS\""
rm -rf "$DIR"
mkdir -p "$TMP"
DISK=""
if [ "${DISK_PROBE:-1}" != 0 ]; then
  PROBE=$TARGET/release/examples/disk-floor
  [ -x "$PROBE" ] || fail "$PROBE is missing; build it (cargo build --release -p wal --example disk-floor) or set DISK_PROBE=0"
  DISK=$("$PROBE" --dir "$TMP" --members "$MEMBERS" --rounds 300 --path) || fail "the disk probe failed"
  echo "== disk: $DISK"
fi
unset RAFTCTL_CLUSTER
export RAFTD_LOCAL_DIR=$DIR
"$RAFTCTL" local up --dir "$DIR" --nodes "$MEMBERS" "${UP_FLAGS[@]}" >"$TMP/up.txt"
mapfile -t PIDS < <(grep -o '"pid": *[0-9]*' "$DIR/cluster.json" | grep -o '[0-9]*$')
grep -q '^leader:' "$TMP/up.txt" || { cat "$TMP/up.txt"; fail "no raftd leader"; }
OURS_LOAD0=$(load)

if [ "$MODE" != write ]; then
  echo "== raftd: writing each of the $KEYS keys once (not measured)"
  "$RAFTCTL" --timeout 30s bench --mode prefill --clients 256 --keys "$KEYS" \
    --value-bytes "$VALUE" 2>/dev/null | sed 's/^/   /'
fi
declare -A OURS THEIRS OURS_CPU THEIRS_CPU
for c in $CLIENTS; do
  echo "== raftd, $c clients (load $(load))"
  t0=$(cpu_ticks)
  OURS[$c]=$("$RAFTCTL" bench --clients "$c" --duration "${DUR}s" --value-bytes "$VALUE" \
    --keys "$KEYS" --warmup 2s --mode "$MODE" --read-percent "$READ_PCT" 2>/dev/null) || true
  t1=$(cpu_ticks)
  total=$(field "${OURS[$c]}" ops_incl_warmup)
  OURS_CPU[$c]=$(awk -v t="$((t1 - t0))" -v hz="$HZ" -v n="${total:-0}" \
    'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n }')
  echo "${OURS[$c]}"
  echo "raftd-$MEMBERS clients=$c cpu_us_per_op=${OURS_CPU[$c]:-?}"
done
RSS=""
for p in "${PIDS[@]}"; do
  RSS+="raftd pid $p rss_kb=$(awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo ?)"$'\n'
done
"$RAFTCTL" local down --dir "$DIR" >/dev/null || true
cleanup
# The data can be gigabytes (64 KiB values): gone before the etcd side, unless KEEP_DATA is set.
[ -n "${KEEP_DATA:-}" ] || rm -rf "$DIR"
OURS_LOAD1=$(load)
echo "== load after raftd: $OURS_LOAD1"
# The disk again between the sides: this one virtual disk slows after minutes of syncing, and
# a side run on a slower disk than the other is no like-for-like comparison.
DISK_MID=""
if [ -n "$DISK" ] && [ -z "${SKIP_ETCD:-}" ]; then
  DISK_MID=$("$PROBE" --dir "$TMP" --members "$MEMBERS" --rounds 300 --path) || fail "the disk probe failed"
  echo "== disk between the sides: $DISK_MID"
fi

ETCD_OUT=""
if [ -z "${SKIP_ETCD:-}" ]; then
  THEIRS_LOAD0=$(load)
  echo "== etcd ($ETCD_COMPARE), load at start: $THEIRS_LOAD0"
  if [ "$TLS" = 1 ]; then
    ETCD_OUT=$(CLIENTS="$CLIENTS" DUR="$DUR" VALUE="$VALUE" ETCD_COMPARE="$ETCD_COMPARE" \
      bash "$ROOT/tests/bench/etcd-tls.sh")
  else
    ETCD_OUT=$(CLIENTS="$CLIENTS" DUR="$DUR" VALUE="$VALUE" MODE="$MODE" READ_PCT="$READ_PCT" \
      MEMBERS="$MEMBERS" bash "$ETCD_COMPARE")
  fi
  # The etcd scripts leave their members' data in BENCH_TMP/data (or their /tmp folder).
  if [ -z "${KEEP_DATA:-}" ]; then
    if [ "$TLS" = 1 ]; then ETCD_TMP=${BENCH_TMP:-/tmp/etcd-tls}; else ETCD_TMP=${BENCH_TMP:-/tmp/etcd-compare}; fi
    rm -rf "$ETCD_TMP/data"
  fi
  echo "$ETCD_OUT"
  for c in $CLIENTS; do
    THEIRS[$c]=$(grep -E " clients=$c .*ops/s=" <<<"$ETCD_OUT" | head -1 || true)
    THEIRS_CPU[$c]=$(field "$(grep -E " clients=$c cpu_us_per_op=" <<<"$ETCD_OUT" | head -1 || true)" cpu_us_per_op)
  done
  THEIRS_LOAD1=$(load)
  echo "== load after etcd: $THEIRS_LOAD1"
fi

if [ -n "${CSV:-}" ]; then
  [ -s "$CSV" ] || echo "system,mode,value_bytes,members,clients,dur_s,ops_per_s,mb_per_s,p50_ms,p99_ms,errors,cpu_us_per_op,load_start,load_end" >"$CSV"
  row() { # SYSTEM CLIENTS LINE CPU LOAD_START LOAD_END
    local o; o=$(field "$3" ops/s)
    echo "$1,$MODE,$VALUE,$MEMBERS,$2,$DUR,$o,$(mbps "$o"),$(field "$3" p50),$(field "$3" p99),$(field "$3" errors),$4,${5%% *},${6%% *}" >>"$CSV"
  }
  for c in $CLIENTS; do
    row raftd "$c" "${OURS[$c]:-}" "${OURS_CPU[$c]:-}" "$OURS_LOAD0" "$OURS_LOAD1"
    [ -n "${SKIP_ETCD:-}" ] || row etcd "$c" "${THEIRS[$c]:-}" "${THEIRS_CPU[$c]:-}" "$THEIRS_LOAD0" "$THEIRS_LOAD1"
  done
fi

echo
echo "== summary (TLS=$TLS MODE=$MODE DUR=${DUR}s VALUE=${VALUE}B, $MEMBERS nodes each, $(nproc) cores;" \
  "load raftd side $OURS_LOAD0 -> $OURS_LOAD1${THEIRS_LOAD0:+, etcd side $THEIRS_LOAD0 -> $THEIRS_LOAD1}: noisy if high)"
for c in $CLIENTS; do
  o=${OURS[$c]:-} t=${THEIRS[$c]:-}
  echo "clients=$c"
  echo "  raftd: ${o:-(no result)}"
  echo "  raftd: $(mbps "$(field "$o" ops/s)") MB/s cpu_us_per_op=${OURS_CPU[$c]:-?}"
  if [ -z "${SKIP_ETCD:-}" ]; then
    echo "  etcd:  ${t:-(no result)}"
    echo "  etcd:  $(mbps "$(field "$t" ops/s)") MB/s cpu_us_per_op=${THEIRS_CPU[$c]:-?}"
    echo "  ratio raftd/etcd: ops/s x$(ratio "$(field "$o" ops/s)" "$(field "$t" ops/s)")" \
      " p99 x$(ratio "$(field "$o" p99)" "$(field "$t" p99)")" \
      " cpu_us_per_op etcd/raftd x$(ratio "${THEIRS_CPU[$c]:-}" "${OURS_CPU[$c]:-}")"
  fi
done
disk_summary() { # WHEN LINE
  echo "disk $1: single fdatasync p50 $(field "$2" single_p50_us) us;" \
    "$MEMBERS at once, majority-th done p50 $(field "$2" quorum_p50_us) us, p99 $(field "$2" quorum_p99_us) us" \
    "(the disk's share of a 1-client write); a bare replicated write (4 loopback hops and the syncs," \
    "nothing else) p50 $(field "$2" path_p50_us) us"
}
[ -z "$DISK" ] || disk_summary "before the run" "$DISK"
[ -z "$DISK_MID" ] || disk_summary "between raftd's side and etcd's" "$DISK_MID"
printf '%s' "$RSS"
grep 'rss_kb' <<<"$ETCD_OUT" || true
