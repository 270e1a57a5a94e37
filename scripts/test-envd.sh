#!/usr/bin/env bash
# The in-sandbox daemon's Go tests (packages/envd): gofmt, go vet, then go test, which runs real
# processes, PTYs and files in temporary directories (as root: it switches users and mounts a tmpfs).
set -euo pipefail
cd "$(dirname "$0")/../packages/envd"
GO_BIN="${GO:-}"
if [ -z "$GO_BIN" ]; then
  if command -v go >/dev/null 2>&1; then GO_BIN="$(command -v go)"
  elif [ -x /usr/local/go/bin/go ]; then GO_BIN=/usr/local/go/bin/go
  else echo "test-envd: no Go toolchain found (install Go 1.24 or newer, or set GO=...)" >&2; exit 1; fi
fi
unformatted=$("$(dirname "$GO_BIN")/gofmt" -l .)
if [ -n "$unformatted" ]; then
  echo "test-envd: not gofmt-formatted (run gofmt -w packages/envd): $unformatted" >&2
  exit 1
fi
export GOFLAGS="-mod=readonly -buildvcs=false"
"$GO_BIN" vet ./...
"$GO_BIN" test -count=1 ./...
