//! The cases the bench runs, each with the counters that prove it took the
//! path it names.
use pdscp::maps::abi;

use crate::packets::{inner_v4, inner_v6, outer_v4, outer_v6, DSCP_EF, PORT};

/// The bench's view of pdscp's counters (tunnel slot 0, its link row 1 on
/// uplink slot 0, and that uplink), flattened in this order by run::counters.
pub mod stat {
    pub const WRITER_MARKED: usize = 0;
    pub const READER_SEEN: usize = 64;
    pub const REFLECTED_IN: usize = 128;
    pub const WRITER_MISS: usize = 192;
    pub const WRITER_NOT_TUNNEL: usize = 193;
    pub const READER_INSERT: usize = 194;
    pub const READER_UPDATE: usize = 195;
    pub const LEARNED: usize = 196;
    pub const ARRIVED: usize = 197;
    pub const LEN: usize = 198;
}

/// skb->hash the trampoline gives writer packets that hit.
pub const HASH_HIT: u32 = 0xa5a5_0001;
/// A real hash with no flow entry.
pub const HASH_MISS: u32 = 0xa5a5_0002;
/// The first hash of the many-flows cases' flows; far from the others.
pub const FLOWS_BASE: u32 = 0x4000_0000;
/// The flow map size of the "64k map" cases.
pub const BIG_MAP: u32 = 65536;
/// Tunnel flags (enum tunnel_flag), from bpf/pdscp.h as pdscp itself has them.
pub const TUNNEL_IN_USE: u8 = abi::TUNNEL_IN_USE as u8;
pub const REFLECT_OUT: u8 = abi::TUNNEL_REFLECT_OUT as u8;
pub const REFLECT_IN: u8 = abi::TUNNEL_REFLECT_IN as u8;
/// The inner flow whose reflect entry the bench stores ({out: EF, in: 0}).
pub const REFLECTED_FLOW: u16 = 5;

#[derive(Clone, Copy, PartialEq)]
pub enum Prog {
    Reader,
    Writer,
    Ingress,
    /// Yardsticks from bench_floor.bpf.c.
    HashLookup,
    ArrayLookup,
    FlowsLookup,
    ReflectLookup,
}

/// What the trampoline does to skb->hash before tail-calling the program.
#[derive(Clone, Copy)]
pub enum Hash {
    /// Leaves it alone (the trampoline only restores the packet).
    Keep,
    /// This hash on every run.
    Fixed(u32),
    /// A new hash, so a new flow, on every run.
    New,
    /// No hash: bpf_get_hash_recalc() dissects the packet every time.
    Cleared,
    /// `flows` flows round-robin (FLOWS_BASE..), each for `burst` runs in a
    /// row; every flow has an entry before the case starts.
    Cycle { flows: u32, burst: u32 },
}

#[derive(Clone, Copy)]
pub struct Via {
    pub hash: Hash,
    /// Write the packet's first 64 bytes back before each run.
    pub restore: bool,
}

pub struct Case {
    pub name: &'static str,
    pub prog: Prog,
    /// Empty the flow map every INSERT_BATCH runs, so inserts never evict.
    pub batched: bool,
    pub packet: Vec<u8>,
    /// Through the trampoline, or run directly.
    pub via: Option<Via>,
    /// A flow entry for hash 0 (a direct run's skb has no hash), so the
    /// writer hits; otherwise there is none.
    pub zero_entry: bool,
    /// The flow map of BIG_MAP entries instead of the default-size one.
    pub big_map: bool,
    /// Tunnel flags of the device besides TUNNEL_IN_USE (reflection).
    pub flags: u8,
    /// Counters whose sum every run must bump once.
    pub counters: Vec<usize>,
    /// Counters that must not move.
    pub quiet: &'static [usize],
    /// The counter reported as churn (per packet), instead of being quiet.
    pub churn: Option<usize>,
    /// The DSCP the packet must leave with (writer hits).
    pub out_dscp: Option<u8>,
    /// Highest acceptable ratio to the floor.
    pub target: Option<f64>,
}

impl Case {
    fn new(name: &'static str, prog: Prog, packet: Vec<u8>, counter: usize) -> Case {
        Case {
            name,
            prog,
            batched: false,
            packet,
            via: None,
            zero_entry: false,
            big_map: false,
            flags: 0,
            counters: vec![counter],
            quiet: &[],
            churn: None,
            out_dscp: None,
            target: None,
        }
    }

