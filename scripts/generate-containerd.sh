#!/usr/bin/env bash
# Generates the TypeScript protobuf code for the containerd gRPC services the agent uses
# (containers, content, diff, images, leases, snapshots, tasks, version) and the runc shim's options into
# packages/agent/src/containerd/gen/. The output is committed and never edited by hand;
# CI regenerates it and fails on `git diff --exit-code`, so this script must stay deterministic.
#
# The .proto files come from Debian packages (system paths, overridable through the environment):
#   golang-github-containerd-containerd-dev  -> containerd's api/ protos
#   golang-github-gogo-protobuf-dev          -> gogoproto/gogo.proto
#   protobuf-compiler                        -> protoc and google/protobuf/*.proto
# Well-known types (google/protobuf/*) are not generated: protoc-gen-es maps them onto
# @bufbuild/protobuf/wkt.
set -euo pipefail

cd "$(dirname "$0")/.."

GOCODE_ROOT="${FSB_GOCODE_ROOT:-/usr/share/gocode/src}"
GOGO_PROTOBUF_ROOT="${FSB_GOGO_PROTOBUF_ROOT:-$GOCODE_ROOT/github.com/gogo/protobuf}"
PROTOBUF_INCLUDE="${FSB_PROTOBUF_INCLUDE:-/usr/include}"
PROTOC="${PROTOC:-protoc}"
PLUGIN="node_modules/.bin/protoc-gen-es"
OUT_DIR="packages/agent/src/containerd/gen"

CONTAINERD_API="github.com/containerd/containerd/api"
PROTOS=(
  "$CONTAINERD_API/services/containers/v1/containers.proto"
  "$CONTAINERD_API/services/content/v1/content.proto"
  "$CONTAINERD_API/services/diff/v1/diff.proto"
  "$CONTAINERD_API/services/images/v1/images.proto"
  "$CONTAINERD_API/services/leases/v1/leases.proto"
  "$CONTAINERD_API/services/snapshots/v1/snapshots.proto"
  "$CONTAINERD_API/services/tasks/v1/tasks.proto"
  "$CONTAINERD_API/services/version/v1/version.proto"
  "$CONTAINERD_API/types/descriptor.proto"
  "$CONTAINERD_API/types/metrics.proto"
  "$CONTAINERD_API/types/mount.proto"
  "$CONTAINERD_API/types/platform.proto"
  "$CONTAINERD_API/types/task/task.proto"
  "github.com/containerd/containerd/runtime/v2/runc/options/oci.proto"
  "gogoproto/gogo.proto"
)

for dir in "$GOCODE_ROOT/$CONTAINERD_API" "$GOCODE_ROOT/github.com/containerd/containerd/runtime" "$GOGO_PROTOBUF_ROOT/gogoproto" "$PROTOBUF_INCLUDE/google/protobuf"; do
  if [[ ! -d "$dir" ]]; then
    echo "generate-containerd: $dir is missing; install golang-github-containerd-containerd-dev," \
      "golang-github-gogo-protobuf-dev and protobuf-compiler (or set FSB_GOCODE_ROOT," \
      "FSB_GOGO_PROTOBUF_ROOT, FSB_PROTOBUF_INCLUDE)" >&2
    exit 1
  fi
done
if [[ ! -x "$PLUGIN" ]]; then
  echo "generate-containerd: $PLUGIN is missing; run npm install at the repository root" >&2
  exit 1
fi

rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"

# Sorted input and fixed include order keep the output byte-for-byte reproducible.
"$PROTOC" \
  --plugin=protoc-gen-es="$PLUGIN" \
  --es_out="$OUT_DIR" \
  --es_opt=target=ts,import_extension=js \
  -I "$GOCODE_ROOT" \
  -I "$GOGO_PROTOBUF_ROOT" \
  -I "$PROTOBUF_INCLUDE" \
  $(printf '%s\n' "${PROTOS[@]}" | LC_ALL=C sort)

echo "generate-containerd: wrote $(find "$OUT_DIR" -name '*.ts' | wc -l) files to $OUT_DIR"
