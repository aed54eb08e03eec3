//! The idempotent steps that attach, detach, repair and upgrade are made of.
//! Each checks what exists first, so running it again is harmless, and each
//! leaves a state the next command can finish or undo (docs/state.md).
use anyhow::{bail, Context, Result};

use super::{rules, upgrade};
use crate::kernel::iface::{self, Iface};
use crate::kernel::{features, hook};
use crate::maps;
use crate::model::{CakeTins, Mode, Program, UplinkRecord};
use crate::state::layout::Layout;
use crate::state::objects::{self, Objects, Sizes};
use crate::state::pin_root::PinRoot;
use crate::state::registry::Registry;
use crate::state::version;
use crate::testhooks::{crash_point, Step};

/// The pin root's shared state, as a command that changes it works on it.
pub struct Current {
    pub layout: Layout,
    pub objects: Objects,
    pub registry: Registry,
}

/// Opens the state for a command that changes it: an older pdscp's state is
/// upgraded first (said in `out`), a newer one's or another namespace's is
/// refused. None when there is no state.
pub fn open_current(root: &PinRoot, out: &mut Vec<String>) -> Result<Option<Current>> {
    out.extend(upgrade::upgrade(root)?);
    let layout = root.layout();
    let Some(stamp) = objects::read_stamp(&layout)? else {
        // Objects without a stamp are what a creation cut short left; no
        // hook uses them (hooks come after the stamp).
        objects::remove(&layout)?;
        return Ok(None);
    };

    rules::check_netns(&root.path, stamp.netns, iface::current_netns()?)?;
    let objects = Objects::open(&layout)?;
    let registry = Registry::read(&objects)?;
    Ok(Some(Current {
        layout,
        objects,
        registry,
    }))
}

/// `open_current`, creating the shared objects if there are none (attach).
pub fn create_current(root: &PinRoot, sizes: Sizes, out: &mut Vec<String>) -> Result<Current> {
    if let Some(current) = open_current(root, out)? {
        return Ok(current);
    }
    let layout = root.layout();
    features::check()?;
    let objects = match Objects::create(&layout, sizes, &version::mine(iface::current_netns()?)) {
        Ok(objects) => objects,
        Err(e) => {
            // A first attach that could not load (a kernel without what the
            // programs need, an object of the wrong byte order) leaves nothing.
            let _ = objects::remove(&layout);
            return Err(e);
        }
    };
    crash_point(Step::Pinned);
    Ok(Current {
        layout,
        objects,
        registry: Registry::default(),
    })
}

/// An uplink as attach found it.
pub struct UplinkDevice {
    pub dev: Iface,
    pub ethernet: bool,
    pub cake: Option<CakeTins>,
}

/// Records an uplink and makes sure the writer runs on it, in the mode it
/// runs in already, else `asked`, else the best the kernel has. Returns its
/// slot and mode.
pub fn attach_writer(cur: &mut Current, up: &UplinkDevice, asked: Option<Mode>) -> Result<(usize, Mode)> {
    let name = up.dev.name.as_str();
    let recorded = cur.registry.uplink(name).map(|(s, r)| (s, r.clone()));
    let writer = cur.objects.program(Program::Writer).id();
    let live = match &recorded {
        Some((_, rec)) if rec.ifindex == up.dev.ifindex => cur
            .layout
            .hook(Program::Writer, name, rec.ifindex)
            .runs(rec.mode, writer)?
            .then_some(rec.mode),
        _ => None,
    };
    // Only a new writer needs to know what the kernel offers.
    let tcx_available = live.is_some() || hook::tcx_available();
    let mode = rules::choose_mode(asked, live, tcx_available, &format!("uplink {name}"))?;
    let slot = match &recorded {
        Some((slot, _)) => *slot,
        None => cur.registry.free_uplink_slot()?,
    };
    let rec = UplinkRecord {
        name: name.to_string(),
        ifindex: up.dev.ifindex,
        ethernet: up.ethernet,
        mode,
        cake: up.cake.clone(),
    };
    if recorded.as_ref().map(|(_, r)| r) != Some(&rec) {
        cur.registry.put_uplink(&cur.objects, slot, rec)?;
    }
    cur.layout.create_uplink_dir(name)?;
    cur.layout
        .hook(Program::Writer, name, up.dev.ifindex)
        .ensure(mode, cur.objects.program(Program::Writer))
        .with_context(|| format!("attaching to uplink {name}"))?;
    Ok((slot, mode))
}

