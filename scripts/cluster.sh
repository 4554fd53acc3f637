#!/usr/bin/env bash
# Runs a local three-node counter cluster (one coordinator, two workers) on loopback,
# with load clients on every node, and shows the coordinator's live aggregated stats.
# Ctrl-C stops all three nodes cleanly (each logs its counters' final values).
#
# Environment (all optional):
#   NODE_COOKIE  cluster secret (default: a random one for this run)
#   BASE_PORT    coordinator port; workers use the next two (default 4697)
#   HTTP_BASE_PORT  coordinator's HTTP port on loopback; workers use the next two
#                (default 8080). Reads are open there; changes need NODE_HTTP_TOKEN,
#                if you set one.
#   LOAD         operations per second per node (default 200)
#   COUNTERS     counters per node (default 4)
#   LOG_DIR      where the workers' logs go (default target/cluster-logs)
#   DATA_DIR     where the nodes keep their counters, one directory per node (default
#                data: the next run carries on from them; delete it to start from zero)
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_PORT=${BASE_PORT:-4697}
HTTP_BASE_PORT=${HTTP_BASE_PORT:-8080}
LOAD=${LOAD:-200}
COUNTERS=${COUNTERS:-4}
LOG_DIR=${LOG_DIR:-target/cluster-logs}
DATA_DIR=${DATA_DIR:-data}
if [ -z "${NODE_COOKIE:-}" ]; then
  NODE_COOKIE=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
fi
export NODE_COOKIE

echo "building the node binary (release)..." >&2
cargo build --release --quiet -p node
NODE=target/release/node
mkdir -p "$LOG_DIR"

pids=()
# Stops every node still running and exits with the first failure among them, or with
# $1 (the status of a node that had already stopped on its own).
stop_all() {
  local status=${1:-0} rc pid
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    echo "stopping the cluster..." >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do
      # 127: already reaped by `wait -n` below; its status is in $1.
      wait "$pid" 2>/dev/null && rc=0 || rc=$?
      if [ "$rc" -ne 0 ] && [ "$rc" -ne 127 ] && [ "$status" -eq 0 ]; then
        status=$rc
      fi
    done
    echo "cluster stopped (worker logs: $LOG_DIR)" >&2
  fi
  exit "$status"
}
trap stop_all INT TERM
trap 'stop_all $?' EXIT

coordinator=127.0.0.1:$BASE_PORT
common=(--counters "$COUNTERS" --load "$LOAD")

"$NODE" --role coordinator --name coordinator --listen "$coordinator" \
  --http "127.0.0.1:$HTTP_BASE_PORT" --data-dir "$DATA_DIR/coordinator" "${common[@]}" &
pids+=($!)
for i in 1 2; do
  "$NODE" --role worker --name "worker-$i" --listen "127.0.0.1:$((BASE_PORT + i))" \
    --join "$coordinator" --http "127.0.0.1:$((HTTP_BASE_PORT + i))" \
    --data-dir "$DATA_DIR/worker-$i" "${common[@]}" \
    2>"$LOG_DIR/worker-$i.log" &
  pids+=($!)
done

cat >&2 <<MSG
three nodes running: coordinator $coordinator, workers 127.0.0.1:$((BASE_PORT + 1)) and :$((BASE_PORT + 2))
the coordinator logs the cluster totals every 2 s below; Ctrl-C stops all three.
in another terminal (same NODE_COOKIE):  target/release/node stats --join $coordinator
over HTTP:  curl http://127.0.0.1:$HTTP_BASE_PORT/stats  (and /cluster/members, /health/ready)
MSG
# Wait for Ctrl-C, or for a node to exit on its own (one that cannot start, say), which
# ends the run with that node's status.
status=0
wait -n "${pids[@]}" || status=$?
echo "a node exited with status $status; see the log above or $LOG_DIR" >&2
exit "$status"
