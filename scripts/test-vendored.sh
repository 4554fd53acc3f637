#!/usr/bin/env bash
# Runs the unit tests of the patched ractor_cluster in vendor/ (vendor/README.md).
# `cargo test` tests the workspace's members only, and the vendored crate is not one:
# this builds a copy of it as a crate of its own, with its targets in target/vendored.
set -euo pipefail
cd "$(dirname "$0")/.."

copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
cp -r vendor/ractor_cluster/. "$copy"
# Our lockfile, so the crate is tested with the versions the workspace builds it with
# (cargo adds only its dev-dependencies).
cp Cargo.lock "$copy/"
# A workspace of its own, so cargo does not take it for a member of ours.
printf '\n[workspace]\n' >> "$copy/Cargo.toml"
CARGO_TARGET_DIR="$PWD/target/vendored" cargo test --manifest-path "$copy/Cargo.toml" --lib
