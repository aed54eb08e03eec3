//! State of one uplink in bpffs: layout, loading, repair, and the registry of
//! attached devices kept in the pinned `ifaces` and `ports` maps.
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
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapInfo, ProgramHandle};

use crate::attach::{self, remove_pin, Mode};
use crate::cli::PortMatch;
use crate::crash::crash_point;
use crate::skel::{types, PdscpSkelBuilder};

const MAPS: [&str; 5] = ["flows", "ifaces", "dev_slots", "ports", "stats"];
const PROGS: [&str; 2] = ["reader", "writer"];
/// PDSCP_DEV_SLOTS of bpf/pdscp.h.
const DEV_SLOTS: u32 = 4096;

/// Counter indexes, as in `enum stat_index` of bpf/pdscp.h.
pub mod stat {
    pub const WRITER_MARKED: usize = 0;
    pub const READER_SEEN: usize = 64;
    pub const WRITER_MISS: usize = 128;
    pub const WRITER_NOT_TUNNEL: usize = 129;
    pub const READER_INSERT: usize = 130;
    pub const READER_UPDATE: usize = 131;
    pub const READER_NOT_IP: usize = 132;
    pub const MAX: usize = 133;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Uplink = 1,
    Tunnel = 2,
}

/// One entry of the `ifaces` map: a device pdscp attached to, as recorded
/// when it was attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceCfg {
    pub role: Role,
    pub name: String,
    pub ethernet: bool,
    pub mode: Mode,
    /// Tunnels only.
    pub ports: Option<PortMatch>,
    /// Inode of the network namespace the device is in: one pin root can
    /// serve several namespaces, whose device names and ifindexes overlap.
    pub netns: u32,
}

