#!/usr/bin/env bash
# Runs a local three-node counter cluster (one coordinator, two workers) on loopback,
# with load clients on every node, and shows the coordinator's live aggregated stats.
# Ctrl-C stops all three nodes cleanly (each logs its counters' final values).
#
# Environment (all optional):
#   NODE_COOKIE  cluster secret (default: a random one for this run)
#   BASE_PORT    coordinator port; workers use the next two (default 4697)
#   LOAD         operations per second per node (default 200)
#   COUNTERS     counters per node (default 4)
#   LOG_DIR      where the workers' logs go (default target/cluster-logs)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_PORT=${BASE_PORT:-4697}
LOAD=${LOAD:-200}
COUNTERS=${COUNTERS:-4}
LOG_DIR=${LOG_DIR:-target/cluster-logs}
if [ -z "${NODE_COOKIE:-}" ]; then
  NODE_COOKIE=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
fi
export NODE_COOKIE

echo "building the node binary (release)..." >&2
cargo build --release --quiet -p node
NODE=target/release/node
mkdir -p "$LOG_DIR"

pids=()
stop_all() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    echo "stopping the cluster..." >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    status=0
    for pid in "${pids[@]}"; do
      wait "$pid" || status=$?
    done
    echo "cluster stopped (worker logs: $LOG_DIR)" >&2
    exit "$status"
  fi
}
trap stop_all EXIT INT TERM

coordinator=127.0.0.1:$BASE_PORT
common=(--counters "$COUNTERS" --load "$LOAD")

"$NODE" --role coordinator --name coordinator --listen "$coordinator" "${common[@]}" &
pids+=($!)
for i in 1 2; do
  "$NODE" --role worker --name "worker-$i" --listen "127.0.0.1:$((BASE_PORT + i))" \
    --join "$coordinator" "${common[@]}" 2>"$LOG_DIR/worker-$i.log" &
  pids+=($!)
done

cat >&2 <<MSG
three nodes running: coordinator $coordinator, workers 127.0.0.1:$((BASE_PORT + 1)) and :$((BASE_PORT + 2))
the coordinator logs the cluster totals every 2 s below; Ctrl-C stops all three.
in another terminal (same NODE_COOKIE):  target/release/node stats --join $coordinator
MSG
# Wait for any node to exit (a node that fails to start ends the run) or for Ctrl-C.
wait -n "${pids[@]}" || true
