//! Route lookups: which device a tunnel's outer packets leave by (its uplink), asked
//! of the kernel's routing (rtnetlink), as `ip route get` would, including
//! the fwmark a WireGuard device sets (policy routing, mwan3).
use std::collections::BTreeSet;
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

/// Where one of a tunnel's peers is routed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The peer's address (WireGuard: its endpoint, with the port).
    pub peer: String,
    /// The device its packets leave by; None where there is no route.
    pub uplink: Option<String>,
}

/// Where each of a tunnel's peers is routed now. WireGuard: each peer's endpoint,
/// looked up as the device's own packets are (its fwmark, its ports);
/// VXLAN: the fixed remote, or its underlay device. None for a tunnel whose
/// peers pdscp cannot know.
pub fn peer_routes(tunnel: &Iface) -> Result<Option<Vec<Route>>> {
    let mut routes = Vec::new();
    if let Some(dev) = wireguard::device(&tunnel.name)? {
        for endpoint in &dev.endpoints {
            let uplink = route_oif(
                endpoint.ip(),
                dev.fwmark,
                Some((dev.listen_port, endpoint.port())),
            )?;
            routes.push(Route {
                peer: endpoint.to_string(),
                uplink,
            });
        }
    } else if let Some((remote, link)) = vxlan_remote(tunnel.ifindex)? {
        let via_link = link.and_then(iface::name_of);
        routes.push(Route {
            peer: remote.to_string(),
            uplink: via_link.or(route_oif(remote, 0, None)?),
        });
    } else {
        return Ok(None);
    }
    Ok(Some(routes))
}

/// Every uplink `tunnel`'s peers are reached over now (each once, sorted),
/// for `attach` without `--uplink`.
pub fn discover_uplinks(tunnel: &Iface) -> Result<Vec<String>> {
    let Some(routes) = peer_routes(tunnel)? else {
        bail!(
            "{}: cannot tell which device its packets leave by; pass --uplink",
            tunnel.name
        );
    };
    if routes.is_empty() {
        bail!(
            "{}: no WireGuard peer has an endpoint yet; pass --uplink",
            tunnel.name
        );
    }
    let uplinks: BTreeSet<String> = routes.iter().filter_map(|r| r.uplink.clone()).collect();
    if uplinks.is_empty() {
        let peers: Vec<&str> = routes.iter().map(|r| r.peer.as_str()).collect();
        bail!(
            "{}: no route to its peers ({}); pass --uplink",
            tunnel.name,
            peers.join(", ")
        );
    }
    Ok(uplinks.into_iter().collect())
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
