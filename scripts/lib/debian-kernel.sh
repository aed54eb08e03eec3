# shellcheck shell=bash
# debian-kernel.sh: Debian's stock kernels (and a few other Debian packages)
# for the VM tests, fetched into a cache with apt; sourced by scripts/vmtest.sh
# (amd64) and scripts/vm-bigendian.sh (s390x), which define log().
#
# Kernels by architecture and series, and the suites they come from:
#   amd64  5.10  linux-image-5.10.0-N-amd64-unsigned    bullseye, bullseye-security
#          6.1   linux-image-6.1.0-N-amd64-unsigned     bookworm, bookworm-security
#          6.12  linux-image-6.12.N+deb12-amd64-unsigned  bookworm-security,
#                                                       bookworm-backports
#   s390x  6.1   linux-image-6.1.0-N-s390x              bookworm, bookworm-updates
#          6.12  linux-image-6.12.N+deb12-s390x         bookworm-backports
#                                  (bookworm-security no longer builds s390x)
# The newest package of the series wins. If apt can tell nothing (offline),
# the newest kernel of the series already in the cache is used.
#
# apt runs with a PRIVATE configuration per architecture, DK_CACHE/apt-<arch>/:
# its own sources.list (only the suites above), lists, package cache, archives
# and dpkg status. The host's sources, lists, dpkg status and architectures are
# neither used nor changed (its apt.conf.d, e.g. a proxy, still applies). The
# private sources name the Debian archive the host's apt already uses (from
# /etc/apt/sources.list and sources.list.d/*.list and *.sources), else
# deb.debian.org; the lists are updated when older than a day, when the
# sources changed, and when a package is missing or cannot be downloaded.
#
# The cache, DK_CACHE (default ${XDG_CACHE_HOME:-/var/cache}/pdscp-vmtest):
#   .lock                  flock(1)ed while anything in the cache is written
#   apt-<arch>/            the private apt state
#   kernels/<kver>/        amd64 kernels: root/ is the package dpkg -x'ed (never
#                          the host's /boot or /lib/modules), depmod -b'ed
#   kernels-<arch>/<kver>/ kernels of other architectures
#   <name>/<version>/      other packages (e.g. busybox-s390x/<version>/root)
# A directory is unpacked into a .fetch.* sibling, marked .complete and only
# then renamed into place: a directory with .complete is whole, and is never
# changed again. Readers need no lock.

DK_CACHE=${DK_CACHE:-${XDG_CACHE_HOME:-/var/cache}/pdscp-vmtest}
# The Debian archive and its security archive; empty: the host's (see above).
DK_MIRROR=${DK_MIRROR:-}
DK_SECURITY_MIRROR=${DK_SECURITY_MIRROR:-}
readonly DK_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
readonly DK_DEFAULT_MIRROR=http://deb.debian.org/debian
readonly DK_DEFAULT_SECURITY_MIRROR=http://deb.debian.org/debian-security

# Results, read by the scripts: KVER and KROOT set by debian_kernel_prepare,
# DK_PKGROOT by debian_package_prepare.
KVER="" KROOT="" DK_PKGROOT=""

DK_LOCK_FD=""
DK_UPDATED=0  # the private lists of this architecture were updated by this run

# --- which kernels -------------------------------------------------------------

# debian_kernel_regex ARCH SERIES: the package names of the series' plain
# flavour (not -cloud-, not -rt-), as a regex (apt-cache matches names with it).
debian_kernel_regex() {
    case $1:$2 in
        amd64:5.10) echo '^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$' ;;
        amd64:6.1) echo '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' ;;
        amd64:6.12) echo '^linux-image-6\.12\.[0-9]+[^-]*-amd64-unsigned$' ;;
        s390x:6.1) echo '^linux-image-6\.1\.0-[0-9]+-s390x$' ;;
        s390x:6.12) echo '^linux-image-6\.12\.[0-9]+\+deb12-s390x$' ;;
        *) return 1 ;;
    esac
}

# The suites of ARCH's private sources, "main SUITE" (the Debian archive) or
# "security SUITE" (its security archive), one a line.
dk_suites() {
    case $1 in
        amd64) printf '%s\n' "main bookworm" "security bookworm-security" \
                   "main bookworm-backports" "main bullseye" "security bullseye-security" ;;
        s390x) printf '%s\n' "main bookworm" "main bookworm-updates" "main bookworm-backports" ;;
    esac
}

dk_kernel_dir() {  # ARCH: where its kernels are cached
    if [[ $1 == amd64 ]]; then echo "$DK_CACHE/kernels"; else echo "$DK_CACHE/kernels-$1"; fi
}

