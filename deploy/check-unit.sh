#!/usr/bin/env bash
# Proves that deploy/raftd.service, hardened as it is, still runs raftd: installs the unit
# with a 1-node cluster on 127.0.0.1, starts it, and checks that it runs unprivileged under
# its seccomp filter, serves status, writes, reads and metrics, writes WAL segments and
# snapshots, survives a restart and a kill -9 with its data, keeps the watchdog fed, refuses
# fault injection, and was never killed by the system-call filter (SIGSYS). Then it stops,
# disables and removes everything it installed.
#
# Run as root on a host whose PID 1 is systemd, with no raftd installed:
#   cargo build --release && sudo deploy/check-unit.sh
#   sudo deploy/check-unit.sh path/to/raftd path/to/raftctl
# PORT and METRICS_PORT (default 17001, 19101) choose the ports. Exit 0: every check passed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
raftd_bin=${1:-$target/release/raftd}
raftctl_bin=${2:-$target/release/raftctl}
port=${PORT:-17001}
metrics_port=${METRICS_PORT:-19101}
unit=/etc/systemd/system/raftd.service
defaults=/etc/default/raftd
installed=/usr/local/bin/raftd
cluster="--cluster 127.0.0.1:$port --cluster-id check-unit --timeout 10s"

say() { printf '== %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    if [[ ${installing:-} == yes ]]; then
        journalctl -u raftd --no-pager -n 40 >&2 || true
    fi
    exit 1
}
raftctl() { "$raftctl_bin" $cluster "$@"; }
main_pid() { systemctl show -p MainPID --value raftd; }
# GET http://127.0.0.1:$metrics_port$1 with bash alone (no curl needed): the whole answer.
http_get() {
    exec 3<>"/dev/tcp/127.0.0.1/$metrics_port"
    printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$1" >&3
    cat <&3
    exec 3<&-
}
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local seconds=$1
    shift
    for _ in $(seq "$((seconds * 5))"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}
is_leader() { [[ $(systemctl show -p StatusText --value raftd) == *leader\ in\ term* ]]; }

[[ $(id -u) == 0 ]] || fail "run as root (it installs a unit)"
state=$(systemctl is-system-running 2>/dev/null || true)
[[ $state != offline && -n $state ]] ||
    fail "systemd is not PID 1 here (systemctl is-system-running: ${state:-nothing}); run on a systemd host"
[[ -x $raftd_bin && -x $raftctl_bin ]] ||
    fail "no raftd/raftctl at $raftd_bin, $raftctl_bin (cargo build --release, or pass their paths)"
for f in "$unit" "$defaults" "$installed"; do
    [[ ! -e $f ]] || fail "$f exists: this script installs and removes its own; not touching a real install"
done
[[ ! -e /var/lib/raftd && ! -e /var/lib/private/raftd ]] ||
    fail "/var/lib/raftd exists: not touching a real node's data"

cleanup() {
    say "cleaning up"
    systemctl disable --now raftd >/dev/null 2>&1 || true
    systemctl reset-failed raftd >/dev/null 2>&1 || true
    rm -f "$unit" "$defaults" "$installed"
    rm -rf /var/lib/private/raftd /var/lib/raftd
    systemctl daemon-reload
}
trap cleanup EXIT
installing=yes

say "installing $raftd_bin as $installed, the unit, and $defaults (1 node on 127.0.0.1:$port)"
install -m 0755 "$raftd_bin" "$installed"
install -m 0644 "$here/raftd.service" "$unit"
# Small segments and frequent snapshots, so the run rolls segments over, writes snapshot
# files and compacts (creating, renaming and deleting files); a fast scrubber re-reads them.
cat >"$defaults" <<EOF
RAFTD_ID=1
RAFTD_PEERS=1=127.0.0.1:$port
RAFTD_LISTEN=127.0.0.1:$port
RAFTD_CLUSTER=check-unit
RAFTD_METRICS_LISTEN=127.0.0.1:$metrics_port
RUST_LOG=info
RAFTD_OPTS=--wal-segment-mib 1 --snapshot-entries 2000 --scrub-kib-per-sec 65536
EOF
systemctl daemon-reload
since=$(date '+%Y-%m-%d %H:%M:%S')

say "starting (Type=notify: returns once raftd said READY=1)"
systemctl enable --now raftd || fail "the unit did not start"
[[ $(systemctl is-active raftd) == active ]] || fail "not active after start"
wait_for 10 is_leader || fail "no 'leader' in the unit's STATUS= line"
say "status line: $(systemctl show -p StatusText --value raftd)"

