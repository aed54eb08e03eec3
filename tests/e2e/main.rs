//! End to end: the real pdscp binary, real BPF programs in the kernel, two
//! network namespaces joined by a veth pair, VXLAN tunnels with a fixed outer
//! source port standing in for WireGuard, and the outer packets captured on
//! the far side of the wire. Needs root.
//!
//! One file per feature area: marking (which packets leave marked),
//! lifecycle (attach, detach, what is left behind), refusals, uplinks.
//! This file has the checks they share.

#[path = "../testbed/mod.rs"]
mod testbed;

mod check;
mod counters;
mod failover;
mod lifecycle;
mod live_view;
mod marking;
mod policy;
mod reflection;
mod refusals;
mod uplinks;

use testbed::*;

/// Both attach modes: TCX links and clsact filters.
const MODES: [&str; 2] = ["tcx", "tc"];

/// At least `min` packets.
fn assert_at_least(pkts: &[TunnelPacket], min: usize, what: &str) {
    assert!(
        pkts.len() >= min,
        "{what}: {} packets, expected at least {min}",
        pkts.len()
    );
}

/// Every packet carries the inner DSCP outside, ECN as the tunnel set it, a valid checksum.
fn assert_marked(pkts: &[TunnelPacket], min: usize, what: &str) {
    assert_at_least(pkts, min, what);
    for p in pkts {
        assert_eq!(
            p.outer_dscp(),
            p.inner_dscp(),
            "{what}: outer DSCP copied from inner: {p:?}"
        );
        assert_eq!(p.outer_ecn(), p.inner_ecn(), "{what}: ECN kept: {p:?}");
        assert!(
            p.outer_ipv4_checksum_ok,
            "{what}: IPv4 header checksum valid: {p:?}"
        );
    }
}

/// At least `min` packets, every one with outer DSCP 0.
fn assert_unmarked(pkts: &[TunnelPacket], min: usize, what: &str) {
    assert_at_least(pkts, min, what);
    for p in pkts {
        assert_eq!(p.outer_dscp(), 0, "{what}: outer DSCP must stay 0: {p:?}");
    }
}

/// The pdscp filters (by program name) on a device's egress, in tc mode.
fn pdscp_tc_filters(ns: &Netns, dev: &str) -> usize {
    ns.sh(&format!("tc filter show dev {dev} egress"))
        .matches("name pdscp_")
        .count()
}
