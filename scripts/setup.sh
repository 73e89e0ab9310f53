#!/usr/bin/env bash
# Debian packages the tests need, installed only when missing (apt-get runs as root on the project's machines).
#   docker.io       the registrator tests start a private dockerd (own socket, data-root, exec-root in /tmp)
#   busybox-static  the registrator tests' image is imported from its static /bin/busybox (nothing is pulled)
#   iproute2        test teardown removes a leftover bridge after a crashed engine
#   nginx-light     the nginx emitter tests run nginx 1.22 (nginx 1.30 comes from scripts/ensure-nginx130.sh, not apt)
#   patchelf        scripts/ensure-node24.sh gives its copy of Node 24 (from Debian testing) its own loader and RPATH
#   chromium        the status page tests drive Debian's headless Chromium with playwright-core (nothing downloads a
#                   browser); fonts-dejavu-core so its text (and the README screenshot) renders in a real font
set -euo pipefail
APT_PACKAGES="docker.io busybox-static iproute2 nginx-light patchelf chromium fonts-dejavu-core"
missing=()
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
