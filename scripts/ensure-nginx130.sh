#!/usr/bin/env bash
# Prints the path of a wrapper that runs nginx 1.30 (Debian's testing suite), fetching it once into a cache folder.
#
# Why: `upstream { server NAME service=SVC resolve; }` (SRV ports, re-resolved at run time) exists in open-source
# nginx only from 1.27.3; Debian bookworm ships 1.22 and its source packages are not served here. Testing (forky)
# ships 1.30 as binary packages, fetched into a private root by scripts/debian-testing.sh (nothing is installed
# system-wide), and nginx is started through that root's own loader and libraries (forky's nginx needs a newer glibc
# than bookworm's). The cache lives outside the work tree (CONSUL_LB_CACHE, default ~/.cache/consul-lb) and is reused.
#
# Run the printed wrapper with `-p <prefix> -c <full config>`: its compiled-in paths (/etc/nginx, /usr/lib/nginx/
# modules, /var/log/nginx) belong to the system's nginx 1.22, so configs for it must not load dynamic modules or
# include /etc/nginx files.
set -euo pipefail

SUITE="${NGINX130_SUITE:-forky}"
CACHE="${CONSUL_LB_CACHE:-$HOME/.cache/consul-lb}"
DIR="$CACHE/nginx-1.30"
ROOT="$DIR/root"
WRAPPER="$DIR/nginx"
# The libraries nginx links against; anything else the loader reports missing is fetched afterwards.
PACKAGES=(nginx libc6 libssl3t64 libpcre2-8-0 libzstd1 zlib1g libcrypt1)

log() { echo "ensure-nginx130: $*" >&2; }

works() { [[ -x "$WRAPPER" ]] && "$WRAPPER" -v 2>&1 | grep -q 'nginx/1\.'; }

if works; then echo "$WRAPPER"; exit 0; fi

mkdir -p "$DIR"
# One fetcher at a time: parallel test files may all ask on a fresh machine.
exec 9>"$DIR/.lock"
flock 9
if works; then echo "$WRAPPER"; exit 0; fi

source "$(dirname "$0")/debian-testing.sh"
testing_init
for p in "${PACKAGES[@]}"; do testing_fetch "$p"; done
testing_fetch_missing_libs "$ROOT/usr/sbin/nginx"

cat > "$WRAPPER.tmp" <<WRAP
#!/bin/sh
# nginx from Debian $SUITE, run through its own loader and libraries (see scripts/ensure-nginx130.sh).
exec "$LOADER" --library-path "$LIBDIR" "$ROOT/usr/sbin/nginx" "\$@"
WRAP
chmod +x "$WRAPPER.tmp"
mv "$WRAPPER.tmp" "$WRAPPER"
works || { log "the wrapper does not run: $("$WRAPPER" -v 2>&1 | head -3)"; exit 1; }
"$WRAPPER" -v >&2
echo "$WRAPPER"
