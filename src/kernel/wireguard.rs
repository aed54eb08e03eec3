//! Reads a WireGuard device's settings from the kernel over generic netlink
//! (the "wireguard" family), as `wg show` does, without running `wg`.
use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context, Result};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAllowedIpAttr, WireguardAttribute, WireguardCmd, WireguardMessage, WireguardPeerAttribute,
};
use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::Socket;

use super::netlink;

/// What pdscp needs to know of a WireGuard device.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Device {
    /// The UDP port its packets leave from (0 if it has none yet).
    pub listen_port: u16,
    pub fwmark: u32,
    pub endpoints: Vec<SocketAddr>,
    /// Every peer's allowed IPs, as (network, prefix length).
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// The WireGuard settings of `ifname`, or None if it is not a WireGuard
/// device (or the kernel has no WireGuard).
pub fn device(ifname: &str) -> Result<Option<Device>> {
    let socket = netlink::connect(NETLINK_GENERIC)?;
    let Some(family) = family_id(&socket, "wireguard")? else {
        return Ok(None);
    };
    let mut msg = GenlMessage::from_payload(WireguardMessage {
        cmd: WireguardCmd::GetDevice,
        attributes: vec![WireguardAttribute::IfName(ifname.to_string())],
    });
    msg.set_resolved_family_id(family);
    msg.finalize();
    // The kernel serves WG_CMD_GET_DEVICE only as a dump (one message per peer batch).
    let replies = match netlink::request(&socket, msg, NLM_F_REQUEST | NLM_F_DUMP) {
        Ok(r) => r,
        // ENODEV: no device of that name; EOPNOTSUPP: not a WireGuard device.
        Err(e) if [Some(libc::ENODEV), Some(libc::EOPNOTSUPP)].contains(&e.raw_os_error()) => {
            return Ok(None)
        }
        Err(e) => return Err(e).with_context(|| format!("asking WireGuard about {ifname}")),
    };
    let mut dev = Device::default();
    for reply in replies {
        for attr in reply.payload.attributes {
            match attr {
                WireguardAttribute::ListenPort(p) => dev.listen_port = p,
                WireguardAttribute::Fwmark(m) => dev.fwmark = m,
                WireguardAttribute::Peers(peers) => {
                    for peer in peers {
                        for a in peer.0 {
                            match a {
                                WireguardPeerAttribute::Endpoint(e) => dev.endpoints.push(e),
                                WireguardPeerAttribute::AllowedIps(ips) => {
                                    dev.allowed_ips.extend(ips.iter().filter_map(|ip| network(ip)))
                                }
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Some(dev))
}

/// The id of a generic netlink family, or None if the kernel does not have it.
fn family_id(socket: &Socket, name: &str) -> Result<Option<u16>> {
    let mut msg = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
    });
    msg.finalize();
    let replies = match netlink::request(socket, msg, NLM_F_REQUEST) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e).context("resolving a netlink family"),
    };
    Ok(replies
        .into_iter()
        .flat_map(|r| r.payload.nlas)
        .find_map(|a| match a {
            GenlCtrlAttrs::FamilyId(id) => Some(id),
            _ => None,
        }))
}

/// The outer UDP source port of a WireGuard device, for attach without --port.
pub fn listen_port(ifname: &str, dev: &Device) -> Result<u16> {
    if dev.listen_port == 0 {
        bail!("{ifname} is a WireGuard device without a listen port yet; bring it up or set ListenPort");
    }
    Ok(dev.listen_port)
}

fn network(attrs: &[WireguardAllowedIpAttr]) -> Option<(IpAddr, u8)> {
    let ip = attrs.iter().find_map(|a| match a {
        WireguardAllowedIpAttr::IpAddr(ip) => Some(*ip),
        _ => None,
    })?;
    let cidr = attrs.iter().find_map(|a| match a {
        WireguardAllowedIpAttr::Cidr(c) => Some(*c),
        _ => None,
    })?;
    Some((ip, cidr))
}
