//! The registry: every device attached under one uplink, kept in its pinned
//! `ifaces` map (ifindex -> what was attached), with the programs' copies in
//! `dev_slots` and `ports`. A command reads it once into a `Registry` and
//! changes it through that value, which keeps map and snapshot in step.
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapInfo};

use super::uplink::Pinned;
use crate::maps;
use crate::model::{IfaceCfg, PortMatch, Role};

/// What the registry held when it was read, as changed since through this value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    /// By ifindex, sorted.
    entries: Vec<(u32, IfaceCfg)>,
}

impl Registry {
    /// Reads every entry in one BPF_MAP_LOOKUP_BATCH call: commands that
    /// touch one tunnel must not cost a syscall per attached tunnel.
    pub fn read(pinned: &Pinned) -> Result<Registry> {
        let mut entries: Vec<(u32, IfaceCfg)> = read_all(&pinned.ifaces)?
            .into_iter()
            .filter_map(|(k, v)| Some((u32::from_ne_bytes(k.try_into().ok()?), maps::decode_iface(&v)?)))
            .collect();
        entries.sort_by_key(|(i, _)| *i);
        Ok(Registry { entries })
    }

    /// A registry holding these entries, as `read` would return it.
    pub fn from_entries(mut entries: Vec<(u32, IfaceCfg)>) -> Registry {
        entries.sort_by_key(|(i, _)| *i);
        Registry { entries }
    }

    pub fn entries(&self) -> &[(u32, IfaceCfg)] {
        &self.entries
    }

    /// The uplink's own entry.
    pub fn uplink(&self) -> Option<(u32, &IfaceCfg)> {
        self.entries
            .iter()
            .find(|(_, c)| c.role == Role::Uplink)
            .map(|(i, c)| (*i, c))
    }

    pub fn tunnels(&self) -> impl Iterator<Item = (u32, &IfaceCfg)> {
        self.entries
            .iter()
            .filter(|(_, c)| c.role == Role::Tunnel)
            .map(|(i, c)| (*i, c))
    }

    /// The recorded tunnel with this name.
    pub fn tunnel(&self, name: &str) -> Option<(u32, &IfaceCfg)> {
        self.tunnels().find(|(_, c)| c.name == name)
    }

    /// The recorded tunnel whose outer packets leave from this port.
    pub fn port_owner(&self, port: u16) -> Option<(u32, &IfaceCfg)> {
        self.tunnels()
            .find(|(_, c)| c.ports == Some(PortMatch::Port(port)))
    }

    /// Records a device; the programs see it at once (dev_slots, and for a
    /// tunnel the writer's port bitmap).
    pub fn record(&mut self, pinned: &Pinned, ifindex: u32, cfg: &IfaceCfg) -> Result<()> {
        pinned
            .ifaces
            .update(&ifindex.to_ne_bytes(), &maps::encode_iface(cfg), MapFlags::ANY)
            .context("recording the device in the ifaces map")?;
        write_slot(pinned, ifindex, Some(cfg))?;
        self.entries.retain(|(i, _)| *i != ifindex);
        self.entries.push((ifindex, cfg.clone()));
        self.entries.sort_by_key(|(i, _)| *i);
        if cfg.role == Role::Tunnel {
            self.write_ports(pinned)?;
        }
        Ok(())
    }

    /// Forgets a device: the programs stop seeing it first, then the entry goes.
    pub fn forget(&mut self, pinned: &Pinned, ifindex: u32) -> Result<()> {
        write_slot(pinned, ifindex, None)?;
        match pinned.ifaces.delete(&ifindex.to_ne_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("deleting a device from the ifaces map"),
        }
        let was_tunnel = self.tunnels().any(|(i, _)| i == ifindex);
        self.entries.retain(|(i, _)| *i != ifindex);
        if was_tunnel {
            self.write_ports(pinned)?;
        }
        Ok(())
    }

    /// Rewrites the writer's port bitmap from the recorded tunnels.
    fn write_ports(&self, pinned: &Pinned) -> Result<()> {
        let bitmap = maps::encode_port_bitmap(self.tunnels().filter_map(|(_, c)| c.ports.as_ref()));
        pinned
            .ports
            .update(&0u32.to_ne_bytes(), &bitmap, MapFlags::ANY)
            .context("writing the port bitmap")
    }
}

/// The programs' copy of a device's settings, for ifindexes below
/// DEV_SLOTS (larger ones are looked up in ifaces).
fn write_slot(pinned: &Pinned, ifindex: u32, cfg: Option<&IfaceCfg>) -> Result<()> {
    if ifindex >= maps::DEV_SLOTS {
        return Ok(());
    }
    pinned
        .dev_slots
        .update(&ifindex.to_ne_bytes(), &maps::encode_dev_slot(cfg), MapFlags::ANY)
        .context("recording the device in the dev_slots map")
}

/// Every (key, value) of a hash map in one batch call. Not libbpf-rs's
/// `lookup_batch`: its iterator ends silently on an error, and a registry
/// that looks empty because a read failed would make repair release every
/// tunnel.
fn read_all(map: &libbpf_rs::MapHandle) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let (key_size, value_size) = (map.key_size() as usize, map.value_size() as usize);
    let capacity = (MapInfo::new(map.as_fd())?.info.max_entries as usize).max(1);
    let mut keys = vec![0u8; capacity * key_size];
    let mut values = vec![0u8; capacity * value_size];
    let mut out_batch = vec![0u8; key_size];
    let opts = libbpf_rs::libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    let mut count = capacity as u32;
    // SAFETY: keys and values have room for `count` entries of the map's key
    // and value sizes, out_batch for one key; the kernel writes no more.
    // One call with room for every entry: the first batch is the last (ENOENT).
    let ret = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_lookup_batch(
            map.as_fd().as_raw_fd(),
            std::ptr::null_mut(),
            out_batch.as_mut_ptr().cast(),
            keys.as_mut_ptr().cast(),
            values.as_mut_ptr().cast(),
            &mut count,
            &opts,
        )
    };
    if ret < 0 && -ret != libc::ENOENT {
        return Err(io::Error::from_raw_os_error(-ret)).context("reading the ifaces map");
    }
    Ok(keys
        .chunks_exact(key_size)
        .zip(values.chunks_exact(value_size))
        .take(count as usize)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect())
}
