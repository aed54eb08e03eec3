//! `pdscp check TUNNEL`: gathers what the state, the kernel and the wire say
//! about one tunnel over a window of seconds (counters read twice, the
//! uplinks watched in between, optionally a probe sent into the tunnel),
//! and hands them to `verdicts`. Read-only.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Result};

use super::report::{Report, TunnelReport};
use super::status;

mod facts;
mod observed;
mod verdicts;

use crate::kernel::iface::{self, Iface};
use crate::kernel::{capture, egress, features, probe, qdisc, wireguard};
use crate::state::pin_root::PinRoot;
pub use facts::{Attached, Diagnosis, Facts, Finding, Level, Probe, UplinkFacts};
pub use verdicts::diagnose;

/// EF: what a probe is marked with.
pub const PROBE_DSCP: u8 = 46;

pub struct CheckRequest {
    pub tunnel: String,
    pub window: Duration,
    /// Send a marked flow into the tunnel; Some(None): to an address pdscp picks.
    pub probe: Option<Option<IpAddr>>,
}

pub fn check(root: Option<&PinRoot>, req: &CheckRequest) -> Result<Diagnosis> {
    let mut facts = Facts {
        tunnel: req.tunnel.clone(),
        seconds: req.window.as_secs_f64(),
        kernel: features::release(),
        current_ifindex: Iface::by_name(&req.tunnel).ok().map(|i| i.ifindex),
        driver: iface::driver(&req.tunnel),
        attached: None,
    };
    let before = match root {
        Some(root) => status::collect(root)?,
        None => Report::empty(std::path::Path::new("")),
    };
    let Some(t) = before.tunnels.iter().find(|t| t.name == req.tunnel) else {
        return Ok(diagnose(&facts));
    };
    let target = match (&req.probe, facts.current_ifindex) {
        (Some(to), Some(_)) => Some(probe_target(&req.tunnel, *to)?),
        (Some(_), None) => bail!("{}: no such device to send a probe into", req.tunnel),
        (None, _) => None,
    };
    let mut uplinks = uplink_facts(&before, t)?;
    let peers: Vec<IpAddr> = t
        .routes
        .iter()
        .flatten()
        .filter_map(|r| peer_ip(&r.peer))
        .collect();
    let watched: Vec<usize> = (0..uplinks.len())
        .filter(|i| {
            t.port.is_some()
                && before
                    .uplinks
                    .iter()
                    .any(|u| u.name == uplinks[*i].name && u.present)
        })
        .collect();
    let ifindexes: Vec<u32> = watched
        .iter()
        .filter_map(|i| {
            before
                .uplinks
                .iter()
                .find(|u| u.name == uplinks[*i].name)?
                .ifindex
        })
        .collect();
    let window = req.window;
    let tunnel = req.tunnel.clone();
    let (wires, sent) = std::thread::scope(|s| {
        // The probe ends before the window does, so its last packets are counted.
        let sender = target.map(|to| {
            s.spawn(move || probe::send(&tunnel, to, PROBE_DSCP, probe_count(window), window * 3 / 4))
        });
        let wires = capture::watch(&ifindexes, t.port.unwrap_or(0), &peers, window);
        let sent = sender.map(|h| h.join().expect("the probe thread panicked"));
        (wires, sent)
    });
    for (i, wire) in watched.iter().zip(wires?) {
        uplinks[*i].wire = Some(wire);
    }
    let after = status::collect(root.expect("a tunnel was found, so there is state"))?;
    let Some(t_after) = after.tunnels.iter().find(|a| a.name == req.tunnel) else {
        bail!("{} was detached while it was checked", req.tunnel);
    };
    facts.attached = Some(Attached {
        ifindex: t.ifindex.unwrap_or(0),
        reader: t.mode,
        reader_runs: t.attached,
        port: t.port,
        fixed: t.policy.fixed,
        priority_only: t.policy.priority_only,
        uplinks,
        routes: t.routes.clone(),
        traffic: t_after.counters.since(&t.counters),
        probe: match (target, sent) {
            (Some(to), Some(sent)) => Some(Probe {
                to,
                dscp: PROBE_DSCP,
                sent: sent?,
            }),
            _ => None,
        },
    });
    Ok(diagnose(&facts))
}

/// Fifty packets a second.
fn probe_count(window: Duration) -> u32 {
    ((window.as_secs_f64() * 50.0) as u32).clamp(5, 1000)
}

fn uplink_facts(report: &Report, t: &TunnelReport) -> Result<Vec<UplinkFacts>> {
    let mut out = Vec::new();
    for name in &t.uplinks {
        let Some(u) = report.uplinks.iter().find(|u| &u.name == name) else {
            continue;
        };
        let mut facts = UplinkFacts {
            name: name.clone(),
            mode: u.mode,
            present: u.present,
            writer_runs: u.attached,
            ..Default::default()
        };
        if let (true, Some(ifindex)) = (u.present, u.ifindex) {
            let hooks = egress::hooks(ifindex)?;
            facts.after_writer = egress::after_writer(&hooks)
                .iter()
                .map(|h| h.describe())
                .collect();
            facts.cake_wash = qdisc::root_cake(ifindex)?.is_some_and(|c| c.wash);
        }
        out.push(facts);
    }
    Ok(out)
}

/// "198.51.100.2:51820", "[2001:db8::2]:51820" or a bare address.
fn peer_ip(peer: &str) -> Option<IpAddr> {
    peer.parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| peer.parse())
        .ok()
}

/// Where a probe goes: the address asked for, else an address a WireGuard
/// peer takes (its allowed IPs), else a neighbour on the tunnel device.
fn probe_target(tunnel: &str, asked: Option<IpAddr>) -> Result<IpAddr> {
    if let Some(to) = asked {
        return Ok(to);
    }
    if let Some(dev) = wireguard::device(tunnel)? {
        if let Some((net, prefix)) = dev.allowed_ips.first() {
            return Ok(host_in(*net, *prefix));
        }
    }
    match probe::neighbours(tunnel).first() {
        Some(ip) => Ok(*ip),
        None => bail!("{tunnel}: no peer address known to send a probe to; give one: --probe ADDRESS"),
    }
}

/// An address inside a network: itself for a host route, its first host
/// otherwise, a documentation address for a default route.
fn host_in(net: IpAddr, prefix: u8) -> IpAddr {
    match net {
        IpAddr::V4(_) if prefix == 0 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        IpAddr::V6(_) if prefix == 0 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        IpAddr::V4(v4) if prefix < 31 => IpAddr::V4(Ipv4Addr::from(u32::from(v4) | 1)),
        IpAddr::V6(v6) if prefix < 127 => IpAddr::V6(Ipv6Addr::from(u128::from(v6) | 1)),
        ip => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_go_to_an_address_inside_the_peer_s_networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(host_in(ip("10.0.0.2"), 32), ip("10.0.0.2"));
        assert_eq!(host_in(ip("10.7.0.0"), 24), ip("10.7.0.1"));
        assert_eq!(host_in(ip("0.0.0.0"), 0), ip("192.0.2.1"));
        assert_eq!(host_in(ip("fd00::"), 64), ip("fd00::1"));
        assert_eq!(host_in(ip("::"), 0), ip("2001:db8::1"));
        assert_eq!(peer_ip("[2001:db8::2]:51820"), Some(ip("2001:db8::2")));
        assert_eq!(peer_ip("198.51.100.2"), Some(ip("198.51.100.2")));
    }
}
