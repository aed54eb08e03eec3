//! `pdscp status`: what is pinned, what the kernel has attached, and the counters.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::attach::{self, Mode};
use crate::bpffs::PinRoot;
use crate::cli::PortMatch;
use crate::iface;
use crate::pins::{stat, Role};

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

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.uplinks.is_empty() {
            let _ = writeln!(out, "nothing attached (pin root {})", self.pin_root);
            return out;
        }
        for up in &self.uplinks {
            let mode = up.mode.map(Mode::name).unwrap_or("-");
            let _ = writeln!(
                out,
                "uplink {} (ifindex {}, mode {mode}, {}{}): flows {}/{}",
                up.name,
                up.ifindex.map_or("-".into(), |i| i.to_string()),
                match (up.other_netns, up.present) {
                    (true, _) => "in another netns",
                    (false, true) => "present",
                    (false, false) => "DEVICE GONE",
                },
                match (up.other_netns, up.attached) {
                    (true, _) => "",
                    (false, true) => ", attached",
                    (false, false) => ", NOT ATTACHED",
                },
                up.map_entries,
                up.map_size,
            );
            if let Some(err) = &up.error {
                let _ = writeln!(out, "  error: {err}");
            }
            let c = &up.counters;
            let _ = writeln!(
                out,
                "  marked {}  missed {}  not-tunnel {}  seen {}  inserts {}  updates {}",
                c.marked, c.missed, c.not_tunnel, c.seen, c.flow_inserts, c.flow_updates
            );
            if !c.marked_by_dscp.is_empty() {
                let by: Vec<String> = c.marked_by_dscp.iter().map(|(d, n)| format!("{d}:{n}")).collect();
                let _ = writeln!(out, "  marked by dscp {}", by.join(" "));
            }
            let _ = writeln!(
                out,
                "  {:<16} {:>8} {:>8} {:>8} {:>9}",
                "TUNNEL", "IFINDEX", "PORT", "DEVICE", "ATTACHED"
            );
            for t in &up.tunnels {
                let port = if t.any_port {
                    "any".to_string()
                } else {
                    t.port.map_or("-".into(), |p| p.to_string())
                };
                let _ = writeln!(
                    out,
                    "  {:<16} {:>8} {:>8} {:>8} {:>9}",
                    t.name,
                    t.ifindex.map_or("-".into(), |i| i.to_string()),
                    port,
                    if t.present { "present" } else { "gone" },
                    if t.attached { "yes" } else { "no" },
                );
            }
        }
        out
    }
}

impl Report {
    /// node_exporter textfile-collector format.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP pdscp_{name} {help}\n# TYPE pdscp_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "pdscp_{name}{{{labels}}} {value}");
            }
        };
        let per_uplink = |f: &dyn Fn(&UplinkReport) -> u64| -> Vec<(String, u64)> {
            self.uplinks
                .iter()
                .map(|u| (format!("uplink=\"{}\"", escape(&u.name)), f(u)))
                .collect()
        };
        let per_dscp = |f: &dyn Fn(&Counters) -> &BTreeMap<u8, u64>| -> Vec<(String, u64)> {
            let mut samples = Vec::new();
            for u in &self.uplinks {
                for (dscp, n) in f(&u.counters) {
                    samples.push((format!("uplink=\"{}\",dscp=\"{dscp}\"", escape(&u.name)), *n));
                }
            }
            samples
        };
        family(
            "marked_packets_total",
            "counter",
            "Outer packets given a DSCP by the writer.",
            per_dscp(&|c| &c.marked_by_dscp),
        );
        family(
            "seen_packets_total",
            "counter",
            "Inner packets the readers saw, by their DSCP.",
            per_dscp(&|c| &c.seen_by_dscp),
        );
        family(
            "missed_packets_total",
            "counter",
            "Tunnel packets on the uplink with no flow entry.",
            per_uplink(&|u| u.counters.missed),
        );
        family(
            "not_tunnel_packets_total",
            "counter",
            "Uplink packets not from an attached tunnel.",
            per_uplink(&|u| u.counters.not_tunnel),
        );
        family(
            "flow_inserts_total",
            "counter",
            "Flow entries created.",
            per_uplink(&|u| u.counters.flow_inserts),
        );
        family(
            "flow_updates_total",
            "counter",
            "Flows whose mark changed.",
            per_uplink(&|u| u.counters.flow_updates),
        );
        family(
            "flow_entries",
            "gauge",
            "Entries in the flow map.",
            per_uplink(&|u| u.map_entries as u64),
        );
        family(
            "flow_capacity",
            "gauge",
            "Size of the flow map.",
            per_uplink(&|u| u.map_size as u64),
        );
        family(
            "uplink_attached",
            "gauge",
            "1 if the writer runs on the uplink.",
            per_uplink(&|u| u.attached as u64),
        );
        let tunnels = self
            .uplinks
            .iter()
            .flat_map(|u| {
                u.tunnels.iter().map(move |t| {
                    (
                        format!("uplink=\"{}\",tunnel=\"{}\"", escape(&u.name), escape(&t.name)),
                        t.attached as u64,
                    )
                })
            })
            .collect();
        family(
            "tunnel_attached",
            "gauge",
            "1 if the reader runs on the tunnel.",
            tunnels,
        );
        out
    }
}

