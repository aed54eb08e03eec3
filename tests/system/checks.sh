#!/usr/bin/env bash
# checks.sh - the system test's harness, sourced by fresh-debian.sh: TAP
# output, the test bed (up0 to the "peer" namespace, tunnels wgN), and what
# is checked (outer marks on the wire, pins, programs, the state stamp, what
# dpkg says). Uses fresh-debian.sh's DEB, PIN_ROOT and UPLINK, and counts in
# its TESTS and FAILED.

say() { printf '# %s\n' "$*"; }

# check DESCRIPTION COMMAND...: one TAP line; on failure COMMAND's output too.
check() {
    local what=$1 out
    shift
    TESTS=$((TESTS + 1))
    if out=$("$@" 2>&1); then
        echo "ok $TESTS - $what"
    else
        FAILED=$((FAILED + 1))
        echo "not ok $TESTS - $what"
        printf '%s\n' "$out" | sed 's/^/#   /'
        return 1
    fi
}

# wait_for SECONDS COMMAND...: until COMMAND succeeds (hooks run asynchronously
# for systemd, NetworkManager and networkd-dispatcher).
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { "$@"; return 1; }
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------
# The test bed
# ---------------------------------------------------------------------------

declare -A PRIV PUB PEER_PRIV PEER_PUB

setup_bed() {
    ip netns add peer
    ip link add "$UPLINK" type veth peer name wan0 netns peer
    ip addr add 192.0.2.1/24 dev "$UPLINK"
    ip link set "$UPLINK" up
    ip -n peer addr add 192.0.2.2/24 dev wan0
    ip -n peer link set wan0 up
    ip -n peer link set lo up
    # No offloads on the path: one captured packet is one packet sent.
    local n
    for n in 1 2 3 4 5 6 7; do
        PRIV[$n]=$(wg genkey)
        PUB[$n]=$(wg pubkey <<<"${PRIV[$n]}")
        PEER_PRIV[$n]=$(wg genkey)
        PEER_PUB[$n]=$(wg pubkey <<<"${PEER_PRIV[$n]}")
        # The far end, in the peer namespace (its socket lives there).
        ip -n peer link add "pwg$n" type wireguard
        ip netns exec peer wg set "pwg$n" listen-port "5192$n" \
            private-key <(echo "${PEER_PRIV[$n]}") \
            peer "${PUB[$n]}" allowed-ips "10.$n.0.1/32"
        ip -n peer addr add "10.$n.0.2/24" dev "pwg$n"
        ip -n peer link set "pwg$n" up
    done
    mkdir -p /etc/wireguard
}

# wg_conf N [EXTRA-INTERFACE-LINES]: wg-quick style config of tunnel N.
wg_conf() {
    local n=$1 extra=${2:-}
    cat <<EOF
[Interface]
PrivateKey = ${PRIV[$n]}
ListenPort = 5182$n
$extra
[Peer]
PublicKey = ${PEER_PUB[$n]}
Endpoint = 192.0.2.2:5192$n
AllowedIPs = 10.$n.0.2/32
EOF
}

# ifupdown_stanza N [EXTRA-OPTION]: /etc/network/interfaces.d stanza of tunnel
# N with 'pdscp yes' (and EXTRA-OPTION, e.g. "pdscp-uplink up0 up1").
ifupdown_stanza() {
    printf '%s\n' "auto wg$1" "iface wg$1 inet static" "    address 10.$1.0.1/24" \
        "    pre-up ip link add wg$1 type wireguard" \
        "    pre-up wg setconf wg$1 /etc/wireguard/wg$1.conf" \
        "    post-down ip link del wg$1" "    pdscp yes"
    [[ -z ${2:-} ]] || printf '    %s\n' "$2"
}

# ---------------------------------------------------------------------------
# What is checked
# ---------------------------------------------------------------------------

