//! `pdscp status`: what is attached, what the kernel runs, where peers are
//! routed, and the counters. Read-only: state an older pdscp made is read as
//! it is and reported as "upgrade pending".
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapInfo};

pub use super::report::*;

use crate::kernel::iface::{self, Iface};
use crate::kernel::route;
use crate::maps::{self, stats, Stamp};
use crate::model::{Mode, PortMatch, Program, TunnelRecord, UplinkRecord};
use crate::policy;
use crate::state::layout::Layout;
use crate::state::legacy::{self, LegacyUplink};
use crate::state::objects::{self, Objects};
use crate::state::pin_root::PinRoot;
use crate::state::registry::Registry;
use crate::state::version::{self, Standing};

pub fn collect(root: &PinRoot) -> Result<Report> {
    let layout = root.layout();
    let mut report = Report::empty(&root.path);
    let standing = version::standing(&layout)?;
    if let Standing::Newer { by } = &standing {
        anyhow::bail!("{}", super::upgrade::newer_refusal(by));
    }
    report.version.upgrade_pending = matches!(standing, Standing::Older { .. });
    let legacy = legacy::uplinks(&root.path)?;
    let stamp = objects::read_stamp(&layout)?;
    if let Some(s) = &stamp {
        report.version.state = Some(version::version_text(s.version));
        report.version.layout = Some(s.layout);
        collect_current(&layout, s, &mut report)?;
    } else if !legacy.is_empty() {
        report.version.state = Some("0.1.0".into());
        report.version.layout = Some(1);
    }
    for up in &legacy {
        report.uplinks.push(legacy_uplink(up)?);
    }
    Ok(report)
}

fn collect_current(layout: &Layout, stamp: &Stamp, report: &mut Report) -> Result<()> {
    let objects = Objects::open(layout)?;
    let registry = Registry::read(&objects)?;
    let other_netns = stamp.netns != iface::current_netns()?;
    report.flows = fill(objects.map("flows"));
    report.reflect = fill(objects.map("reflect"));
    let mut links: BTreeMap<(usize, usize), LinkCounters> = BTreeMap::new();
    for (tslot, rec) in registry.tunnels() {
        for (uslot, row) in &rec.links {
            links.insert((tslot, *uslot), link_counters(&objects, *row)?);
        }
    }
    let mut tunnels = Vec::new();
    for (slot, rec) in registry.tunnels() {
        tunnels.push((
            slot,
            tunnel_report(layout, &objects, &registry, slot, rec, &links, other_netns)?,
        ));
    }
    for (uslot, rec) in registry.uplinks() {
        let mut up = uplink_report(layout, &objects, rec, stamp.netns, other_netns)?;
        up.map_entries = report.flows.entries;
        up.map_size = report.flows.capacity;
        let raw = per_cpu_row(&objects, "uplink_stats", uslot as u32)?;
        up.counters.not_tunnel = raw.get(stats::NOT_TUNNEL).copied().unwrap_or_default();
        up.counters.other_uplink = raw.get(stats::OTHER_UPLINK).copied().unwrap_or_default();
        up.counters.missed = raw.get(stats::MISSED_ANY).copied().unwrap_or_default();
        for (tslot, t) in tunnels.iter().filter(|(s, _)| {
            registry
                .tunnels()
                .any(|(ts, r)| ts == *s && r.links.contains_key(&uslot))
        }) {
            if let Some(link) = links.get(&(*tslot, uslot)) {
                up.counters.marked += link.marked;
                up.counters.missed += link.missed;
                add_into(&mut up.counters.marked_by_dscp, &link.marked_by_dscp);
            }
            let c = &t.counters;
            up.counters.seen += c.seen;
            up.counters.flow_inserts += c.flow_inserts;
            up.counters.flow_updates += c.flow_updates;
            up.counters.not_ip += c.not_ip;
            add_into(&mut up.counters.seen_by_dscp, &c.seen_by_dscp);
            up.tunnels.push(TunnelOnUplink {
                name: t.name.clone(),
                ifindex: t.ifindex,
                port: t.port,
                any_port: t.any_port,
                present: t.present,
                attached: t.attached,
            });
        }
        report.uplinks.push(up);
    }
    report.tunnels = tunnels.into_iter().map(|(_, t)| t).collect();
    Ok(())
}

fn uplink_report(
    layout: &Layout,
    objects: &Objects,
    rec: &UplinkRecord,
    netns: u32,
    other_netns: bool,
) -> Result<UplinkReport> {
    let present = !other_netns && iface::is_present(&rec.name, rec.ifindex);
    let writer = objects.program(Program::Writer).id();
    Ok(UplinkReport {
        name: rec.name.clone(),
        ifindex: Some(rec.ifindex),
        mode: Some(rec.mode),
        netns: Some(netns),
        other_netns,
        present,
        attached: present
            && layout
                .hook(Program::Writer, &rec.name, rec.ifindex)
                .runs(rec.mode, writer)?,
        cake: rec
            .cake
            .as_ref()
            .map(|c| format!("{:x}:", c.priority_major >> 16)),
        ..Default::default()
    })
}

