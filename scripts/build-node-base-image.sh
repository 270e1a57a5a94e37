#!/usr/bin/env bash
# Builds a base image for build/*.Dockerfile where no registry is reachable: Debian 12 (bookworm,
# `debootstrap --variant=minbase` from a Debian mirror) with this machine's Node.js and npm copied in
# (the `node` on PATH, its headers when installed, and the npm beside it), committed to buildah's
# local storage. It plays the part of docker.io/library/node:20-bookworm-slim:
#
#   bash scripts/build-node-base-image.sh                 # → localhost/fast-sandbox/node-base:20-bookworm
#   bash scripts/build-images.sh --base localhost/fast-sandbox/node-base:20-bookworm
#
#   scripts/build-node-base-image.sh [IMAGE]
#
# Idempotent: an image of that name already built from the same Node.js version is kept. The Node.js
# binary must run on Debian 12's libraries (a Debian or NodeSource package, or an official build) and
# be 20.19 or newer. Env: FSB_DEBIAN_MIRROR (default http://deb.debian.org/debian). Needs root and the
# Debian packages debootstrap and buildah.
set -euo pipefail

IMAGE="${1:-localhost/fast-sandbox/node-base:20-bookworm}"
MIRROR="${FSB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
LABEL="io.fast-sandbox.node-version"

log() { echo "build-node-base-image: $*" >&2; }
die() { log "$*"; exit 1; }

for tool in debootstrap buildah node npm; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y debootstrap buildah; Node.js 20.19+ on PATH)"
done
node_bin="$(readlink -f "$(command -v node)")"
node_version="$("$node_bin" -p 'process.versions.node')"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' ||
  die "Node.js $node_version is too old: the images need 20.19 or newer"
npm_dir="$(npm root -g)/npm"
[ -f "$npm_dir/bin/npm-cli.js" ] || die "npm is not where 'npm root -g' says ($npm_dir)"
headers="$(dirname "$(dirname "$node_bin")")/include/node"

if [ "$(buildah inspect --type image --format "{{index .ImageAnnotations \"$LABEL\"}}" "$IMAGE" 2>/dev/null || true)" = "$node_version" ]; then
  log "$IMAGE (Node.js $node_version) is already in buildah's storage"
  exit 0
fi

work="$(mktemp -d)"
container=""
cleanup() {
  [ -n "$container" ] && buildah rm "$container" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

log "debootstrap bookworm (minbase) from $MIRROR"
debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
  { cat "$work/debootstrap.log" >&2; die "debootstrap failed"; }
rootfs="$work/rootfs"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

log "adding Node.js $node_version ($node_bin) and npm $(npm --version) ($npm_dir)"
install -m 0755 "$node_bin" "$rootfs/usr/bin/node"
mkdir -p "$rootfs/usr/lib/node_modules" "$rootfs/usr/include"
cp -a "$npm_dir" "$rootfs/usr/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/bin/npx"
# Native modules (better-sqlite3) compile against these instead of downloading them.
if [ -f "$headers/node.h" ]; then cp -a "$headers" "$rootfs/usr/include/node"; fi
chroot "$rootfs" /usr/bin/node -e 'process.exit(0)' || die "the copied node does not run on Debian 12's libraries"

container="$(buildah from scratch)"
buildah copy --quiet "$container" "$rootfs" / >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd node \
  --annotation "$LABEL=$node_version" "$container"
buildah commit --quiet --rm "$container" "$IMAGE" >/dev/null
container=""
log "$IMAGE built (Node.js $node_version)"
