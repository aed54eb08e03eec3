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

/// pdscp's programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// Tunnel egress: remembers each flow's mark (and applies `--reflect out`).
    Reader,
    /// Uplink egress: writes it onto the outer packet.
    Writer,
    /// Tunnel ingress: reflection (learns for `--reflect out`, applies `--reflect in`).
    Ingress,
}

/// How an attached tunnel's outer packets are recognised on the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortMatch {
    /// Outer UDP packets from this source port.
    Port(u16),
    /// Any outer UDP packet whose flow hash has an entry (`--any-port`).
    Any,
}

/// How a tunnel's inner marks become outer marks (docs: README, DSCP policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Inner DSCP -> outer mark, applied by the reader when it learns a flow.
    pub map: [u8; 64],
    /// Every outer packet from the tunnel's port gets this DSCP; no reader.
    pub fixed: Option<u8>,
    /// WireGuard handshake messages get this DSCP instead of the kernel's AF41.
    pub handshake: Option<u8>,
    /// Set skb->priority for CAKE on the uplink instead of any outer DSCP.
    pub priority_only: bool,
}

impl Policy {
    /// Today's behaviour: every inner mark copied.
    pub fn copy() -> Policy {
        Policy {
            map: std::array::from_fn(|d| d as u8),
            fixed: None,
            handshake: None,
            priority_only: false,
        }
    }

    pub fn is_copy(&self) -> bool {
        self.map.iter().enumerate().all(|(d, m)| usize::from(*m) == d)
    }
}

/// Reflection: return traffic gets the mark its flow carried the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Reflection {
    /// Concentrator: learn from packets arriving from the tunnel, mark those leaving into it.
    pub out: bool,
    /// Client: learn from packets leaving into the tunnel, mark those arriving from it.
    pub into: bool,
    /// A reflected mark replaces a packet's own non-zero mark.
    pub override_own: bool,
    /// Bit d set: DSCP d may be reflected.
    pub allow: u64,
}

impl Reflection {
    pub fn is_on(&self) -> bool {
        self.out || self.into
    }
}

/// A tunnel as recorded in its slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelRecord {
    pub name: String,
    pub ifindex: u32,
    /// Packets on it start with an Ethernet header (else with the IP header).
    pub ethernet: bool,
    pub ports: PortMatch,
    /// How its reader is hooked; None: it has none (`--fixed`).
    pub reader: Option<Mode>,
    /// How its ingress program is hooked; None: no reflection.
    pub ingress: Option<Mode>,
    pub policy: Policy,
    pub reflection: Reflection,
    /// Uplink slot -> its link_stats row: the uplinks it is attached to.
    pub links: std::collections::BTreeMap<usize, u16>,
}

/// CAKE on an uplink, as `--priority-only` needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CakeTins {
    /// The qdisc's handle in skb->priority's major half (handle << 16 form).
    pub priority_major: u32,
    /// DSCP -> the priority minor that selects the tin CAKE gives that DSCP.
    pub tin_of: [u8; 64],
}

/// An uplink as recorded in its slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkRecord {
    pub name: String,
    pub ifindex: u32,
    pub ethernet: bool,
    pub mode: Mode,
    pub cake: Option<CakeTins>,
}
