#!/usr/bin/env bash
# Builds the `counter-cluster` Docker image without pulling anything: FROM scratch plus
# the release binary (stripped) and exactly the shared libraries it links (from ldd),
# running as an unprivileged user (uid 10001).
#
#   scripts/build-image.sh            # builds counter-cluster:latest
#   IMAGE=name:tag scripts/build-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-counter-cluster:latest}"
CONTEXT=target/docker-context
BIN=target/release/node

command -v docker >/dev/null || { echo "build-image: docker is not installed" >&2; exit 1; }

echo "build-image: cargo build --release" >&2
cargo build --release --locked -p node

umask 022
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/rootfs/usr/local/bin" "$CONTEXT/rootfs/etc" "$CONTEXT/rootfs/tmp" "$CONTEXT/data"
cp docker/Dockerfile "$CONTEXT/Dockerfile"
# Line tables help backtraces on the host; the image does without them.
objcopy --strip-debug "$BIN" "$CONTEXT/rootfs/usr/local/bin/node" 2>/dev/null \
  || cp "$BIN" "$CONTEXT/rootfs/usr/local/bin/node"

# Every library the binary links, and the dynamic loader, at their own paths.
libs=$(ldd "$BIN" | awk '/=>/ { print $3 } !/=>/ && $1 ~ /^\// { print $1 }')
for lib in $libs; do
  [ -e "$lib" ] || { echo "build-image: ldd lists $lib but it does not exist" >&2; exit 1; }
  cp --parents -L "$lib" "$CONTEXT/rootfs/"
done
# The loader is also looked up under /lib64 on x86-64; keep ldd's path and real file.

printf 'root:x:0:0:root:/:/nonexistent\nnode:x:10001:10001:node:/tmp:/nonexistent\n' \
  > "$CONTEXT/rootfs/etc/passwd"
printf 'root:x:0:\nnode:x:10001:\n' > "$CONTEXT/rootfs/etc/group"
chmod -R a+rX "$CONTEXT/rootfs"
chmod 1777 "$CONTEXT/rootfs/tmp"

if ! out=$(docker build -t "$IMAGE" "$CONTEXT" 2>&1); then
  echo "$out" >&2
  exit 1
fi
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
echo "build-image: built $IMAGE ($((size / 1024 / 1024)) MiB)" >&2
