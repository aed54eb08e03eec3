//! One WireGuard device over several uplinks: a peer's endpoint moved from
//! one uplink to another mid-stream, peers behind different uplinks, IPv4
//! and IPv6 endpoints over different uplinks. Marks follow with no command.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::thread::sleep;
use std::time::Duration;

use super::*;

const UP1: &str = "up1";
const UP1_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const UP1_B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const UP1_A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff01, 0, 0, 0, 0, 1);
const UP1_B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff01, 0, 0, 0, 0, 2);
/// Endpoints on the loopbacks, so the route decides the uplink.
const LO_A: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 1);
const LO_B: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 2);
const LO_B2: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 3);

/// The bed with `up1` beside `up0` (IPv4 and IPv6), a's loopback address
/// LO_A, and b's LO_B and LO_B2 routed from a over `up0` for now.
fn two_uplinks() -> TestBed {
    let bed = wireguard_bed();
    bed.add_veth(UP1, UP1_A, UP1_B, 9);
    for (ns, me, peer, side) in [(&bed.a, UP1_A6, UP1_B6, 2), (&bed.b, UP1_B6, UP1_A6, 1)] {
        ns.sh(&format!(
            "set -e
             ip addr add {me}/64 dev {UP1} nodad
             ip neigh replace {peer} lladdr 02:00:00:02:09:{side:02x} dev {UP1} nud permanent"
        ));
    }
    bed.a.sh(&format!(
        "set -e
         ip addr add {LO_A}/32 dev lo
         ip route add {LO_B}/32 via {B_V4} dev {UPLINK} src {LO_A}
         ip route add {LO_B2}/32 via {B_V4} dev {UPLINK} src {LO_A}"
    ));
    // b answers from LO_B2 by a table of its own, so each of b's two
    // loopback addresses can have its own way back to LO_A.
    bed.b.sh(&format!(
        "set -e
         ip addr add {LO_B}/32 dev lo
         ip addr add {LO_B2}/32 dev lo
         ip route add {LO_A}/32 via {A_V4} dev {UPLINK} src {LO_B}
         ip route add {LO_A}/32 via {A_V4} dev {UPLINK} src {LO_B2} table 102
         ip rule add from {LO_B2} table 102"
    ));
    bed
}

/// Moves a's route to `dst` onto `uplink` (its source stays LO_A), and b's
/// way back from `dst` to LO_A with it: WireGuard drops the source address
/// it answers from when the route back leaves by another device than the
/// peer's packets came in on, and a would then roam to that address.
fn route_via(bed: &TestBed, dst: Ipv4Addr, uplink: &str) {
    let (gw, back) = if uplink == UPLINK {
        (B_V4, A_V4)
    } else {
        (UP1_B, UP1_A)
    };
    bed.a.sh(&format!(
        "ip route replace {dst}/32 via {gw} dev {uplink} src {LO_A}"
    ));
    let table = if dst == LO_B { "main" } else { "102" };
    bed.b.sh(&format!(
        "ip route replace {LO_A}/32 via {back} dev {uplink} src {dst} table {table}"
    ));
}

/// EF datagrams of `payload` bytes from one socket of a, created once: the
/// same flow before and after each move.
fn socket_in_a(bed: &TestBed, dst: IpAddr) -> UdpSocket {
    bed.a.run_in("socket", move || marked_udp_socket(dst, 0xb8))
}

fn send(sock: &UdpSocket, dst: IpAddr, payload: usize, count: usize) {
    for _ in 0..count {
        sock.send_to(&vec![0x42u8; payload], (dst, 9000)).expect("send");
        sleep(Duration::from_millis(2));
    }
}

/// A peer's endpoint moves between the uplinks six times while one EF flow
/// goes on: every data message of it, on either uplink, is marked.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn a_peer_moved_to_another_uplink_mid_stream_stays_marked() {
    let bed = two_uplinks();
    let wg = add_wg(&bed, "wg0", 1, (51820, 52820), (LO_A.into(), LO_B.into()), 1420);
    let msg = ok(bed.pdscp(&["attach", "wg0", "--uplink", UPLINK, "--uplink", UP1]));
    assert!(msg.contains("attached to up0, up1"), "{msg}");
    let caps = [Capture::start(&bed.b, UPLINK), Capture::start(&bed.b, UP1)];
    let dst = wg.b_addr(false);
    let sock = socket_in_a(&bed, dst);
    let rounds = [UP1, UPLINK, UP1, UPLINK, UP1, UPLINK];
    for up in rounds {
        route_via(&bed, LO_B, up);
        send(&sock, dst, 100, 5);
        barrier(&bed, &wg);
    }
    let len = wg_len(28 + 100, wg.mtu);
    let mut report = Vec::new();
    for (cap, up) in caps.into_iter().zip([UPLINK, UP1]) {
        let pkts: Vec<Outer> = data_from_a(&cap.stop(), &wg, false)
            .into_iter()
            .filter(|p| p.len == len)
            .collect();
        let marked = pkts.iter().filter(|p| p.tos == 0xb8).count();
        assert_eq!(pkts.len(), 15, "{up}: three rounds of 5 data messages: {pkts:#?}");
        assert_eq!(marked, pkts.len(), "{up}: every one marked EF: {pkts:#?}");
        report.push(format!("{up}: 15 sent/{marked} marked"));
    }
    eprintln!("endpoint moved {} times: {}", rounds.len(), report.join(", "));
}

