//! DSCP policy per tunnel: presets and tables, fixed marks (also for a
//! userspace tunnel on a TUN device), a policy changed while a flow runs,
//! and who has the last word when another program writes DSCP too.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::*;

const EF: u8 = 0xb8;
const SPECS: [&str; 6] = [
    "copy",
    "diffserv4",
    "diffserv3",
    "precedence",
    "wash",
    "46=46,34=34,10=8,*=0",
];

/// One datagram (twice) from its own socket for each inner DSCP 0..63, ECN
/// ECT(1) on odd DSCPs and ECT(0) on even ones, to inner port `dport`.
fn every_dscp(bed: &TestBed, dst: IpAddr, dport: u16) {
    bed.a.run_in("every dscp", move || {
        for d in 0..64u8 {
            let tos = (d << 2) | if d % 2 == 1 { 1 } else { 2 };
            let sock = marked_udp_socket(dst, tos);
            for _ in 0..2 {
                sock.send_to(&[d], (dst, dport)).expect("send");
            }
        }
    });
}

/// Each preset and an explicit table: 64 flows, one per inner DSCP, leave
/// with exactly the outer DSCP the table gives, ECN kept, IPv4 checksums
/// valid; inner IPv4 and IPv6; status names the policy.
fn presets_give_exactly_their_marks(mode: &str) {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let mut report = Vec::new();
    for spec in SPECS {
        let msg = attach_with(&bed, &t, mode, &["--dscp-map", spec]);
        assert!(msg.contains("attached"), "{msg}");
        let table = parse_dscp_map(spec).expect("spec");
        let s = status(&bed);
        let shown = s["tunnels"][0]["policy"]["dscp_map"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(spec.contains('=') || shown == spec, "{spec}: status says {shown}");
        let mut counts = std::collections::BTreeMap::new();
        for v6 in [false, true] {
            let what = format!("{mode} {spec} inner v6 {v6}");
            let cap = Capture::start(&bed.b, UPLINK);
            every_dscp(&bed, t.b_addr(v6), 9500);
            let pkts: Vec<TunnelPacket> = from_a(&cap.stop(), &t, IPPROTO_UDP)
                .into_iter()
                .filter(|p| p.inner_dport == Some(9500))
                .collect();
            assert_eq!(pkts.len(), 128, "{what}: packets");
            for p in &pkts {
                let want = table[usize::from(p.inner_dscp())];
                assert_eq!(
                    p.outer_dscp(),
                    want,
                    "{what}: inner {} -> outer: {p:?}",
                    p.inner_dscp()
                );
                assert_eq!(p.outer_ecn(), p.inner_ecn(), "{what}: ECN kept: {p:?}");
                assert!(p.outer_ipv4_checksum_ok, "{what}: checksum: {p:?}");
                *counts.entry(want).or_insert(0) += 1;
            }
        }
        report.push(format!("{spec}: {counts:?}"));
    }
    eprintln!(
        "presets {mode} (outer DSCP: packets on the wire): {}",
        report.join("; ")
    );
}

fn attach_with(bed: &TestBed, t: &Tunnel, mode: &str, extra: &[&str]) -> String {
    let mut args = attach_args(t, UPLINK, mode);
    args.extend(extra.iter().map(|s| s.to_string()));
    ok(bed.pdscp(&args))
}

#[test]
fn presets_and_tables_give_exactly_their_marks_tcx() {
    presets_give_exactly_their_marks("tcx");
}

#[test]
fn presets_and_tables_give_exactly_their_marks_tc() {
    presets_give_exactly_their_marks("tc");
}

/// Attaching again with another policy changes the marks of a running flow
/// from its next packet on, and no packet is lost.
#[test]
fn a_new_policy_takes_effect_at_once_for_running_flows() {
    for mode in MODES {
        let bed = TestBed::new();
        let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
        attach(&bed, &t, UPLINK, mode);
        let cap = Capture::start(&bed.b, UPLINK);
        let done = Arc::new(AtomicBool::new(false));
        let dst = t.b_addr(false);
        let sender = {
            let done = done.clone();
            bed.a.spawn("steady", move || {
                let sock = marked_udp_socket(dst, EF);
                let mut sent = 0u32;
                while sent < 300 || !done.load(Ordering::Relaxed) {
                    sock.send_to(&sent.to_be_bytes(), (dst, 9600)).expect("send");
                    sent += 1;
                    thread::sleep(Duration::from_millis(1));
                }
                sent
            })
        };
        thread::sleep(Duration::from_millis(100));
        attach_with(&bed, &t, mode, &["--dscp-map", "ef=af41"]);
        thread::sleep(Duration::from_millis(100));
        done.store(true, Ordering::Relaxed);
        let sent = sender.join().expect("sender") as usize;
        let pkts: Vec<TunnelPacket> = from_a(&cap.stop(), &t, IPPROTO_UDP)
            .into_iter()
            .filter(|p| p.inner_dport == Some(9600))
            .collect();
        let marks: Vec<u8> = pkts.iter().map(|p| p.outer_dscp()).collect();
        assert_eq!(pkts.len(), sent, "{mode}: no packet lost");
        let switch = marks
            .iter()
            .position(|m| *m == 34)
            .expect("AF41 after the change");
        assert!(
            switch > 0 && marks[..switch].iter().all(|m| *m == 46),
            "{mode}: EF before: {marks:?}"
        );
        assert!(
            marks[switch..].iter().all(|m| *m == 34),
            "{mode}: AF41 from the change on: {marks:?}"
        );
        eprintln!(
            "policy change {mode}: {sent} sent, {switch} EF then {} AF41",
            sent - switch
        );
    }
}

/// (outer source port, TOS) of the plain IPv4 UDP packets of Ethernet frames.
fn udp_tos(frames: &[Vec<u8>]) -> Vec<(u16, u8)> {
    frames
        .iter()
        .filter(|f| f.len() > 42 && f[12..14] == [0x08, 0x00] && f[23] == 17)
        .map(|f| (u16::from_be_bytes([f[34], f[35]]), f[15]))
        .collect()
}

/// `--fixed cs1`: every outer packet from the tunnel's port leaves CS1
/// whatever it carries, no reader is attached, other UDP is left alone.
#[test]
fn a_fixed_mark_marks_every_packet_of_the_tunnel_and_nothing_else() {
    for mode in MODES {
        let bed = TestBed::new();
        let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
        attach_with(&bed, &t, mode, &["--fixed", "cs1"]);
        assert!(
            pdscp_hooks(&bed.a).iter().all(|h| h.dev != "wg0"),
            "{mode}: no reader needed"
        );
        let cap = Capture::start(&bed.b, UPLINK);
        for tos in [EF, 0x88, 0] {
            send_udp(&bed.a, t.b_addr(false), 9000, tos, 3);
        }
        send_udp(&bed.a, IpAddr::from(B_V4), 9999, 0, 3);
        let frames = cap.stop();
        let pkts = from_a(&frames, &t, IPPROTO_UDP);
        assert_eq!(pkts.len(), 9, "{mode}");
        assert!(
            pkts.iter()
                .all(|p| p.outer_dscp() == 8 && p.outer_ipv4_checksum_ok),
            "{mode}: {pkts:?}"
        );
        let plain: Vec<u8> = udp_tos(&frames)
            .into_iter()
            .filter(|(sport, _)| *sport != t.srcport)
            .map(|(_, tos)| tos)
            .collect();
        assert!(
            plain.len() >= 3 && plain.iter().all(|tos| *tos == 0),
            "{mode}: other UDP unmarked: {plain:?}"
        );
    }
}

/// A userspace tunnel (a TUN device and a process sending UDP from a fixed
/// port, as wireguard-go does) is refused without --fixed and marked with
/// it; the host's other UDP is not.
#[test]
fn a_fixed_mark_serves_a_userspace_tunnel_on_a_tun_device() {
    for mode in MODES {
        let bed = TestBed::new();
        let tun = open_tun(&bed.a, "tun9");
        bed.a
            .sh("ip addr add 198.19.9.1/24 dev tun9 && ip link set tun9 up");
        let tunnel = UserspaceTunnel::start(&bed.a, tun, 40100, SocketAddr::new(B_V4.into(), 40101));
        refused(
            bed.pdscp(&["attach", "tun9", "--uplink", UPLINK, "--port", "40100"]),
            "keeps no flow hash",
        );
        ok(bed.pdscp(&[
            "attach", "tun9", "--uplink", UPLINK, "--port", "40100", "--fixed", "cs1", "--mode", mode,
        ]));
        let cap = Capture::start(&bed.b, UPLINK);
        send_udp(&bed.a, "198.19.9.2".parse().unwrap(), 9000, EF, 5);
        send_udp(&bed.a, IpAddr::from(B_V4), 9999, 0, 3);
        thread::sleep(Duration::from_millis(50));
        let carried = tunnel.stop();
        let seen = udp_tos(&cap.stop());
        let ours: Vec<u8> = seen
            .iter()
            .filter(|(p, _)| *p == 40100)
            .map(|(_, t)| *t)
            .collect();
        let others: Vec<u8> = seen
            .iter()
            .filter(|(p, _)| *p != 40100)
            .map(|(_, t)| *t)
            .collect();
        // The TUN device carries its own chatter (IPv6 router solicitations)
        // too, some of it before the capture started.
        assert!(
            ours.len() >= 5 && ours.len() <= carried,
            "{mode}: carried {carried}, on the wire {ours:?}"
        );
        assert!(ours.iter().all(|t| *t == 0x20), "{mode}: CS1: {ours:?}");
        assert!(
            others.len() >= 3 && others.iter().all(|t| *t == 0),
            "{mode}: others: {others:?}"
        );
    }
}

/// Another program that writes DSCP on the uplink (a CS1 writer, as
/// qosify's defaults are) and pdscp: the one that runs last wins. TCX runs
/// before tc filters, and pdscp's tcx writer first among TCX links, so in
/// tcx mode the other program wins; in tc mode pdscp's filter (priority
/// 3420) runs after TCX links and after qosify's priorities (0x110..0x115):
/// --mode tc gives pdscp the last word.
#[test]
fn tc_mode_gives_pdscp_the_last_word_over_another_dscp_writer() {
    for foreign in ["tc", "tcx"] {
        for mode in MODES {
            let bed = TestBed::new();
            let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
            attach(&bed, &t, UPLINK, mode);
            let dir = Scratch::new(Path::new("/sys/fs/bpf"), "pdscp-qosify");
            let prog = pin_foreign(dir.path(), "cs1", ForeignProgram::MarkCs1);
            match foreign {
                "tc" => add_foreign_filter(&bed.a, UPLINK, 0x110, &prog),
                _ => add_foreign_tcx(&bed.a, UPLINK, &prog, &dir.path().join("cs1_link")),
            }
            let cap = Capture::start(&bed.b, UPLINK);
            send_udp(&bed.a, t.b_addr(false), 9000, EF, 5);
            let pkts = from_a(&cap.stop(), &t, IPPROTO_UDP);
            let want = if mode == "tc" { 46 } else { 8 };
            assert_eq!(pkts.len(), 5, "{foreign} writer, pdscp {mode}");
            assert!(
                pkts.iter()
                    .all(|p| p.outer_dscp() == want && p.outer_ipv4_checksum_ok),
                "{foreign} CS1 writer, pdscp in {mode} mode: {pkts:?}"
            );
            detach(&bed, &t);
        }
    }
}
