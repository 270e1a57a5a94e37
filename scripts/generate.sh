#!/usr/bin/env bash
# Regenerates every generated artefact from its one source:
#   proto/**/*.proto          → packages/api/src/gen/      (protoc + protoc-gen-es)
#   containerd's .proto files → packages/agent/src/containerd/gen/
#   packages/api/src/schema   → config/crd/*.yaml
#   packages/envd/spec        → packages/envd/gen/         (protoc + protoc-gen-go + protoc-gen-connect-go, generate-envd.sh)
#   packages/envd/spec        → packages/sdk/src/gen/envd/ (protoc + protoc-gen-es: the SDK's client of the daemon)
set -euo pipefail
cd "$(dirname "$0")/.."

rm -rf packages/api/src/gen
mkdir -p packages/api/src/gen
protoc --plugin=protoc-gen-es=node_modules/.bin/protoc-gen-es \
  --es_out=packages/api/src/gen --es_opt=target=ts,import_extension=js \
  -I proto $(cd proto && find fastsandbox -name '*.proto' | sort)

rm -rf packages/sdk/src/gen
mkdir -p packages/sdk/src/gen/envd
protoc --plugin=protoc-gen-es=node_modules/.bin/protoc-gen-es \
  --es_out=packages/sdk/src/gen/envd --es_opt=target=ts,import_extension=js \
  -I packages/envd/spec $(cd packages/envd/spec && find . -name '*.proto' | sed 's|^\./||' | sort)

bash scripts/generate-envd.sh

if [ -f scripts/generate-containerd.sh ] && [ "${SKIP_CONTAINERD_GEN:-}" != 1 ]; then bash scripts/generate-containerd.sh; fi

node --conditions=development --import tsx scripts/generate-crds.ts
