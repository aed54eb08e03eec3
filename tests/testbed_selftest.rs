//! Proves the test bed itself works, without pdscp: tunnels lose the inner
//! DSCP (the problem pdscp solves), captures count exactly, GSO is cut into
//! MTU-sized frames after the uplink's tc hook, the tc counter counts, and
//! beds do not see each other. Needs root.

mod testbed;

use std::net::IpAddr;

use testbed::*;

const TOS: u8 = 0xb9; // DSCP 46 (EF), ECN 01 (ECT(1))

/// Tunnel packets of one UDP flow from `a` to `b`.
fn udp_flow(frames: &[Vec<u8>], src: IpAddr, dport: u16) -> Vec<TunnelPacket> {
    parse_all(frames)
        .into_iter()
        .filter(|p| p.inner_proto == IPPROTO_UDP && p.inner_src == src && p.inner_dport == Some(dport))
        .collect()
}

/// Sends `count` datagrams from a to b over `t` (inner family `v6`) and
/// checks what b's uplink receives: inner TOS kept, outer DSCP 0.
fn check_udp_loses_dscp(bed: &TestBed, t: &Tunnel, v6: bool, dport: u16, count: usize) {
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t.b_addr(v6), dport, TOS, count);
    let frames = cap.stop();
    let pkts = udp_flow(&frames, t.a_addr(v6), dport);
    assert_eq!(pkts.len(), count, "tunnel packets of the flow: {pkts:#?}");
    let (outer_src, outer_version) = match t.underlay {
        Underlay::V4 => (IpAddr::from(A_V4), 4),
        Underlay::V6 => (IpAddr::from(A_V6), 6),
    };
    for p in &pkts {
        assert_eq!(p.outer_version, outer_version);
        assert_eq!(p.outer_src, outer_src);
        assert_eq!(p.inner_version, if v6 { 6 } else { 4 });
        assert_eq!(p.inner_tos, TOS, "inner TOS kept: {p:?}");
        assert_eq!(p.outer_dscp(), 0, "outer DSCP lost: {p:?}");
        // Like WireGuard, VXLAN copies the ECN bits outwards.
        assert_eq!(p.outer_ecn(), ecn(TOS), "{p:?}");
        assert_eq!(p.outer_sport, t.srcport, "fixed source port: {p:?}");
        assert_eq!(p.outer_dport, VXLAN_PORT);
        assert_eq!(p.vni, t.vni);
        assert!(p.outer_ipv4_checksum_ok, "{p:?}");
    }
}

#[test]
fn udp_over_ipv4_underlay_loses_dscp() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    check_udp_loses_dscp(&bed, &t, false, 9000, 5);
    check_udp_loses_dscp(&bed, &t, true, 9001, 5);
}

#[test]
fn udp_over_ipv6_underlay_loses_dscp() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg6", 200, 51821, Underlay::V6, 2);
    check_udp_loses_dscp(&bed, &t, true, 9000, 5);
    check_udp_loses_dscp(&bed, &t, false, 9001, 5);
}

