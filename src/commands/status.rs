//! `pdscp status`: what is pinned, what the kernel has attached, and the counters.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::steps;
use crate::kernel::iface;
use crate::maps::stat;
use crate::model::{Mode, PortMatch};
use crate::state::pin_root::PinRoot;
use crate::state::registry::Registry;

#[derive(Serialize, Debug)]
pub struct Report {
    pub pin_root: String,
    pub uplinks: Vec<UplinkReport>,
}

#[derive(Serialize, Debug)]
pub struct UplinkReport {
    pub name: String,
    pub ifindex: Option<u32>,
    pub mode: Option<Mode>,
    /// Inode of the network namespace it was attached from.
    pub netns: Option<u32>,
    /// Attached from another network namespace than this command runs in:
    /// presence and attachment cannot be checked from here.
    pub other_netns: bool,
    /// The device still exists with the recorded ifindex.
    pub present: bool,
    /// The writer runs on it now.
    pub attached: bool,
    pub map_entries: usize,
    pub map_size: u32,
    pub counters: Counters,
    pub tunnels: Vec<TunnelReport>,
    /// Set when the pinned state could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, Debug, Default)]
pub struct Counters {
    /// Outer packets given a DSCP by the writer.
    pub marked: u64,
    /// Tunnel packets with no flow entry.
    pub missed: u64,
    /// Uplink packets that are not from an attached tunnel.
    pub not_tunnel: u64,
    /// Inner packets the readers saw.
    pub seen: u64,
    pub flow_inserts: u64,
    pub flow_updates: u64,
    pub not_ip: u64,
    /// DSCP value -> outer packets marked with it (non-zero entries only).
    pub marked_by_dscp: BTreeMap<u8, u64>,
    /// DSCP value -> inner packets seen with it (non-zero entries only).
    pub seen_by_dscp: BTreeMap<u8, u64>,
}

#[derive(Serialize, Debug)]
pub struct TunnelReport {
    pub name: String,
    pub ifindex: Option<u32>,
    /// The outer UDP source port matched; null with any_port.
    pub port: Option<u16>,
    pub any_port: bool,
    pub present: bool,
    pub attached: bool,
}

impl Report {
    pub fn empty(root: &Path) -> Report {
        Report {
            pin_root: root.display().to_string(),
            uplinks: Vec::new(),
        }
    }
}

pub fn collect(root: &PinRoot) -> Result<Report> {
    let mut report = Report::empty(&root.path);
    let netns = iface::current_netns()?;
    for dir in root.uplinks()? {
        let tunnel_names = dir.tunnel_names()?;
        let mut up = UplinkReport {
            name: dir.name.clone(),
            ifindex: None,
            mode: None,
            netns: None,
            other_netns: false,
            present: false,
            attached: false,
            map_entries: 0,
            map_size: 0,
            counters: Counters::default(),
            tunnels: Vec::new(),
            error: None,
        };
        let pinned = match dir.open() {
            Ok(u) => u,
            Err(e) => {
                up.error = Some(format!("{e:#}"));
                up.tunnels = tunnel_names
                    .into_iter()
                    .map(|name| TunnelReport {
                        name,
                        ifindex: None,
                        port: None,
                        any_port: false,
                        present: false,
                        attached: false,
                    })
                    .collect();
                report.uplinks.push(up);
                continue;
            }
        };
        let registry = Registry::read(&pinned)?;
        if let Some((ifindex, cfg)) = registry.uplink() {
            up.ifindex = Some(ifindex);
            up.mode = Some(cfg.mode);
            up.netns = Some(cfg.netns);
            up.other_netns = cfg.netns != netns;
            up.present = !up.other_netns && iface::is_present(&dir.name, ifindex);
            up.attached =
                up.present && steps::writer_hook(&dir, ifindex).runs(cfg.mode, pinned.writer.id())?;
        }
        up.map_entries = pinned.flow_entries();
        up.map_size = pinned.flow_capacity()?;
        up.counters = counters(&pinned.counters()?);
        for name in tunnel_names {
            let recorded = registry.tunnel(&name);
            let mut t = TunnelReport {
                name: name.clone(),
                ifindex: None,
                port: None,
                any_port: false,
                present: false,
                attached: false,
            };
            if let Some((ifindex, cfg)) = recorded {
                t.ifindex = Some(ifindex);
                match cfg.ports {
                    Some(PortMatch::Port(p)) => t.port = Some(p),
                    Some(PortMatch::Any) => t.any_port = true,
                    None => {}
                }
                t.present = !up.other_netns && iface::is_present(&name, ifindex);
                t.attached = t.present
                    && steps::reader_hook(&dir, &name, ifindex).runs(cfg.mode, pinned.reader.id())?;
            }
            up.tunnels.push(t);
        }
        report.uplinks.push(up);
    }
    Ok(report)
}

fn counters(raw: &[u64]) -> Counters {
    let by_dscp = |base: usize| -> BTreeMap<u8, u64> {
        (0..64u8)
            .filter(|d| raw[base + *d as usize] != 0)
            .map(|d| (d, raw[base + d as usize]))
            .collect()
    };
    Counters {
        marked: raw[stat::WRITER_MARKED..stat::WRITER_MARKED + 64].iter().sum(),
        missed: raw[stat::WRITER_MISS],
        not_tunnel: raw[stat::WRITER_NOT_TUNNEL],
        seen: raw[stat::READER_SEEN..stat::READER_SEEN + 64].iter().sum(),
        flow_inserts: raw[stat::READER_INSERT],
        flow_updates: raw[stat::READER_UPDATE],
        not_ip: raw[stat::READER_NOT_IP],
        marked_by_dscp: by_dscp(stat::WRITER_MARKED),
        seen_by_dscp: by_dscp(stat::READER_SEEN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_per_dscp() {
        let mut raw = vec![0u64; stat::MAX];
        raw[stat::WRITER_MARKED + 46] = 5;
        raw[stat::WRITER_MARKED] = 2;
        raw[stat::READER_SEEN + 10] = 7;
        raw[stat::WRITER_MISS] = 3;
        let c = counters(&raw);
        assert_eq!((c.marked, c.seen, c.missed), (7, 7, 3));
        assert_eq!(c.marked_by_dscp, BTreeMap::from([(0, 2), (46, 5)]));
        assert_eq!(c.seen_by_dscp, BTreeMap::from([(10, 7)]));
    }
}
