//! How `status` and `check` print for people. (`--json` is the serde form,
//! `--prometheus` is src/cli/prometheus.rs.)
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::commands::check::{Diagnosis, Level};
use crate::commands::status::{Report, TunnelReport};

use crate::model::Mode;

/// The report for people.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let v = &report.version;
    if report.uplinks.is_empty() && report.tunnels.is_empty() {
        let _ = writeln!(out, "nothing attached (pin root {})", report.pin_root);
        return out;
    }
    let _ = writeln!(
        out,
        "pdscp {}; state {} (layout {}){}; flows {}/{}, reflect {}/{}",
        v.pdscp,
        v.state.as_deref().unwrap_or("-"),
        v.layout.map_or("-".into(), |l| l.to_string()),
        if v.upgrade_pending {
            ", UPGRADE PENDING (pdscp upgrade)"
        } else {
            ""
        },
        report.flows.entries,
        report.flows.capacity,
        report.reflect.entries,
        report.reflect.capacity,
    );
    for up in &report.uplinks {
        let mode = up.mode.map(Mode::name).unwrap_or("-");
        let _ = writeln!(
            out,
            "uplink {} (ifindex {}, mode {mode}, {}{}): flows {}/{}{}",
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
            up.cake.as_ref().map_or(String::new(), |c| format!(", CAKE {c}")),
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
            let _ = writeln!(out, "  marked by dscp {}", by_dscp(&c.marked_by_dscp));
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
    for t in &report.tunnels {
        tunnel_text(&mut out, t);
    }
    out
}

fn tunnel_text(out: &mut String, t: &TunnelReport) {
    let port = t.port.map_or("any port".into(), |p| format!("port {p}"));
    let _ = writeln!(
        out,
        "tunnel {} ({port}, mode {}, {}{}) on {}",
        t.name,
        t.mode.map_or("-", Mode::name),
        if t.present { "present" } else { "DEVICE GONE" },
        if t.attached {
            ", attached"
        } else {
            ", NOT ATTACHED"
        },
        t.uplinks.join(", "),
    );
    if let Some(routes) = &t.routes {
        let listed: Vec<String> = routes
            .iter()
            .map(|r| match (&r.uplink, r.attached) {
                (Some(u), true) => format!("{} via {u}", r.peer),
                (Some(u), false) => format!("{} via {u} (NOT ATTACHED THERE: leaves unmarked)", r.peer),
                (None, _) => format!("{} unrouted", r.peer),
            })
            .collect();
        if !listed.is_empty() {
            let _ = writeln!(out, "  peers: {}", listed.join("; "));
        }
    }
    let p = &t.policy;
    let mut policy = vec![format!("dscp-map {}", p.dscp_map)];
    policy.extend(p.fixed.map(|d| format!("fixed {d}")));
    policy.extend(p.handshake.map(|d| format!("handshake {d}")));
    if p.priority_only {
        policy.push("priority-only".into());
    }
    let r = &t.reflection;
    let reflect = match r.mode.as_str() {
        "off" => "reflect off".to_string(),
        mode => format!(
            "reflect {mode} (allow {}{})",
            r.allow,
            if r.override_own { ", override" } else { "" }
        ),
    };
    let _ = writeln!(out, "  {}; {reflect}", policy.join(", "));
    let c = &t.counters;
    let _ = writeln!(
        out,
        "  seen {}  marked {}  missed {}  inserts {}  updates {}  remapped {}",
        c.seen, c.marked, c.missed, c.flow_inserts, c.flow_updates, c.remapped
    );
    for (label, counts) in [
        ("seen by dscp", &c.seen_by_dscp),
        ("marked by dscp", &c.marked_by_dscp),
        ("reflected out by dscp", &c.reflected_out_by_dscp),
        ("reflected in by dscp", &c.reflected_in_by_dscp),
    ] {
        if !counts.is_empty() {
            let _ = writeln!(out, "  {label} {}", by_dscp(counts));
        }
    }
}

/// `pdscp check`'s screen: one verdict per line, the conclusion last.
pub fn check_text(d: &Diagnosis) -> String {
    let mut out = format!("pdscp check {}: watched for {} s\n", d.tunnel, d.seconds);
    for f in &d.findings {
        let level = match f.level {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        let _ = writeln!(out, "  {level:<5}{:<9}{}", f.topic, f.text);
    }
    let failed: Vec<&str> = d
        .findings
        .iter()
        .filter(|f| f.level == Level::Fail)
        .map(|f| f.topic)
        .collect();
    let _ = match (d.flowing, failed.is_empty()) {
        (true, _) => writeln!(out, "marks are flowing"),
        (false, false) => writeln!(out, "marks are NOT flowing: see FAIL {} above", failed.join(", ")),
        (false, true) => writeln!(out, "marks are NOT flowing: no marked traffic was seen"),
    };
    out
}

fn by_dscp(counts: &BTreeMap<u8, u64>) -> String {
    counts
        .iter()
        .map(|(d, n)| format!("{d}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::commands::status::{Counters, LinkCounters, TunnelOnUplink, UplinkReport};

    pub(crate) fn report() -> Report {
        let mut counters = Counters::default();
        counters.marked_by_dscp.insert(46, 5);
        counters.missed = 2;
        let mut report = Report::empty(std::path::Path::new("/sys/fs/bpf/preserve-dscp"));
        report.flows.capacity = 16384;
        report.uplinks.push(UplinkReport {
            name: "eth\"0".into(),
            ifindex: Some(2),
            mode: Some(Mode::Tcx),
            present: true,
            attached: true,
            counters,
            tunnels: vec![TunnelOnUplink {
                name: "wg0".into(),
                ifindex: Some(3),
                port: Some(51820),
                any_port: false,
                present: true,
                attached: true,
            }],
            ..Default::default()
        });
        let mut t = TunnelReport {
            name: "wg0".into(),
            unmarked_peers: 1,
            ..Default::default()
        };
        t.counters.seen_by_dscp.insert(46, 7);
        let mut link = LinkCounters::default();
        link.marked_by_dscp.insert(46, 5);
        t.counters.by_uplink.insert("eth\"0".into(), link);
        report.tunnels.push(t);
        report
    }

    #[test]
    fn text_names_marks_per_dscp() {
        let text = text(&report());
        assert!(text.contains("marked by dscp 46:5"), "{text}");
        assert!(text.contains("tunnel wg0"), "{text}");
    }
}
