#!/usr/bin/env bash
# Builds the in-sandbox helper as a static binary (it must run in any image, even one without libc).
# Output: packages/agent/helper/build/fsb-helper. Rebuilt only when the source is newer.
set -euo pipefail
cd "$(dirname "$0")/../packages/agent/helper"
mkdir -p build
if [ build/fsb-helper -nt fsb-helper.c ]; then exit 0; fi
command -v gcc >/dev/null || { echo "build-helper: gcc is missing; apt-get install -y gcc libc6-dev" >&2; exit 1; }
gcc -static -Os -s -Wall -Wextra -Werror -o build/fsb-helper.tmp fsb-helper.c
mv build/fsb-helper.tmp build/fsb-helper
