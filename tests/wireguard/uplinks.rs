//! Uplinks other than a plain veth: WireGuard inside WireGuard (L3), VLANs.

use std::net::IpAddr;

use super::*;

/// An L3 uplink: WireGuard inside WireGuard. wg1's endpoint is b's address
/// inside wg0, so wg1's uplink is wg0 (no Ethernet header), and wg0's is
/// the veth. wg0 runs wg1's writer and its own reader, writer first: the
/// mark travels inner packet -> wg1's outer packet -> wg0's outer packet.
/// Both attach orders.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn l3_uplink_wireguard_in_wireguard() {
    let bed = wireguard_bed();
    let wg0 = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    // 1420 - 20 (IPv4) - 8 (UDP) - 32 (WireGuard) = 1360: no fragments in wg0.
    let ends = (wg0.v4_a.into(), wg0.v4_b.into());
    let wg1 = add_wg(&bed, "wg1", 2, (51821, 52821), ends, 1360);
    for order in [["wg1", "wg0"], ["wg0", "wg1"]] {
        let ctx = format!("attached {order:?}");
        for name in order {
            let msg = ok(bed.pdscp(&["attach", name]));
            let up = if name == "wg1" { "wg0" } else { UPLINK };
            assert!(msg.contains(&format!("attached to {up} ")), "{ctx}: {msg}");
        }
        let s = status(&bed);
        assert_attached(&s, "wg0", &wg1);
        assert_attached(&s, UPLINK, &wg0);

        // wg1's data messages leaving a's wg0 (IP packets, no link header) ...
        let inner_cap = Capture::start(&bed.a, "wg0");
        let outer_cap = Capture::start(&bed.b, UPLINK);
        let flows = [
            udp_flow(&bed, &wg1, false, 0xb9, 100, 5, true),
            udp_flow(&bed, &wg1, true, 0x2a, 200, 5, true),
            ping_flow(&bed, &wg1, false, 0xa0, 3, true),
        ];
        let inner = data_from_a(&inner_cap.stop(), &wg1, true);
        check_flows(&inner, &flows, &format!("{ctx}: wg1 in wg0"));
        // ... and wg0's data messages carrying them, on the veth.
        let outer: Vec<Expect> = flows
            .iter()
            .map(|f| Expect {
                what: format!("{} in wg0", f.what),
                len: wg_len(28 + f.len, wg0.mtu),
                ..f.clone()
            })
            .collect();
        let on_wire = data_from_a(&outer_cap.stop(), &wg0, false);
        check_flows(&on_wire, &outer, &format!("{ctx}: wg0 on up0"));

        // wg0's own traffic is marked as well.
        check_marked(&bed, &wg0, &format!("{ctx}: wg0's own"));
        for name in order {
            ok(bed.pdscp(&["detach", name]));
        }
        assert_eq!(status(&bed)["uplinks"].as_array().map(Vec::len), Some(0));
    }

    // wg0 goes away: it was a tunnel (of up0) and an uplink (of wg1). wg1
    // detaches without it, the repair that comes with it releases wg0, and
    // nothing is left behind.
    ok(bed.pdscp(&["attach", "wg1"]));
    ok(bed.pdscp(&["attach", "wg0"]));
    bed.a.sh("ip link del wg0");
    let s = status(&bed);
    assert_eq!(uplink(&s, "wg0")["present"], false, "{s:#}");
    assert_eq!(tunnel(&s, UPLINK, "wg0")["present"], false, "{s:#}");
    let msg = ok(bed.pdscp(&["detach", "wg1"]));
    assert!(msg.contains("wg1: detached from wg0"), "{msg}");
    assert!(msg.contains("wg0: released (device gone"), "{msg}");
    assert!(ok(bed.pdscp(&["detach", "wg0"])).contains("not attached"));
    assert_eq!(status(&bed)["uplinks"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        std::fs::read_dir(&bed.pin_root).map(|d| d.count()).unwrap_or(0),
        0,
        "pins left"
    );
}

