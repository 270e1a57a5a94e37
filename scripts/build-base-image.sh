#!/usr/bin/env bash
# Builds the small local base image (busybox-static in an OCI layout, made with umoci) and
# imports it into containerd, unpacked for the default snapshotter (overlayfs).
#
# Idempotent: the OCI archive is cached and rebuilt only when missing; the import is skipped
# when containerd's namespace already has the image.
#
# Usage: scripts/build-base-image.sh [IMAGE] [CONTAINERD_NAMESPACE]
#   IMAGE                 env FSB_BASE_IMAGE,            default fast-sandbox.io/base:latest
#   CONTAINERD_NAMESPACE  env FSB_CONTAINERD_NAMESPACE,  default fast-sandbox
#   cache directory       env FSB_IMAGE_CACHE_DIR,       default ${XDG_CACHE_HOME:-$HOME/.cache}/fast-sandbox/images
#   containerd socket     env FSB_CONTAINERD_ADDRESS,    default /run/containerd/containerd.sock
#   the image's USER      env FSB_BASE_IMAGE_USER,       default 0:0 (tests build variants that name an account)
# Needs root (ctr talks to containerd's socket) and the Debian packages busybox-static, umoci
# and containerd.
set -euo pipefail
source "$(dirname "$0")/lib/oci-image.sh"

IMAGE="${1:-${FSB_BASE_IMAGE:-fast-sandbox.io/base:latest}}"
NAMESPACE="${2:-${FSB_CONTAINERD_NAMESPACE:-fast-sandbox}}"
CACHE_DIR="${FSB_IMAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fast-sandbox/images}"
ADDRESS="${FSB_CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}"
BUSYBOX="${FSB_BUSYBOX:-/bin/busybox}"
IMAGE_USER="${FSB_BASE_IMAGE_USER:-0:0}"
[[ "$IMAGE_USER" =~ ^[A-Za-z0-9_.:-]+$ ]] || { echo "build-base-image: FSB_BASE_IMAGE_USER=$IMAGE_USER is not a user[:group]" >&2; exit 1; }

log() { echo "build-base-image: $*" >&2; }
die() { log "$*"; exit 1; }

for tool in umoci ctr sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing; apt-get install -y umoci containerd"
done
[[ -x "$BUSYBOX" ]] || die "$BUSYBOX is missing; apt-get install -y busybox-static"
file_type="$(LC_ALL=C "$BUSYBOX" 2>&1 | head -n1 || true)"
[[ "$file_type" == BusyBox* ]] || die "$BUSYBOX is not busybox"

oci_split_reference "$IMAGE"

ctr_ns() { ctr --address "$ADDRESS" -n "$NAMESPACE" "$@"; }

if oci_image_listed "$ADDRESS" "$NAMESPACE" "$IMAGE"; then
  log "$IMAGE already present in containerd namespace $NAMESPACE"
  exit 0
fi

# The archive name carries the busybox binary's digest and the tag so a busybox upgrade rebuilds it.
busybox_digest="$(sha256sum "$BUSYBOX" | cut -c1-16)"
user_suffix=""
[[ "$IMAGE_USER" == 0:0 ]] || user_suffix="-user-${IMAGE_USER//:/-}"
ARCHIVE="$CACHE_DIR/base-${busybox_digest}-${TAG}${user_suffix}.oci.tar"

if [[ ! -s "$ARCHIVE" ]]; then
  log "building $ARCHIVE"
  mkdir -p "$CACHE_DIR"
  work="$(mktemp -d "$CACHE_DIR/.build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  oci_new_bundle "$work" "$TAG"
  rootfs="$work/bundle/rootfs"
  oci_busybox_rootfs "$rootfs" "$BUSYBOX"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

  umoci repack --image "$work/layout:$TAG" "$work/bundle"
  umoci config --image "$work/layout:$TAG" \
    --config.cmd sh \
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.workingdir / \
    --config.user "$IMAGE_USER"
  oci_write_archive "$work" "$ARCHIVE"
  trap - EXIT
else
  log "using cached $ARCHIVE"
fi

oci_import "$ADDRESS" "$NAMESPACE" "$REPOSITORY" "$IMAGE" "$ARCHIVE"
