//! Packets as the generators describe them, and their bytes: Ethernet with
//! in-band VLAN tags (or nothing, for L3 devices), IPv4 with options and
//! fragment fields, IPv6 with extension headers, UDP, TCP, ICMP echo, and
//! other ethertypes or plain random bytes. The description is what proptest
//! shrinks; `bytes()` is what the programs see.

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// A whole packet: its headers, then what is done to the bytes.
#[derive(Clone, Debug)]
pub struct Packet {
    pub link: Link,
    pub net: Net,
    /// Keep only this many bytes (truncation): a fraction of the length in
    /// 1/1024ths, so it shrinks with the packet.
    pub cut: Option<u16>,
    /// Bytes XORed after building: (position in 1/1024ths of the length, value).
    pub flips: Vec<(u16, u8)>,
}

#[derive(Clone, Debug)]
pub enum Link {
    /// Ethernet: addresses, in-band tags (TPID, TCI) outermost first, and an
    /// ethertype that replaces the one the network layer implies.
    Ethernet {
        macs: [u8; 12],
        tags: Vec<(u16, u16)>,
        ethertype: Option<u16>,
    },
    /// Nothing before the network header (WireGuard, PPP, tun). The test run
    /// takes skb->protocol from bytes 12-13 (see main.rs): with `fit`, the
    /// source address is made to put the right ethertype there.
    Bare { fit: bool },
}

#[derive(Clone, Debug)]
pub enum Net {
    V4(V4),
    V6(V6),
    /// Another ethertype and whatever follows it.
    Other {
        ethertype: u16,
        payload: Vec<u8>,
    },
    /// The whole packet is these bytes (the link layer is ignored).
    Random(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct V4 {
    pub tos: u8,
    /// Option bytes, padded to a multiple of 4 (at most 40).
    pub options: Vec<u8>,
    /// An IHL that lies (0..=15): the header is still built with `options`.
    pub ihl: Option<u8>,
    pub version: u8,
    pub id: u16,
    pub df: bool,
    pub mf: bool,
    /// Fragment offset in 8-byte units (13 bits).
    pub offset: u16,
    pub ttl: u8,
    /// Replaces the protocol the transport implies.
    pub proto: Option<u8>,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// Write a wrong header checksum (valid + this, when nonzero).
    pub bad_sum: u16,
    pub l4: L4,
}

#[derive(Clone, Debug)]
pub struct V6 {
    pub tclass: u8,
    pub flow: u32,
    pub version: u8,
    pub hop: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub ext: Vec<Ext>,
    pub l4: L4,
}

/// An IPv6 extension header.
#[derive(Clone, Debug)]
pub enum Ext {
    /// Hop-by-hop (0), routing (43), destination options (60): 8 + 8 * len bytes.
    Generic { kind: u8, len: u8, fill: u8 },
    /// Fragment header (44): offset in 8-byte units, more fragments.
    Fragment { offset: u16, more: bool, id: u32 },
}

#[derive(Clone, Debug)]
pub enum L4 {
    /// `len`: a UDP length field that lies; `cut`: the header itself is
    /// only this many bytes (UDP shorter than its header).
    Udp {
        sport: u16,
        dport: u16,
        len: Option<u16>,
        cut: Option<u8>,
        payload: Payload,
    },
    Tcp {
        sport: u16,
        dport: u16,
        data: Vec<u8>,
    },
    /// ICMP (v4) or ICMPv6 (v6) message: echo types keep their identifier.
    Icmp {
        kind: u8,
        code: u8,
        id: u16,
        seq: u16,
    },
    /// Another protocol number and bytes.
    Raw {
        proto: u8,
        data: Vec<u8>,
    },
}

#[derive(Clone, Debug)]
pub enum Payload {
    /// WireGuard message type (1..3 handshakes, 4 data) with `rest` bytes after it.
    WireGuard {
        kind: u8,
        reserved: [u8; 3],
        rest: Vec<u8>,
    },
    Bytes(Vec<u8>),
}

impl Packet {
    /// The bytes the program is given.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = match &self.net {
            Net::Random(b) => b.clone(),
            net => {
                let (ethertype, body) = net.bytes(&self.link);
                match &self.link {
                    Link::Ethernet {
                        macs,
                        tags,
                        ethertype: over,
                    } => {
                        let mut f = macs.to_vec();
                        for (tpid, tci) in tags {
                            f.extend_from_slice(&tpid.to_be_bytes());
                            f.extend_from_slice(&tci.to_be_bytes());
                        }
                        f.extend_from_slice(&over.unwrap_or(ethertype).to_be_bytes());
                        f.extend_from_slice(&body);
                        f
                    }
                    Link::Bare { .. } => body,
                }
            }
        };
        let len = out.len();
        if len > 0 {
            for (at, x) in &self.flips {
                out[usize::from(*at) * len / 1024 % len] ^= x;
            }
        }
        if let Some(cut) = self.cut {
            out.truncate(usize::from(cut) * len / 1024);
        }
        out
    }
}

impl Net {
    /// The ethertype this network layer goes with, and its bytes.
    fn bytes(&self, link: &Link) -> (u16, Vec<u8>) {
        let fit = matches!(link, Link::Bare { fit: true });
        match self {
            Net::V4(v4) => (ETH_P_IP, v4.bytes(fit)),
            Net::V6(v6) => (ETH_P_IPV6, v6.bytes(fit)),
            Net::Other { ethertype, payload } => (*ethertype, payload.clone()),
            Net::Random(b) => (0, b.clone()),
        }
    }
}

