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

# The harness: TAP, the test bed and the checks.
# shellcheck source=tests/system/checks.sh
. "$(dirname "$0")/checks.sh"

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
    ifupdown_stanza 1 >/etc/network/interfaces.d/wg1
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
    ifupdown_stanza 7 "pdscp-uplink up0 up1" >/etc/network/interfaces.d/wg7
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
