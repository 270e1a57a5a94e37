#!/usr/bin/env bash
# Builds the Kubernetes mode's images — controller, agent, janitor (build/*.Dockerfile) — as OCI
# images with buildah, daemonless (Debian's `buildah` package; `bud --isolation chroot`, no Docker,
# no registry). Each image is left in buildah's local storage as localhost/fast-sandbox/<name>:<tag>
# and written to <out>/fast-sandbox-<name>-<tag>.oci.tar (an OCI archive: `skopeo copy
# oci-archive:… docker://127.0.0.1:5000/…` pushes it to a loopback registry). With
# --containerd-namespace the archives are also imported into the local containerd, named
# docker.io/fast-sandbox/<name>:<tag> — what config/default refers to (`fast-sandbox/<name>:<tag>`).
#
# It never pulls: the base image (a Debian image with Node.js 20.19+ and npm, default
# docker.io/library/node:20-bookworm-slim) must already be in buildah's local storage, e.g.
#   skopeo copy oci-archive:node-20-bookworm-slim.tar containers-storage:docker.io/library/node:20-bookworm-slim
# or `buildah pull docker.io/library/node:20-bookworm-slim` where a registry is reachable, or built
# here without one (scripts/build-node-base-image.sh: Debian 12 and this machine's Node.js). The
# builds themselves install from the npm registry and a Debian mirror (npm ci, apt-get); the agent
# image's in-sandbox daemon is built on this machine first (scripts/build-envd.sh: Go). Behind a
# TLS-inspecting proxy, --ca-file (default $NODE_EXTRA_CA_CERTS) names extra CA certificates that
# npm trusts during the build; they are mounted into the build steps only, never into an image.
#
# With --push PREFIX each image is also pushed to a registry as PREFIX/<name>:<tag> (e.g. --push
# registry.example/fast-sandbox gives registry.example/fast-sandbox/agent:0.1.0), with the
# credentials of `buildah login` (or REGISTRY_AUTH_FILE); --push-tls-verify false for a registry
# served over plain HTTP or with a certificate this machine does not trust. It then prints the
# `images:` entries that make config/default use the pushed images (the controller's
# FSB_AGENT_IMAGE included).
#
#   scripts/build-images.sh [--base IMAGE] [--tag TAG] [--out DIR] [--ca-file FILE] [--containerd-namespace NS] [--push PREFIX [--push-tls-verify true|false]] [controller|agent|janitor]…
#
# Defaults: all three images; tag = the version in package.json; out = .cache/images. Needs root
# (buildah's chroot isolation and storage). test/e2e/images-build-and-run builds, pushes and runs the images.
set -euo pipefail
cd "$(dirname "$0")/.."

base="${FSB_BASE_IMAGE:-docker.io/library/node:20-bookworm-slim}"
tag="$(node -p 'require("./package.json").version')"
out=".cache/images"
ca_file="${NODE_EXTRA_CA_CERTS:-}"
containerd_namespace=""
push_prefix=""
push_tls_verify=true
images=()

usage() {
  sed -n '/^#   scripts\/build-images.sh/s/^#   //p' "$0" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --base) base="${2:?--base needs an image}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a tag}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --ca-file) ca_file="${2?--ca-file needs a file (or '' for none)}"; shift 2 ;;
    --containerd-namespace) containerd_namespace="${2:?--containerd-namespace needs a namespace}"; shift 2 ;;
    --push) push_prefix="${2:?--push needs a registry and repository prefix, e.g. registry.example/fast-sandbox}"; shift 2 ;;
    --push-tls-verify)
      case "${2:-}" in
        true | false) push_tls_verify="$2"; shift 2 ;;
        *) echo "build-images: --push-tls-verify takes true or false, not '${2:-}'" >&2; usage ;;
      esac ;;
    controller | agent | janitor) images+=("$1"); shift ;;
    -h | --help) usage ;;
    *) echo "build-images: unknown argument '$1'" >&2; usage ;;
  esac
done
[ ${#images[@]} -gt 0 ] || images=(controller agent janitor)
# A reference without a tag or digest: PREFIX/<name>:<tag> must be one (lower case, no scheme).
push_prefix="${push_prefix%/}"
if [ -n "$push_prefix" ] && ! [[ "$push_prefix" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$ ]]; then
  echo "build-images: --push '$push_prefix' is not a registry host with an optional repository path (lower case, no scheme, no tag), e.g. registry.example/fast-sandbox or 127.0.0.1:5000/fsb" >&2
  exit 2
fi

if ! command -v buildah >/dev/null 2>&1; then
  echo "build-images: buildah is missing; install Debian's package: apt-get install -y buildah" >&2
  exit 1
fi
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  echo "build-images: the base image '$base' is not in buildah's local storage, and this script never pulls." >&2
  echo "  Load it first, e.g.: skopeo copy oci-archive:FILE containers-storage:$base" >&2
  echo "  or name a local Debian + Node.js 20 image with --base (buildah images lists them)." >&2
  echo "  Without a registry: bash scripts/build-node-base-image.sh, then --base localhost/fast-sandbox/node-base:20-bookworm" >&2
  exit 1
fi
if [ -n "$containerd_namespace" ] && ! command -v ctr >/dev/null 2>&1; then
  echo "build-images: --containerd-namespace needs ctr (Debian's containerd package)" >&2
  exit 1
fi

ca_args=()
if [ -n "$ca_file" ]; then
  [ -r "$ca_file" ] || { echo "build-images: cannot read the CA file '$ca_file'" >&2; exit 1; }
  ca_args=(--volume "$(realpath "$ca_file"):/run/fsb-build-ca.crt:ro" --build-arg NODE_EXTRA_CA_CERTS=/run/fsb-build-ca.crt)
fi

mkdir -p "$out"
# The in-sandbox daemon is Go (1.24+, which no Debian 12 package has): built here, as `npm run build`
# builds it, into packages/envd/build/fsb-envd (static), which the agent image copies as it is.
for name in "${images[@]}"; do
  if [ "$name" = agent ]; then bash scripts/build-envd.sh; fi
done
for name in "${images[@]}"; do
  image="localhost/fast-sandbox/$name:$tag"
  archive="$out/fast-sandbox-$name-$tag.oci.tar"
  echo "build-images: building $image from build/$name.Dockerfile on $base" >&2
  # --layers: the build stage, the same in the three Dockerfiles, is built once and reused.
  buildah bud --isolation chroot --pull=never --layers \
    --ignorefile build/dockerignore \
    --build-arg "BASE_IMAGE=$base" "${ca_args[@]}" \
    -f "build/$name.Dockerfile" -t "$image" .
  rm -f "$archive"
  # The archive's reference is the tag; `ctr images import --base-name` adds the repository.
  buildah push "$image" "oci-archive:$archive:$tag"
  if [ -n "$containerd_namespace" ]; then
    ctr -n "$containerd_namespace" images import --base-name "docker.io/fast-sandbox/$name" "$archive"
  fi
  echo "build-images: $image → $archive" >&2
  if [ -n "$push_prefix" ]; then
    echo "build-images: pushing $image to docker://$push_prefix/$name:$tag" >&2
    buildah push --tls-verify="$push_tls_verify" "$image" "docker://$push_prefix/$name:$tag"
  fi
done
if [ -n "$push_prefix" ]; then
  echo "build-images: pushed. For config/default to use them, set its kustomization.yaml's images: to" >&2
  echo "images:"
  for name in controller agent janitor; do
    printf '  - name: fast-sandbox/%s\n    newName: %s/%s\n    newTag: %s\n' "$name" "$push_prefix" "$name" "$tag"
  done
fi
