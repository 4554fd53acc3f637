#!/usr/bin/env bash
# Checks the README's first command end to end: scripts/cluster.sh must show complete
# live cluster totals, and stop all three nodes cleanly (exit 0, final values logged)
# when interrupted. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp -d)
# Job control puts cluster.sh in its own process group, as a terminal would, so the
# Ctrl-C below reaches the script and its nodes the way a person's Ctrl-C does.
set -m
# COUNTERS and LOAD are pinned: the checks below count on 4 counters per node.
BASE_PORT=${BASE_PORT:-24697} HTTP_BASE_PORT=${HTTP_BASE_PORT:-28080} COUNTERS=4 LOAD=200 LOG_DIR="$out" DATA_DIR="$out/data" \
  NODE_COOKIE=check-cookie \
  bash scripts/cluster.sh >"$out/stdout" 2>"$out/coordinator.log" &
script_pid=$!
cleanup() { kill -TERM -- "-$script_pid" 2>/dev/null || true; }
trap cleanup EXIT

fail() {
  echo "check-cluster-script: $*" >&2
  tail -n 30 "$out/coordinator.log" >&2 || true
  exit 1
}

# The release build can take minutes on a clean machine: allow for it.
deadline=$((SECONDS + 900))
until grep -q "counters=12/12 nodes=3/3.*complete=true" "$out/coordinator.log"; do
  kill -0 "$script_pid" 2>/dev/null || fail "cluster.sh exited early"
  [ $SECONDS -lt $deadline ] || fail "no complete cluster summary within 900 s"
  sleep 1
done
grep "cluster: total_value" "$out/coordinator.log" | tail -n 1

# Every node's HTTP side answers: ready, and a complete collection as JSON.
http_get() { # PORT PATH: the whole answer (bash's /dev/tcp: no curl needed)
  exec 3<>"/dev/tcp/127.0.0.1/$1"
  printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$2" >&3
  cat <&3
  exec 3<&-
}
for i in 0 1 2; do
  port=$((${HTTP_BASE_PORT:-28080} + i))
  http_get "$port" /health/ready | head -n 1 | grep -q " 200 " \
    || fail "the HTTP side on port $port is not ready"
done
http_deadline=$((SECONDS + 20))
until http_get "${HTTP_BASE_PORT:-28080}" /stats | grep -q '"complete":true'; do
  [ $SECONDS -lt $http_deadline ] \
    || fail "GET /stats on the coordinator's HTTP side gave no complete collection in 20 s"
  sleep 0.5
done

kill -INT -- "-$script_pid"
stop_deadline=$((SECONDS + 20))
while kill -0 "$script_pid" 2>/dev/null; do
  [ $SECONDS -lt $stop_deadline ] || fail "cluster.sh did not stop within 20 s of Ctrl-C"
  sleep 0.2
done
trap - EXIT
wait "$script_pid" && status=0 || status=$?
[ "$status" -eq 0 ] || fail "cluster.sh exited with $status after Ctrl-C"
for node in coordinator worker-1 worker-2; do
  log="$out/coordinator.log"
  [ "$node" = coordinator ] || log="$out/$node.log"
  finals=$(grep -c "counter stopped with final value" "$log" || true)
  [ "$finals" -eq 4 ] || fail "$node logged $finals final values, expected 4"
  grep -q "node stopped" "$log" || fail "$node did not log a clean stop"
done
echo "check-cluster-script: ok (3 nodes, complete totals, clean stop)"
rm -rf "$out"
