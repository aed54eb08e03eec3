//! `pdscp check`'s verdicts on what was seen in the window: what left the
//! uplinks (the tunnel's port, NAT, who wrote the DSCP last) and what the
//! counters say of the tunnel's traffic.
use super::facts::{counts, non_zero, Attached, Facts, Findings, Level};
use crate::policy::dscp_name;

/// What left the uplinks: the tunnel's port, NAT, and who wrote the DSCP last.
pub(super) fn wire(t: &str, a: &Attached, found: &mut Findings) {
    let Some(port) = a.port else {
        return;
    };
    for u in &a.uplinks {
        let Some(wire) = &u.wire else { continue };
        let from_port: u64 = wire.from_port.values().sum();
        if from_port > 0 {
            found.add(
                Level::Ok,
                "wire",
                format!(
                    "{from_port} outer packets left {} from port {port}: {}",
                    u.name,
                    counts(&wire.from_port)
                ),
            );
        } else if !wire.to_peers_from_other_ports.is_empty() {
            let ports: Vec<String> = wire
                .to_peers_from_other_ports
                .keys()
                .take(4)
                .map(u16::to_string)
                .collect();
            found.add(
                Level::Fail,
                "nat",
                format!(
                    "UDP to {t}'s peers left {} from port {} instead of {port}: NAT on {} rewrites the source port \
                     (nftables `masquerade fully-random`, iptables `--random-fully`?), so the writer cannot tell the \
                     tunnel's packets; keep the port (no fully-random, or no NAT for UDP from {port}), or attach with \
                     --any-port",

                    u.name,
                    ports.join(", "),
                    u.name
                ),
            );
        }
        if a.priority_only || from_port == 0 {
            continue;
        }
        let given = a
            .traffic
            .by_uplink
            .get(&u.name)
            .map(|l| l.marked_by_dscp.clone())
            .unwrap_or_default();
        let lost: Vec<String> = given
            .iter()
            .filter(|(d, n)| **d != 0 && **n > 0 && !wire.from_port.contains_key(d))
            .map(|(d, n)| format!("{n} {}", dscp_name(*d)))
            .collect();
        if lost.is_empty() {
            continue;
        }
        let mut culprits = u.after_writer.clone();
        if u.cake_wash {
            culprits.push("CAKE's wash option (use nowash, or --priority-only)".into());
        }
        let who = if culprits.is_empty() {
            "something after pdscp".to_string()
        } else {
            format!("after pdscp's writer: {}", culprits.join("; "))
        };
        found.add(
            Level::Fail,
            "rewrite",
            format!(
                "the writer marked {} on {}, but the wire shows {}: the DSCP is rewritten {who}; remove it, make it \
                 leave UDP from port {port} alone, or run it before pdscp (tc priority below 3420, or TCX before \
                 pdscp's writer)",
                lost.join(", "),
                u.name,
                counts(&wire.from_port)
            ),
        );
    }
}

pub(super) fn traffic(facts: &Facts, a: &Attached, found: &mut Findings) {
    let t = &facts.tunnel;
    let s = facts.seconds;
    let c = &a.traffic;
    if let Some(p) = &a.probe {
        let entered = c.seen_by_dscp.get(&p.dscp).copied().unwrap_or(0);
        let level = if entered >= u64::from(p.sent) {
            Level::Info
        } else {
            Level::Warn
        };
        found.add(
            level,
            "probe",
            format!(
                "probe: {} {} packets sent to {} through {t}, {entered} seen by the reader",
                p.sent,
                dscp_name(p.dscp),
                p.to
            ),
        );
    }
    found.add(
        Level::Info,
        "traffic",
        format!(
            "in {s} s: {} inner packets ({}); {} outer packets marked ({}); {} missed",
            c.seen,
            counts(&c.seen_by_dscp),
            c.marked,
            counts(&c.marked_by_dscp),
            c.missed
        ),
    );
    let marked = non_zero(&c.marked_by_dscp);
    if a.fixed.is_some() {
        if c.marked == 0 {
            found.add(
                Level::Fail,
                "traffic",
                format!(
                    "no outer packet of {t} reached an attached uplink in {s} s: is the tunnel up and used?"
                ),
            );
        }
        return;
    }
    if c.seen == 0 {
        found.add(
            Level::Fail,
            "traffic",
            format!("no traffic left by {t} in {s} s: nothing to mark; send some, or run with --probe"),
        );
    } else if non_zero(&c.seen_by_dscp) == 0 {
        found.add(Level::Warn, "traffic", format!("every inner packet was unmarked (cs0): there was no mark to carry; mark traffic before {t}, or run with --probe"));
    } else if marked == 0 && !found.failed() {
        let text = if c.missed > 0 {
            format!(
                "the writer found no flow for {} outer packets: the inner flow's hash did not reach the uplink \
                 (something between {t} and its uplink recomputes it: another tunnel, a bridge?)",
                c.missed
            )
        } else {
            format!("none of {t}'s outer packets reached a writer: they leave by another device, or their source port was rewritten")
        };
        found.add(Level::Fail, "traffic", text);
    } else if marked > 0 {
        let on_wire = if a.priority_only {
            " (--priority-only: as CAKE tins, not on the wire)"
        } else {
            ""
        };
        found.add(
            Level::Ok,
            "marks",
            format!("{marked} outer packets carried a mark{on_wire}"),
        );
    }
}