/// Detaches a tunnel everywhere: its hooks first (the reader, so the device
/// never runs a reader whose entries no writer matches), then its indexes,
/// reflection entries and record, then its directory.
pub fn release_tunnel(cur: &mut Current, slot: usize) -> Result<()> {
    let Some(rec) = cur
        .registry
        .tunnels()
        .find(|(s, _)| *s == slot)
        .map(|(_, r)| r.clone())
    else {
        return Ok(());
    };
    let present = iface::is_present(&rec.name, rec.ifindex);
    for program in [Program::Ingress, Program::Reader] {
        cur.layout.hook(program, &rec.name, rec.ifindex).remove(present)?;
    }
    crash_point(Step::ReaderDetached);
    if rec.ingress.is_some() {
        clear_reflections(cur, slot)?;
    }
    cur.registry.clear_tunnel(&cur.objects, slot)?;
    crash_point(Step::TunnelForgotten);
    cur.layout.remove_tunnel_dir(&rec.name)?;
    crash_point(Step::TunnelReleased);
    Ok(())
}

/// Stops the writer on an uplink and forgets it. Call once no tunnel uses it.
pub fn release_uplink(cur: &mut Current, slot: usize) -> Result<()> {
    let Some(rec) = cur.registry.uplink_at(slot).cloned() else {
        return Ok(());
    };
    // Removes only a filter in pdscp's own slot, and only if it runs pdscp's program.
    let present = iface::is_present(&rec.name, rec.ifindex);
    cur.layout
        .hook(Program::Writer, &rec.name, rec.ifindex)
        .remove(present)?;
    crash_point(Step::WriterDetached);
    cur.registry.clear_uplink(&cur.objects, slot)?;
    cur.layout.remove_uplink_dir(&rec.name)
}

/// Releases every uplink no tunnel is attached to; returns their names.
pub fn release_unused_uplinks(cur: &mut Current) -> Result<Vec<String>> {
    let unused: Vec<(usize, String)> = cur
        .registry
        .uplinks()
        .filter(|(slot, _)| cur.registry.tunnels_on(*slot).next().is_none())
        .map(|(slot, rec)| (slot, rec.name.clone()))
        .collect();
    for (slot, _) in &unused {
        release_uplink(cur, *slot)?;
    }
    Ok(unused.into_iter().map(|(_, name)| name).collect())
}

/// Removes the shared objects once nothing is attached: the stamp first
/// (objects without a stamp are removed by the next command), then the rest.
pub fn remove_if_unused(cur: Current) -> Result<bool> {
    if !cur.registry.is_empty() {
        return Ok(false);
    }
    let Current { layout, objects, .. } = cur;
    drop(objects);
    objects::remove(&layout)?;
    Ok(true)
}

/// Deletes a tunnel's reflection entries.
pub fn clear_reflections(cur: &Current, slot: usize) -> Result<()> {
    use libbpf_rs::MapCore;
    let map = cur.objects.map("reflect");
    let doomed: Vec<Vec<u8>> = map
        .keys()
        .filter(|k| maps::reflect_tunnel(k) == Some(slot))
        .collect();
    for key in doomed {
        match map.delete(&key) {
            Err(e) if e.kind() != libbpf_rs::ErrorKind::NotFound => {
                return Err(e).context("deleting reflection entries")
            }
            _ => {}
        }
    }
    Ok(())
}

/// The device of an attach request's tunnel or uplink, refusing names it
/// cannot have.
pub fn device(name: &str) -> Result<Iface> {
    iface::validate_name(name)?;
    Iface::by_name(name)
}

/// Refuses an attach whose tunnel is one of its own uplinks.
pub fn check_distinct(tunnel: &str, uplinks: &[String]) -> Result<()> {
    if uplinks.iter().any(|u| u == tunnel) {
        bail!("{tunnel}: its packets leave by itself; pass --uplink");
    }
    Ok(())
}
