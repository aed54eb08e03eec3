#!/usr/bin/env bash
# vm-tests.sh - the tests that need real WireGuard and whole Debian systems,
# under QEMU (scripts/vmtest.sh): this machine's kernel has no WireGuard, and
# pdscp must work on Debian's stock kernels: 5.10 (Debian 11) and 6.1 (Debian
# 12) with tc, 6.12 (Debian 12's newer kernel) with TCX.
#
# Two suites, each run on its kernels:
#   wireguard  tests/wireguard/ inside the kernel, on the host's own files
#              (the datapath, port and uplink discovery with real WireGuard);
#              on 5.10, 6.1 and 6.12
#   system     the .deb on a fresh Debian 12 (scripts/vm-rootfs.sh) booted with
#              its own systemd, udev and D-Bus: tunnels brought up by ifupdown,
#              wg-quick, pdscp@.service, systemd-networkd and NetworkManager are
#              marked with no pdscp command typed (tests/system/fresh-debian.sh);
#              on 6.1 and 6.12 (Debian 12's own kernels)
#
# Usage: sudo scripts/vm-tests.sh [TEST-BINARY-ARGS...]
#   e.g. sudo scripts/vm-tests.sh l3_uplink        # only wireguard tests whose name matches
#        sudo scripts/vm-tests.sh --nocapture      # show the tests' own output
#   PDSCP_VM_SUITES="wireguard system"  suites to run (default both)
#   PDSCP_VM_KERNELS="6.1 6.12"  kernels to run every suite on (default: each
#                                suite's own, see above; 5.10, 6.1, 6.12)
#   PDSCP_VM_THREADS=3           wireguard test threads inside the VM (default 3;
#                                1 for readable output when debugging)
#   PDSCP_VM_TIMEOUT=900         seconds per kernel and suite, boot included
#   PDSCP_SYSTEM_CASES="install networkmanager"  only these cases of the system
#                                suite (see tests/system/fresh-debian.sh)
#   PDSCP_DEB=FILE               system suite: test this .deb (inside this
#                                directory) instead of building one
#
# The wireguard suite builds the test binary and pdscp on the host; the guest
# sees them (and the whole host file system) read-only over 9p, so
# CARGO_BIN_EXE_pdscp, baked into the test binary as an absolute path, works
# inside. The system suite builds the .deb with packaging/build-deb.sh
# (installing cargo-deb and dpkg-dev if missing), fails at once if lintian
# finds an error or warning in it, and sees only this directory.
# Prints a summary per kernel and suite; exits non-zero if anything failed.
# Don't rebuild pdscp or the tests while it runs: the guest executes the host's
# files over 9p, and replacing them under it can hang the guest.
#
# Most of a wireguard test's time under QEMU's TCG goes to starting processes
# (ip, wg, nsenter, pdscp) and waiting (pings, handshakes), not to the two
# vCPUs, and every test has namespaces and pins of its own: three threads cut
# the run to about half of one thread's.

set -euo pipefail
shopt -s inherit_errexit

