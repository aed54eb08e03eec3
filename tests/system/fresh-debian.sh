#!/usr/bin/env bash
# fresh-debian.sh DEB - the system test: run inside a freshly booted Debian 12
# (the system suite of scripts/vm-tests.sh boots one under QEMU with systemd,
# udev and D-Bus).
#
# It installs pdscp's .deb the way an operator does, then brings WireGuard
# tunnels up and down with each network manager the package has a hook for,
# never calling pdscp itself, and checks after each step that
#   - pdscp attached the tunnel (its pins) or left nothing behind, and
#   - the encrypted outer packets captured on the far side of the uplink carry
#     the inner packets' DSCP (EF and AF11 pings), where a tunnel without pdscp
#     shows 0; also after the route to a tunnel's peer moves to a second
#     uplink (failover), with no pdscp command in between.
# Then it installs the .deb again over itself with tunnels attached (the
# maintainer scripts' upgrade path: the state stays, and a state stamped as an
# older pdscp's is upgraded in place), and removes and purges it with tunnels
# attached (nothing of pdscp's may be left in the kernel). bpftool, in the
# test system for this, reads and rewrites the stamp and lists programs.
#
# The test bed: this machine's uplink is veth up0 (192.0.2.1/24) to a peer
# host, network namespace "peer" (wan0, 192.0.2.2/24), which runs the far end
# of every tunnel. Tunnel N is wgN (10.N.0.1/24, listen port 5182N) with its
# peer pwgN (10.N.0.2, port 5192N). pdscp finds the uplink (the route to the
# peer) and the port (the device's listen port) itself.
#
# Prints one "ok"/"not ok" line per check (TAP); exits 1 if any failed.

set -uo pipefail

readonly DEB=${1:?usage: fresh-debian.sh PDSCP.deb}
readonly PIN_ROOT=/sys/fs/bpf/preserve-dscp
readonly UPLINK=up0
TESTS=0
FAILED=0

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

# ---------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------

case_before_install() {
    say "before pdscp: wg-quick brings wg6 up; WireGuard alone loses the marks"
    wg_conf 6 "Address = 10.6.0.1/24" >/etc/wireguard/wg6.conf
    wg-quick up wg6 >/dev/null 2>&1
    check "without pdscp the outer DSCP is 0" unmarked 6
    wg-quick down wg6 >/dev/null 2>&1
}

case_install() {
    say "dpkg -i $(basename "$DEB")"
    check "the package installs on a fresh system (its dependencies are there)" \
        dpkg -i "$DEB"
    check "pdscp runs" pdscp --version
    check "it installs the hooks, the unit, the man page and completions" installed_files
    check "systemd knows pdscp@.service" systemctl cat pdscp@wg3.service
    check "installing attached nothing" nothing_left
}

case_ifupdown() {
    say "ifupdown: 'pdscp yes' in the stanza of wg1"
    wg_conf 1 >/etc/wireguard/wg1.conf
    cat >/etc/network/interfaces.d/wg1 <<'EOF'
auto wg1
iface wg1 inet static
    address 10.1.0.1/24
    pre-up ip link add wg1 type wireguard
    pre-up wg setconf wg1 /etc/wireguard/wg1.conf
    post-down ip link del wg1
    pdscp yes
EOF
    check "ifup wg1" ifup wg1
    check "ifup attached wg1" attached wg1
    check "wg1's outer packets carry the inner DSCP" marked 1
    check "the hook logged it to syslog" logged "wg1: attached to $UPLINK"
    check "ifdown wg1 (post-down deletes the device first)" ifdown wg1
    check "ifdown left nothing behind" nothing_left

    say "ifupdown at boot: networking.service brings up the auto interfaces"
    check "systemctl restart networking" systemctl restart networking
    check "wg1 is attached" attached wg1
    check "wg1 is marked" marked 1
    check "systemctl stop networking" systemctl stop networking
    check "nothing left" nothing_left
    rm /etc/network/interfaces.d/wg1
}

