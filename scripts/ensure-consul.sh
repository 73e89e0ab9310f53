#!/usr/bin/env bash
# Prints the path of a Consul binary of the pinned release, building it once from the Go module proxy.
#
# No Consul package exists in Debian or npm, so the tests and the demo build Consul from source through a throwaway
# wrapper module. The binary is cached outside the work tree (CONSUL_LB_CACHE, default ~/.cache/consul-lb) and reused;
# a `consul` already on PATH is used when its version is the pinned minor (1.22.x).
#
# Why the wrapper needs the extra lines: Consul's own go.mod excludes go-msgpack v1.1.5 and v1.1.6 (excludes do not
# apply to dependants, so the wrapper repeats them), and the v1.22.7 release needs a newer api module than it requires.
# Avoid 1.19.0-1.19.1: a DNS rewrite broke tag and SRV lookups there.
set -euo pipefail

CONSUL_VERSION="${CONSUL_VERSION:-1.22.7}"
CONSUL_API_VERSION="${CONSUL_API_VERSION:-1.34.1}"
CACHE="${CONSUL_LB_CACHE:-$HOME/.cache/consul-lb}"
OUT="$CACHE/consul-$CONSUL_VERSION/consul"
WANT_MINOR="${CONSUL_VERSION%.*}"

log() { echo "ensure-consul: $*" >&2; }

if [[ -n "${CONSUL_BIN:-}" && -x "${CONSUL_BIN}" ]]; then echo "$CONSUL_BIN"; exit 0; fi

if command -v consul >/dev/null 2>&1; then
  have="$(consul version 2>/dev/null | sed -n 's/^Consul v\([0-9.]*\).*/\1/p' | head -1)"
  if [[ "${have%.*}" == "$WANT_MINOR" ]]; then command -v consul; exit 0; fi
  log "consul on PATH is v${have:-unknown}, want ${WANT_MINOR}.x; using the cached build"
fi

if [[ -x "$OUT" ]]; then echo "$OUT"; exit 0; fi

command -v go >/dev/null 2>&1 || { log "Go is required to build Consul (none on PATH)"; exit 1; }

mkdir -p "$CACHE"
# One builder at a time: parallel test files may all ask for Consul on a fresh machine.
exec 9>"$CACHE/consul-build.lock"
flock 9
if [[ -x "$OUT" ]]; then echo "$OUT"; exit 0; fi

work="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "building Consul v$CONSUL_VERSION (about 3 min of module downloads and 3 min of build on 2 cores)"
(
  cd "$work"
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  go mod init consul-lb.local/consulbuild >/dev/null 2>&1
  go mod edit -exclude=github.com/hashicorp/go-msgpack@v1.1.5 -exclude=github.com/hashicorp/go-msgpack@v1.1.6
  go get "github.com/hashicorp/consul@v$CONSUL_VERSION" "github.com/hashicorp/consul/api@v$CONSUL_API_VERSION" >&2
  mkdir -p "$(dirname "$OUT")"
  go build -trimpath -o "$OUT.tmp" github.com/hashicorp/consul >&2
  mv "$OUT.tmp" "$OUT"
)
"$OUT" version >&2
echo "$OUT"
