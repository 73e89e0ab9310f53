#!/usr/bin/env bash
# The whole test suite, from a fresh machine (Node, npm and Go present): installs what the tests need, builds Consul,
# fetches nginx 1.30 and Node 24 into ~/.cache/consul-lb (reused on later runs), builds, type-checks, lints and runs
# every test on Node 20 and on Node 24.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== setup: Debian packages"
bash scripts/setup.sh
echo "== setup: npm packages"
npm ci --no-audit --no-fund --loglevel=error
echo "== setup: Consul (built once from the Go module proxy, then cached)"
CONSUL_BIN="$(bash scripts/ensure-consul.sh)"
export CONSUL_BIN
"$CONSUL_BIN" version | sed -n 1p  # sed reads all: head would close the pipe early and SIGPIPE (141) the script
echo "== setup: nginx 1.30 (Debian testing binaries, cached)"
bash scripts/ensure-nginx130.sh >/dev/null
echo "== build and type-check"
npm run build --silent
npm run typecheck --silent
echo "== format and lint (biome)"
npm run lint --silent

echo "== setup: Node 24 (Debian testing binaries, cached)"
WITH_NODE24="$(bash scripts/ensure-node24.sh)"

# The whole suite once per runtime: the machine's Node (20) and Node 24 (the Dockerfile's), one after the other
# (each run already uses both cores). TEST_RUNTIMES="20" or "24" runs one of them, e.g. while working on a test.
mkdir -p .tap
summary=()
rc=0
for runtime in ${TEST_RUNTIMES:-20 24}; do
  case "$runtime" in
    24) launcher=("$WITH_NODE24") ;;
    20) launcher=() ;;
    *) echo "TEST_RUNTIMES: unknown runtime $runtime (expected 20 and/or 24)" >&2; exit 2 ;;
  esac
  version="$("${launcher[@]}" node --version)"
  echo "== tests on node $version"
  tap="$(pwd)/.tap/node$runtime.tap"
  start=$SECONDS
  set +e
  "${launcher[@]}" npx tap --reporter=tap --disable-coverage "$@" > "$tap" 2>&1
  run_rc=$?
  set -e
  # Full TAP stream for whoever reads the log, then one summary line per runtime.
  cat "$tap"
  pass=$(grep -cE '^\s*ok [0-9]+' "$tap" || true)
  fail=$(grep -cE '^\s*not ok [0-9]+' "$tap" || true)
  echo "== node $version: ${pass} passed, ${fail} failed in $((SECONDS - start)) s (tap exit $run_rc)"
  summary+=("node $runtime: ${pass} passed, ${fail} failed")
  [ "$run_rc" -eq 0 ] || rc=$run_rc
done
echo
joined="$(printf '%s; ' "${summary[@]}")"
echo "tests: ${joined%; }"
exit $rc