/// An uplink with 802.1Q tags: WireGuard over a VLAN device on the veth,
/// pdscp's writer on the veth, VLAN TX offload off there. With
/// `reorder_hdr off` the VLAN device writes the tag into the frame, so the
/// writer's hook sees it in-band; with the default (`reorder_hdr on`) the
/// tag travels as metadata and is written into the frame after the hook.
/// Frames are captured where `a`'s veth sends them (tags in-band), and a
/// mirror on the writer's hook shows which form it saw.
fn vlan_uplink(reorder_hdr: bool) {
    let bed = wireguard_bed();
    for (ns, me, peer, mac) in [
        (&bed.a, 1, 2, "02:00:00:00:00:02"),
        (&bed.b, 2, 1, "02:00:00:00:00:01"),
    ] {
        set_features_off(ns, UPLINK, &["tx-vlan-hw-insert"]);
        ns.sh(&format!(
            "set -e
             ip link add link {UPLINK} name {UPLINK}.10 type vlan id 10 reorder_hdr {r}
             ip addr add 198.18.10.{me}/24 dev {UPLINK}.10
             ip addr add 2001:db8:ff10::{me}/64 dev {UPLINK}.10 nodad
             ip neigh replace 198.18.10.{peer} lladdr {mac} dev {UPLINK}.10 nud permanent
             ip neigh replace 2001:db8:ff10::{peer} lladdr {mac} dev {UPLINK}.10 nud permanent
             ip link set {UPLINK}.10 up",
            r = if reorder_hdr { "on" } else { "off" }
        ));
    }
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let (v4, v6) = (
        (ip("198.18.10.1"), ip("198.18.10.2")),
        (ip("2001:db8:ff10::1"), ip("2001:db8:ff10::2")),
    );
    let wg4 = add_wg(&bed, "wg0", 1, (51820, 52820), v4, 1420);
    let wg6 = add_wg(&bed, "wg1", 2, (51821, 52821), v6, 1420);
    for wg in [&wg4, &wg6] {
        let msg = ok(bed.pdscp(&["attach", &wg.name, "--uplink", UPLINK]));
        assert!(msg.contains("attached to up0"), "{msg}");
    }
    // Mirrors what the egress hook saw, after pdscp's writer, into a sink.
    tc_filter_add_counter(&bed.a, UPLINK, TcDir::Egress, COUNTER_PRIO);

    for wg in [&wg4, &wg6] {
        let ctx = format!("{}, reorder_hdr {reorder_hdr}", wg.name);
        let hook = Capture::start(&bed.a, COUNTER_SINK);
        let pkts = check_udp_and_icmp(&bed, wg, &bed.a, UPLINK, true, &ctx);
        assert!(
            pkts.iter().all(|p| p.vlans == [10]),
            "{ctx}: tagged 10 on the wire: {pkts:#?}"
        );
        let at_hook = data_from_a(&hook.stop(), wg, false);
        assert_eq!(at_hook.len(), pkts.len(), "{ctx}: mirrored from the hook");
        let want: &[u16] = if reorder_hdr { &[] } else { &[10] };
        for p in &at_hook {
            assert_eq!(p.vlans, want, "{ctx}: in-band tags at the hook: {p:?}");
        }
        // The mirror runs after the writer: the same marks as on the wire.
        let marks = |v: &[Outer]| {
            let mut m: Vec<(usize, u8)> = v.iter().map(|p| (p.len, p.tos)).collect();
            m.sort_unstable();
            m
        };
        assert_eq!(marks(&at_hook), marks(&pkts), "{ctx}: marked at the hook");
    }
}

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn vlan_uplink_tags_in_band_at_the_hook() {
    vlan_uplink(false);
}

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn vlan_uplink_tags_inserted_after_the_hook() {
    vlan_uplink(true);
}
