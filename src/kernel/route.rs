//! Route lookups: which device a tunnel's outer packets leave by (its uplink), asked
//! of the kernel's routing (rtnetlink), as `ip route get` would, including
//! the fwmark a WireGuard device sets (policy routing, mwan3).
use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use netlink_packet_core::NLM_F_REQUEST;
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use super::iface::{self, Iface};
use super::{netlink, wireguard};

const IPPROTO_UDP: u8 = 17;
/// How the kernel says there is no route.
const NO_ROUTE: [i32; 4] = [
    libc::ENETUNREACH,
    libc::EHOSTUNREACH,
    libc::ENETDOWN,
    libc::EINVAL,
];

/// The uplink of `tunnel`, when all its peers are reached over one device.
pub fn discover_uplink(tunnel: &Iface) -> Result<String> {
    // uplink name -> the peer addresses routed over it
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unrouted = Vec::new();
    if let Some(dev) = wireguard::device(&tunnel.name)? {
        if dev.endpoints.is_empty() {
            bail!(
                "{}: no WireGuard peer has an endpoint yet; pass --uplink",
                tunnel.name
            );
        }
        for endpoint in &dev.endpoints {
            match route_oif(
                endpoint.ip(),
                dev.fwmark,
                Some((dev.listen_port, endpoint.port())),
            )? {
                Some(uplink) => found.entry(uplink).or_default().push(endpoint.to_string()),
                None => unrouted.push(endpoint.to_string()),
            }
        }
    } else if let Some((remote, link)) = vxlan_remote(tunnel.ifindex)? {
        let via_link = link.and_then(iface::name_of);
        match via_link.or(route_oif(remote, 0, None)?) {
            Some(uplink) => found.entry(uplink).or_default().push(remote.to_string()),
            None => unrouted.push(remote.to_string()),
        }
    } else {
        bail!(
            "{}: cannot tell which device its packets leave by; pass --uplink",
            tunnel.name
        );
    }
    match found.len() {
        1 => Ok(found.into_keys().next().unwrap_or_default()),
        0 => bail!(
            "{}: no route to its peers ({}); pass --uplink",
            tunnel.name,
            unrouted.join(", ")
        ),
        _ => {
            let list: Vec<String> = found
                .iter()
                .map(|(u, peers)| format!("{u}: {}", peers.join(" ")))
                .collect();
            bail!(
                "{}: its peers are reached over several uplinks ({}); pass --uplink",
                tunnel.name,
                list.join("; ")
            )
        }
    }
}

/// The output device of the route to `dst` for UDP from/to the given ports
/// with `mark`, or None if there is no route.
fn route_oif(dst: IpAddr, mark: u32, ports: Option<(u16, u16)>) -> Result<Option<String>> {
    let mut msg = RouteMessage::default();
    let (family, len, addr) = match dst {
        IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
    };
    msg.header.address_family = family;
    msg.header.destination_prefix_length = len;
    msg.attributes.push(RouteAttribute::Destination(addr));
    if mark != 0 {
        msg.attributes.push(RouteAttribute::Mark(mark));
    }
    if let Some((sport, dport)) = ports {
        msg.attributes.push(RouteAttribute::IpProto(IPPROTO_UDP));
        msg.attributes.push(RouteAttribute::Sport(sport));
        msg.attributes.push(RouteAttribute::Dport(dport));
    }
    let socket = netlink::connect(NETLINK_ROUTE)?;
    let replies = match netlink::request(&socket, RouteNetlinkMessage::GetRoute(msg), NLM_F_REQUEST) {
        Ok(r) => r,
        Err(e) if NO_ROUTE.iter().any(|n| e.raw_os_error() == Some(*n)) => return Ok(None),
        Err(e) => return Err(e).context(format!("looking up the route to {dst}")),
    };
    let oif = replies.into_iter().find_map(|r| match r {
        RouteNetlinkMessage::NewRoute(m) => m.attributes.into_iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(i),
            _ => None,
        }),
        _ => None,
    });
    // Local and loopback routes leave by lo: not an uplink.
    Ok(oif.and_then(iface::name_of).filter(|n| n != "lo"))
}

/// A VXLAN device's fixed remote address and its underlay device, if set.
fn vxlan_remote(ifindex: u32) -> Result<Option<(IpAddr, Option<u32>)>> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    let socket = netlink::connect(NETLINK_ROUTE)?;
    let replies = netlink::request(&socket, RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST)
        .context("reading link information")?;
    let mut remote = None;
    let mut link = None;
    for reply in replies {
        let RouteNetlinkMessage::NewLink(m) = reply else {
            continue;
        };
        for attr in m.attributes {
            let LinkAttribute::LinkInfo(infos) = attr else {
                continue;
            };
            for info in infos {
                let LinkInfo::Data(InfoData::Vxlan(vxlan)) = info else {
                    continue;
                };
                for v in vxlan {
                    match v {
                        InfoVxlan::Group(a) if !a.is_multicast() && !a.is_unspecified() => {
                            remote = Some(a.into())
                        }
                        InfoVxlan::Group6(a) if !a.is_multicast() && !a.is_unspecified() => {
                            remote = Some(a.into())
                        }
                        InfoVxlan::Link(i) if i != 0 => link = Some(i),
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(remote.map(|r| (r, link)))
}
