//! Test bed for pdscp's integration tests: `mod testbed;` in tests/NAME.rs,
//! `#[path = "../testbed/mod.rs"] mod testbed;` in tests/NAME/main.rs.
//!
//! Two network namespaces joined by a veth "uplink" (`up0`): `a` is the
//! router that runs pdscp, `b` is the far end. VXLAN tunnels with a fixed
//! outer source port stand in for WireGuard (which this machine lacks): like
//! WireGuard they encapsulate in UDP from a fixed port, write outer DSCP 0 and
//! copy only the ECN bits outwards. On top of that: packet capture, a VXLAN
//! parser, bounded traffic generators, an unrelated legacy tc filter with a
//! hit counter, helpers that run the pdscp binary and read its status, and
//! an audit of its pins against what the kernel runs.
//!
//! Everything is unique per test (namespace names carry the process id and a
//! counter) and is removed in `Drop`, so tests may run in parallel threads.
//! Only 198.18.0.0/15 and 2001:db8::/32 are used, and only inside the
//! namespaces made here.
//!
//! `ip netns exec` remounts /sys (hiding bpffs), so external commands enter a
//! namespace with `nsenter --net=...`, and in-process sockets are made on a
//! dedicated thread that called `setns` (which affects only that thread).
//!
//! The files, by concern:
//! - `namespaces.rs`: [`Netns`], unique names, threads inside a namespace;
//! - `bed.rs`: [`TestBed`] (`a`, `b`, `up0`, the pin root), more uplinks,
//!   and tunnels;
//! - `ethtool.rs`: turning device offloads off without the ethtool package;
//! - `capture.rs`: [`Capture`] of what a device sends and receives, [`Wire`]
//!   of several at once;
//! - `packets.rs`: parsing captured frames ([`parse_vxlan`]);
//! - `traffic.rs`: marked UDP, TCP bulk and ping traffic;
//! - `second_uplink.rs`: up1 beside up0, tunnels whose route picks the uplink;
//! - `tc.rs`: other tools' tc filters (a counter) beside pdscp's;
//! - `pdscp.rs`: running the pdscp binary and reading its answers
//!   (`status --json` included);
//! - `files.rs`: scratch directories and listings of pin trees;
//! - `hooks.rs`: what the kernel runs on each device's egress and ingress;
//! - `audit.rs`: whether pdscp's pins account for it;
//! - `library.rs`: all the tests take from the pdscp library crate (calls,
//!   crash steps, tc priorities), in one place.

// Each test crate uses a different subset of this module.
#![allow(dead_code)]

mod audit;
mod bed;
mod capture;
mod ethtool;
mod files;
mod foreign;
mod hooks;
mod internet;
mod library;
mod namespaces;
mod packets;
mod pdscp;
mod second_uplink;
mod tc;
mod traffic;

// Each test crate uses some of these.
#[allow(unused_imports)]
pub use self::{
    audit::*, bed::*, capture::*, ethtool::*, files::*, foreign::*, hooks::*, internet::*, library::*,
    namespaces::*, packets::*, pdscp::*, second_uplink::*, tc::*, traffic::*,
};
