//! What `status` reports: plain data, serialised as `--json` and printed
//! by the CLI (src/cli/text.rs, src/cli/prometheus.rs).
use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::model::Mode;

#[derive(Serialize, Debug)]
pub struct Report {
    pub pin_root: String,
    pub version: VersionReport,
    /// The flow map shared by every uplink.
    pub flows: Fill,
    pub reflect: Fill,
    pub uplinks: Vec<UplinkReport>,
    pub tunnels: Vec<TunnelReport>,
}

#[derive(Serialize, Debug, Default)]
pub struct VersionReport {
    /// This pdscp.
    pub pdscp: String,
    /// The pdscp that made the state ("0.1.0" for layout 1), if there is state.
    pub state: Option<String>,
    pub layout: Option<u32>,
    /// An older pdscp made it: the next attach, detach, gc or upgrade brings it up to date.
    pub upgrade_pending: bool,
}

#[derive(Serialize, Debug, Default, Clone, Copy)]
pub struct Fill {
    pub entries: usize,
    pub capacity: u32,
}

#[derive(Serialize, Debug, Default)]
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
    /// The shared flow map's fill (the same for every uplink).
    pub map_entries: usize,
    pub map_size: u32,
    /// The CAKE qdisc `--priority-only` steers, as recorded ("8001: 4 tins").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cake: Option<String>,
    pub counters: Counters,
    pub tunnels: Vec<TunnelOnUplink>,
    /// Set when the pinned state could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An uplink's counters: its own, and its tunnels' summed.
#[derive(Serialize, Debug, Default, Clone)]
pub struct Counters {
    /// Outer packets given a mark by the writer on this uplink.
    pub marked: u64,
    /// Tunnel packets with no flow entry.
    pub missed: u64,
    /// Uplink packets that are not from an attached tunnel.
    pub not_tunnel: u64,
    /// Packets of a tunnel that is not attached to this uplink.
    pub other_uplink: u64,
    /// Inner packets the readers of its tunnels saw.
    pub seen: u64,
    pub flow_inserts: u64,
    pub flow_updates: u64,
    pub not_ip: u64,
    /// DSCP value -> outer packets marked with it (non-zero entries only).
    pub marked_by_dscp: BTreeMap<u8, u64>,
    /// DSCP value -> inner packets seen with it (non-zero entries only).
    pub seen_by_dscp: BTreeMap<u8, u64>,
}

#[derive(Serialize, Debug, Clone)]
pub struct TunnelOnUplink {
    pub name: String,
    pub ifindex: Option<u32>,
    /// The outer UDP source port matched; null with any_port.
    pub port: Option<u16>,
    pub any_port: bool,
    pub present: bool,
    pub attached: bool,
}

#[derive(Serialize, Debug, Default)]
pub struct TunnelReport {
    pub name: String,
    pub ifindex: Option<u32>,
    pub port: Option<u16>,
    pub any_port: bool,
    pub present: bool,
    /// The reader's mode; null for a tunnel with a fixed mark (no reader).
    pub mode: Option<Mode>,
    /// Its reader (and ingress program) run, or, with a fixed mark, its device exists.
    pub attached: bool,
    /// The uplinks it is attached to.
    pub uplinks: Vec<String>,
    /// Where each peer is routed now (WireGuard endpoints, a VXLAN remote);
    /// null if pdscp cannot know.
    pub routes: Option<Vec<PeerRoute>>,
    /// Peers routed over an uplink the tunnel is not attached to: their
    /// packets leave unmarked.
    pub unmarked_peers: usize,
    pub policy: PolicyReport,
    pub reflection: ReflectionReport,
    pub counters: TunnelCounters,
}

#[derive(Serialize, Debug, Clone)]
pub struct PeerRoute {
    pub peer: String,
    /// None: no route.
    pub uplink: Option<String>,
    /// The tunnel is attached to that uplink.
    pub attached: bool,
}

#[derive(Serialize, Debug, Default)]
pub struct PolicyReport {
    /// A preset's name, or the entries that are not copied ("46=34,48=0").
    pub dscp_map: String,
    pub fixed: Option<u8>,
    pub handshake: Option<u8>,
    pub priority_only: bool,
}