# uplinks_of wgN: the uplinks status says the tunnel is attached to.
uplinks_of() {
    pdscp status --json | python3 -c 'import json,sys; t=[t for t in json.load(sys.stdin)["tunnels"] if t["name"]==sys.argv[1]]; print(" ".join(t[0]["uplinks"]) if t else "")' "$1"
}

case_failover() {
    say "failover: wg7's peer behind two uplinks, the route moved from up0 to up1 (ifupdown)"
    # A second uplink up1 (198.51.100.1/24) to the peer's wan1; the peer's
    # endpoint on its loopback, routed over up0 for now.
    ip link add up1 type veth peer name wan1 netns peer
    ip addr add 198.51.100.1/24 dev up1
    ip link set up1 up
    ip -n peer addr add 198.51.100.2/24 dev wan1
    ip -n peer link set wan1 up
    ip -n peer addr add 203.0.113.2/32 dev lo
    ip route add 203.0.113.2/32 via 192.0.2.2 dev "$UPLINK"
    wg_conf 7 | sed 's/^Endpoint = .*/Endpoint = 203.0.113.2:51927/' >/etc/wireguard/wg7.conf
    cat >/etc/network/interfaces.d/wg7 <<'EOF'
auto wg7
iface wg7 inet static
    address 10.7.0.1/24
    pre-up ip link add wg7 type wireguard
    pre-up wg setconf wg7 /etc/wireguard/wg7.conf
    post-down ip link del wg7
    pdscp yes
    pdscp-uplink up0 up1
EOF
    check "ifup wg7" ifup wg7
    check "wg7 is attached to up0 and up1" test "$(uplinks_of wg7)" = "up0 up1"
    check "wg7 is marked on up0" marked 7 wan0
    check "the route to the peer moves to up1" ip route replace 203.0.113.2/32 via 198.51.100.2 dev up1
    check "wg7 is marked on up1, no pdscp command in between" marked 7 wan1
    check "the route moves back to up0" ip route replace 203.0.113.2/32 via 192.0.2.2 dev "$UPLINK"
    check "wg7 is marked on up0 again" marked 7 wan0
    check "ifdown wg7" ifdown wg7
    check "ifdown left nothing behind" nothing_left
    check "nor on up1" bash -c '! tc filter show dev up1 egress | grep -q pdscp'
    rm /etc/network/interfaces.d/wg7
    ip route del 203.0.113.2/32
    ip link del up1
}

case_wg_quick() {
    say "wg-quick: PostUp/PreDown lines as in docs/hooks.md"
    wg_conf 2 "Address = 10.2.0.1/24
PostUp = pdscp attach %i
PreDown = pdscp detach %i || true" >/etc/wireguard/wg2.conf
    check "wg-quick up wg2" wg-quick up wg2
    check "wg2 is attached" attached wg2
    check "wg2 is marked" marked 2
    check "wg-quick down wg2" wg-quick down wg2
    check "nothing left" nothing_left
}

case_systemd_unit() {
    say "systemd: pdscp@wg3 enabled, wg-quick@wg3 started"
    wg_conf 3 "Address = 10.3.0.1/24" >/etc/wireguard/wg3.conf
    check "systemctl enable pdscp@wg3" systemctl enable pdscp@wg3
    check "systemctl start wg-quick@wg3" systemctl start wg-quick@wg3
    check "the device's appearance started pdscp@wg3" \
        wait_for 30 systemctl is-active --quiet pdscp@wg3
    check "wg3 is attached" attached wg3
    check "wg3 is marked" marked 3
    check "systemctl stop wg-quick@wg3" systemctl stop wg-quick@wg3
    # (is-active fails already while it is deactivating, i.e. detaching)
    check "the device's removal stopped pdscp@wg3" \
        wait_for 30 unit_state pdscp@wg3 inactive
    check "nothing left" nothing_left
    systemctl disable --quiet pdscp@wg3
}

