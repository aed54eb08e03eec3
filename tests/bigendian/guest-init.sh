#!/bin/busybox sh
# /init of the s390x (big-endian) guest of scripts/vm-bigendian.sh, run by
# busybox sh as PID 1 on Debian's s390x kernel.
#
# Two dummy devices stand in for a tunnel and its uplink: dummy1 (the
# tunnel, 10.9.0.1/24, where pdscp's reader runs) and dummy0 (the uplink,
# where the writer runs). udpmark sends one flow from the tunnel's port:
# inner packets with a DSCP out dummy1, then an outer packet with TOS 0 (plus
# ECN bits) out dummy0 on the same socket, so with the same skb->hash (what
# WireGuard keeps across encapsulation), and captures the outer packet as it
# leaves dummy0. tchooks lists the tc filters and TCX programs of a device.
#
# Each check prints "PDSCP_BE_RESULT ok|not ok - TEXT" and details as
# "PDSCP_BE_DIAG TEXT" on the console; the host numbers them as TAP. The last
# line is "PDSCP_BE_DONE". Configuration: /etc/pdscp-be.conf (MODES, the
# attach modes to test in turn: tc and/or tcx).

/bin/busybox --install -s /bin
export PATH=/bin:/usr/sbin LD_LIBRARY_PATH=/lib/s390x-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1
mount -t bpf -o mode=0700 bpf /sys/fs/bpf

MODES=tc
# shellcheck source=/dev/null # written by scripts/vm-bigendian.sh
. /etc/pdscp-be.conf

PIN_ROOT=/sys/fs/bpf/preserve-dscp
PORT=51820

result() { echo "PDSCP_BE_RESULT $1 - $2"; }
diag() { printf '%s\n' "$@" | sed 's/^/PDSCP_BE_DIAG /'; }
# check TEXT COMMAND...: one result from COMMAND's exit status.
# (busybox sh has no local variables: check_text is check's own.)
check() {
    check_text=$1; shift
    if "$@"; then result ok "$check_text"; else result "not ok" "$check_text"; fi
}
finish() {
    echo "PDSCP_BE_DONE"
    sync
    poweroff -f
}

diag "guest: $(uname -srm), modes: $MODES"
check "the guest kernel is s390x (big-endian)" [ "$(uname -m)" = s390x ]

# The modules, in dependency order (from the host's modprobe --show-depends).
while read -r ko args; do
    # shellcheck disable=SC2086 # module options are words
    insmod "/lib/modules/$ko" $args || diag "insmod $ko failed"
done </lib/modules/order

setup_ok=1
{
    ip link set lo up &&
    ip link add dummy0 type dummy && ip link add dummy1 type dummy &&
    ip link set dummy0 arp off up && ip link set dummy1 arp off up &&
    ip addr add 10.8.0.1/24 dev dummy0 && ip addr add 10.9.0.1/24 dev dummy1
} || setup_ok=0
if [ "$setup_ok" != 1 ]; then
    result "not ok" "guest network setup (dummy0, dummy1)"
    finish
fi

# send INNER_TOS OUTER_TOS: one flow (udpmark); sets $sent to its output.
send() {
    sent=$(udpmark dummy0 "$PORT" "$1" "$2" 2>&1)
    diag "udpmark inner $1 outer $2: $sent"
}

# hooks_clean: no pdscp program left on either device, tc or TCX.
hooks_clean() {
    hooks=$(tchooks dummy0 dummy1 2>&1) || { diag "$hooks"; return 1; }
    diag "$hooks"
    ! printf '%s\n' "$hooks" | grep -Eq 'filter .*(pdscp|name=)|tcx (ingress|egress) [1-9]'
}

# pins_gone: no pinned object anywhere on bpffs, the uplink's pin dir gone.
pins_gone() {
    left=$(find /sys/fs/bpf ! -type d)
    if [ -n "$left" ] || [ -e "$PIN_ROOT/uplinks/dummy0" ]; then
        diag "left on bpffs:" "$left" "$(ls -la "$PIN_ROOT" 2>&1)"
        return 1
    fi
}

# status_text_ok MODE: the text status shows the uplink attached in MODE and
# the two marked flows.
status_text_ok() {
    printf '%s\n' "$text" | grep -q "mode $1, present, attached" &&
        printf '%s\n' "$text" | grep -qx "  marked by dscp 10:1 46:1"
}

