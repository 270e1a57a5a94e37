#!/usr/bin/env bash
# `npm test`: every test — unit tests of the logic, then end-to-end tests against the real
# containerd, runc, runsc, SQLite and a real Kubernetes API server. Needs root (containerd).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/start-containerd.sh
# One run at a time on a machine: the sweep below removes every test's namespaces, networks and
# cgroups, another run's included. The lock is this script's alone (children get fd 9 closed), so a
# process a test leaves behind never holds it; it goes with this script.
lock="${FSB_TEST_LOCK:-${TMPDIR:-/tmp}/fast-sandbox-npm-test.lock}"
exec 9>>"$lock"
if ! flock -n 9; then
  echo "npm test: another run of it holds $lock (pid $(cat "$lock.pid" 2>/dev/null || echo unknown)); wait for it to finish — two runs would sweep each other's test objects" >&2
  exit 1
fi
echo $$ >"$lock.pid"
# What an earlier run stopped midway left (its cases' clean-up never ran), before and after this
# run, however it ends: sandboxes, cgroups, network namespaces, tables and routes of the tests.
sweep() { node --conditions=development --import tsx scripts/sweep-test-leftovers.ts 9>&- || true; }
sweep
trap sweep EXIT
npm run --silent build 9>&-

# Node 20's --test does not expand globs itself; the shell does.
shopt -s globstar nullglob
unit=(packages/*/src/**/*.spec.ts bench/*.spec.ts)
e2e=(test/e2e/**/*.test.ts)
if [ -n "${FSB_TEST_FILTER:-}" ]; then
  unit=($(printf '%s\n' "${unit[@]}" | grep -E "$FSB_TEST_FILTER" || true))
  e2e=($(printf '%s\n' "${e2e[@]}" | grep -E "$FSB_TEST_FILTER" || true))
fi
# The in-sandbox daemon's Go tests (packages/envd), unless a filter leaves them out.
if [ -z "${FSB_TEST_FILTER:-}" ] || grep -qE "$FSB_TEST_FILTER" <<<"packages/envd"; then bash scripts/test-envd.sh 9>&-; fi
# In the background so that a SIGTERM or SIGINT to this script is handled at once: the runner is
# stopped (its test files with it) and the EXIT trap sweeps what their skipped `after` hooks left.
node --conditions=development --import tsx --test --test-concurrency=1 "${unit[@]}" "${e2e[@]}" 9>&- &
runner=$!
trap 'kill -TERM "$runner" 2>/dev/null; wait "$runner" || true; exit 143' TERM
trap 'kill -INT "$runner" 2>/dev/null; wait "$runner" || true; exit 130' INT
wait "$runner"