/// Device wg0 of a with two peers: one's endpoint an IPv4 address behind
/// up0, the other's `second` behind up1; b has a device per peer.
/// `pdscp attach wg0` finds both uplinks by itself.
fn two_peers(second: IpAddr) -> (TestBed, [Wg; 2]) {
    let bed = two_uplinks();
    let key = |i| Key::pool(i);
    let peer = |name: &str, port_b: u16, outer_b: IpAddr, inner_b: u8, key_b: usize| Wg {
        name: name.into(),
        port_a: 51820,
        port_b,
        outer_a: if outer_b.is_ipv4() {
            LO_A.into()
        } else {
            UP1_A6.into()
        },
        outer_b,
        v4_a: Ipv4Addr::new(198, 19, 1, 1),
        v4_b: Ipv4Addr::new(198, 19, 1, inner_b),
        v6_a: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
        v6_b: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, inner_b.into()),
        mtu: 1420,
        key_a: key(0),
        key_b: key(key_b),
    };
    let peers = [
        peer("wgb1", 52821, LO_B.into(), 2, 1),
        peer("wgb2", 52822, second, 3, 2),
    ];
    if second.is_ipv4() {
        route_via(&bed, LO_B2, UP1);
    }
    let a_key = key(0);
    let mut set_peers = String::new();
    for p in &peers {
        set_peers += &format!(
            " peer {} endpoint {} allowed-ips {}/32",
            p.key_b.public,
            SocketAddr::new(p.outer_b, p.port_b),
            p.v4_b
        );
    }
    bed.a.sh(&format!(
        "set -e
         ip link add wg0 mtu 1420 type wireguard
         printf '%s\\n' '{}' | wg set wg0 listen-port 51820 private-key /proc/self/fd/0{set_peers}
         ip addr add 198.19.1.1/24 dev wg0
         ip link set wg0 up",
        a_key.private
    ));
    for p in &peers {
        bed.b.sh(&format!(
            "set -e
             ip link add {name} mtu 1420 type wireguard
             printf '%s\\n' '{private}' | wg set {name} listen-port {port} private-key /proc/self/fd/0 \
                peer {public} endpoint {endpoint} allowed-ips 198.19.1.1/32
             ip addr add {inner}/32 dev {name}
             ip link set {name} up",
            name = p.name,
            private = p.key_b.private,
            port = p.port_b,
            public = a_key.public,
            endpoint = SocketAddr::new(p.outer_a, 51820),
            inner = p.v4_b,
        ));
    }
    // The handshakes: a datagram to each peer, until both report one.
    for _ in 0..20 {
        for p in &peers {
            send(&socket_in_a(&bed, p.v4_b.into()), p.v4_b.into(), 10, 1);
        }
        let shakes = bed.a.sh("wg show wg0 latest-handshakes");
        if shakes.lines().count() == 2 && shakes.lines().all(|l| !l.trim_end().ends_with("\t0")) {
            return (bed, peers);
        }
        sleep(Duration::from_millis(500));
    }
    panic!("no handshake with both peers:\n{}", bed.a.sh("wg show wg0"));
}

/// Each peer's data messages leave by its own uplink, and all are marked.
fn both_peers_marked(second: IpAddr) {
    let (bed, peers) = two_peers(second);
    let msg = ok(bed.pdscp(&["attach", "wg0"]));
    assert!(
        msg.contains("attached to up0, up1"),
        "discovered both uplinks: {msg}"
    );
    let s = status(&bed);
    assert_eq!(
        s["tunnels"][0]["uplinks"],
        serde_json::json!([UPLINK, UP1]),
        "{s:#}"
    );
    assert_eq!(s["tunnels"][0]["unmarked_peers"], 0, "{s:#}");
    let caps = [Capture::start(&bed.b, UPLINK), Capture::start(&bed.b, UP1)];
    for p in &peers {
        send(&socket_in_a(&bed, p.v4_b.into()), p.v4_b.into(), 100, 5);
    }
    sleep(Duration::from_millis(500));
    let frames: Vec<Vec<Vec<u8>>> = caps.into_iter().map(Capture::stop).collect();
    let mut report = Vec::new();
    for (p, (frames, up)) in peers.iter().zip(frames.iter().zip([UPLINK, UP1])) {
        let len = wg_len(28 + 100, p.mtu);
        let pkts: Vec<Outer> = data_from_a(frames, p, false)
            .into_iter()
            .filter(|o| o.len == len)
            .collect();
        assert_eq!(
            pkts.len(),
            5,
            "{}: its data messages leave by {up}: {pkts:#?}",
            p.name
        );
        assert!(
            pkts.iter().all(|o| o.tos == 0xb8 && o.checksum_ok),
            "{}: marked EF: {pkts:#?}",
            p.name
        );
        report.push(format!("{} via {up} ({}): 5 sent/5 marked", p.name, p.outer_b));
    }
    eprintln!("two peers: {}", report.join(", "));
}

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn two_peers_behind_two_uplinks_are_both_marked() {
    both_peers_marked(LO_B2.into());
}

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn ipv4_and_ipv6_endpoints_over_two_uplinks_are_both_marked() {
    both_peers_marked(UP1_B6.into());
}
