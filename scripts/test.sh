#!/usr/bin/env bash
# `npm test`: every test — unit tests of the logic, then end-to-end tests against the real
# containerd, runc, runsc, SQLite and a real Kubernetes API server. Needs root (containerd).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/start-containerd.sh
# What an earlier run stopped midway left (its cases' clean-up never ran), before and after this
# run, however it ends: sandboxes, cgroups, network namespaces, tables and routes of the tests.
sweep() { node --conditions=development --import tsx scripts/sweep-test-leftovers.ts || true; }
sweep
trap sweep EXIT
npm run --silent build

# Node 20's --test does not expand globs itself; the shell does.
shopt -s globstar nullglob
unit=(packages/*/src/**/*.spec.ts bench/*.spec.ts)
e2e=(test/e2e/**/*.test.ts)
if [ -n "${FSB_TEST_FILTER:-}" ]; then
  unit=($(printf '%s\n' "${unit[@]}" | grep -E "$FSB_TEST_FILTER" || true))
  e2e=($(printf '%s\n' "${e2e[@]}" | grep -E "$FSB_TEST_FILTER" || true))
fi
# The in-sandbox daemon's Go tests (packages/envd), unless a filter leaves them out.
if [ -z "${FSB_TEST_FILTER:-}" ] || grep -qE "$FSB_TEST_FILTER" <<<"packages/envd"; then bash scripts/test-envd.sh; fi
# In the background so that a SIGTERM or SIGINT to this script is handled at once: the runner is
# stopped (its test files with it) and the EXIT trap sweeps what their skipped `after` hooks left.
node --conditions=development --import tsx --test --test-concurrency=1 "${unit[@]}" "${e2e[@]}" &
runner=$!
trap 'kill -TERM "$runner" 2>/dev/null; wait "$runner" || true; exit 143' TERM
trap 'kill -INT "$runner" 2>/dev/null; wait "$runner" || true; exit 130' INT
wait "$runner"
