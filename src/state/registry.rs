//! The registry: one record per tunnel slot and per uplink slot, in the
//! pinned `tunnels` and `uplinks` maps, and the programs' indexes into them
//! (`devices`, `devices_hi`, `ports`). A command reads it once into a
//! `Registry` and changes it through that value, which keeps the maps and the
//! snapshot in step.
use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags};

use super::objects::Objects;
use crate::kernel::bpf::lookup_all;
use crate::maps::{self, DEV_SLOTS, MAX_LINKS, MAX_TUNNELS, MAX_UPLINKS};
use crate::model::{PortMatch, TunnelRecord, UplinkRecord};

/// The records as they were read, as changed since through this value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    tunnels: Vec<Option<TunnelRecord>>,
    uplinks: Vec<Option<UplinkRecord>>,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            tunnels: vec![None; MAX_TUNNELS],
            uplinks: vec![None; MAX_UPLINKS],
        }
    }
}

impl Registry {
    /// Reads both record maps, one batch call each.
    pub fn read(objects: &Objects) -> Result<Registry> {
        let mut registry = Registry::default();
        for (key, value) in lookup_all(objects.map("tunnels"))? {
            if let (Some(slot), Some(rec)) = (slot_of(&key), maps::decode_tunnel(&value)) {
                if let Some(entry) = registry.tunnels.get_mut(slot) {
                    *entry = Some(rec);
                }
            }
        }
        for (key, value) in lookup_all(objects.map("uplinks"))? {
            if let (Some(slot), Some(rec)) = (slot_of(&key), maps::decode_uplink(&value)) {
                if let Some(entry) = registry.uplinks.get_mut(slot) {
                    *entry = Some(rec);
                }
            }
        }
        Ok(registry)
    }

    /// A registry holding these records, as `read` would return it.
    pub fn from_records(
        tunnels: Vec<(usize, TunnelRecord)>,
        uplinks: Vec<(usize, UplinkRecord)>,
    ) -> Registry {
        let mut registry = Registry::default();
        for (slot, rec) in tunnels {
            registry.tunnels[slot] = Some(rec);
        }
        for (slot, rec) in uplinks {
            registry.uplinks[slot] = Some(rec);
        }
        registry
    }

    pub fn tunnels(&self) -> impl Iterator<Item = (usize, &TunnelRecord)> {
        self.tunnels
            .iter()
            .enumerate()
            .filter_map(|(s, r)| Some((s, r.as_ref()?)))
    }

    pub fn uplinks(&self) -> impl Iterator<Item = (usize, &UplinkRecord)> {
        self.uplinks
            .iter()
            .enumerate()
            .filter_map(|(s, r)| Some((s, r.as_ref()?)))
    }

    pub fn tunnel(&self, name: &str) -> Option<(usize, &TunnelRecord)> {
        self.tunnels().find(|(_, r)| r.name == name)
    }

    pub fn uplink(&self, name: &str) -> Option<(usize, &UplinkRecord)> {
        self.uplinks().find(|(_, r)| r.name == name)
    }

    pub fn uplink_at(&self, slot: usize) -> Option<&UplinkRecord> {
        self.uplinks.get(slot)?.as_ref()
    }

    /// The tunnels attached to the uplink in `slot`.
    pub fn tunnels_on(&self, slot: usize) -> impl Iterator<Item = (usize, &TunnelRecord)> {
        self.tunnels().filter(move |(_, r)| r.links.contains_key(&slot))
    }

    /// The names of the uplinks a tunnel is attached to, sorted.
    pub fn uplink_names(&self, rec: &TunnelRecord) -> Vec<String> {
        let mut names: Vec<String> = rec
            .links
            .keys()
            .filter_map(|slot| Some(self.uplink_at(*slot)?.name.clone()))
            .collect();
        names.sort();
        names
    }

    /// The recorded tunnel whose outer packets leave from this port.
    pub fn port_owner(&self, port: u16) -> Option<(usize, &TunnelRecord)> {
        self.tunnels().find(|(_, r)| r.ports == PortMatch::Port(port))
    }

    pub fn is_empty(&self) -> bool {
        self.tunnels().next().is_none() && self.uplinks().next().is_none()
    }

    /// The lowest free tunnel slot.
    pub fn free_tunnel_slot(&self) -> Result<usize> {
        match self.tunnels.iter().position(Option::is_none) {
            Some(slot) => Ok(slot),
            None => bail!("this pin root serves {MAX_TUNNELS} tunnels already, the most it can"),
        }
    }

    /// The lowest free uplink slot.
    pub fn free_uplink_slot(&self) -> Result<usize> {
        match self.uplinks.iter().position(Option::is_none) {
            Some(slot) => Ok(slot),
            None => bail!("this pin root serves {MAX_UPLINKS} uplinks already, the most it can"),
        }
    }