case_networkd() {
    say "systemd-networkd makes wg4 (.netdev); networkd-dispatcher runs the hook"
    echo wg4 >>/etc/pdscp/tunnels
    cat >/etc/systemd/network/50-wg4.netdev <<EOF
[NetDev]
Name=wg4
Kind=wireguard

[WireGuard]
PrivateKey=${PRIV[4]}
ListenPort=51824

[WireGuardPeer]
PublicKey=${PEER_PUB[4]}
Endpoint=192.0.2.2:51924
AllowedIPs=10.4.0.2/32
EOF
    cat >/etc/systemd/network/50-wg4.network <<'EOF'
[Match]
Name=wg4

[Network]
Address=10.4.0.1/24
EOF
    check "start systemd-networkd and networkd-dispatcher" \
        systemctl start systemd-networkd networkd-dispatcher
    check "wg4 became routable and was attached" wait_for 60 attached wg4
    check "wg4 is marked" marked 4
    check "networkctl down wg4" networkctl down wg4
    check "off detached it" wait_for 30 nothing_left
    networkctl delete wg4 >/dev/null 2>&1
    systemctl stop networkd-dispatcher systemd-networkd systemd-networkd.socket
    rm /etc/systemd/network/50-wg4.*
}

case_networkmanager() {
    say "NetworkManager: a WireGuard connection; 'wg*' in /etc/pdscp/tunnels"
    echo 'wg*' >>/etc/pdscp/tunnels
    # A keyfile without autoconnect, so that one 'nmcli connection up' is the only
    # activation (an imported connection activates by itself, and a second 'up'
    # re-activates it: down, then up, with the dispatcher's events in between).
    install -m 600 /dev/stdin /etc/NetworkManager/system-connections/wg5.nmconnection <<EOF
[connection]
id=wg5
type=wireguard
interface-name=wg5
autoconnect=false

[wireguard]
listen-port=51825
private-key=${PRIV[5]}

[wireguard-peer.${PEER_PUB[5]}]
endpoint=192.0.2.2:51925
allowed-ips=10.5.0.2/32;

[ipv4]
method=manual
address1=10.5.0.1/24

[ipv6]
method=disabled
EOF
    check "start NetworkManager" systemctl start NetworkManager
    check "nmcli connection up wg5" nmcli connection up wg5
    check "the dispatcher attached wg5" wait_for 30 attached wg5 ||
        journalctl -q --no-pager -u NetworkManager -u NetworkManager-dispatcher | tail -n 40 | sed 's/^/#   /'
    check "wg5 is marked" marked 5
    check "nmcli connection down wg5" nmcli connection down wg5
    check "down detached it (the device is gone)" wait_for 30 nothing_left
    systemctl stop NetworkManager
}

case_upgrade() {
    say "dpkg -i of the installed .deb again, tunnels attached (prerm upgrade, postinst configure)"
    up_wg2_wg3
    local pins_before progs_before stamp
    pins_before=$(pins)
    progs_before=$(programs)
    check "dpkg -i: the scripts have nothing to say" dpkg_quiet -i "$DEB"
    check "the same pins and programs as before" same_state "$pins_before" "$progs_before"
    check "pdscp@wg3 is still active" unit_state pdscp@wg3 active
    check "status: no upgrade pending" upgrade_pending no
    check "wg2 is marked" marked 2
    check "wg3 is marked" marked 3

    say "the state stamped by an older pdscp 0.1.9: dpkg -i upgrades it in place"
    stamp=$(stamp_bytes)
    check "restamp 0.1.9" restamp "$stamp" 09 01 00 00
    check "status: upgrade pending" upgrade_pending yes
    check "dpkg -i: postinst upgraded the state" \
        dpkg_says "pdscp: upgraded the state from pdscp 0.1.9 (layout 2) to pdscp 0.2.0" -i "$DEB"
    check "the same pins; new programs in place of the old" programs_replaced "$pins_before" "$progs_before"
    check "status: no upgrade pending" upgrade_pending no
    check "wg2 and wg3 are attached" attached_all wg2 wg3
    check "wg2 is marked" marked 2
    check "wg3 is marked" marked 3

    say "the state stamped by a newer pdscp 99.0.0: dpkg -i says so and goes on"
    stamp=$(stamp_bytes)
    pins_before=$(pins)
    progs_before=$(programs)
    check "restamp 99.0.0" restamp "$stamp" 00 00 63 00
    check "dpkg -i succeeds, postinst warns" dpkg_says "this pdscp can neither use nor detach it" -i "$DEB"
    check "nothing changed" same_state "$pins_before" "$progs_before"
    check "restamp as it was" restamp "$stamp"
    check "status: no upgrade pending" upgrade_pending no
    check "wg2 is marked" marked 2

    down_wg2_wg3
    check "pdscp@wg3 stopped with its device" wait_for 30 unit_state pdscp@wg3 inactive
    check "nothing left" nothing_left
    systemctl disable --quiet pdscp@wg3
}

