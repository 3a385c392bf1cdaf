# Sourced by the bench scripts: stops exactly the raftd nodes a script started (their PIDs,
# recorded at start in the array PIDS, checked to still be raftd so a reused PID is left
# alone): SIGTERM, up to 5 s, then SIGKILL.
ours() { [ -n "$1" ] && grep -q raftd "/proc/$1/cmdline" 2>/dev/null; }
stop_pids() {
  for p in "${PIDS[@]:-}"; do ours "$p" && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do
    for _ in $(seq 1 50); do ours "$p" || break; sleep 0.1; done
    ours "$p" && kill -9 "$p" 2>/dev/null || true
  done
  PIDS=()
}
