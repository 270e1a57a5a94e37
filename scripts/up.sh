#!/usr/bin/env bash
# `npm run up`: from a fresh machine to a running embedded Fast Sandbox, in the foreground.
# Installs what is missing, starts containerd, builds, imports the base image, then runs `fsb up`.
# Arguments go to `fsb up` (e.g. `npm run up -- --port 7171`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run --silent build
bash scripts/build-base-image.sh
exec node packages/cli/bin/fsb.js up "$@"