#[derive(Serialize, Debug, Default)]
pub struct ReflectionReport {
    /// off, out, in or both.
    pub mode: String,
    pub override_own: bool,
    pub allow: String,
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct TunnelCounters {
    /// Inner packets leaving by the tunnel (GSO packets as their segments).
    pub seen: u64,
    pub seen_by_dscp: BTreeMap<u8, u64>,
    pub seen_bytes_by_dscp: BTreeMap<u8, u64>,
    /// Outer packets marked, on every uplink.
    pub marked: u64,
    pub marked_by_dscp: BTreeMap<u8, u64>,
    pub missed: u64,
    pub handshakes: u64,
    pub flow_inserts: u64,
    pub flow_updates: u64,
    pub not_ip: u64,
    pub no_hash: u64,
    /// Packets whose outer mark differs from their inner DSCP (the DSCP map).
    pub remapped: u64,
    /// Leaving packets given the mark their flow arrived with.
    pub reflected_out_by_dscp: BTreeMap<u8, u64>,
    /// Arriving packets given the mark their flow left with.
    pub reflected_in_by_dscp: BTreeMap<u8, u64>,
    pub reflections_learned: u64,
    /// Packets the ingress program saw.
    pub arrived: u64,
    /// Per uplink: outer packets marked, by DSCP, and missed.
    pub by_uplink: BTreeMap<String, LinkCounters>,
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct LinkCounters {
    pub marked: u64,
    pub marked_by_dscp: BTreeMap<u8, u64>,
    pub marked_bytes: u64,
    pub missed: u64,
    pub handshakes: u64,
}

impl Report {
    pub fn empty(root: &Path) -> Report {
        Report {
            pin_root: root.display().to_string(),
            version: VersionReport {
                pdscp: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            },
            flows: Fill::default(),
            reflect: Fill::default(),
            uplinks: Vec::new(),
            tunnels: Vec::new(),
        }
    }
}

impl TunnelCounters {
    /// The counters' growth between two readings (a counter that went back,
    /// the tunnel re-attached in between, counts from zero).
    pub fn since(&self, before: &TunnelCounters) -> TunnelCounters {
        let after = self;
        let n = |b: u64, a: u64| if a >= b { a - b } else { a };
        let map = |b: &BTreeMap<u8, u64>, a: &BTreeMap<u8, u64>| -> BTreeMap<u8, u64> {
            a.iter()
                .map(|(d, v)| (*d, n(b.get(d).copied().unwrap_or(0), *v)))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        let by_uplink = after
            .by_uplink
            .iter()
            .map(|(name, a)| {
                let b = before.by_uplink.get(name).cloned().unwrap_or_default();
                let link = LinkCounters {
                    marked: n(b.marked, a.marked),
                    marked_by_dscp: map(&b.marked_by_dscp, &a.marked_by_dscp),
                    marked_bytes: n(b.marked_bytes, a.marked_bytes),
                    missed: n(b.missed, a.missed),
                    handshakes: n(b.handshakes, a.handshakes),
                };
                (name.clone(), link)
            })
            .collect();
        TunnelCounters {
            seen: n(before.seen, after.seen),
            seen_by_dscp: map(&before.seen_by_dscp, &after.seen_by_dscp),
            seen_bytes_by_dscp: map(&before.seen_bytes_by_dscp, &after.seen_bytes_by_dscp),
            marked: n(before.marked, after.marked),
            marked_by_dscp: map(&before.marked_by_dscp, &after.marked_by_dscp),
            missed: n(before.missed, after.missed),
            handshakes: n(before.handshakes, after.handshakes),
            flow_inserts: n(before.flow_inserts, after.flow_inserts),
            flow_updates: n(before.flow_updates, after.flow_updates),
            not_ip: n(before.not_ip, after.not_ip),
            no_hash: n(before.no_hash, after.no_hash),
            remapped: n(before.remapped, after.remapped),
            reflected_out_by_dscp: map(&before.reflected_out_by_dscp, &after.reflected_out_by_dscp),
            reflected_in_by_dscp: map(&before.reflected_in_by_dscp, &after.reflected_in_by_dscp),
            reflections_learned: n(before.reflections_learned, after.reflections_learned),
            arrived: n(before.arrived, after.arrived),
            by_uplink,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_are_the_growth_per_dscp() {
        let mut before = TunnelCounters::default();
        before.seen_by_dscp.insert(46, 10);
        before.marked = 10;
        let mut after = before.clone();
        after.seen_by_dscp.insert(46, 25);
        after.seen_by_dscp.insert(0, 3);
        after.marked = 22;
        let d = after.since(&before);
        assert_eq!(d.seen_by_dscp, BTreeMap::from([(0, 3), (46, 15)]));
        assert_eq!(d.marked, 12);
    }
}
