//! `pdscp attach`: start marking a tunnel's packets on every uplink it may
//! leave by, with its DSCP policy and reflection.
use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use super::steps::{self, Current, UplinkDevice};
use super::{reconcile, rules};
use crate::kernel::hook;
use crate::kernel::iface::{self, Iface};
use crate::kernel::{qdisc, route, wireguard};
use crate::model::{CakeTins, Mode, Policy, PortMatch, Program, Reflection, TunnelRecord};
use crate::policy;
use crate::state::objects::Sizes;
use crate::state::pin_root::PinRoot;
use crate::testhooks::{crash_point, Step};

/// What the command line asked for.
#[derive(Clone, Debug)]
pub struct AttachRequest {
    pub tunnel: String,
    /// Empty: the uplinks the routes to the tunnel's peers use.
    pub uplinks: Vec<String>,
    /// None: WireGuard's listen port.
    pub ports: Option<PortMatch>,
    /// None: the mode a device runs in already, else the best the kernel has.
    pub mode: Option<Mode>,
    pub sizes: Sizes,
    pub policy: Policy,
    pub reflection: Reflection,
}

/// What an attach is about, found from the devices before any state is
/// touched, so refused commands change nothing.
pub struct AttachPlan {
    request: AttachRequest,
    tunnel: Iface,
    tunnel_ethernet: bool,
    ports: PortMatch,
    uplinks: Vec<UplinkDevice>,
}

/// Looks up the devices: the tunnel, its outer port (WireGuard's listen
/// port unless given), its uplinks (the routes to its peers unless given)
/// and, for `--priority-only`, the CAKE qdisc on each.
pub fn plan(request: AttachRequest) -> Result<AttachPlan> {
    let tunnel = steps::device(&request.tunnel)?;
    let fixed = request.policy.fixed.is_some();
    if fixed && request.reflection.is_on() {
        bail!(
            "{}: --fixed gives every packet one mark; it cannot be combined with --reflect",
            tunnel.name
        );
    }
    if fixed && request.ports == Some(PortMatch::Any) {
        bail!(
            "{}: --fixed needs the tunnel's own port (--port N), not --any-port",
            tunnel.name
        );
    }
    let ports = tunnel_ports(&tunnel, request.ports, fixed)?;
    let mut names = request.uplinks.clone();
    if names.is_empty() {
        names = route::discover_uplinks(&tunnel)?;
    }
    names.sort();
    names.dedup();
    steps::check_distinct(&tunnel.name, &names)?;
    let mut uplinks = Vec::new();
    for name in &names {
        let dev = steps::device(name)?;
        let cake = match request.policy.priority_only {
            true => Some(cake_tins(&dev)?),
            false => None,
        };
        uplinks.push(UplinkDevice {
            ethernet: dev.has_ethernet_header()?,
            dev,
            cake,
        });
    }
    Ok(AttachPlan {
        tunnel_ethernet: tunnel.has_ethernet_header()?,
        tunnel,
        ports,
        uplinks,
        request,
    })
}

/// Carries out a plan; returns what it did, one line each. A refused or
/// failed attach leaves no uplink without tunnels, nor shared objects that
/// serve nothing.
pub fn attach(root: &PinRoot, plan: &AttachPlan) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = steps::create_current(root, plan.request.sizes, &mut out)?;
    let result = attach_into(&mut cur, plan, &mut out);
    if result.is_err() {
        let _ = steps::release_unused_uplinks(&mut cur);
        let _ = steps::remove_if_unused(cur);
    }
    result.map(|()| out)
}

fn attach_into(cur: &mut Current, plan: &AttachPlan, out: &mut Vec<String>) -> Result<()> {
    let (request, tunnel) = (&plan.request, &plan.tunnel);
    out.extend(reconcile::repair(cur)?);

    let mut slots = Vec::new();
    for up in &plan.uplinks {
        slots.push(steps::attach_writer(cur, up, request.mode)?);
    }
    crash_point(Step::UplinkAttached);

    let existing = cur.registry.tunnel(&tunnel.name).map(|(s, r)| (s, r.clone()));
    let reader_program = cur.objects.program(Program::Reader).id();
    let live_mode = match &existing {
        Some((_, rec)) if rec.ifindex == tunnel.ifindex => match rec.reader {
            Some(m)
                if cur
                    .layout
                    .hook(Program::Reader, &rec.name, rec.ifindex)
                    .runs(m, reader_program)? =>
            {
                Some(m)
            }
            _ => None,
        },
        _ => None,
    };
    // A new tunnel takes its first uplink's mode unless told otherwise; a
    // tunnel keeps its own (its uplinks may differ).
    let mode = match (request.mode, live_mode, slots.first()) {
        (None, None, Some((_, first))) => *first,
        (asked, live, _) => rules::choose_mode(
            asked,
            live,
            live.is_some() || hook::tcx_available(),
            &format!("tunnel {}", tunnel.name),
        )?,
    };

    check_nesting(cur, &tunnel.name, mode, &plan.uplinks)?;

    let slot = match &existing {
        Some((slot, _)) => *slot,
        None => cur.registry.free_tunnel_slot()?,
    };
    let mut links = existing
        .as_ref()
        .map(|(_, r)| r.links.clone())
        .unwrap_or_default();
    let mut taken = BTreeSet::new();
    for (uplink_slot, _) in &slots {
        if !links.contains_key(uplink_slot) {
            let row = cur.registry.free_link_row(&taken)?;
            taken.insert(row);
            links.insert(*uplink_slot, row);
        }
    }
    let fixed = request.policy.fixed.is_some();
    let rec = TunnelRecord {
        name: tunnel.name.clone(),
        ifindex: tunnel.ifindex,
        ethernet: plan.tunnel_ethernet,
        ports: plan.ports,
        reader: (!fixed).then_some(mode),
        ingress: request.reflection.is_on().then_some(mode),
        policy: request.policy.clone(),
        reflection: request.reflection,
        links,
    };
    let what = describe(cur, &rec, mode);
    if existing.as_ref().map(|(_, r)| r) == Some(&rec) && hooks_run(cur, &rec)? {
        out.push(format!("{}: already attached {what}", tunnel.name));
        return Ok(());
    }
    rules::claim_port(&cur.registry, &tunnel.name, plan.ports, iface::is_present)?;
    cur.registry.put_tunnel(&cur.objects, slot, rec.clone())?;
    crash_point(Step::TunnelRecorded);
    if let Some((_, old)) = &existing {
        drop_hooks_no_longer_wanted(cur, slot, old, &rec)?;
    }
    cur.layout.create_tunnel_dir(&rec.name)?;
    crash_point(Step::TunnelDirCreated);
    for (program, wanted) in [(Program::Reader, rec.reader), (Program::Ingress, rec.ingress)] {
        if let Some(mode) = wanted {
            cur.layout
                .hook(program, &rec.name, rec.ifindex)
                .ensure(mode, cur.objects.program(program))
                .with_context(|| format!("attaching to {}", rec.name))?;
        }
    }
    out.push(format!("{}: attached {what}", tunnel.name));
    Ok(())
}

