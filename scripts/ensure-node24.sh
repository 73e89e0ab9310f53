#!/usr/bin/env bash
# Prints the path of `with-node24`, a wrapper that runs a command with Node.js 24 first on PATH, fetching Node 24
# once into a cache folder. `with-node24 node --version`, `with-node24 npx tap …`: children inherit it.
#
# Why: bookworm and the machine image carry Node 20; Debian's testing suite (forky) ships nodejs 24 as binary
# packages (`nodejs`, `libnode137` and what they depend on, about 35 packages), fetched into a private root by
# scripts/debian-testing.sh; nothing is installed system-wide. Two things make it run here:
#   - the binary is a copy given forky's loader as its ELF interpreter and forky's library folder as a *forced* RPATH
#     (patchelf --force-rpath writes DT_RPATH, which unlike DT_RUNPATH also applies to libnode's own dependencies).
#     Running it as `ld-linux… node` would work too, but then process.execPath is the loader and everything that
#     spawns process.execPath (tap's test processes, `serve --workers`) breaks. No LD_LIBRARY_PATH: it would reach
#     the system's nginx, docker and consul started from the tests and break them.
#   - Debian's libnode loads some built-in modules (undici, acorn, …) from /usr/share/nodejs at run time, an absolute
#     path. The wrapper runs the command in a private mount namespace (`unshare --mount`) where the root's
#     usr/share/nodejs is bind-mounted read-only at /usr/share/nodejs; nothing outside the namespace sees it. The
#     mount point is created (empty) once if the machine has none.
# The cache lives outside the work tree (CONSUL_LB_CACHE, default ~/.cache/consul-lb) and is reused.
set -euo pipefail

SUITE="${NODE24_SUITE:-forky}"
CACHE="${CONSUL_LB_CACHE:-$HOME/.cache/consul-lb}"
DIR="$CACHE/node-24"
ROOT="$DIR/root"
BINDIR="$DIR/bin"
WRAPPER="$DIR/with-node24"

log() { echo "ensure-node24: $*" >&2; }

# Runs inside the namespace, so it also proves the bind mount and a built-in module that lives in /usr/share/nodejs.
works() {
  [[ -x "$WRAPPER" ]] &&
    "$WRAPPER" node -e 'new Headers(); process.exit(process.versions.node.startsWith("24.") ? 0 : 1)' 2>/dev/null
}

if works; then echo "$WRAPPER"; exit 0; fi

mkdir -p "$DIR"
# One fetcher at a time: parallel callers may all ask on a fresh machine.
exec 9>"$DIR/.lock"
flock 9
if works; then echo "$WRAPPER"; exit 0; fi

command -v patchelf >/dev/null || { log "patchelf is missing (scripts/setup.sh installs it)"; exit 1; }
command -v unshare >/dev/null || { log "unshare is missing (package util-linux)"; exit 1; }

source "$(dirname "${BASH_SOURCE[0]}")/debian-testing.sh"
testing_init
mapfile -t packages < <(testing_closure nodejs)
for p in "${packages[@]}"; do testing_fetch "$p"; done
[[ -x "$ROOT/usr/bin/node" ]] || { log "no usr/bin/node after unpacking nodejs"; exit 1; }
testing_fetch_missing_libs "$ROOT/usr/bin/node" "$LIBDIR"/libnode.so.*

rm -rf "$BINDIR"
mkdir -p "$BINDIR"
cp "$ROOT/usr/bin/node" "$BINDIR/node"
patchelf --set-interpreter "$LOADER" --force-rpath --set-rpath "$LIBDIR" "$BINDIR/node"
ln -s node "$BINDIR/nodejs"
[[ -d /usr/share/nodejs ]] || mkdir -p /usr/share/nodejs

cat > "$WRAPPER.tmp" <<WRAP
#!/bin/sh
# Runs "\$@" with Node.js 24 from Debian $SUITE first on PATH, in a private mount namespace where its
# usr/share/nodejs is at /usr/share/nodejs (see scripts/ensure-node24.sh).
[ -d /usr/share/nodejs ] || mkdir -p /usr/share/nodejs
exec unshare --mount --propagation private sh -c '
  mount --bind "\$1" /usr/share/nodejs && mount -o remount,bind,ro /usr/share/nodejs || exit 125
  PATH="\$2:\$PATH"; export PATH; shift 2; exec "\$@"' with-node24 "$ROOT/usr/share/nodejs" "$BINDIR" "\$@"
WRAP
chmod +x "$WRAPPER.tmp"
mv "$WRAPPER.tmp" "$WRAPPER"
works || { log "the wrapper does not run node 24: $("$WRAPPER" node --version 2>&1 | head -3)"; exit 1; }
log "$("$WRAPPER" node --version) at $BINDIR/node"
echo "$WRAPPER"
