//! What a case is: a program, the maps as pdscp would have set them, a
//! packet.
use std::fmt;

use crate::packet::{hex, Link, Packet};
use crate::Prog;

/// Flags of enum tunnel_flag (bpf/pdscp.h), as the tests set them.
pub mod flag {
    pub const IN_USE: u8 = 1;
    pub const MAPPED: u8 = 2;
    pub const FIXED: u8 = 4;
    pub const HANDSHAKE: u8 = 8;
    pub const PRIORITY: u8 = 16;
    pub const REFLECT_OUT: u8 = 32;
    pub const REFLECT_IN: u8 = 64;
    pub const OVERRIDE: u8 = 128;
}
pub const DEV_TUNNEL: u8 = 1;
pub const DEV_UPLINK: u8 = 2;

/// One test run: the program, the state of the maps, the packet.
#[derive(Clone)]
pub struct Case {
    pub prog: Prog,
    pub setup: Setup,
    /// How the packet was made (None: written by hand).
    pub packet: Option<Packet>,
    /// What the program is given.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:?} on {} bytes:", self.prog, self.bytes.len())?;
        writeln!(f, "{}", hex(&self.bytes))?;
        writeln!(f, "setup: {:?}", self.setup)?;
        if let Some(p) = &self.packet {
            writeln!(f, "packet: {p:?}")?;
        }
        Ok(())
    }
}

/// The maps' contents, as pdscp records tunnel A in slot 0 (link row 1 on
/// uplink slot 0) and maybe tunnel B in slot 1 (row 2), on the device the
/// test run uses (`lo`, ifindex 1).
#[derive(Clone, Debug)]
pub struct Setup {
    /// devices[1].roles (DEV_TUNNEL, DEV_UPLINK bits).
    pub roles: u8,
    /// devices[1].l2 is the opposite of what the packet is (an Ethernet frame
    /// on an L3 device or the other way round).
    pub l2_swapped: bool,
    pub a: Tunnel,
    pub b: Option<Tunnel>,
    /// Uplink slot 0's CAKE: priority_major (handle << 16) and tin_of.
    pub cake: Option<(u32, [u8; 64])>,
    /// skb->hash through bench_trampoline; None: the program runs directly
    /// (the test run's hash is 0, the reader's bpf_get_hash_recalc dissects).
    pub hash: Option<u32>,
    /// skb->priority before the run.
    pub priority: u32,
    pub flows: Vec<FlowEntry>,
    pub reflect: Vec<ReflectPlan>,
}

#[derive(Clone, Debug)]
pub struct Tunnel {
    /// enum tunnel_flag bits except TUNNEL_IN_USE (always set).
    pub flags: u8,
    /// --any-port: port 0 in its record, counted in ports[0].tunnel[0].
    pub any_port: bool,
    /// Attached to uplink slot 0 (else to another uplink only).
    pub here: bool,
    pub fixed: u8,
    pub handshake: u8,
    pub map: [u8; 64],
    pub allow: u64,
}

/// A flows entry: {hash (None: the case's), port (host order)} -> {dscp, tunnel}.
#[derive(Clone, Debug)]
pub struct FlowEntry {
    pub hash: Option<u32>,
    pub port: u16,
    pub dscp: u8,
    pub tunnel: u16,
}

/// A reflect entry: for the packet's own flow (if it has one) under
/// `tunnel`, else for an unrelated flow made from `decoy`.
#[derive(Clone, Debug)]
pub struct ReflectPlan {
    pub own_flow: bool,
    pub tunnel: u16,
    pub out: u8,
    pub inn: u8,
    pub decoy: [u8; 16],
}

impl Setup {
    /// devices[1].l2.
    pub fn l2(&self, bytes_are_ethernet: bool) -> bool {
        bytes_are_ethernet != self.l2_swapped
    }

    /// The tunnel in `slot`, if it is recorded.
    pub fn tunnel(&self, slot: u16) -> Option<&Tunnel> {
        match slot {
            0 => Some(&self.a),
            1 => self.b.as_ref(),
            _ => None,
        }
    }
}

impl Tunnel {
    /// Its outer UDP source port (host order), 0 for --any-port.
    pub fn port(&self, own: u16) -> u16 {
        if self.any_port {
            0
        } else {
            own
        }
    }
}

impl Case {
    /// Whether the bytes start with an Ethernet header, as built.
    pub fn ethernet(&self) -> bool {
        !matches!(self.packet.as_ref().map(|p| &p.link), Some(Link::Bare { .. }))
    }
}
