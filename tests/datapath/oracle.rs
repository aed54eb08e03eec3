//! What each program must do to a case, decided here from the packet's bytes
//! and the maps' contents, without the BPF code: a parser of its own, the
//! rules of docs/state.md and bpf/pdscp.h written out, and the maps' state
//! after the run.
//!
//! The rules, as the datapath documents them:
//! - An IP header is found after Ethernet and at most two 802.1Q/802.1ad
//!   tags (l2 devices), or at byte 0 with skb->protocol saying which IP (L3
//!   devices); it must be whole and carry its version.
//! - The writer marks an attached tunnel's outer packet: UDP right after the
//!   IP header (IPv4 with IHL >= 5 and fragment offset 0, so first fragments
//!   count; IPv6 without extension headers), whose source port is the
//!   tunnel's, or for --any-port tunnels any port with a flow entry. The mark
//!   is the handshake DSCP for a WireGuard handshake (if set), else the fixed
//!   DSCP (if set), else the flow entry's for {skb->hash, port}; with
//!   --priority-only it becomes skb->priority (CAKE's tin) and no byte changes.
//! - The reader stores the inner packet's (mapped) DSCP under {hash, port};
//!   with reflection it may give the packet the mark its flow carries the
//!   other way, and learns the flow's mark. The ingress program does the
//!   same the other way. Flows are keyed by their ends, so both directions
//!   share a key; fragments and IPv6 extension headers have no ports.
use std::collections::BTreeMap;

