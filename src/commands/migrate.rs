//! Upgrading layout 1 (pdscp 0.1.0: one directory of maps and programs per
//! uplink) to layout 2 in place (docs/state.md, Upgrade in place).
use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, ProgramHandle};

use crate::kernel::hook::{self, tcx_update, Hook};
use crate::kernel::iface;
use crate::maps::{self, stats};
use crate::model::{Mode, Policy, PortMatch, Program, Reflection, TunnelRecord, UplinkRecord};
use crate::state::layout::Layout;
use crate::state::legacy::{self, stat, LegacyUplink};
use crate::state::objects::{self, Objects, Sizes};
use crate::state::registry::Registry;
use crate::state::version;
use crate::testhooks::{crash_point, Step};

/// Layout 1 to 2: create the new objects, record every uplink and tunnel,
/// copy flows and counters, swap writers then readers (moving their link
/// pins), copy the flows the old readers added meanwhile, remove layout 1.
pub(super) fn from_layout1(layout: &Layout, legacy: &[LegacyUplink], here: u32) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut devices = BTreeMap::new();
    for up in legacy {
        let found = up.devices()?;
        if let Some(other) = found.iter().find(|d| d.netns != here) {
            bail!(
                "uplink {} of the pdscp 0.1.0 state under this pin root belongs to another network \
                 namespace (inode {}); upgrade it from there, or detach it with pdscp 0.1.0",
                up.name,
                other.netns
            );
        }
        devices.insert(up.name.clone(), found);
    }
    let objects = match objects::read_stamp(layout)? {
        Some(_) => Objects::open(layout)?,
        None => {
            let size = legacy.iter().map(LegacyUplink::flow_map_size).max().unwrap_or(0);
            let sizes = Sizes {
                flows: if size == 0 { 16384 } else { size },
                reflect: 16384,
            };
            Objects::create(layout, sizes, &version::mine(here))?
        }
    };
    crash_point(Step::UpgradeLoaded);
    let mut registry = Registry::read(&objects)?;
    for up in legacy {
        record_layout1(&objects, &mut registry, up, &devices[&up.name])?;
    }
    for up in legacy {
        copy_flows(&objects, &registry, up)?;
        notes.extend(copy_counters(&objects, &registry, up, &devices[&up.name])?);
    }
    for up in legacy {
        move_writer(layout, &objects, &registry, up)?;
    }
    crash_point(Step::UpgradeWritersMoved);
    for up in legacy {
        move_readers(layout, &objects, &registry, up)?;
    }
    crash_point(Step::UpgradeReadersMoved);
    for up in legacy {
        copy_flows(&objects, &registry, up)?;
        legacy::remove(up)?;
    }
    Ok(notes)
}

/// Records a layout-1 uplink and its tunnels (those with a directory),
/// unless they are recorded already.
fn record_layout1(
    objects: &Objects,
    registry: &mut Registry,
    up: &LegacyUplink,
    devices: &[legacy::LegacyDevice],
) -> Result<()> {
    let Some(dev) = devices.iter().find(|d| d.uplink) else {
        return Ok(()); // A layout-1 uplink without its own record attached nothing.
    };
    let slot = match registry.uplink(&up.name) {
        Some((slot, _)) => slot,
        None => {
            let slot = registry.free_uplink_slot()?;
            let rec = UplinkRecord {
                name: up.name.clone(),
                ifindex: dev.ifindex,
                ethernet: dev.ethernet,
                mode: dev.mode,
                cake: None,
            };
            registry.put_uplink(objects, slot, rec)?;
            slot
        }
    };
    let dirs = up.tunnel_dirs()?;
    for tunnel in devices.iter().filter(|d| !d.uplink && dirs.contains(&d.name)) {
        if registry
            .tunnel(&tunnel.name)
            .is_some_and(|(_, r)| r.links.contains_key(&slot))
        {
            continue;
        }
        let (tslot, mut rec) = match registry.tunnel(&tunnel.name) {
            Some((s, r)) => (s, r.clone()),
            None => (
                registry.free_tunnel_slot()?,
                TunnelRecord {
                    name: tunnel.name.clone(),
                    ifindex: tunnel.ifindex,
                    ethernet: tunnel.ethernet,
                    ports: tunnel.ports.unwrap_or(PortMatch::Any),
                    reader: Some(tunnel.mode),
                    ingress: None,
                    policy: Policy::copy(),
                    reflection: Reflection::default(),
                    links: BTreeMap::new(),
                },
            ),
        };
        let row = registry.free_link_row(&Default::default())?;
        rec.links.insert(slot, row);
        registry.put_tunnel(objects, tslot, rec)?;
    }
    Ok(())
}