/// Whether the tunnel's reader and ingress program run as its record says.
fn hooks_run(cur: &Current, rec: &TunnelRecord) -> Result<bool> {
    if !cur.layout.tunnel_dir(&rec.name).is_dir() {
        return Ok(false);
    }
    for (program, wanted) in [(Program::Reader, rec.reader), (Program::Ingress, rec.ingress)] {
        if let Some(mode) = wanted {
            let id = cur.objects.program(program).id();
            if !cur.layout.hook(program, &rec.name, rec.ifindex).runs(mode, id)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Attaching again with less (no reflection, a fixed mark) removes what the
/// tunnel no longer needs: the ingress program and its reflection entries,
/// the reader.
fn drop_hooks_no_longer_wanted(
    cur: &mut Current,
    slot: usize,
    old: &TunnelRecord,
    new: &TunnelRecord,
) -> Result<()> {
    let present = iface::is_present(&old.name, old.ifindex);
    if old.ingress.is_some() && new.ingress.is_none() {
        cur.layout
            .hook(Program::Ingress, &old.name, old.ifindex)
            .remove(present)?;
    }
    if old.ingress.is_some() && old.reflection != new.reflection {
        steps::clear_reflections(cur, slot)?;
    }
    if old.reader.is_some() && new.reader.is_none() {
        cur.layout
            .hook(Program::Reader, &old.name, old.ifindex)
            .remove(present)?;
    }
    Ok(())
}

/// A device that is both a tunnel and an uplink (WireGuard inside
/// WireGuard) must run its writer before its reader (`rules::check_mode_order`).
fn check_nesting(cur: &Current, tunnel: &str, reader_mode: Mode, uplinks: &[UplinkDevice]) -> Result<()> {
    if let Some((_, inner)) = cur.registry.uplink(tunnel) {
        rules::check_mode_order(tunnel, reader_mode, inner.mode)?;
    }
    for up in uplinks {
        let name = &up.dev.name;
        if let (Some((_, outer)), Some((_, rec))) = (cur.registry.tunnel(name), cur.registry.uplink(name)) {
            if let Some(reader) = outer.reader {
                rules::check_mode_order(name, reader, rec.mode)?;
            }
        }
    }
    Ok(())
}

/// How the tunnel's outer packets are recognised: as asked, or WireGuard's
/// listen port. Refuses devices whose packets cannot keep their flow hash,
/// unless they get a fixed mark.
fn tunnel_ports(tunnel: &Iface, asked: Option<PortMatch>, fixed: bool) -> Result<PortMatch> {
    let tun = iface::driver(&tunnel.name).as_deref() == Some("tun");
    if tun && !fixed {
        bail!(
            "{} is a TUN device (userspace WireGuard such as wireguard-go or boringtun?): its packets \
             leave through a UDP socket that keeps no flow hash, so pdscp cannot copy their marks; \
             give them one mark with --fixed DSCP --port N, or use the kernel's WireGuard",
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

/// The CAKE tins of an uplink, for `--priority-only`.
fn cake_tins(dev: &Iface) -> Result<CakeTins> {
    let Some(cake) = qdisc::root_cake(dev.ifindex)? else {
        bail!(
            "uplink {} has no CAKE root qdisc: --priority-only steers CAKE's tins (add one, e.g. \
             `tc qdisc replace dev {} root cake diffserv4`, then attach again)",
            dev.name,
            dev.name
        );
    };
    let tin_of = policy::cake_tins(cake.diffserv).with_context(|| format!("uplink {}", dev.name))?;
    Ok(CakeTins {
        priority_major: u32::from(cake.major) << 16,
        tin_of,
    })
}

/// "to eth0, wwan0 (mode tcx, port 51820)".
fn describe(cur: &Current, rec: &TunnelRecord, mode: Mode) -> String {
    let uplinks = cur.registry.uplink_names(rec).join(", ");
    match rec.ports {
        PortMatch::Port(p) => format!("to {uplinks} (mode {}, port {p})", mode.name()),
        PortMatch::Any => format!("to {uplinks} (mode {}, any port)", mode.name()),
    }
}
