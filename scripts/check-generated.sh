#!/usr/bin/env bash
# Fails when a generated artefact differs from what its source generates (CI drift check).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/generate.sh
if ! git diff --exit-code --stat -- packages/api/src/gen packages/agent/src/containerd/gen packages/envd/gen packages/sdk/src/gen config/crd \
  || [ -n "$(git status --porcelain -- packages/api/src/gen packages/agent/src/containerd/gen packages/envd/gen packages/sdk/src/gen config/crd)" ]; then
  echo "Generated files are out of date: run 'npm run generate' and commit the result." >&2
  exit 1
fi
echo "generated artefacts are up to date"