impl IfaceCfg {
    fn to_bytes(&self) -> Vec<u8> {
        let mut raw = types::iface_cfg {
            role: self.role as u8,
            l2: self.ethernet as u8,
            mode: self.mode as u8,
            netns: self.netns,
            ..Default::default()
        };
        match self.ports {
            Some(PortMatch::Port(p)) => raw.port = p.to_be(),
            Some(PortMatch::Any) => raw.any_port = 1,
            None => {}
        }
        for (dst, src) in raw.name.iter_mut().zip(self.name.as_bytes().iter().take(15)) {
            *dst = *src as i8;
        }
        as_bytes(&raw).to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<IfaceCfg> {
        if bytes.len() != std::mem::size_of::<types::iface_cfg>() {
            return None;
        }
        let raw: types::iface_cfg = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let role = match raw.role {
            1 => Role::Uplink,
            2 => Role::Tunnel,
            _ => return None,
        };
        let name: Vec<u8> = raw
            .name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        let ports = match (role, raw.any_port, u16::from_be(raw.port)) {
            (Role::Uplink, _, _) => None,
            (Role::Tunnel, 0, p) => Some(PortMatch::Port(p)),
            (Role::Tunnel, _, _) => Some(PortMatch::Any),
        };
        Some(IfaceCfg {
            role,
            name: String::from_utf8_lossy(&name).into_owned(),
            ethernet: raw.l2 != 0,
            mode: Mode::from_raw(raw.mode)?,
            ports,
            netns: raw.netns,
        })
    }
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// Paths of one uplink's state. Creating this touches nothing.
pub struct UplinkPins {
    pub name: String,
    pub dir: PathBuf,
}

impl UplinkPins {
    pub fn new(name: &str, dir: PathBuf) -> Self {
        UplinkPins {
            name: name.to_string(),
            dir,
        }
    }

    fn pin(&self, object: &str) -> PathBuf {
        self.dir.join(object)
    }

    /// The writer's TCX link on the uplink.
    pub fn uplink_link(&self) -> PathBuf {
        self.dir.join("link")
    }

    fn tunnels_dir(&self) -> PathBuf {
        self.dir.join("tunnels")
    }

    pub fn tunnel_dir(&self, tunnel: &str) -> PathBuf {
        self.tunnels_dir().join(tunnel)
    }

    /// The reader's TCX link on a tunnel.
    pub fn tunnel_link(&self, tunnel: &str) -> PathBuf {
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
    pub fn open(&self) -> Result<Uplink> {
        let map = |name: &str| {
            MapHandle::from_pinned_path(self.pin(name))
                .with_context(|| format!("opening pinned map {}", self.pin(name).display()))
        };
        let prog = |name: &str| {
            ProgramHandle::from_pinned_path(self.pin(name))
                .with_context(|| format!("opening pinned program {}", self.pin(name).display()))
        };
        Ok(Uplink {
            flows: map("flows")?,
            ifaces: map("ifaces")?,
            dev_slots: map("dev_slots")?,
            ports: map("ports")?,
            stats: map("stats")?,
            reader: prog("reader")?,
            writer: prog("writer")?,
        })
    }

    /// Makes sure the maps and programs are pinned and belong together, and
    /// opens them. Reuses what is pinned (tunnels already attached keep
    /// running on it); loads and pins whatever is missing. Returns whether
    /// the programs were (re)loaded, in which case existing attachments must
    /// be pointed at the new ones.
    pub fn ensure(&self, map_size: u32) -> Result<(Uplink, bool)> {
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

    fn ensure_in_place(&self, map_size: u32) -> Result<(Uplink, bool)> {
        for dir in [&self.dir, &self.tunnels_dir()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        if let Ok(uplink) = self.open() {
            if uplink.is_consistent()? {
                return Ok((uplink, false));
            }
        }
        self.load_and_pin(map_size)?;
        let uplink = self.open()?;
        if !uplink.is_consistent()? {
            bail!(
                "{}: pinned programs and maps do not match after loading",
                self.dir.display()
            );
        }
        Ok((uplink, true))
    }

    fn load_and_pin(&self, map_size: u32) -> Result<()> {
        let mut object = MaybeUninit::uninit();
        let mut open = PdscpSkelBuilder::default()
            .open(&mut object)
            .map_err(with_libbpf_message)
            .context("opening the BPF object")?;
        let mut reused = [false; MAPS.len()];
        for (i, name) in MAPS.iter().enumerate() {
            let path = self.pin(name);
            let map = match *name {
                "flows" => &mut open.maps.flows,
                "ifaces" => &mut open.maps.ifaces,
                "dev_slots" => &mut open.maps.dev_slots,
                "ports" => &mut open.maps.ports,
                _ => &mut open.maps.stats,
            };
            if path.exists() {
                // Keep the pinned map: it holds the flows and the registry.
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
                reused[i] = true;
            } else if *name == "flows" {
                map.set_max_entries(map_size)?;
            }
        }
        let skel = open
            .load()
            .map_err(with_libbpf_message)
            .context("loading the BPF programs")?;
        crash_point("attach:loaded");
        for (i, name) in MAPS.iter().enumerate() {
            if reused[i] {
                continue;
            }
            let map = match *name {
                "flows" => &skel.maps.flows,
                "ifaces" => &skel.maps.ifaces,
                "dev_slots" => &skel.maps.dev_slots,
                "ports" => &skel.maps.ports,
                _ => &skel.maps.stats,
            };
            attach::pin_fd(map.as_fd(), &self.pin(name))?;
        }
        crash_point("attach:maps-pinned");
        for name in PROGS {
            let prog = if name == "reader" {
                &skel.progs.pdscp_reader
            } else {
                &skel.progs.pdscp_writer
            };
            // A stale program pin is replaced; devices still running the old
            // program are moved to the new one by the caller.
            remove_pin(&self.pin(name))?;
            attach::pin_fd(prog.as_fd(), &self.pin(name))?;
        }
        Ok(())
    }

    /// Unpins everything and removes the uplink's directory. Call after
    /// every attachment is gone. Unknown files are left alone.
    pub fn remove(&self) -> Result<()> {
        remove_pin(&self.uplink_link())?;
        for name in PROGS.iter().chain(MAPS.iter()) {
            remove_pin(&self.pin(name))?;
            crash_point("detach:unpinning");
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
        remove_pin(&self.tunnel_link(tunnel))?;
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

/// The loaded state of an uplink: its pinned maps and programs.
pub struct Uplink {
    pub flows: MapHandle,
    pub ifaces: MapHandle,
    pub dev_slots: MapHandle,
    pub ports: MapHandle,
    pub stats: MapHandle,
    pub reader: ProgramHandle,
    pub writer: ProgramHandle,
}

impl Uplink {
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
            let used = attach::prog_map_ids(prog.as_fd())?;
            if used.is_empty() || !used.iter().all(|id| pinned.contains(id)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub fn iface(&self, ifindex: u32) -> Result<Option<IfaceCfg>> {
        let value = self.ifaces.lookup(&ifindex.to_ne_bytes(), MapFlags::ANY)?;
        Ok(value.as_deref().and_then(IfaceCfg::from_bytes))
    }

    /// Records a device; the programs see it at once (dev_slots).
    pub fn set_iface(&self, ifindex: u32, cfg: &IfaceCfg) -> Result<()> {
        self.ifaces
            .update(&ifindex.to_ne_bytes(), &cfg.to_bytes(), MapFlags::ANY)
            .context("recording the device in the ifaces map")?;
        self.set_slot(ifindex, Some(cfg))
    }

    pub fn delete_iface(&self, ifindex: u32) -> Result<()> {
        self.set_slot(ifindex, None)?;
        delete_ignoring_missing(&self.ifaces, &ifindex.to_ne_bytes())
    }

    /// The programs' copy of a device's settings, for ifindexes below
    /// PDSCP_DEV_SLOTS (larger ones are looked up in ifaces).
    fn set_slot(&self, ifindex: u32, cfg: Option<&IfaceCfg>) -> Result<()> {
        if ifindex >= DEV_SLOTS {
            return Ok(());
        }
        let mut slot = types::dev_slot::default();
        if let Some(cfg) = cfg {
            slot.role = cfg.role as u8;
            slot.l2 = cfg.ethernet as u8;
            match cfg.ports {
                Some(PortMatch::Port(p)) => slot.port = p.to_be(),
                Some(PortMatch::Any) => slot.any_port = 1,
                None => {}
            }
        }
        self.dev_slots
            .update(&ifindex.to_ne_bytes(), as_bytes(&slot), MapFlags::ANY)
            .context("recording the device in the dev_slots map")
    }

    /// Every recorded device, by ifindex, read in one BPF_MAP_LOOKUP_BATCH
    /// call: commands that touch one tunnel must not cost a syscall per
    /// attached tunnel.
    pub fn ifaces(&self) -> Result<Vec<(u32, IfaceCfg)>> {
        let value_size = std::mem::size_of::<types::iface_cfg>();
        let capacity = (MapInfo::new(self.ifaces.as_fd())?.info.max_entries as usize).max(1);
        let mut keys = vec![0u32; capacity];
        let mut values = vec![0u8; capacity * value_size];
        let mut opts: libbpf_rs::libbpf_sys::bpf_map_batch_opts = unsafe { std::mem::zeroed() };
        opts.sz = std::mem::size_of_val(&opts) as _;
        let mut out_batch = 0u32;
        let mut count = capacity as u32;
        // One call with room for every entry: the first batch is the last (ENOENT).
        let ret = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_lookup_batch(
                self.ifaces.as_fd().as_raw_fd(),
                std::ptr::null_mut(),
                (&mut out_batch as *mut u32).cast(),
                keys.as_mut_ptr().cast(),
                values.as_mut_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        if ret < 0 && -ret != libc::ENOENT {
            return Err(io::Error::from_raw_os_error(-ret)).context("reading the ifaces map");
        }
        let mut out: Vec<(u32, IfaceCfg)> = keys
            .iter()
            .zip(values.chunks_exact(value_size))
            .take(count as usize)
            .filter_map(|(k, v)| Some((*k, IfaceCfg::from_bytes(v)?)))
            .collect();
        out.sort_by_key(|(i, _)| *i);
        Ok(out)
    }

    /// The recorded tunnel with this name, if any.
    pub fn tunnel_by_name(&self, name: &str) -> Result<Option<(u32, IfaceCfg)>> {
        Ok(self
            .ifaces()?
            .into_iter()
            .find(|(_, c)| c.role == Role::Tunnel && c.name == name))
    }

    /// Refuses to act on an uplink that was attached from another network
    /// namespace: its names and ifindexes mean other devices there.
    pub fn check_netns(&self, uplink_name: &str, netns: u32) -> Result<()> {
        if let Some((_, cfg)) = self.uplink_entry()? {
            if cfg.netns != netns {
                bail!(
                    "uplink {uplink_name} under this pin root belongs to another network namespace \
                     (inode {}); use a separate --pin-root per namespace",
                    cfg.netns
                );
            }
        }
        Ok(())
    }

    /// The uplink's own entry, if recorded.
    pub fn uplink_entry(&self) -> Result<Option<(u32, IfaceCfg)>> {
        Ok(self.ifaces()?.into_iter().find(|(_, c)| c.role == Role::Uplink))
    }

    /// The recorded tunnel that uses an outer source port.
    pub fn port_owner(&self, port: u16) -> Result<Option<(u32, IfaceCfg)>> {
        Ok(self
            .ifaces()?
            .into_iter()
            .find(|(_, c)| c.role == Role::Tunnel && c.ports == Some(PortMatch::Port(port))))
    }

    /// Rewrites the writer's port bitmap from the registry: the ports of the
    /// recorded tunnels, and bit 0 while any --any-port tunnel is recorded.
    pub fn sync_ports(&self) -> Result<()> {
        let mut bitmap = vec![0u8; std::mem::size_of::<types::port_bitmap>()];
        for (_, cfg) in self.ifaces()? {
            let bit = match (cfg.role, cfg.ports) {
                (Role::Tunnel, Some(PortMatch::Port(p))) => p,
                (Role::Tunnel, Some(PortMatch::Any)) => 0,
                _ => continue,
            };
            bitmap[usize::from(bit >> 3)] |= 1 << (bit & 7);
        }
        self.ports
            .update(&0u32.to_ne_bytes(), &bitmap, MapFlags::ANY)
            .context("writing the port bitmap")
    }

    /// Counters summed over CPUs, indexed as in `stat`.
    pub fn counters(&self) -> Result<Vec<u64>> {
        let mut totals = vec![0u64; stat::MAX];
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

/// libbpf's own error codes (LIBBPF_ERRNO__*, 4000 and up) reach us as OS
/// errors, which std prints as "Unknown error 4003 (os error 4003)": add
/// libbpf's message ("Endian mismatch").
fn with_libbpf_message(err: libbpf_rs::Error) -> anyhow::Error {
    let text = err.to_string();
    let code = text
        .rsplit_once("(os error ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| (4000..4100).contains(n));
    let Some(code) = code else {
        return err.into();
    };
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: libbpf writes a NUL-terminated string of at most buf.len() bytes.
    unsafe { libbpf_rs::libbpf_sys::libbpf_strerror(-code, buf.as_mut_ptr(), buf.len() as _) };
    // SAFETY: NUL-terminated, see above.
    let message = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    anyhow::Error::new(err).context(format!("libbpf: {message}"))
}

fn delete_ignoring_missing(map: &MapHandle, key: &[u8]) -> Result<()> {
    match map.delete(key) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_side() {
        assert_eq!(std::mem::size_of::<types::iface_cfg>(), 28);
        assert_eq!(std::mem::size_of::<types::flow_key>(), 8);
        assert_eq!(std::mem::size_of::<types::dev_slot>(), 8);
        assert_eq!(std::mem::size_of::<types::port_bitmap>(), 8192);
    }

    #[test]
    fn libbpf_error_codes_get_libbpf_messages() {
        let err = with_libbpf_message(libbpf_rs::Error::from_raw_os_error(4003));
        assert!(
            format!("{err:#}").starts_with("libbpf: Endian mismatch: "),
            "{err:#}"
        );
        let err = with_libbpf_message(libbpf_rs::Error::from_raw_os_error(libc::EPERM));
        assert!(!format!("{err:#}").contains("libbpf:"), "{err:#}");
    }

    #[test]
    fn iface_cfg_round_trips() {
        for cfg in [
            IfaceCfg {
                role: Role::Tunnel,
                name: "wg0".into(),
                ethernet: false,
                mode: Mode::Tcx,
                ports: Some(PortMatch::Port(51820)),
                netns: 4026531840,
            },
            IfaceCfg {
                role: Role::Tunnel,
                name: "x23456789012345".into(),
                ethernet: true,
                mode: Mode::Tc,
                ports: Some(PortMatch::Any),
                netns: 1,
            },
            IfaceCfg {
                role: Role::Uplink,
                name: "eth0".into(),
                ethernet: true,
                mode: Mode::Tc,
                ports: None,
                netns: 0,
            },
        ] {
            let bytes = cfg.to_bytes();
            assert_eq!(bytes.len(), 28);
            assert_eq!(IfaceCfg::from_bytes(&bytes), Some(cfg));
        }
    }

    #[test]
    fn port_is_stored_in_network_order() {
        let cfg = IfaceCfg {
            role: Role::Tunnel,
            name: "wg0".into(),
            ethernet: false,
            mode: Mode::Tcx,
            ports: Some(PortMatch::Port(0x1234)),
            netns: 0,
        };
        assert_eq!(&cfg.to_bytes()[4..6], &[0x12, 0x34]);
    }
}
