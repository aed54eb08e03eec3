//! The internet behind `b`: a third namespace `i` reached from `b` over
//! the veth `inet0`, with `b` masquerading what comes out of a tunnel
//! (nftables), and servers and clients that set and read the TOS of each
//! datagram, for the reflection tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use super::bed::TestBed;
use super::namespaces::Netns;
use super::traffic::{marked_udp_socket, set_tos};

pub const I_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const S_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const I_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
pub const S_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);

/// The internet's namespace.
pub struct Internet {
    pub ns: Netns,
}

impl Internet {
    /// Makes `i` behind `b`, routes `a`'s way to it through `tunnel` (whose
    /// far end in `b` has `gw_v4`/`gw_v6`), turns on forwarding and
    /// masquerading in `b`. I's echo replies to pings leave unmarked, as an
    /// internet server's would (Linux echoes the request's TOS otherwise).
    pub fn behind_b(bed: &TestBed, tunnel: &str, gw_v4: Ipv4Addr, gw_v6: Ipv6Addr) -> Internet {
        let ns = Netns::new("i");
        bed.b.sh(&format!(
            "ip link add inet0 type veth peer name inet0 netns {}",
            ns.name
        ));
        for (side, me4, me6, peer4, peer6, mac, peer_mac) in [
            (
                &bed.b,
                S_V4,
                S_V6,
                I_V4,
                I_V6,
                "02:00:00:03:00:01",
                "02:00:00:03:00:02",
            ),
            (
                &ns,
                I_V4,
                I_V6,
                S_V4,
                S_V6,
                "02:00:00:03:00:02",
                "02:00:00:03:00:01",
            ),
        ] {
            side.sh(&format!(
                "set -e
                 ip link set inet0 address {mac} up
                 ip addr add {me4}/24 dev inet0
                 ip addr add {me6}/64 dev inet0 nodad
                 ip neigh replace {peer4} lladdr {peer_mac} dev inet0 nud permanent
                 ip neigh replace {peer6} lladdr {peer_mac} dev inet0 nud permanent"
            ));
        }
        bed.a.sh(&format!(
            "set -e
             ip route add 198.51.100.0/24 via {gw_v4} dev {tunnel}
             ip -6 route add 2001:db8:100::/64 via {gw_v6} dev {tunnel}"
        ));
        bed.b.sh("set -e
             sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
             nft add table inet pdscptest
             nft add chain inet pdscptest post '{ type nat hook postrouting priority 100; }'
             nft add rule inet pdscptest post oifname inet0 masquerade");
        ns.sh("set -e
             nft add table inet pdscptest
             nft add chain inet pdscptest out '{ type filter hook output priority 0; }'
             nft add rule inet pdscptest out meta l4proto icmp ip dscp set cs0
             nft add rule inet pdscptest out meta l4proto icmpv6 ip6 dscp set cs0");
        Internet { ns }
    }

    pub fn addr(v6: bool) -> IpAddr {
        if v6 {
            I_V6.into()
        } else {
            I_V4.into()
        }
    }

    /// An echo server on I that answers each datagram with `reply_tos`,
    /// until it has answered `count`.
    pub fn echo(&self, v6: bool, port: u16, reply_tos: u8, count: usize) -> thread::JoinHandle<usize> {
        let bind = SocketAddr::new(Internet::addr(v6), port);
        let sock = self
            .ns
            .run_in("echo bind", move || UdpSocket::bind(bind).expect("bind echo"));
        set_tos(&sock, v6, reply_tos);
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut answered = 0;
            while answered < count {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    break;
                };
                sock.send_to(&buf[..n], from).expect("echo");
                answered += 1;
            }
            answered
        })
    }
}

/// A client in `client`: one request to I for each of `tos`, marked so,
/// each answered; returns the TOS of each answer as the client's socket
/// receives it.
pub fn ask_from(client: &Netns, v6: bool, port: u16, tos: &[u8]) -> Vec<u8> {
    let dst = SocketAddr::new(Internet::addr(v6), port);
    let sock = client.run_in("client", move || marked_udp_socket(dst.ip(), 0));
    recv_tos_on(&sock, v6);
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    tos.iter()
        .enumerate()
        .map(|(i, t)| {
            set_tos(&sock, v6, *t);
            sock.send_to(format!("request {i}").as_bytes(), dst)
                .expect("send");
            let (_, got) = recv_with_tos(&sock).unwrap_or_else(|| panic!("no answer to request {i}"));
            got
        })
        .collect()
}

/// Turns on reception of the TOS / traffic class of each datagram.
pub fn recv_tos_on(sock: &impl AsRawFd, v6: bool) {
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVTOS)
    };
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and an int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&one as *const libc::c_int).cast(),
            4,
        )
    };
    assert_eq!(r, 0, "setsockopt RECVTOS: {}", std::io::Error::last_os_error());
}

/// One datagram and the TOS (traffic class) it arrived with.
pub fn recv_with_tos(sock: &UdpSocket) -> Option<(Vec<u8>, u8)> {
    let mut buf = vec![0u8; 2048];
    let mut cbuf = [0u8; 128];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.len();
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    let mut tos = None;
    // SAFETY: walking the control messages the kernel wrote into cbuf.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_TOS) => tos = Some(*data),
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => tos = Some(*(data as *const libc::c_int) as u8),
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some((buf, tos.expect("no TOS control message")))
}
