#!/usr/bin/env bash
# Generates the Go code of the in-sandbox daemon's RPC interface:
#   packages/envd/spec/**/*.proto → packages/envd/gen/  (protoc + protoc-gen-go + protoc-gen-connect-go)
# The two plugins are pinned here and installed with `go install` into a cache outside the repo
# (FSB_GO_BIN_CACHE, default ${XDG_CACHE_HOME:-$HOME/.cache}/fast-sandbox/go-bin). Keep their versions
# equal to google.golang.org/protobuf and connectrpc.com/connect in packages/envd/go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION=v1.19.1

GO_BIN="${GO:-}"
if [ -z "$GO_BIN" ]; then
  if command -v go >/dev/null 2>&1; then GO_BIN="$(command -v go)"
  elif [ -x /usr/local/go/bin/go ]; then GO_BIN=/usr/local/go/bin/go
  else echo "generate-envd: no Go toolchain found (install Go 1.24 or newer, or set GO=...)" >&2; exit 1; fi
fi
command -v protoc >/dev/null || { echo "generate-envd: protoc is missing; apt-get install -y protobuf-compiler" >&2; exit 1; }

BIN="${FSB_GO_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fast-sandbox/go-bin}/protoc-gen-go-$PROTOC_GEN_GO_VERSION-connect-$PROTOC_GEN_CONNECT_GO_VERSION"
if [ ! -x "$BIN/protoc-gen-go" ] || [ ! -x "$BIN/protoc-gen-connect-go" ]; then
  mkdir -p "$BIN"
  # Outside any module, so the repo's go.mod is neither read nor changed.
  for tool in "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION" \
    "connectrpc.com/connect/cmd/protoc-gen-connect-go@$PROTOC_GEN_CONNECT_GO_VERSION"; do
    (cd "$BIN" && GOBIN="$BIN" GOFLAGS= GO111MODULE=on "$GO_BIN" install "$tool")
  done
fi

cd packages/envd
rm -rf gen
mkdir -p gen
protoc --plugin=protoc-gen-go="$BIN/protoc-gen-go" --plugin=protoc-gen-connect-go="$BIN/protoc-gen-connect-go" \
  --go_out=gen --go_opt=module=fast-sandbox.io/envd/gen \
  --connect-go_out=gen --connect-go_opt=module=fast-sandbox.io/envd/gen \
  -I spec $(cd spec && find . -name '*.proto' | sed 's|^\./||' | sort)
