//! attach and detach: each step is idempotent, so a repeated or interrupted
//! command converges on the asked-for state. Runs under the pin root's lock.
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use libbpf_rs::ProgramHandle;

use crate::attach::{self, Mode, TcxError};
use crate::bpffs::PinRoot;
use crate::cli::{ModeArg, PortMatch};
use crate::iface::{self, Iface};
use crate::pins::{IfaceCfg, Role, Uplink, UplinkPins};
use crate::{uplink, wireguard};

pub fn attach(
    root: &PinRoot,
    tunnel_name: &str,
    uplink_name: Option<&str>,
    ports: Option<PortMatch>,
    mode_arg: ModeArg,
    map_size: u32,
) -> Result<String> {
    let tunnel = Iface::by_name(tunnel_name)?;
    let uplink_name = match uplink_name {
        Some(name) => name.to_string(),
        None => uplink::discover(&tunnel)?,
    };
    let uplink_name = uplink_name.as_str();
    if uplink_name == tunnel_name {
        bail!("{tunnel_name}: its packets leave by itself; pass --uplink");
    }
    let uplink_dev = Iface::by_name(uplink_name)?;
    let ports = tunnel_ports(&tunnel, ports)?;
    let tunnel_ethernet = tunnel.has_ethernet_header()?;
    let uplink_ethernet = uplink_dev.has_ethernet_header()?;
    for other in root.uplinks()? {
        if other.name != uplink_name && other.has_tunnel(tunnel_name) {
            bail!(
                "{tunnel_name} is already attached to uplink {}; detach it first",
                other.name
            );
        }
    }

    let netns = iface::current_netns()?;
    let pins = root.uplink(uplink_name);
    let (uplink, reloaded) = pins.ensure(map_size)?;
    uplink.check_netns(uplink_name, netns)?;
    let mode = attach_uplink(&pins, &uplink, &uplink_dev, uplink_ethernet, mode_arg, netns)?;
    if reloaded {
        // New programs were pinned: move devices still running old ones.
        retarget_tunnels(&pins, &uplink, tunnel_name)?;
    }

    let cfg = IfaceCfg {
        role: Role::Tunnel,
        name: tunnel_name.to_string(),
        ethernet: tunnel_ethernet,
        mode,
        ports: Some(ports),
        netns,
    };
    let recorded = uplink.tunnel_by_name(tunnel_name)?;
    let what = describe(uplink_name, mode, ports);
    if recorded.as_ref() == Some(&(tunnel.ifindex, cfg.clone()))
        && pins.has_tunnel(tunnel_name)
        && is_attached(
            mode,
            Role::Tunnel,
            &uplink.reader,
            tunnel.ifindex,
            &pins.tunnel_link(tunnel_name),
        )?
    {
        return Ok(format!("{tunnel_name}: already attached {what}"));
    }
    if let Some((old_ifindex, old_cfg)) = &recorded {
        // Re-attach with other settings, or the device was recreated.
        forget_tunnel(&uplink, *old_ifindex, old_cfg)?;
    }
    claim_port(&uplink, tunnel_name, tunnel.ifindex, ports)?;
    uplink.set_iface(tunnel.ifindex, &cfg)?;
    match ports {
        PortMatch::Port(p) => uplink.set_port(p, tunnel.ifindex)?,
        PortMatch::Any => uplink.set_port(0, tunnel.ifindex)?,
    }
    pins.create_tunnel_dir(tunnel_name)?;
    ensure_attached(
        mode,
        Role::Tunnel,
        &uplink.reader,
        tunnel.ifindex,
        &pins.tunnel_link(tunnel_name),
    )
    .with_context(|| format!("attaching to {tunnel_name}"))?;
    Ok(format!("{tunnel_name}: attached {what}"))
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

/// Records the uplink and makes sure the writer runs on it. The uplink keeps
/// the mode it was first attached in.
fn attach_uplink(
    pins: &UplinkPins,
    uplink: &Uplink,
    dev: &Iface,
    ethernet: bool,
    mode_arg: ModeArg,
    netns: u32,
) -> Result<Mode> {
    let recorded = uplink.uplink_entry()?;
    let live_mode = match &recorded {
        Some((ifindex, cfg)) if *ifindex == dev.ifindex => is_attached(
            cfg.mode,
            Role::Uplink,
            &uplink.writer,
            dev.ifindex,
            &pins.uplink_link(),
        )?
        .then_some(cfg.mode),
        _ => None,
    };
    if let Some((ifindex, _)) = &recorded {
        if *ifindex != dev.ifindex {
            // The uplink device was recreated: its old entry is stale.
            uplink.delete_iface(*ifindex)?;
        }
    }
    let wanted = match mode_arg {
        ModeArg::Tcx => Some(Mode::Tcx),
        ModeArg::Tc => Some(Mode::Tc),
        ModeArg::Auto => None,
    };
    if let (Some(live), Some(wanted)) = (live_mode, wanted) {
        if live != wanted {
            bail!(
                "uplink {} is attached in {} mode; detach its tunnels before using --mode {}",
                dev.name,
                live.name(),
                wanted.name()
            );
        }
    }
    let mut mode = live_mode.or(wanted).unwrap_or(Mode::Tcx);
    let mut cfg = IfaceCfg {
        role: Role::Uplink,
        name: dev.name.clone(),
        ethernet,
        mode,
        ports: None,
        netns,
    };
    uplink.set_iface(dev.ifindex, &cfg)?;
    match ensure_attached(
        mode,
        Role::Uplink,
        &uplink.writer,
        dev.ifindex,
        &pins.uplink_link(),
    ) {
        Ok(()) => {}
        Err(e) if mode_arg == ModeArg::Auto && live_mode.is_none() && is_tcx_unsupported(&e) => {
            mode = Mode::Tc;
            cfg.mode = mode;
            uplink.set_iface(dev.ifindex, &cfg)?;
            ensure_attached(
                mode,
                Role::Uplink,
                &uplink.writer,
                dev.ifindex,
                &pins.uplink_link(),
            )?;
        }
        Err(e) => return Err(e.context(format!("attaching to uplink {}", dev.name))),
    }
    Ok(mode)
}

const NO_TCX: &str = "this kernel has no TCX (needs Linux 6.6+); use --mode tc or --mode auto";

fn is_tcx_unsupported(e: &anyhow::Error) -> bool {
    e.to_string() == NO_TCX
}

/// Whether `prog` runs on `ifindex`'s egress as pdscp attached it.
fn is_attached(mode: Mode, role: Role, prog: &ProgramHandle, ifindex: u32, link_pin: &Path) -> Result<bool> {
    Ok(match mode {
        Mode::Tcx => {
            attach::tcx_state(link_pin)?.is_some_and(|s| s.ifindex == ifindex && s.prog_id == prog.id())
        }
        Mode::Tc => attach::tc_state(ifindex, role)? == Some(prog.id()),
    })
}

/// Attaches `prog` to `ifindex`'s egress unless it already runs there.
fn ensure_attached(
    mode: Mode,
    role: Role,
    prog: &ProgramHandle,
    ifindex: u32,
    link_pin: &Path,
) -> Result<()> {
    match mode {
        Mode::Tcx => {
            match attach::tcx_state(link_pin)? {
                Some(s) if s.ifindex == ifindex && s.prog_id == prog.id() => return Ok(()),
                Some(s) if s.ifindex == ifindex => return attach::tcx_update(link_pin, prog.as_fd()),
                // Defunct (device deleted) or another device: replace it.
                Some(_) => attach::tcx_detach(link_pin)?,
                None => {}
            }
            match attach::tcx_attach(prog.as_fd(), ifindex, role, link_pin) {
                Ok(()) => Ok(()),
                Err(TcxError::Unsupported) => bail!(NO_TCX),
                Err(TcxError::Other(e)) => Err(e),
            }
        }
        Mode::Tc => {
            if attach::tc_state(ifindex, role)? == Some(prog.id()) {
                return Ok(());
            }
            attach::tc_attach(prog.as_fd(), ifindex, role)
        }
    }
}

/// After a reload, points every other attached tunnel at the new reader.
fn retarget_tunnels(pins: &UplinkPins, uplink: &Uplink, except: &str) -> Result<()> {
    for (ifindex, cfg) in uplink.ifaces()? {
        if cfg.role == Role::Tunnel && cfg.name != except && iface::is_present(&cfg.name, ifindex) {
            ensure_attached(
                cfg.mode,
                Role::Tunnel,
                &uplink.reader,
                ifindex,
                &pins.tunnel_link(&cfg.name),
            )?;
        }
    }
    Ok(())
}

/// Refuses a port another live tunnel of this uplink already uses.
fn claim_port(uplink: &Uplink, tunnel: &str, ifindex: u32, ports: PortMatch) -> Result<()> {
    let PortMatch::Port(port) = ports else {
        return Ok(());
    };
    let Some(owner) = uplink.port_owner(port)? else {
        return Ok(());
    };
    if owner == ifindex {
        return Ok(());
    }
    if let Some(cfg) = uplink.iface(owner)? {
        if cfg.role == Role::Tunnel && cfg.ports == Some(ports) && iface::is_present(&cfg.name, owner) {
            bail!(
                "{tunnel}: outer port {port} is already used by tunnel {} on this uplink",
                cfg.name
            );
        }
    }
    Ok(())
}

/// Removes a tunnel's registry entries (the writer stops matching its port).
fn forget_tunnel(uplink: &Uplink, ifindex: u32, cfg: &IfaceCfg) -> Result<()> {
    uplink.delete_iface(ifindex)?;
    match cfg.ports {
        Some(PortMatch::Port(p)) if uplink.port_owner(p)? == Some(ifindex) => uplink.delete_port(p)?,
        Some(PortMatch::Any) => {
            let others = uplink
                .ifaces()?
                .into_iter()
                .any(|(_, c)| c.ports == Some(PortMatch::Any));
            if !others {
                uplink.delete_port(0)?;
            }
        }
        _ => {}
    }
    Ok(())
}

pub fn detach(root: &PinRoot, tunnel: &str, only_uplink: Option<&str>) -> Result<String> {
    let candidates = match only_uplink {
        Some(name) => vec![root.uplink(name)],
        None => root.uplinks()?,
    };
    let Some(pins) = candidates.into_iter().find(|p| p.has_tunnel(tunnel)) else {
        return Ok(format!("{tunnel}: not attached"));
    };
    // Broken pins must not block cleaning up what can be cleaned.
    let uplink = pins.open().ok();
    let recorded = match &uplink {
        Some(u) => {
            u.check_netns(&pins.name, iface::current_netns()?)?;
            u.tunnel_by_name(tunnel)?
        }
        None => None,
    };

    // Stop the reader first, then forget the tunnel.
    attach::tcx_detach(&pins.tunnel_link(tunnel))?;
    if let Some((ifindex, _)) = &recorded {
        if iface::is_present(tunnel, *ifindex) {
            attach::tc_detach(*ifindex, Role::Tunnel)?;
        }
    }
    if let (Some(uplink), Some((ifindex, cfg))) = (&uplink, &recorded) {
        forget_tunnel(uplink, *ifindex, cfg)?;
    }
    pins.remove_tunnel_dir(tunnel)?;

    if !pins.tunnel_names()?.is_empty() {
        return Ok(format!("{tunnel}: detached from {}", pins.name));
    }
    detach_uplink(&pins)?;
    Ok(format!(
        "{tunnel}: detached from {} (its last tunnel; uplink released)",
        pins.name
    ))
}

/// Stops the writer and removes the uplink's state once no tunnel is left.
fn detach_uplink(pins: &UplinkPins) -> Result<()> {
    attach::tcx_detach(&pins.uplink_link())?;
    if let Ok(dev) = Iface::by_name(&pins.name) {
        // Removes only a filter in pdscp's own slot, and only if it runs pdscp's program.
        attach::tc_detach(dev.ifindex, Role::Uplink)?;
    }
    pins.remove()
}
