//! `pdscp check`'s reasoning, from the facts gathered (src/commands/check/mod.rs)
//! to findings, each a verdict with its evidence, and whether marks flow. Pure.

use super::facts::{non_zero, Attached, Diagnosis, Facts, Findings, Level};
use super::observed;
use crate::commands::report::TunnelCounters;
use crate::kernel::features;
use crate::policy::dscp_name;

pub fn diagnose(facts: &Facts) -> Diagnosis {
    let mut found = Findings(Vec::new());
    let t = &facts.tunnel;
    let Some(a) = &facts.attached else {
        found.add(
            Level::Fail,
            "attached",
            format!("{t} is not attached: run `pdscp attach {t}` (with --uplink UPLINK if its peers' routes do not say)"),
        );
        userspace(facts, None, &mut found);
        return finish(facts, found, TunnelCounters::default());
    };
    device(facts, a, &mut found);
    kernel(facts, &mut found);
    uplinks(t, a, &mut found);
    routes(t, a, &mut found);
    observed::wire(t, a, &mut found);
    observed::traffic(facts, a, &mut found);
    let marks = non_zero(&a.traffic.marked_by_dscp) > 0;
    let mut diagnosis = finish(facts, found, a.traffic.clone());
    diagnosis.flowing = marks && !diagnosis.findings.iter().any(|f| f.level == Level::Fail);
    diagnosis
}

fn finish(facts: &Facts, found: Findings, traffic: TunnelCounters) -> Diagnosis {
    Diagnosis {
        tunnel: facts.tunnel.clone(),
        seconds: facts.seconds,
        flowing: false,
        findings: found.0,
        traffic,
    }
}

fn device(facts: &Facts, a: &Attached, found: &mut Findings) {
    let t = &facts.tunnel;
    match facts.current_ifindex {
        None => found.add(
            Level::Fail,
            "device",
            format!("{t} (ifindex {}) no longer exists; `pdscp gc` releases it, `pdscp attach {t}` marks it again once it is back", a.ifindex),
        ),
        Some(now) if now != a.ifindex => found.add(
            Level::Fail,
            "device",
            format!(
                "{t} was recreated (ifindex {} is now {now}): the reader went with the old device; \
                 run `pdscp attach {t}` again (the ifup hook does)",
                a.ifindex
            ),
        ),
        Some(_) => match (a.reader, a.reader_runs) {
            (Some(mode), false) => found.add(
                Level::Fail,
                "reader",
                format!("the reader is not running on {t} (its {} hook is gone): run `pdscp attach {t}` again", mode.name()),
            ),
            (Some(mode), true) => found.add(Level::Ok, "reader", format!("the reader runs on {t} (ifindex {}, {})", a.ifindex, mode.name())),
            (None, _) => found.add(
                Level::Ok,
                "reader",
                format!("{t} has a fixed mark ({}): no reader needed", dscp_name(a.fixed.unwrap_or(0))),
            ),
        },
    }
    userspace(facts, a.fixed, found);
}

/// A userspace tunnel's outer packets come from a socket that does not
/// carry the inner flow's hash: only a fixed mark works there.
fn userspace(facts: &Facts, fixed: Option<u8>, found: &mut Findings) {
    let t = &facts.tunnel;
    if facts.driver.as_deref() == Some("tun") && fixed.is_none() {
        found.add(
            Level::Fail,
            "device",
            format!(
                "{t} is a TUN device (userspace WireGuard: wireguard-go, boringtun?): its outer packets come from a \
                 userspace socket that does not carry the inner flow's hash, so no mark can be copied; use kernel \
                 WireGuard, or one mark for the whole tunnel: `pdscp attach {t} --fixed DSCP --port PORT`"
            ),
        );
    }
}

fn kernel(facts: &Facts, found: &mut Findings) {
    let k = &facts.kernel;
    let (major, minor) = features::MINIMUM;
    if features::version(k) < features::MINIMUM {
        found.add(
            Level::Fail,
            "kernel",
            format!("kernel {k} is older than {major}.{minor}, the oldest pdscp supports: WireGuard keeps the flow hash only since 5.7"),
        );
    } else {
        found.add(
            Level::Ok,
            "kernel",
            format!("kernel {k} keeps the flow hash across WireGuard and VXLAN"),
        );
    }
}

