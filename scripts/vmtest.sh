#!/usr/bin/env bash
# vmtest.sh - run a host command inside one of Debian's stock kernels under QEMU.
#
# Usage:
#   scripts/vmtest.sh [--kernel 5.10|6.1|6.12] [--cache DIR] [--mem MB] [--timeout SEC]
#                     [--root DIR [--systemd]] [--env NAME[=VALUE]]... [--verbose]
#                     -- COMMAND [ARGS...]
#   scripts/vmtest.sh --kernel 6.1 --fetch-only     # only download/unpack the kernel
#
# Why: the host kernel has no WireGuard, and pdscp must be tested on 5.10 (Debian 11)
# and 6.1 (Debian 12), both tc clsact without TCX, and 6.12 (TCX). Debian's own
# kernels give us all three, with real modules.
#
# How:
#   1. `apt-get download` the newest linux-image-<series>-amd64-unsigned package
#      (5.10 from bullseye/bullseye-security, 6.1 from bookworm/bookworm-security,
#      6.12 from bookworm-security/bookworm-backports) with a private apt setup in
#      the cache dir, whose sources name the Debian archive the host's apt uses
#      (the host's apt sources are not changed), `dpkg -x` it into the cache dir
#      (never the host's /boot or /lib/modules) and `depmod -b` it, once, under a
#      lock on the cache (scripts/lib/debian-kernel.sh).
#   2. Build a tiny per-run initramfs: static busybox, the handful of modules
#      needed to reach the host filesystem (virtio, 9p, overlay; 5.10 and 6.1 ship
#      them as .ko, later kernels as .ko.xz, decompressed here), an /init script
#      and the command to run.
#   3. Boot the kernel with QEMU TCG (no usable KVM here). /init mounts the HOST root
#      read-only over 9p, puts a tmpfs overlay on top (the guest may write anywhere;
#      nothing reaches the host), binds the guest kernel's module tree over
#      /lib/modules/<ver>, mounts proc/sys/dev/bpffs/cgroup2/run, chroots into it and
#      runs COMMAND (with bash, PATH set, stdin /dev/null) in the host's current
#      directory. Inside, `modprobe` and module autoloading work as on a normal system.
#   4. COMMAND's stdout/stderr travel on their own serial ports (ttyS1/ttyS2), so no
#      kernel log is mixed into them; the kernel console (ttyS0) goes to a log file,
#      which also carries the command's exit status back. The script exits with
#      COMMAND's exit status, 124 on time-out (the time-out counts from boot),
#      130 if interrupted, 125 if the VM failed before/while running the command.
#
# --root DIR: the guest's root is DIR (a Debian tree on the host, e.g. made by
# scripts/vm-rootfs.sh) instead of the host's /, with the same tmpfs overlay; the
# current directory is bound in at the same path, read-only.
# --systemd (with --root): boot DIR's systemd as PID 1 and run COMMAND as a service
# once multi-user.target is reached (a whole Debian system: udev, D-Bus, units).
#
# The guest sees the host's files as they are; writes inside the guest are discarded.
# The guest environment is clean: pass variables with --env NAME (host value) or
# --env NAME=VALUE. --verbose prints the whole kernel log (stderr) after the run.
# Must run as root (apt, mknod for the initramfs).

set -euo pipefail