/// Copies a layout-1 uplink's flow entries that the new map lacks.
fn copy_flows(objects: &Objects, registry: &Registry, up: &LegacyUplink) -> Result<()> {
    let flows = objects.map("flows");
    let uplink_slot = registry.uplink(&up.name).map(|(s, _)| s);
    // --any-port entries carry no port: they belong to this uplink's
    // --any-port tunnel, if it had exactly one.
    let any_port: Vec<usize> = registry
        .tunnels()
        .filter(|(_, r)| r.ports == PortMatch::Any && uplink_slot.is_some_and(|u| r.links.contains_key(&u)))
        .map(|(s, _)| s)
        .collect();
    for (hash, port, mark) in up.flows()? {
        let tunnel = match port {
            PortMatch::Port(p) => registry.port_owner(p).map(|(s, _)| s),
            PortMatch::Any => (any_port.len() == 1).then(|| any_port[0]),
        };
        let Some(tunnel) = tunnel else { continue };
        let key = maps::encode_flow_key(hash, port);
        match flows.update(&key, &maps::encode_flow_mark(mark, tunnel), MapFlags::NO_EXIST) {
            Err(e) if e.kind() != libbpf_rs::ErrorKind::AlreadyExists => {
                return Err(e).context("copying flow entries")
            }
            _ => {}
        }
    }
    Ok(())
}

/// Carries a layout-1 uplink's counters over where they belong to one
/// tunnel; says so where they cannot. Done once: the old `stats` pin goes
/// right after (the old programs keep their map until they are swapped).
fn copy_counters(
    objects: &Objects,
    registry: &Registry,
    up: &LegacyUplink,
    devices: &[legacy::LegacyDevice],
) -> Result<Vec<String>> {
    if !up.pin("stats").exists() {
        return Ok(Vec::new());
    }
    let old = up.counters()?;
    let mut notes = Vec::new();
    let uplink_slot = registry.uplink(&up.name).map(|(s, _)| s);
    let tunnels: Vec<(usize, &TunnelRecord)> = match uplink_slot {
        Some(u) => registry
            .tunnels_on(u)
            .filter(|(_, r)| devices.iter().any(|d| d.name == r.name))
            .collect(),
        None => Vec::new(),
    };
    if let Some(u) = uplink_slot {
        let mut row = vec![0u64; std::mem::size_of::<crate::skel::types::uplink_stats>() / 8];
        row[stats::NOT_TUNNEL] = old[stat::WRITER_NOT_TUNNEL];
        write_row(objects, "uplink_stats", u as u32, &row)?;
    }
    match (tunnels.as_slice(), uplink_slot) {
        ([(tslot, rec)], Some(u)) => {
            let mut link = vec![0u64; std::mem::size_of::<crate::skel::types::link_stats>() / 8];
            link[stats::MARKED..stats::MARKED + 64]
                .copy_from_slice(&old[stat::WRITER_MARKED..stat::WRITER_MARKED + 64]);
            link[stats::MISSED] = old[stat::WRITER_MISS];
            if let Some(row) = rec.links.get(&u) {
                write_row(objects, "link_stats", u32::from(*row), &link)?;
            }
            let mut trow = vec![0u64; std::mem::size_of::<crate::skel::types::tunnel_stats>() / 8];
            trow[stats::SEEN..stats::SEEN + 64]
                .copy_from_slice(&old[stat::READER_SEEN..stat::READER_SEEN + 64]);
            trow[stats::INSERTS] = old[stat::READER_INSERT];
            trow[stats::UPDATES] = old[stat::READER_UPDATE];
            trow[stats::NOT_IP] = old[stat::READER_NOT_IP];
            write_row(objects, "tunnel_stats", *tslot as u32, &trow)?;
        }
        (many, _) if many.len() > 1 => notes.push(format!(
            "{}: its counters belong to {} tunnels together and cannot be split; they start again at 0",
            up.name,
            many.len()
        )),
        _ => {}
    }
    crate::kernel::bpf::remove_pin(&up.pin("stats"))?;
    Ok(notes)
}

