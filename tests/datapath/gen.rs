//! The proptest strategies that generate cases. Values lean towards what
//! makes the programs act (the tunnel's port, a flow entry for the skb's
//! hash, a reflect entry for the packet's flow) but stray everywhere: other
//! ports, unused slots, marks above 63, lying header fields.
use proptest::array::uniform;
use proptest::bool::weighted;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::case::*;
use crate::packet::*;
use crate::{Prog, PORT_A, PORT_B};

/// Cases for `prog`. Two in five are aimed: the packet stays whole and
/// well-formed where the program looks and the device is the program's, so
/// that many cases reach the rewrite; the others stray anywhere.
pub fn case(prog: Prog) -> impl Strategy<Value = Case> {
    (setup(prog), packet(prog), weighted(0.4)).prop_map(move |(mut setup, mut packet, aimed)| {
        if aimed {
            aim(prog, &mut setup, &mut packet);
        }
        Case {
            prog,
            setup,
            bytes: packet.bytes(),
            packet: Some(packet),
        }
    })
}

fn aim(prog: Prog, setup: &mut Setup, packet: &mut Packet) {
    setup.roles = match prog {
        Prog::Writer => DEV_UPLINK,
        Prog::Reader | Prog::Ingress => DEV_TUNNEL,
    };
    setup.l2_swapped = false;
    packet.cut = None;
    packet.flips.clear();
    match &mut packet.link {
        Link::Ethernet { tags, ethertype, .. } => {
            tags.retain(|(tpid, _)| [ETH_P_8021Q, ETH_P_8021AD].contains(tpid));
            tags.truncate(2);
            *ethertype = None;
        }
        Link::Bare { fit } => *fit = true,
    }
    let l4 = match &mut packet.net {
        Net::V4(v4) => {
            (v4.version, v4.ihl, v4.proto, v4.offset) = (4, None, None, 0);
            &mut v4.l4
        }
        Net::V6(v6) => {
            v6.version = 6;
            v6.ext.clear();
            &mut v6.l4
        }
        Net::Other { .. } | Net::Random(_) => return,
    };
    if let L4::Udp { cut, .. } = l4 {
        *cut = None;
    }
}

fn setup(prog: Prog) -> impl Strategy<Value = Setup> {
    let right = match prog {
        Prog::Writer => DEV_UPLINK,
        Prog::Reader | Prog::Ingress => DEV_TUNNEL,
    };
    let roles = prop_oneof![
        8 => Just(right),
        2 => Just(DEV_TUNNEL | DEV_UPLINK),
        1 => any::<u8>(),
    ];
    let cake = prop_oneof![
        Just(None),
        (1u32..=0xffff, any::<u64>()).prop_map(|(h, seed)| Some((h << 16, bytes64(seed, |b| b % 9)))),
    ];
    let hash = prop_oneof![
        2 => Just(None),
        1 => Just(Some(0)),
        5 => any::<u32>().prop_map(Some),
    ];
    (
        (
            roles,
            weighted(0.1),
            tunnel(),
            proptest::option::weighted(0.4, tunnel()),
        ),
        (cake, hash, any::<u32>()),
        (vec(flow_entry(), 1..4), vec(reflect_plan(), 1..3)),
    )
        .prop_map(
            |((roles, l2_swapped, a, b), (cake, hash, priority), (flows, reflect))| Setup {
                roles,
                l2_swapped,
                a,
                b,
                cake,
                hash,
                priority,
                flows,
                reflect,
            },
        )
}

/// A DSCP, sometimes with stray high bits (the programs must mask them).
fn mark() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 0u8..64, 1 => any::<u8>()]
}

fn tunnel() -> impl Strategy<Value = Tunnel> {
    let flags = (
        weighted(0.4),
        weighted(0.15),
        weighted(0.3),
        weighted(0.15),
        weighted(0.6),
        weighted(0.6),
        weighted(0.4),
    )
        .prop_map(|(m, f, h, p, ro, ri, o)| {
            use flag::*;
            let bit = |on: bool, b: u8| if on { b } else { 0 };
            bit(m, MAPPED)
                | bit(f, FIXED)
                | bit(h, HANDSHAKE)
                | bit(p, PRIORITY)
                | bit(ro, REFLECT_OUT)
                | bit(ri, REFLECT_IN)
                | bit(o, OVERRIDE)
        });
    // Marks above 63 in one byte of eight.
    let stray = |b: u8| if b & 0xe0 == 0xe0 { b } else { b & 63 };
    let map = prop_oneof![
        Just(std::array::from_fn(|d| d as u8)),
        any::<u64>().prop_map(move |seed| bytes64(seed, stray)),
    ];
    let allow = prop_oneof![Just(u64::MAX), Just(0), any::<u64>()];
    (flags, weighted(0.2), weighted(0.9), mark(), mark(), map, allow).prop_map(
        |(flags, any_port, here, fixed, handshake, map, allow)| Tunnel {
            flags,
            any_port,
            here,
            fixed,
            handshake,
            map,
            allow,
        },
    )
}