# outer_tos N TOS [PEER-IFACE]: pings tunnel N's peer with TOS and prints the
# TOS bytes of the encrypted packets (WireGuard message type 4, transport
# data) that leave through the uplink, as captured in the peer namespace on
# PEER-IFACE (default wan0, the far end of up0).
outer_tos() {
    local n=$1 tos=$2 iface=${3:-wan0} cap
    cap=$(mktemp)
    # One unmarked ping first, so the handshake is done before the capture.
    ping -c 1 -W 5 "10.$n.0.2" >/dev/null || { echo "no ping through wg$n"; rm -f "$cap"; return 1; }
    ip netns exec peer timeout 10 tcpdump -n -v -l -i "$iface" -c 3 \
        "udp src port 5182$n and udp[8] = 4" >"$cap" 2>"$cap.err" &
    local dump=$!
    # tcpdump says "listening on" once its filter is in place.
    wait_for 5 grep -q 'listening on' "$cap.err"
    ping -c 3 -i 0.2 -W 2 -Q "$tos" "10.$n.0.2" >/dev/null
    wait "$dump"
    grep -o 'tos 0x[0-9a-f]*' "$cap" | cut -d' ' -f2
    rm -f "$cap" "$cap.err"
}

# marked N [PEER-IFACE]: EF pings leave with outer tos 0xb8, AF11 with 0x28.
marked() {
    local n=$1 iface=${2:-wan0} tos seen
    for tos in 0xb8 0x28; do
        seen=$(outer_tos "$n" "$tos" "$iface" | sort -u | tr '\n' ' ')
        [[ $seen == "$tos " ]] || { echo "inner tos $tos: outer tos seen: ${seen:-none}"; return 1; }
    done
}

# unmarked N: EF pings leave with outer tos 0 (what WireGuard alone does).
unmarked() {
    local seen
    seen=$(outer_tos "$1" 0xb8 | sort -u | tr '\n' ' ')
    [[ $seen == "0x0 " ]] || { echo "outer tos seen: ${seen:-none}"; return 1; }
}

# attached wgN: pdscp's pins for the tunnel under the uplink it found.
attached() {
    [[ -d $PIN_ROOT/tunnels/$1 ]] || { pdscp status; return 1; }
    pdscp status | grep -q "$1"
}

# nothing_left: no tunnel attached, so the uplink's pins and program are gone
# too, and no filter of pdscp's is left on it.
nothing_left() {
    [[ ! -e $PIN_ROOT/uplinks/$UPLINK && ! -e $PIN_ROOT/stamp ]] || { ls -R "$PIN_ROOT"; return 1; }
    ! tc filter show dev "$UPLINK" egress | grep -q pdscp
}

# unit_state UNIT STATE: UNIT's ActiveState is STATE.
unit_state() {
    local state
    state=$(systemctl show -P ActiveState "$1")
    [[ $state == "$2" ]] || { echo "$1 is $state"; return 1; }
}

# installed_files: what the package puts where the managers look.
installed_files() {
    local f
    for f in /etc/network/if-up.d/pdscp /etc/network/if-post-down.d/pdscp \
        /etc/NetworkManager/dispatcher.d/50-pdscp /etc/networkd-dispatcher/routable.d/50-pdscp \
        /etc/networkd-dispatcher/off.d/50-pdscp /usr/lib/pdscp/pdscp-hook; do
        [[ -x $f ]] || { echo "missing or not executable: $f"; return 1; }
    done
    for f in /usr/lib/systemd/system/pdscp@.service /etc/pdscp/tunnels \
        /usr/share/bash-completion/completions/pdscp; do
        [[ -f $f ]] || { echo "missing: $f"; return 1; }
    done
    compgen -G '/usr/share/man/man8/pdscp.8*' >/dev/null || { echo "no man page"; return 1; }
}

# logged TEXT: the hooks' syslog lines (journald) mention TEXT.
logged() {
    journalctl -q -t pdscp --no-pager | grep -F -- "$1"
}

# attached_all DEV...: every DEV is attached.
attached_all() {
    local dev
    for dev in "$@"; do
        attached "$dev" || return 1
    done
}

# nothing_in_kernel: nothing pinned under the pin root, no filter of pdscp's on
# any device, and no pdscp program loaded at all. A TCX link holds its
# program, so no TCX link of pdscp's is left either.
nothing_in_kernel() {
    local dev dir
    if [[ -d $PIN_ROOT && -n $(ls -A "$PIN_ROOT") ]]; then
        ls -R "$PIN_ROOT"
        return 1
    fi
    for dev in /sys/class/net/*; do
        dev=${dev##*/}
        for dir in egress ingress; do
            if tc filter show dev "$dev" "$dir" 2>/dev/null | grep 'pdscp_'; then
                echo "a filter of pdscp's on $dev $dir"
                return 1
            fi
        done
    done
    ! bpftool prog show | grep ' name pdscp_'
}

# programs: pdscp's loaded programs, "ID NAME" a line.
programs() {
    bpftool prog show | sed -nE 's/^([0-9]+): .* name (pdscp_[a-z]+) .*/\1 \2/p' | sort
}

