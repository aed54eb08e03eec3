//! Traffic generators: marked UDP, TCP bulk transfers, pings, each bounded;
//! TUN devices and a userspace tunnel's stand-in.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Output;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
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

/// UDP from a namespace to `dst`:`dport` marked `tos`, `rate` datagrams a
/// second on a fixed schedule (a late one does not shift the rest), on a
/// thread, until stopped (or dropped).
pub struct SteadyUdp {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl SteadyUdp {
    pub fn start(ns: &Netns, dst: IpAddr, dport: u16, tos: u8, rate: u32) -> SteadyUdp {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = ns.spawn("steady udp", move || {
            let sock = marked_udp_socket(dst, tos);
            let start = std::time::Instant::now();
            let mut sent = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // A datagram refused (ICMP unreachable came back) still left.
                let _ = sock.send_to(format!("steady {sent}").as_bytes(), (dst, dport));
                sent += 1;
                let next = start + Duration::from_secs(1) * sent as u32 / rate;
                thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            }
            sent
        });
        SteadyUdp {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sending; returns how many datagrams were sent.
    pub fn stop(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().expect("steady udp"))
    }
}

impl Drop for SteadyUdp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
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

/// Opens TUN device `name` (creating it if needed) in `ns`: IP packets, no
/// packet information header.
pub fn open_tun(ns: &Netns, name: &str) -> std::fs::File {
    use std::os::fd::FromRawFd;
    let name = name.to_string();
    ns.run_in("open tun", move || {
        // SAFETY: a plain open(2); the result is checked.
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(fd >= 0, "open /dev/net/tun: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nobody else owns.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as u16;
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: ifr is an ifreq-sized buffer with the name and flags set.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) };
        assert_eq!(ret, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
        file
    })
}

/// A userspace tunnel's stand-in (wireguard-go, boringtun): a thread of
/// `ns` that reads each packet from the TUN `tun` and sends it as the
/// payload of a UDP datagram from `sport` to `dst`, until dropped.
pub struct UserspaceTunnel {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl UserspaceTunnel {
    pub fn start(ns: &Netns, tun: std::fs::File, sport: u16, dst: SocketAddr) -> UserspaceTunnel {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let sock = ns.run_in("userspace tunnel socket", move || {
            let any: IpAddr = Ipv4Addr::UNSPECIFIED.into();
            UdpSocket::bind((any, sport)).expect("binding the tunnel's port")
        });
        // SAFETY: fcntl on a descriptor this File owns.
        unsafe { libc::fcntl(tun.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut tun = tun;
            let mut buf = [0u8; 2048];
            let mut sent = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match tun.read(&mut buf) {
                    Ok(n) => {
                        sock.send_to(&buf[..n], dst).expect("tunnel send");
                        sent += 1;
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            sent
        });
        UserspaceTunnel {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the tunnel; returns how many packets it carried.
    pub fn stop(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("userspace tunnel"))
    }
}

impl Drop for UserspaceTunnel {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