pid=$(main_pid)
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
say "process $pid: uid $uid, $(grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' "/proc/$pid/status" | tr -s '\t\n' ' ')"
[[ $uid != 0 ]] || fail "raftd runs as root"
grep -q '^Seccomp:[[:space:]]*2' "/proc/$pid/status" || fail "no seccomp filter on raftd"
grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$pid/status" || fail "NoNewPrivs is not set"
grep -q '^CapEff:[[:space:]]*0*$' "/proc/$pid/status" || fail "raftd has capabilities"
[[ $(stat -c %u /var/lib/private/raftd) == "$uid" ]] || fail "the state directory is not the service user's"

say "raftctl status, a write and a read"
raftctl status || fail "raftctl status"
raftctl propose put check-unit hello || fail "raftctl propose put"
[[ $(raftctl get check-unit) == hello ]] || fail "raftctl get did not read back the write"

say "3.5 s of 1 KiB writes: WAL segments roll over, snapshots are written, the log compacted"
raftctl bench --clients 8 --value-bytes 1024 --warmup 500ms --duration 3s >/dev/null ||
    fail "raftctl bench"
for i in $(seq 1 20); do raftctl propose put "k$i" "v$i" >/dev/null || fail "put k$i"; done
raftctl snapshot 1 || fail "raftctl snapshot 1"
ls /var/lib/private/raftd/wal | grep -q '\.snap$' || fail "no snapshot file was written"

say "metrics and health under the filter"
metrics=$(http_get /metrics) || fail "no answer from the metrics listener"
[[ $metrics == *"raftd_server_proposals_committed_total"* ]] || fail "no raftd metrics: $metrics"
rss=$(awk '/^process_resident_memory_bytes / {print $2}' <<<"$metrics")
[[ -n $rss && $rss != 0 ]] || fail "process_resident_memory_bytes is '$rss' (/proc/self/statm unreadable?)"
[[ $(http_get /health) == *"200"*'"health":true'* ]] || fail "/health is not 200"

say "fault injection is refused (the unit does not enable it)"
set +e
out=$(raftctl fault 1 --drop 10 2>&1)
code=$?
set -e
[[ $code == 2 && $out == *"fault injection is off"* ]] || fail "fault: exit $code: $out"

say "the watchdog is fed (waiting past WatchdogSec=10)"
sleep 12
[[ $(main_pid) == "$pid" ]] || fail "raftd was restarted while idle (watchdog?)"

say "systemctl restart: recovers its data"
systemctl restart raftd || fail "restart"
wait_for 10 is_leader || fail "no leader after restart"
[[ $(raftctl get check-unit) == hello && $(raftctl get k20) == v20 ]] ||
    fail "data lost across a restart"
# Written after the last snapshot: read back after the kill -9 from the WAL's records alone.
raftctl propose put after-restart yes >/dev/null || fail "a write after the restart"

say "kill -9: Restart=on-failure brings it back with its data"
pid=$(main_pid)
systemctl kill -s KILL raftd
wait_for 15 bash -c "[[ \$(systemctl show -p MainPID --value raftd) != $pid && \$(systemctl show -p MainPID --value raftd) != 0 ]]" ||
    fail "not restarted after kill -9"
wait_for 15 is_leader || fail "no leader after kill -9"
[[ $(raftctl get check-unit) == hello && $(raftctl get k20) == v20 &&
    $(raftctl get after-restart) == yes ]] || fail "data lost across kill -9"
restarts=$(systemctl show -p NRestarts --value raftd)
[[ $restarts == 1 ]] || fail "NRestarts is $restarts, expected 1 (the kill -9)"

say "graceful stop"
systemctl stop raftd
[[ $(systemctl show -p Result --value raftd) == success ]] || fail "stop did not end in success"

say "no system call was refused by the filter (SIGSYS)"
if journalctl -u raftd --since "$since" --no-pager | grep -E 'SIGSYS|status=31|Bad system call'; then
    fail "the system-call filter killed raftd"
fi
if journalctl --since "$since" --no-pager -k 2>/dev/null | grep -iE 'raftd.*(audit|seccomp)'; then
    fail "the kernel logged seccomp events for raftd"
fi
say "PASS: the hardened unit runs raftd"
