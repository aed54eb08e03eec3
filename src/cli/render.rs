//! How `status` prints: text for people, node_exporter's textfile format
//! for Prometheus. (`--json` is the report's serde form.)
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::commands::status::{Counters, Report, UplinkReport};
use crate::model::Mode;

/// The report for people.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    if report.uplinks.is_empty() {
        let _ = writeln!(out, "nothing attached (pin root {})", report.pin_root);
        return out;
    }
    for up in &report.uplinks {
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

/// node_exporter textfile-collector format.
pub fn prometheus(report: &Report) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP pdscp_{name} {help}\n# TYPE pdscp_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "pdscp_{name}{{{labels}}} {value}");
        }
    };
    let per_uplink = |f: &dyn Fn(&UplinkReport) -> u64| -> Vec<(String, u64)> {
        report
            .uplinks
            .iter()
            .map(|u| (format!("uplink=\"{}\"", escape(&u.name)), f(u)))
            .collect()
    };
    let per_dscp = |f: &dyn Fn(&Counters) -> &BTreeMap<u8, u64>| -> Vec<(String, u64)> {
        let mut samples = Vec::new();
        for u in &report.uplinks {
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
    let tunnels = report
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

/// Label value escaping of the Prometheus text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::status::TunnelReport;

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
        let text = prometheus(&report);
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
}
