#!/usr/bin/env bash
# vm-tests.sh - run pdscp's WireGuard tests (tests/wireguard.rs) inside Debian's
# stock kernels under QEMU (scripts/vmtest.sh): this machine's kernel has no
# WireGuard, and pdscp must work on 6.1 (tc) and 6.12 (TCX).
#
# Usage: sudo scripts/vm-tests.sh [TEST-BINARY-ARGS...]
#   e.g. sudo scripts/vm-tests.sh l3_uplink        # only tests whose name matches
#        sudo scripts/vm-tests.sh --nocapture      # show the tests' own output
#   PDSCP_VM_KERNELS="6.1 6.12"  kernels to run on (default both)
#   PDSCP_VM_THREADS=3           test threads inside the VM (default 3; 1 for
#                                readable output when debugging)
#   PDSCP_VM_TIMEOUT=900         seconds per kernel, boot included
#
# Builds the test binary and pdscp on the host; the guest sees them (and the
# whole host file system) read-only over 9p, so CARGO_BIN_EXE_pdscp, baked into
# the test binary as an absolute path, works inside. Prints a summary per
# kernel; exits non-zero if any test failed on any kernel.
#
# Most of a test's time under QEMU's TCG goes to starting processes (ip, wg,
# nsenter, pdscp) and waiting (pings, handshakes), not to the two vCPUs, and
# every test has namespaces and pins of its own: three threads cut the run to
# about half of one thread's.

set -euo pipefail
shopt -s inherit_errexit

readonly SELF=${0##*/}
cd "$(dirname "$0")/.."

KERNELS=${PDSCP_VM_KERNELS:-6.1 6.12}
THREADS=${PDSCP_VM_THREADS:-3}
TIMEOUT=${PDSCP_VM_TIMEOUT:-900}

log() { printf '%s: %s\n' "$SELF" "$*" >&2; }

if ((EUID != 0)); then
    log "run as root (sudo $0): the tests and scripts/vmtest.sh need it"
    exit 2
fi

# The test binary's path, from cargo's JSON messages (jq is not required).
build() {
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

# Runs the tests on one kernel; output goes to $2 (and, as it comes, to the terminal).
run_kernel() {
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

main() {
    local exe kernel out start status failed=0 line
    local -a summary=()
    exe=$(build)
    out=$(mktemp -d "${TMPDIR:-/tmp}/pdscp-vm-tests.XXXXXX")
    # shellcheck disable=SC2064 # expand $out now
    trap "rm -rf '$out'" EXIT

    for kernel in $KERNELS; do
        log "==== kernel $kernel ===="
        start=$SECONDS
        status=0
        run_kernel "$kernel" "$out/$kernel.log" "$exe" "$@" || status=$?
        summary+=("==== kernel $kernel: exit $status, $((SECONDS - start)) s (boot included)")
        # libtest: "test NAME ... ok|FAILED <12.345s>" (a time-out leaves no line)
        while IFS= read -r line; do
            summary+=("    $line")
        done < <(grep -aE '^test .* \.\.\. (ok|FAILED)' "$out/$kernel.log" |
                     sed -E 's/^test (.*) \.\.\. ([A-Za-z]+) *<?([0-9.]*s)?>?.*/\2 \3 \1/' |
                     sort -k3 | awk '{ printf "%-7s %9s  %s\n", $1, $2, $3 }')
        line=$(grep -a '^test result:' "$out/$kernel.log" | tail -n1) || true
        summary+=("    ${line:-no test result (VM failed or timed out)}")
        ((status == 0)) || failed=1
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