/// 64 bytes from one seed (splitmix64), each passed through `f`: a DSCP
/// map or CAKE's tins at the cost of one generated value, not 64.
fn bytes64(seed: u64, f: impl Fn(u8) -> u8) -> [u8; 64] {
    let mut x = seed;
    let mut out = [0; 64];
    for chunk in out.chunks_mut(8) {
        x = crate::splitmix(x);
        for (o, b) in chunk.iter_mut().zip(x.to_le_bytes()) {
            *o = f(b);
        }
    }
    out
}

/// A UDP source port: mostly a tunnel's.
fn port() -> impl Strategy<Value = u16> {
    prop_oneof![8 => Just(PORT_A), 3 => Just(PORT_B), 1 => Just(0), 2 => any::<u16>()]
}

fn flow_entry() -> impl Strategy<Value = FlowEntry> {
    let hash = prop_oneof![4 => Just(None), 1 => any::<u32>().prop_map(Some)];
    let tunnel = prop_oneof![4 => Just(0u16), 2 => Just(1), 1 => Just(2)];
    let port = prop_oneof![8 => Just(PORT_A), 2 => Just(PORT_B), 2 => Just(0), 1 => any::<u16>()];
    (hash, port, mark(), tunnel).prop_map(|(hash, port, dscp, tunnel)| FlowEntry {
        hash,
        port,
        dscp,
        tunnel,
    })
}

fn reflect_plan() -> impl Strategy<Value = ReflectPlan> {
    let tunnel = prop_oneof![4 => Just(0u16), 1 => Just(1)];
    (weighted(0.8), tunnel, mark(), mark(), uniform(any::<u8>())).prop_map(
        |(own_flow, tunnel, out, inn, decoy)| ReflectPlan {
            own_flow,
            tunnel,
            out,
            inn,
            decoy,
        },
    )
}

/// Packets for `prog`: outer (UDP-heavy) for the writer, inner for the others.
pub fn packet(prog: Prog) -> impl Strategy<Value = Packet> {
    let cut = prop_oneof![4 => Just(None), 1 => (0u16..=1024).prop_map(Some)];
    let flips = prop_oneof![6 => Just(vec![]), 1 => vec((0u16..1024, 1u8..=255), 1..4)];
    (link(), net(prog), cut, flips).prop_map(|(link, net, cut, flips)| Packet {
        link,
        net,
        cut,
        flips,
    })
}

fn link() -> impl Strategy<Value = Link> {
    let tpid = prop_oneof![5 => Just(ETH_P_8021Q), 4 => Just(ETH_P_8021AD), 1 => Just(0x9100u16)];
    let tags = prop_oneof![
        4 => Just(vec![]),
        2 => vec((tpid.clone(), any::<u16>()), 1..=1),
        2 => vec((tpid.clone(), any::<u16>()), 2..=2),
        1 => vec((tpid, any::<u16>()), 3..=3),
    ];
    let ethertype = prop_oneof![
        12 => Just(None),
        1 => prop_oneof![Just(ETH_P_IP), Just(ETH_P_IPV6), any::<u16>()].prop_map(Some),
    ];
    prop_oneof![
        3 => (uniform(any::<u8>()), tags, ethertype)
            .prop_map(|(macs, tags, ethertype)| Link::Ethernet { macs, tags, ethertype }),
        1 => weighted(0.85).prop_map(|fit| Link::Bare { fit }),
    ]
}

fn net(prog: Prog) -> impl Strategy<Value = Net> {
    let other = (
        prop_oneof![
            Just(0x0806u16),
            Just(0x8847),
            Just(0x88cc),
            Just(0x0004),
            any::<u16>()
        ],
        vec(any::<u8>(), 0..64),
    )
        .prop_map(|(ethertype, payload)| Net::Other { ethertype, payload });
    // Random bytes, half of them made to look like IP at bytes 12-14.
    let random = (
        vec(any::<u8>(), 0..160),
        prop_oneof![
            Just(None),
            Just(Some((ETH_P_IP, 0x45))),
            Just(Some((ETH_P_IPV6, 0x60)))
        ],
    )
        .prop_map(|(mut b, look)| {
            if let (Some((ethertype, first)), true) = (look, b.len() > 14) {
                b[12..14].copy_from_slice(&ethertype.to_be_bytes());
                b[14] = first;
                b[0] = first;
            }
            Net::Random(b)
        });
    prop_oneof![
        5 => v4(prog).prop_map(Net::V4),
        4 => v6(prog).prop_map(Net::V6),
        1 => other,
        1 => random,
    ]
}