impl V4 {
    fn bytes(&self, fit: bool) -> Vec<u8> {
        let mut options = self.options.clone();
        options.truncate(40);
        while options.len() % 4 != 0 {
            options.push(0); // end of option list
        }
        let (proto, l4) = self.l4.bytes(false);
        let hlen = 20 + options.len();
        let ihl = self.ihl.unwrap_or((hlen / 4) as u8) & 0x0f;
        let total = (hlen + l4.len()).min(0xffff) as u16;
        let frag = (u16::from(self.df) << 14) | (u16::from(self.mf) << 13) | (self.offset & 0x1fff);
        let mut src = self.src;
        if fit {
            src[..2].copy_from_slice(&ETH_P_IP.to_be_bytes());
        }
        let mut h = vec![(self.version << 4) | ihl, self.tos];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[self.ttl, self.proto.unwrap_or(proto), 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&self.dst);
        h.extend_from_slice(&options);
        let sum = ipv4_checksum(&h).wrapping_add(self.bad_sum);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(&l4);
        h
    }
}

impl V6 {
    fn bytes(&self, fit: bool) -> Vec<u8> {
        let mut src = self.src;
        if fit {
            src[4..6].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        }
        let (proto, l4) = self.l4.bytes(true);
        // Each extension header names the one after it.
        let mut kinds: Vec<u8> = self.ext.iter().map(Ext::kind).collect();
        kinds.push(proto);
        let mut body = Vec::new();
        for (ext, next) in self.ext.iter().zip(&kinds[1..]) {
            body.extend_from_slice(&ext.bytes(*next));
        }
        body.extend_from_slice(&l4);
        let first =
            (u32::from(self.version & 0x0f) << 28) | (u32::from(self.tclass) << 20) | (self.flow & 0xf_ffff);
        let mut h = first.to_be_bytes().to_vec();
        h.extend_from_slice(&(body.len().min(0xffff) as u16).to_be_bytes());
        h.extend_from_slice(&[kinds[0], self.hop]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&self.dst);
        h.extend_from_slice(&body);
        h
    }
}

impl Ext {
    fn kind(&self) -> u8 {
        match self {
            Ext::Generic { kind, .. } => *kind,
            Ext::Fragment { .. } => 44,
        }
    }

    fn bytes(&self, next: u8) -> Vec<u8> {
        match self {
            Ext::Generic { len, fill, .. } => {
                let mut b = vec![next, *len];
                b.resize(8 + 8 * usize::from(*len), *fill);
                b
            }
            Ext::Fragment { offset, more, id } => {
                let field = (offset << 3) | u16::from(*more);
                let mut b = vec![next, 0];
                b.extend_from_slice(&field.to_be_bytes());
                b.extend_from_slice(&id.to_be_bytes());
                b
            }
        }
    }
}

impl L4 {
    /// The protocol number and the bytes (`v6`: ICMP becomes ICMPv6).
    fn bytes(&self, v6: bool) -> (u8, Vec<u8>) {
        match self {
            L4::Udp {
                sport,
                dport,
                len,
                cut,
                payload,
            } => {
                let payload = payload.bytes();
                let mut s = sport.to_be_bytes().to_vec();
                s.extend_from_slice(&dport.to_be_bytes());
                let real = (8 + payload.len()).min(0xffff) as u16;
                s.extend_from_slice(&len.unwrap_or(real).to_be_bytes());
                s.extend_from_slice(&[0x5a, 0xa5]); // checksum: nothing checks it
                match cut {
                    Some(n) => s.truncate(usize::from(*n % 8)),
                    None => s.extend_from_slice(&payload),
                }
                (IPPROTO_UDP, s)
            }
            L4::Tcp { sport, dport, data } => {
                let mut s = sport.to_be_bytes().to_vec();
                s.extend_from_slice(&dport.to_be_bytes());
                s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
                s.extend_from_slice(data);
                (IPPROTO_TCP, s)
            }
            L4::Icmp { kind, code, id, seq } => {
                let mut s = vec![*kind, *code, 0, 0];
                s.extend_from_slice(&id.to_be_bytes());
                s.extend_from_slice(&seq.to_be_bytes());
                s.extend_from_slice(&[0x61; 16]);
                (if v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP }, s)
            }
            L4::Raw { proto, data } => (*proto, data.clone()),
        }
    }
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::WireGuard { kind, reserved, rest } => {
                let mut b = vec![*kind];
                b.extend_from_slice(reserved);
                b.extend_from_slice(rest);
                b
            }
            Payload::Bytes(b) => b.clone(),
        }
    }
}

/// The 16-bit ones' complement sum of `bytes` (an odd last byte padded with
/// zero), folded but not inverted.
pub fn ones_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum an IPv4 header must carry: computed from scratch with the
/// checksum field taken as zero.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut h = header.to_vec();
    h[10] = 0;
    h[11] = 0;
    !ones_sum(&h)
}

/// Lower-case hex, 32 bytes a line, for failure reports.
pub fn hex(bytes: &[u8]) -> String {
    let lines: Vec<String> = bytes
        .chunks(32)
        .enumerate()
        .map(|(i, c)| {
            let h: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            format!("  {:04x}: {}", i * 32, h.join(" "))
        })
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_rfc_1071_example() {
        // The IPv4 header of RFC 1071's companion example (Wikipedia's).
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
        assert_eq!(ones_sum(&h), 0xffff);
    }
}