fn tunnel_report(
    layout: &Layout,
    objects: &Objects,
    registry: &Registry,
    slot: usize,
    rec: &TunnelRecord,
    links: &BTreeMap<(usize, usize), LinkCounters>,
    other_netns: bool,
) -> Result<TunnelReport> {
    let present = !other_netns && iface::is_present(&rec.name, rec.ifindex);
    let mut attached = present;
    for (program, wanted) in [(Program::Reader, rec.reader), (Program::Ingress, rec.ingress)] {
        if let (true, Some(mode)) = (attached, wanted) {
            let id = objects.program(program).id();
            attached = layout.hook(program, &rec.name, rec.ifindex).runs(mode, id)?;
        }
    }
    let uplinks = registry.uplink_names(rec);
    let routes = match present {
        true => route::peer_routes(&Iface::by_name(&rec.name)?).unwrap_or(None),
        false => None,
    }
    .map(|routes| {
        routes
            .into_iter()
            .map(|r| PeerRoute {
                attached: r.uplink.as_ref().is_some_and(|u| uplinks.contains(u)),
                peer: r.peer,
                uplink: r.uplink,
            })
            .collect::<Vec<_>>()
    });
    let unmarked_peers = routes.as_ref().map_or(0, |r| {
        r.iter().filter(|p| p.uplink.is_some() && !p.attached).count()
    });
    let reflection = &rec.reflection;
    let mut counters = tunnel_counters(&per_cpu_row(objects, "tunnel_stats", slot as u32)?);
    for uslot in rec.links.keys() {
        let (Some(link), Some(up)) = (links.get(&(slot, *uslot)), registry.uplink_at(*uslot)) else {
            continue;
        };
        counters.marked += link.marked;
        counters.missed += link.missed;
        counters.handshakes += link.handshakes;
        add_into(&mut counters.marked_by_dscp, &link.marked_by_dscp);
        counters.by_uplink.insert(up.name.clone(), link.clone());
    }
    Ok(TunnelReport {
        name: rec.name.clone(),
        ifindex: Some(rec.ifindex),
        port: match rec.ports {
            PortMatch::Port(p) => Some(p),
            PortMatch::Any => None,
        },
        any_port: rec.ports == PortMatch::Any,
        present,
        mode: rec.reader,
        attached,
        uplinks,
        routes,
        unmarked_peers,
        policy: PolicyReport {
            dscp_map: policy::describe_dscp_map(&rec.policy.map),
            fixed: rec.policy.fixed,
            handshake: rec.policy.handshake,
            priority_only: rec.policy.priority_only,
        },
        reflection: ReflectionReport {
            mode: match (reflection.out, reflection.into) {
                (false, false) => "off",
                (true, false) => "out",
                (false, true) => "in",
                (true, true) => "both",
            }
            .into(),
            override_own: reflection.override_own,
            allow: policy::describe_allow(reflection.allow),
        },
        counters,
    })
}

fn by_dscp(raw: &[u64], base: usize) -> BTreeMap<u8, u64> {
    (0..64u8)
        .filter_map(|d| {
            raw.get(base + usize::from(d))
                .filter(|n| **n != 0)
                .map(|n| (d, *n))
        })
        .collect()
}

fn add_into(total: &mut BTreeMap<u8, u64>, more: &BTreeMap<u8, u64>) {
    for (d, n) in more {
        *total.entry(*d).or_default() += n;
    }
}

fn tunnel_counters(raw: &[u64]) -> TunnelCounters {
    let at = |i: usize| raw.get(i).copied().unwrap_or_default();
    let seen_by_dscp = by_dscp(raw, stats::SEEN);
    TunnelCounters {
        seen: seen_by_dscp.values().sum(),
        seen_by_dscp,
        seen_bytes_by_dscp: by_dscp(raw, stats::SEEN_BYTES),
        flow_inserts: at(stats::INSERTS),
        flow_updates: at(stats::UPDATES),
        not_ip: at(stats::NOT_IP),
        no_hash: at(stats::NO_HASH),
        remapped: at(stats::REMAPPED),
        reflected_out_by_dscp: by_dscp(raw, stats::REFLECTED_OUT),
        reflected_in_by_dscp: by_dscp(raw, stats::REFLECTED_IN),
        reflections_learned: at(stats::LEARNED),
        arrived: at(stats::ARRIVED),
        ..Default::default()
    }
}