/// A TOS or traffic class: often DSCP 0 (what reflection fills in).
fn tos() -> impl Strategy<Value = u8> {
    prop_oneof![3 => 0u8..4, 3 => any::<u8>()]
}

fn v4(prog: Prog) -> impl Strategy<Value = V4> {
    let options = prop_oneof![3 => Just(vec![]), 1 => vec(any::<u8>(), 1..=40)];
    let ihl = prop_oneof![10 => Just(None), 1 => (0u8..16).prop_map(Some)];
    let version = prop_oneof![20 => Just(4u8), 1 => 0u8..16];
    let offset = prop_oneof![4 => Just(0u16), 1 => 1u16..0x2000];
    let proto = prop_oneof![20 => Just(None), 1 => any::<u8>().prop_map(Some)];
    let bad_sum = prop_oneof![8 => Just(0u16), 1 => any::<u16>()];
    // Often a tunnel's port: what a reader of the wrong offset (IHL 1) would
    // take for the UDP source port.
    let id = prop_oneof![any::<u16>(), port()];
    (
        (tos(), options, ihl, version),
        (id, any::<bool>(), weighted(0.2), offset, any::<u8>(), proto),
        (uniform(any::<u8>()), uniform(any::<u8>()), bad_sum, l4(prog)),
    )
        .prop_map(
            |((tos, options, ihl, version), (id, df, mf, offset, ttl, proto), (src, dst, bad_sum, l4))| V4 {
                tos,
                options,
                ihl,
                version,
                id,
                df,
                mf,
                offset,
                ttl,
                proto,
                src,
                dst,
                bad_sum,
                l4,
            },
        )
}

fn v6(prog: Prog) -> impl Strategy<Value = V6> {
    let version = prop_oneof![20 => Just(6u8), 1 => 0u8..16];
    let ext = prop_oneof![
        (prop_oneof![Just(0u8), Just(43), Just(60)], 0u8..3, any::<u8>())
            .prop_map(|(kind, len, fill)| Ext::Generic { kind, len, fill }),
        (prop_oneof![Just(0u16), 1u16..0x2000], any::<bool>(), any::<u32>())
            .prop_map(|(offset, more, id)| Ext::Fragment { offset, more, id }),
    ];
    let ext = prop_oneof![3 => Just(vec![]), 1 => vec(ext, 1..3)];
    (
        (tos(), any::<u32>(), version, any::<u8>()),
        (uniform(any::<u8>()), uniform(any::<u8>()), ext, l4(prog)),
    )
        .prop_map(|((tclass, flow, version, hop), (src, dst, ext, l4))| V6 {
            tclass,
            flow,
            version,
            hop,
            src,
            dst,
            ext,
            l4,
        })
}

fn l4(prog: Prog) -> impl Strategy<Value = L4> {
    let wireguard = (
        prop_oneof![4 => 1u8..=4, 1 => any::<u8>()],
        prop_oneof![4 => Just([0u8; 3]), 1 => uniform(any::<u8>())],
        vec(any::<u8>(), 0..48),
    )
        .prop_map(|(kind, reserved, rest)| Payload::WireGuard { kind, reserved, rest });
    let payload = prop_oneof![2 => wireguard, 1 => vec(any::<u8>(), 0..64).prop_map(Payload::Bytes)];
    let udp = (
        port(),
        any::<u16>(),
        prop_oneof![10 => Just(None), 1 => any::<u16>().prop_map(Some)],
        prop_oneof![15 => Just(None), 1 => (0u8..8).prop_map(Some)],
        payload,
    )
        .prop_map(|(sport, dport, len, cut, payload)| L4::Udp {
            sport,
            dport,
            len,
            cut,
            payload,
        });
    let tcp = (port(), any::<u16>(), vec(any::<u8>(), 0..32)).prop_map(|(sport, dport, data)| L4::Tcp {
        sport,
        dport,
        data,
    });
    let icmp = (
        prop_oneof![Just(0u8), Just(8), Just(128), Just(129), any::<u8>()],
        any::<u8>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(kind, code, id, seq)| L4::Icmp { kind, code, id, seq });
    let raw = (any::<u8>(), vec(any::<u8>(), 0..32)).prop_map(|(proto, data)| L4::Raw { proto, data });
    let udp_weight = if prog == Prog::Writer { 16 } else { 6 };
    prop_oneof![udp_weight => udp, 2 => tcp, 1 => icmp, 1 => raw]
}