use crate::case::{flag, Case, Setup, DEV_TUNNEL, DEV_UPLINK};
use crate::packet::*;
use crate::parse::*;
use crate::{Prog, PORT_A, PORT_B};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub hash: u32,
    /// Host order.
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowMark {
    pub dscp: u8,
    pub tunnel: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReflectKey {
    pub tunnel: u16,
    pub proto: u8,
    pub v6: bool,
    /// The lower end (address, port), then the higher; IPv4 addresses in
    /// the first four bytes.
    pub lo: ([u8; 16], u16),
    pub hi: ([u8; 16], u16),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReflectMark {
    pub out: u8,
    pub inn: u8,
}

/// The contents of flows and reflect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub flows: BTreeMap<FlowKey, FlowMark>,
    pub reflect: BTreeMap<ReflectKey, ReflectMark>,
}

/// What must come out of a run.
#[derive(Debug)]
pub struct Expect {
    /// The header to rewrite and the DSCP it must then carry; None: the
    /// packet must come out byte for byte as it went in.
    pub dscp: Option<(Ip, u8)>,
    pub priority: u32,
    /// skb->priority before the run.
    pub priority_before: u32,
    pub maps: Model,
    /// A reader run directly (hash unknown): one more flow entry at this
    /// port with this mark, under whatever hash the kernel computed.
    pub unknown_hash: Option<(u16, FlowMark)>,
}

/// The reflect key of the packet's flow under `tunnel`: TCP/UDP ports or the
/// ICMP echo identifier (ICMP and ICMPv6 are told apart by their protocol
/// number, as in the key, whatever the IP version).
pub fn reflect_key(p: &[u8], ip: Ip, tunnel: u16) -> Option<ReflectKey> {
    let o = ip.off;
    let (proto, src, dst, l4) = match ip.family {
        Family::V4 => {
            if be16(p, o + 6) & 0x3fff != 0 || ihl(p, ip) < 20 {
                return None; // a fragment (MF or offset), or a bad IHL
            }
            let mut src = [0; 16];
            let mut dst = [0; 16];
            src[..4].copy_from_slice(&p[o + 12..o + 16]);
            dst[..4].copy_from_slice(&p[o + 16..o + 20]);
            (p[o + 9], src, dst, o + ihl(p, ip))
        }
        Family::V6 => {
            let src: [u8; 16] = p[o + 8..o + 24].try_into().ok()?;
            let dst: [u8; 16] = p[o + 24..o + 40].try_into().ok()?;
            (p[o + 6], src, dst, o + 40)
        }
    };
    let l4h = p.get(l4..l4 + 8)?;
    let (sport, dport) = match (proto, l4h[0]) {
        (IPPROTO_TCP | IPPROTO_UDP, _) => (be16(l4h, 0), be16(l4h, 2)),
        (IPPROTO_ICMP, 0 | 8) | (IPPROTO_ICMPV6, 128 | 129) => (be16(l4h, 4), be16(l4h, 4)),
        _ => return None,
    };
    let (lo, hi) = if (src, sport) <= (dst, dport) {
        ((src, sport), (dst, dport))
    } else {
        ((dst, dport), (src, sport))
    };
    Some(ReflectKey {
        tunnel,
        proto,
        v6: ip.family == Family::V6,
        lo,
        hi,
    })
}

/// The maps before the run: the setup's entries, reflect entries keyed by
/// the packet's flow where there is one.
pub fn initial(case: &Case) -> Model {
    let s = &case.setup;
    let p = &case.bytes;
    let ip = (p.len() >= 14)
        .then(|| find_ip(p, s.l2(case.ethernet())))
        .flatten();
    let mut m = Model::default();
    for f in &s.flows {
        let key = FlowKey {
            hash: f.hash.unwrap_or(s.hash.unwrap_or(0)),
            port: f.port,
        };
        m.flows.insert(
            key,
            FlowMark {
                dscp: f.dscp,
                tunnel: f.tunnel,
            },
        );
    }
    for r in &s.reflect {
        let own = ip
            .filter(|_| r.own_flow)
            .and_then(|ip| reflect_key(p, ip, r.tunnel));
        let key = own.unwrap_or(ReflectKey {
            tunnel: r.tunnel,
            proto: IPPROTO_TCP,
            v6: r.decoy[0] & 1 == 1,
            lo: ([0; 16], be16(&r.decoy, 0)),
            hi: (r.decoy, be16(&r.decoy, 2)),
        });
        m.reflect.insert(
            key,
            ReflectMark {
                out: r.out,
                inn: r.inn,
            },
        );
    }
    m
}

pub fn expect(case: &Case, initial: &Model) -> Expect {
    let mut e = Expect {
        dscp: None,
        priority: case.setup.priority,
        priority_before: case.setup.priority,
        maps: initial.clone(),
        unknown_hash: None,
    };
    let p = &case.bytes;
    if p.len() < 14 {
        return e; // the test run refuses it: nothing runs
    }
    let s = &case.setup;
    let ip = find_ip(p, s.l2(case.ethernet()));
    match case.prog {
        Prog::Writer => writer(s, p, ip, &mut e),
        Prog::Reader => reader(s, p, ip, &mut e),
        Prog::Ingress => ingress(s, p, ip, &mut e),
    }
    e
}

fn writer(s: &Setup, p: &[u8], ip: Option<Ip>, e: &mut Expect) {
    let Some(ip) = ip.filter(|_| s.roles & DEV_UPLINK != 0) else {
        return;
    };
    let Some(udp) = outer_udp(p, ip) else {
        return;
    };
    let sport = be16(p, udp);
    let hash = s.hash.unwrap_or(0);
    let flows = &e.maps.flows;
    // The tunnel that sends from this port; else an --any-port tunnel's
    // flow, found by the hash alone. Port 0 is no tunnel's (its entry in
    // `ports` counts the --any-port tunnels).
    let owner = [(0, PORT_A), (1, PORT_B)].into_iter().find(|(slot, port)| {
        s.tunnel(*slot)
            .is_some_and(|t| sport != 0 && t.port(*port) == sport)
    });
    let (slot, entry) = match owner {
        Some((slot, _)) => (slot, flows.get(&FlowKey { hash, port: sport }).copied()),
        None if s.a.any_port || s.b.as_ref().is_some_and(|b| b.any_port) => {
            let Some(found) = flows.get(&FlowKey { hash, port: 0 }) else {
                return;
            };
            (found.tunnel, Some(*found))
        }
        None => return,
    };
    let Some(t) = s.tunnel(slot).filter(|t| t.here) else {
        return; // an unused slot, or a tunnel not attached to this uplink
    };
    let mark = if t.flags & flag::HANDSHAKE != 0 && wireguard_handshake(p, udp) {
        t.handshake
    } else if t.flags & flag::FIXED != 0 {
        t.fixed
    } else {
        match entry {
            Some(f) => f.dscp,
            None => return,
        }
    } & 63;
    if t.flags & flag::PRIORITY == 0 {
        e.dscp = Some((ip, mark));
    } else if let Some((major, tins)) = s.cake {
        if tins[usize::from(mark)] != 0 {
            e.priority = major | u32::from(tins[usize::from(mark)]);
        }
    }
}

fn reader(s: &Setup, p: &[u8], ip: Option<Ip>, e: &mut Expect) {
    let Some(ip) = ip.filter(|_| s.roles & DEV_TUNNEL != 0) else {
        return;
    };
    let flags = s.a.flags;
    let mut dscp = dscp(p, ip);
    if flags & flag::REFLECT_OUT != 0 {
        dscp = reflect_apply(s, p, ip, dscp, true, e);
    }
    if flags & flag::REFLECT_IN != 0 {
        reflect_learn(s, p, ip, dscp, true, e);
    }
    let mark = if flags & flag::MAPPED != 0 {
        s.a.map[usize::from(dscp)] & 63
    } else {
        dscp
    };
    let port = s.a.port(PORT_A);
    let value = FlowMark {
        dscp: mark,
        tunnel: 0,
    };
    match s.hash {
        // The kernel dissects the packet: a hash, never 0, that no entry has.
        None => e.unknown_hash = (mark != 0).then_some((port, value)),
        Some(0) => {} // no hash: nothing the writer could match
        Some(hash) => {
            let key = FlowKey { hash, port };
            if e.maps.flows.contains_key(&key) || mark != 0 {
                e.maps.flows.insert(key, value);
            }
        }
    }
}

fn ingress(s: &Setup, p: &[u8], ip: Option<Ip>, e: &mut Expect) {
    let flags = s.a.flags;
    if flags & (flag::REFLECT_OUT | flag::REFLECT_IN) == 0 {
        return;
    }
    let Some(ip) = ip.filter(|_| s.roles & DEV_TUNNEL != 0) else {
        return;
    };
    let dscp = dscp(p, ip);
    if flags & flag::REFLECT_OUT != 0 {
        reflect_learn(s, p, ip, dscp, false, e);
    }
    if flags & flag::REFLECT_IN != 0 {
        reflect_apply(s, p, ip, dscp, false, e);
    }
}

/// The packet (going `out` into the tunnel, or coming in) gets the mark its
/// flow carries the other way, unless it has its own and that wins.
fn reflect_apply(s: &Setup, p: &[u8], ip: Ip, dscp: u8, out: bool, e: &mut Expect) -> u8 {
    if dscp != 0 && s.a.flags & flag::OVERRIDE == 0 {
        return dscp;
    }
    let Some(stored) = reflect_key(p, ip, 0).and_then(|k| e.maps.reflect.get(&k)) else {
        return dscp;
    };
    let mark = if out { stored.inn } else { stored.out } & 63;
    if mark == 0 || mark == dscp {
        return dscp;
    }
    e.dscp = Some((ip, mark));
    mark
}

/// Remembers the flow's mark in this direction (0 if the tunnel does not
/// reflect that DSCP); an unmarked flow gets no new entry.
fn reflect_learn(s: &Setup, p: &[u8], ip: Ip, dscp: u8, out: bool, e: &mut Expect) {
    let mark = if s.a.allow >> dscp & 1 == 1 { dscp } else { 0 };
    let Some(key) = reflect_key(p, ip, 0) else {
        return;
    };
    if let Some(stored) = e.maps.reflect.get_mut(&key) {
        if out {
            stored.out = mark;
        } else {
            stored.inn = mark;
        }
        return;
    }
    if mark != 0 {
        let (o, i) = if out { (mark, 0) } else { (0, mark) };
        e.maps.reflect.insert(key, ReflectMark { out: o, inn: i });
    }
}
