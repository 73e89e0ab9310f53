#!/usr/bin/env bash
# Prints the path of Debian's nginx 1.22 (bookworm), installing nginx-light with apt-get when it is missing.
# The tests run it unprivileged-style with their own -p prefix and -c config, so the system's /etc/nginx is unused.
set -euo pipefail

if [[ -n "${NGINX_BIN:-}" && -x "${NGINX_BIN}" ]]; then echo "$NGINX_BIN"; exit 0; fi
if [[ -x /usr/sbin/nginx ]]; then echo /usr/sbin/nginx; exit 0; fi
if command -v nginx >/dev/null 2>&1; then command -v nginx; exit 0; fi

if [[ "$(id -u)" != 0 ]]; then echo "ensure-nginx: nginx is not installed; run: sudo apt-get install -y nginx-light" >&2; exit 1; fi
echo "ensure-nginx: installing nginx-light" >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light >&2
# Debian starts the packaged service on install; the tests need none of it (they start their own masters).
echo /usr/sbin/nginx