/// Writes one per-CPU row: the totals on the first CPU, zeros elsewhere.
fn write_row(objects: &Objects, map: &str, key: u32, totals: &[u64]) -> Result<()> {
    let handle = objects.map(map);
    let cpus = libbpf_rs::num_possible_cpus()?;
    let first: Vec<u8> = totals.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let mut values = vec![vec![0u8; first.len()]; cpus];
    values[0] = first;
    handle
        .update_percpu(&key.to_ne_bytes(), &values, MapFlags::ANY)
        .with_context(|| format!("carrying counters into {map}[{key}]"))
}

/// Swaps a layout-1 writer to the new program where it runs, and moves its
/// TCX link pin to the new place.
fn move_writer(layout: &Layout, objects: &Objects, registry: &Registry, up: &LegacyUplink) -> Result<()> {
    let Some((_, rec)) = registry.uplink(&up.name) else {
        return Ok(());
    };
    let new = objects.program(Program::Writer);
    layout.create_uplink_dir(&rec.name)?;
    move_hook(
        &up.writer_link(),
        &layout.writer_link(&rec.name),
        layout.hook(Program::Writer, &rec.name, rec.ifindex),
        rec.mode,
        up.program_id("writer"),
        new,
        &rec.name,
        rec.ifindex,
    )
}

/// The same for every reader of a layout-1 uplink's tunnels.
fn move_readers(layout: &Layout, objects: &Objects, registry: &Registry, up: &LegacyUplink) -> Result<()> {
    let new = objects.program(Program::Reader);
    for name in up.tunnel_dirs()? {
        let Some((_, rec)) = registry.tunnel(&name) else {
            continue;
        };
        let Some(mode) = rec.reader else { continue };
        layout.create_tunnel_dir(&name)?;
        move_hook(
            &up.reader_link(&name),
            &layout.reader_link(&name),
            layout.hook(Program::Reader, &name, rec.ifindex),
            mode,
            up.program_id("reader"),
            new,
            &name,
            rec.ifindex,
        )?;
    }
    Ok(())
}

/// TCX: update the old pinned link to `new` and rename its pin into place
/// (a link pinned at the new place already was moved before). tc: replace
/// the filter in pdscp's slot, which is the same in both layouts.
#[allow(clippy::too_many_arguments)]
fn move_hook(
    old_pin: &std::path::Path,
    new_pin: &std::path::Path,
    hook: Hook,
    mode: Mode,
    old_prog: Option<u32>,
    new: &ProgramHandle,
    device: &str,
    ifindex: u32,
) -> Result<()> {
    match mode {
        Mode::Tcx => {
            if old_pin.exists() {
                tcx_update(old_pin, new).with_context(|| format!("moving {device} to the new programs"))?;
                std::fs::rename(old_pin, new_pin).with_context(|| format!("moving {}", old_pin.display()))?;
            }
            Ok(())
        }
        Mode::Tc => {
            if !iface::is_present(device, ifindex) {
                return Ok(());
            }
            let running = hook.tc_prog_id()?;
            if running.is_some() && (running == old_prog || running.is_some_and(hook::is_pdscp_program)) {
                hook.ensure(Mode::Tc, new)
                    .with_context(|| format!("moving {device} to the new programs"))?;
            }
            Ok(())
        }
    }
}
