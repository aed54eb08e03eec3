#!/usr/bin/env bash
# vm-bigendian.sh - pdscp on a big-endian kernel: cross-build it for s390x and run
# its BPF programs in Debian's s390x kernels under qemu-system-s390x (TCG).
#
# Usage: sudo scripts/vm-bigendian.sh [--verbose]
#   PDSCP_BE_KERNELS="6.1 6.12"  kernels to boot (default both; 6.1 tests --mode tc,
#                                6.12 --mode tcx and then --mode tc)
#   PDSCP_BE_TIMEOUT=300         seconds per boot
#   PDSCP_BE_MIRROR=URL          Debian mirror for the s390x packages (default:
#                                the one the host's apt uses, else deb.debian.org)
#   CARGO_TARGET_DIR             as for cargo (default ./target)
#
# Why: the BPF object is endian-specific and build.rs must compile it for the
# target's byte order with its own <asm/byteorder.h> (docs/cross-compiling.md).
# qemu-user cannot run BPF programs; only a big-endian kernel can tell whether the
# object loads and reads the headers right.
#
# How:
#   1. Installs what is missing (apt-get --no-install-recommends: the s390x cross gcc
#      and libc, qemu-system-misc (qemu-system-s390x on Debian 12), clang and the
#      tools of the `static` feature; `rustup target add s390x-unknown-linux-gnu`).
#   2. Cross-builds pdscp (--release --locked --features static) and, static, the
#      guest's helpers tests/bigendian/{udpmark,tchooks}.c.
#   3. Check 1, on the host: the BPF object embedded in the binary is big-endian.
#   4. Fetches Debian 12's s390x kernels and busybox-static:s390x with apt-get
#      download from a private apt state in the cache (its own sources list, state
#      and archives: the system's apt configuration and dpkg architectures are not
#      touched), dpkg -x's them into /var/cache/pdscp-vmtest/kernels-s390x/<version>/
#      (never the host's /boot) and depmod's them, under the cache's lock, as
#      scripts/vmtest.sh does for amd64 (scripts/lib/debian-kernel.sh). 6.1 comes
#      from bookworm, 6.12 from bookworm-backports (bookworm-security no longer
#      builds s390x).
#   5. Per kernel: an initramfs with busybox, pdscp and its libc, the helpers, the
#      modules dummy, sch_ingress (clsact) and cls_bpf, and tests/bigendian/
#      guest-init.sh as /init; boots it with a time-out; the guest's checks come
#      back on the console and are printed as TAP lines, numbered across kernels.
# Exits 0 if every check passed, 1 if any failed, 2 on usage errors, 125 if the
# test could not be set up (a build, a download). Must run as root (apt, mknod).

set -euo pipefail
shopt -s inherit_errexit

