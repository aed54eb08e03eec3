//! `pdscp attach`: start marking a tunnel's packets on its uplink.
use anyhow::{bail, Context, Result};

use super::reconcile::reconcile;
use super::{rules, steps};
use crate::kernel::iface::{self, Iface};
use crate::kernel::{route, wireguard};
use crate::model::{IfaceCfg, Mode, PortMatch, Role};
use crate::state::pin_root::PinRoot;
use crate::state::registry::Registry;
use crate::testhooks::{crash_point, Step};

/// What an attach is about, found from the devices before any state is
/// touched, so refused commands change nothing.
pub struct AttachPlan {
    tunnel: Iface,
    tunnel_ethernet: bool,
    uplink: Iface,
    uplink_ethernet: bool,
    ports: PortMatch,
}

/// Looks up the devices: the tunnel, its outer port (WireGuard's listen
/// port unless given) and its uplink (the route to its peers unless given).
pub fn plan(tunnel_name: &str, uplink_name: Option<&str>, ports: Option<PortMatch>) -> Result<AttachPlan> {
    let tunnel = Iface::by_name(tunnel_name)?;
    let ports = tunnel_ports(&tunnel, ports)?;
    let uplink_name = match uplink_name {
        Some(name) => name.to_string(),
        None => route::discover_uplink(&tunnel)?,
    };
    if uplink_name == tunnel_name {
        bail!("{tunnel_name}: its packets leave by itself; pass --uplink");
    }
    let uplink = Iface::by_name(&uplink_name)?;
    Ok(AttachPlan {
        tunnel_ethernet: tunnel.has_ethernet_header()?,
        uplink_ethernet: uplink.has_ethernet_header()?,
        tunnel,
        uplink,
        ports,
    })
}

pub fn attach(root: &PinRoot, plan: &AttachPlan, asked: Option<Mode>, map_size: u32) -> Result<String> {
    let (tunnel, ports) = (&plan.tunnel, plan.ports);
    let (tunnel_name, uplink_name) = (tunnel.name.as_str(), plan.uplink.name.as_str());
    for other in root.uplinks()? {
        if other.name != uplink_name && other.has_tunnel(tunnel_name) {
            // A stale record (device gone or recreated) does not hold the tunnel.
            reconcile(&other)?;
        }
        if other.name != uplink_name && other.has_tunnel(tunnel_name) {
            bail!(
                "{tunnel_name} is already attached to uplink {}; detach it first",
                other.name
            );
        }
    }

    let netns = iface::current_netns()?;
    let dir = root.uplink(uplink_name);
    reconcile(&dir)?;
    let (pinned, reloaded) = dir.ensure(map_size)?;
    crash_point(Step::Pinned);
    let mut registry = Registry::read(&pinned)?;
    rules::check_netns(&registry, uplink_name, netns)?;
    let mode = steps::attach_writer(
        &dir,
        &pinned,
        &mut registry,
        &plan.uplink,
        plan.uplink_ethernet,
        asked,
        netns,
    )?;
    crash_point(Step::UplinkAttached);
    if let Err(e) = check_nesting(root, tunnel_name, uplink_name, mode) {
        reconcile(&dir)?; // releases the uplink again if this was its first tunnel
        return Err(e);
    }
    if reloaded {
        // New programs were pinned: move devices still running old ones.
        steps::retarget_readers(&dir, &pinned, &registry, tunnel_name)?;
    }

    let cfg = IfaceCfg {
        role: Role::Tunnel,
        name: tunnel_name.to_string(),
        ethernet: plan.tunnel_ethernet,
        mode,
        ports: Some(ports),
        netns,
    };
    let recorded = registry.tunnel(tunnel_name).map(|(i, c)| (i, c.clone()));
    let reader = steps::reader_hook(&dir, tunnel_name, tunnel.ifindex);
    let what = describe(uplink_name, mode, ports);
    if recorded.as_ref() == Some(&(tunnel.ifindex, cfg.clone()))
        && dir.has_tunnel(tunnel_name)
        && reader.runs(mode, pinned.reader.id())?
    {
        return Ok(format!("{tunnel_name}: already attached {what}"));
    }
    if let Some((old_ifindex, _)) = &recorded {
        // Re-attach with other settings, or the device was recreated.
        registry.forget(&pinned, *old_ifindex)?;
    }
    rules::claim_port(&registry, tunnel_name, tunnel.ifindex, ports, iface::is_present)?;
    registry.record(&pinned, tunnel.ifindex, &cfg)?;
    crash_point(Step::TunnelRecorded);
    dir.create_tunnel_dir(tunnel_name)?;
    crash_point(Step::TunnelDirCreated);
    reader
        .ensure(mode, &pinned.reader)
        .with_context(|| format!("attaching to {tunnel_name}"))?;
    Ok(format!("{tunnel_name}: attached {what}"))
}

/// A device that is both a tunnel and an uplink (WireGuard inside
/// WireGuard) must run its writer before its reader (`rules::check_mode_order`).
fn check_nesting(root: &PinRoot, tunnel: &str, uplink: &str, mode: Mode) -> Result<()> {
    if mode == Mode::Tcx {
        // The tunnel device is itself an uplink whose writer runs in some mode?
        let inner = root.uplink(tunnel);
        if inner.exists() {
            if let Ok(pinned) = inner.open() {
                if let Some((_, cfg)) = Registry::read(&pinned)?.uplink() {
                    rules::check_mode_order(tunnel, mode, cfg.mode)?;
                }
            }
        }
    } else {
        // The uplink device is itself a tunnel whose reader runs in some mode?
        for outer in root.uplinks()? {
            if outer.name != uplink && outer.has_tunnel(uplink) {
                if let Ok(pinned) = outer.open() {
                    if let Some((_, cfg)) = Registry::read(&pinned)?.tunnel(uplink) {
                        rules::check_mode_order(uplink, cfg.mode, mode)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// How the tunnel's outer packets are recognised: as asked, or WireGuard's
/// listen port. Refuses devices whose packets cannot keep their flow hash.
fn tunnel_ports(tunnel: &Iface, asked: Option<PortMatch>) -> Result<PortMatch> {
    if iface::driver(&tunnel.name).as_deref() == Some("tun") {
        bail!(
            "{} is a TUN device (userspace WireGuard such as wireguard-go or boringtun?): its packets \
             leave through a UDP socket that keeps no flow hash, so pdscp can never match them; \
             use the kernel's WireGuard",
            tunnel.name
        );
    }
    if let Some(ports) = asked {
        return Ok(ports);
    }
    match wireguard::device(&tunnel.name)? {
        Some(dev) => Ok(PortMatch::Port(wireguard::listen_port(&tunnel.name, &dev)?)),
        None => bail!(
            "{} is not a WireGuard device: give its outer UDP source port with --port N, or --any-port",
            tunnel.name
        ),
    }
}

fn describe(uplink: &str, mode: Mode, ports: PortMatch) -> String {
    match ports {
        PortMatch::Port(p) => format!("to {uplink} (mode {}, port {p})", mode.name()),
        PortMatch::Any => format!("to {uplink} (mode {}, any port)", mode.name()),
    }
}
