//! One uplink's directory in bpffs and the objects pinned in it.
//!
//! ```text
//! <pin-root>/<uplink>/
//!     flows  ifaces  dev_slots        pinned maps shared by both programs
//!     ports  stats
//!     reader  writer                  pinned programs
//!     link                            the writer's TCX link on the uplink (tcx mode)
//!     tunnels/<tunnel>/               one directory per attached tunnel
//!     tunnels/<tunnel>/link           the reader's TCX link on the tunnel (tcx mode)
//! ```
//! Following libxdp, everything is built and pinned first, then attached;
//! the kernel objects behind the pins are the source of truth.
use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapInfo, ProgramHandle};

use crate::kernel::bpf::{pin_fd, prog_map_ids, remove_pin, with_libbpf_message};
use crate::maps::{self, MAPS};
use crate::model::Program;
use crate::skel::PdscpSkelBuilder;
use crate::testhooks::{crash_point, Step};

/// pdscp's programs: their name in bpf/pdscp.bpf.c and their pin.
const PROGRAMS: [(Program, &str, &str); 2] = [
    (Program::Reader, "pdscp_reader", "reader"),
    (Program::Writer, "pdscp_writer", "writer"),
];

/// Paths of one uplink's state. Creating this touches nothing.
pub struct UplinkDir {
    pub name: String,
    pub dir: PathBuf,
}

impl UplinkDir {
    pub fn new(name: &str, dir: PathBuf) -> Self {
        UplinkDir {
            name: name.to_string(),
            dir,
        }
    }

    fn pin(&self, object: &str) -> PathBuf {
        self.dir.join(object)
    }

    pub fn exists(&self) -> bool {
        self.dir.exists()
    }

    /// The writer's TCX link on the uplink.
    pub fn writer_link(&self) -> PathBuf {
        self.dir.join("link")
    }

    fn tunnels_dir(&self) -> PathBuf {
        self.dir.join("tunnels")
    }

    fn tunnel_dir(&self, tunnel: &str) -> PathBuf {
        self.tunnels_dir().join(tunnel)
    }

    /// The reader's TCX link on a tunnel.
    pub fn reader_link(&self, tunnel: &str) -> PathBuf {
        self.tunnel_dir(tunnel).join("link")
    }

    pub fn has_tunnel(&self, tunnel: &str) -> bool {
        self.tunnel_dir(tunnel).is_dir()
    }

