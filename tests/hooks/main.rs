//! The network-manager hooks in hooks/ (see docs/hooks.md), each run the way
//! its manager runs it (same arguments, same environment variables), inside
//! namespace `a` of the test bed (with `nsenter --net=`, as `ip netns exec`
//! hides bpffs), against the real pdscp binary and the bed's own pin root;
//! then pdscp's state is checked with `pdscp status --json`, and for one hook
//! the packets on the wire. VXLAN tunnels with a fixed source port stand in
//! for WireGuard, so their configuration gives the port.
//!
//! Nothing is read from or installed into /etc: the hooks are pointed at the
//! repository's hooks/ and at a scratch directory by their environment
//! variables (PDSCP, PDSCP_PIN_ROOT, PDSCP_HOOK_LIB, PDSCP_CONFIG,
//! PDSCP_OPENWRT_LIB, UCI_CONFIG_DIR, ...). `logger` is a stub in the scratch
//! directory's bin/ (first in PATH) that records what would go to syslog.
//! OpenWrt's /lib/functions.sh and /etc/rc.common are small stand-ins
//! written here; the OpenWrt scripts run under busybox sh, as on a router.
//! Needs root.
//!
//! sandbox.rs makes the scratch directory a hook runs against, managers.rs
//! runs a hook as each manager does; one file per manager holds its tests,
//! every_hook.rs what all hooks share. This file checks pdscp's state.

#[path = "../testbed/mod.rs"]
mod testbed;

mod managers;
mod sandbox;

mod every_hook;
mod ifupdown;
mod networkd_dispatcher;
mod networkmanager;
mod openwrt;
mod options;
mod systemd;
mod uplinks;

use std::fs;

use managers::*;
use sandbox::Sandbox;
use serde_json::Value;
use testbed::*;

/// The repository, whose hooks/ the tests run.
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The path of `hooks/<rel>` in the repository.
fn hook(rel: &str) -> String {
    format!("{REPO}/hooks/{rel}")
}

/// A test bed, a sandbox, and the environment every hook gets on top of its
/// manager's (the bed's pin root, the real pdscp).
fn bed_and_sandbox() -> (TestBed, Sandbox, Vec<(String, String)>) {
    let bed = TestBed::new();
    let s = Sandbox::new();
    let env = s.env(&bed.pin_root, pdscp_bin());
    (bed, s, env)
}

/// `name` is attached and running, on uplink `uplink`, matching `port`
/// (None: any port); returns the status.
fn assert_attached(bed: &TestBed, name: &str, uplink: &str, port: Option<u16>, s: &Sandbox) -> Value {
    let st = status(bed);
    let Some((u, t)) = find_tunnel(&st, name) else {
        panic!("{name} not attached: {st:#}\nsyslog:\n{}", s.syslog());
    };
    assert_eq!(u["name"], uplink, "{st:#}");
    assert_eq!(u["attached"], true, "writer runs: {st:#}");
    assert_eq!(t["attached"], true, "reader runs: {st:#}");
    match port {
        Some(p) => assert_eq!(t["port"], p, "{st:#}"),
        None => assert_eq!(t["any_port"], true, "{st:#}"),
    }
    st
}

fn assert_not_attached(bed: &TestBed, name: &str) {
    let st = status(bed);
    assert!(
        find_tunnel(&st, name).is_none(),
        "{name} should not be attached: {st:#}"
    );
}

/// No uplink, no tunnel, no pinned directory left.
fn assert_nothing_left(bed: &TestBed) {
    let st = status(bed);
    assert_eq!(st["uplinks"], Value::Array(vec![]), "{st:#}");
    if let Ok(dir) = fs::read_dir(&bed.pin_root) {
        let left: Vec<_> = dir
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left in the pin root: {left:?}");
    }
}

/// Outer UDP packets of `t` leaving a, for UDP sent with EF (IPv4) and AF11
/// (IPv6) inside.
fn udp_through(bed: &TestBed, t: &Tunnel) -> Vec<TunnelPacket> {
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t.b_addr(false), 9000, 0xb8, 5);
    send_udp(&bed.a, t.b_addr(true), 9001, 0x28, 5);
    from_a(&cap.stop(), t, IPPROTO_UDP)
}

fn assert_marked(pkts: &[TunnelPacket]) {
    assert!(pkts.len() >= 10, "{} packets: {pkts:?}", pkts.len());
    for p in pkts {
        assert_ne!(p.inner_dscp(), 0);
        assert_eq!(p.outer_dscp(), p.inner_dscp(), "outer DSCP copied: {p:?}");
    }
}

fn assert_unmarked(pkts: &[TunnelPacket]) {
    assert!(pkts.len() >= 10, "{} packets: {pkts:?}", pkts.len());
    assert!(pkts.iter().all(|p| p.outer_dscp() == 0), "{pkts:?}");
}

fn del_link(bed: &TestBed, name: &str) {
    bed.a.sh(&format!("ip link del {name}"));
}

/// The uplinks tunnel `name` is attached to (`status --json`'s
/// tunnels[].uplinks), sorted; empty if it is not attached.
fn tunnel_uplinks(bed: &TestBed, name: &str) -> Vec<String> {
    let st = status(bed);
    let Some(t) = st["tunnels"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
    else {
        return Vec::new();
    };
    let mut ups: Vec<String> = t["uplinks"]
        .as_array()
        .unwrap_or_else(|| panic!("uplinks of {name}: {st:#}"))
        .iter()
        .map(|u| u.as_str().expect("uplink name").to_string())
        .collect();
    ups.sort();
    ups
}

/// Outer packets of the loopback tunnel `t` leaving a by `uplink` (the
/// route is moved there first), for UDP sent with EF inside.
fn udp_via(bed: &TestBed, t: &Tunnel, uplink: &str) -> Vec<TunnelPacket> {
    bed.route_via(uplink);
    let cap = Capture::start(&bed.b, uplink);
    send_udp(&bed.a, t.b_addr(false), 9000, 0xb8, 5);
    from_a(&cap.stop(), t, IPPROTO_UDP)
}
