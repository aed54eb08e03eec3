//! The IPv4 checksum update at its corners. The programs update the header
//! checksum incrementally (RFC 1624: HC' = ~(~HC + ~m + m')), where a sum
//! that needs a second fold, or lands on 0x0000 or 0xffff, comes up in about
//! one rewrite in 30,000: too rarely for the generated cases. Here, for each
//! change of the TOS byte between a few values, the IP identification is
//! chosen so that the sum hits each corner, and the writer and the reader
//! (by reflection) rewrite the header; the checks verify the checksum from
//! scratch.
use std::mem::MaybeUninit;

use crate::case::*;
use crate::harness::Harness;
use crate::packet::*;
use crate::truncation::{setup, tcp, v4, wireguard, HASH};
use crate::{run_case, Prog, PORT_A};

/// The corners of the incremental sum ~HC + ~m + m' (m: the header's first
/// 16-bit word before, m' after): one fold is not enough; the folded sum is
/// 0xffff (HC' = 0); the checksum was 0 (~HC = 0xffff).
fn corners(hc: u16, m: u16, m2: u16) -> [bool; 3] {
    let sum = u32::from(!hc) + u32::from(!m) + u32::from(m2);
    let once = (sum & 0xffff) + (sum >> 16);
    let twice = (once & 0xffff) + (once >> 16);
    [once > 0xffff, twice == 0xffff, hc == 0]
}

fn packet(prog: Prog, tos: u8, id: u16) -> Packet {
    let l4 = if prog == Prog::Writer { wireguard(4) } else { tcp() };
    let mut net = v4(tos, vec![], l4);
    if let Net::V4(h) = &mut net {
        h.id = id;
    }
    Packet {
        link: Link::Bare { fit: true },
        net,
        cut: None,
        flips: vec![],
    }
}

#[test]
fn checksum_corners() {
    let mut runs = 0;
    let mut found = [0; 3];
    for prog in [Prog::Writer, Prog::Reader] {
        let mut objects = [const { MaybeUninit::uninit() }; 2];
        let mut h = Harness::load(&mut objects, prog).expect("loading the programs");
        for tos in [0x00u8, 0x01, 0x03, 0xb9, 0xfe] {
            for dscp in [1u8, 10, 46, 63] {
                let mut s = setup(prog);
                s.hash = Some(HASH);
                if prog == Prog::Writer {
                    s.flows = vec![FlowEntry {
                        hash: None,
                        port: PORT_A,
                        dscp,
                        tunnel: 0,
                    }];
                } else {
                    // Reflection replaces the packet's own DSCP.
                    s.a.flags = flag::REFLECT_OUT | flag::OVERRIDE;
                    s.reflect = vec![ReflectPlan {
                        own_flow: true,
                        tunnel: 0,
                        out: 0,
                        inn: dscp,
                        decoy: [0; 16],
                    }];
                }
                let m = 0x4500 | u16::from(tos);
                let m2 = 0x4500 | u16::from(dscp << 2 | (tos & 3));
                if m == m2 {
                    continue;
                }
                // The header's sum without its checksum and identification:
                // the checksum for an identification follows from it.
                let mut header = packet(prog, tos, 0).bytes()[..20].to_vec();
                header[10..12].fill(0);
                let rest = u32::from(ones_sum(&header));
                let checksum = |id: u16| {
                    let sum = rest + u32::from(id);
                    !(((sum & 0xffff) + (sum >> 16)) as u16)
                };
                for (corner, count) in found.iter_mut().enumerate() {
                    let hit = (0..=u16::MAX).find(|&id| corners(checksum(id), m, m2)[corner]);
                    let Some(id) = hit else { continue };
                    *count += 1;
                    let p = packet(prog, tos, id);
                    let case = Case {
                        prog,
                        setup: s.clone(),
                        bytes: p.bytes(),
                        packet: Some(p),
                    };
                    if let Err(why) = run_case(&mut h, &case) {
                        panic!(
                            "{prog:?}, TOS {tos:#04x} to DSCP {dscp}, corner {corner}: {why}\ncase: {case:?}"
                        );
                    }
                    runs += 1;
                }
            }
        }
    }
    assert!(found.iter().all(|n| *n > 0), "corners never reached: {found:?}");
    println!("checksum_corners: {runs} runs, corners {found:?}");
}
