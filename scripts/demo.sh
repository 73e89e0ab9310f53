#!/usr/bin/env bash
# The demo, from a fresh machine (Node, npm and Go present): installs, builds Consul once (cached in
# ~/.cache/consul-lb), builds consul-lb and runs `consul-lb dev`: a Consul dev agent, three demo backends and the
# proxy on 127.0.0.1:8080. Extra arguments go to `consul-lb dev` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
CONSUL_BIN="$(bash scripts/ensure-consul.sh)"
export CONSUL_BIN
npm run build --silent
exec bin/consul-lb dev "$@"
