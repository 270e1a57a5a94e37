#!/usr/bin/env bash
# Starts containerd in the background unless it already answers on its socket (idempotent).
set -euo pipefail
SOCKET="${FSB_CONTAINERD_SOCKET:-/run/containerd/containerd.sock}"
LOG="${FSB_CONTAINERD_LOG:-/var/log/fast-sandbox-containerd.log}"

if ctr --address "$SOCKET" version >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "start-containerd: containerd is not running at $SOCKET and starting it needs root" >&2
  exit 1
fi
echo "start-containerd: starting containerd (log: $LOG)" >&2
mkdir -p "$(dirname "$LOG")"
nohup setsid containerd >>"$LOG" 2>&1 </dev/null &
for _ in $(seq 1 100); do
  if ctr --address "$SOCKET" version >/dev/null 2>&1; then exit 0; fi
  sleep 0.1
done
echo "start-containerd: containerd did not come up; see $LOG" >&2
exit 1