    /// The lowest link_stats row no tunnel uses, other than `taken`.
    pub fn free_link_row(&self, taken: &BTreeSet<u16>) -> Result<u16> {
        let used: BTreeSet<u16> = self
            .tunnels()
            .flat_map(|(_, r)| r.links.values().copied())
            .collect();
        match (1..MAX_LINKS as u16).find(|row| !used.contains(row) && !taken.contains(row)) {
            Some(row) => Ok(row),
            None => bail!(
                "this pin root has {} tunnel-uplink attachments already, the most it can",
                MAX_LINKS - 1
            ),
        }
    }

    /// Records an uplink in `slot`; the writer sees it at once.
    pub fn put_uplink(&mut self, objects: &Objects, slot: usize, rec: UplinkRecord) -> Result<()> {
        let old_ifindex = self.uplinks[slot].as_ref().map(|r| r.ifindex);
        if old_ifindex.is_none() {
            zero_row(objects, "uplink_stats", slot as u32)?;
        }
        update(objects, "uplinks", slot as u32, &maps::encode_uplink(Some(&rec)))?;
        let ifindex = rec.ifindex;
        self.uplinks[slot] = Some(rec);
        self.write_device(objects, ifindex)?;
        if let Some(old) = old_ifindex.filter(|old| *old != ifindex) {
            self.write_device(objects, old)?;
        }
        Ok(())
    }

    /// Forgets the uplink in `slot`: the writer stops seeing it first.
    pub fn clear_uplink(&mut self, objects: &Objects, slot: usize) -> Result<()> {
        let Some(rec) = self.uplinks[slot].take() else {
            return Ok(());
        };
        self.write_device(objects, rec.ifindex)?;
        update(objects, "uplinks", slot as u32, &maps::encode_uplink(None))
    }

    /// Records a tunnel in `slot`: zeroes the counters it did not have yet,
    /// then the record, then the programs' indexes (device, port), so the
    /// programs never see an index without its record.
    pub fn put_tunnel(&mut self, objects: &Objects, slot: usize, rec: TunnelRecord) -> Result<()> {
        let old = self.tunnels[slot].clone();
        if old.is_none() {
            zero_row(objects, "tunnel_stats", slot as u32)?;
        }
        let old_rows: BTreeSet<u16> = old.iter().flat_map(|o| o.links.values().copied()).collect();
        for row in rec.links.values().filter(|r| !old_rows.contains(r)) {
            zero_row(objects, "link_stats", u32::from(*row))?;
        }
        update(objects, "tunnels", slot as u32, &maps::encode_tunnel(Some(&rec)))?;
        let (ifindex, ports) = (rec.ifindex, rec.ports);
        self.tunnels[slot] = Some(rec);
        self.write_device(objects, ifindex)?;
        self.write_port(objects, ports)?;
        if let Some(old) = old {
            if old.ifindex != ifindex {
                self.write_device(objects, old.ifindex)?;
            }
            if old.ports != ports {
                self.write_port(objects, old.ports)?;
            }
        }
        Ok(())
    }

    /// Forgets the tunnel in `slot`: its port and device first (the programs
    /// stop matching it), then the record.
    pub fn clear_tunnel(&mut self, objects: &Objects, slot: usize) -> Result<()> {
        let Some(rec) = self.tunnels[slot].take() else {
            return Ok(());
        };
        self.write_port(objects, rec.ports)?;
        self.write_device(objects, rec.ifindex)?;
        update(objects, "tunnels", slot as u32, &maps::encode_tunnel(None))
    }

    /// Rewrites the programs' indexes from the records wherever they
    /// differ: repairs what an interrupted command left. Returns how many
    /// entries it changed.
    pub fn repair_indexes(&self, objects: &Objects) -> Result<usize> {
        let mut fixed = 0;
        for (key, value) in lookup_all(objects.map("devices"))? {
            let Some(ifindex) = slot_of(&key).map(|s| s as u32) else {
                continue;
            };
            if value != self.device_value(ifindex) {
                self.write_device(objects, ifindex)?;
                fixed += 1;
            }
        }
        for (key, _) in lookup_all(objects.map("devices_hi"))? {
            let Some(ifindex) = slot_of(&key).map(|s| s as u32) else {
                continue;
            };
            if self.device_value(ifindex) == maps::encode_device(None, None) {
                self.write_device(objects, ifindex)?;
                fixed += 1;
            }
        }
        for (key, value) in lookup_all(objects.map("ports"))? {
            let Some(block) = slot_of(&key) else { continue };
            let want = self.port_block(block);
            if value != want {
                update(objects, "ports", block as u32, &want)?;
                fixed += 1;
            }
        }
        Ok(fixed)
    }

    fn device_value(&self, ifindex: u32) -> Vec<u8> {
        let tunnel = self.tunnels().find(|(_, r)| r.ifindex == ifindex);
        let uplink = self.uplinks().find(|(_, r)| r.ifindex == ifindex);

        maps::encode_device(tunnel, uplink)
    }

