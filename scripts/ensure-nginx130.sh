#!/usr/bin/env bash
# Prints the path of a wrapper that runs nginx 1.30 (Debian's testing suite), fetching it once into a cache folder.
#
# Why: `upstream { server NAME service=SVC resolve; }` (SRV ports, re-resolved at run time) exists in open-source
# nginx only from 1.27.3; Debian bookworm ships 1.22 and its source packages are not served here. Testing (forky)
# ships 1.30 as binary packages. Nothing is installed system-wide:
#   - a private sources list for the testing suite, on the Debian mirror this machine already uses (read from
#     /etc/apt/sources.list(.d) at run time), with apt's Dir::Etc::sourcelist, Dir::State::Lists and Dir::Cache
#     pointed at files under the cache folder, so the system's package lists and caches are untouched;
#   - `apt-get download` of nginx and the libraries it links against from that suite, `dpkg -x` of each into one root;
#   - nginx started through that root's own loader and libraries (forky's nginx needs a newer glibc than bookworm's).
# The cache lives outside the work tree (CONSUL_LB_CACHE, default ~/.cache/consul-lb) and is reused.
#
# Run the printed wrapper with `-p <prefix> -c <full config>`: its compiled-in paths (/etc/nginx, /usr/lib/nginx/
# modules, /var/log/nginx) belong to the system's nginx 1.22, so configs for it must not load dynamic modules or
# include /etc/nginx files.
set -euo pipefail

SUITE="${NGINX130_SUITE:-forky}"
CACHE="${CONSUL_LB_CACHE:-$HOME/.cache/consul-lb}"
DIR="$CACHE/nginx-1.30"
ROOT="$DIR/root"
LIBDIR="$ROOT/usr/lib/x86_64-linux-gnu"
WRAPPER="$DIR/nginx"
# The libraries nginx links against; anything else `ldd` reports missing is fetched by the loop below.
PACKAGES=(nginx libc6 libssl3t64 libpcre2-8-0 libzstd1 zlib1g libcrypt1)

log() { echo "ensure-nginx130: $*" >&2; }

works() { [[ -x "$WRAPPER" ]] && "$WRAPPER" -v 2>&1 | grep -q 'nginx/1\.'; }

if works; then echo "$WRAPPER"; exit 0; fi

[[ "$(dpkg --print-architecture)" == amd64 ]] || { log "only amd64 is scripted (loader path x86_64-linux-gnu)"; exit 1; }

mkdir -p "$DIR"
# One fetcher at a time: parallel test files may all ask on a fresh machine.
exec 9>"$DIR/.lock"
flock 9
if works; then echo "$WRAPPER"; exit 0; fi

# The Debian mirror this machine already uses: the first URI that serves the main archive (not -security).
mirror_uri() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    while read -r uri; do
      case "$uri" in *debian-security*|'') ;; *debian*) echo "$uri"; return 0 ;; esac
    done < <(sed -n 's/^URIs:[[:space:]]*//p' "$f" | tr ' ' '\n')
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    uri="$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*debian[^[:space:]]*\)[[:space:]].*/\2/p' "$f" | grep -v debian-security | head -1)"
    [[ -n "$uri" ]] && { echo "$uri"; return 0; }
  done
  return 1
}
MIRROR="$(mirror_uri)" || { log "no Debian mirror found in /etc/apt/sources.list(.d)"; exit 1; }
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f "$KEYRING" ]] || { log "$KEYRING missing (package debian-archive-keyring)"; exit 1; }

APTDIR="$DIR/apt"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/debs"
echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" > "$APTDIR/sources.list"
APT_OPTS=(
  -o "Dir::Etc::sourcelist=$APTDIR/sources.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$APTDIR/lists"
  -o "Dir::Cache=$APTDIR/cache"
  -o "APT::Get::List-Cleanup=0"
  # The cache folder may be unreadable for apt's _apt download user (it lives under root's home).
  -o "APT::Sandbox::User=root"
)
log "fetching the $SUITE package lists from $MIRROR into $APTDIR"
apt-get "${APT_OPTS[@]}" update >&2

fetch() {
  local pkg="$1"
  [[ -n "$(ls "$APTDIR/debs/${pkg}_"*.deb 2>/dev/null)" ]] && return 0
  log "downloading $pkg from $SUITE"
  (cd "$APTDIR/debs" && apt-get "${APT_OPTS[@]}" download "$pkg" >&2)
  dpkg -x "$APTDIR/debs/${pkg}_"*.deb "$ROOT"
}

rm -rf "$ROOT"
rm -f "$APTDIR/debs/"*.deb
mkdir -p "$ROOT"
for p in "${PACKAGES[@]}"; do fetch "$p"; done

LOADER="$LIBDIR/ld-linux-x86-64.so.2"
[[ -x "$LOADER" ]] || { log "loader $LOADER missing after extracting libc6"; exit 1; }

# Fetch whatever else the binary links against, by the package that ships the missing library in the suite.
for _ in 1 2 3 4 5; do
  missing="$("$LOADER" --library-path "$LIBDIR" --list "$ROOT/usr/sbin/nginx" | sed -n 's/^[[:space:]]*\([^[:space:]]*\) => not found.*/\1/p')"
  [[ -z "$missing" ]] && break
  for lib in $missing; do
    # Debian names library packages after the soname: libfoo.so.3 → libfoo3, libfoo-1.2.so.0 → libfoo-1.2-0.
    base="${lib%%.so*}"; ver="${lib##*.so.}"; ver="${ver%%.*}"
    if [[ "$base" =~ [0-9]$ ]]; then pkg="$base-$ver"; else pkg="$base$ver"; fi
    log "nginx needs $lib; trying package $pkg"
    fetch "$pkg"
  done
done

cat > "$WRAPPER.tmp" <<EOF
#!/bin/sh
# nginx from Debian $SUITE, run through its own loader and libraries (see scripts/ensure-nginx130.sh).
exec "$LOADER" --library-path "$LIBDIR" "$ROOT/usr/sbin/nginx" "\$@"
EOF
chmod +x "$WRAPPER.tmp"
mv "$WRAPPER.tmp" "$WRAPPER"
works || { log "the wrapper does not run: $("$WRAPPER" -v 2>&1 | head -3)"; exit 1; }
"$WRAPPER" -v >&2
echo "$WRAPPER"
