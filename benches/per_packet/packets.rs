//! The bench's packets. Addresses are from 198.18.0.0/15 and 2001:db8::/32;
//! nothing is sent.

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The tunnel's outer UDP source port.
pub const PORT: u16 = 51820;
const VXLAN_PORT: u16 = 4789;
pub const DSCP_EF: u8 = 46;
/// The inner flow's ends (inner_v4 and inner_v6: A:40000+flow -> B:443).
pub const INNER_A_V4: [u8; 4] = [198, 19, 1, 1];
pub const INNER_B_V4: [u8; 4] = [198, 19, 1, 2];
pub const INNER_A_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const INNER_B_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const INNER_SPORT: u16 = 40000;
pub const INNER_DPORT: u16 = 443;
const A_V4: [u8; 4] = [198, 18, 0, 1];
const B_V4: [u8; 4] = [198, 18, 0, 2];
const A_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const B_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(tos: u8, proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let len = (20 + payload.len()) as u16;
    let mut h = vec![0x45, tos];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let sum = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn ipv6(tclass: u8, next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let first = (6u32 << 28) | (u32::from(tclass) << 20) | 0x12345;
    let mut h = first.to_be_bytes().to_vec();
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A TCP segment with 64 bytes of data (checksum left 0: nothing checks it).
fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    s.extend_from_slice(&[0xab; 64]);
    s
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    s
}

/// What a VXLAN tunnel device's egress sees: Ethernet, IPv4, TCP. `flow`
/// picks the source port, so cases do not share flow entries.
pub fn inner_v4(dscp: u8, flow: u16) -> Vec<u8> {
    let tcp = tcp(INNER_SPORT + flow, INNER_DPORT);
    ethernet(
        ETH_P_IP,
        &ipv4(dscp << 2, IPPROTO_TCP, INNER_A_V4, INNER_B_V4, &tcp),
    )
}

pub fn inner_v6(dscp: u8, flow: u16) -> Vec<u8> {
    let tcp = tcp(INNER_SPORT + flow, INNER_DPORT);
    ethernet(
        ETH_P_IPV6,
        &ipv6(dscp << 2, IPPROTO_TCP, INNER_A_V6, INNER_B_V6, &tcp),
    )
}

/// What the uplink's egress sees: the tunnel's packet from UDP port `sport`,
/// outer DSCP 0.
pub fn outer_v4(sport: u16) -> Vec<u8> {
    let udp = udp(sport, VXLAN_PORT, &vxlan(&inner_v4(DSCP_EF, 1)));
    ethernet(ETH_P_IP, &ipv4(0, IPPROTO_UDP, A_V4, B_V4, &udp))
}

pub fn outer_v6(sport: u16) -> Vec<u8> {
    let udp = udp(sport, VXLAN_PORT, &vxlan(&inner_v6(DSCP_EF, 1)));
    ethernet(ETH_P_IPV6, &ipv6(0, IPPROTO_UDP, A_V6, B_V6, &udp))
}

fn vxlan(frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    v.extend_from_slice(frame);
    v
}

/// DSCP of the outer header of an Ethernet frame; None for an IPv4 header
/// whose checksum is wrong.
pub fn outer_dscp(frame: &[u8]) -> Option<u8> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    match ethertype {
        ETH_P_IP => {
            let sum = ip
                .get(..20)?
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum::<u32>();
            let sum = (sum & 0xffff) + (sum >> 16);
            (((sum & 0xffff) + (sum >> 16)) == 0xffff).then_some(ip[1] >> 2)
        }
        ETH_P_IPV6 => Some((((ip[0] & 0x0f) << 4) | (ip[1] >> 4)) >> 2),
        _ => None,
    }
}
