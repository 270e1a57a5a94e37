#!/usr/bin/env bash
# Builds the in-sandbox daemon (packages/envd, Go) as a static binary: it runs in any image, even
# one without libc. Output: packages/envd/build/fsb-envd. Rebuilt only when a source is newer.
# Modules come from the Go module proxy (GOPROXY) on a fresh machine, from Go's cache afterwards.
set -euo pipefail
cd "$(dirname "$0")/../packages/envd"
output=build/fsb-envd
if [ -x "$output" ] && [ -z "$(find . -path ./build -prune -o \( -name '*.go' -o -name go.mod -o -name go.sum -o -name version.json \) -newer "$output" -print -quit)" ]; then
  exit 0
fi
GO_BIN="${GO:-}"
if [ -z "$GO_BIN" ]; then
  if command -v go >/dev/null 2>&1; then GO_BIN="$(command -v go)"
  elif [ -x /usr/local/go/bin/go ]; then GO_BIN=/usr/local/go/bin/go
  else echo "build-envd: no Go toolchain found (install Go 1.24 or newer, or set GO=...)" >&2; exit 1; fi
fi
mkdir -p build
CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" "$GO_BIN" build -trimpath -ldflags "-s -w" -o "$output.tmp" ./cmd/fsb-envd
mv "$output.tmp" "$output"
