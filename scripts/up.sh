#!/usr/bin/env bash
# `npm run up`: from a fresh machine to a running embedded Fast Sandbox, in the foreground.
# Installs what is missing, starts containerd, builds, imports the base image (into the containerd
# namespace `fsb up` runs in), then runs `fsb up`.
# Arguments go to `fsb up` (e.g. `npm run up -- --port 7171`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run --silent build

# The base image goes into the containerd namespace `fsb up` runs in (else its sandboxes find none
# there and pull it from fast-sandbox.io, which serves nothing): the namespace as `fsb up` settles it
# (its option, the environment, else where the data directory's last `fsb up` ran), and the image
# as it reads it, its option (`--image y` or `--image=y`, the last one wins) over the environment.
namespace="$(node packages/cli/bin/fsb.js up --print-containerd-namespace "$@")"
base_image="${FSB_BASE_IMAGE:-fast-sandbox.io/base:latest}"
image="$base_image"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --) break ;;
    --image=*) image="${args[i]#*=}" ;;
    --image) image="${args[i + 1]-}"; i=$((i + 1)) ;;
  esac
done
# The repository of a reference: a ':' after the last '/' starts its tag (as oci_split_reference).
repository() { if [[ "${1##*/}" == *:* ]]; then echo "${1%:*}"; else echo "$1"; fi; }
# build-base-image.sh names busybox as the image it is given. A --image of the base image's
# repository (another tag) is built so; another one (a registry's, or another local image such as
# fast-sandbox.io/code-interpreter) is not busybox and is pulled or imported as itself, so the base
# image is imported under its own name, as `fsb run --image` names it.
[[ "$(repository "$image")" == "$(repository "$base_image")" ]] || image="$base_image"
bash scripts/build-base-image.sh "$image" "$namespace"
# The control plane's Node.js flags and environment (CONTROL_PLANE_NODE_FLAGS and CONTROL_PLANE_ENV in
# packages/controlplane/src/control-plane-process.ts), so that fsb up need not run itself again with them.
exec env MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}" node --max-semi-space-size=4 packages/cli/bin/fsb.js up "$@"