    /// Names of the tunnels recorded under this uplink.
    pub fn tunnel_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        match fs::read_dir(self.tunnels_dir()) {
            Ok(entries) => {
                for entry in entries {
                    if let Some(name) = entry?.file_name().to_str() {
                        names.push(name.to_string());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("reading the tunnels directory"),
        }
        names.sort();
        Ok(names)
    }

    /// Opens the pinned maps and programs; an error if any is missing.
    pub fn open(&self) -> Result<Pinned> {
        let map = |name: &str| {
            MapHandle::from_pinned_path(self.pin(name))
                .with_context(|| format!("opening pinned map {}", self.pin(name).display()))
        };
        let prog = |program: Program| {
            let pin = self.pin(program_pin(program));
            ProgramHandle::from_pinned_path(&pin)
                .with_context(|| format!("opening pinned program {}", pin.display()))
        };
        Ok(Pinned {
            flows: map("flows")?,
            ifaces: map("ifaces")?,
            dev_slots: map("dev_slots")?,
            ports: map("ports")?,
            stats: map("stats")?,
            reader: prog(Program::Reader)?,
            writer: prog(Program::Writer)?,
        })
    }

    /// Makes sure the maps and programs are pinned and belong together, and
    /// opens them. Reuses what is pinned (tunnels already attached keep
    /// running on it); loads and pins whatever is missing. Returns whether
    /// the programs were (re)loaded, in which case existing attachments must
    /// be pointed at the new ones.
    pub fn ensure(&self, map_size: u32) -> Result<(Pinned, bool)> {
        let new_uplink = !self.dir.exists();
        let ensured = self.ensure_in_place(map_size);
        if ensured.is_err() && new_uplink {
            // A first attach that could not load (a kernel without what the
            // programs need, an object built for another endianness) leaves
            // no empty uplink behind for status to report.
            let _ = self.remove();
        }
        ensured
    }

    fn ensure_in_place(&self, map_size: u32) -> Result<(Pinned, bool)> {
        for dir in [&self.dir, &self.tunnels_dir()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        if let Ok(pinned) = self.open() {
            if pinned.is_consistent()? {
                return Ok((pinned, false));
            }
        }
        self.load_and_pin(map_size)?;
        let pinned = self.open()?;
        if !pinned.is_consistent()? {
            bail!(
                "{}: pinned programs and maps do not match after loading",
                self.dir.display()
            );
        }
        Ok((pinned, true))
    }

    /// Loads the BPF object, reusing every map that is pinned already (it
    /// holds the flows and the registry), and pins the rest and both programs.
    fn load_and_pin(&self, map_size: u32) -> Result<()> {
        let mut object = MaybeUninit::uninit();
        let mut open = PdscpSkelBuilder::default()
            .open(&mut object)
            .map_err(with_libbpf_message)
            .context("opening the BPF object")?;
        let mut reused = Vec::new();
        for mut map in open.open_object_mut().maps_mut() {
            let name = map.name().to_string_lossy().into_owned();
            if !MAPS.contains(&name.as_str()) {
                bail!("the BPF object has a map {name:?} that pdscp does not know");
            }
            let path = self.pin(&name);
            if path.exists() {
                let pinned = MapHandle::from_pinned_path(&path)
                    .with_context(|| format!("opening pinned map {}", path.display()))?;
                let info = MapInfo::new(pinned.as_fd())?.info;
                if info.key_size != map.key_size() || info.value_size != map.value_size() {
                    bail!(
                        "pinned map {} has another layout (left by another pdscp version?); \
                         detach this uplink's tunnels first",
                        path.display()
                    );
                }
                map.reuse_fd(pinned.as_fd())?;
                reused.push(name);
            } else if name == "flows" {
                map.set_max_entries(map_size)?;
            }
        }
        let skel = open
            .load()
            .map_err(with_libbpf_message)
            .context("loading the BPF programs")?;
        crash_point(Step::Loaded);
        for map in skel.object().maps() {
            let name = map.name().to_string_lossy().into_owned();
            if !reused.contains(&name) {
                pin_fd(map.as_fd(), &self.pin(&name))?;
            }
        }
        crash_point(Step::MapsPinned);
        for prog in skel.object().progs() {
            let name = prog.name().to_string_lossy().into_owned();
            let Some((_, _, pin)) = PROGRAMS.iter().find(|(_, n, _)| *n == name) else {
                bail!("the BPF object has a program {name:?} that pdscp does not know");
            };
            // A stale program pin is replaced; devices still running the old
            // program are moved to the new one by the caller.
            remove_pin(&self.pin(pin))?;
            pin_fd(prog.as_fd(), &self.pin(pin))?;
        }
        Ok(())
    }

    /// Unpins everything and removes the uplink's directory. Call after
    /// every attachment is gone. Unknown files are left alone.
    pub fn remove(&self) -> Result<()> {
        remove_pin(&self.writer_link())?;
        let pins = PROGRAMS.iter().map(|(_, _, pin)| *pin).chain(MAPS);
        for name in pins {
            remove_pin(&self.pin(name))?;
            crash_point(Step::Unpinning);
        }
        for dir in [self.tunnels_dir(), self.dir.clone()] {
            match fs::remove_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", dir.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn remove_tunnel_dir(&self, tunnel: &str) -> Result<()> {
        remove_pin(&self.reader_link(tunnel))?;
        match fs::remove_dir(self.tunnel_dir(tunnel)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).context("removing the tunnel directory"),
            _ => Ok(()),
        }
    }

    pub fn create_tunnel_dir(&self, tunnel: &str) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.tunnel_dir(tunnel))
            .context("creating the tunnel directory")
    }
}

fn program_pin(program: Program) -> &'static str {
    PROGRAMS
        .iter()
        .find(|(p, _, _)| *p == program)
        .map(|(_, _, pin)| *pin)
        .unwrap_or_default()
}

/// The objects pinned for one uplink: its maps and programs.
pub struct Pinned {
    pub flows: MapHandle,
    pub ifaces: MapHandle,
    pub dev_slots: MapHandle,
    pub ports: MapHandle,
    pub stats: MapHandle,
    pub reader: ProgramHandle,
    pub writer: ProgramHandle,
}

impl Pinned {
    pub fn program(&self, program: Program) -> &ProgramHandle {
        match program {
            Program::Reader => &self.reader,
            Program::Writer => &self.writer,
        }
    }

    /// Both programs use only the pinned maps (not maps of an earlier load).
    fn is_consistent(&self) -> Result<bool> {
        let mut pinned = Vec::new();
        for map in [
            &self.flows,
            &self.ifaces,
            &self.dev_slots,
            &self.ports,
            &self.stats,
        ] {
            pinned.push(MapInfo::new(map.as_fd())?.info.id);
        }
        for prog in [&self.reader, &self.writer] {
            let used = prog_map_ids(prog.as_fd())?;
            if used.is_empty() || !used.iter().all(|id| pinned.contains(id)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Counters summed over CPUs, indexed as in `maps::stat`.
    pub fn counters(&self) -> Result<Vec<u64>> {
        let mut totals = vec![0u64; maps::stat::MAX];
        for (i, total) in totals.iter_mut().enumerate() {
            let key = (i as u32).to_ne_bytes();
            if let Some(per_cpu) = self.stats.lookup_percpu(&key, MapFlags::ANY)? {
                *total = per_cpu
                    .iter()
                    .filter_map(|v| v.get(..8)?.try_into().ok())
                    .map(u64::from_ne_bytes)
                    .sum();
            }
        }
        Ok(totals)
    }

    pub fn flow_entries(&self) -> usize {
        self.flows.keys().count()
    }

    pub fn flow_capacity(&self) -> Result<u32> {
        Ok(MapInfo::new(self.flows.as_fd())?.info.max_entries)
    }
}
