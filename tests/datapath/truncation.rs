//! Packets every program must act on, cut at every length from 0 to whole:
//! below 14 bytes the test run refuses them; from there on each prefix must
//! pass the same checks as any generated case (and is left alone until the
//! bytes the program needs are all there).
use std::mem::MaybeUninit;

use crate::case::*;
use crate::check::Seen;
use crate::harness::Harness;
use crate::oracle;
use crate::packet::*;
use crate::{run_case, Prog, PORT_A};

pub const HASH: u32 = 0xa5a5_0001;
const MACS: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];

pub fn setup(prog: Prog) -> Setup {
    Setup {
        roles: if prog == Prog::Writer {
            DEV_UPLINK
        } else {
            DEV_TUNNEL
        },
        l2_swapped: false,
        a: Tunnel {
            flags: 0,
            any_port: false,
            here: true,
            fixed: 0,
            handshake: 0,
            map: std::array::from_fn(|d| d as u8),
            allow: u64::MAX,
        },
        b: None,
        cake: None,
        hash: Some(HASH),
        priority: 0,
        flows: vec![],
        reflect: vec![],
    }
}

fn ethernet(tags: Vec<(u16, u16)>) -> Link {
    Link::Ethernet {
        macs: MACS,
        tags,
        ethertype: None,
    }
}

pub fn v4(tos: u8, options: Vec<u8>, l4: L4) -> Net {
    Net::V4(V4 {
        tos,
        options,
        ihl: None,
        version: 4,
        id: 0x1234,
        df: true,
        mf: false,
        offset: 0,
        ttl: 64,
        proto: None,
        src: [198, 18, 0, 1],
        dst: [198, 18, 0, 2],
        bad_sum: 0,
        l4,
    })
}

fn v6(tclass: u8, l4: L4) -> Net {
    let mut src = [0; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    let mut dst = src;
    src[15] = 1;
    dst[15] = 2;
    Net::V6(V6 {
        tclass,
        flow: 0x12345,
        version: 6,
        hop: 64,
        src,
        dst,
        ext: vec![],
        l4,
    })
}

pub fn wireguard(kind: u8) -> L4 {
    L4::Udp {
        sport: PORT_A,
        dport: 51820,
        len: None,
        cut: None,
        payload: Payload::WireGuard {
            kind,
            reserved: [0; 3],
            rest: vec![0xab; 24],
        },
    }
}

pub fn tcp() -> L4 {
    L4::Tcp {
        sport: 40001,
        dport: 443,
        data: vec![0xcd; 8],
    }
}

/// A reflect entry for the packet's own flow.
fn reflected(out: u8, inn: u8) -> ReflectPlan {
    ReflectPlan {
        own_flow: true,
        tunnel: 0,
        out,
        inn,
        decoy: [0; 16],
    }
}

/// The whole packets, each with maps that make its program rewrite it.
fn cases() -> Vec<(Prog, Setup, Link, Net)> {
    use Prog::*;
    let flow = |hash, port, dscp| FlowEntry {
        hash,
        port,
        dscp,
        tunnel: 0,
    };
    let mut w_flow = setup(Writer);
    w_flow.flows = vec![flow(None, PORT_A, 46)];
    let mut w_handshake = setup(Writer);
    w_handshake.a.flags = flag::HANDSHAKE;
    w_handshake.a.handshake = 48;
    let mut w_any = setup(Writer);
    w_any.a.any_port = true;
    w_any.hash = None;
    w_any.flows = vec![flow(None, 0, 10)];
    let mut r_out = setup(Reader);
    r_out.a.flags = flag::REFLECT_OUT | flag::REFLECT_IN | flag::MAPPED;
    r_out.reflect = vec![reflected(0, 34)];
    let mut r_override = setup(Reader);
    r_override.a.flags = flag::REFLECT_OUT | flag::OVERRIDE;
    r_override.reflect = vec![reflected(0, 12)];
    let mut i_in = setup(Ingress);
    i_in.a.flags = flag::REFLECT_IN | flag::REFLECT_OUT;
    i_in.reflect = vec![reflected(26, 0)];
    let qinq = vec![(ETH_P_8021AD, 0x0064), (ETH_P_8021Q, 0x0002)];
    let echo = |kind| L4::Icmp {
        kind,
        code: 0,
        id: 0x4242,
        seq: 1,
    };
    let bare = Link::Bare { fit: true };
    vec![
        (
            Writer,
            w_flow.clone(),
            ethernet(qinq.clone()),
            v4(0x01, vec![0x94, 4, 0, 0, 1, 1, 1, 0], wireguard(4)),
        ),
        (Writer, w_flow, ethernet(vec![]), v6(0x02, wireguard(4))),
        (Writer, w_handshake.clone(), bare.clone(), v6(0x03, wireguard(1))),
        (Writer, w_handshake, bare.clone(), v4(0, vec![], wireguard(2))),
        (
            Writer,
            w_any,
            ethernet(vec![(ETH_P_8021Q, 5)]),
            v4(0x02, vec![], wireguard(4)),
        ),
        (
            Reader,
            r_out.clone(),
            ethernet(vec![(ETH_P_8021Q, 7)]),
            v4(0x01, vec![], tcp()),
        ),
        (Reader, r_out, bare.clone(), v6(0x00, echo(128))),
        (Reader, r_override, bare.clone(), v6(46 << 2 | 1, tcp())),
        (
            Ingress,
            i_in.clone(),
            ethernet(qinq),
            v4(0x02, vec![1, 1, 1, 0], echo(8)),
        ),
        (Ingress, i_in, bare, v4(0x00, vec![], tcp())),
    ]
}

#[test]
fn every_truncation() {
    let mut runs = 0;
    for prog in [Prog::Writer, Prog::Reader, Prog::Ingress] {
        let mut objects = [const { MaybeUninit::uninit() }; 2];
        let mut h = Harness::load(&mut objects, prog).expect("loading the programs");
        for (i, (_, setup, link, net)) in cases().into_iter().filter(|c| c.0 == prog).enumerate() {
            let packet = Packet {
                link,
                net,
                cut: None,
                flips: vec![],
            };
            let whole = packet.bytes();
            let mut case = Case {
                prog,
                setup,
                packet: Some(packet),
                bytes: whole.clone(),
            };
            let initial = oracle::initial(&case);
            assert!(
                oracle::expect(&case, &initial).dscp.is_some(),
                "{prog:?} packet {i} is no rewrite: {case:?}"
            );
            let mut seen = vec![];
            for len in 0..=whole.len() {
                case.bytes = whole[..len].to_vec();
                match run_case(&mut h, &case) {
                    Ok(s) => seen.push(s),
                    Err(why) => panic!("{prog:?} packet {i} cut to {len} bytes: {why}\ncase: {case:?}"),
                }
                runs += 1;
            }
            // Refused below 14 bytes, unchanged until the program has what it
            // needs, then rewritten up to the whole packet.
            let first = seen.iter().position(|s| *s == Seen::Rewritten);
            assert!(first.is_some_and(|f| seen[f..].iter().all(|s| *s == Seen::Rewritten)));
            assert!(seen[..14].iter().all(|s| *s == Seen::Refused));
        }
    }
    println!("every_truncation: {runs} runs");
}