readonly SELF=${0##*/}
cd "$(dirname "$0")/.."
readonly SRC=$PWD
# shellcheck source=scripts/lib/packages.sh
. scripts/lib/packages.sh
# shellcheck source=scripts/lib/debian-kernel.sh
. scripts/lib/debian-kernel.sh

readonly TARGET=s390x-unknown-linux-gnu
readonly CROSS=s390x-linux-gnu
readonly CROSS_LIBDIR=/usr/s390x-linux-gnu/lib
readonly HOST_PACKAGES=(gcc-s390x-linux-gnu libc6-dev-s390x-cross qemu-system-misc
                        clang linux-libc-dev make pkg-config autoconf automake autopoint
                        flex bison gawk kmod cpio xz-utils zstd debian-archive-keyring)
readonly GUEST_MODULES=(dummy sch_ingress cls_bpf)
readonly EXIT_FAILED=1 EXIT_SETUP=125

KERNELS=${PDSCP_BE_KERNELS:-6.1 6.12}
TIMEOUT_SEC=${PDSCP_BE_TIMEOUT:-300}
DK_MIRROR=${PDSCP_BE_MIRROR:-}  # scripts/lib/debian-kernel.sh; empty: the host's
TARGET_DIR=${CARGO_TARGET_DIR:-$SRC/target}
VERBOSE=0
RUN=""
PDSCP_BIN=""
BUSYBOX=""
TAP_N=0
TAP_FAILED=0
INTERRUPTED=0

# KVER and KROOT: filled in by debian_kernel_prepare (scripts/lib/debian-kernel.sh).

log() { printf '%s: %s\n' "$SELF" "$*" >&2; }
die() { log "error: $*"; exit "$EXIT_SETUP"; }

usage() {
    sed -n '4,11p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

parse_args() {
    while (($#)); do
        case $1 in
            -v|--verbose) VERBOSE=1; shift ;;
            -h|--help) usage ;;
            *) log "unknown argument: $1"; usage 2 >&2 ;;
        esac
    done
    local k
    for k in $KERNELS; do
        case $k in 6.1|6.12) ;; *) log "PDSCP_BE_KERNELS: 6.1 and/or 6.12, not $k"; exit 2 ;; esac
    done
    [[ $TIMEOUT_SEC =~ ^[1-9][0-9]*$ ]] || { log "PDSCP_BE_TIMEOUT must be seconds"; exit 2; }
    ((EUID == 0)) || { log "must run as root (sudo $0)"; exit 2; }
    TARGET_DIR=$(realpath -m -- "$TARGET_DIR")
}

# TAP: one line per check, numbered here.
tap() {  # tap ok|"not ok" TEXT
    TAP_N=$((TAP_N + 1))
    [[ $1 == ok ]] || TAP_FAILED=$((TAP_FAILED + 1))
    printf '%s %d - %s\n' "$1" "$TAP_N" "$2"
}
tap_skip() {
    TAP_N=$((TAP_N + 1))
    printf 'ok %d - %s # SKIP %s\n' "$TAP_N" "$1" "$2"
}

ensure_host_packages() {
    install_missing_packages "${HOST_PACKAGES[@]}" || die "could not install: ${HOST_PACKAGES[*]}"
    command -v cargo >/dev/null || die "cargo is not in PATH (install Rust with rustup)"
    command -v rustup >/dev/null || die "rustup is not in PATH: it adds the $TARGET target"
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        log "rustup target add $TARGET"
        rustup target add "$TARGET" >&2 || die "rustup target add $TARGET failed"
    fi
}

# busybox-static:s390x, unpacked in the cache; sets BUSYBOX.
prepare_busybox() {
    debian_package_prepare s390x busybox-static busybox-s390x ||
        die "cannot fetch busybox-static for s390x"
    BUSYBOX=$DK_PKGROOT/bin/busybox
    [[ -x $BUSYBOX ]] || die "no bin/busybox in ${DK_PKGROOT%/root}"
}

build() {
    export CARGO_TARGET_DIR=$TARGET_DIR
    export CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_LINKER=$CROSS-gcc \
           CC_s390x_unknown_linux_gnu=$CROSS-gcc AR_s390x_unknown_linux_gnu=$CROSS-ar
    log "building pdscp for $TARGET (--features static) in $TARGET_DIR"
    cargo build --release --locked --features static --target "$TARGET" >&2 ||
        die "cargo build for $TARGET failed"
    PDSCP_BIN=$TARGET_DIR/$TARGET/release/pdscp
    local helper
    for helper in udpmark tchooks; do
        "$CROSS-gcc" -O2 -Wall -Wextra -Werror -static -o "$RUN/$helper" "tests/bigendian/$helper.c" ||
            die "building tests/bigendian/$helper.c failed"
    done
}

