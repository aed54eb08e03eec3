//! pdscp on the kernel's real WireGuard. This machine's kernel has none, so
//! every test here is ignored by a plain `cargo test`; scripts/vm-tests.sh
//! runs them with `--ignored` inside Debian's stock 6.1 (tc) and 6.12 (TCX)
//! kernels under QEMU. Needs root and wireguard-tools (`wg`).
//!
//! Each test builds WireGuard tunnels between the test bed's namespaces `a`
//! (pdscp's router) and `b` on top of the veth `up0`, attaches pdscp in `a`
//! and captures what crosses the wire. Outer packets are encrypted, so a
//! flow is told by what is visible outside: WireGuard data messages (type 4)
//! from `a`'s listen port, and their length. WireGuard pads the inner packet
//! to a multiple of 16, so a data message's UDP payload is
//! `32 + roundup16(inner IP length)`; each flow a test sends has its own
//! inner length. Keepalives (payload 32, no inner packet) are ignored.
//!
//! devices.rs builds the tunnels, outer.rs reads what crosses the wire,
//! flows.rs sends traffic and checks it; the tests are in marking.rs,
//! attach.rs, lifecycle.rs and uplinks.rs. This file reads pdscp's state.

#[path = "../testbed/mod.rs"]
mod testbed;

mod devices;
mod flows;
mod outer;

mod attach;
mod check;
mod failover;
mod lifecycle;
mod marking;
mod policy;
mod reflection;
mod uplinks;

use devices::*;
use flows::*;
use outer::*;
use serde_json::Value;
use testbed::*;

/// The running kernel's (major, minor), from `uname -r`.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// What `--mode auto` must pick here: TCX from Linux 6.6, tc before.
fn auto_mode() -> &'static str {
    if kernel_version() >= (6, 6) {
        "tcx"
    } else {
        "tc"
    }
}

/// Checks the tunnel is attached to `up` with `a`'s listen port as its port.
fn assert_attached(s: &Value, up: &str, wg: &Wg) {
    let t = tunnel(s, up, &wg.name);
    assert_eq!(t["port"], wg.port_a, "{}: port: {s:#}", wg.name);
    assert_eq!(t["present"], true, "{}: {s:#}", wg.name);
    assert_eq!(t["attached"], true, "{}: {s:#}", wg.name);
    assert_eq!(uplink(s, up)["attached"], true, "{up}: {s:#}");
}

/// Counter `which` (marked_by_dscp, seen_by_dscp) of DSCP `dscp` on `up`.
fn counter(s: &Value, up: &str, which: &str, dscp: u8) -> u64 {
    uplink(s, up)["counters"][which][dscp.to_string()]
        .as_u64()
        .unwrap_or(0)
}
