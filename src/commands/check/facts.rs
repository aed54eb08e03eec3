//! What `pdscp check` finds out about a tunnel (`Facts`), and what it
//! concludes (`Diagnosis`): plain data, serialised by `--json`.
use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::commands::report::{PeerRoute, TunnelCounters};
use crate::kernel::capture::Wire;
use crate::model::Mode;
use crate::policy::dscp_name;

/// What `check` found out about one tunnel.
#[derive(Debug, Default)]
pub struct Facts {
    pub tunnel: String,
    pub seconds: f64,
    /// The running kernel's release.
    pub kernel: String,
    /// The device of that name now; None if there is none.
    pub current_ifindex: Option<u32>,
    /// Its driver as ethtool says ("tun" for userspace tunnels).
    pub driver: Option<String>,
    /// None: the tunnel is not attached.
    pub attached: Option<Attached>,
}

/// What pdscp's state says of an attached tunnel, and what it did.
#[derive(Debug, Default)]
pub struct Attached {
    pub ifindex: u32,
    /// The reader's mode; None with a fixed mark.
    pub reader: Option<Mode>,
    pub reader_runs: bool,
    pub port: Option<u16>,
    pub fixed: Option<u8>,
    pub priority_only: bool,
    pub uplinks: Vec<UplinkFacts>,
    pub routes: Option<Vec<PeerRoute>>,
    /// Counter increments over the window.
    pub traffic: TunnelCounters,
    pub probe: Option<Probe>,
}

#[derive(Debug, Default)]
pub struct UplinkFacts {
    pub name: String,
    pub mode: Option<Mode>,
    pub present: bool,
    pub writer_runs: bool,
    /// What runs on its egress after pdscp's writer, described.
    pub after_writer: Vec<String>,
    /// Its root CAKE qdisc clears DSCP.
    pub cake_wash: bool,
    /// What left it during the window; None when not watched.
    pub wire: Option<Wire>,
}

#[derive(Debug)]
pub struct Probe {
    pub to: IpAddr,
    pub dscp: u8,
    pub sent: u32,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Info,
    Warn,
    Fail,
}

#[derive(Serialize, Debug)]
pub struct Finding {
    pub level: Level,
    /// What was looked at: device, reader, uplink, route, port, nat, traffic, rewrite, ...
    pub topic: &'static str,
    pub text: String,
}

#[derive(Serialize, Debug)]
pub struct Diagnosis {
    pub tunnel: String,
    pub seconds: f64,
    /// Marks leave the tunnel's uplinks now, and nothing found stops them.
    pub flowing: bool,
    pub findings: Vec<Finding>,
    /// Counter increments over the window.
    pub traffic: TunnelCounters,
}

pub(super) struct Findings(pub(super) Vec<Finding>);

impl Findings {
    pub(super) fn add(&mut self, level: Level, topic: &'static str, text: String) {
        self.0.push(Finding { level, topic, text });
    }
    pub(super) fn failed(&self) -> bool {
        self.0.iter().any(|f| f.level == Level::Fail)
    }
}

/// "ef 800, cs0 410".
pub fn counts(by_dscp: &BTreeMap<u8, u64>) -> String {
    if by_dscp.is_empty() {
        return "none".into();
    }
    let mut sorted: Vec<(&u8, &u64)> = by_dscp.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    sorted
        .iter()
        .map(|(d, n)| format!("{} {n}", dscp_name(**d)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn non_zero(by_dscp: &BTreeMap<u8, u64>) -> u64 {
    by_dscp.iter().filter(|(d, _)| **d != 0).map(|(_, n)| n).sum()
}
