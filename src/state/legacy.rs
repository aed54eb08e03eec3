//! Layout 1: the state pdscp 0.1.0 left (docs/state.md, Versions), read so
//! that it can be shown and upgraded. One directory per uplink directly
//! under the pin root, each with its own maps and programs:
//!
//! ```text
//! <pin-root>/<uplink>/
//!     flows ifaces dev_slots ports stats    maps
//!     reader writer                         programs
//!     link                                  the writer's TCX link (tcx mode)
//!     tunnels/<tunnel>/link                 the reader's TCX link (tcx mode)
//! ```
//! A released layout never changes, so its encodings are written out here
//! by hand, once.
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};

use crate::kernel::bpf::lookup_all;
use crate::model::{Mode, PortMatch};

/// Pins of a layout-1 uplink directory.
pub const MAPS: [&str; 5] = ["flows", "ifaces", "dev_slots", "ports", "stats"];
pub const PROGRAMS: [&str; 2] = ["reader", "writer"];
/// Layout 2's names directly under the pin root: never a layout-1 uplink.
const LAYOUT2_NAMES: [&str; 4] = ["maps", "progs", "uplinks", "tunnels"];

/// Counter indexes of layout 1's `stats` map.
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

/// A device recorded in a layout-1 `ifaces` map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyDevice {
    pub ifindex: u32,
    pub uplink: bool,
    pub name: String,
    pub ethernet: bool,
    pub mode: Mode,
    /// Tunnels only.
    pub ports: Option<PortMatch>,
    pub netns: u32,
}

/// One layout-1 uplink directory.
#[derive(Clone, Debug)]
pub struct LegacyUplink {
    pub name: String,
    pub dir: PathBuf,
}

impl LegacyUplink {
    pub fn pin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn writer_link(&self) -> PathBuf {
        self.dir.join("link")
    }

    pub fn reader_link(&self, tunnel: &str) -> PathBuf {
        self.dir.join("tunnels").join(tunnel).join("link")
    }