case_remove() {
    say "dpkg -r with tunnels attached: nothing of pdscp's stays in the kernel"
    dpkg -s pdscp >/dev/null 2>&1 || check "dpkg -i" dpkg -i "$DEB"
    up_wg2_wg3
    check "dpkg -r pdscp: prerm detached wg2 and released up0" \
        dpkg_says "pdscp: $UPLINK: released" -r pdscp
    check "prerm stopped pdscp@wg3 first" unit_state pdscp@wg3 inactive
    check "no pins, filters, programs or links of pdscp's" wait_for 10 nothing_in_kernel
    check "the binary is gone, the conffiles are not" \
        test ! -e /usr/sbin/pdscp -a -e /etc/pdscp/tunnels -a -e /etc/network/if-up.d/pdscp
    check "wg-quick down wg2 (its PreDown finds no pdscp)" wg-quick down wg2
    check "systemctl stop wg-quick@wg3" systemctl stop wg-quick@wg3
    check "dpkg -P pdscp (removed: only postrm purge is left)" dpkg -P pdscp
    check "the conffiles are gone" test ! -e /etc/pdscp/tunnels -a ! -e /etc/network/if-up.d/pdscp
    # The operator's `systemctl enable pdscp@wg3`, which no package script undoes.
    rm -f /etc/systemd/system/sys-subsystem-net-devices-wg3.device.wants/pdscp@wg3.service

    say "dpkg -P of the installed package, a tunnel attached"
    check "dpkg -i" dpkg -i "$DEB"
    check "wg-quick up wg2" wg-quick up wg2
    check "wg2 is attached" attached wg2
    check "dpkg -P pdscp: prerm detached wg2" dpkg_says "pdscp: wg2: detached" -P pdscp
    check "no pins, filters, programs or links of pdscp's" wait_for 10 nothing_in_kernel
    check "wg-quick down wg2" wg-quick down wg2

    say "dpkg -r with nothing attached"
    check "dpkg -i" dpkg -i "$DEB"
    check "dpkg -r pdscp: the scripts have nothing to say" dpkg_quiet -r pdscp
    check "dpkg -P pdscp" dpkg -P pdscp
    rm -f /etc/wireguard/wg2.conf /etc/wireguard/wg3.conf
}

main() {
    # shellcheck disable=SC1091 # the guest's own file
    say "kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME"), systemd $(systemctl --version | sed -n '1s/[^0-9]*\([0-9]*\).*/\1/p')"
    setup_bed
    local c
    # PDSCP_SYSTEM_CASES: run only these (e.g. "install networkmanager"), for debugging.
    for c in ${PDSCP_SYSTEM_CASES:-before_install install ifupdown failover wg_quick systemd_unit networkd networkmanager upgrade remove}; do
        declare -F "case_$c" >/dev/null || { echo "fresh-debian.sh: no case $c" >&2; exit 2; }
        "case_$c"
    done
    say "pdscp's log:"
    journalctl -q -t pdscp --no-pager -o cat | sed 's/^/#   /'
    echo "1..$TESTS"
    if ((FAILED)); then
        say "FAILED $FAILED of $TESTS"
        exit 1
    fi
    say "all $TESTS passed"
}

main "$@"