# --- the host's Debian archive -------------------------------------------------

# "URI SUITE" for every enabled `deb` entry of the host's apt sources, in both
# formats (one-line .list, deb822 .sources); apt reads no other file names.
dk_host_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        # deb [ options ] URI SUITE COMPONENT...
        sed 's/#.*//' "$f" | awk '$1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if (i + 1 <= NF) print $i, $(i + 1) }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk '
            function flush(   a, b, n, m, u, s) {
                if (types ~ /(^|[ \t])deb([ \t]|$)/ && tolower(enabled) !~ /^[ \t]*no[ \t]*$/) {
                    n = split(uris, u); m = split(suites, s)
                    for (a = 1; a <= n; a++) for (b = 1; b <= m; b++) print u[a], s[b]
                }
                types = uris = suites = enabled = field = ""
            }
            /^#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ {  # a continuation line
                if (field == "types") types = types " " $0
                else if (field == "uris") uris = uris " " $0
                else if (field == "suites") suites = suites " " $0
                next
            }
            {
                i = index($0, ":"); if (!i) next
                field = tolower(substr($0, 1, i - 1)); value = substr($0, i + 1)
                if (field == "types") types = value
                else if (field == "uris") uris = value
                else if (field == "suites") suites = value
                else if (field == "enabled") enabled = value
            }
            END { flush() }' "$f"
    done
}

