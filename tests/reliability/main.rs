//! Reliability (issue 4): the real pdscp binary under concurrent commands,
//! crashes at every step, devices that come and go, steady traffic while
//! other tunnels change, other tools' filters, links and pins beside it,
//! environment faults, hostile input, and the privacy of its pins.
//!
//! Needs root, like the e2e tests. Every test builds its own namespaces and
//! pin root (tests/testbed), so the tests run in parallel. Crashes are
//! injected with `PDSCP_TEST_CRASH_AT` (pdscp aborts at that step, like
//! `kill -9`), and the order in which concurrent commands took effect is read
//! from `PDSCP_TEST_JOURNAL`; both are set on the child only, never in this
//! process. Anything that could mount over /sys/fs/bpf runs in a private
//! mount namespace (`unshare -m`), so a bug there cannot hide the host's pins.
//!
//! Four tests reproduce bugs these tests found (now fixed); their comments
//! keep the reproduction.
//!
//! One file per section: concurrency, interruption, gc, continuity,
//! collateral, environment (faults), input (hostile), security. This file
//! has what several of them use: the second uplink, crash injection, and
//! the EF flows whose marks they check.

#[path = "../testbed/mod.rs"]
mod testbed;

mod collateral;
mod concurrency;
mod continuity;
mod environment;
mod gc;
mod input;
mod interruption;
mod security;
mod upgrade;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::process::Output;

use testbed::*;

/// EF, the mark every test flow carries.
const EF: u8 = 0xb8;

// ---------------------------------------------------------------------------
// Running pdscp
// ---------------------------------------------------------------------------

/// pdscp that aborts at crash point `step` if the command gets there.
fn pd_crash<S: AsRef<OsStr>>(bed: &TestBed, step: &str, args: &[S]) -> Output {
    let mut cmd = pdscp_cmd(&bed.pin_root, Some(&bed.a), args);
    cmd.env("PDSCP_TEST_CRASH_AT", step);
    run_cmd(cmd)
}

/// Whether pdscp died at an injected crash point.
fn crashed(out: &Output) -> bool {
    out.status.signal() == Some(libc::SIGABRT)
}

// ---------------------------------------------------------------------------
// The bed: a second uplink, tunnels on a chosen uplink
// ---------------------------------------------------------------------------

/// The test bed with [`UP1`] beside up0, and the loopback ends for
/// tunnels whose route picks the uplink.
fn two_uplinks() -> TestBed {
    let bed = TestBed::new();
    bed.add_up1();
    bed.loopback_ends();
    bed
}

/// A tunnel bound to uplink `lower` (`dev LOWER`), between `a_ip` and `b_ip`.
fn on<'a>(
    name: &'a str,
    vni: u32,
    srcport: u16,
    lower: &'a str,
    a_ip: Ipv4Addr,
    b_ip: Ipv4Addr,
    inner: u8,
) -> TunnelSpec<'a> {
    TunnelSpec {
        name,
        vni,
        srcport,
        lower: Some(lower),
        a_ip,
        b_ip,
        inner,
    }
}

// ---------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------

/// `n` UDP packets marked EF through each tunnel, to inner port `dport`.
fn send_ef(bed: &TestBed, tunnels: &[&Tunnel], dport: u16, n: usize) {
    for t in tunnels {
        send_udp(&bed.a, t.b_addr(false), dport, EF, n);
    }
}

/// Outer packets of tunnel `t` leaving a that carry inner UDP to `dport`.
fn flow(frames: &[Vec<u8>], t: &Tunnel, dport: u16) -> Vec<TunnelPacket> {
    from_a(frames, t, IPPROTO_UDP)
        .into_iter()
        .filter(|p| p.inner_dport == Some(dport) && p.inner_src == t.a_addr(false))
        .collect()
}

/// Exactly `n` packets of the flow, each marked EF outside with a valid checksum.
fn expect_marked(frames: &[Vec<u8>], t: &Tunnel, dport: u16, n: usize, what: &str) {
    expect_flow(frames, t, dport, n, 46, what);
}

/// Exactly `n` packets of the flow, none marked outside.
fn expect_unmarked(frames: &[Vec<u8>], t: &Tunnel, dport: u16, n: usize, what: &str) {
    expect_flow(frames, t, dport, n, 0, what);
}

fn expect_flow(frames: &[Vec<u8>], t: &Tunnel, dport: u16, n: usize, dscp: u8, what: &str) {
    let pkts = flow(frames, t, dport);
    assert_eq!(
        pkts.len(),
        n,
        "{what}: {} port {dport}: packets on the wire",
        t.name
    );
    for p in &pkts {
        assert_eq!(
            p.outer_dscp(),
            dscp,
            "{what}: {} port {dport} outer DSCP: {p:?}",
            t.name
        );
        assert!(p.outer_ipv4_checksum_ok, "{what}: checksum: {p:?}");
    }
}

/// Marked iff `attached`.
fn expect_marked_iff(frames: &[Vec<u8>], t: &Tunnel, dport: u16, n: usize, attached: bool, what: &str) {
    if attached {
        expect_marked(frames, t, dport, n, what)
    } else {
        expect_unmarked(frames, t, dport, n, what)
    }
}