    /// The programs' entry for a device, from every record that names it.
    fn write_device(&self, objects: &Objects, ifindex: u32) -> Result<()> {
        let value = self.device_value(ifindex);
        if ifindex < DEV_SLOTS {
            return update(objects, "devices", ifindex, &value);
        }
        let map = objects.map("devices_hi");
        if value == maps::encode_device(None, None) {
            return match map.delete(&ifindex.to_ne_bytes()) {
                Err(e) if e.kind() != libbpf_rs::ErrorKind::NotFound => {
                    Err(e).context("deleting from devices_hi")
                }
                _ => Ok(()),
            };
        }
        update(objects, "devices_hi", ifindex, &value)
    }

    /// The `ports` block holding ports 256 * block .. 256 * block + 255.
    fn port_block(&self, block: usize) -> Vec<u8> {
        let mut slots = [0u16; 256];
        for (slot, rec) in self.tunnels() {
            match rec.ports {
                PortMatch::Port(p) if usize::from(p >> 8) == block => {
                    slots[usize::from(p & 0xff)] = slot as u16 + 1
                }
                // Port 0 is never a source port: its entry counts --any-port tunnels.
                PortMatch::Any if block == 0 => slots[0] += 1,
                _ => {}
            }
        }
        slots.iter().flat_map(|s| s.to_ne_bytes()).collect()
    }

    fn write_port(&self, objects: &Objects, ports: PortMatch) -> Result<()> {
        let block = match ports {
            PortMatch::Port(p) => usize::from(p >> 8),
            PortMatch::Any => 0,
        };
        update(objects, "ports", block as u32, &self.port_block(block))
    }
}

fn slot_of(key: &[u8]) -> Option<usize> {
    Some(u32::from_ne_bytes(key.try_into().ok()?) as usize)
}

fn update(objects: &Objects, map: &str, key: u32, value: &[u8]) -> Result<()> {
    objects
        .map(map)
        .update(&key.to_ne_bytes(), value, MapFlags::ANY)
        .with_context(|| format!("writing {map}[{key}]"))
}

/// Sets a per-CPU counter row to zero on every CPU.
fn zero_row(objects: &Objects, map: &str, row: u32) -> Result<()> {
    let handle = objects.map(map);
    let cpus = libbpf_rs::num_possible_cpus().context("counting CPUs")?;
    let zeros = vec![vec![0u8; handle.value_size() as usize]; cpus];
    handle
        .update_percpu(&row.to_ne_bytes(), &zeros, MapFlags::ANY)
        .with_context(|| format!("zeroing {map}[{row}]"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, Policy, Reflection};
    use std::collections::BTreeMap;

    fn tunnel(name: &str, port: PortMatch, links: &[(usize, u16)]) -> TunnelRecord {
        TunnelRecord {
            name: name.into(),
            ifindex: 10,
            ethernet: false,
            ports: port,
            reader: Some(Mode::Tc),
            ingress: None,
            policy: Policy::copy(),
            reflection: Reflection::default(),
            links: links.iter().copied().collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn slots_and_rows_are_the_lowest_free() {
        let reg = Registry::from_records(
            vec![
                (0, tunnel("wg0", PortMatch::Port(1), &[(0, 1), (1, 2)])),
                (2, tunnel("wg1", PortMatch::Port(2), &[(0, 4)])),
            ],
            vec![],
        );
        assert_eq!(reg.free_tunnel_slot().unwrap(), 1);
        assert_eq!(reg.free_uplink_slot().unwrap(), 0);
        assert_eq!(reg.free_link_row(&BTreeSet::new()).unwrap(), 3);
        assert_eq!(reg.free_link_row(&BTreeSet::from([3])).unwrap(), 5);
        assert_eq!(reg.tunnels_on(0).count(), 2);
        assert_eq!(reg.tunnels_on(1).map(|(s, _)| s).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_full_registry_says_so() {
        let full: Vec<_> = (0..MAX_TUNNELS)
            .map(|s| (s, tunnel(&format!("t{s}"), PortMatch::Port(s as u16 + 1), &[])))
            .collect();
        let reg = Registry::from_records(full, vec![]);
        let e = reg.free_tunnel_slot().unwrap_err();
        assert!(e.to_string().contains("the most it can"), "{e}");
    }

    #[test]
    fn port_blocks_index_tunnels_by_port_and_count_any_port_tunnels() {
        let reg = Registry::from_records(
            vec![
                (3, tunnel("wg0", PortMatch::Port(51820), &[])),
                (4, tunnel("vx0", PortMatch::Any, &[])),
                (5, tunnel("vx1", PortMatch::Any, &[])),
            ],
            vec![],
        );
        let slot_at = |block: &[u8], i: usize| u16::from_ne_bytes([block[2 * i], block[2 * i + 1]]);
        let block = reg.port_block(51820 >> 8);
        assert_eq!(slot_at(&block, 51820 & 0xff), 4, "slot 3, stored + 1");
        assert_eq!(block.iter().filter(|b| **b != 0).count(), 1);
        assert_eq!(slot_at(&reg.port_block(0), 0), 2, "two --any-port tunnels");
        assert_eq!(reg.port_owner(51820).map(|(s, _)| s), Some(3));
    }
}
