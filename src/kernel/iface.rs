//! Interface facts: name validation, ifindex and link type.
//!
//! Facts come from ioctls on a socket opened in the current network
//! namespace, not from /sys/class/net: after `setns` (--netns) sysfs still
//! shows the namespace it was mounted in.
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

/// Linux IFNAMSIZ, including the terminating NUL.
pub const IFNAMSIZ: usize = 16;

const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
/// Link types whose packets start with the IP header at tc egress.
const ARPHRD_L3: &[(u16, &str)] = &[
    (0xfffe, "none"), // WireGuard, tun
    (512, "ppp"),
    (519, "rawip"),
    (768, "ipip"),
    (769, "ip6tnl"),
    (776, "sit"),
    (778, "gre"),
    (823, "ip6gre"),
];

/// Refuses what the kernel's dev_valid_name() refuses, so no name can
/// escape `<pin-root>/<uplink>/` or reach a shell unquoted.
pub fn validate_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() >= IFNAMSIZ {
        "it is longer than 15 bytes"
    } else if name == "." || name == ".." {
        "it is a directory name"
    } else if name.contains('/') || name.contains(':') {
        "it contains '/' or ':'"
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it contains white space or control characters"
    } else {
        return Ok(());
    };
    bail!("invalid interface name {name:?}: {why}")
}

/// A network device as the kernel sees it now, in the current namespace.
#[derive(Clone, Debug)]
pub struct Iface {
    pub name: String,
    pub ifindex: u32,
    pub link_type: u16,
}

impl Iface {
    /// Looks a device up by name; a clear error if it does not exist.
    pub fn by_name(name: &str) -> Result<Iface> {
        let sock = control_socket()?;
        let ifindex = match ioctl_ifreq(&sock, libc::SIOCGIFINDEX, name) {
            // SAFETY: SIOCGIFINDEX fills the union's ifindex member.
            Ok(ifr) => (unsafe { ifr.ifr_ifru.ifru_ifindex }) as u32,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                bail!("no network device named {name:?} in this network namespace")
            }
            Err(e) => return Err(e).with_context(|| format!("looking up device {name:?}")),
        };
        let ifr = ioctl_ifreq(&sock, libc::SIOCGIFHWADDR, name)
            .with_context(|| format!("reading the link type of {name:?}"))?;
        // SAFETY: SIOCGIFHWADDR fills the union's hwaddr member.
        let link_type = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_family };
        Ok(Iface {
            name: name.to_string(),
            ifindex,
            link_type,
        })
    }

    /// Whether packets on this device start with an Ethernet header (as
    /// opposed to the IP header); an error for link types pdscp cannot parse.
    pub fn has_ethernet_header(&self) -> Result<bool> {
        match self.link_type {
            ARPHRD_ETHER | ARPHRD_LOOPBACK => Ok(true),
            t if ARPHRD_L3.iter().any(|(l3, _)| *l3 == t) => Ok(false),
            t => bail!(
                "{}: link type {t} is neither Ethernet nor a plain IP device; pdscp cannot parse its packets",
                self.name
            ),
        }
    }
}

/// The name of the device with this ifindex, if one exists in the current namespace.
pub fn name_of(ifindex: u32) -> Option<String> {
    let name = nix::net::if_::if_indextoname(ifindex).ok()?;
    Some(name.to_string_lossy().into_owned())
}

/// Whether `ifindex` still names the device `name` (it may have been deleted,
/// or deleted and recreated with a new ifindex).
pub fn is_present(name: &str, ifindex: u32) -> bool {
    name_of(ifindex).as_deref() == Some(name)
}

/// The driver behind a device as ethtool names it ("tun", "veth", ...), if
/// the driver says. WireGuard does not; ask it over netlink instead.
pub fn driver(name: &str) -> Option<String> {
    const ETHTOOL_GDRVINFO: u32 = 3;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 32 * 4 + 12 + 4 * 5],
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 32 * 4 + 12 + 4 * 5],
    };
    let sock = control_socket().ok()?;
    let mut ifr = ifreq_for(name).ok()?;
    ifr.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GDRVINFO writes at most
    // size_of::<DrvInfo>() bytes (struct ethtool_drvinfo) through ifru_data,
    // which points at `info`, alive for the call.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as _, &mut ifr) };
    if ret < 0 {
        return None;
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// Identifies the current network namespace (the inode of its nsfs file;
/// 32 bits are what the kernel hands out).
pub fn current_netns() -> Result<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
    Ok(meta.ino() as u32)
}

/// Every device in the current namespace, ifindex -> name, from one
/// rtnetlink dump (checking many tunnels at once costs one request).
pub fn devices() -> Result<std::collections::HashMap<u32, String>> {
    use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_packet_route::RouteNetlinkMessage;

    let socket = super::netlink::connect(netlink_sys::protocols::NETLINK_ROUTE)?;
    let replies = super::netlink::request(
        &socket,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_REQUEST | NLM_F_DUMP,
    )
    .context("listing network devices")?;
    let mut devices = std::collections::HashMap::new();
    for reply in replies {
        let RouteNetlinkMessage::NewLink(link) = reply else {
            continue;
        };
        for attr in link.attributes {
            if let LinkAttribute::IfName(name) = attr {
                devices.insert(link.header.index, name);
            }
        }
    }
    Ok(devices)
}

/// A socket to ask device ioctls in the current network namespace. AF_UNIX
/// works even in a namespace without IPv4.
fn control_socket() -> Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("opening a control socket")
}

/// A zeroed ifreq naming the device; ENODEV for names no device can have.
fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    if name.len() >= IFNAMSIZ || name.as_bytes().contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: ifreq is a plain C struct (a name and a union of integers and
    // pointers), for which all zero bytes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    Ok(ifr)
}

fn ioctl_ifreq(sock: &OwnedFd, request: libc::c_ulong, name: &str) -> io::Result<libc::ifreq> {
    let mut ifr = ifreq_for(name)?;
    // SAFETY: the SIOCGIF* requests used here read the name and write one
    // union member of `ifr`, which lives for the call.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut ifr) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ifr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "wg0",
            "eth0",
            "eth0.100",
            "br-lan",
            "pppoe-wan",
            "a",
            "x23456789012345",
            "wg@x",
        ] {
            validate_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "x234567890123456",
            "wg 0",
            "wg\t0",
            "eth0:1",
            "wg\n",
            "wg\u{7f}",
            "é234567890123456",
        ] {
            assert!(validate_name(name).is_err(), "{name:?} should be refused");
        }
    }

    #[test]
    fn loopback_is_found_with_an_ethernet_header() {
        let lo = Iface::by_name("lo").unwrap();
        assert_eq!(lo.ifindex, 1);
        assert!(lo.has_ethernet_header().unwrap());
        assert!(is_present("lo", lo.ifindex));
        assert!(!is_present("not-lo", lo.ifindex));
    }

    #[test]
    fn driver_of_loopback_is_unknown_and_of_nothing_none() {
        assert_eq!(driver("pdscp-nodev"), None);
    }

    #[test]
    fn devices_lists_loopback() {
        assert_eq!(devices().unwrap().get(&1).map(String::as_str), Some("lo"));
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        let err = Iface::by_name("pdscp-nodev").unwrap_err().to_string();
        assert!(err.contains("no network device named"), "{err}");
    }
}