/// Label value escaping of the Prometheus text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn collect(root: &PinRoot) -> Result<Report> {
    let mut report = Report::empty(&root.path);
    let netns = iface::current_netns()?;
    for pins in root.uplinks()? {
        let tunnel_names = pins.tunnel_names()?;
        let mut up = UplinkReport {
            name: pins.name.clone(),
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
        let uplink = match pins.open() {
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
        let entries = uplink.ifaces()?;
        if let Some((ifindex, cfg)) = entries.iter().find(|(_, c)| c.role == Role::Uplink) {
            up.ifindex = Some(*ifindex);
            up.mode = Some(cfg.mode);
            up.netns = Some(cfg.netns);
            up.other_netns = cfg.netns != netns;
            up.present = !up.other_netns && iface::is_present(&pins.name, *ifindex);
            up.attached = up.present
                && match cfg.mode {
                    Mode::Tcx => attach::tcx_state(&pins.uplink_link())?
                        .is_some_and(|s| s.ifindex == *ifindex && s.prog_id == uplink.writer.id()),
                    Mode::Tc => attach::tc_state(*ifindex, Role::Uplink)? == Some(uplink.writer.id()),
                };
        }
        up.map_entries = uplink.flow_entries();
        up.map_size = uplink.flow_capacity()?;
        up.counters = counters(&uplink.counters()?);
        for name in tunnel_names {
            let recorded = entries
                .iter()
                .find(|(_, c)| c.role == Role::Tunnel && c.name == name);
            let mut t = TunnelReport {
                name: name.clone(),
                ifindex: None,
                port: None,
                any_port: false,
                present: false,
                attached: false,
            };
            if let Some((ifindex, cfg)) = recorded {
                t.ifindex = Some(*ifindex);
                match cfg.ports {
                    Some(PortMatch::Port(p)) => t.port = Some(p),
                    Some(PortMatch::Any) => t.any_port = true,
                    None => {}
                }
                t.present = !up.other_netns && iface::is_present(&name, *ifindex);
                t.attached = t.present
                    && match cfg.mode {
                        Mode::Tcx => attach::tcx_state(&pins.tunnel_link(&name))?
                            .is_some_and(|s| s.ifindex == *ifindex && s.prog_id == uplink.reader.id()),
                        Mode::Tc => attach::tc_state(*ifindex, Role::Tunnel)? == Some(uplink.reader.id()),
                    };
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
    fn prometheus_text_format() {
        let mut counters = Counters::default();
        counters.marked_by_dscp.insert(46, 5);
        counters.missed = 2;
        let report = Report {
            pin_root: "/sys/fs/bpf/preserve-dscp".into(),
            uplinks: vec![UplinkReport {
                name: "eth\"0".into(),
                ifindex: Some(2),
                mode: Some(Mode::Tcx),
                netns: Some(1),
                other_netns: false,
                present: true,
                attached: true,
                map_entries: 3,
                map_size: 16384,
                counters,
                tunnels: vec![TunnelReport {
                    name: "wg0".into(),
                    ifindex: Some(3),
                    port: Some(51820),
                    any_port: false,
                    present: true,
                    attached: true,
                }],
                error: None,
            }],
        };
        let text = report.to_prometheus();
        assert!(
            text.contains("# TYPE pdscp_marked_packets_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("pdscp_marked_packets_total{uplink=\"eth\\\"0\",dscp=\"46\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("pdscp_missed_packets_total{uplink=\"eth\\\"0\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("pdscp_tunnel_attached{uplink=\"eth\\\"0\",tunnel=\"wg0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pdscp_flow_capacity{uplink=\"eth\\\"0\"} 16384\n"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("pdscp_") && line.contains("} "), "{line}");
        }
    }

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
