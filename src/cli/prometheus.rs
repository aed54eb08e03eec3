//! `status --prometheus`: node_exporter's textfile-collector format.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::commands::status::{Report, TunnelReport};

/// Per-DSCP counts under extra labels.
type DscpCounts<'a> = Vec<(String, &'a BTreeMap<u8, u64>)>;

/// One metric family of the Prometheus text format.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn write(&mut self, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
        let _ = writeln!(self.out, "# HELP pdscp_{name} {help}\n# TYPE pdscp_{name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.out, "pdscp_{name} {value}");
            } else {
                let _ = writeln!(self.out, "pdscp_{name}{{{labels}}} {value}");
            }
        }
    }
}

/// node_exporter textfile-collector format.
pub fn prometheus(report: &Report) -> String {
    let mut out = String::new();
    let mut family = Family { out: &mut out };
    let uplink = |name: &str| format!("uplink=\"{}\"", escape(name));
    let tunnel = |name: &str| format!("tunnel=\"{}\"", escape(name));
    let per_uplink = |f: &dyn Fn(&crate::commands::status::UplinkReport) -> u64| -> Vec<(String, u64)> {
        report.uplinks.iter().map(|u| (uplink(&u.name), f(u))).collect()
    };
    let per_dscp =
        |select: &dyn Fn(&crate::commands::status::Counters) -> &BTreeMap<u8, u64>| -> Vec<(String, u64)> {
            let mut samples = Vec::new();
            for u in &report.uplinks {
                for (dscp, n) in select(&u.counters) {
                    samples.push((format!("{},dscp=\"{dscp}\"", uplink(&u.name)), *n));
                }
            }
            samples
        };
    let marked = per_dscp(&|c| &c.marked_by_dscp);
    let seen = per_dscp(&|c| &c.seen_by_dscp);
    family.write(
        "marked_packets_total",
        "counter",
        "Outer packets given a mark by the writer on the uplink.",
        &marked,
    );
    family.write(
        "seen_packets_total",
        "counter",
        "Inner packets the readers of the uplink's tunnels saw, by their DSCP.",
        &seen,
    );
    family.write(
        "missed_packets_total",
        "counter",
        "Tunnel packets on the uplink with no flow entry.",
        &per_uplink(&|u| u.counters.missed),
    );
    family.write(
        "not_tunnel_packets_total",
        "counter",
        "Uplink packets not from an attached tunnel.",
        &per_uplink(&|u| u.counters.not_tunnel),
    );
    family.write(
        "flow_inserts_total",
        "counter",
        "Flow entries created by the uplink's tunnels.",
        &per_uplink(&|u| u.counters.flow_inserts),
    );
    family.write(
        "flow_updates_total",
        "counter",
        "Flows of the uplink's tunnels whose mark changed.",
        &per_uplink(&|u| u.counters.flow_updates),
    );
    family.write(
        "uplink_attached",
        "gauge",
        "1 if the writer runs on the uplink.",
        &per_uplink(&|u| u.attached as u64),
    );
    family.write(
        "flow_entries",
        "gauge",
        "Entries in the shared flow map.",
        &[(String::new(), report.flows.entries as u64)],
    );
    family.write(
        "flow_capacity",
        "gauge",
        "Size of the shared flow map.",
        &[(String::new(), u64::from(report.flows.capacity))],
    );
    family.write(
        "reflect_entries",
        "gauge",
        "Entries in the reflection map.",
        &[(String::new(), report.reflect.entries as u64)],
    );
    family.write(
        "reflect_capacity",
        "gauge",
        "Size of the reflection map.",
        &[(String::new(), u64::from(report.reflect.capacity))],
    );
    family.write(
        "upgrade_pending",
        "gauge",
        "1 if an older pdscp made the state and the next command will upgrade it.",
        &[(String::new(), report.version.upgrade_pending as u64)],
    );
    let on_uplinks: Vec<(String, u64)> = report
        .uplinks
        .iter()
        .flat_map(|u| {
            u.tunnels.iter().map(move |t| {
                (
                    format!("{},{}", uplink(&u.name), tunnel(&t.name)),
                    t.attached as u64,
                )
            })
        })
        .collect();
    family.write(
        "tunnel_attached",
        "gauge",
        "1 if the reader runs on the tunnel.",
        &on_uplinks,
    );
    let mut tunnel_dscp = |name: &str, help: &str, select: &dyn Fn(&TunnelReport) -> DscpCounts<'_>| {
        let mut samples = Vec::new();
        for t in &report.tunnels {
            for (extra, counts) in select(t) {
                for (dscp, n) in counts {
                    samples.push((format!("{}{extra},dscp=\"{dscp}\"", tunnel(&t.name)), *n));
                }
            }
        }
        family.write(name, "counter", help, &samples);
    };
    tunnel_dscp(
        "tunnel_seen_packets_total",
        "Inner packets leaving by the tunnel, by DSCP (GSO packets as segments).",
        &|t| vec![(String::new(), &t.counters.seen_by_dscp)],
    );
    tunnel_dscp(
        "tunnel_seen_bytes_total",
        "Inner bytes leaving by the tunnel, by DSCP.",
        &|t| vec![(String::new(), &t.counters.seen_bytes_by_dscp)],
    );
    tunnel_dscp(
        "tunnel_marked_packets_total",
        "The tunnel's outer packets given a mark, by uplink and mark.",
        &|t| {
            t.counters
                .by_uplink
                .iter()
                .map(|(u, c)| (format!(",{}", uplink(u)), &c.marked_by_dscp))
                .collect()
        },
    );
    tunnel_dscp(
        "tunnel_reflected_packets_total",
        "Packets given the mark their flow carried the other way.",
        &|t| {
            vec![
                (
                    ",direction=\"out\"".to_string(),
                    &t.counters.reflected_out_by_dscp,
                ),
                (",direction=\"in\"".to_string(), &t.counters.reflected_in_by_dscp),
            ]
        },
    );
    let per_link = |f: &dyn Fn(&crate::commands::status::LinkCounters) -> u64| -> Vec<(String, u64)> {
        report
            .tunnels
            .iter()
            .flat_map(|t| {
                t.counters
                    .by_uplink
                    .iter()
                    .map(move |(u, c)| (format!("{},{}", uplink(u), tunnel(&t.name)), f(c)))
            })
            .collect()
    };
    let missed = per_link(&|c| c.missed);
    let handshakes = per_link(&|c| c.handshakes);
    let per_tunnel = |f: &dyn Fn(&TunnelReport) -> u64| -> Vec<(String, u64)> {
        report.tunnels.iter().map(|t| (tunnel(&t.name), f(t))).collect()
    };
    family.write(
        "tunnel_missed_packets_total",
        "counter",
        "The tunnel's outer packets with no flow entry, by uplink.",
        &missed,
    );
    family.write(
        "tunnel_handshake_packets_total",
        "counter",
        "WireGuard handshakes given --handshake-dscp, by uplink.",
        &handshakes,
    );
    family.write(
        "tunnel_flow_inserts_total",
        "counter",
        "Flow entries the tunnel's reader created.",
        &per_tunnel(&|t| t.counters.flow_inserts),
    );
    family.write(
        "tunnel_flow_updates_total",
        "counter",
        "Flows of the tunnel whose mark changed.",
        &per_tunnel(&|t| t.counters.flow_updates),
    );
    family.write(
        "tunnel_remapped_packets_total",
        "counter",
        "Packets whose outer mark differs from their inner DSCP.",
        &per_tunnel(&|t| t.counters.remapped),
    );
    family.write(
        "tunnel_unmarked_peers",
        "gauge",
        "Peers routed over an uplink the tunnel is not attached to (their packets leave unmarked).",
        &per_tunnel(&|t| t.unmarked_peers as u64),
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
    use crate::cli::text::tests::report;

    #[test]
    fn prometheus_text_format() {
        let text = prometheus(&report());
        for want in [
            "# TYPE pdscp_marked_packets_total counter\n",
            "pdscp_marked_packets_total{uplink=\"eth\\\"0\",dscp=\"46\"} 5\n",
            "pdscp_missed_packets_total{uplink=\"eth\\\"0\"} 2\n",
            "pdscp_tunnel_attached{uplink=\"eth\\\"0\",tunnel=\"wg0\"} 1\n",
            "pdscp_flow_capacity 16384\n",
            "pdscp_tunnel_seen_packets_total{tunnel=\"wg0\",dscp=\"46\"} 7\n",
            "pdscp_tunnel_marked_packets_total{tunnel=\"wg0\",uplink=\"eth\\\"0\",dscp=\"46\"} 5\n",
            "pdscp_tunnel_unmarked_peers{tunnel=\"wg0\"} 1\n",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("pdscp_") && line.contains(' '), "{line}");
        }
    }
}
