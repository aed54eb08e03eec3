//! attach and detach: each step is idempotent, so a repeated or interrupted
//! command converges on the asked-for state. Runs under the pin root's lock.
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use libbpf_rs::ProgramHandle;

use crate::attach::{self, Mode, TcxError};
use crate::bpffs::PinRoot;
use crate::cli::{ModeArg, PortMatch};
use crate::crash::crash_point;
use crate::iface::{self, Iface};
use crate::pins::{IfaceCfg, Role, Uplink, UplinkPins};
use crate::{uplink, wireguard};

/// What an attach is about, found from the devices before any state is
/// touched, so refused commands change nothing.
pub struct AttachPlan {
    tunnel: Iface,
    tunnel_ethernet: bool,
    uplink: Iface,
    uplink_ethernet: bool,
    ports: PortMatch,
}

pub fn plan_attach(
    tunnel_name: &str,
    uplink_name: Option<&str>,
    ports: Option<PortMatch>,
) -> Result<AttachPlan> {
    let tunnel = Iface::by_name(tunnel_name)?;
    let ports = tunnel_ports(&tunnel, ports)?;
    let uplink_name = match uplink_name {
        Some(name) => name.to_string(),
        None => uplink::discover(&tunnel)?,
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

pub fn attach(root: &PinRoot, plan: &AttachPlan, mode_arg: ModeArg, map_size: u32) -> Result<String> {
    let (tunnel, uplink_dev, ports) = (&plan.tunnel, &plan.uplink, plan.ports);
    let (tunnel_name, uplink_name) = (tunnel.name.as_str(), uplink_dev.name.as_str());
    let (tunnel_ethernet, uplink_ethernet) = (plan.tunnel_ethernet, plan.uplink_ethernet);
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
    let pins = root.uplink(uplink_name);
    reconcile(&pins)?;
    let (uplink, reloaded) = pins.ensure(map_size)?;
    crash_point("attach:pinned");
    uplink.check_netns(uplink_name, netns)?;
    let mode = attach_uplink(&pins, &uplink, uplink_dev, uplink_ethernet, mode_arg, netns)?;
    crash_point("attach:uplink-attached");
    if let Err(e) = check_mode_order(root, tunnel_name, uplink_name, mode) {
        reconcile(&pins)?; // releases the uplink again if this was its first tunnel
        return Err(e);
    }
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
    if let Some((old_ifindex, _)) = &recorded {
        // Re-attach with other settings, or the device was recreated.
        forget_tunnel(&uplink, *old_ifindex)?;
    }
    claim_port(&uplink, tunnel_name, tunnel.ifindex, ports)?;
    uplink.set_iface(tunnel.ifindex, &cfg)?;
    uplink.sync_ports()?;
    crash_point("attach:tunnel-recorded");
    pins.create_tunnel_dir(tunnel_name)?;
    crash_point("attach:tunnel-dir-created");
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

/// A device that is both a tunnel (its reader) and an uplink (its writer,
/// for a tunnel inside it) needs the writer to run first. TCX runs before
/// tc, so a reader in tcx mode and a writer in tc mode on one device would
/// read the DSCP before it is written: refuse that mix.
fn check_mode_order(root: &PinRoot, tunnel: &str, uplink: &str, mode: Mode) -> Result<()> {
    let conflict = |device: &str, reader_mode: Mode| {
        anyhow::anyhow!(
            "{device} would run pdscp's reader in {} mode and its writer in {} mode, so the reader \
             would run first and miss the mark; attach both with the same --mode",
            reader_mode.name(),
            if reader_mode == Mode::Tcx { "tc" } else { "tcx" }
        )
    };
    if mode == Mode::Tcx {
        // The tunnel device is itself an uplink whose writer runs in tc mode?
        let inner = root.uplink(tunnel);
        if inner.dir.exists() {
            if let Ok(u) = inner.open() {
                if u.uplink_entry()?.is_some_and(|(_, c)| c.mode == Mode::Tc) {
                    return Err(conflict(tunnel, Mode::Tcx));
                }
            }
        }
    } else {
        // The uplink device is itself a tunnel whose reader runs in tcx mode?
        for outer in root.uplinks()? {
            if outer.name != uplink && outer.has_tunnel(uplink) {
                if let Ok(u) = outer.open() {
                    if u.tunnel_by_name(uplink)?
                        .is_some_and(|(_, c)| c.mode == Mode::Tcx)
                    {
                        return Err(conflict(uplink, Mode::Tcx));
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

/// The kernel has no TCX: a typed error, so auto mode can fall back to tc.
#[derive(Debug)]
struct NoTcx;

impl std::fmt::Display for NoTcx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this kernel has no TCX (needs Linux 6.6+); use --mode tc or --mode auto")
    }
}

impl std::error::Error for NoTcx {}

fn is_tcx_unsupported(e: &anyhow::Error) -> bool {
    e.downcast_ref::<NoTcx>().is_some()
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
                Err(TcxError::Unsupported) => Err(NoTcx.into()),
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
    let Some((owner, cfg)) = uplink.port_owner(port)? else {
        return Ok(());
    };
    if owner != ifindex && iface::is_present(&cfg.name, owner) {
        bail!(
            "{tunnel}: outer port {port} is already used by tunnel {} on this uplink",
            cfg.name
        );
    }
    Ok(())
}

/// Removes a tunnel's registry entries (the writer stops matching its port).
fn forget_tunnel(uplink: &Uplink, ifindex: u32) -> Result<()> {
    uplink.delete_iface(ifindex)?;
    uplink.sync_ports()
}

pub fn detach(root: &PinRoot, tunnel: &str, only_uplink: Option<&str>) -> Result<String> {
    let candidates = match only_uplink {
        Some(name) => vec![root.uplink(name)],
        None => root.uplinks()?,
    };
    let Some(pins) = candidates.iter().find(|p| p.has_tunnel(tunnel)) else {
        // Not attached; but an attach or detach of it may have been cut
        // short, leaving registry entries or an uplink without tunnels.
        for pins in &candidates {
            reconcile(pins)?;
        }
        return Ok(format!("{tunnel}: not attached"));
    };
    // Broken pins must not block cleaning up what can be cleaned.
    let uplink = pins.open().ok();
    if let Some(u) = &uplink {
        u.check_netns(&pins.name, iface::current_netns()?)?;
    }
    release_tunnel(pins, uplink.as_ref(), tunnel)?;
    crash_point("detach:tunnel-released");
    reconcile(pins)?;
    if pins.dir.exists() {
        Ok(format!("{tunnel}: detached from {}", pins.name))
    } else {
        Ok(format!(
            "{tunnel}: detached from {} (its last tunnel; uplink released)",
            pins.name
        ))
    }
}

/// Stops the reader on a tunnel and forgets it: reader first, so the
/// device never runs a reader whose entries the writer no longer matches.
fn release_tunnel(pins: &UplinkPins, uplink: Option<&Uplink>, tunnel: &str) -> Result<()> {
    let recorded = match uplink {
        Some(u) => u.tunnel_by_name(tunnel)?,
        None => None,
    };
    attach::tcx_detach(&pins.tunnel_link(tunnel))?;
    if let Some((ifindex, _)) = &recorded {
        if iface::is_present(tunnel, *ifindex) {
            attach::tc_detach(*ifindex, Role::Tunnel)?;
        }
    }
    crash_point("detach:reader-detached");
    if let (Some(uplink), Some((ifindex, _))) = (uplink, &recorded) {
        forget_tunnel(uplink, *ifindex)?;
    }
    crash_point("detach:tunnel-forgotten");
    pins.remove_tunnel_dir(tunnel)
}

/// Brings one uplink's state back in line with the kernel, after devices
/// came and went or a pdscp command was interrupted: tunnels whose device is
/// gone or was recreated (new ifindex), or whose reader does not run, are
/// released; registry entries without a tunnel are dropped; the writer is
/// re-attached to a recreated uplink device; an uplink without tunnels is
/// released. Returns what it did, one line each.
pub fn reconcile(pins: &UplinkPins) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if !pins.dir.exists() {
        return Ok(done);
    }
    let uplink = pins.open().ok();
    if let Some(u) = &uplink {
        if u.check_netns(&pins.name, iface::current_netns()?).is_err() {
            return Ok(done); // Another namespace's state: not ours to judge from here.
        }
    }
    // One read of the registry and one device listing, whatever the number of tunnels.
    let recorded = match &uplink {
        Some(u) => u.ifaces()?,
        None => Vec::new(),
    };
    let devices = iface::devices()?;
    for tunnel in pins.tunnel_names()? {
        let entry = recorded
            .iter()
            .find(|(_, c)| c.role == Role::Tunnel && c.name == tunnel);
        let live = match (&uplink, entry) {
            (Some(u), Some((ifindex, cfg))) => {
                devices.get(ifindex) == Some(&tunnel)
                    && is_attached(
                        cfg.mode,
                        Role::Tunnel,
                        &u.reader,
                        *ifindex,
                        &pins.tunnel_link(&tunnel),
                    )?
            }
            _ => false,
        };
        if !live {
            release_tunnel(pins, uplink.as_ref(), &tunnel)?;
            done.push(format!(
                "{tunnel}: released from {} (device gone, recreated or not attached)",
                pins.name
            ));
        }
    }
    if let Some(u) = &uplink {
        let dirs = pins.tunnel_names()?;
        for (ifindex, cfg) in u.ifaces()? {
            if cfg.role == Role::Tunnel && !dirs.contains(&cfg.name) {
                // Left by an attach interrupted before its directory was made.
                if iface::is_present(&cfg.name, ifindex) {
                    attach::tc_detach(ifindex, Role::Tunnel)?;
                }
                forget_tunnel(u, ifindex)?;
            }
        }
    }
    if pins.tunnel_names()?.is_empty() {
        detach_uplink(pins)?;
        done.push(format!("{}: released (no tunnels left)", pins.name));
        return Ok(done);
    }
    if let (Some(u), Ok(dev)) = (&uplink, Iface::by_name(&pins.name)) {
        if let Some((ifindex, cfg)) = u.uplink_entry()? {
            if ifindex != dev.ifindex
                || !is_attached(cfg.mode, Role::Uplink, &u.writer, ifindex, &pins.uplink_link())?
            {
                let mode_arg = match cfg.mode {
                    Mode::Tcx => ModeArg::Tcx,
                    Mode::Tc => ModeArg::Tc,
                };
                attach_uplink(pins, u, &dev, cfg.ethernet, mode_arg, cfg.netns)?;
                done.push(format!("{}: writer re-attached", pins.name));
            }
        }
    }
    Ok(done)
}

/// `pdscp gc`: reconciles every uplink under the pin root.
pub fn gc(root: &PinRoot) -> Result<String> {
    let mut done = Vec::new();
    for pins in root.uplinks()? {
        done.extend(reconcile(&pins).with_context(|| format!("repairing uplink {}", pins.name))?);
    }
    if done.is_empty() {
        done.push("nothing to repair".to_string());
    }
    Ok(done.join("\n"))
}

/// Stops the writer and removes the uplink's state once no tunnel is left.
fn detach_uplink(pins: &UplinkPins) -> Result<()> {
    attach::tcx_detach(&pins.uplink_link())?;
    if let Ok(dev) = Iface::by_name(&pins.name) {
        // Removes only a filter in pdscp's own slot, and only if it runs pdscp's program.
        attach::tc_detach(dev.ifindex, Role::Uplink)?;
    }
    crash_point("detach:writer-detached");
    pins.remove()
}
