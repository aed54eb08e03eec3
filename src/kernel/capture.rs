//! What leaves a device, as a packet socket sees it at the wire (after every
//! tc filter and TCX program): the DSCP of a tunnel's outer UDP packets, and
//! the source ports of UDP packets to its peers, for `pdscp check`.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Outer UDP packets seen leaving one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wire {
    /// DSCP -> packets from the tunnel's source port.
    pub from_port: BTreeMap<u8, u64>,
    /// Source port -> UDP packets to one of the peers' addresses from
    /// another port than the tunnel's (NAT rewriting the port).
    pub to_peers_from_other_ports: BTreeMap<u16, u64>,
}

/// Watches the devices (ifindexes) for `window`, counting what leaves them.
pub fn watch(ifindexes: &[u32], sport: u16, peers: &[IpAddr], window: Duration) -> Result<Vec<Wire>> {
    let sockets: Vec<OwnedFd> = ifindexes
        .iter()
        .map(|i| outgoing_socket(*i))
        .collect::<Result<_>>()?;
    let mut wires = vec![Wire::default(); sockets.len()];
    let deadline = Instant::now() + window;
    let mut buf = [0u8; 128];
    while Instant::now() < deadline {
        let mut idle = true;
        for (sock, wire) in sockets.iter().zip(wires.iter_mut()) {
            let mut addr: libc::sockaddr_ll = unsafe_zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf and addr are live buffers of the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    (&mut addr as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n <= 0 {
                continue;
            }
            idle = false;
            if addr.sll_pkttype != libc::PACKET_OUTGOING {
                continue;
            }
            let got = (n as usize).min(buf.len());
            if let Some((dst, src_port, dscp)) = udp_of(&buf[..got], u16::from_be(addr.sll_protocol)) {
                if src_port == sport {
                    *wire.from_port.entry(dscp).or_default() += 1;
                } else if peers.contains(&dst) {
                    *wire.to_peers_from_other_ports.entry(src_port).or_default() += 1;
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(wires)
}

/// A packet socket on one device that sees network-layer packets (no link
/// header, whatever the device).
fn outgoing_socket(ifindex: u32) -> Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a packet socket");
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut addr: libc::sockaddr_ll = unsafe_zeroed();
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: addr is a sockaddr_ll of the size given.
    let ret = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).context("binding a packet socket");
    }
    Ok(sock)
}

fn unsafe_zeroed() -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all zero is valid.
    unsafe { std::mem::zeroed() }
}

/// (destination, UDP source port, DSCP) of an unfragmented IPv4/IPv6 UDP packet.
fn udp_of(ip: &[u8], ethertype: u16) -> Option<(IpAddr, u16, u8)> {
    let (dst, l4, tos): (IpAddr, usize, u8) = match ethertype {
        0x0800 if ip.len() >= 20 && ip[9] == 17 && u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0 => {
            let dst: [u8; 4] = ip[16..20].try_into().ok()?;
            (dst.into(), usize::from(ip[0] & 0xf) * 4, ip[1])
        }
        0x86dd if ip.len() >= 40 && ip[6] == 17 => {
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            (dst.into(), 40, ((ip[0] & 0xf) << 4) | (ip[1] >> 4))
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([*ip.get(l4)?, *ip.get(l4 + 1)?]);
    Some((dst, sport, tos >> 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_udp_of_ipv4_and_ipv6() {
        let mut v4 = vec![
            0x45, 0xb8, 0, 48, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ];
        v4.extend([0xca, 0x6c, 0x12, 0xb5]);
        assert_eq!(
            udp_of(&v4, 0x0800),
            Some(("198.18.0.2".parse().unwrap(), 51820, 46))
        );
        let mut frag = v4.clone();
        frag[7] = 1;
        assert_eq!(udp_of(&frag, 0x0800), None, "a later fragment has no ports");
        let mut v6 = vec![0x68, 0x80, 0, 0, 0, 8, 17, 64];
        v6.extend([0u8; 16]);
        v6.extend("2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6.extend([0x12, 0x34, 0, 0]);
        assert_eq!(
            udp_of(&v6, 0x86dd),
            Some(("2001:db8::2".parse().unwrap(), 0x1234, 34))
        );
        assert_eq!(udp_of(&v4[..10], 0x0800), None);
    }
}
