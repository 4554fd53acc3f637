#!/usr/bin/env bash
# Checks that vendor/patches/*.patch, applied in order to ractor_cluster 0.16.5 as
# published on crates.io, give exactly vendor/ractor_cluster/ (vendor/README.md).
# The published crate is downloaded once and kept in target/vendor-patches/; its
# sha256 is pinned below (the same as the crates.io index's checksum for 0.16.5).
# Exits non-zero if the download does not match, a patch does not apply cleanly
# (no fuzz), or the result differs from vendor/ractor_cluster/.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

name=ractor_cluster
version=0.16.5
sha256=3439e8f54ac2b977cd00232d646af6e78ca2b99d29ad91fc5e3e2b61623d2e28
urls=(
  "https://static.crates.io/crates/$name/$name-$version.crate"
  "https://crates.io/api/v1/crates/$name/$version/download"
)
# Files cargo adds or drops when it unpacks or packages a crate, and build output.
excludes=(-x Cargo.lock -x .cargo-ok -x target)

fail() {
  printf 'check-vendor-patches: %s\n' "$*" >&2
  exit 1
}

verified() {
  [ -f "$1" ] && [ "$(sha256sum "$1")" = "$sha256  $1" ]
}

cache=target/vendor-patches
crate="$cache/$name-$version.crate"
mkdir -p "$cache"
if ! verified "$crate"; then
  rm -f "$crate"
  for url in "${urls[@]}"; do
    if curl -fsSL --retry 3 -o "$crate.part" "$url"; then
      mv "$crate.part" "$crate"
      break
    fi
  done
  rm -f "$crate.part"
  [ -f "$crate" ] || fail "could not download $name $version from crates.io"
  if ! verified "$crate"; then
    rm -f "$crate"
    fail "$name-$version.crate does not have the pinned sha256 $sha256"
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$crate" -C "$work"
tree="$work/$name-$version"
[ -d "$tree" ] || fail "$name-$version.crate did not unpack to $name-$version/"

shopt -s nullglob
patches=(vendor/patches/[0-9][0-9][0-9][0-9]-*.patch)
[ ${#patches[@]} -gt 0 ] || fail "no patches in vendor/patches/"
for p in "${patches[@]}"; do
  if ! out=$(patch -d "$tree" -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch \
    --reject-file=- -i "$PWD/$p" 2>&1); then
    printf '%s\n' "$out" >&2
    fail "$p does not apply cleanly on top of the ones before it"
  fi
done

# Without -N: a file on one side only is reported as such, even an empty one.
if ! diff -ru "${excludes[@]}" "$tree" vendor/ractor_cluster >"$work/difference"; then
  head -n 200 "$work/difference" >&2
  fail "published $name $version + vendor/patches/ differs from vendor/ractor_cluster/" \
    "(the difference is above: update the patch that owns it, see vendor/README.md)"
fi
echo "vendor/patches/ (${#patches[@]} patches) on $name $version = vendor/ractor_cluster/"
