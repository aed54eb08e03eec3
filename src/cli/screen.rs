//! The live view's screen (`status --watch`): rates between two status
//! reports, per tunnel and DSCP class, then per uplink, in at most 80
//! columns of plain text. Pure: src/cli/watch.rs samples and draws it.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::commands::status::{Report, TunnelCounters};
use crate::policy::dscp_name;

/// The screen for the change from `prev` to `cur`, `seconds` apart.
pub fn render(prev: &Report, cur: &Report, seconds: f64, clock: &str, every: f64) -> Vec<String> {
    let per_s = |n: u64| n as f64 / seconds.max(0.001);
    let mut lines = vec![
        format!(
            "{:<62}{:>17}",
            format!("pdscp {} status, every {every} s, {clock} UTC", cur.version.pdscp),
            "q or Ctrl-C quits"
        ),
        format!(
            "{:<16} {:<8} {:>9} {:>10} {:>10} {:>10}",
            "TUNNEL", "CLASS", "PKT/S", "BYTES/S", "MARKED/S", "MISSED/S"
        ),
    ];
    if cur.tunnels.is_empty() {
        lines.push("(no tunnel attached)".into());
    }
    for t in &cur.tunnels {
        let before = prev
            .tunnels
            .iter()
            .find(|p| p.name == t.name && p.ifindex == t.ifindex)
            .map(|p| p.counters.clone())
            .unwrap_or_default();
        let d = t.counters.since(&before);
        let name = match (t.present, t.attached) {
            (false, _) => format!("{} (gone)", t.name),
            (true, false) => format!("{} (detached)", t.name),
            _ => t.name.clone(),
        };
        let classes = active_classes(&d);
        if classes.is_empty() {
            lines.push(format!("{name:<16} {:<8}", "idle"));
        }
        for (i, dscp) in classes.iter().enumerate() {
            let get = |m: &BTreeMap<u8, u64>| m.get(dscp).copied().unwrap_or(0);
            lines.push(format!(
                "{:<16} {:<8} {:>9} {:>10} {:>10}",
                if i == 0 { name.as_str() } else { "" },
                dscp_name(*dscp),
                rate(per_s(get(&d.seen_by_dscp))),
                rate(per_s(get(&d.seen_bytes_by_dscp))),
                rate(per_s(get(&d.marked_by_dscp))),
            ));
        }
        if !classes.is_empty() {
            lines.push(format!(
                "{:<16} {:<8} {:>9} {:>10} {:>10} {:>10}",
                "",
                "all",
                rate(per_s(d.seen)),
                rate(per_s(d.seen_bytes_by_dscp.values().sum())),
                rate(per_s(d.marked)),
                rate(per_s(d.missed)),
            ));
        }
        if d.by_uplink.len() > 1 {
            for (up, link) in &d.by_uplink {
                lines.push(format!(
                    "{:<16} via {:<14} {:>10} {:>10} {:>10}",
                    "",
                    up,
                    rate(per_s(link.marked_bytes)),
                    rate(per_s(link.marked)),
                    rate(per_s(link.missed)),
                ));
            }
        }
    }
    lines.push(format!(
        "{:<16} {:<8} {:>9} {:>10} {:>10} {:>10}",
        "UPLINK", "MODE", "OTHER/S", "", "MARKED/S", "MISSED/S"
    ));
    for u in &cur.uplinks {
        let before = prev
            .uplinks
            .iter()
            .find(|p| p.name == u.name && p.ifindex == u.ifindex);
        let delta = |f: fn(&crate::commands::status::Counters) -> u64| {
            let b = before.map(|p| f(&p.counters)).unwrap_or(0);
            per_s(f(&u.counters).saturating_sub(b))
        };
        let state = match (u.present, u.attached) {
            (false, _) => "gone",
            (true, false) => "detached",
            _ => u.mode.map_or("?", |m| m.name()),
        };
        lines.push(format!(
            "{:<16} {:<8} {:>9} {:>10} {:>10} {:>10}",
            u.name,
            state,
            rate(delta(|c| c.not_tunnel)),
            "",
            rate(delta(|c| c.marked)),
            rate(delta(|c| c.missed)),
        ));
    }
    lines
}

/// The classes with packets seen or marked in the interval.
fn active_classes(d: &TunnelCounters) -> BTreeSet<u8> {
    let mut classes: BTreeSet<u8> = d.seen_by_dscp.keys().copied().collect();
    classes.extend(d.marked_by_dscp.keys().copied());
    classes
}

/// "0", "12.5", "3.2k", "45.1M": at most six characters.
pub fn rate(v: f64) -> String {
    let mut out = String::new();
    let _ = match v {
        v if v < 0.05 => write!(out, "0"),
        v if v < 1000.0 => write!(out, "{v:.1}"),
        v if v < 999_950.0 => write!(out, "{:.1}k", v / 1e3),
        v if v < 999_950_000.0 => write!(out, "{:.1}M", v / 1e6),
        v => write!(out, "{:.1}G", v / 1e9),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::text::tests::report;

    #[test]
    fn rates_fit_six_characters() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(200.0), "200.0");
        assert_eq!(rate(29_640.0), "29.6k");
        assert_eq!(rate(123_456_789.0), "123.5M");
    }

    #[test]
    fn the_screen_shows_rates_per_class_in_80_columns() {
        let prev = report();
        let mut cur = report();
        let c = &mut cur.tunnels[0].counters;
        *c.seen_by_dscp.entry(46).or_default() += 400;
        *c.seen_bytes_by_dscp.entry(46).or_default() += 59_200;
        *c.marked_by_dscp.entry(46).or_default() += 400;
        c.seen += 400;
        c.marked += 400;
        cur.tunnels[0].present = true;
        cur.tunnels[0].attached = true;
        let lines = render(&prev, &cur, 2.0, "18:40:01", 2.0);
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{lines:#?}");
        let ef = lines.iter().find(|l| l.contains(" ef ")).expect("an ef row");
        let cols: Vec<&str> = ef.split_whitespace().collect();
        assert_eq!(cols, ["wg0", "ef", "200.0", "29.6k", "200.0"], "{ef}");
    }
}
