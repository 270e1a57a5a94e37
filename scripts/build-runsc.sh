#!/usr/bin/env bash
# Builds a current runsc (gVisor) from the Go module proxy, once, and prints its path.
#   FSB_RUNSC_PATH=$(bash scripts/build-runsc.sh) npm run bench -- restore
# Debian 12's runsc (20221219) is what the agents use by default; this one restores faster and
# checkpoints in place (see docs/PERFORMANCE.md). The build (~3 min on 2 cores) is cached outside
# the repository: ${FSB_CACHE_DIR:-~/.cache/fast-sandbox}/runsc/runsc-<version>.
set -euo pipefail
VERSION="${FSB_GVISOR_VERSION:-v0.0.0-20260905035102-160fafc42237}"
CACHE="${FSB_CACHE_DIR:-$HOME/.cache/fast-sandbox}/runsc"
OUT="$CACHE/runsc-$VERSION"
if [ ! -x "$OUT" ]; then
  command -v go >/dev/null || { echo "build-runsc: needs Go (1.22+)" >&2; exit 1; }
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (
    cd "$work"
    go mod init fsb-runsc-build >/dev/null 2>&1
    go get "gvisor.dev/gvisor@$VERSION" >&2
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -o runsc gvisor.dev/gvisor/runsc >&2
  )
  mkdir -p "$CACHE"
  mv "$work/runsc" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
  echo "build-runsc: built $OUT" >&2
fi
echo "$OUT"