readonly SELF=${0##*/}
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/packages.sh
. scripts/lib/packages.sh

SUITES=${PDSCP_VM_SUITES:-wireguard system}
# Each suite's kernels, unless PDSCP_VM_KERNELS names them for all.
readonly WIREGUARD_KERNELS="5.10 6.1 6.12" SYSTEM_KERNELS="6.1 6.12"
THREADS=${PDSCP_VM_THREADS:-3}
TIMEOUT=${PDSCP_VM_TIMEOUT:-900}

log() { printf '%s: %s\n' "$SELF" "$*" >&2; }

if ((EUID != 0)); then
    log "run as root (sudo $0): the tests, debootstrap and scripts/vmtest.sh need it"
    exit 2
fi

# The wireguard test binary's path, from cargo's JSON messages (jq is not required).
build_wireguard_tests() {
    local json exe
    log "building pdscp and the WireGuard tests"
    cargo build --locked >&2
    json=$(cargo test --locked --no-run --test wireguard --message-format=json)
    exe=$(grep '"reason":"compiler-artifact"' <<<"$json" |
        grep '"kind":\["test"\]' |
        grep '"name":"wireguard"' |
        grep -o '"executable":"[^"]*"' |
        cut -d'"' -f4 | tail -n1) || true
    [[ -n $exe && -x $exe ]] || { log "could not find the wireguard test binary"; exit 2; }
    echo "$exe"
}

# The .deb's path (PDSCP_DEB, or one built now).
build_deb() {
    local deb
    if [[ -n ${PDSCP_DEB:-} ]]; then
        deb=$PDSCP_DEB
    else
        if ! cargo deb --version >/dev/null 2>&1; then
            log "installing cargo-deb (cargo install --locked cargo-deb)"
            cargo install --locked --quiet --version '^3.8' cargo-deb >&2
        fi
        # cargo-deb computes the package's Depends with dpkg-shlibdeps.
        install_missing_packages dpkg-dev || { log "could not install dpkg-dev"; exit 2; }
        log "building the .deb"
        rm -f target/debian/pdscp_*.deb
        packaging/build-deb.sh --quiet >&2
        deb=$(echo target/debian/pdscp_*.deb)
        # A .deb a Debian maintainer would accept: no lintian error or warning
        # (info and pedantic tags are allowed; the overrides say why).
        install_missing_packages lintian || { log "could not install lintian"; exit 2; }
        log "lintian $deb"
        lintian --fail-on error,warning "$deb" >&2 || { log "lintian found errors or warnings in $deb"; exit 1; }
    fi
    deb=$(realpath -e -- "$deb") || { log "no .deb: $deb"; exit 2; }
    [[ $deb == "$PWD"/* ]] || { log "the .deb must be inside $PWD (the guest sees only it)"; exit 2; }
    echo "$deb"
}

# run_wireguard KERNEL LOG EXE [ARGS...]: the wireguard suite on one kernel.
run_wireguard() {
    local kernel=$1 out=$2 exe=$3
    shift 3
    # --report-time (each test's duration) is unstable in libtest; RUSTC_BOOTSTRAP
    # lets a stable-built test binary accept it.
    scripts/vmtest.sh --kernel "$kernel" --timeout "$TIMEOUT" \
        --env RUST_BACKTRACE=1 --env RUSTC_BOOTSTRAP=1 -- \
        "$exe" --ignored --test-threads="$THREADS" -Z unstable-options --report-time "$@" 2>&1 |
        tee "$out"
    return "${PIPESTATUS[0]}"
}

# run_system KERNEL LOG DEB TREE: the system suite on one kernel.
run_system() {
    local kernel=$1 out=$2 deb=$3 tree=$4
    scripts/vmtest.sh --kernel "$kernel" --root "$tree" --systemd --timeout "$TIMEOUT" \
        --env PDSCP_SYSTEM_CASES -- tests/system/fresh-debian.sh "$deb" 2>&1 | tee "$out"
    return "${PIPESTATUS[0]}"
}

# summarize SUITE LOG: the result lines worth keeping, indented.
summarize() {
    local line
    case $1 in
        wireguard)
            # libtest: "test NAME ... ok|FAILED <12.345s>" (a time-out leaves no line)
            grep -aE '^test .* \.\.\. (ok|FAILED)' "$2" |
                sed -E 's/^test (.*) \.\.\. ([A-Za-z]+) *<?([0-9.]*s)?>?.*/\2 \3 \1/' |
                sort -k3 | awk '{ printf "    %-7s %9s  %s\n", $1, $2, $3 }' || true
            line=$(grep -a '^test result:' "$2" | tail -n1) || true
            ;;
        system)
            # TAP: "ok N - what" / "not ok N - what"
            grep -a '^not ok ' "$2" | sed 's/^/    /' || true
            line=$(grep -aE '^# (all [0-9]+ passed|FAILED [0-9]+ of [0-9]+)$' "$2" | tail -n1) || true
            line=${line#\# }
            ;;
    esac
    echo "    ${line:-no result (VM failed or timed out)}"
}

main() {
    local suite kernels kernel out start status failed=0 exe='' deb='' tree=''
    local -a summary=()
    for suite in $SUITES; do
        case $suite in
            wireguard) exe=$(build_wireguard_tests) ;;
            system) deb=$(build_deb); tree=$(scripts/vm-rootfs.sh) ;;
            *) log "unknown suite $suite (wireguard, system)"; exit 2 ;;
        esac
    done
    out=$(mktemp -d "${TMPDIR:-/tmp}/pdscp-vm-tests.XXXXXX")
    # shellcheck disable=SC2064 # expand $out now
    trap "rm -rf '$out'" EXIT

    for suite in $SUITES; do
        kernels=${PDSCP_VM_KERNELS:-}
        if [[ -z $kernels ]]; then
            case $suite in
                wireguard) kernels=$WIREGUARD_KERNELS ;;
                system) kernels=$SYSTEM_KERNELS ;;
            esac
        fi
        for kernel in $kernels; do
            log "==== $suite suite, kernel $kernel ===="
            start=$SECONDS
            status=0
            case $suite in
                wireguard) run_wireguard "$kernel" "$out/$suite-$kernel.log" "$exe" "$@" || status=$? ;;
                system) run_system "$kernel" "$out/$suite-$kernel.log" "$deb" "$tree" || status=$? ;;
            esac
            summary+=("==== $suite suite, kernel $kernel: exit $status, $((SECONDS - start)) s (boot included)")
            mapfile -t -O "${#summary[@]}" summary < <(summarize "$suite" "$out/$suite-$kernel.log")
            ((status == 0)) || failed=1
        done
    done

    printf '\n'
    printf '%s\n' "${summary[@]}"
    if ((failed)); then
        log "FAILED on at least one kernel"
        return 1
    fi
    log "all passed"
}

main "$@"
