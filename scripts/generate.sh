#!/usr/bin/env bash
# Regenerates every generated artefact from its one source:
#   proto/**/*.proto          → packages/api/src/gen/      (protoc + protoc-gen-es)
#   containerd's .proto files → packages/agent/src/containerd/gen/
#   packages/api/src/schema   → config/crd/*.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

rm -rf packages/api/src/gen
mkdir -p packages/api/src/gen
protoc --plugin=protoc-gen-es=node_modules/.bin/protoc-gen-es \
  --es_out=packages/api/src/gen --es_opt=target=ts,import_extension=js \
  -I proto $(cd proto && find fastsandbox -name '*.proto' | sort)

if [ -f scripts/generate-containerd.sh ] && [ "${SKIP_CONTAINERD_GEN:-}" != 1 ]; then bash scripts/generate-containerd.sh; fi

node --conditions=development --import tsx scripts/generate-crds.ts
