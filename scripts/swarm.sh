#!/usr/bin/env bash
# Runs the cluster as a Docker Swarm stack (deploy/swarm/stack.yml), making its secrets
# first. The machine must be in a swarm (`docker swarm init` makes a single-node one).
#
#   scripts/swarm.sh up           # builds the image (scripts/build-image.sh), deploys
#   scripts/swarm.sh down         # removes the stack; its volumes stay
#   scripts/swarm.sh scale N      # N workers (docker service scale STACK_worker=N)
#   scripts/swarm.sh ps           # the stack's tasks
#
# STACK names the stack (default counters). The cookie and the HTTP token are random
# secrets made once in deploy/swarm/secrets/ (readable by you only); set COOKIE_FILE or
# HTTP_TOKEN_FILE to use files of your own. The stack's settings (LOAD, COUNTERS,
# WORKERS, CLUSTER_PORT, HTTP_PORT, IMAGE) come from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

STACK="${STACK:-counters}"
command -v docker >/dev/null || { echo "swarm: docker is not installed" >&2; exit 1; }
state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true)
if [ "$state" != active ]; then
  echo "swarm: this machine is not in a swarm (state: ${state:-unknown}); 'docker swarm init' makes a single-node one" >&2
  exit 1
fi

secret() {
  local file=$1
  if [ ! -f "$file" ]; then
    mkdir -p "$(dirname "$file")"
    (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' > "$file")
    echo "swarm: wrote a random secret to $file" >&2
  fi
}

case "${1:-}" in
  up)
    export COOKIE_FILE="${COOKIE_FILE:-$PWD/deploy/swarm/secrets/cookie}"
    export HTTP_TOKEN_FILE="${HTTP_TOKEN_FILE:-$PWD/deploy/swarm/secrets/http-token}"
    secret "$COOKIE_FILE"
    secret "$HTTP_TOKEN_FILE"
    scripts/build-image.sh
    exec docker stack deploy -c deploy/swarm/stack.yml "$STACK"
    ;;
  down)
    exec docker stack rm "$STACK"
    ;;
  scale)
    [ -n "${2:-}" ] || { echo "swarm: scale needs the number of workers" >&2; exit 2; }
    exec docker service scale "${STACK}_worker=$2"
    ;;
  ps)
    exec docker stack ps "$STACK"
    ;;
  *)
    echo "usage: scripts/swarm.sh up|down|scale N|ps" >&2
    exit 2
    ;;
esac
