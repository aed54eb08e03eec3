#!/usr/bin/env bash
# vm-rootfs.sh - make (once, cached) a fresh Debian 12 system tree for the
# system tests: scripts/vmtest.sh --root DIR --systemd boots it under QEMU.
#
# Usage: sudo scripts/vm-rootfs.sh [--cache DIR]    # prints the tree's path
#
# What: debootstrap --variant=minbase of bookworm, plus what an operator's
# router or server would have and the tests drive: systemd and udev, D-Bus,
# ifupdown, wireguard-tools (wg, wg-quick), NetworkManager, systemd-networkd
# with networkd-dispatcher, iproute2, ping and tcpdump, and bpftool (to look
# at the programs and the stamp; it needs no library pdscp's package does not
# find there anyway: iproute2 has libelf1 and zlib1g). No pdscp: the test
# installs the .deb itself. The network managers are disabled at boot (each
# test case starts the one it tries), and NetworkManager is kept off devices
# the tests did not hand it.
#
# The tree is cached as CACHE/rootfs/<suite>-<key>/root, where the key changes with the
# package list and this script's setup steps; a stale tree is simply left for
# a new key. Building takes about 1.5 minutes and ~370 MB. Must run as root.

set -euo pipefail

readonly SELF=${0##*/}
# shellcheck source=scripts/lib/packages.sh
. "$(dirname "$0")/lib/packages.sh"
readonly SUITE=bookworm
readonly MIRROR=http://deb.debian.org/debian
readonly PACKAGES=(
    systemd-sysv libpam-systemd udev dbus kmod procps
    iproute2 iputils-ping tcpdump bpftool
    ifupdown wireguard-tools network-manager networkd-dispatcher
)
# Bump when configure_tree changes, so cached trees are rebuilt.
readonly SETUP_VERSION=1

CACHE_DIR=${XDG_CACHE_HOME:-/var/cache}/pdscp-vmtest

log() { printf '%s: %s\n' "$SELF" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Settings of the fresh system that make it a test machine without changing
# what the tests are about: no managers or timers running until asked for.
configure_tree() {
    local root=$1 unit
    echo pdscp-vm >"$root/etc/hostname"
    for unit in NetworkManager.service NetworkManager-wait-online.service \
        networkd-dispatcher.service \
        apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
        e2scrub_reap.service fstrim.timer getty@.service; do
        chroot "$root" systemctl disable --quiet "$unit" 2>/dev/null || true
    done
    # Disabling NetworkManager.service disables the dispatcher with it (Also=),
    # but the dispatcher's alias is how D-Bus starts it when NetworkManager runs.
    chroot "$root" systemctl enable --quiet NetworkManager-dispatcher.service
    # No serial login prompt on the console the test reads.
    chroot "$root" systemctl mask --quiet serial-getty@ttyS0.service serial-getty@ttyS1.service \
        serial-getty@ttyS2.service
    # NetworkManager makes no "Wired connection 1" of its own and keeps its hands
    # off the test bed's veths: it manages only what a test gives it.
    mkdir -p "$root/etc/NetworkManager/conf.d"
    cat >"$root/etc/NetworkManager/conf.d/90-pdscp-vmtest.conf" <<'EOF'
[main]
no-auto-default=*
[keyfile]
unmanaged-devices=interface-name:up*;interface-name:lo
EOF
    # apt in the guest has no network; nothing should try.
    rm -f "$root"/var/lib/apt/lists/*_Packages
}

main() {
    while (($#)); do
        case $1 in
            --cache) CACHE_DIR=${2:?--cache needs a directory}; shift 2 ;;
            -h | --help) sed -n '5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
            *) die "unknown argument: $1" ;;
        esac
    done
    ((EUID == 0)) || die "must run as root (debootstrap)"
    install_missing_packages debootstrap || die "could not install debootstrap"

    local key dir tmp lock_fd
    key=$(printf '%s\n' "$SUITE" "$SETUP_VERSION" "${PACKAGES[@]}" | sha256sum | cut -c1-12)
    dir=$CACHE_DIR/rootfs/$SUITE-$key
    mkdir -p "$CACHE_DIR/rootfs"
    exec {lock_fd}>"$CACHE_DIR/rootfs/.lock"
    flock "$lock_fd"
    if [[ ! -e $dir/.complete ]]; then
        log "building a fresh Debian $SUITE tree in $dir/root (debootstrap, ~1.5 min)"
        tmp=$(mktemp -d "$CACHE_DIR/rootfs/.build.XXXXXX")
        local IFS=,
        if ! debootstrap --variant=minbase --include="${PACKAGES[*]}" "$SUITE" "$tmp/root" \
            "$MIRROR" >"$tmp/debootstrap.log" 2>&1; then
            tail -n 20 "$tmp/debootstrap.log" >&2
            rm -rf "$tmp"
            die "debootstrap failed"
        fi
        unset IFS
        configure_tree "$tmp/root"
        touch "$tmp/.complete"
        rm -rf "$dir"
        mv "$tmp" "$dir"
    fi
    echo "$dir/root"
}

main "$@"
