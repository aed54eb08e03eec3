//! Which packets leave marked: every protocol over both underlays in both
//! modes, none without pdscp, marks that change within a flow, ports, and
//! the counters.

use std::net::{Ipv4Addr, UdpSocket};

use super::*;

/// Sends UDP (IPv4 and IPv6 inner), pings and a TCP bulk transfer through
/// `t` and checks every outer packet of them is marked like its inner one.
fn check_all_traffic_marked(bed: &TestBed, t: &Tunnel) {
    let cap = Capture::start(&bed.b, UPLINK);
    // EF with ECT(1): ECN must survive the rewrite.
    send_udp(&bed.a, t.b_addr(false), 9000, 0xb9, 5);
    // AF11 with ECT(0) over IPv6: the original read the whole traffic class as DSCP.
    send_udp(&bed.a, t.b_addr(true), 9001, 0x2a, 5);
    // Port-less traffic: its hash survives iptunnel_xmit only because the reader marks it L4.
    assert!(ping(&bed.a, t.b_addr(false), 0xb8, 3).status.success());
    assert!(ping(&bed.a, t.b_addr(true), 0x88, 3).status.success());
    let frames = cap.stop();
    let udp = from_a(&frames, t, IPPROTO_UDP);
    assert_marked(&udp, 10, "UDP");
    assert!(
        udp.iter().any(|p| p.inner_version == 6 && p.outer_tos == 0x2a),
        "IPv6 inner AF11: {udp:?}"
    );
    assert!(
        udp.iter().any(|p| p.inner_version == 4 && p.outer_tos == 0xb9),
        "IPv4 inner EF/ECT(1)"
    );
    let icmp = from_a(&frames, t, IPPROTO_ICMP);
    assert_marked(&icmp, 3, "ICMP");
    assert!(icmp.iter().all(|p| p.outer_dscp() == 46));
    let icmp6 = from_a(&frames, t, IPPROTO_ICMPV6);
    assert!(
        icmp6.iter().filter(|p| p.outer_dscp() == 34).count() >= 3,
        "ICMPv6 echo marked AF41: {icmp6:?}"
    );

    // TCP bulk: GSO super-packets are rewritten once on the uplink and cut
    // into MTU-sized frames afterwards; every frame must carry the mark.
    let cap = Capture::start(&bed.b, UPLINK);
    let sent = 1 << 20;
    assert_eq!(tcp_bulk(&bed.a, &bed.b, t.b_addr(false), 5201, 0x28, sent), sent);
    assert_eq!(tcp_bulk(&bed.a, &bed.b, t.b_addr(true), 5202, 0x48, sent), sent);
    let tcp = from_a(&cap.stop(), t, IPPROTO_TCP);
    assert_marked(&tcp, 1000, "TCP bulk");
    assert!(
        tcp.iter().all(|p| p.outer_len <= 1500),
        "segmented after the writer"
    );
    assert!(tcp.iter().any(|p| p.inner_version == 6 && p.outer_dscp() == 18));
    assert!(tcp.iter().any(|p| p.inner_version == 4 && p.outer_dscp() == 10));
}

fn marks_everything(underlay: Underlay, mode: &str) {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, underlay, 1);
    let msg = attach(&bed, &t, UPLINK, mode);
    assert!(msg.contains(&format!("mode {mode}")), "{msg}");
    check_all_traffic_marked(&bed, &t);
}

#[test]
fn marks_udp_tcp_icmp_over_ipv4_underlay_tcx() {
    marks_everything(Underlay::V4, "tcx");
}

#[test]
fn marks_udp_tcp_icmp_over_ipv4_underlay_tc() {
    marks_everything(Underlay::V4, "tc");
}

#[test]
fn marks_udp_tcp_icmp_over_ipv6_underlay_tcx() {
    marks_everything(Underlay::V6, "tcx");
}

#[test]
fn marks_udp_tcp_icmp_over_ipv6_underlay_tc() {
    marks_everything(Underlay::V6, "tc");
}

/// Without pdscp the same bed loses every mark: the tests above can fail.
#[test]
fn without_pdscp_marks_are_lost() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t.b_addr(false), 9000, 0xb8, 5);
    assert_unmarked(&from_a(&cap.stop(), &t, IPPROTO_UDP), 5, "no pdscp");
}