readonly SELF=${0##*/}
# shellcheck source=scripts/lib/packages.sh
. "$(dirname "$0")/lib/packages.sh"
# shellcheck source=scripts/lib/debian-kernel.sh
. "$(dirname "$0")/lib/debian-kernel.sh"
# shellcheck source=scripts/lib/vm-guest.sh
. "$(dirname "$0")/lib/vm-guest.sh"
readonly STD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Modules /init must load before it can see the host root; the rest are loaded
# on demand inside the guest by the host's own modprobe.
readonly BOOT_MODULES=(virtio_pci 9pnet_virtio 9p overlay virtio_rng)
readonly HOST_PACKAGES=(qemu-system-x86 busybox-static kmod xz-utils zstd cpio
                        debian-archive-keyring wireguard-tools iproute2 iputils-ping)
readonly EXIT_TIMEOUT=124 EXIT_VM_FAILED=125

KERNEL_SERIES=6.12
CACHE_DIR=${XDG_CACHE_HOME:-/var/cache}/pdscp-vmtest
MEM_MB=1024
TIMEOUT_SEC=600
FETCH_ONLY=0
VERBOSE=0
GUEST_ROOT=""   # empty: the host's /
BOOT_SYSTEMD=0
GUEST_ENV=()
COMMAND=()
INTERRUPTED=0
VM_STATUS=0

# KVER and KROOT: filled in by debian_kernel_prepare (scripts/lib/debian-kernel.sh).

log() { printf '%s: %s\n' "$SELF" "$*" >&2; }
die() { log "error: $*"; exit "$EXIT_VM_FAILED"; }

usage() {
    sed -n '4,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
}

usage_error() {
    log "$*"
    sed -n '4,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

parse_args() {
    while (($#)); do
        case $1 in
            --kernel) KERNEL_SERIES=${2:?--kernel needs 5.10, 6.1 or 6.12}; shift 2 ;;
            --cache) CACHE_DIR=${2:?--cache needs a directory}; shift 2 ;;
            --mem) MEM_MB=${2:?--mem needs MB}; shift 2 ;;
            --timeout) TIMEOUT_SEC=${2:?--timeout needs seconds}; shift 2 ;;
            --root) GUEST_ROOT=${2:?--root needs a directory}; shift 2 ;;
            --systemd) BOOT_SYSTEMD=1; shift ;;
            --env) GUEST_ENV+=("${2:?--env needs NAME or NAME=VALUE}"); shift 2 ;;
            --fetch-only) FETCH_ONLY=1; shift ;;
            --verbose) VERBOSE=1; shift ;;
            -h|--help) usage ;;
            --) shift; COMMAND=("$@"); break ;;
            *) usage_error "unknown argument: $1" ;;
        esac
    done
    case $KERNEL_SERIES in 5.10|6.1|6.12) ;; *) usage_error "--kernel must be 5.10, 6.1 or 6.12" ;; esac
    [[ $MEM_MB =~ ^[0-9]+$ ]] || usage_error "--mem must be a number of MB"
    [[ $TIMEOUT_SEC =~ ^[1-9][0-9]*$ ]] || usage_error "--timeout must be a number of seconds"
    ((FETCH_ONLY || ${#COMMAND[@]})) || usage_error "no COMMAND given"
    ((EUID == 0)) || die "must run as root"
    # The guest finds the module tree through the host path: it must be absolute.
    CACHE_DIR=$(realpath -m -- "$CACHE_DIR")
    DK_CACHE=$CACHE_DIR
    if [[ -n $GUEST_ROOT ]]; then
        GUEST_ROOT=$(realpath -e -- "$GUEST_ROOT") || usage_error "--root: no such directory"
        [[ $GUEST_ROOT != / ]] || GUEST_ROOT=""
    fi
    if ((BOOT_SYSTEMD)); then
        [[ -n $GUEST_ROOT ]] || usage_error "--systemd needs --root (the host's own systemd is not booted)"
        [[ -x $GUEST_ROOT/lib/systemd/systemd ]] || usage_error "--systemd: $GUEST_ROOT has no /lib/systemd/systemd"
    fi
}

# Install what this script (and the tests run inside the guest) need, only if
# missing (without recommends: wireguard-tools recommends a linux-image).
ensure_host_packages() {
    install_missing_packages "${HOST_PACKAGES[@]}" || die "could not install: ${HOST_PACKAGES[*]}"
}

# The newest kernel of the series in the cache (fetched if needed); sets KVER, KROOT.
prepare_kernel() {
    debian_kernel_prepare amd64 "$KERNEL_SERIES" ||
        die "cannot prepare a Debian $KERNEL_SERIES kernel"
}

# Static busybox + boot modules (decompressed: busybox insmod can't read .ko.xz)
# + /init + per-run config, as an uncompressed newc cpio (fastest for the kernel).
build_initramfs() {
    local out=$1 stage=$2
    mkdir -p "$stage"/{bin,dev,proc,sys,mnt,modules,vmtest}
    cp /bin/busybox "$stage/bin/busybox"
    mknod -m 600 "$stage/dev/console" c 5 1
    # In load order, dependencies first.
    debian_kernel_modules "$stage/modules" "${BOOT_MODULES[@]}" >"$stage/vmtest/modules" ||
        die "the boot modules of $KVER"
    write_guest_init "$stage/init"
    write_guest_stage2 "$stage/vmtest/stage2"
    printf 'KVER=%q\nMODDIR=%q\nROOTDIR=%q\nCWD=%q\nBOOT_SYSTEMD=%q\n' "$KVER" \
        "$KROOT/lib/modules/$KVER" "$GUEST_ROOT" "$PWD" "$BOOT_SYSTEMD" >"$stage/vmtest/config"
    write_guest_command "$stage/vmtest/cmd"
    if ((BOOT_SYSTEMD)); then
        write_guest_systemd_unit "$stage/vmtest"
    fi
    (cd "$stage" && find . | cpio -o -H newc --quiet) >"$out"
}

# Boot the VM and stream the command's output; sets VM_STATUS (qemu/timeout status).
run_vm() {
    local run=$1 out_pid err_pid out_hold err_hold
    mkfifo "$run"/{out,err}.{in,out}
    # qemu's pipe chardev writes to PATH.out. cat blocks opening the fifo until a
    # writer exists; holding a write end ourselves avoids a hang if qemu never starts,
    # and dropping it after qemu exits gives cat its EOF.
    cat "$run/out.out" &
    out_pid=$!
    cat "$run/err.out" >&2 &
    err_pid=$!
    exec {out_hold}<>"$run/out.out" {err_hold}<>"$run/err.out"

    # shellcheck disable=SC2054 # the commas are QEMU option syntax
    local -a qemu=(
        qemu-system-x86_64
        # No usable KVM here (nested /dev/kvm aborts with -cpu host): TCG.
        -accel tcg,thread=multi -cpu max -smp 2 -m "$MEM_MB"
        # Like -nographic, but without putting the monitor on our stdin/stdout.
        -nodefaults -no-user-config -display none -no-reboot
        -kernel "$KROOT/boot/vmlinuz-$KVER" -initrd "$run/initramfs.cpio"
        -append "console=ttyS0 quiet loglevel=$((VERBOSE ? 7 : 1)) panic=-1 mitigations=off 8250.nr_uarts=4 systemd.show_status=$((VERBOSE ? 1 : 0))"
        -serial "file:$run/console.log"  # ttyS0: kernel log + exit status
        -serial "pipe:$run/out"          # ttyS1: COMMAND's stdout
        -serial "pipe:$run/err"          # ttyS2: COMMAND's stderr
        -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
        -device virtio-rng-pci           # so getrandom() (wg genkey) never waits
    )
    # timeout(1) runs qemu in its own process group, so a Ctrl-C at the terminal does
    # not reach qemu: forward INT/TERM ourselves (timeout passes them on to qemu).
    timeout --kill-after=10 "$TIMEOUT_SEC" "${qemu[@]}" </dev/null &
    local vm_pid=$!
    trap 'INTERRUPTED=1; kill -TERM "$vm_pid" 2>/dev/null' INT TERM
    while :; do  # a trapped signal interrupts wait; wait again until qemu is gone
        VM_STATUS=0
        wait "$vm_pid" || VM_STATUS=$?
        kill -0 "$vm_pid" 2>/dev/null || break
    done
    trap - INT TERM
    exec {out_hold}>&- {err_hold}>&-
    wait "$out_pid" "$err_pid" || true
}

main() {
    parse_args "$@"
    ensure_host_packages
    prepare_kernel
    if ((FETCH_ONLY)); then
        log "kernel $KVER ready in $KROOT"
        return 0
    fi

    local run start status
    run=$(mktemp -d "${TMPDIR:-/tmp}/pdscp-vmtest.XXXXXX")
    # shellcheck disable=SC2064 # expand $run now
    trap "rm -rf '$run'" EXIT
    build_initramfs "$run/initramfs.cpio" "$run/initramfs"
    log "booting Debian kernel $KVER under QEMU (TCG)"
    start=$SECONDS
    run_vm "$run"
    # A guest kernel that dies while booting, before COMMAND starts, has been
    # seen under TCG (an oops in the scheduler at 1.5 s, once in dozens of
    # boots): that says nothing about COMMAND, so boot once more.
    if ((!INTERRUPTED && VM_STATUS != 124 && VM_STATUS != 137)) &&
        ! grep -aq 'command starts at uptime' "$run/console.log" 2>/dev/null; then
        log "the guest died while booting, before COMMAND started; console tail:"
        tail -n 12 "$run/console.log" >&2 2>/dev/null || true
        log "booting it again"
        rm -f "$run"/{out,err}.{in,out} "$run/console.log"
        run_vm "$run"
    fi

    if ((VERBOSE)); then
        log "---- guest console ----"
        cat "$run/console.log" >&2
        log "---- qemu wall time: $((SECONDS - start)) s ----"
    fi
    if ((INTERRUPTED)); then
        log "interrupted; qemu was stopped"
        exit 130
    fi
    if ((VM_STATUS == 124 || VM_STATUS == 137)); then
        log "error: time-out: COMMAND did not finish within ${TIMEOUT_SEC} s; qemu was killed"
        exit "$EXIT_TIMEOUT"
    fi
    status=$(grep -ao 'PDSCP_VMTEST_EXIT=[0-9]*' "$run/console.log" 2>/dev/null | tail -n1 | cut -d= -f2) || true
    if [[ -z $status ]]; then
        log "error: the VM stopped (qemu status $VM_STATUS) without reporting COMMAND's exit status (rerun with --verbose for the whole kernel log); console tail:"
        tail -n 40 "$run/console.log" >&2 2>/dev/null || true
        exit "$EXIT_VM_FAILED"
    fi
    exit "$status"
}

main "$@"
