//! Outer packets on the wire: what a capture shows of WireGuard's data
//! messages, and the flows they must add up to.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use super::*;

/// The visible part of a captured UDP packet.
#[derive(Clone, Debug)]
pub(super) struct Outer {
    /// VLAN ids of in-band 802.1Q/802.1ad tags, outermost first.
    pub(super) vlans: Vec<u16>,
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    /// IPv4 TOS or IPv6 traffic class.
    pub(super) tos: u8,
    /// IPv4 header checksum verifies (true for IPv6).
    pub(super) checksum_ok: bool,
    /// IPv6 flow label (0 for IPv4).
    pub(super) flow_label: u32,
    pub(super) sport: u16,
    pub(super) dport: u16,
    /// UDP payload length (from the UDP header).
    pub(super) len: usize,
    /// WireGuard message type: first payload byte, if the next three are 0.
    pub(super) wg_type: Option<u8>,
}

/// Parses an IPv4/IPv6 packet carrying (unfragmented) UDP.
fn parse_ip_udp(ip: &[u8], vlans: Vec<u16>) -> Option<Outer> {
    let h = parse_ip(ip)?;
    if h.proto != IPPROTO_UDP || h.fragmented {
        return None;
    }
    let l4 = ip.get(h.header_len..)?;
    let len = usize::from(be16(l4, 4)?).checked_sub(8)?;
    let payload = l4.get(8..)?;
    let wg_type = match payload.get(..4)? {
        [t, 0, 0, 0] => Some(*t),
        _ => None,
    };
    Some(Outer {
        vlans,
        src: h.src,
        dst: h.dst,
        tos: h.tos,
        checksum_ok: h.checksum_ok,
        flow_label: h.flow_label,
        sport: be16(l4, 0)?,
        dport: be16(l4, 2)?,
        len,
        wg_type,
    })
}

/// Parses an Ethernet frame with up to two in-band VLAN tags.
fn parse_eth(frame: &[u8]) -> Option<Outer> {
    let mut off = 12;
    let mut vlans = Vec::new();
    let mut ethertype = be16(frame, off)?;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        vlans.push(be16(frame, off + 2)? & 0x0fff);
        off += 4;
        ethertype = be16(frame, off)?;
    }
    if ethertype != 0x0800 && ethertype != 0x86dd {
        return None;
    }
    parse_ip_udp(frame.get(off + 2..)?, vlans)
}

/// The UDP packet of an Ethernet frame, if it is one.
pub(super) fn outer_of_frame(frame: &[u8]) -> Option<Outer> {
    parse_eth(frame)
}

/// Data messages `a` sent over `wg` (outer source = `a`'s endpoint and
/// listen port), keepalives left out. `l3`: frames start with the IP header.
pub(super) fn data_from_a(frames: &[Vec<u8>], wg: &Wg, l3: bool) -> Vec<Outer> {
    frames
        .iter()
        .filter_map(|f| {
            if l3 {
                parse_ip_udp(f, Vec::new())
            } else {
                parse_eth(f)
            }
        })
        .filter(|p| p.src == wg.outer_a && p.sport == wg.port_a)
        .filter(|p| p.dst == wg.outer_b && p.dport == wg.port_b)
        .filter(|p| p.wg_type == Some(4) && p.len > 32)
        .collect()
}

/// UDP payload length of the data message carrying an inner packet of
/// `inner_len` bytes (WireGuard pads to 16, at most to the MTU).
pub(super) fn wg_len(inner_len: usize, mtu: usize) -> usize {
    32 + inner_len.next_multiple_of(16).min(mtu)
}

/// The outer TOS WireGuard writes for an inner TOS: DSCP 0, ECN copied
/// except CE, which becomes ECT(0) (INET_ECN_encapsulate).
pub(super) fn wg_outer_tos(inner: u8) -> u8 {
    match inner & 3 {
        3 => 2,
        e => e,
    }
}

/// What pdscp makes of it: the inner DSCP, WireGuard's ECN.
pub(super) fn marked_tos(inner: u8) -> u8 {
    (inner & 0xfc) | wg_outer_tos(inner)
}

/// One flow as seen outside: its data messages' length and how many.
#[derive(Clone, Debug)]
pub(super) struct Expect {
    pub(super) what: String,
    pub(super) len: usize,
    pub(super) count: usize,
    /// `count` exactly, or at least `count` (a SYN may be sent again).
    pub(super) exact: bool,
    pub(super) tos: u8,
}

/// Every data message belongs to one of `flows` (by length), each flow has
/// exactly its packets, every one with the expected TOS (DSCP and ECN) and
/// a valid IPv4 header checksum.
pub(super) fn check_flows(pkts: &[Outer], flows: &[Expect], ctx: &str) {
    for f in flows {
        let mine: Vec<&Outer> = pkts.iter().filter(|p| p.len == f.len).collect();
        assert!(
            mine.len() == f.count || (!f.exact && mine.len() > f.count),
            "{ctx}: {}: {} data messages of {} bytes, expected {}: {mine:#?}",
            f.what,
            mine.len(),
            f.len,
            f.count
        );
        for p in mine {
            assert_eq!(
                p.tos, f.tos,
                "{ctx}: {}: outer TOS {:#04x}, expected {:#04x}: {p:?}",
                f.what, p.tos, f.tos
            );
            assert!(p.checksum_ok, "{ctx}: {}: IPv4 header checksum: {p:?}", f.what);
            // WireGuard sends IPv6 with flow label 0; the rewrite keeps it.
            assert_eq!(p.flow_label, 0, "{ctx}: {}: flow label: {p:?}", f.what);
        }
    }
    let others: Vec<&Outer> = pkts
        .iter()
        .filter(|p| !flows.iter().any(|f| f.len == p.len))
        .collect();
    assert!(others.is_empty(), "{ctx}: unexpected data messages: {others:#?}");
}

/// Returns once everything `a` sent through `wg` so far has crossed the
/// wire: a TCP SYN to a closed port of `b` queues behind it (WireGuard
/// sends each peer's packets in order) and `b`'s RST comes back only after
/// the SYN arrived. The SYN is a data message of its own, unmarked.
pub(super) fn barrier(bed: &TestBed, wg: &Wg) -> Expect {
    let dst = SocketAddr::new(wg.v4_b.into(), 9);
    bed.a.run_in("barrier", move || {
        match TcpStream::connect_timeout(&dst, Duration::from_secs(20)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            other => panic!("barrier: connecting to {dst} should be refused: {other:?}"),
        }
    });
    Expect {
        what: format!("{} barrier SYN", wg.name),
        // IPv4 20 + TCP 20 + options 20 (MSS, SACK, timestamps, window scale).
        len: wg_len(60, wg.mtu),
        count: 1,
        exact: false,
        tos: 0,
    }
}