    /// A yardstick, which counts nothing.
    fn yardstick(name: &'static str, prog: Prog) -> Case {
        Case {
            counters: Vec::new(),
            ..Case::new(name, prog, inner_v4(0, 1), 0)
        }
    }

    fn target(self, max: f64) -> Case {
        Case {
            target: Some(max),
            ..self
        }
    }

    /// Neither inserts nor updates a flow entry, nor learns a reflected one.
    fn steady(self) -> Case {
        Case {
            quiet: &[stat::READER_INSERT, stat::READER_UPDATE, stat::LEARNED],
            ..self
        }
    }

    fn via(self, hash: Hash, restore: bool) -> Case {
        Case {
            via: Some(Via { hash, restore }),
            ..self
        }
    }

    fn batched(self) -> Case {
        Case {
            batched: true,
            ..self
        }
    }

    fn zero_entry(self) -> Case {
        Case {
            zero_entry: true,
            ..self
        }
    }

    fn leaves_with(self, dscp: u8) -> Case {
        Case {
            out_dscp: Some(dscp),
            ..self
        }
    }

    fn reflect(self, flags: u8) -> Case {
        Case { flags, ..self }
    }

    /// Many flows round-robin, in bursts, in the default or the big map. A
    /// flow the map could not hold is inserted again by the reader (evicting
    /// another) and missed by the writer: counted as churn.
    fn flows(self, flows: u32, burst: u32, big_map: bool) -> Case {
        let restore = self.prog == Prog::Writer;
        let (counters, churn, quiet): (Vec<usize>, usize, &'static [usize]) = match self.prog {
            Prog::Writer => (
                vec![stat::WRITER_MARKED + DSCP_EF as usize, stat::WRITER_MISS],
                stat::WRITER_MISS,
                &[],
            ),
            _ => (self.counters.clone(), stat::READER_INSERT, &[stat::READER_UPDATE]),
        };
        Case {
            big_map,
            counters,
            churn: Some(churn),
            quiet,
            out_dscp: None,
            ..self.via(Hash::Cycle { flows, burst }, restore)
        }
    }
}