fn link_counters(objects: &Objects, row: u16) -> Result<LinkCounters> {
    let raw = per_cpu_row(objects, "link_stats", u32::from(row))?;
    let at = |i: usize| raw.get(i).copied().unwrap_or_default();
    let marked_by_dscp = by_dscp(&raw, stats::MARKED);
    Ok(LinkCounters {
        marked: marked_by_dscp.values().sum(),
        marked_by_dscp,
        marked_bytes: at(stats::MARKED_BYTES),
        missed: at(stats::MISSED),
        handshakes: at(stats::HANDSHAKES),
    })
}

fn per_cpu_row(objects: &Objects, map: &str, row: u32) -> Result<Vec<u64>> {
    let values = objects
        .map(map)
        .lookup_percpu(&row.to_ne_bytes(), MapFlags::ANY)?;
    Ok(values.map(|v| maps::sum_rows(&v)).unwrap_or_default())
}

fn fill(map: &MapHandle) -> Fill {
    Fill {
        entries: map.keys().count(),
        capacity: MapInfo::new(std::os::fd::AsFd::as_fd(map)).map_or(0, |i| i.info.max_entries),
    }
}

/// A layout-1 uplink, read as it is (upgrade pending).
fn legacy_uplink(up: &LegacyUplink) -> Result<UplinkReport> {
    let devices = up.devices()?;
    let here = iface::current_netns()?;
    let uplink = devices.iter().find(|d| d.uplink);
    let other_netns = uplink.is_some_and(|d| d.netns != here);
    let raw = up.counters()?;
    let at = |i: usize| raw.get(i).copied().unwrap_or_default();
    let mut report = UplinkReport {
        name: up.name.clone(),
        ifindex: uplink.map(|d| d.ifindex),
        mode: uplink.map(|d| d.mode),
        netns: uplink.map(|d| d.netns),
        other_netns,
        present: uplink.is_some_and(|d| !other_netns && iface::is_present(&up.name, d.ifindex)),
        map_size: up.flow_map_size(),
        map_entries: up.flows().map(|f| f.len()).unwrap_or_default(),
        counters: Counters {
            marked_by_dscp: by_dscp(&raw, legacy::stat::WRITER_MARKED),
            seen_by_dscp: by_dscp(&raw, legacy::stat::READER_SEEN),
            missed: at(legacy::stat::WRITER_MISS),
            not_tunnel: at(legacy::stat::WRITER_NOT_TUNNEL),
            flow_inserts: at(legacy::stat::READER_INSERT),
            flow_updates: at(legacy::stat::READER_UPDATE),
            not_ip: at(legacy::stat::READER_NOT_IP),
            ..Default::default()
        },
        ..Default::default()
    };
    report.counters.marked = report.counters.marked_by_dscp.values().sum();
    report.counters.seen = report.counters.seen_by_dscp.values().sum();
    report.attached =
        report.present && legacy_runs(up, "writer", &up.writer_link(), report.ifindex, report.mode)?;
    for name in up.tunnel_dirs()? {
        let dev = devices.iter().find(|d| !d.uplink && d.name == name);
        let present = dev.is_some_and(|d| !other_netns && iface::is_present(&name, d.ifindex));
        report.tunnels.push(TunnelOnUplink {
            ifindex: dev.map(|d| d.ifindex),
            port: match dev.and_then(|d| d.ports) {
                Some(PortMatch::Port(p)) => Some(p),
                _ => None,
            },
            any_port: dev.and_then(|d| d.ports) == Some(PortMatch::Any),
            present,
            attached: present
                && legacy_runs(
                    up,
                    "reader",
                    &up.reader_link(&name),
                    dev.map(|d| d.ifindex),
                    dev.map(|d| d.mode),
                )?,
            name,
        });
    }
    Ok(report)
}

fn legacy_runs(
    up: &LegacyUplink,
    prog: &str,
    link: &Path,
    ifindex: Option<u32>,
    mode: Option<Mode>,
) -> Result<bool> {
    let (Some(ifindex), Some(mode), Some(id)) = (ifindex, mode, up.program_id(prog)) else {
        return Ok(false);
    };
    let program = if prog == "writer" {
        Program::Writer
    } else {
        Program::Reader
    };
    let hook = crate::kernel::hook::Hook {
        program,
        ifindex,
        link_pin: link.to_path_buf(),
    };
    hook.runs(mode, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_counters_sum_per_dscp() {
        let mut raw = vec![0u64; 4 * 64 + 8];
        raw[stats::SEEN + 46] = 5;
        raw[stats::SEEN] = 2;
        raw[stats::SEEN_BYTES + 46] = 500;
        raw[stats::INSERTS] = 3;
        let c = tunnel_counters(&raw);
        assert_eq!((c.seen, c.flow_inserts), (7, 3));
        assert_eq!(c.seen_by_dscp, BTreeMap::from([(0, 2), (46, 5)]));
        assert_eq!(c.seen_bytes_by_dscp, BTreeMap::from([(46, 500)]));
    }
}
