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
# Unit spec files two at a time (they share nothing: fakes, temporary directories, loopback ports of
# their own), then the end-to-end files one at a time (they share containerd, the cgroups and the
# cluster's ports). Every file runs even when an earlier one failed; the exit status is the first
# failure's. Each runner is started in the background so that a SIGTERM or SIGINT to this script is
# handled at once: the runner is stopped (its test files with it) and the EXIT trap sweeps what their
# skipped `after` hooks left.
runner=
status=0
stop_runner() {
  if [ -n "$runner" ]; then
    kill "-$1" "$runner" 2>/dev/null
    wait "$runner" || true
  fi
}
trap 'stop_runner TERM; exit 143' TERM
trap 'stop_runner INT; exit 130' INT
# Each runner's report is also kept in a file, so that the failures are printed again at the end,
# where a long run's tail (CI keeps only the tail of the output) shows them.
reports=$(mktemp -d)
run_files() {
  local concurrency=$1 name=$2
  shift 2
  [ "$#" -gt 0 ] || return 0
  node --conditions=development --import tsx --test --test-concurrency="$concurrency" \
    --test-reporter=tap --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$reports/$name.tap" "$@" 9>&- &
  runner=$!
  local code=0
  wait "$runner" || code=$?
  runner=
  if [ "$status" -eq 0 ]; then status=$code; fi
}
run_files 2 unit "${unit[@]}"
run_files 1 e2e "${e2e[@]}"
# The failed tests of both runs, each with the first lines of its diagnostics (a suite that failed
# only for its subtests is named without them).
for name in unit e2e; do
  [ -f "$reports/$name.tap" ] || continue
  if grep -q '^ *not ok ' "$reports/$name.tap"; then
    echo "=== npm test: the failures of the ${name} tests"
    awk '/^ *not ok /{block=1; lines=0; print; next}
      block && /^ *\.\.\.$/ {block=0; next}
      block && /failureType: .subtestsFailed./ {block=0; next}
      block && lines < 40 {print; lines++}' "$reports/$name.tap"
  fi
done
rm -rf "$reports"
exit "$status"