#[test]
fn tunnels_side_by_side_and_mtu() {
    let bed = TestBed::new();
    let t4 = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let t6 = bed.add_vxlan("wg1", 101, 51830, Underlay::V6, 2);
    let mtu = |dev: &str| {
        bed.a
            .sh(&format!("cat /proc/sys/net/ipv6/conf/{dev}/mtu"))
            .trim()
            .to_owned()
    };
    assert_eq!(mtu(&t4.name), "1450");
    assert_eq!(mtu(&t6.name), "1430");
    // Not `tos inherit`: the outer header gets DSCP 0.
    assert!(!bed.a.sh(&format!("ip -d link show {}", t4.name)).contains("tos"));
    check_udp_loses_dscp(&bed, &t4, false, 7000, 3);
    check_udp_loses_dscp(&bed, &t6, false, 7000, 3);
    for t in [&t4, &t6] {
        for v6 in [false, true] {
            let out = ping(&bed.a, t.b_addr(v6), 0xb8, 2);
            assert!(
                out.status.success(),
                "ping {}: {}",
                t.b_addr(v6),
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

/// 1 MB of TCP leaves the tunnel device as GSO super-packets, which the
/// uplink's tc egress hook still sees whole (visible through the counter
/// filter's mirror), and arrives on b as MTU-sized frames.
fn check_tcp_bulk_segmented(underlay: Underlay) {
    const BYTES: usize = 1 << 20;
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 300, 51820, underlay, 3);
    tc_filter_add_counter(&bed.a, UPLINK, TcDir::Egress, 10);
    let hook = Capture::start(&bed.a, COUNTER_SINK_PEER);
    let cap = Capture::start(&bed.b, UPLINK);
    for v6 in [false, true] {
        let got = tcp_bulk(&bed.a, &bed.b, t.b_addr(v6), 5001, TOS & !3, BYTES);
        assert_eq!(got, BYTES);
    }
    let at_b = parse_all(&cap.stop());
    let at_hook = hook.stop();
    let data: Vec<_> = at_b
        .iter()
        .filter(|p| p.inner_proto == IPPROTO_TCP && p.inner_dport == Some(5001))
        .collect();
    let max_outer = data.iter().map(|p| p.outer_len).max().unwrap_or(0);
    assert_eq!(max_outer, 1500, "outer packets are MTU-sized at most");
    let full = data.iter().filter(|p| p.outer_len == 1500).count();
    // 2 MB at ~1.4 KB per segment: well over a thousand full-sized frames.
    assert!(full > 1000, "only {full} full-sized frames of {}", data.len());
    assert!(data
        .iter()
        .all(|p| p.inner_tos == TOS & !3 && p.outer_dscp() == 0));
    let biggest = at_hook.iter().map(Vec::len).max().unwrap_or(0);
    assert!(
        biggest > 3000,
        "tc egress saw no GSO super-packet (largest {biggest} bytes)"
    );
}

#[test]
fn tcp_bulk_is_segmented_after_uplink_v4() {
    check_tcp_bulk_segmented(Underlay::V4);
}

#[test]
fn tcp_bulk_is_segmented_after_uplink_v6() {
    check_tcp_bulk_segmented(Underlay::V6);
}

#[test]
fn counter_filter_counts_and_continues() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    tc_filter_add_counter(&bed.a, UPLINK, TcDir::Egress, 10);
    // A second filter on the same, already existing clsact.
    tc_filter_add_counter(&bed.a, UPLINK, TcDir::Ingress, 10);
    tc_filter_add_counter(&bed.b, UPLINK, TcDir::Ingress, 20);
    assert!(tc_filter_exists(&bed.a, UPLINK, TcDir::Egress, 10));
    assert!(!tc_filter_exists(&bed.a, UPLINK, TcDir::Egress, 11));
    assert_eq!(tc_filter_packets(&bed.a, UPLINK, TcDir::Egress, 11), 0);

    let before = tc_filter_packets(&bed.a, UPLINK, TcDir::Egress, 10);
    let before_b = tc_filter_packets(&bed.b, UPLINK, TcDir::Ingress, 20);
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t.inner_v4_b.into(), 9000, TOS, 30);
    // `continue` lets every packet through.
    assert_eq!(udp_flow(&cap.stop(), t.inner_v4_a.into(), 9000).len(), 30);
    // The new devices' IPv6 start-up chatter (MLD reports, DAD, router
    // solicitations) adds a few packets in the first seconds.
    let sent = tc_filter_packets(&bed.a, UPLINK, TcDir::Egress, 10) - before;
    let received = tc_filter_packets(&bed.b, UPLINK, TcDir::Ingress, 20) - before_b;
    assert!((30..=45).contains(&sent), "egress counter moved by {sent}");
    assert!(
        (30..=45).contains(&received),
        "ingress counter moved by {received}"
    );

    // Replies from b pass a's ingress counter.
    let before_in = tc_filter_packets(&bed.a, UPLINK, TcDir::Ingress, 10);
    assert!(ping(&bed.a, t.inner_v4_b.into(), 0, 3).status.success());
    let replies = tc_filter_packets(&bed.a, UPLINK, TcDir::Ingress, 10) - before_in;
    assert!(replies >= 3, "ingress counter moved by {replies}");
}

#[test]
fn two_beds_in_parallel_do_not_collide() {
    let run = |tos: u8| {
        move || {
            let bed = TestBed::new();
            // Same device names, VNI, ports and addresses in both beds.
            let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
            let cap = Capture::start(&bed.b, UPLINK);
            send_udp(&bed.a, t.inner_v4_b.into(), 9000, tos, 20);
            let pkts = udp_flow(&cap.stop(), t.inner_v4_a.into(), 9000);
            assert_eq!(pkts.len(), 20);
            assert!(pkts.iter().all(|p| p.inner_tos == tos));
            (bed.a.name.clone(), bed.b.name.clone(), bed.pin_root.clone())
        }
    };
    let h1 = std::thread::spawn(run(0x28));
    let h2 = std::thread::spawn(run(0x88));
    let (r1, r2) = (h1.join().unwrap(), h2.join().unwrap());
    assert_ne!(r1.0, r2.0);
    assert_ne!(r1.1, r2.1);
    assert_ne!(r1.2, r2.2);
}

#[test]
fn netns_lifecycle() {
    let ns = Netns::new("life");
    let path = ns.path();
    assert!(path.exists());
    assert!(ns.sh("ip -o link show lo").contains("UP"));
    assert!(!ns.try_sh("exit 3").status.success());
    let idx = ns.ifindex("lo");
    assert_eq!(idx, 1);
    drop(ns);
    assert!(!path.exists(), "{} left behind", path.display());
}

#[test]
fn parser_survives_truncation() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V6, 1);
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t.inner_v6_b.into(), 9000, TOS, 1);
    let frames = cap.stop();
    let frame = frames
        .iter()
        .find(|f| parse_vxlan(f).is_some_and(|p| p.inner_proto == IPPROTO_UDP))
        .expect("a tunnel frame");
    for n in 0..frame.len() {
        let _ = parse_vxlan(&frame[..n]);
    }
    // Everything up to the inner ports is needed.
    assert!(parse_vxlan(&frame[..14 + 40 + 8 + 8 + 14 + 40 + 4]).is_some());
    assert!(parse_vxlan(&frame[..14 + 40 + 8 + 8 + 14 + 40 + 3]).is_none());
}

#[test]
fn pin_root_is_unique_and_removed() {
    ensure_bpffs();
    ensure_bpffs(); // idempotent: no second mount on top
    let (bed1, bed2) = (TestBed::new(), TestBed::new());
    assert_ne!(bed1.pin_root, bed2.pin_root);
    assert!(bed1.pin_root.starts_with("/sys/fs/bpf"));
    std::fs::create_dir_all(bed1.pin_root.join("sub")).unwrap();
    let root = bed1.pin_root.clone();
    drop(bed1);
    assert!(!root.exists(), "{} left behind", root.display());
    drop(bed2); // never created: nothing to remove
}