# status_json_ok: the JSON counters of the three flows (two marked, one miss)
# and no packet the reader failed to parse as IP.
status_json_ok() {
    for k in '"marked": 2,' '"missed": 1,' '"flow_inserts": 2,' '"not_ip": 0,'; do
        printf '%s\n' "$json" | grep -qF "$k" || return 1
    done
}

# seen_has DSCP: the JSON status's seen_by_dscp has DSCP.
seen_has() {
    printf '%s\n' "$json" | awk '/"seen_by_dscp"/ { f = 1; next } f && /}/ { f = 0 } f' |
        grep -q "\"$1\":"
}

test_mode() {
    mode=$1
    t="[$mode]"

    # Negative control: nothing attached, so the outer packet keeps its TOS.
    send 0xb9 0x02
    check "$t control: before attach, an outer packet with TOS 0x02 leaves dummy0 unchanged" \
        [ "$sent" = "tos=0x02 checksum=ok" ]

    out=$(pdscp attach dummy1 --uplink dummy0 --port "$PORT" --mode "$mode" 2>&1)
    rc=$?
    diag "pdscp attach: $out (status $rc)"
    check "$t pdscp attach dummy1 --uplink dummy0 --port $PORT --mode $mode" \
        [ "$rc" = 0 ]
    hooks=$(tchooks dummy0 dummy1 2>&1)
    diag "$hooks"
    case $mode in
        tc) want="dummy0 filter egress bpf|dummy1 filter egress bpf" ;;
        *) want="dummy0 tcx egress 1|dummy1 tcx egress 1" ;;
    esac
    check "$t after attach: the writer runs on dummy0's egress, the reader on dummy1's ($mode)" \
        [ "$(printf '%s\n' "$hooks" | grep -cE "^($want)")" = 2 ]

    # Flow A: inner DSCP 46 (EF) with ECT(1); outer TOS 0 with ECT(0) -> 0xba.
    send 0xb9 0x02
    check "$t flow A: inner DSCP 46 (TOS 0xb9), outer sent with TOS 0x02, leaves dummy0 with 0xba (DSCP 46, ECN kept)" \
        [ "${sent%% *}" = "tos=0xba" ]
    check "$t flow A: the outer IPv4 header checksum is valid" \
        [ "${sent#* }" = "checksum=ok" ]
    # Flow B: another socket, another hash: inner DSCP 10 (AF11) -> 0x29.
    send 0x2a 0x01
    check "$t flow B: inner DSCP 10 (TOS 0x2a), outer sent with TOS 0x01, leaves dummy0 with 0x29 (DSCP 10, ECN kept), checksum valid" \
        [ "$sent" = "tos=0x29 checksum=ok" ]
    # Flow C: no inner packets, so no flow entry: left as sent (a miss).
    send - 0x02
    check "$t flow C: an outer packet of a flow the reader never saw leaves dummy0 unchanged (0x02)" \
        [ "$sent" = "tos=0x02 checksum=ok" ]

    text=$(pdscp status 2>&1)
    json=$(pdscp status --json 2>&1)
    diag "pdscp status:" "$text"
    diag "$(printf '%s\n' "$json" | grep -E '"(mode|marked|missed|seen|not_ip|flow_inserts)"')"
    check "$t pdscp status: uplink dummy0 in mode $mode, attached, marked by dscp 10:1 46:1" \
        status_text_ok "$mode"
    check "$t pdscp status --json: marked 2, missed 1, flow_inserts 2, not_ip 0, seen_by_dscp has 10 and 46" \
        status_json_ok
    check "$t pdscp status --json: the reader saw DSCP 10 and 46" \
        eval 'seen_has 10 && seen_has 46'

    out=$(pdscp detach dummy1 2>&1)
    rc=$?
    diag "pdscp detach: $out (status $rc)"
    check "$t pdscp detach dummy1" [ "$rc" = 0 ]
    check "$t after detach: nothing pinned on bpffs ($PIN_ROOT/uplinks/dummy0 gone)" pins_gone
    check "$t after detach: no pdscp tc filter or TCX program on dummy0/dummy1" hooks_clean
    text=$(pdscp status 2>&1)
    diag "pdscp status: $text"
    check "$t after detach: pdscp status says nothing attached" \
        [ "${text#nothing attached}" != "$text" ]
    send 0xb9 0x02
    check "$t control: after detach, the outer packet leaves dummy0 unchanged (0x02)" \
        [ "$sent" = "tos=0x02 checksum=ok" ]
}

for mode in $MODES; do
    test_mode "$mode"
done
finish
