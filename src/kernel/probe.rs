//! A short marked flow sent into a tunnel, for `pdscp check --probe`: UDP
//! to the discard port of an address behind the tunnel, bound to the tunnel
//! device so it leaves by it whatever the routes say.
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The discard port: a peer that gets a probe throws it away.
const DISCARD: u16 = 9;

/// Sends `count` UDP packets marked `dscp` to `to`, spread evenly over
/// `spread`, out of device `tunnel`. Returns how many the kernel took.
pub fn send(tunnel: &str, to: IpAddr, dscp: u8, count: u32, spread: Duration) -> Result<u32> {
    let bind: SocketAddr = match to {
        IpAddr::V4(_) => "0.0.0.0:0".parse()?,
        IpAddr::V6(_) => "[::]:0".parse()?,
    };
    let socket = UdpSocket::bind(bind).context("opening the probe's socket")?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(tunnel),
    )
    .with_context(|| format!("binding the probe to {tunnel}"))?;
    let tos = i32::from(dscp) << 2;
    let (level, option) = match to {
        IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_TOS),
        IpAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_TCLASS),
    };
    // SAFETY: setsockopt with a live int of the size given.
    let ret = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&tos as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error()).context("marking the probe's packets");
    }
    let gap = spread / count.max(1);
    let start = Instant::now();
    let mut sent = 0;
    for i in 0..count {
        // Errors (no neighbour yet, a full queue) are what the counters then show.
        if socket
            .send_to(b"pdscp check probe", SocketAddr::new(to, DISCARD))
            .is_ok()
        {
            sent += 1;
        }
        let next = gap * (i + 1);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(sent)
}

/// IPv4 neighbours on `device` whose link address is known (/proc/net/arp),
/// for a tunnel that is not WireGuard (VXLAN, GRE with ARP).
pub fn neighbours(device: &str) -> Vec<IpAddr> {
    const ATF_COM: u32 = 0x2;
    let table = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(cols.get(2)?.trim_start_matches("0x"), 16).ok()?;
            (cols.get(5) == Some(&device) && flags & ATF_COM != 0).then(|| cols[0].parse().ok())?
        })
        .collect()
}
