//! Parsing what was captured: IP headers and VXLAN packets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::bed::{Tunnel, VXLAN_PORT};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// DSCP of a TOS / traffic-class byte.
pub fn dscp(tos: u8) -> u8 {
    tos >> 2
}

/// ECN bits of a TOS / traffic-class byte.
pub fn ecn(tos: u8) -> u8 {
    tos & 3
}

/// The fields of a VXLAN packet that the tests look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPacket {
    pub outer_version: u8,
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    /// IPv4 TOS or IPv6 traffic class.
    pub outer_tos: u8,
    /// Header checksum verifies (always true for IPv6, which has none).
    pub outer_ipv4_checksum_ok: bool,
    /// Outer IP packet length, header included (frame length minus 14).
    pub outer_len: usize,
    pub outer_sport: u16,
    pub outer_dport: u16,
    pub vni: u32,
    pub inner_version: u8,
    pub inner_src: IpAddr,
    pub inner_dst: IpAddr,
    pub inner_tos: u8,
    /// IPPROTO_*; for IPv6 the first next header.
    pub inner_proto: u8,
    /// Inner IP packet length, header included.
    pub inner_len: usize,
    /// Ports of an inner TCP or UDP header.
    pub inner_sport: Option<u16>,
    pub inner_dport: Option<u16>,
}

impl TunnelPacket {
    pub fn outer_dscp(&self) -> u8 {
        dscp(self.outer_tos)
    }
    pub fn outer_ecn(&self) -> u8 {
        ecn(self.outer_tos)
    }
    pub fn inner_dscp(&self) -> u8 {
        dscp(self.inner_tos)
    }
    pub fn inner_ecn(&self) -> u8 {
        ecn(self.inner_tos)
    }
}

/// An IP header's fields, from either family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpHeader {
    pub version: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TOS or IPv6 traffic class.
    pub tos: u8,
    /// IPPROTO_*; for IPv6 the first next header.
    pub proto: u8,
    /// Whole packet length as the header states it.
    pub total_len: usize,
    pub header_len: usize,
    /// The IPv4 header checksum verifies (always true for IPv6).
    pub checksum_ok: bool,
    /// IPv6 flow label (0 for IPv4).
    pub flow_label: u32,
    /// A non-first fragment has no transport header.
    pub later_fragment: bool,
    pub fragmented: bool,
}

/// The big-endian 16-bit word at `off`, if `b` has it.
pub fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

/// The IPv4 or IPv6 header at the start of `b`; None if it is neither or
/// is cut short.
pub fn parse_ip(b: &[u8]) -> Option<IpHeader> {
    match b.first()? >> 4 {
        4 => {
            let header_len = usize::from(b[0] & 0x0f) * 4;
            let h = b.get(..header_len).filter(|_| header_len >= 20)?;
            let sum = h
                .chunks(2)
                .fold(0u32, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])));
            let folded = (sum & 0xffff) + (sum >> 16);
            let frag = be16(h, 6)?;
            Some(IpHeader {
                version: 4,
                src: Ipv4Addr::new(h[12], h[13], h[14], h[15]).into(),
                dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]).into(),
                tos: h[1],
                proto: h[9],
                total_len: be16(h, 2)?.into(),
                header_len,
                checksum_ok: (folded & 0xffff) + (folded >> 16) == 0xffff,
                flow_label: 0,
                later_fragment: frag & 0x1fff != 0,
                fragmented: frag & 0x3fff != 0,
            })
        }
        6 => {
            let h = b.get(..40)?;
            let addr = |off: usize| -> IpAddr {
                let a: [u8; 16] = h[off..off + 16].try_into().expect("16 bytes");
                Ipv6Addr::from(a).into()
            };
            Some(IpHeader {
                version: 6,
                src: addr(8),
                dst: addr(24),
                tos: (h[0] << 4) | (h[1] >> 4),
                proto: h[6],
                total_len: 40 + usize::from(be16(h, 4)?),
                header_len: 40,
                checksum_ok: true,
                flow_label: u32::from_be_bytes([0, h[1] & 0x0f, h[2], h[3]]),
                later_fragment: false,
                fragmented: false,
            })
        }
        _ => None,
    }
}

/// Parses an Ethernet frame carrying IPv4/IPv6 + UDP + VXLAN + Ethernet +
/// IPv4/IPv6. Anything else (ARP, other UDP, outer fragments, truncated
/// frames, non-IP inner payload) gives `None`.
pub fn parse_vxlan(frame: &[u8]) -> Option<TunnelPacket> {
    const ETH: usize = 14;
    let ethertype = be16(frame, 12)?;
    if ethertype != 0x0800 && ethertype != 0x86dd {
        return None;
    }
    let outer = parse_ip(frame.get(ETH..)?)?;
    if outer.proto != IPPROTO_UDP || outer.fragmented {
        return None;
    }
    let udp = frame.get(ETH + outer.header_len..)?;
    let (outer_sport, outer_dport) = (be16(udp, 0)?, be16(udp, 2)?);
    let vxlan = udp.get(8..16)?;
    if outer_dport != VXLAN_PORT || vxlan[0] & 0x08 == 0 {
        return None;
    }
    let vni = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
    let inner_eth = udp.get(16..)?;
    let inner_type = be16(inner_eth, 12)?;
    if inner_type != 0x0800 && inner_type != 0x86dd {
        return None;
    }
    let inner_ip = inner_eth.get(ETH..)?;
    let inner = parse_ip(inner_ip)?;
    let ports = match inner.proto {
        IPPROTO_TCP | IPPROTO_UDP if !inner.later_fragment => {
            let l4 = inner_ip.get(inner.header_len..)?;
            Some((be16(l4, 0)?, be16(l4, 2)?))
        }
        _ => None,
    };
    Some(TunnelPacket {
        outer_version: outer.version,
        outer_src: outer.src,
        outer_dst: outer.dst,
        outer_tos: outer.tos,
        outer_ipv4_checksum_ok: outer.checksum_ok,
        outer_len: outer.total_len,
        outer_sport,
        outer_dport,
        vni,
        inner_version: inner.version,
        inner_src: inner.src,
        inner_dst: inner.dst,
        inner_tos: inner.tos,
        inner_proto: inner.proto,
        inner_len: inner.total_len,
        inner_sport: ports.map(|p| p.0),
        inner_dport: ports.map(|p| p.1),
    })
}

/// Parses every frame, dropping what is not VXLAN.
pub fn parse_all(frames: &[Vec<u8>]) -> Vec<TunnelPacket> {
    frames.iter().filter_map(|f| parse_vxlan(f)).collect()
}

/// The outer packets of tunnel `t` leaving `a`: from its outer source port,
/// with its VNI, from `a`'s inner address, carrying inner protocol `proto`.
pub fn from_a(frames: &[Vec<u8>], t: &Tunnel, proto: u8) -> Vec<TunnelPacket> {
    parse_all(frames)
        .into_iter()
        .filter(|p| p.vni == t.vni && p.outer_sport == t.srcport && p.inner_proto == proto)
        .filter(|p| p.inner_src == t.a_addr(false) || p.inner_src == t.a_addr(true))
        .collect()
}
