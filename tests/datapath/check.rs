//! The properties every run must have, checked against the oracle:
//! TC_ACT_UNSPEC; the packet byte for byte unchanged, or changed only in the
//! DSCP bits of the header the oracle names (and the IPv4 checksum, valid
//! again when it was valid, recomputed here from scratch); the DSCP the
//! oracle expects; skb->priority; and the flows and reflect maps.
use crate::harness::Outcome;
use crate::oracle::{Expect, FlowKey, Model};
use crate::packet::{ipv4_checksum, ones_sum};
use crate::parse::{self, Family};

/// TC_ACT_UNSPEC, also TCX_NEXT.
const TC_ACT_UNSPEC: i32 = -1;

/// What a passing run did, for the tallies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Refused,
    Unchanged,
    /// Given a new DSCP.
    Rewritten,
    /// Given the DSCP it already had: unchanged.
    Kept,
    /// Given an skb->priority (--priority-only), unchanged.
    Priority,
}

pub fn check(input: &[u8], outcome: &Outcome, exp: &Expect) -> Result<Seen, String> {
    let (ret, data, priority, maps) = match outcome {
        Outcome::Refused if may_be_refused(input) => return Ok(Seen::Refused),
        Outcome::Refused => return Err("BPF_PROG_TEST_RUN refused the packet".into()),
        Outcome::Ran { .. } if input.len() < 14 => {
            return Err("BPF_PROG_TEST_RUN ran a packet shorter than Ethernet's header".into())
        }
        Outcome::Ran {
            ret,
            data,
            priority,
            maps,
        } => (*ret, data, *priority, maps),
    };
    if ret != TC_ACT_UNSPEC {
        return Err(format!("returned {ret}, not TC_ACT_UNSPEC (-1)"));
    }
    if data.len() != input.len() {
        return Err(format!("{} bytes went in, {} came out", input.len(), data.len()));
    }
    let mut seen = Seen::Unchanged;
    match exp.dscp {
        None => {
            if data != input {
                return Err(format!(
                    "the packet must come out unchanged; bytes {:?} differ",
                    differing(input, data)
                ));
            }
        }
        Some((ip, dscp)) => {
            seen = Seen::Rewritten;
            let o = ip.off;
            // Bits that may change: the DSCP, and the IPv4 header checksum.
            let mut may = vec![0u8; input.len()];
            match ip.family {
                Family::V4 => {
                    may[o + 1] = 0xfc;
                    may[o + 10] = 0xff;
                    may[o + 11] = 0xff;
                }
                Family::V6 => {
                    may[o] = 0x0f;
                    may[o + 1] = 0xc0;
                }
            }
            let stray: Vec<usize> = (0..input.len())
                .filter(|&i| (input[i] ^ data[i]) & !may[i] != 0)
                .collect();
            if !stray.is_empty() {
                return Err(format!(
                    "bits outside the DSCP (and IPv4 checksum) of the header at {o} changed, in bytes {stray:?}"
                ));
            }
            let got = parse::dscp(data, ip);
            if got != dscp {
                return Err(format!(
                    "the header at {o} must leave with DSCP {dscp}, not {got} (came with {})",
                    parse::dscp(input, ip)
                ));
            }
            if got == parse::dscp(input, ip) {
                if data != input {
                    return Err(format!(
                        "the DSCP was already {dscp}, yet bytes {:?} changed",
                        differing(input, data)
                    ));
                }
                seen = Seen::Kept;
            }
            if ip.family == Family::V4 {
                check_ipv4_sum(&input[o..], &data[o..])?;
            }
        }
    }
    if priority != exp.priority {
        return Err(format!(
            "skb->priority must be {:#x}, not {priority:#x}",
            exp.priority
        ));
    }
    if exp.priority != exp.priority_before && seen == Seen::Unchanged {
        seen = Seen::Priority;
    }
    check_maps(maps, exp)?;
    Ok(seen)
}

/// Packets BPF_PROG_TEST_RUN refuses (EINVAL): shorter than an Ethernet
/// header (every kernel), or than an Ethernet header and the IPv4 or IPv6
/// header that skb->protocol names (seen on 6.18; older kernels run them).
pub fn may_be_refused(p: &[u8]) -> bool {
    p.len() < 14
        || match parse::skb_protocol(p) {
            0x0800 => p.len() < 14 + 20,
            0x86dd => p.len() < 14 + 40,
            _ => false,
        }
}

/// A valid IPv4 header checksum stays valid (equal to one computed from
/// scratch); an invalid one keeps its error (the one's complement sum of
/// the header is unchanged).
fn check_ipv4_sum(before: &[u8], after: &[u8]) -> Result<(), String> {
    let len = usize::from(before[0] & 0x0f) * 4;
    let (before, after) = (&before[..len], &after[..len]);
    let want = ipv4_checksum(after);
    let got = u16::from_be_bytes([after[10], after[11]]);
    if ipv4_checksum(before) == u16::from_be_bytes([before[10], before[11]]) {
        if got != want {
            return Err(format!(
                "IPv4 header checksum {got:#06x} after the rewrite, {want:#06x} computed from scratch"
            ));
        }
    } else if ones_sum(before) % 0xffff != ones_sum(after) % 0xffff {
        return Err(format!(
            "the header's checksum was wrong by {:#06x} and is now wrong by another amount",
            ones_sum(before)
        ));
    }
    Ok(())
}

fn check_maps(got: &Model, exp: &Expect) -> Result<(), String> {
    if got.reflect != exp.maps.reflect {
        return Err(format!(
            "reflect map:\n  expected {:?}\n  got      {:?}",
            exp.maps.reflect, got.reflect
        ));
    }
    let mut flows = got.flows.clone();
    if let Some((port, mark)) = exp.unknown_hash {
        // The entry under the hash the kernel computed: the one key that was
        // not there before.
        let new: Vec<FlowKey> = flows
            .keys()
            .filter(|k| !exp.maps.flows.contains_key(k))
            .copied()
            .collect();
        match new[..] {
            [k] if k.port == port && flows[&k] == mark => {
                flows.remove(&k);
            }
            _ => {
                return Err(format!(
                    "flows map: expected {:?} and one more entry at port {port} holding {mark:?}, got {:?}",
                    exp.maps.flows, got.flows
                ))
            }
        }
    }
    if flows != exp.maps.flows {
        return Err(format!(
            "flows map:\n  expected {:?}\n  got      {:?}",
            exp.maps.flows, got.flows
        ));
    }
    Ok(())
}

fn differing(a: &[u8], b: &[u8]) -> Vec<usize> {
    (0..a.len().min(b.len())).filter(|&i| a[i] != b[i]).collect()
}
