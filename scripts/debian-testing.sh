# Sourced by scripts/ensure-nginx130.sh and scripts/ensure-node24.sh: fetch binary packages from Debian's testing
# suite into a private root folder, touching nothing system-wide.
#   - a private sources list for the suite, on the Debian mirror this machine already uses (read from
#     /etc/apt/sources.list(.d) at run time), with apt's Dir::Etc::sourcelist, Dir::State::Lists, Dir::State::status
#     and Dir::Cache pointed at files under the cache folder, so the system's package lists, caches and installed-set
#     are untouched (and apt resolves dependencies as on an empty system);
#   - `apt-get download` of each package, `dpkg -x` of each into one root.
# The caller sets SUITE, DIR (its cache folder, already locked with flock) and ROOT, and defines log().

[[ "$(dpkg --print-architecture)" == amd64 ]] || { log "only amd64 is scripted (loader path x86_64-linux-gnu)"; exit 1; }
LIBDIR="$ROOT/usr/lib/x86_64-linux-gnu"
LOADER="$LIBDIR/ld-linux-x86-64.so.2"

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

# Fresh package lists of $SUITE under $DIR/apt, and an empty $ROOT to unpack into.
testing_init() {
  local mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  mirror="$(mirror_uri)" || { log "no Debian mirror found in /etc/apt/sources.list(.d)"; exit 1; }
  [[ -f "$keyring" ]] || { log "$keyring missing (package debian-archive-keyring)"; exit 1; }
  APTDIR="$DIR/apt"
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/debs"
  echo "deb [signed-by=$keyring] $mirror $SUITE main" > "$APTDIR/sources.list"
  : > "$APTDIR/status"
  APT_OPTS=(
    -o "Dir::Etc::sourcelist=$APTDIR/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$APTDIR/lists"
    -o "Dir::State::status=$APTDIR/status"
    -o "Dir::Cache=$APTDIR/cache"
    -o "APT::Get::List-Cleanup=0"
    # The cache folder may be unreadable for apt's _apt download user (it lives under root's home).
    -o "APT::Sandbox::User=root"
  )
  log "fetching the $SUITE package lists from $mirror into $APTDIR"
  apt-get "${APT_OPTS[@]}" update >&2
  rm -rf "$ROOT"
  rm -f "$APTDIR/debs/"*.deb
  mkdir -p "$ROOT"
}

# Download one package of $SUITE and unpack it into $ROOT (once).
testing_fetch() {
  local pkg="$1"
  [[ -n "$(ls "$APTDIR/debs/${pkg}_"*.deb 2>/dev/null)" ]] && return 0
  log "downloading $pkg from $SUITE"
  (cd "$APTDIR/debs" && apt-get "${APT_OPTS[@]}" download "$pkg" >&2)
  dpkg -x "$APTDIR/debs/${pkg}_"*.deb "$ROOT"
}

# The packages $1 depends on in $SUITE, recursively, itself included (Depends and Pre-Depends only).
testing_closure() {
  apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "$@" | grep -v '^[[:space:]<]' | sort -u
}

# Fetch whatever the given ELF files still link against, by the package that ships the missing library.
testing_fetch_missing_libs() {
  local missing lib base ver pkg
  [[ -x "$LOADER" ]] || { log "loader $LOADER missing after extracting libc6"; exit 1; }
  for round in 1 2 3 4 5 6; do
    missing="$(for f in "$@"; do "$LOADER" --library-path "$LIBDIR" --list "$f"; done |
      sed -n 's/^[[:space:]]*\([^[:space:]]*\) => not found.*/\1/p' | sort -u)"
    [[ -z "$missing" ]] && return 0
    [[ "$round" == 6 ]] && break
    for lib in $missing; do
      # Debian names library packages after the soname: libfoo.so.3 → libfoo3, libfoo-1.2.so.0 → libfoo-1.2-0.
      base="${lib%%.so*}"; ver="${lib##*.so.}"; ver="${ver%%.*}"
      if [[ "$base" =~ [0-9]$ ]]; then pkg="$base-$ver"; else pkg="$base$ver"; fi
      log "$lib is missing; trying package $pkg"
      testing_fetch "$pkg"
    done
  done
  log "libraries still missing after five rounds: $missing"
  exit 1
}