fn uplinks(t: &str, a: &Attached, found: &mut Findings) {
    if a.uplinks.is_empty() {
        found.add(
            Level::Fail,
            "uplink",
            format!("{t} is attached to no uplink: `pdscp attach {t} --uplink UPLINK`"),
        );
    }
    for u in &a.uplinks {
        let mode = u.mode.map_or("?", |m| m.name());
        if !u.present {
            found.add(Level::Warn, "uplink", format!("uplink {} is gone: the next `pdscp attach {t}` or `pdscp gc` after it is back re-attaches it", u.name));
        } else if !u.writer_runs {
            found.add(
                Level::Fail,
                "uplink",
                format!("the writer is not running on {} ({mode} hook gone): run `pdscp attach {t} --uplink {}` again", u.name, u.name),
            );
        } else {
            found.add(
                Level::Ok,
                "uplink",
                format!("the writer runs on {} ({mode})", u.name),
            );
        }
    }
}

fn routes(t: &str, a: &Attached, found: &mut Findings) {
    let Some(routes) = &a.routes else {
        found.add(
            Level::Info,
            "route",
            format!("pdscp cannot tell where {t}'s peers are (neither WireGuard nor VXLAN)"),
        );
        return;
    };
    for r in routes {
        match (&r.uplink, r.attached) {
            (None, _) => found.add(Level::Warn, "route", format!("peer {} has no route", r.peer)),
            (Some(u), true) => found.add(Level::Ok, "route", format!("peer {} is routed over {u}", r.peer)),
            (Some(u), false) => found.add(
                Level::Fail,
                "route",
                format!(
                    "peer {} is routed over {u}, which {t} is not attached to: its packets leave unmarked; \
                     run `pdscp attach {t} --uplink {u}`",
                    r.peer
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::check::UplinkFacts;
    use crate::commands::report::LinkCounters;
    use crate::kernel::capture::Wire;
    use crate::model::Mode;

    /// wg0 on eth0, 100 EF packets seen and marked, and the wire showing `wire`.
    fn facts(wire: Wire, priority_only: bool) -> Facts {
        let mut traffic = TunnelCounters {
            seen: 100,
            marked: 100,
            ..Default::default()
        };
        traffic.seen_by_dscp.insert(46, 100);
        traffic.marked_by_dscp.insert(46, 100);
        let mut link = LinkCounters::default();
        link.marked_by_dscp.insert(46, 100);
        traffic.by_uplink.insert("eth0".into(), link);
        Facts {
            tunnel: "wg0".into(),
            seconds: 5.0,
            kernel: "6.1.0-26-amd64".into(),
            current_ifindex: Some(7),
            driver: None,
            attached: Some(Attached {
                ifindex: 7,
                reader: Some(Mode::Tcx),
                reader_runs: true,
                port: Some(51820),
                priority_only,
                uplinks: vec![UplinkFacts {
                    name: "eth0".into(),
                    mode: Some(Mode::Tcx),
                    present: true,
                    writer_runs: true,
                    after_writer: vec!["tc filter u32 priority 49152".into()],
                    cake_wash: false,
                    wire: Some(wire),
                }],
                traffic,
                ..Default::default()
            }),
        }
    }

    fn wire(from_port: &[(u8, u64)]) -> Wire {
        Wire {
            from_port: from_port.iter().copied().collect(),
            ..Default::default()
        }
    }

    fn fails(d: &Diagnosis) -> Vec<&'static str> {
        d.findings
            .iter()
            .filter(|f| f.level == Level::Fail)
            .map(|f| f.topic)
            .collect()
    }

    #[test]
    fn marks_on_the_wire_are_flowing() {
        let d = diagnose(&facts(wire(&[(46, 100)]), false));
        assert!(d.flowing, "{d:#?}");
        assert!(fails(&d).is_empty());
    }

    #[test]
    fn marks_rewritten_after_the_writer_name_what_runs_after_it() {
        let d = diagnose(&facts(wire(&[(8, 100)]), false));
        assert!(!d.flowing);
        assert_eq!(fails(&d), ["rewrite"]);
        let text = &d.findings.iter().find(|f| f.topic == "rewrite").unwrap().text;
        assert!(
            text.contains("100 ef") && text.contains("cs1 100") && text.contains("u32 priority 49152"),
            "{text}"
        );
    }

    #[test]
    fn priority_only_expects_no_mark_on_the_wire() {
        let d = diagnose(&facts(wire(&[(0, 100)]), true));
        assert!(d.flowing, "{d:#?}");
    }

    #[test]
    fn a_rewritten_source_port_is_nat() {
        let mut nat = wire(&[]);
        nat.to_peers_from_other_ports.insert(1027, 100);
        let mut f = facts(nat, false);
        f.attached.as_mut().unwrap().traffic.marked_by_dscp.clear();
        let d = diagnose(&f);
        assert_eq!(fails(&d), ["nat"], "{d:#?}");
    }

    #[test]
    fn an_unattached_tun_device_is_explained() {
        let f = Facts {
            tunnel: "tun0".into(),
            driver: Some("tun".into()),
            ..Default::default()
        };
        assert_eq!(fails(&diagnose(&f)), ["attached", "device"]);
    }
}