# pins: what is pinned under the pin root, a path a line.
pins() {
    (cd "$PIN_ROOT" && find . | sort)
}

# same_state PINS PROGRAMS: the pins and programs are still these.
same_state() {
    [[ $(pins) == "$1" ]] || { echo "pins were:"; echo "$1"; echo "are:"; pins; return 1; }
    [[ $(programs) == "$2" ]] || { echo "programs were:"; echo "$2"; echo "are:"; programs; return 1; }
}

# programs_replaced PINS PROGRAMS: the same pins, and programs of the same
# names with none of these IDs (an upgrade of the programs in place).
programs_replaced() {
    local now
    now=$(programs)
    [[ $(pins) == "$1" ]] || { echo "pins were:"; echo "$1"; echo "are:"; pins; return 1; }
    if [[ $(cut -d' ' -f2 <<<"$now") != "$(cut -d' ' -f2 <<<"$2")" ||
        -n $(comm -12 <(cut -d' ' -f1 <<<"$now" | sort) <(cut -d' ' -f1 <<<"$2" | sort)) ]]; then
        echo "programs were:"; echo "$2"; echo "are:"; echo "$now"
        return 1
    fi
}

# upgrade_pending YES|NO: what pdscp status says of the state's version.
upgrade_pending() {
    local want=$1 json
    json=$(pdscp status --json) || return 1
    case $want in
        yes) grep -q '"upgrade_pending": true' <<<"$json" ;;
        no) grep -q '"upgrade_pending": false' <<<"$json" ;;
    esac || { pdscp status; return 1; }
}

# stamp_bytes: the stamp's value (docs/state.md, Versions), hex bytes.
stamp_bytes() {
    bpftool -j map lookup pinned "$PIN_ROOT/stamp" key 0 0 0 0 |
        grep -o '"value":\[[^]]*\]' | grep -o '0x[0-9a-f]*' | sed 's/^0x//' | tr '\n' ' '
}

# restamp BYTES [B0 B1 B2 B3]: writes the stamp BYTES, with its version field
# (bytes 8 to 11, major << 16 | minor << 8 | patch, little-endian) made B0..B3
# if they are given.
restamp() {
    local -a b
    read -ra b <<<"$1"
    (($# == 1)) || { b[8]=$2 b[9]=$3 b[10]=$4 b[11]=$5; }
    bpftool map update pinned "$PIN_ROOT/stamp" key 0 0 0 0 value hex "${b[@]}"
}

# dpkg_says TEXT ARGS...: `dpkg ARGS` succeeds and says TEXT.
dpkg_says() {
    local text=$1 out
    shift
    out=$(dpkg "$@" 2>&1) || { echo "$out"; return 1; }
    grep -qF -- "$text" <<<"$out" || { echo "$out"; echo "(no '$text' in it)"; return 1; }
}

# dpkg_quiet ARGS...: `dpkg ARGS` succeeds, and pdscp's maintainer scripts
# say nothing (they had nothing to do).
dpkg_quiet() {
    local out
    out=$(dpkg "$@" 2>&1) || { echo "$out"; return 1; }
    if grep -q '^pdscp:' <<<"$out"; then
        echo "$out"
        return 1
    fi
}

# up_wg2_wg3: wg2 up with wg-quick (PostUp attaches it), wg3 with
# wg-quick@wg3 and pdscp@wg3 enabled (the device's appearance attaches it).
up_wg2_wg3() {
    wg_conf 2 "Address = 10.2.0.1/24
PostUp = pdscp attach %i
PreDown = pdscp detach %i || true" >/etc/wireguard/wg2.conf
    wg_conf 3 "Address = 10.3.0.1/24" >/etc/wireguard/wg3.conf
    check "wg-quick up wg2" wg-quick up wg2
    check "systemctl enable pdscp@wg3" systemctl enable --quiet pdscp@wg3
    check "systemctl start wg-quick@wg3" systemctl start wg-quick@wg3
    check "wg2 and wg3 are attached" wait_for 30 attached_all wg2 wg3
}

# down_wg2_wg3: both down again, and their configuration gone.
down_wg2_wg3() {
    check "wg-quick down wg2" wg-quick down wg2
    check "systemctl stop wg-quick@wg3" systemctl stop wg-quick@wg3
    rm -f /etc/wireguard/wg2.conf /etc/wireguard/wg3.conf
}
