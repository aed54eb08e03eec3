//! Plain domain types, shared by every layer: what pdscp attaches, where and how.
use serde::Serialize;

/// How a program is hooked onto a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A pinned TCX link (kernel 6.6+).
    Tcx,
    /// A cls_bpf filter on the clsact qdisc, in pdscp's own slot.
    Tc,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tcx => "tcx",
            Mode::Tc => "tc",
        }
    }
}

/// What an attached device is to pdscp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Outer packets leave by it: the writer runs on its egress.
    Uplink,
    /// Inner packets enter it: the reader runs on its egress.
    Tunnel,
}

impl Role {
    /// The program that runs on a device of this role.
    pub fn program(self) -> Program {
        match self {
            Role::Uplink => Program::Writer,
            Role::Tunnel => Program::Reader,
        }
    }
}

/// pdscp's programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// Tunnel egress: remembers each flow's inner DSCP.
    Reader,
    /// Uplink egress: writes it onto the outer packet.
    Writer,
}

/// How an attached tunnel's outer packets are recognised on the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortMatch {
    /// Outer UDP packets from this source port.
    Port(u16),
    /// Any outer UDP packet whose flow hash has an entry (`--any-port`).
    Any,
}

/// A device pdscp attached to, as recorded in the registry when it was attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceCfg {
    pub role: Role,
    pub name: String,
    /// Packets on it start with an Ethernet header (else with the IP header).
    pub ethernet: bool,
    pub mode: Mode,
    /// Tunnels only.
    pub ports: Option<PortMatch>,
    /// Inode of the network namespace the device is in: one pin root can
    /// serve several namespaces, whose device names and ifindexes overlap.
    pub netns: u32,
}
