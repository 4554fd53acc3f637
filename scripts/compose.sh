#!/usr/bin/env bash
# Runs the compose cluster with whichever Compose this machine has (`docker compose`
# or `docker-compose`), making sure the cookie file exists first.
#
#   scripts/compose.sh up       # builds the image (scripts/build-image.sh), then `up`
#   scripts/compose.sh up --scale worker=5   # the same with five workers
#   scripts/compose.sh down     # stops every node gracefully and removes the containers
#   scripts/compose.sh ARGS...  # any other Compose command (ps, logs, kill, pause, ...)
#   TLS=1 scripts/compose.sh up # the same with mutual TLS on every link
#                               # (docker-compose.tls.yml; certificates in ./certs)
#
# .env is created once, readable by you only, with NODE_COOKIE and NODE_HTTP_TOKEN set
# to random secrets (a token is added to an older .env that has none).
# With TLS=1, ./certs is created once by scripts/make-certs.sh (a CA, one certificate
# per node, and one for clients). The nodes' keys are made readable by your group (the
# containers run as uid 10001 in it); each container mounts only its own key.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f .env ]; then
  (umask 077 && printf 'NODE_COOKIE=%s\n' "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" > .env)
  echo "compose: wrote a random NODE_COOKIE to .env" >&2
fi
if ! grep -q '^NODE_HTTP_TOKEN=' .env; then
  (umask 077 && printf 'NODE_HTTP_TOKEN=%s\n' "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" >> .env)
  echo "compose: wrote a random NODE_HTTP_TOKEN to .env" >&2
fi

files=(-f docker-compose.yml)
if [ "${TLS:-0}" = 1 ]; then
  # A certificate names its node: with TLS the workers are the named worker-1 and
  # worker-2 (docker-compose.tls.yml), not replicas of a scaled service.
  for arg in "$@"; do
    case "$arg" in
      --scale|--scale=*)
        echo "compose: --scale does not apply with TLS=1 (each node needs a certificate naming it; see docker-compose.tls.yml)" >&2
        exit 2 ;;
    esac
  done
  for member in coordinator worker-1 worker-2 client; do
    if [ ! -f "certs/$member.pem" ] || [ ! -f "certs/$member-key.pem" ]; then
      scripts/make-certs.sh certs "$member"
    fi
  done
  # The nodes run as uid 10001 in your group: they can read keys of mode 640.
  chmod 640 certs/coordinator-key.pem certs/worker-1-key.pem certs/worker-2-key.pem
  export HOST_GID
  HOST_GID=$(id -g)
  files+=(-f docker-compose.tls.yml)
fi

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "compose: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi

if [ "${1:-}" = up ]; then
  scripts/build-image.sh
fi
exec "${compose[@]}" "${files[@]}" "$@"
