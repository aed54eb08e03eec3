//! The test's own reading of a packet: where the IP header is, its DSCP,
//! the outer UDP header of a tunnel's packet. Written from the rules in
//! oracle.rs, not from bpf/packet.h.
use crate::packet::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Where the IP header is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ip {
    pub off: usize,
    pub family: Family,
}

pub fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

/// skb->protocol of a test run: eth_type_trans() of bytes 0-13 on `lo`.
pub fn skb_protocol(p: &[u8]) -> u16 {
    let ethertype = be16(p, 12);
    if ethertype >= 0x600 {
        ethertype
    } else if p.get(14..16) == Some(&[0xff, 0xff]) {
        0x0001 // ETH_P_802_3
    } else {
        0x0004 // ETH_P_802_2
    }
}

/// The IP header, as the datapath must find it.
pub fn find_ip(p: &[u8], l2: bool) -> Option<Ip> {
    let (mut proto, mut off) = if l2 {
        (be16(p, 12), 14)
    } else {
        (skb_protocol(p), 0)
    };
    if l2 {
        for _ in 0..2 {
            if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
                break;
            }
            if p.len() < off + 4 {
                return None;
            }
            proto = be16(p, off + 2);
            off += 4;
        }
    }
    let (family, len, version) = match proto {
        ETH_P_IP => (Family::V4, 20, 4),
        ETH_P_IPV6 => (Family::V6, 40, 6),
        _ => return None,
    };
    (p.len() >= off + len && p[off] >> 4 == version).then_some(Ip { off, family })
}

pub fn dscp(p: &[u8], ip: Ip) -> u8 {
    match ip.family {
        Family::V4 => p[ip.off + 1] >> 2,
        Family::V6 => (((p[ip.off] & 0x0f) << 4) | (p[ip.off + 1] >> 4)) >> 2,
    }
}

/// IPv4 header length in bytes (IHL * 4).
pub fn ihl(p: &[u8], ip: Ip) -> usize {
    usize::from(p[ip.off] & 0x0f) * 4
}

/// The offset of the outer UDP header of a tunnel's packet.
pub fn outer_udp(p: &[u8], ip: Ip) -> Option<usize> {
    let udp = match ip.family {
        Family::V4 => {
            let fragment_offset = be16(p, ip.off + 6) & 0x1fff;
            if p[ip.off + 9] != IPPROTO_UDP || fragment_offset != 0 || ihl(p, ip) < 20 {
                return None;
            }
            ip.off + ihl(p, ip)
        }
        Family::V6 => {
            if p[ip.off + 6] != IPPROTO_UDP {
                return None;
            }
            ip.off + 40
        }
    };
    (p.len() >= udp + 8).then_some(udp)
}

/// A WireGuard handshake message: type 1..3, then three zero bytes.
pub fn wireguard_handshake(p: &[u8], udp: usize) -> bool {
    matches!(p.get(udp + 8..udp + 12), Some([1..=3, 0, 0, 0]))
}
