# Sourced by the bench scripts: stops exactly the raftd nodes a script started (their PIDs,
# recorded at start in the array PIDS, checked to still be raftd so a reused PID is left
# alone): SIGTERM, up to 5 s, then SIGKILL. Also what the scripts measure those nodes with.
ours() { [ -n "$1" ] && grep -q raftd "/proc/$1/cmdline" 2>/dev/null; }
stop_pids() {
  for p in "${PIDS[@]:-}"; do ours "$p" && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do
    for _ in $(seq 1 50); do ours "$p" || break; sleep 0.1; done
    ours "$p" && kill -9 "$p" 2>/dev/null || true
  done
  PIDS=()
}

# CPU clock ticks (user + system) used so far by the nodes in PIDS.
cpu_ticks() {
  local t=0 p
  for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
# field LINE KEY: the number after "KEY=" in a result line (units stripped).
field() { sed -nE "s|.* $2=([0-9.]+).*|\1|p" <<<"$1" | head -1; }
# The load average over 1, 5 and 15 minutes.
load() { cut -d' ' -f1-3 /proc/loadavg; }
