//! What attach finds by itself: the listen port, the uplink (by the
//! fwmark route too), the mode, a port that changed.

use std::net::SocketAddr;

use super::*;

/// `pdscp attach wgX` alone: the listen port and the uplink come from the
/// kernel (IPv4 and IPv6 endpoints), and `--mode auto` picks TCX from 6.6,
/// tc before.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn attach_discovers_port_uplink_and_mode() {
    let bed = wireguard_bed();
    let wg0 = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    let wg1 = add_wg_up0(&bed, "wg1", 2, 51821, 52821, Underlay::V6);
    let mode = auto_mode();
    for wg in [&wg0, &wg1] {
        let msg = ok(bed.pdscp(&["attach", &wg.name]));
        assert!(
            msg.contains(&format!("attached to up0 (mode {mode}, port {})", wg.port_a)),
            "{msg}"
        );
    }
    let s = status(&bed);
    assert_eq!(s["uplinks"].as_array().map(Vec::len), Some(1), "{s:#}");
    assert_eq!(
        uplink(&s, UPLINK)["mode"],
        mode,
        "kernel {:?}: {s:#}",
        kernel_version()
    );
    assert_attached(&s, UPLINK, &wg0);
    assert_attached(&s, UPLINK, &wg1);
    check_marked(&bed, &wg0, "discovered, IPv4 endpoint");
    check_marked(&bed, &wg1, "discovered, IPv6 endpoint");
    assert!(ok(bed.pdscp(&["attach", "wg0"])).contains("already attached"));
}

/// The uplink is looked up with WireGuard's fwmark: policy routing sends
/// wg0's packets out of a second link, and pdscp attaches there.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn attach_follows_the_fwmark_route() {
    let bed = wireguard_bed();
    bed.a.sh(&format!(
        "set -e
         ip link add up1 type veth peer name up1 netns {b}
         ip addr add 198.18.2.1/24 dev up1
         ip link set up1 address 02:00:00:00:02:01 up",
        b = bed.b.name
    ));
    bed.b.sh("set -e
         ip addr add 198.18.2.2/24 dev up1
         ip link set up1 address 02:00:00:00:02:02 up
         ip neigh replace 198.18.2.1 lladdr 02:00:00:00:02:01 dev up1 nud permanent");
    // Marked packets to b's up0 address go out of up1.
    bed.a.sh(&format!(
        "set -e
         ip neigh replace 198.18.2.2 lladdr 02:00:00:00:02:02 dev up1 nud permanent
         ip route add {B_V4}/32 via 198.18.2.2 dev up1 src 198.18.2.1 table 100
         ip rule add fwmark 0x51 lookup 100"
    ));
    for ns in [&bed.a, &bed.b] {
        ns.sh("sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.up1.rp_filter=0 net.ipv4.conf.up0.rp_filter=0");
    }
    let ends = ("198.18.2.1".parse().unwrap(), B_V4.into());
    let wg = add_wg(&bed, "wg0", 1, (51820, 52820), ends, 1420);
    bed.a.sh("wg set wg0 fwmark 0x51");
    handshake(&bed, &wg);
    let msg = ok(bed.pdscp(&["attach", "wg0"]));
    assert!(msg.contains("attached to up1"), "{msg}");
    assert_attached(&status(&bed), "up1", &wg);
    check_udp_and_icmp(&bed, &wg, &bed.b, "up1", true, "fwmark route");
}

/// The listen port changes, in place (`wg set listen-port`) and by
/// recreating the device: attaching again updates the port and marks.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn listen_port_change_is_picked_up_by_attach() {
    let bed = wireguard_bed();
    let mut wg = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    let wg_other = add_wg_up0(&bed, "wg1", 2, 51821, 52821, Underlay::V6);
    ok(bed.pdscp(&["attach", "wg0"]));
    ok(bed.pdscp(&["attach", "wg1"]));
    check_udp(&bed, &[(&wg, true), (&wg_other, true)], "before");
    let ifindex = bed.a.ifindex("wg0");

    // In place: same device, new port; b follows (roaming), told explicitly.
    let set_port = |wg: &Wg, port: u16| {
        bed.a.sh(&format!("wg set wg0 listen-port {port}"));
        bed.b.sh(&format!(
            "wg set wg0 peer {} endpoint {}",
            wg.key_a.public,
            SocketAddr::new(wg.outer_a, port)
        ));
    };
    set_port(&wg, 51830);
    wg.port_a = 51830;
    let msg = ok(bed.pdscp(&["attach", "wg0"]));
    assert!(msg.contains("port 51830"), "{msg}");
    let s = status(&bed);
    assert_attached(&s, UPLINK, &wg);
    assert_eq!(tunnel(&s, UPLINK, "wg0")["ifindex"], ifindex, "{s:#}");
    check_udp(&bed, &[(&wg, true), (&wg_other, true)], "port changed in place");

    // Recreated with another port (same keys): a new ifindex too.
    bed.a.sh("ip link del wg0");
    wg.port_a = 51840;
    wg.create(&bed, End::A);
    bed.b.sh(&format!(
        "wg set wg0 peer {} endpoint {}",
        wg.key_a.public,
        SocketAddr::new(wg.outer_a, wg.port_a)
    ));
    handshake(&bed, &wg);
    let msg = ok(bed.pdscp(&["attach", "wg0"]));
    assert!(msg.contains("port 51840"), "{msg}");
    let s = status(&bed);
    assert_attached(&s, UPLINK, &wg);
    assert_ne!(tunnel(&s, UPLINK, "wg0")["ifindex"], ifindex, "{s:#}");
    assert_eq!(tunnel_names(&s, UPLINK).len(), 2, "{s:#}");
    check_udp(&bed, &[(&wg, true), (&wg_other, true)], "device recreated");
}
