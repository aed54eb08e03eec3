//! DSCP policy on real WireGuard: handshakes marked as asked instead of
//! the kernel's AF41, and QoS without any mark on the wire (CAKE steered by
//! skb->priority).

use std::thread::sleep;
use std::time::Duration;

use super::*;

/// CAKE diffserv4's tins in `tc -s` order: Bulk, Best Effort, Video, Voice.
const BEST_EFFORT: usize = 1;
const VOICE: usize = 3;

/// Handshake messages of wg between a and b in the capture: (type, TOS)
/// of those a sent.
fn handshakes_from_a(frames: &[Vec<u8>], wg: &Wg) -> Vec<(u8, u8)> {
    frames
        .iter()
        .filter_map(|f| outer_of_frame(f))
        .filter(|p| p.src == wg.outer_a && p.sport == wg.port_a && p.dst == wg.outer_b)
        .filter_map(|p| Some((p.wg_type.filter(|t| (1..=3).contains(t))?, p.tos)))
        .collect()
}

/// Makes `end` forget its peer and learn it again: its next packet starts
/// a handshake (an initiation from it, a response from the other end).
fn new_handshake(bed: &TestBed, wg: &Wg, from_b: bool) {
    let (ns, peer, endpoint) = if from_b {
        (
            &bed.b,
            &wg.key_a.public,
            std::net::SocketAddr::new(wg.outer_a, wg.port_a),
        )
    } else {
        (
            &bed.a,
            &wg.key_b.public,
            std::net::SocketAddr::new(wg.outer_b, wg.port_b),
        )
    };
    ns.sh(&format!(
        "set -e
         wg set {name} peer {peer} remove
         wg set {name} peer {peer} endpoint {endpoint} allowed-ips 0.0.0.0/0,::/0",
        name = wg.name
    ));
    let (ns, dst) = if from_b {
        (&bed.b, wg.v4_a)
    } else {
        (&bed.a, wg.v4_b)
    };
    for _ in 0..10 {
        if ns
            .try_sh(&format!("ping -4 -n -q -c 1 -W 2 {dst}"))
            .status
            .success()
        {
            return;
        }
    }
    panic!("no new handshake");
}

/// `--handshake-dscp cs1`: the initiation a sends and the response it
/// sends leave CS1, not AF41; data messages keep their own marks.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn handshakes_leave_with_the_dscp_asked_for() {
    let bed = wireguard_bed();
    let wg = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    let mut report = Vec::new();
    for option in [None, Some("cs1")] {
        let mut args = vec!["attach", "wg0"];
        args.extend(option.iter().flat_map(|d| ["--handshake-dscp", d]));
        ok(bed.pdscp(&args));
        let cap = Capture::start(&bed.b, UPLINK);
        new_handshake(&bed, &wg, false);
        new_handshake(&bed, &wg, true);
        sleep(Duration::from_millis(200));
        let shakes = handshakes_from_a(&cap.stop(), &wg);
        let types: Vec<u8> = shakes.iter().map(|(t, _)| *t).collect();
        assert!(
            types.contains(&1) && types.contains(&2),
            "{option:?}: an initiation and a response from a: {shakes:?}"
        );
        let want = if option.is_some() { 0x20 } else { 0x88 };
        assert!(
            shakes.iter().all(|(_, tos)| tos & 0xfc == want),
            "{option:?}: {shakes:?}"
        );
        report.push(format!("{option:?}: {shakes:?}"));
    }
    let s = status(&bed);
    assert!(
        s["tunnels"][0]["counters"]["handshakes"].as_u64().unwrap_or(0) >= 2,
        "{s:#}"
    );
    check_marked(&bed, &wg, "data messages keep their marks");
    eprintln!("handshakes (type, outer TOS) from a: {}", report.join("; "));
}

/// `--priority-only` with CAKE diffserv4 on the uplink: the EF flow leaves
/// with DSCP 0 on the wire while CAKE's Voice tin carries it; without pdscp
/// CAKE puts it in Best Effort.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn priority_only_steers_cake_with_no_mark_on_the_wire() {
    let bed = wireguard_bed();
    let wg = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    bed.a
        .sh(&format!("tc qdisc replace dev {UPLINK} root cake diffserv4"));
    let mut report = Vec::new();
    for attached in [false, true] {
        if attached {
            let msg = ok(bed.pdscp(&["attach", "wg0", "--priority-only"]));
            assert!(msg.contains("attached to up0"), "{msg}");
        }
        let before = cake_tin_bytes(&bed.a, UPLINK);
        let cap = Capture::start(&bed.b, UPLINK);
        let flow = udp_flow(&bed, &wg, false, 0xb8, 500, 20, false);
        barrier(&bed, &wg);
        let pkts = data_from_a(&cap.stop(), &wg, false);
        let after = cake_tin_bytes(&bed.a, UPLINK);
        let moved: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let ours: Vec<&Outer> = pkts.iter().filter(|p| p.len == flow.len).collect();
        assert_eq!(ours.len(), 20, "attached {attached}: {pkts:#?}");
        assert!(
            ours.iter().all(|p| p.tos & 0xfc == 0),
            "attached {attached}: no mark on the wire: {ours:#?}"
        );
        let flow_bytes = 20 * flow.len as u64;
        let tin = if attached { VOICE } else { BEST_EFFORT };
        assert!(
            moved[tin] >= flow_bytes,
            "attached {attached}: tin {tin}: {moved:?}"
        );
        if attached {
            assert!(moved[BEST_EFFORT] < flow_bytes, "attached: Best Effort {moved:?}");
        }
        report.push(format!("attached {attached}: tins {moved:?}"));
    }
    let s = status(&bed);
    assert_eq!(s["tunnels"][0]["policy"]["priority_only"], true, "{s:#}");
    eprintln!(
        "CAKE diffserv4 on up0 (Bulk, Best Effort, Video, Voice) bytes: {}",
        report.join("; ")
    );
}
