//! Traffic through a tunnel, and the checks of what comes out of it.

use std::net::IpAddr;
use std::thread::sleep;
use std::time::Duration;

use super::*;

/// Sends `count` UDP datagrams of `payload` bytes from `a` to `dst`, 2 ms
/// apart, from one socket with TOS / traffic class `tos`.
fn send_udp_sized(bed: &TestBed, dst: IpAddr, tos: u8, payload: usize, count: usize) {
    bed.a.run_in("send_udp_sized", move || {
        let sock = marked_udp_socket(dst, tos);
        let data = vec![0x42u8; payload];
        for _ in 0..count {
            sock.send_to(&data, (dst, 9000)).expect("sending UDP");
            sleep(Duration::from_millis(2));
        }
    });
}

/// IP header + UDP header length of the inner family.
fn udp_overhead(v6: bool) -> usize {
    if v6 {
        48
    } else {
        28
    }
}

/// A UDP flow: `payload` bytes, `count` datagrams, inner TOS `tos`, sent
/// through `wg`; returns what it must look like outside if `marked`.
pub(super) fn udp_flow(
    bed: &TestBed,
    wg: &Wg,
    v6: bool,
    tos: u8,
    payload: usize,
    count: usize,
    marked: bool,
) -> Expect {
    send_udp_sized(bed, wg.b_addr(v6), tos, payload, count);
    Expect {
        what: format!("{} UDP{} tos {tos:#04x}", wg.name, if v6 { "v6" } else { "v4" }),
        len: wg_len(udp_overhead(v6) + payload, wg.mtu),
        count,
        exact: true,
        tos: if marked {
            marked_tos(tos)
        } else {
            wg_outer_tos(tos)
        },
    }
}

/// `count` echo requests (56 data bytes) through `wg` with inner TOS `tos`.
pub(super) fn ping_flow(bed: &TestBed, wg: &Wg, v6: bool, tos: u8, count: u32, marked: bool) -> Expect {
    let out = ping(&bed.a, wg.b_addr(v6), tos, count);
    assert!(
        out.status.success(),
        "ping through {}: {}",
        wg.name,
        output_text(&out)
    );
    // IPv4 20 + ICMP 8 + 56; IPv6 40 + ICMPv6 8 + 56.
    let inner = if v6 { 104 } else { 84 };
    Expect {
        what: format!("{} ping{} tos {tos:#04x}", wg.name, if v6 { "6" } else { "" }),
        len: wg_len(inner, wg.mtu),
        count: count as usize,
        exact: true,
        tos: if marked {
            marked_tos(tos)
        } else {
            wg_outer_tos(tos)
        },
    }
}

/// UDP over both inner families (EF with ECT(1), AF11 with ECT(0), AF41
/// with CE, which WireGuard turns into ECT(0) outside, and an unmarked
/// flow) and pings over both (the port-less flows the original lost):
/// captured on `dev` in `ns`, each flow checked.
pub(super) fn check_udp_and_icmp(
    bed: &TestBed,
    wg: &Wg,
    ns: &Netns,
    dev: &str,
    marked: bool,
    ctx: &str,
) -> Vec<Outer> {
    let cap = Capture::start(ns, dev);
    let flows = [
        udp_flow(bed, wg, false, 0xb9, 100, 5, marked),
        udp_flow(bed, wg, true, 0x2a, 200, 5, marked),
        udp_flow(bed, wg, false, 0x8b, 300, 5, marked),
        udp_flow(bed, wg, true, 0x01, 400, 5, marked),
        ping_flow(bed, wg, false, 0xa0, 3, marked),
        ping_flow(bed, wg, true, 0x68, 3, marked),
    ];
    // The pings came back: everything before them has crossed too.
    let pkts = data_from_a(&cap.stop(), wg, false);
    check_flows(&pkts, &flows, ctx);
    pkts
}

/// The same, captured where `b` receives them.
pub(super) fn check_marked(bed: &TestBed, wg: &Wg, ctx: &str) {
    check_udp_and_icmp(bed, wg, &bed.b, UPLINK, true, ctx);
}

/// A few EF datagrams through each tunnel; each must come out marked or not.
pub(super) fn check_udp(bed: &TestBed, cases: &[(&Wg, bool)], ctx: &str) {
    let cap = Capture::start(&bed.b, UPLINK);
    let flows: Vec<(&Wg, bool, Expect)> = cases
        .iter()
        .map(|&(wg, marked)| (wg, marked, udp_flow(bed, wg, false, 0xb8, 100, 5, marked)))
        .collect();
    let barriers: Vec<Expect> = cases.iter().map(|&(wg, _)| barrier(bed, wg)).collect();
    let frames = cap.stop();
    for ((wg, marked, flow), barrier) in flows.into_iter().zip(barriers) {
        let what = format!(
            "{ctx}: {} {}",
            wg.name,
            if marked { "marked" } else { "unmarked" }
        );
        check_flows(&data_from_a(&frames, wg, false), &[flow, barrier], &what);
    }
}

/// TCP bulk transfers (GSO: the reader sees super-packets, WireGuard
/// segments them before encrypting) over both inner families: every data
/// message carries the inner DSCP, ECN not set (no ECN negotiated).
/// Returns the number of data messages per family.
pub(super) fn check_tcp(bed: &TestBed, wg: &Wg, ctx: &str) -> [(u8, usize); 2] {
    let bytes = 512 << 10;
    let mut counts = [(0, 0); 2];
    for (i, (v6, tos, port)) in [(false, 0x30u8, 5201u16), (true, 0x50, 5202)]
        .into_iter()
        .enumerate()
    {
        let cap = Capture::start(&bed.b, UPLINK);
        assert_eq!(tcp_bulk(&bed.a, &bed.b, wg.b_addr(v6), port, tos, bytes), bytes);
        let barrier = barrier(bed, wg);
        let mut pkts = data_from_a(&cap.stop(), wg, false);
        let what = format!("{ctx}: TCP{} tos {tos:#04x}", if v6 { "v6" } else { "v4" });
        // The barrier's SYN is as long as the flow's ACKs; it is the last
        // unmarked one.
        let syn = pkts
            .iter()
            .rposition(|p| p.len == barrier.len && p.tos == barrier.tos)
            .unwrap_or_else(|| panic!("{what}: no barrier SYN"));
        pkts.remove(syn);
        assert!(
            pkts.len() >= bytes / wg.mtu,
            "{what}: only {} data messages",
            pkts.len()
        );
        for p in &pkts {
            assert_eq!(p.tos, tos, "{what}: outer TOS {:#04x}: {p:?}", p.tos);
            assert!(p.checksum_ok, "{what}: IPv4 header checksum: {p:?}");
            assert_eq!(p.flow_label, 0, "{what}: flow label: {p:?}");
        }
        assert!(
            pkts.iter().any(|p| p.len == wg_len(wg.mtu, wg.mtu)),
            "{what}: full-size segments"
        );
        counts[i] = (tos >> 2, pkts.len());
    }
    counts
}