# Sets DK_MIRROR and DK_SECURITY_MIRROR (those not set yet) from the host's
# sources: the first URI serving a Debian suite (bookworm, bookworm-updates,
# stable, ...) and the first serving a security suite (bookworm-security).
dk_find_mirrors() {
    [[ -n $DK_MIRROR && -n $DK_SECURITY_MIRROR ]] && return 0
    local uri suite main='' security=''
    local re='^(stretch|buster|bullseye|bookworm|trixie|forky|duke|sid|oldoldstable|oldstable|stable|testing|unstable)'
    while read -r uri suite; do
        [[ $uri == */* && $uri != cdrom:* ]] || continue
        uri=${uri%/}
        if [[ $suite =~ $re-security$ || $suite =~ $re/updates$ ]]; then
            security=${security:-$uri}
        elif [[ $suite =~ $re(-updates|-backports|-proposed-updates)?$ ]]; then
            main=${main:-$uri}
        fi
    done < <(dk_host_sources)
    DK_MIRROR=${DK_MIRROR:-${main:-$DK_DEFAULT_MIRROR}}
    DK_SECURITY_MIRROR=${DK_SECURITY_MIRROR:-${security:-$DK_DEFAULT_SECURITY_MIRROR}}
}

# --- the cache lock ------------------------------------------------------------

dk_lock() {
    mkdir -p "$DK_CACHE"
    exec {DK_LOCK_FD}>"$DK_CACHE/.lock"
    if ! flock -n "$DK_LOCK_FD"; then
        log "waiting for another run to finish writing to $DK_CACHE (lock $DK_CACHE/.lock)"
        flock "$DK_LOCK_FD"
    fi
}

dk_unlock() {
    flock -u "$DK_LOCK_FD"
    exec {DK_LOCK_FD}>&-
    DK_LOCK_FD=""
}

# --- the private apt -----------------------------------------------------------

# dk_apt ARCH TOOL ARGS...: apt-get or apt-cache for ARCH, on the private state.
dk_apt() {
    local arch=$1 tool=$2 dir=$DK_CACHE/apt-$1
    shift 2
    "$tool" -q -o Dir::Etc::SourceList="$dir/sources.list" \
        -o Dir::Etc::SourceParts="$dir/empty" \
        -o Dir::Etc::Preferences="$dir/empty/none" \
        -o Dir::Etc::PreferencesParts="$dir/empty" \
        -o Dir::State="$dir/state" -o Dir::State::Lists="$dir/state/lists" \
        -o Dir::State::status="$dir/status" \
        -o Dir::Cache="$dir/cache" -o Dir::Cache::Archives="$dir/cache/archives" \
        -o Dir::Cache::pkgcache="$dir/cache/pkgcache.bin" \
        -o Dir::Cache::srcpkgcache="$dir/cache/srcpkgcache.bin" \
        -o APT::Architecture="$arch" -o APT::Architectures="$arch" \
        -o Acquire::Languages=none -o APT::Sandbox::User=root "$@"
}

# dk_apt_update ARCH: writes the private sources and updates the lists (under
# the lock). A failed update keeps the old lists.
dk_apt_update() {
    local arch=$1 dir=$DK_CACHE/apt-$1
    mkdir -p "$dir"/{empty,state/lists/partial,cache/archives/partial}
    : >>"$dir/status"
    dk_sources "$arch" >"$dir/sources.list"
    log "updating the private apt lists for $arch: $(awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $(NF - 2), $(NF - 1) }' "$dir/sources.list")"
    DK_UPDATED=1
    if dk_apt "$arch" apt-get update >&2; then
        touch "$dir/.updated"
    else
        log "apt-get update ($arch) failed; using what is cached"
        return 1
    fi
}

# The private sources.list of ARCH: Packages indexes only (no translations,
# no DEP-11 metadata the host's apt.conf.d may ask for).
dk_sources() {
    local where suite
    dk_find_mirrors
    while read -r where suite; do
        if [[ $where == security ]]; then where=$DK_SECURITY_MIRROR; else where=$DK_MIRROR; fi
        echo "deb [signed-by=$DK_KEYRING target=Packages] $where $suite main"
    done < <(dk_suites "$1")
}

# dk_apt_fresh ARCH: updates the lists if they are older than a day, missing,
# or for other sources than the current ones.
dk_apt_fresh() {
    local arch=$1 dir=$DK_CACHE/apt-$1
    dk_find_mirrors
    if [[ -z $(find "$dir/.updated" -mmin -1440 2>/dev/null) ]] ||
        ! cmp -s "$dir/sources.list" <(dk_sources "$arch"); then
        dk_apt_update "$arch" || true
    fi
}

# dk_newest ARCH REGEX: the newest package (with a candidate version) whose name
# matches REGEX, or nothing. Old ABIs may be listed without a candidate.
dk_newest() {
    [[ -e $DK_CACHE/apt-$1/.updated ]] || return 0
    { dk_apt "$1" apt-cache policy "$2" 2>/dev/null || true; } | awk '
        /^[^ ].*:$/ { pkg = substr($0, 1, length($0) - 1) }
        /^  Candidate:/ && $2 != "(none)" { print pkg }' | sort -V | tail -n1
}

# dk_fetch_unpack ARCH PKG DIR: apt-get download PKG and dpkg -x it into
# DIR/root, via a .fetch.* sibling of DIR (under the lock; DIR gets no
# .complete here). A failed download is retried once after an update (a
# stale list may name a version the mirror dropped).
dk_fetch_unpack() {
    local arch=$1 pkg=$2 dir=$3 parent tmp
    parent=${dir%/*}
    mkdir -p "$parent"
    # Under the lock no other run is unpacking: what is left is from an
    # interrupted one.
    rm -rf "$parent"/.fetch.*
    tmp=$(mktemp -d "$parent/.fetch.XXXXXX")
    log "fetching $pkg ($arch)"
    if ! (cd "$tmp" && dk_apt "$arch" apt-get download "$pkg" >&2); then
        if ! { dk_apt_update "$arch" && (cd "$tmp" && dk_apt "$arch" apt-get download "$pkg" >&2); }; then
            rm -rf "$tmp"
            log "apt-get download $pkg ($arch) failed"
            return 1
        fi
    fi
    mkdir "$tmp/root"
    if ! dpkg -x "$tmp"/*.deb "$tmp/root"; then
        rm -rf "$tmp"
        log "dpkg -x of $pkg failed"
        return 1
    fi
    rm -f "$tmp"/*.deb  # the unpacked tree is the cache; the .deb is not needed again
    rm -rf "$dir"
    mv "$tmp" "$dir"
}

# dk_newest_cached DIR REGEX [SUFFIX]: the newest complete DIR/<name> such that
# "linux-image-<name>SUFFIX" matches REGEX.
dk_newest_cached() {
    local d
    for d in "$1"/*/.complete; do
        [[ -e $d ]] || continue
        d=${d%/.complete}; d=${d##*/}
        [[ linux-image-$d${3:-} =~ $2 ]] && echo "$d"
    done | sort -V | tail -n1
}

# --- what the scripts call -----------------------------------------------------

# debian_kernel_prepare ARCH SERIES: the newest kernel of SERIES for ARCH,
# fetched, unpacked and depmod'ed in the cache if it is not there yet. Sets
# KVER (e.g. 6.1.0-28-amd64) and KROOT (the unpacked package: boot/vmlinuz-KVER,
# lib/modules/KVER). Returns 1 (with a message) if no such kernel can be had.
debian_kernel_prepare() {
    local arch=$1 series=$2 regex pkg kernels kdir suffix='' rc=0
    regex=$(debian_kernel_regex "$arch" "$series") || { log "no $series kernel known for $arch"; return 1; }
    [[ $regex == *-unsigned\$ ]] && suffix=-unsigned
    kernels=$(dk_kernel_dir "$arch")
    DK_UPDATED=0
    dk_lock
    dk_apt_fresh "$arch"
    pkg=$(dk_newest "$arch" "$regex")
    if [[ -z $pkg ]] && ((!DK_UPDATED)); then
        log "no $arch $series kernel in the private apt lists; updating them"
        dk_apt_update "$arch" || true
        pkg=$(dk_newest "$arch" "$regex")
    fi
    if [[ -n $pkg ]]; then
        KVER=${pkg#linux-image-}; KVER=${KVER%-unsigned}
    else
        KVER=$(dk_newest_cached "$kernels" "$regex" "$suffix")
        if [[ -n $KVER ]]; then
            log "apt found no $arch $series kernel; using cached $KVER"
        fi
    fi
    if [[ -z $KVER ]]; then
        log "cannot find a linux-image package for $arch $series"
        rc=1
    else
        kdir=$kernels/$KVER
        KROOT=$kdir/root
        if [[ ! -e $kdir/.complete ]]; then
            if ! dk_fetch_unpack "$arch" "$pkg" "$kdir"; then
                rc=1
            elif [[ ! -f $KROOT/boot/vmlinuz-$KVER || ! -d $KROOT/lib/modules/$KVER ]]; then
                log "$pkg does not contain vmlinuz-$KVER and its modules"
                rm -rf "$kdir"
                rc=1
            else
                # Whole and depmod'ed: modprobe (on the host for the initramfs,
                # in the guest for the rest) resolves dependencies from it.
                depmod -b "$KROOT" "$KVER"
                touch "$kdir/.complete"
            fi
        fi
    fi
    dk_unlock
    return "$rc"
}

# debian_package_prepare ARCH PKG NAME: the candidate version of PKG for ARCH,
# unpacked in the cache as NAME/<version>/root (the newest cached one if apt can
# tell nothing). Sets DK_PKGROOT. Returns 1 (with a message) if it cannot be had.
debian_package_prepare() {
    local arch=$1 pkg=$2 base=$DK_CACHE/$3 ver dir rc=0
    DK_UPDATED=0
    dk_lock
    dk_apt_fresh "$arch"
    ver=$({ dk_apt "$arch" apt-cache policy "$pkg" 2>/dev/null || true; } | awk '/^  Candidate:/ { print $2 }')
    if [[ -z $ver || $ver == "(none)" ]]; then
        dir=$(find "$base" -mindepth 2 -maxdepth 2 -name .complete 2>/dev/null | sed 's|/.complete$||' | sort -V | tail -n1)
        if [[ -n $dir ]]; then
            log "apt found no $pkg ($arch); using cached ${dir##*/}"
        else
            log "cannot find $pkg for $arch"
            rc=1
        fi
    else
        dir=$base/${ver//:/%3a}
        if [[ ! -e $dir/.complete ]]; then
            if dk_fetch_unpack "$arch" "$pkg" "$dir"; then
                touch "$dir/.complete"
            else
                rc=1
            fi
        fi
    fi
    dk_unlock
    # shellcheck disable=SC2034 # read by the scripts
    DK_PKGROOT=${dir:+$dir/root}
    return "$rc"
}

# debian_kernel_modules DIR MODULE...: copies MODULE... of kernel KVER (in
# KROOT) and the modules they depend on into DIR, decompressed (busybox insmod
# reads plain .ko only; Debian's are .ko in 5.10 and 6.1, .ko.xz in later
# kernels), and prints their file names (NAME.ko) in load order, each once.
# Built-in modules are skipped. Returns 1 (with a message) if one is missing.
debian_kernel_modules() {
    local dir=$1 m line ko name out
    shift
    mkdir -p "$dir"
    for m in "$@"; do
        # The host's modprobe.d must not matter: -C /dev/null.
        out=$(modprobe -C /dev/null --show-depends -d "$KROOT" -S "$KVER" "$m" 2>&1) ||
            { log "module $m not found for $KVER: $out"; return 1; }
        # "insmod PATH [ARGS]" in load order, "builtin NAME" if built in.
        while read -r line; do
            [[ $line == insmod\ * ]] || continue
            ko=${line#insmod }; ko=${ko%% *}
            name=${ko##*/}; name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
            [[ -e $dir/$name ]] && continue
            case $ko in
                *.xz) xz -dc "$ko" >"$dir/$name" ;;
                *.zst) zstd -qdc "$ko" >"$dir/$name" ;;
                *.gz) gzip -dc "$ko" >"$dir/$name" ;;
                *) cp "$ko" "$dir/$name" ;;
            esac || { log "cannot decompress $ko"; return 1; }
            echo "$name"
        done <<<"$out"
    done
}