# Check 1: every BPF ELF object (class 64, e_machine 247) embedded in the binary is
# big-endian: EI_DATA (byte 5) 2, and e_machine read big-endian is 247 (00 f7).
check_bpf_object() {
    local off data machine found=() bad=0
    while IFS=: read -r off _; do
        data=$(od -An -tu1 -j $((off + 5)) -N1 "$PDSCP_BIN" | tr -d ' ')
        machine=$(od -An -tx1 -j $((off + 18)) -N2 "$PDSCP_BIN" | tr -d ' ')
        case $data:$machine in
            2:00f7) found+=("big-endian BPF object at $off") ;;
            1:f700) found+=("LITTLE-endian BPF object at $off"); bad=1 ;;
        esac
    done < <(LC_ALL=C grep -obUaP '\x7fELF\x02' "$PDSCP_BIN")
    printf '# %s\n' "${found[@]:-no BPF object found}"
    if ((${#found[@]} && !bad)); then
        tap ok "the BPF object embedded in pdscp is big-endian (EI_DATA 2, e_machine 247 big-endian)"
    else
        tap "not ok" "the BPF object embedded in pdscp is big-endian (EI_DATA 2, e_machine 247 big-endian)"
    fi
}

# The initramfs for kernel $KVER testing modes $1: busybox, pdscp with its shared
# libraries, the helpers, the modules and /init.
build_initramfs() {
    local out=$1 modes=$2 stage lib modules name args
    stage=$(mktemp -d "$RUN/initramfs.XXXXXX")
    mkdir -p "$stage"/{bin,dev,etc,proc,sys,tmp,usr/sbin,lib/modules,lib/s390x-linux-gnu}
    cp "$BUSYBOX" "$stage/bin/busybox"
    mknod -m 600 "$stage/dev/console" c 5 1
    cp "$PDSCP_BIN" "$RUN/udpmark" "$RUN/tchooks" "$stage/usr/sbin/"
    # pdscp's NEEDED libraries and its interpreter (/lib/ld64.so.1), from the cross libc.
    for lib in $("$CROSS-readelf" -d "$PDSCP_BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        [[ -e $CROSS_LIBDIR/$lib ]] || die "pdscp needs $lib, not in $CROSS_LIBDIR"
        cp -L "$CROSS_LIBDIR/$lib" "$stage/lib/s390x-linux-gnu/"
    done
    cp -L "$CROSS_LIBDIR/ld64.so.1" "$stage/lib/ld64.so.1"
    # The modules in load order, decompressed (busybox insmod reads plain .ko).
    modules=$(debian_kernel_modules "$stage/lib/modules" "${GUEST_MODULES[@]}") ||
        die "the modules of $KVER"
    for name in $modules; do
        args=""
        [[ $name == dummy.ko ]] && args=numdummies=0  # the guest creates both itself
        echo "$name $args"
    done >"$stage/lib/modules/order"
    install -m 755 tests/bigendian/guest-init.sh "$stage/init"
    printf 'MODES=%q\n' "$modes" >"$stage/etc/pdscp-be.conf"
    (cd "$stage" && find . | cpio -o -H newc --quiet) >"$out"
    rm -rf "$stage"
}

# Boot the kernel with the initramfs; the console goes to $2. Sets VM_STATUS.
run_vm() {
    local initrd=$1 console=$2 vm_pid
    # shellcheck disable=SC2054 # the commas are QEMU option syntax
    local -a qemu=(
        qemu-system-s390x -machine s390-ccw-virtio -accel tcg,thread=multi -smp 2 -m 1024
        -nodefaults -no-user-config -display none -no-reboot
        -kernel "$KROOT/boot/vmlinuz-$KVER" -initrd "$initrd"
        -append "console=ttysclp0 quiet loglevel=$((VERBOSE ? 7 : 1)) panic=-1"
        -chardev "file,id=con,path=$console" -device sclpconsole,chardev=con
    )
    # As in vmtest.sh: timeout(1) puts qemu in its own process group; forward INT/TERM.
    timeout --kill-after=10 "$TIMEOUT_SEC" "${qemu[@]}" </dev/null >&2 &
    vm_pid=$!
    trap 'INTERRUPTED=1; kill -TERM "$vm_pid" 2>/dev/null' INT TERM
    while :; do
        VM_STATUS=0
        wait "$vm_pid" || VM_STATUS=$?
        kill -0 "$vm_pid" 2>/dev/null || break
    done
    trap - INT TERM
}

# One boot: kernel series $1, attach modes $2; its checks as TAP lines.
test_kernel() {
    local series=$1 modes=$2 console lines line failed_before=$TAP_FAILED start
    if ! debian_kernel_prepare s390x "$series"; then
        # 6.1 is Debian 12's own kernel: without it the test cannot run. 6.12 (TCX)
        # is a backport that may come and go: skip it, visibly.
        [[ $series == 6.12 ]] || die "cannot fetch Debian 12's s390x $series kernel"
        tap_skip "[$series] s390x kernel" "no Debian 12 s390x $series kernel available"
        return 0
    fi
    build_initramfs "$RUN/initramfs-$KVER.cpio" "$modes"
    console=$RUN/console-$KVER.log
    log "booting Debian's s390x kernel $KVER under qemu-system-s390x (TCG), modes: $modes"
    start=$SECONDS
    run_vm "$RUN/initramfs-$KVER.cpio" "$console"
    ((INTERRUPTED)) && { log "interrupted; qemu was stopped"; exit 130; }
    log "$KVER: qemu ran $((SECONDS - start)) s (status $VM_STATUS)"
    printf '# kernel %s\n' "$KVER"
    lines=$(tr -d '\r' <"$console" 2>/dev/null || true)
    while IFS= read -r line; do
        case $line in
            "PDSCP_BE_RESULT ok - "*) tap ok "[$series] ${line#PDSCP_BE_RESULT ok - }" ;;
            "PDSCP_BE_RESULT not ok - "*) tap "not ok" "[$series] ${line#PDSCP_BE_RESULT not ok - }" ;;
        esac
    done <<<"$lines"
    if grep -qx PDSCP_BE_DONE <<<"$lines"; then
        tap ok "[$series] the guest ran all its checks and powered off"
    elif ((VM_STATUS == 124 || VM_STATUS == 137)); then
        tap "not ok" "[$series] the guest ran all its checks (time-out after $TIMEOUT_SEC s)"
    else
        tap "not ok" "[$series] the guest ran all its checks (qemu status $VM_STATUS)"
    fi
    # Details of a failing boot (or of every boot with --verbose).
    if ((VERBOSE || TAP_FAILED > failed_before)); then
        if grep -q '^PDSCP_BE_' <<<"$lines"; then
            sed -n 's/^PDSCP_BE_DIAG/#/p' <<<"$lines"
        else
            printf '# %s\n' "console:" && tail -n 40 <<<"$lines" | sed 's/^/#   /'
        fi
    fi
    if ((VERBOSE)); then
        grep -v '^PDSCP_BE_' <<<"$lines" | sed 's/^/# console: /'
    fi
}

main() {
    parse_args "$@"
    local start=$SECONDS series modes
    ensure_host_packages
    RUN=$(mktemp -d "${TMPDIR:-/tmp}/pdscp-vm-bigendian.XXXXXX")
    # shellcheck disable=SC2064 # expand $RUN now
    trap "rm -rf '$RUN'" EXIT
    build
    log "build done after $((SECONDS - start)) s"

    # Fetches into the cache take its lock (scripts/lib/debian-kernel.sh).
    prepare_busybox

    echo "# pdscp $(git -C "$SRC" describe --always --dirty 2>/dev/null || echo '?') for $TARGET"
    check_bpf_object
    for series in $KERNELS; do
        case $series in
            6.1) modes=tc ;;      # no TCX before 6.6
            6.12) modes="tcx tc" ;;
        esac
        test_kernel "$series" "$modes"
    done

    echo "1..$TAP_N"
    if ((TAP_FAILED)); then
        log "FAILED: $TAP_FAILED of $TAP_N checks (kernels: $KERNELS), $((SECONDS - start)) s"
        exit "$EXIT_FAILED"
    fi
    log "all $TAP_N checks passed (kernels: $KERNELS), $((SECONDS - start)) s"
}

main "$@"
