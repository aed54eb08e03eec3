//! The objects every uplink and tunnel of a pin root share: the maps in
//! `maps/`, the programs in `progs/`, and the stamp that says which pdscp
//! made them (docs/state.md).
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};

use super::layout::{self, Layout};
use crate::kernel::bpf::{pin_fd, remove_pin, with_libbpf_message};
use crate::maps::{self, Stamp, MAPS};
use crate::model::Program;
use crate::skel::PdscpSkelBuilder;
use crate::testhooks::{crash_point, Step};

/// pdscp's programs: their name in bpf/pdscp.bpf.c and their pin.
pub const PROGRAMS: [(Program, &str, &str); 3] = [
    (Program::Reader, "pdscp_reader", "reader"),
    (Program::Writer, "pdscp_writer", "writer"),
    (Program::Ingress, "pdscp_ingress", "ingress"),
];

/// Sizes chosen when the objects are created.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub flows: u32,
    pub reflect: u32,
}

/// The shared maps and programs, opened from their pins.
pub struct Objects {
    maps: Vec<(&'static str, MapHandle)>,
    programs: Vec<(Program, ProgramHandle)>,
}

impl Objects {
    /// Opens every pinned map and program; an error if any is missing.
    pub fn open(layout: &Layout) -> Result<Objects> {
        let mut maps = Vec::new();
        for name in MAPS {
            let pin = if name == "stamp" {
                layout.stamp()
            } else {
                layout.map(name)
            };
            let map = MapHandle::from_pinned_path(&pin)
                .with_context(|| format!("opening pinned map {}", pin.display()))?;
            maps.push((name, map));
        }
        let mut programs = Vec::new();
        for (program, _, pin) in PROGRAMS {
            let pin = layout.prog(pin);
            let handle = ProgramHandle::from_pinned_path(&pin)
                .with_context(|| format!("opening pinned program {}", pin.display()))?;
            programs.push((program, handle));
        }
        Ok(Objects { maps, programs })
    }

    /// A shared map by name (one of `maps::MAPS`).
    pub fn map(&self, name: &str) -> &MapHandle {
        self.maps
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m)
            .unwrap_or_else(|| panic!("no map {name} in maps::MAPS"))
    }

    pub fn program(&self, program: Program) -> &ProgramHandle {
        self.programs
            .iter()
            .find(|(p, _)| *p == program)
            .map(|(_, h)| h)
            .expect("every program is opened")
    }

    /// Loads the BPF object and pins its maps, then its programs, then the
    /// stamp, last: objects without a stamp are an interrupted creation.
    pub fn create(layout: &Layout, sizes: Sizes, stamp: &Stamp) -> Result<Objects> {
        remove_unstamped(layout)?;
        for dir in [layout.maps_dir(), layout.progs_dir()] {
            layout::create_dir(&dir)?;
        }
        let mut object = MaybeUninit::uninit();
        let mut open = open_object(&mut object)?;
        for mut map in open.open_object_mut().maps_mut() {
            match map.name().to_str() {
                Some("flows") => map.set_max_entries(sizes.flows)?,
                Some("reflect") => map.set_max_entries(sizes.reflect)?,
                _ => {}
            }
        }
        let skel = open
            .load()
            .map_err(with_libbpf_message)
            .context("loading the BPF programs")?;
        crash_point(Step::Loaded);
        for map in skel.object().maps() {
            let name = known_map(&map.name().to_string_lossy())?;
            if name != "stamp" {
                pin_fd(map.as_fd(), &layout.map(name))?;
            }
        }
        crash_point(Step::MapsPinned);
        pin_programs(&skel, layout, "")?;
        let stamp_map = skel
            .object()
            .maps()
            .find(|m| m.name() == "stamp")
            .context("the BPF object has no stamp map")?;
        stamp_map
            .update(&0u32.to_ne_bytes(), &maps::encode_stamp(stamp), MapFlags::ANY)
            .context("writing the stamp")?;
        pin_fd(stamp_map.as_fd(), &layout.stamp())?;
        Objects::open(layout)
    }