/// One flow (one socket) changes its mark, then drops it to 0: the outer
/// DSCP follows, down to 0.
#[test]
fn mark_changes_follow_the_flow() {
    for mode in MODES {
        let bed = TestBed::new();
        let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
        attach(&bed, &t, UPLINK, mode);
        let cap = Capture::start(&bed.b, UPLINK);
        let dst = t.b_addr(false);
        bed.a.run_in("one flow, three marks", move || {
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            for tos in [0xb8u8, 0x28, 0x00] {
                set_tos(&sock, false, tos);
                for _ in 0..3 {
                    sock.send_to(&[tos], (dst, 9000)).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        });
        let pkts = from_a(&cap.stop(), &t, IPPROTO_UDP);
        assert_eq!(pkts.len(), 9, "{mode}");
        let outer: Vec<u8> = pkts.iter().map(|p| p.outer_dscp()).collect();
        assert_eq!(outer, [46, 46, 46, 10, 10, 10, 0, 0, 0], "{mode}");
        let s = status(&bed);
        assert_eq!(s["uplinks"][0]["counters"]["flow_inserts"], 1, "{mode}: {s}");
        assert_eq!(s["uplinks"][0]["counters"]["flow_updates"], 2, "{mode}: {s}");
    }
}

/// `--any-port` matches on the flow hash alone; a tunnel attached with the
/// wrong port is never rewritten.
#[test]
fn any_port_and_wrong_port() {
    let bed = TestBed::new();
    let t1 = bed.add_vxlan("wg1", 101, 51820, Underlay::V4, 1);
    let t2 = bed.add_vxlan("wg2", 102, 51830, Underlay::V6, 2);
    ok(bed.pdscp(&["attach", "wg1", "--uplink", UPLINK, "--any-port"]));
    ok(bed.pdscp(&["attach", "wg2", "--uplink", UPLINK, "--port", "4000"]));
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t1.b_addr(true), 9000, 0xb8, 5);
    send_udp(&bed.a, t2.b_addr(true), 9000, 0xb8, 5);
    let frames = cap.stop();
    assert_marked(&from_a(&frames, &t1, IPPROTO_UDP), 5, "any port");
    assert_unmarked(&from_a(&frames, &t2, IPPROTO_UDP), 5, "wrong port");
    let s = status(&bed);
    let tunnels = s["uplinks"][0]["tunnels"].as_array().unwrap().clone();
    assert_eq!(tunnels[0]["any_port"], true, "{s}");
    assert_eq!(tunnels[1]["port"], 4000, "{s}");
    assert!(
        s["uplinks"][0]["counters"]["missed"].as_u64().unwrap() >= 5,
        "{s}"
    );
}

/// Counters report exactly what was sent, in JSON and in Prometheus format.
#[test]
fn counters_count_exactly() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "auto");
    send_udp(&bed.a, t.b_addr(false), 9000, 0xb8, 7);
    send_udp(&bed.a, t.b_addr(true), 9001, 0x28, 5);
    send_udp(&bed.a, t.b_addr(false), 9002, 0x00, 3);
    let s = status(&bed);
    let c = &s["uplinks"][0]["counters"];
    assert_eq!(c["marked_by_dscp"], serde_json::json!({"46": 7, "10": 5}), "{s}");
    assert_eq!(c["seen_by_dscp"]["46"], 7, "{s}");
    assert_eq!(c["seen_by_dscp"]["10"], 5, "{s}");
    assert!(c["seen_by_dscp"]["0"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(c["flow_inserts"], 2, "{s}");
    assert_eq!(s["uplinks"][0]["map_entries"], 2, "{s}");
    let prom = ok(bed.pdscp(&["status", "--prometheus"]));
    for line in [
        "pdscp_marked_packets_total{uplink=\"up0\",dscp=\"46\"} 7",
        "pdscp_marked_packets_total{uplink=\"up0\",dscp=\"10\"} 5",
        "pdscp_flow_inserts_total{uplink=\"up0\"} 2",
        "pdscp_tunnel_attached{uplink=\"up0\",tunnel=\"wg0\"} 1",
        "pdscp_uplink_attached{uplink=\"up0\"} 1",
    ] {
        assert!(prom.lines().any(|l| l == line), "missing {line:?} in\n{prom}");
    }
}
