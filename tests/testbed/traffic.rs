//! Traffic generators: marked UDP, TCP bulk transfers, pings, each bounded.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Output;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::namespaces::{join, Netns, STEP_TIMEOUT};

/// Sets IP_TOS (IPv4) or IPV6_TCLASS (IPv6) on a socket.
pub fn set_tos(fd: &impl std::os::fd::AsFd, v6: bool, tos: u8) {
    let tos = i32::from(tos);
    if v6 {
        setsockopt(fd, sockopt::Ipv6TClass, &tos).expect("IPV6_TCLASS");
    } else {
        setsockopt(fd, sockopt::IpTos, &tos).expect("IP_TOS");
    }
}

/// A UDP socket in the calling thread's namespace, bound to the unspecified
/// address of `dst`'s family, that marks what it sends with TOS / traffic
/// class `tos`.
pub fn marked_udp_socket(dst: IpAddr, tos: u8) -> UdpSocket {
    let any: IpAddr = if dst.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let sock = UdpSocket::bind((any, 0)).expect("binding UDP socket");
    set_tos(&sock, dst.is_ipv6(), tos);
    sock
}

/// Sends `count` small UDP datagrams from `ns` to `dst:dport` with TOS /
/// traffic class `tos`, 2 ms apart; returns the source port. Neighbours are
/// static in the bed, so no packet waits for ARP/ND and none is lost. Nobody
/// listens on `dport` unless the test does: `b` answers with (rate-limited)
/// ICMP port-unreachable, which an unconnected socket ignores.
pub fn send_udp(ns: &Netns, dst: IpAddr, dport: u16, tos: u8, count: usize) -> u16 {
    ns.run_in("send_udp", move || {
        let sock = marked_udp_socket(dst, tos);
        for i in 0..count {
            let payload = format!("pdscp-testbed {i}");
            sock.send_to(payload.as_bytes(), (dst, dport))
                .expect("sending UDP");
            thread::sleep(Duration::from_millis(2));
        }
        sock.local_addr().expect("local_addr").port()
    })
}

/// A TCP socket with TOS / traffic class set before connecting (so the SYN
/// carries it too), connected to `dst` within [`STEP_TIMEOUT`].
pub fn tcp_connect(dst: SocketAddr, tos: u8) -> TcpStream {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6};
    let family = if dst.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let sock = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("TCP socket");
    set_tos(&sock, dst.is_ipv6(), tos);
    // SO_SNDTIMEO also bounds a blocking connect().
    let tv = TimeVal::new(STEP_TIMEOUT.as_secs() as _, 0);
    setsockopt(&sock, sockopt::SendTimeout, &tv).expect("SO_SNDTIMEO");
    let r = match dst {
        SocketAddr::V4(a) => connect(sock.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => connect(sock.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    r.unwrap_or_else(|e| panic!("connecting to {dst}: {e}"));
    TcpStream::from(sock)
}

/// Sends `bytes` bytes over one TCP connection from `client` to a server in
/// `server` listening on `dst:port`, the client socket marked with `tos`.
/// Returns how many bytes the server read (the caller compares). The client
/// half-closes and waits for the server's close, so every byte has been
/// delivered when this returns. Each step is bounded by a timeout.
pub fn tcp_bulk(client: &Netns, server: &Netns, dst: IpAddr, port: u16, tos: u8, bytes: usize) -> usize {
    let (ready_tx, ready_rx) = mpsc::channel();
    let srv = server.spawn("tcp_server", move || {
        let listener = TcpListener::bind((dst, port)).unwrap_or_else(|e| panic!("binding {dst}:{port}: {e}"));
        // Linux applies SO_RCVTIMEO to accept() as well.
        let tv = TimeVal::new(STEP_TIMEOUT.as_secs() as _, 0);
        setsockopt(&listener, sockopt::ReceiveTimeout, &tv).expect("SO_RCVTIMEO");
        ready_tx.send(()).expect("tcp_bulk went away");
        let (mut conn, _) = listener.accept().expect("accepting the bulk connection");
        conn.set_read_timeout(Some(STEP_TIMEOUT)).expect("read timeout");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match conn.read(&mut buf).expect("server read") {
                0 => break total,
                n => total += n,
            }
        }
    });
    if ready_rx.recv_timeout(STEP_TIMEOUT).is_err() {
        join(srv);
        panic!("tcp server did not start");
    }
    let cli = client.spawn("tcp_client", move || {
        let mut conn = tcp_connect(SocketAddr::new(dst, port), tos);
        conn.set_write_timeout(Some(STEP_TIMEOUT)).expect("write timeout");
        conn.set_read_timeout(Some(STEP_TIMEOUT)).expect("read timeout");
        let chunk = vec![0x5au8; 1 << 16];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            conn.write_all(&chunk[..n]).expect("client write");
            left -= n;
        }
        conn.shutdown(Shutdown::Write).expect("shutdown");
        // EOF from the server means it has read everything.
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest)
            .expect("waiting for the server to close");
    });
    join(cli);
    join(srv)
}

/// `ping [-6] -Q tos -c count -i 0.2 -W 1 dst` in `ns` (iputils-ping).
pub fn ping(ns: &Netns, dst: IpAddr, tos: u8, count: u32) -> Output {
    let family = if dst.is_ipv6() { "-6" } else { "-4" };
    ns.try_sh(&format!(
        "ping {family} -n -q -Q {tos} -c {count} -i 0.2 -W 1 {dst}"
    ))
}
