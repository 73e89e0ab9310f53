#!/usr/bin/env bash
# The whole test suite, from a fresh machine (Node, npm and Go present): installs what the tests need, builds Consul
# and fetches nginx 1.30 into ~/.cache/consul-lb (reused on later runs), builds, type-checks and runs every test.
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

echo "== tests"
mkdir -p .tap
set +e
npx tap --reporter=tap --disable-coverage "$@" > .tap/run.tap 2>&1
rc=$?
set -e
# Full TAP stream for whoever reads the log, then one summary line.
cat .tap/run.tap
pass=$(grep -cE '^\s*ok [0-9]+' .tap/run.tap || true)
fail=$(grep -cE '^\s*not ok [0-9]+' .tap/run.tap || true)
echo
echo "tests: ${pass} passed, ${fail} failed"
exit $rc