    /// Names of the tunnel directories.
    pub fn tunnel_dirs(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        if let Ok(entries) = fs::read_dir(self.dir.join("tunnels")) {
            for entry in entries {
                if let Some(name) = entry?.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every device recorded, or none if the map is gone.
    pub fn devices(&self) -> Result<Vec<LegacyDevice>> {
        let Ok(map) = MapHandle::from_pinned_path(self.pin("ifaces")) else {
            return Ok(Vec::new());
        };
        Ok(lookup_all(&map)?
            .into_iter()
            .filter_map(|(k, v)| decode_device(u32::from_ne_bytes(k.try_into().ok()?), &v))
            .collect())
    }

    /// Every flow entry: (hash, port, mark).
    pub fn flows(&self) -> Result<Vec<(u32, PortMatch, u8)>> {
        let Ok(map) = MapHandle::from_pinned_path(self.pin("flows")) else {
            return Ok(Vec::new());
        };
        let mut flows = Vec::new();
        for key in map.keys() {
            let Some(value) = map.lookup(&key, MapFlags::ANY)? else {
                continue;
            };
            if key.len() == 8 && !value.is_empty() {
                let hash = u32::from_ne_bytes([key[0], key[1], key[2], key[3]]);
                let port = match u16::from_be_bytes([key[4], key[5]]) {
                    0 => PortMatch::Any,
                    p => PortMatch::Port(p),
                };
                flows.push((hash, port, value[0]));
            }
        }
        Ok(flows)
    }

    /// The counters summed over CPUs, indexed as in `stat` (zeros if gone).
    pub fn counters(&self) -> Result<Vec<u64>> {
        let mut totals = vec![0u64; stat::MAX];
        let Ok(map) = MapHandle::from_pinned_path(self.pin("stats")) else {
            return Ok(totals);
        };
        for (i, total) in totals.iter_mut().enumerate() {
            if let Some(per_cpu) = map.lookup_percpu(&(i as u32).to_ne_bytes(), MapFlags::ANY)? {
                *total = crate::maps::sum_rows(&per_cpu)
                    .first()
                    .copied()
                    .unwrap_or_default();
            }
        }
        Ok(totals)
    }

    /// The id of a pinned program ("reader", "writer"), if it is there.
    pub fn program_id(&self, name: &str) -> Option<u32> {
        ProgramHandle::from_pinned_path(self.pin(name))
            .ok()
            .map(|p| p.id())
    }

    pub fn flow_map_size(&self) -> u32 {
        MapHandle::from_pinned_path(self.pin("flows"))
            .ok()
            .and_then(|m| libbpf_rs::MapInfo::new(std::os::fd::AsFd::as_fd(&m)).ok())
            .map_or(0, |i| i.info.max_entries)
    }
}

/// The layout-1 uplink directories under the pin root.
pub fn uplinks(root: &Path) -> Result<Vec<LegacyUplink>> {
    let mut found = Vec::new();
    let entries = fs::read_dir(root).with_context(|| format!("reading {}", root.display()))?;
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let dir = entry.path();
        // Layout 2's directories hold no map of these names; an uplink of
        // layout 1 named like one of them does.
        let has_v1_maps = ["ifaces", "dev_slots"].iter().any(|p| dir.join(p).exists());
        if has_v1_maps || !LAYOUT2_NAMES.contains(&name.as_str()) {
            found.push(LegacyUplink { name, dir });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Removes a layout-1 uplink directory once nothing in it is used: every
/// known pin, then the directories. Unknown files are left alone.
pub fn remove(uplink: &LegacyUplink) -> Result<()> {
    use crate::kernel::bpf::remove_pin;
    for tunnel in uplink.tunnel_dirs()? {
        remove_pin(&uplink.reader_link(&tunnel))?;
        crate::state::layout::remove_dir(&uplink.dir.join("tunnels").join(&tunnel))?;
    }
    remove_pin(&uplink.writer_link())?;
    for pin in PROGRAMS.iter().chain(MAPS.iter()) {
        remove_pin(&uplink.pin(pin))?;
    }
    crate::state::layout::remove_dir(&uplink.dir.join("tunnels"))?;
    crate::state::layout::remove_dir(&uplink.dir)
}

/// A layout-1 `ifaces` value: role u8, l2 u8, mode u8, any_port u8, port
/// u16 (network order), pad u16, name [16], netns u32.
fn decode_device(ifindex: u32, v: &[u8]) -> Option<LegacyDevice> {
    if v.len() != 28 {
        return None;
    }
    let uplink = match v[0] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let mode = match v[2] {
        1 => Mode::Tcx,
        2 => Mode::Tc,
        _ => return None,
    };
    let name: Vec<u8> = v[8..24].iter().take_while(|b| **b != 0).copied().collect();
    let ports = match (uplink, v[3], u16::from_be_bytes([v[4], v[5]])) {
        (true, _, _) => None,
        (false, 0, p) => Some(PortMatch::Port(p)),
        (false, _, _) => Some(PortMatch::Any),
    };
    Some(LegacyDevice {
        ifindex,
        uplink,
        name: String::from_utf8_lossy(&name).into_owned(),
        ethernet: v[1] != 0,
        mode,
        ports,
        netns: u32::from_ne_bytes([v[24], v[25], v[26], v[27]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_layout_one_device_records() {
        let mut v = vec![2, 0, 1, 0, 0xca, 0x6c, 0, 0];
        v.extend(b"wg0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        v.extend(7u32.to_ne_bytes());
        let d = decode_device(5, &v).unwrap();
        assert_eq!(
            (d.uplink, d.name.as_str(), d.mode, d.ports),
            (false, "wg0", Mode::Tcx, Some(PortMatch::Port(51820)))
        );
        assert_eq!(d.netns, 7);
        v[0] = 1;
        v[2] = 2;
        let d = decode_device(2, &v).unwrap();
        assert_eq!((d.uplink, d.mode, d.ports), (true, Mode::Tc, None));
        assert_eq!(decode_device(2, &v[..27]), None);
    }
}