pub fn cases() -> Vec<Case> {
    use Prog::{Ingress, Reader, Writer};
    let seen_ef = stat::READER_SEEN + DSCP_EF as usize;
    let marked_ef = stat::WRITER_MARKED + DSCP_EF as usize;
    let reflected_ef = stat::REFLECTED_IN + DSCP_EF as usize;
    let (seen_0, insert, arrived) = (stat::READER_SEEN, stat::READER_INSERT, stat::ARRIVED);
    let (miss, not_tunnel) = (stat::WRITER_MISS, stat::WRITER_NOT_TUNNEL);
    let (v4, v6) = (inner_v4(DSCP_EF, 1), inner_v6(DSCP_EF, 1));
    let (new_v4, new_v6) = (inner_v4(DSCP_EF, 3), inner_v6(DSCP_EF, 3));
    let (out_v4, out_v6) = (outer_v4(PORT), outer_v6(PORT));
    let (other_v4, other_v6) = (outer_v4(PORT + 7), outer_v6(PORT + 7));
    let hit = Hash::Fixed(HASH_HIT);
    let both = REFLECT_OUT | REFLECT_IN;
    let mut cases = vec![
        Case::yardstick("yardstick: one hash map lookup", Prog::HashLookup),
        Case::yardstick("yardstick: one array map lookup", Prog::ArrayLookup),
        Case::yardstick(
            "yardstick: one LRU lookup, flows key (8 bytes)",
            Prog::FlowsLookup,
        ),
        Case::yardstick(
            "yardstick: one LRU lookup, reflect key (40 bytes)",
            Prog::ReflectLookup,
        ),
        Case::new("reader v4, mark unchanged", Reader, v4.clone(), seen_ef)
            .steady()
            .target(2.0),
        Case::new("reader v6, mark unchanged", Reader, v6, seen_ef)
            .steady()
            .target(2.0),
        Case::new(
            "reader v4, mark unchanged, no skb hash",
            Reader,
            v4.clone(),
            seen_ef,
        )
        .steady()
        .via(Hash::Cleared, false),
        Case::new("reader v4, unmarked", Reader, inner_v4(0, 2), seen_0)
            .steady()
            .target(2.0),
        Case::new("reader v6, unmarked", Reader, inner_v6(0, 2), seen_0)
            .steady()
            .target(2.0),
        Case::new("reader v4, new flow (insert)", Reader, new_v4.clone(), insert)
            .batched()
            .via(Hash::New, false)
            .target(5.0),
        Case::new("reader v6, new flow (insert)", Reader, new_v6, insert)
            .batched()
            .via(Hash::New, false)
            .target(5.0),
        Case::new("reader v4, new flow, map full (evicts)", Reader, new_v4, insert).via(Hash::New, false),
        Case::new("writer v4 hit, rewrite", Writer, out_v4.clone(), marked_ef)
            .via(hit, true)
            .leaves_with(DSCP_EF)
            .target(1.8),
        Case::new("writer v6 hit, rewrite", Writer, out_v6.clone(), marked_ef)
            .via(hit, true)
            .leaves_with(DSCP_EF)
            .target(1.8),
        Case::new("writer v4 hit, already marked", Writer, out_v4.clone(), marked_ef)
            .zero_entry()
            .leaves_with(DSCP_EF)
            .target(1.8),
        Case::new("writer v6 hit, already marked", Writer, out_v6, marked_ef)
            .zero_entry()
            .leaves_with(DSCP_EF)
            .target(1.8),
        Case::new("writer v4 miss, hash 0", Writer, out_v4.clone(), miss),
        Case::new("writer v4 miss, real hash", Writer, out_v4.clone(), miss)
            .via(Hash::Fixed(HASH_MISS), false)
            .target(1.6),
        Case::new("writer v4 not tunnel (other port)", Writer, other_v4, not_tunnel).target(1.3),
        Case::new("writer v6 not tunnel (other port)", Writer, other_v6, not_tunnel).target(1.3),
        Case::new(
            "ingress v4, learn (reflect out), steady",
            Ingress,
            v4.clone(),
            arrived,
        )
        .steady()
        .reflect(REFLECT_OUT)
        .target(2.0),
        Case::new(
            "ingress v6, learn (reflect out), steady",
            Ingress,
            inner_v6(DSCP_EF, 6),
            arrived,
        )
        .steady()
        .reflect(REFLECT_OUT)
        .target(2.0),
        Case::new(
            "ingress v4, reflect both, reply reflected",
            Ingress,
            inner_v4(0, REFLECTED_FLOW),
            reflected_ef,
        )
        .steady()
        .reflect(both)
        .via(Hash::Keep, true),
        Case::new(
            "reader v4, reflect both, steady",
            Reader,
            inner_v4(DSCP_EF, REFLECTED_FLOW),
            seen_ef,
        )
        .steady()
        .reflect(both),
    ];
    // Many active flows, entries cold in cache, and WireGuard-like bursts.
    let many = [
        ("reader v4, 1k flows", "writer v4, 1k flows", 1024, 1, false),
        ("reader v4, 16k flows", "writer v4, 16k flows", 16384, 1, false),
        (
            "reader v4, 1k flows, 64k map",
            "writer v4, 1k flows, 64k map",
            1024,
            1,
            true,
        ),
        (
            "reader v4, 16k flows, 64k map",
            "writer v4, 16k flows, 64k map",
            16384,
            1,
            true,
        ),
        (
            "reader v4, 1k flows, bursts of 8",
            "writer v4, 1k flows, bursts of 8",
            1024,
            8,
            false,
        ),
        (
            "reader v4, 16k flows, bursts of 8",
            "writer v4, 16k flows, bursts of 8",
            16384,
            8,
            false,
        ),
        (
            "reader v4, 16k flows, bursts of 8, 64k map",
            "writer v4, 16k flows, bursts of 8, 64k map",
            16384,
            8,
            true,
        ),
    ];
    for (reader, writer, flows, burst, big) in many {
        cases.push(Case::new(reader, Reader, v4.clone(), seen_ef).flows(flows, burst, big));
        cases.push(Case::new(writer, Writer, out_v4.clone(), 0).flows(flows, burst, big));
    }
    cases
}
