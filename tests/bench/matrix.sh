#!/usr/bin/env bash
# How cost grows with the work, raftd against etcd (issue 18): runs `compare.sh` over a set of
# points — clients x value size x mode x cluster size — writes one CSV row per system and
# point, prints a table with the ratios, and draws one chart per (mode, value, members):
# throughput and p99 against clients, both systems on each.
#
# A point group is MODE:VALUE:MEMBERS:CLIENTS, CLIENTS comma-separated; POINTS holds groups
# separated by spaces. The default is the reduced matrix:
#   write:128:3:1,4,16,64,256,1024  write:4096:3:1,16,256  write:65536:3:1,16,256
#   read:128:3:1,16,256  mixed:128:3:1,16,256  write:128:5:1,16,256
# FULL=1 runs every combination of write|read|mixed, 128|4096|65536, 3|5 members and
# 1,4,16,64,256,1024 clients (108 points a system: hours at DUR=15).
#
# Usage: tests/bench/matrix.sh
#        DUR=10 POINTS="write:128:3:1,1024 read:128:5:16" tests/bench/matrix.sh
#        SKIP_ETCD=1 ...   (raftd alone)      NO_PLOTS=1 ...   (table and CSV only)
#        CSV=tests/bench/results/matrix-X.csv PLOTS=tests/bench/plots ...
#        tests/bench/matrix.sh --plot-only FILE.csv   (table and charts of an earlier run)
# Plots need python3 with matplotlib; if missing, the script installs Debian's
# python3-matplotlib (apt) or, failing that, matplotlib with pip --user; never under CI (CI
# set): there it prints the table only. Every point's load average is in the CSV: figures
# taken while other work runs on the machine are noisy.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(git -C "$HERE" rev-parse --show-toplevel)"
DUR=${DUR:-15}
STAMP=$(date +%Y-%m-%d-%H%M)
CSV=${CSV:-$HERE/results/matrix-$STAMP.csv}
PLOTS=${PLOTS:-$HERE/plots}
fail() { echo "matrix.sh: $*" >&2; exit 1; }

if [ -n "${FULL:-}" ]; then
  POINTS=""
  for m in write read mixed; do for v in 128 4096 65536; do for n in 3 5; do
    POINTS+=" $m:$v:$n:1,4,16,64,256,1024"
  done; done; done
fi
POINTS=${POINTS:-"write:128:3:1,4,16,64,256,1024 write:4096:3:1,16,256 write:65536:3:1,16,256 read:128:3:1,16,256 mixed:128:3:1,16,256 write:128:5:1,16,256"}

# A python that can draw: the first with matplotlib; else install it (not under CI).
plot_python() {
  local py
  for py in python3 /usr/bin/python3; do
    command -v "$py" >/dev/null && "$py" -c 'import matplotlib' 2>/dev/null && { echo "$py"; return; }
  done
  [ -n "${CI:-}" ] && return 1
  echo "matrix.sh: installing matplotlib for the plots (apt python3-matplotlib, else pip --user)" >&2
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-matplotlib; } >/dev/null 2>&1 || true
    /usr/bin/python3 -c 'import matplotlib' 2>/dev/null && { echo /usr/bin/python3; return; }
  fi
  python3 -m pip install --user -q matplotlib >&2 && echo python3
}

report() {
  local csv=$1 py
  python3 "$HERE/matrix-report.py" table "$csv"
  if [ -n "${NO_PLOTS:-}" ]; then return; fi
  if py=$(plot_python); then
    mkdir -p "$PLOTS"
    "$py" "$HERE/matrix-report.py" plot "$csv" "$PLOTS"
  else
    echo "matrix.sh: no matplotlib (CI, or it could not be installed): no plots" >&2
  fi
}

if [ "${1:-}" = --plot-only ]; then
  [ -f "${2:-}" ] || fail "--plot-only needs the CSV of an earlier run"
  report "$2"
  exit 0
fi
[ $# -eq 0 ] || fail "unknown argument '$1' (settings are environment variables; see the top of the script)"

# Check every group before running any, so a typo does not cost an hour.
for g in $POINTS; do
  [[ $g =~ ^(write|read|mixed):[1-9][0-9]*:(3|5):[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
    fail "bad point group '$g': want MODE:VALUE:MEMBERS:CLIENTS, e.g. write:128:3:1,16,256 (MODE write|read|mixed, MEMBERS 3|5)"
done
[[ $DUR =~ ^[1-9][0-9]*$ ]] || fail "DUR must be a whole number of seconds (got '$DUR')"

echo "== building raftd and raftctl (release)"
(cd "$ROOT" && nice cargo build --release -q -p raftd -p raftctl)
mkdir -p "$(dirname "$CSV")"
echo "== matrix: DUR=${DUR}s groups: $POINTS"
echo "== CSV: $CSV; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for g in $POINTS; do
  IFS=: read -r mode value members clients <<<"$g"
  echo
  echo "######## $mode, ${value} B values, $members nodes, clients ${clients//,/ }"
  CLIENTS="${clients//,/ }" VALUE="$value" MODE="$mode" MEMBERS="$members" DUR="$DUR" \
    CSV="$CSV" SKIP_BUILD=1 "$HERE/compare.sh" ||
    echo "matrix.sh: group $g failed (see above); going on with the next" >&2
done
echo "== load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
report "$CSV"