    /// Loads the BPF object again with every pinned map reused, and pins
    /// its programs beside the running ones as `progs/<name>:next` (an
    /// upgrade of the programs alone). Returns the new programs.
    pub fn load_next_programs(&self, layout: &Layout) -> Result<Vec<(Program, ProgramHandle)>> {
        let mut object = MaybeUninit::uninit();
        let mut open = open_object(&mut object)?;
        for mut map in open.open_object_mut().maps_mut() {
            let name = known_map(&map.name().to_string_lossy())?;
            map.reuse_fd(self.map(name).as_fd())
                .with_context(|| format!("reusing pinned map {name} (a map of another layout?)"))?;
        }
        let skel = open
            .load()
            .map_err(with_libbpf_message)
            .context("loading the BPF programs")?;
        pin_programs(&skel, layout, NEXT)?;
        PROGRAMS
            .iter()
            .map(|(program, _, pin)| {
                let path = layout.prog(&format!("{pin}{NEXT}"));
                Ok((*program, ProgramHandle::from_pinned_path(&path)?))
            })
            .collect()
    }

    /// Writes the stamp.
    pub fn write_stamp(&self, stamp: &Stamp) -> Result<()> {
        self.map("stamp")
            .update(&0u32.to_ne_bytes(), &maps::encode_stamp(stamp), MapFlags::ANY)
            .context("writing the stamp")
    }
}

/// Suffix of programs pinned beside the running ones during an upgrade.
pub const NEXT: &str = ":next";

/// The stamp, if the pin root has one.
pub fn read_stamp(layout: &Layout) -> Result<Option<Stamp>> {
    if !layout.stamp().exists() {
        return Ok(None);
    }
    let map = MapHandle::from_pinned_path(layout.stamp()).context("opening the stamp")?;
    let bytes = map
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .context("reading the stamp")?
        .unwrap_or_default();
    match maps::decode_stamp(&bytes) {
        Some(stamp) => Ok(Some(stamp)),
        None => bail!("{} is not a pdscp stamp", layout.stamp().display()),
    }
}

/// Replaces each running program's pin with the one pinned as `:next`.
pub fn promote_next_programs(layout: &Layout) -> Result<()> {
    for (_, _, pin) in PROGRAMS {
        let next = layout.prog(&format!("{pin}{NEXT}"));
        if next.exists() {
            std::fs::rename(&next, layout.prog(pin))
                .with_context(|| format!("renaming {}", next.display()))?;
        }
    }
    Ok(())
}

/// Unpins every shared object and removes the layout's directories once
/// they are empty. Call when nothing is attached any more.
pub fn remove(layout: &Layout) -> Result<()> {
    remove_pin(&layout.stamp())?;
    remove_objects(layout)?;
    for dir in [layout.uplinks_dir(), layout.tunnels_dir()] {
        layout::remove_dir(&dir)?;
    }
    Ok(())
}

/// Objects without a stamp: left by a creation that was cut short, used by
/// no hook (hooks are made after the stamp). Removed before creating anew.
fn remove_unstamped(layout: &Layout) -> Result<()> {
    if layout.stamp().exists() {
        bail!("{}: the shared objects exist already", layout.root.display());
    }
    remove_objects(layout)
}

fn remove_objects(layout: &Layout) -> Result<()> {
    let programs = PROGRAMS
        .iter()
        .flat_map(|(_, _, pin)| [layout.prog(pin), layout.prog(&format!("{pin}{NEXT}"))]);
    let pins: Vec<PathBuf> = programs.chain(MAPS.iter().map(|m| layout.map(m))).collect();
    for pin in pins {
        remove_pin(&pin)?;
        crash_point(Step::Unpinning);
    }
    for dir in [layout.maps_dir(), layout.progs_dir()] {
        layout::remove_dir(&dir)?;
    }
    Ok(())
}

/// The embedded BPF object, opened (not yet loaded).
fn open_object(object: &mut MaybeUninit<libbpf_rs::OpenObject>) -> Result<crate::skel::OpenPdscpSkel<'_>> {
    PdscpSkelBuilder::default()
        .open(object)
        .map_err(with_libbpf_message)
        .context("opening the BPF object")
}

fn known_map(name: &str) -> Result<&'static str> {
    match MAPS.iter().find(|m| **m == name) {
        Some(m) => Ok(m),
        None => bail!("the BPF object has a map {name:?} that pdscp does not know"),
    }
}

fn pin_programs(skel: &crate::skel::PdscpSkel<'_>, layout: &Layout, suffix: &str) -> Result<()> {
    for prog in skel.object().progs() {
        let name = prog.name().to_string_lossy().into_owned();
        let Some((_, _, pin)) = PROGRAMS.iter().find(|(_, n, _)| *n == name) else {
            bail!("the BPF object has a program {name:?} that pdscp does not know");
        };
        let path = layout.prog(&format!("{pin}{suffix}"));
        remove_pin(&path)?;
        pin_fd(prog.as_fd(), &path)?;
    }
    Ok(())
}
