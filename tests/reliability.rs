//! Reliability (issue 4): the real pdscp binary under concurrent commands,
//! crashes at every step, devices that come and go, steady traffic while
//! other tunnels change, other tools' filters, links and pins beside it,
//! environment faults, hostile input, and the privacy of its pins.
//!
//! Needs root, like tests/e2e.rs. Every test builds its own namespaces and
//! pin root (tests/testbed), so the tests run in parallel. Crashes are
//! injected with `PDSCP_TEST_CRASH_AT` (pdscp aborts at that step, like
//! `kill -9`), and the order in which concurrent commands took effect is read
//! from `PDSCP_TEST_JOURNAL`; both are set on the child only, never in this
//! process. Anything that could mount over /sys/fs/bpf runs in a private
//! mount namespace (`unshare -m`), so a bug there cannot hide the host's pins.
//!
//! Four tests reproduce bugs these tests found (now fixed); their comments
//! keep the reproduction.

mod testbed;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use libbpf_rs::libbpf_sys;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use testbed::*;

/// bpf/test_foreign.bpf.c: somebody else's TC program that counts packets.
mod foreign_skel {
    #![allow(clippy::all, dead_code, unused_imports, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/test_foreign.skel.rs"));
}

/// The second uplink, between a and b beside up0.
const UP1: &str = "up1";
const A1_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const B1_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
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
// The bed: tunnels on a chosen uplink
// ---------------------------------------------------------------------------

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
    parse_all(frames)
        .into_iter()
        .filter(|p| {
            p.vni == t.vni
                && p.outer_sport == t.srcport
                && p.inner_proto == IPPROTO_UDP
                && p.inner_dport == Some(dport)
                && p.inner_src == t.a_addr(false)
        })
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

/// A small deterministic PRNG (xorshift64*) for shuffles.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Concurrency
// ---------------------------------------------------------------------------

/// 32 attach/detach commands on 8 tunnels over 2 uplinks (up0 in tcx mode,
/// up1 in tc mode), all started at once behind a barrier, twice. The end
/// state is exactly what the last command per tunnel (in the journal's lock
/// order) asked for: in the pins, in `status --json`, in `tc filter show`
/// (tc uplink), in the TCX links of the pinned reader (bpftool), and on the
/// wire. Without the lock, concurrent loads and pins collide (EEXIST) or
/// registry entries are lost.
#[test]
fn concurrent_commands_end_as_the_last_one_asked() {
    let bed = TestBed::new();
    bed.add_veth(UP1, A1_V4, B1_V4, 1);
    let tunnels: Vec<(Tunnel, &str, &str)> = (0u8..8)
        .map(|i| {
            let (uplink, a_ip, b_ip, mode) = if i < 4 {
                (UPLINK, A_V4, B_V4, "tcx")
            } else {
                (UP1, A1_V4, B1_V4, "tc")
            };
            let name = format!("ct{i}");
            let spec = TunnelSpec {
                name: &name,
                vni: 200 + u32::from(i),
                srcport: 41000 + 2 * u16::from(i),
                lower: Some(uplink),
                a_ip,
                b_ip,
                inner: i + 1,
            };
            (bed.add_tunnel(&spec, false), uplink, mode)
        })
        .collect();
    let scratch = Scratch::new(&std::env::temp_dir(), "pdscp-journal");
    let journal = scratch.path().join("journal");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut attached: BTreeMap<String, bool> =
        tunnels.iter().map(|(t, ..)| (t.name.clone(), false)).collect();
    let mut commands = 0;
    for round in 0..2u16 {
        // Four commands per tunnel, attach or detach at random, in random order.
        let mut cmds: Vec<(usize, bool)> = (0..32).map(|k| (k % 8, rng.next() % 2 == 0)).collect();
        rng.shuffle(&mut cmds);
        let _ = fs::remove_file(&journal);
        let barrier = Barrier::new(cmds.len());
        let outs: Vec<Output> = thread::scope(|s| {
            let handles: Vec<_> = cmds
                .iter()
                .map(|&(i, is_attach)| {
                    let (t, uplink, mode) = &tunnels[i];
                    let args = if is_attach {
                        attach_args(t, uplink, mode)
                    } else {
                        vec!["detach".to_string(), t.name.clone()]
                    };
                    let mut cmd = pdscp_cmd(&bed.pin_root, Some(&bed.a), &args);
                    cmd.env("PDSCP_TEST_JOURNAL", &journal);
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        run_cmd(cmd)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("command thread"))
                .collect()
        });
        commands += outs.len();
        let mut not_attached_detaches = 0;
        for (out, &(i, is_attach)) in outs.into_iter().zip(&cmds) {
            let msg = ok(out);
            if !is_attach && msg.contains("not attached") {
                not_attached_detaches += 1;
            }
            assert!(msg.contains(&tunnels[i].0.name), "{msg}");
        }
        // The journal: one line per completed change, in lock order. A
        // detach that found no pin root at all (before any attach made it)
        // writes none: it came first, and changed nothing.
        let lines = fs::read_to_string(&journal).unwrap_or_default();
        let entries: Vec<(&str, &str)> = lines
            .lines()
            .map(|l| l.split_once(' ').unwrap_or_else(|| panic!("journal line {l:?}")))
            .collect();
        let attaches = cmds.iter().filter(|c| c.1).count();
        assert_eq!(
            entries.iter().filter(|e| e.0 == "attach").count(),
            attaches,
            "every attach is journaled: {lines}"
        );
        assert!(
            cmds.len() - entries.len() <= not_attached_detaches,
            "only detaches of nothing go unjournaled: {lines}"
        );
        for (verb, name) in &entries {
            attached.insert(name.to_string(), *verb == "attach");
        }

        let mut expected = Attached::new();
        for (t, uplink, _) in &tunnels {
            if attached[&t.name] {
                expected
                    .entry(uplink.to_string())
                    .or_default()
                    .insert(t.name.clone());
            }
        }
        assert_state(&bed, &expected, &format!("round {round}"));

        // tc uplink: pdscp_reader on exactly the attached tunnels, the writer
        // iff any is attached.
        let filters = |dev: &str| {
            bed.a
                .sh(&format!("tc filter show dev {dev} egress 2>/dev/null || true"))
        };
        let pdscp_tc = pdscp_hooks(&bed.a);
        let in_slot = |dev: &str, name: &str, pref: u64| {
            pdscp_tc
                .iter()
                .any(|h| h.dev == dev && h.how == "tc" && h.prog_name == name && h.pref == pref)
        };
        for (t, uplink, mode) in &tunnels {
            if *mode == "tc" {
                assert_eq!(
                    filters(&t.name).contains("pdscp_reader"),
                    attached[&t.name],
                    "round {round}: tc filter on {}",
                    t.name
                );
                assert_eq!(
                    in_slot(&t.name, "pdscp_reader", PDSCP_PRIO_READER),
                    attached[&t.name],
                    "round {round}: reader at prio {PDSCP_PRIO_READER} on {}",
                    t.name
                );
            } else {
                let link = bed
                    .pin_root
                    .join(uplink)
                    .join("tunnels")
                    .join(&t.name)
                    .join("link");
                assert_eq!(
                    link.exists(),
                    attached[&t.name],
                    "round {round}: {}",
                    link.display()
                );
            }
        }
        assert_eq!(
            filters(UP1).contains("pdscp_writer") && in_slot(UP1, "pdscp_writer", PDSCP_PRIO_WRITER),
            expected.contains_key(UP1),
            "round {round}: writer on {UP1} at prio {PDSCP_PRIO_WRITER}"
        );
        // tcx uplink: the links of the pinned reader (bpftool) are exactly
        // the attached tunnels' (which device each is on: audit above).
        let tcx_attached = expected.get(UPLINK).map_or(0, |t| t.len());
        let reader_pin = bed.pin_root.join(UPLINK).join("reader");
        let links_of_reader = if reader_pin.exists() {
            let out = run_cmd({
                let mut c = Command::new("bpftool");
                c.args(["-j", "prog", "show", "pinned"]).arg(&reader_pin);
                c
            });
            let prog: Value = serde_json::from_slice(&out.stdout).expect("bpftool prog json");
            let id = prog["id"].as_u64().expect("reader id");
            let out = run_cmd({
                let mut c = Command::new("bpftool");
                c.args(["-j", "link", "show"]);
                c
            });
            let links: Value = serde_json::from_slice(&out.stdout).expect("bpftool link json");
            links
                .as_array()
                .into_iter()
                .flatten()
                .filter(|l| l["prog_id"].as_u64() == Some(id))
                .count()
        } else {
            0
        };
        assert_eq!(
            links_of_reader, tcx_attached,
            "round {round}: TCX links of the reader"
        );

        // The wire: attached tunnels marked, the others not.
        let w = wire(&bed, &[UPLINK, UP1]);
        let dport = 9400 + round;
        for (t, ..) in &tunnels {
            send_ef(&bed, &[t], dport, 3);
        }
        let frames = w.stop();
        for (t, ..) in &tunnels {
            expect_marked_iff(&frames, t, dport, 3, attached[&t.name], &format!("round {round}"));
        }
        eprintln!(
            "concurrency round {round}: {} commands at once, {} journaled, end state {expected:?}",
            cmds.len(),
            entries.len()
        );
    }
    eprintln!("concurrency: {commands} commands in all");
}

// ---------------------------------------------------------------------------
// 2. Interruption
// ---------------------------------------------------------------------------

/// How the command after a crash goes about it.
#[derive(Clone, Copy, Debug)]
enum Repair {
    AttachAgain,
    Detach,
    StatusThenGc,
    Gc,
}

const REPAIRS: [Repair; 4] = [
    Repair::AttachAgain,
    Repair::Detach,
    Repair::StatusThenGc,
    Repair::Gc,
];

/// For every crash step of `mode`, on a victim tunnel that shares the
/// bystander's uplink and on one with an uplink of its own (steps such as
/// loading, the writer's link and unpinning happen only on a fresh or last
/// uplink): crash there, send through the bystander right away, repair with
/// the next command (attach again / detach / status then gc / gc, in turn),
/// check that no orphaned program, link or pin is left and that status
/// agrees, send again, then attach the victim for good and check it marks.
/// Every failed scenario is listed at the end.
fn interruptions(mode: &str) {
    let bed = TestBed::new();
    bed.add_veth(UP1, A1_V4, B1_V4, 1);
    let by = bed.add_tunnel(&on("by0", 300, 42000, UPLINK, A_V4, B_V4, 1), false);
    let victims = [
        (
            bed.add_tunnel(&on("vic0", 301, 42010, UPLINK, A_V4, B_V4, 2), false),
            UPLINK,
        ),
        (
            bed.add_tunnel(&on("vic1", 302, 42020, UP1, A1_V4, B1_V4, 3), false),
            UP1,
        ),
    ];
    attach(&bed, &by, UPLINK, mode);
    let only_by = attached_map(&[(UPLINK, &["by0"])]);
    assert_state(&bed, &only_by, "bystander attached");

    let mut injected = 0;
    let mut commands = 1;
    let mut bystander_packets = 0;
    let mut bystander_lost = 0;
    let mut hit = BTreeSet::new();
    let mut failures = Vec::new();
    let mut repairs = REPAIRS.iter().cycle();
    for step in CRASH_STEPS.iter().filter(|s| step_applies(s, mode)) {
        for (vic, uplink) in &victims {
            let what = format!("{mode} {step} ({} on {uplink})", vic.name);
            // One scenario; a failure is recorded and the next one goes on.
            let scenario = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let is_detach = step.starts_with("detach:");
                if is_detach {
                    attach(&bed, vic, uplink, mode);
                    commands += 1;
                }
                let args = if is_detach {
                    vec!["detach".to_string(), vic.name.clone()]
                } else {
                    attach_args(vic, uplink, mode)
                };
                let out = pd_crash(&bed, step, &args);
                commands += 1;
                if !crashed(&out) {
                    // This command does not pass the step here (e.g. nothing
                    // to load on an uplink in use): it must simply have worked.
                    ok(out);
                    detach(&bed, vic);
                    commands += 1;
                    assert_state(&bed, &only_by, &format!("{what}: not reached"));
                    return None;
                }
                injected += 1;
                hit.insert(*step);

                let w = wire(&bed, &[UPLINK, UP1]);
                // Right after the crash, before any repair.
                send_ef(&bed, &[&by], 9101, 3);
                let repair = *repairs.next().expect("cycle");
                let what = format!("{what}, repaired by {repair:?}");
                match repair {
                    Repair::AttachAgain => {
                        let msg = attach(&bed, vic, uplink, mode);
                        assert!(msg.contains("attached"), "{what}: {msg}");
                    }
                    Repair::Detach => {
                        detach(&bed, vic);
                    }
                    Repair::StatusThenGc => {
                        let text = ok(bed.pdscp(&["status", "--json"]));
                        serde_json::from_str::<Value>(&text)
                            .unwrap_or_else(|e| panic!("{what}: status {e}: {text}"));
                        ok(bed.pdscp(&["gc"]));
                        commands += 1;
                    }
                    Repair::Gc => {
                        ok(bed.pdscp(&["gc"]));
                    }
                }
                commands += 1;
                let vic_attached = matches!(repair, Repair::AttachAgain);
                let mut expected = only_by.clone();
                if vic_attached {
                    expected
                        .entry(uplink.to_string())
                        .or_default()
                        .insert(vic.name.clone());
                }
                // Checked after the wire below, so a failure here still
                // reports what the bystander's packets did.
                let repaired = std::panic::catch_unwind(|| assert_state(&bed, &expected, &what));
                send_ef(&bed, &[&by, vic], 9102, 3);
                if repaired.is_ok() {
                    // The crashed tunnel attaches and marks.
                    attach(&bed, vic, uplink, mode);
                    commands += 1;
                    expected
                        .entry(uplink.to_string())
                        .or_default()
                        .insert(vic.name.clone());
                    assert_state(&bed, &expected, &format!("{what}: final attach"));
                    send_ef(&bed, &[&by, vic], 9103, 3);
                }
                let frames = w.stop();
                let dports: &[u16] = if repaired.is_ok() {
                    &[9101, 9102, 9103]
                } else {
                    &[9101, 9102]
                };
                for &dport in dports {
                    let pkts = flow(&frames, &by, dport);
                    bystander_packets += 3;
                    bystander_lost +=
                        3 - pkts.len().min(3) + pkts.iter().filter(|p| p.outer_dscp() != 46).count();
                    expect_marked(&frames, &by, dport, 3, &format!("{what}: bystander"));
                }
                if let Err(e) = repaired {
                    std::panic::resume_unwind(e);
                }
                expect_marked_iff(&frames, vic, 9102, 3, vic_attached, &what);
                expect_marked(&frames, vic, 9103, 3, &format!("{what}: re-attached"));
                detach(&bed, vic);
                commands += 1;
                assert_state(&bed, &only_by, &format!("{what}: victim detached"));
                Some(repair)
            }));
            if let Err(e) = scenario {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(msg);
                // Back to the bystander alone for the next scenario.
                for args in [&["gc"][..], &["detach", &vic.name], &["gc"]] {
                    let _ = bed.pdscp(args);
                }
                assert_state(&bed, &only_by, &format!("{what}: cleaning up after a failure"));
            }
        }
    }
    eprintln!(
        "interruptions {mode}: {injected} crashes injected at {} steps, {commands} pdscp commands, \
         bystander packets {bystander_packets}, lost or unmarked {bystander_lost}, failed scenarios {}",
        hit.len(),
        failures.len()
    );
    let missed: Vec<_> = CRASH_STEPS
        .iter()
        .filter(|s| step_applies(s, mode) && !hit.contains(*s))
        .collect();
    assert!(
        missed.is_empty(),
        "{mode}: crash points never reached: {missed:?}"
    );
    assert!(
        failures.is_empty(),
        "{mode}: {} of {injected} interrupted commands were not repaired:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Was a bug (fixed): a detach after an interrupted command on a fresh uplink
/// says "not attached" (exit 0) and repairs nothing when the tunnel's
/// directory was not made yet (attach crashed before it) or is already gone
/// (detach crashed after removing it): `detach` returns before reconciling
/// the uplink, so the half-made uplink stays (pins, registry entries, and
/// from attach:uplink-attached on, its writer attached with no tunnel) until
/// a `gc` or an attach on that uplink. Reproduce (tc mode shows the orphan
/// in `tc filter show dev up1 egress`):
///   pdscp attach by0 --uplink up0 --port 42000 --mode tc
///   PDSCP_TEST_CRASH_AT=attach:uplink-attached pdscp attach vic1 --uplink up1 --port 42020 --mode tc
///   pdscp detach vic1        # "vic1: not attached", exit 0; pdscp_writer stays on up1
#[test]
fn detach_repairs_an_interrupted_command() {
    let bed = TestBed::new();
    bed.add_veth(UP1, A1_V4, B1_V4, 1);
    let by = bed.add_tunnel(&on("by0", 300, 42000, UPLINK, A_V4, B_V4, 1), false);
    let vic = bed.add_tunnel(&on("vic1", 302, 42020, UP1, A1_V4, B1_V4, 3), false);
    let only_by = attached_map(&[(UPLINK, &["by0"])]);
    let mut left = Vec::new();
    let mut tried = 0;
    for mode in ["tcx", "tc"] {
        attach(&bed, &by, UPLINK, mode);
        let steps = CRASH_STEPS.iter().filter(|s| {
            step_applies(s, mode) && (s.starts_with("attach:") || **s == "detach:tunnel-released")
        });
        for step in steps {
            if step.starts_with("detach:") {
                attach(&bed, &vic, UP1, mode);
            }
            let args = if step.starts_with("detach:") {
                vec!["detach".to_string(), vic.name.clone()]
            } else {
                attach_args(&vic, UP1, mode)
            };
            let out = pd_crash(&bed, step, &args);
            if !crashed(&out) {
                ok(out);
                detach(&bed, &vic);
                continue;
            }
            tried += 1;
            let msg = detach(&bed, &vic);
            if let Err(e) = audit(&bed) {
                let problems: Vec<&str> = e
                    .lines()
                    .skip(1)
                    .take_while(|l| l.starts_with("  "))
                    .map(str::trim)
                    .collect();
                let orphan = pdscp_hooks(&bed.a).iter().any(|h| h.dev == UP1);
                left.push(format!(
                    "{mode} {step}: detach said {:?}; {}{}",
                    msg.trim(),
                    problems.join(";"),
                    if orphan {
                        "; pdscp_writer still runs on up1"
                    } else {
                        ""
                    }
                ));
            }
            ok(bed.pdscp(&["gc"]));
            assert_state(&bed, &only_by, &format!("{mode} {step}: gc cleans up"));
        }
        detach(&bed, &by);
    }
    assert!(
        left.is_empty(),
        "{} of {tried} interrupted commands were left half done by detach:\n{}",
        left.len(),
        left.join("\n")
    );
}

#[test]
fn interruptions_are_repaired_tcx() {
    interruptions("tcx");
}

#[test]
fn interruptions_are_repaired_tc() {
    interruptions("tc");
}

// ---------------------------------------------------------------------------
// 3. gc
// ---------------------------------------------------------------------------

/// gc after devices came and went: a deleted tunnel's state goes; a tunnel
/// recreated under its name (new ifindex) is released, not taken for
/// attached, and marks again once re-attached; an uplink recreated (veth
/// pair and addresses) gets its writer back and marks again. The tunnels
/// are routed (no `dev up0`), so they outlive their uplink.
fn gc_repairs(mode: &str) {
    let bed = TestBed::new();
    let spec = |name, vni, srcport, inner| TunnelSpec {
        name,
        vni,
        srcport,
        lower: None,
        a_ip: A_V4,
        b_ip: B_V4,
        inner,
    };
    let g1 = bed.add_tunnel(&spec("gt1", 401, 43000, 1), false);
    let g2 = bed.add_tunnel(&spec("gt2", 402, 43010, 2), false);
    let g3 = bed.add_tunnel(&spec("gt3", 403, 43020, 3), false);
    for t in [&g1, &g2, &g3] {
        attach(&bed, t, UPLINK, mode);
    }
    assert_state(&bed, &attached_map(&[(UPLINK, &["gt1", "gt2", "gt3"])]), mode);

    // A deleted tunnel device.
    bed.a.sh("ip link del gt3");
    let msg = ok(bed.pdscp(&["gc"]));
    assert!(msg.contains("gt3: released"), "{mode}: {msg}");
    assert!(!bed.pin_root.join(UPLINK).join("tunnels/gt3").exists());
    assert_state(&bed, &attached_map(&[(UPLINK, &["gt1", "gt2"])]), "gt3 deleted");

    // A tunnel recreated under the same name.
    let old = bed.a.ifindex("gt2");
    bed.a.sh("ip link del gt2");
    bed.add_tunnel(&spec("gt2", 402, 43010, 2), true);
    assert_ne!(bed.a.ifindex("gt2"), old, "a new ifindex");
    let s = status(&bed);
    let gt2 = s["uplinks"][0]["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "gt2")
        .cloned()
        .unwrap_or_else(|| panic!("{mode}: gt2 in status: {s}"));
    assert_eq!(
        gt2["present"], false,
        "{mode}: recreated device is not the recorded one: {gt2}"
    );
    assert_eq!(gt2["attached"], false, "{mode}: {gt2}");
    let msg = ok(bed.pdscp(&["gc"]));
    assert!(msg.contains("gt2: released"), "{mode}: {msg}");
    assert_state(&bed, &attached_map(&[(UPLINK, &["gt1"])]), "gt2 recreated");
    let w = wire(&bed, &[UPLINK]);
    send_ef(&bed, &[&g1, &g2], 9201, 3);
    attach(&bed, &g2, UPLINK, mode);
    send_ef(&bed, &[&g1, &g2], 9202, 3);
    let frames = w.stop();
    expect_unmarked(&frames, &g2, 9201, 3, "recreated gt2, released");
    expect_marked(&frames, &g2, 9202, 3, "recreated gt2, re-attached");
    expect_marked(&frames, &g1, 9201, 3, "gt1");
    expect_marked(&frames, &g1, 9202, 3, "gt1");

    // The uplink recreated: veth pair, addresses, neighbours.
    let old = bed.a.ifindex(UPLINK);
    bed.a.sh(&format!("ip link del {UPLINK}"));
    bed.add_veth(UPLINK, A_V4, B_V4, 0);
    assert_ne!(bed.a.ifindex(UPLINK), old, "a new ifindex");
    assert_eq!(
        status(&bed)["uplinks"][0]["attached"],
        false,
        "{mode}: writer gone with the device"
    );
    let w = wire(&bed, &[UPLINK]);
    send_ef(&bed, &[&g1], 9203, 3);
    let msg = ok(bed.pdscp(&["gc"]));
    assert!(msg.contains("writer re-attached"), "{mode}: {msg}");
    assert_state(
        &bed,
        &attached_map(&[(UPLINK, &["gt1", "gt2"])]),
        "uplink recreated",
    );
    send_ef(&bed, &[&g1, &g2], 9204, 3);
    let frames = w.stop();
    expect_unmarked(&frames, &g1, 9203, 3, "before gc, no writer on the new uplink");
    expect_marked(&frames, &g1, 9204, 3, "gt1 after gc");
    expect_marked(&frames, &g2, 9204, 3, "gt2 after gc");
    assert!(ok(bed.pdscp(&["gc"])).contains("nothing to repair"));
}

#[test]
fn gc_repairs_after_devices_come_and_go_tcx() {
    gc_repairs("tcx");
}

#[test]
fn gc_repairs_after_devices_come_and_go_tc() {
    gc_repairs("tc");
}

// ---------------------------------------------------------------------------
// 4. Continuity
// ---------------------------------------------------------------------------

/// A steady EF flow on wg1 (at least 3000 packets, 1 ms apart) while wg2 on
/// the same uplink is detached and attached 100 times: every packet arrives
/// and every one is marked.
fn continuity(mode: &str) {
    const MIN_PACKETS: usize = 3000;
    const CYCLES: usize = 100;
    let bed = TestBed::new();
    let t1 = bed.add_vxlan("wg1", 101, 51820, Underlay::V4, 1);
    let t2 = bed.add_vxlan("wg2", 102, 51830, Underlay::V4, 2);
    attach(&bed, &t1, UPLINK, mode);
    attach(&bed, &t2, UPLINK, mode);

    let cap = Capture::start(&bed.b, UPLINK);
    let done = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let dst = t1.b_addr(false);
    let sender = {
        let (done, started) = (done.clone(), started.clone());
        bed.a.spawn("steady flow", move || {
            let sock = marked_udp_socket(dst, EF);
            let mut sent = 0usize;
            while sent < MIN_PACKETS || !done.load(Ordering::Relaxed) {
                sock.send_to(&sent.to_be_bytes(), (dst, 9300)).expect("send");
                sent += 1;
                started.store(sent, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
            sent
        })
    };
    while started.load(Ordering::Relaxed) < 50 {
        thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..CYCLES {
        detach(&bed, &t2);
        attach(&bed, &t2, UPLINK, mode);
    }
    done.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("sender");
    let frames = cap.stop();
    let pkts = flow(&frames, &t1, 9300);
    let wrong = pkts.iter().filter(|p| p.outer_dscp() != 46).count();
    eprintln!(
        "continuity {mode}: {} commands on wg2; wg1 sent {sent}, received {}, wrong DSCP {wrong}",
        2 * CYCLES,
        pkts.len()
    );
    assert_eq!(pkts.len(), sent, "{mode}: every packet arrives");
    assert_eq!(wrong, 0, "{mode}: no mark lost");
    assert_state(&bed, &attached_map(&[(UPLINK, &["wg1", "wg2"])]), mode);
}

#[test]
fn steady_flow_keeps_its_marks_while_another_tunnel_churns_tcx() {
    continuity("tcx");
}

#[test]
fn steady_flow_keeps_its_marks_while_another_tunnel_churns_tc() {
    continuity("tc");
}

// ---------------------------------------------------------------------------
// 5. Collateral
// ---------------------------------------------------------------------------

/// Somebody else's programs beside pdscp's: test_foreign as a cls_bpf filter
/// (prio 20000) and as a pinned TCX link, each on the uplink's and the
/// tunnel's egress, pinned with its map in a directory of its own under
/// /sys/fs/bpf; and u32 counter filters (prio 40000) on the uplink's egress
/// and ingress and the tunnel's egress.
struct Foreign {
    dir: Scratch,
    tunnel: String,
}

#[derive(Clone, Copy, PartialEq)]
enum ForeignHook {
    Cls,
    Tcx,
}

impl Foreign {
    fn hooks(&self) -> [(&'static str, &str, ForeignHook); 4] {
        [
            ("cls_up", UPLINK, ForeignHook::Cls),
            ("cls_tun", &self.tunnel, ForeignHook::Cls),
            ("tcx_up", UPLINK, ForeignHook::Tcx),
            ("tcx_tun", &self.tunnel, ForeignHook::Tcx),
        ]
    }

    fn install(bed: &TestBed, tunnel: &str) -> Foreign {
        let f = Foreign {
            dir: Scratch::new(Path::new("/sys/fs/bpf"), "pdscp-foreign"),
            tunnel: tunnel.to_string(),
        };
        for (label, dev, hook) in f.hooks() {
            let mut storage = MaybeUninit::uninit();
            let open = foreign_skel::TestForeignSkelBuilder::default()
                .open(&mut storage)
                .expect("opening test_foreign");
            let skel = open.load().expect("loading test_foreign");
            let prog_pin = f.pin(label, "prog");
            pin_fd(skel.progs.foreign_count.as_fd(), &prog_pin).expect("pin prog");
            pin_fd(skel.maps.foreign_packets.as_fd(), &f.pin(label, "map")).expect("pin map");
            match hook {
                ForeignHook::Cls => {
                    ensure_clsact(&bed.a, dev);
                    bed.a.sh(&format!(
                        "tc filter add dev {dev} egress prio {FOREIGN_PRIO} handle 0x1 bpf object-pinned {} direct-action",
                        prog_pin.display()
                    ));
                }
                ForeignHook::Tcx => {
                    let (dev, link_pin) = (dev.to_string(), f.pin(label, "link"));
                    bed.a.run_in("foreign tcx", move || {
                        let prog = ProgramHandle::from_pinned_path(&prog_pin).expect("foreign prog");
                        let opts = libbpf_sys::bpf_link_create_opts {
                            sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
                            ..Default::default()
                        };
                        let ifindex = ifindex_here(&dev);
                        // SAFETY: plain syscall wrapper; the result is checked.
                        let fd = unsafe {
                            libbpf_sys::bpf_link_create(
                                prog.as_fd().as_raw_fd(),
                                ifindex as i32,
                                libbpf_sys::BPF_TCX_EGRESS,
                                &opts,
                            )
                        };
                        assert!(fd >= 0, "foreign TCX link on {dev}: errno {}", -fd);
                        // SAFETY: a fresh descriptor nobody else owns.
                        let link = unsafe { OwnedFd::from_raw_fd(fd) };
                        pin_fd(link.as_fd(), &link_pin).expect("pin link");
                    });
                }
            }
        }
        tc_filter_add_counter(&bed.a, UPLINK, TcDir::Egress, COUNTER_PRIO);
        tc_filter_add_counter(&bed.a, UPLINK, TcDir::Ingress, COUNTER_PRIO);
        tc_filter_add_counter(&bed.a, tunnel, TcDir::Egress, COUNTER_PRIO);
        f
    }

    fn pin(&self, label: &str, what: &str) -> PathBuf {
        self.dir.path().join(format!("{label}_{what}"))
    }

    /// Packets each foreign program and counter has seen.
    fn counts(&self, bed: &TestBed) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (label, ..) in self.hooks() {
            let map = MapHandle::from_pinned_path(self.pin(label, "map")).expect("foreign map pin");
            let v = map
                .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
                .expect("lookup")
                .expect("entry 0");
            out.insert(label.to_string(), u64::from_ne_bytes(v[..8].try_into().unwrap()));
        }
        for (label, dev, dir) in [
            ("u32_up_egress", UPLINK, TcDir::Egress),
            ("u32_up_ingress", UPLINK, TcDir::Ingress),
            ("u32_tun_egress", self.tunnel.as_str(), TcDir::Egress),
        ] {
            out.insert(
                label.to_string(),
                tc_filter_packets(&bed.a, dev, dir, COUNTER_PRIO),
            );
        }
        out
    }

    /// Everything foreign is still there and hooked where it was.
    fn assert_intact(&self, bed: &TestBed, when: &str) {
        let (devs, hooks) = hooks(&bed.a);
        for (label, dev, hook) in self.hooks() {
            for what in ["prog", "map"] {
                assert!(
                    self.pin(label, what).exists(),
                    "{when}: foreign pin {label}_{what}"
                );
            }
            let id = prog_id_at(&self.pin(label, "prog")).expect("foreign prog");
            let how = match hook {
                ForeignHook::Cls => "tc",
                ForeignHook::Tcx => "tcx",
            };
            assert!(
                hooks.iter().any(|h| h.dev == dev
                    && h.how == how
                    && h.prog_id == id
                    && h.prog_name == "foreign_count"),
                "{when}: foreign {label} runs on {dev}: {hooks:#?}"
            );
            if hook == ForeignHook::Tcx {
                let s = tcx_state(&self.pin(label, "link"))
                    .expect("foreign link")
                    .expect("foreign link pinned");
                assert_eq!(
                    (s.ifindex, s.prog_id),
                    (devs[dev], id),
                    "{when}: foreign link {label}"
                );
            }
        }
        for (dev, dir) in [
            (UPLINK, TcDir::Egress),
            (UPLINK, TcDir::Ingress),
            (self.tunnel.as_str(), TcDir::Egress),
        ] {
            assert!(
                tc_filter_exists(&bed.a, dev, dir, COUNTER_PRIO),
                "{when}: u32 counter on {dev} {dir:?}"
            );
        }
    }

    /// Sends EF through the tunnel and checks every foreign counter rose.
    fn assert_counting(&self, bed: &TestBed, t: &Tunnel, dport: u16, when: &str) -> Vec<Vec<u8>> {
        let before = self.counts(bed);
        let w = wire(bed, &[UPLINK]);
        send_ef(bed, &[t], dport, 10);
        // Something for the uplink's ingress too.
        send_udp(&bed.b, A_V4.into(), dport, 0, 3);
        let frames = w.stop();
        let after = self.counts(bed);
        for (k, b) in &before {
            let min = if k == "u32_up_ingress" { 3 } else { 10 };
            assert!(
                after[k] >= b + min,
                "{when}: {k} rose by {} (from {b})",
                after[k] - b
            );
        }
        frames
    }
}

/// Other filters, TCX programs and pins survive every pdscp command (crashes
/// half way included) and keep counting while pdscp is attached.
fn collateral(mode: &str) {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let t2 = bed.add_vxlan("wg2", 102, 51830, Underlay::V4, 2);
    let f = Foreign::install(&bed, "wg0");
    f.assert_intact(&bed, "installed");
    let frames = f.assert_counting(&bed, &t, 9500, "before pdscp");
    expect_unmarked(&frames, &t, 9500, 10, "before pdscp");

    let mut commands = 0;
    let mut crashes = 0;
    let mut step = |args: Vec<String>, crash: Option<&str>| {
        let out = match crash {
            Some(c) => pd_crash(&bed, c, &args),
            None => bed.pdscp(&args),
        };
        commands += 1;
        if crash.is_some() {
            assert!(
                crashed(&out),
                "{mode}: {args:?} should crash at {crash:?}: {}",
                output_text(&out)
            );
            crashes += 1;
        } else {
            ok(out);
        }
        f.assert_intact(&bed, &format!("{mode}: after {args:?} (crash {crash:?})"));
    };
    let args = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    step(attach_args(&t, UPLINK, mode), None);
    step(attach_args(&t, UPLINK, mode), None);
    step(args(&["status"]), None);
    step(args(&["gc"]), None);
    let frames = f.assert_counting(&bed, &t, 9501, &format!("{mode}: attached"));
    expect_marked(&frames, &t, 9501, 10, "attached beside foreign programs");

    // Crash half way through attaching a second tunnel, then repair.
    let half = if mode == "tcx" {
        "attach:reader-link-created"
    } else {
        "attach:clsact-ready"
    };
    step(attach_args(&t2, UPLINK, mode), Some(half));
    let frames = f.assert_counting(&bed, &t, 9502, &format!("{mode}: after a crash"));
    expect_marked(&frames, &t, 9502, 10, "after a crash");
    step(args(&["gc"]), None);
    // Crash while the last tunnel takes the uplink down, then repair.
    step(args(&["detach", "wg0"]), Some("detach:writer-detached"));
    f.assert_counting(&bed, &t, 9503, &format!("{mode}: after a crash in detach"));
    step(args(&["gc"]), None);
    assert_state(&bed, &Attached::new(), "after gc");

    step(attach_args(&t, UPLINK, mode), None);
    let frames = f.assert_counting(&bed, &t, 9504, &format!("{mode}: attached again"));
    expect_marked(&frames, &t, 9504, 10, "attached again");
    step(args(&["detach", "wg0"]), None);
    step(args(&["detach", "wg0"]), None);
    step(args(&["gc"]), None);
    assert!(pdscp_hooks(&bed.a).is_empty(), "{mode}: pdscp gone");
    let frames = f.assert_counting(&bed, &t, 9505, &format!("{mode}: pdscp detached"));
    expect_unmarked(&frames, &t, 9505, 10, "detached");
    eprintln!(
        "collateral {mode}: {commands} pdscp commands ({crashes} crashed), foreign state intact after each"
    );
}

#[test]
fn foreign_filters_links_and_pins_survive_tcx() {
    collateral("tcx");
}

#[test]
fn foreign_filters_links_and_pins_survive_tc() {
    collateral("tc");
}

// ---------------------------------------------------------------------------
// 6. Environment faults
// ---------------------------------------------------------------------------

/// A pin root on another filesystem (/tmp), existing or not: one line, a
/// non-zero exit, nothing created, nothing attached.
#[test]
fn pin_root_on_another_filesystem_is_refused() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let tmp = Scratch::new(&std::env::temp_dir(), "pdscp-not-bpffs");
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let attach = attach_args(&t, UPLINK, "auto");
    let detach = vec!["detach".to_string(), "wg0".to_string()];
    let status = vec!["status".to_string()];
    let gc = vec!["gc".to_string()];
    for args in [&attach, &detach, &status, &gc] {
        let out = run_cmd(pdscp_cmd(&root, Some(&bed.a), args));
        let msg = refused(out, "is not on a bpf filesystem");
        eprintln!("non-bpffs pin root, {args:?}: {}", msg.trim());
    }
    let missing = tmp.path().join("missing/root");
    let msg = refused(
        run_cmd(pdscp_cmd(&missing, Some(&bed.a), &attach)),
        "is not on a bpf filesystem; mount one first",
    );
    eprintln!("missing non-bpffs pin root: {}", msg.trim());
    assert_eq!(
        listing(tmp.path()).len(),
        1,
        "only the empty root: {:?}",
        listing(tmp.path())
    );
    assert!(pdscp_hooks(&bed.a).is_empty(), "nothing attached");
    assert!(!bed.pin_root.exists());
}

/// No bpffs on /sys/fs/bpf (a tmpfs there, in a private mount namespace)
/// and no CAP_SYS_ADMIN to mount one: attach says so in one line.
#[test]
fn unmountable_bpffs_is_one_line() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", bed.a.path().display()))
        .args(["unshare", "-m", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs tmpfs /sys/fs/bpf || exit 99
             setpriv --bounding-set -sys_admin -- \"$@\"; rc=$?
             left=$(ls -A /sys/fs/bpf)
             [ -z \"$left\" ] || { echo \"left in /sys/fs/bpf: $left\" >&2; exit 98; }
             exit $rc",
        )
        .args(["sh", pdscp_bin(), "--pin-root", "/sys/fs/bpf/pdscp-unmountable"])
        .args(attach_args(&t, UPLINK, "auto"));
    let out = run_cmd(cmd);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let msg = refused(out, "mounting bpffs on /sys/fs/bpf");
    assert!(msg.contains("EPERM") || msg.contains("not permitted"), "{msg}");
    eprintln!("unmountable bpffs: {}", msg.trim());
    assert!(pdscp_hooks(&bed.a).is_empty(), "nothing attached");
}

/// One pin root, two network namespaces with the same device names: the
/// other namespace's detach, attach and gc leave the state alone.
#[test]
fn state_of_another_namespace_is_left_alone() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "tcx");
    let other = TestBed::new();
    other.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let before = (
        listing(&bed.pin_root),
        status_without_counters(&bed.pin_root, &bed.a),
    );
    let from_other = |args: &[&str]| run_cmd(pdscp_cmd(&bed.pin_root, Some(&other.a), args));
    let why = "belongs to another network namespace";
    for args in [
        &["detach", "wg0"][..],
        &["detach", "wg0", "--uplink", UPLINK],
        &[
            "attach", "wg0", "--uplink", UPLINK, "--port", "51820", "--mode", "tcx",
        ],
        &[
            "attach", "wg0", "--uplink", UPLINK, "--port", "51820", "--mode", "tc",
        ],
    ] {
        let msg = refused(from_other(args), why);
        eprintln!("other namespace, {args:?}: {}", msg.trim());
    }
    ok(from_other(&["gc"]));
    let seen = status_at(&bed.pin_root, &other.a);
    assert_eq!(seen["uplinks"][0]["other_netns"], true, "{seen}");
    assert_eq!(
        (
            listing(&bed.pin_root),
            status_without_counters(&bed.pin_root, &bed.a)
        ),
        before,
        "state unchanged"
    );
    assert!(
        pdscp_hooks(&other.a).is_empty(),
        "nothing attached in the other namespace"
    );
    assert_state(&bed, &attached_map(&[(UPLINK, &["wg0"])]), "own namespace");
    let w = wire(&bed, &[UPLINK]);
    send_ef(&bed, &[&t], 9600, 5);
    expect_marked(&w.stop(), &t, 9600, 5, "still marking");
}

// ---------------------------------------------------------------------------
// 7. Bad input
// ---------------------------------------------------------------------------

/// What the kernel's dev_valid_name() accepts (and pdscp on top: UTF-8, no
/// control characters, no Unicode white space).
fn acceptable_name(b: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(b) else {
        return false;
    };
    !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && !s.contains(['/', ':'])
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn bad_name() -> BoxedStrategy<Vec<u8>> {
    let fixed = [
        "",
        ".",
        "..",
        "../x",
        "../../etc",
        "../../../../tmp",
        "/",
        "a/b",
        "x/../../y",
        "eth0:1",
        "wg 0",
        "wg0\n",
        " wg0",
        "wg\t0",
        "wg\u{7f}",
        "wg\u{a0}0",
        "wg\u{2028}",
        "é234567890123456",
        "$(reboot)",
        "`id`",
        ";id",
        "a|b",
        "a&&b",
        "*",
        "?",
        "~",
        "$IFS",
        "\"",
        "'",
        "\\",
        "-wg0",
        "$(touch${IFS}x)",
        "`touch${IFS}x`",
        ";touch${IFS}x",
        "up0/../up0",
        "x23456789012345678901234567890",
    ];
    prop_oneof![
        prop::sample::select(fixed.to_vec()).prop_map(|s| s.as_bytes().to_vec()),
        "\\.\\./[a-z0-9]{1,10}".prop_map(String::into_bytes),
        "[a-z0-9.]{0,6}/[a-z0-9./]{0,8}".prop_map(String::into_bytes),
        "[a-z0-9]{0,6}:[a-z0-9]{0,6}".prop_map(String::into_bytes),
        "[a-z0-9]{0,6}[ \\t\\r\\n\\x0b\\x0c][a-z0-9]{0,6}".prop_map(String::into_bytes),
        "[a-z0-9]{0,6}[\\x01-\\x1f\\x7f][a-z0-9]{0,6}".prop_map(String::into_bytes),
        "[a-zA-Z0-9_.@-]{16,64}".prop_map(String::into_bytes),
        "[;&|`$(){}<>*?!#~'\"\\\\]{1,4}[a-z]{0,6}".prop_map(String::into_bytes),
        prop::collection::vec(1u8..=255, 0..40),
        (prop::collection::vec(1u8..=255, 0..12), 0x80u8..=0xff).prop_map(|(mut b, hi)| {
            b.push(hi);
            b.push(0xff); // never valid UTF-8
            b
        }),
    ]
    .boxed()
}

/// A hostile command line: a bad value in one position of an otherwise
/// working command, or a fixed malformed command.
#[derive(Clone, Debug)]
enum BadCall {
    /// `form` selects the position of `value`.
    Value {
        form: u8,
        value: Vec<u8>,
    },
    Fixed(Vec<&'static str>),
}

fn bad_call() -> BoxedStrategy<BadCall> {
    let fixed: Vec<Vec<&'static str>> = vec![
        vec!["attach", "wg1", "--uplink", "up0", "--port", "0"],
        vec!["attach", "wg1", "--uplink", "up0", "--port", "65536"],
        vec!["attach", "wg1", "--uplink", "up0", "--port", "-1"],
        vec!["attach", "wg1", "--uplink", "up0", "--port", ""],
        vec!["attach", "wg1", "--uplink", "up0", "--port", "0x10"],
        vec![
            "attach",
            "wg1",
            "--uplink",
            "up0",
            "--port",
            "51830",
            "--any-port",
        ],
        vec![
            "attach",
            "wg1",
            "--uplink",
            "up0",
            "--port",
            "51830",
            "--map-size",
            "0",
        ],
        vec![
            "attach",
            "wg1",
            "--uplink",
            "up0",
            "--port",
            "51830",
            "--map-size",
            "15",
        ],
        vec![
            "attach",
            "wg1",
            "--uplink",
            "up0",
            "--port",
            "51830",
            "--map-size",
            "16777217",
        ],
        vec![
            "attach", "wg1", "--uplink", "up0", "--port", "51830", "--mode", "xdp",
        ],
        vec![
            "attach", "wg1", "--uplink", "up0", "--port", "51830", "--mode", "TC",
        ],
        vec![
            "attach",
            "wg1",
            "--uplink",
            "up0",
            "--port",
            "51830",
            "--frobnicate",
        ],
        vec!["attach", "wg1", "extra", "--uplink", "up0", "--port", "51830"],
        vec!["attach", "wg1", "--uplink"],
        vec!["attach", "up0", "--uplink", "up0", "--port", "51830"],
        vec!["attach", "--uplink", "up0", "--port", "51830"],
        vec!["detach"],
        vec!["detach", "wg0", "wg1"],
        vec!["status", "--json", "extra"],
        vec!["gc", "now"],
        vec!["frobnicate"],
        vec![],
    ];
    prop_oneof![
        (0u8..8, bad_name()).prop_map(|(form, value)| BadCall::Value { form, value }),
        prop::sample::select(fixed).prop_map(BadCall::Fixed),
    ]
    .boxed()
}

/// The argument vector, whether pdscp gets the bed's `--netns`, and whether
/// the call may legitimately succeed as a no-op ("not attached").
fn bad_call_args(call: &BadCall) -> (Vec<OsString>, bool, bool) {
    let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
    match call {
        BadCall::Fixed(v) => (os(v), true, false),
        BadCall::Value { form, value } => {
            let v = OsString::from_vec(value.clone());
            let valid = acceptable_name(value);
            let mut args = match form {
                0 => os(&["attach"]),
                1 => os(&["attach", "wg1", "--uplink"]),
                2 => os(&["detach"]),
                3 => os(&["detach", "wg0", "--uplink"]),
                4 => os(&["--netns"]),
                5 => os(&["attach", "wg1", "--uplink", "up0", "--port", "51830", "--mode"]),
                6 => os(&["attach", "wg1", "--uplink", "up0", "--port"]),
                _ => os(&[
                    "attach",
                    "wg1",
                    "--uplink",
                    "up0",
                    "--port",
                    "51830",
                    "--map-size",
                ]),
            };
            args.push(v);
            match form {
                0 => args.extend(os(&["--uplink", "up0", "--port", "51830"])),
                1 => args.extend(os(&["--port", "51830"])),
                4 => args.push("status".into()),
                _ => {}
            }
            // A detach of a well-formed name that is not attached is a no-op.
            (args, *form != 4, valid && (*form == 2 || *form == 3))
        }
    }
}

/// Property: every hostile command line is refused (non-zero exit; a
/// well-formed detach of nothing may say "not attached") and changes
/// nothing: the pin tree (paths, modes, inodes) under a scratch directory
/// around the pin root, `status --json`, the programs on the devices,
/// /sys/fs/bpf's top level, and the working directory (no shell ran).
#[test]
fn hostile_input_is_refused_and_changes_nothing() {
    let bed = TestBed::new();
    let t0 = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    bed.add_vxlan("wg1", 101, 51830, Underlay::V4, 2);
    // The pin root two levels down, so an escape upwards shows in the scratch tree.
    let scratch = Scratch::new(Path::new("/sys/fs/bpf"), "pdscp-hostile");
    let root = scratch.path().join("deep/root");
    ok(run_cmd(pdscp_cmd(
        &root,
        Some(&bed.a),
        &attach_args(&t0, UPLINK, "tcx"),
    )));
    let cwd = Scratch::new(&std::env::temp_dir(), "pdscp-hostile-cwd");
    let existing: BTreeSet<Vec<u8>> = devices(&bed.a).into_keys().map(String::into_bytes).collect();
    let top = || dir_names(Path::new("/sys/fs/bpf"));
    let top_before = top();
    // Every path component typed, to tell an escape from the comings and
    // goings of other tests at the top of /sys/fs/bpf.
    let tried = std::sync::Mutex::new(BTreeSet::<OsString>::new());
    let hooks_before = pdscp_hooks(&bed.a);
    let snapshot = || (listing(scratch.path()), status_without_counters(&root, &bed.a));
    let before = snapshot();
    let cases = AtomicUsize::new(0);
    let noops = AtomicUsize::new(0);
    let multi_line = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        max_shrink_iters: 32,
        ..Config::default()
    });
    let result = runner.run(&bad_call(), |call| {
        if let BadCall::Value { value, .. } = &call {
            // A device of that name would make the call legitimate.
            prop_assume!(!existing.contains(value));
        }
        let (args, with_netns, may_noop) = bad_call_args(&call);
        let mut cmd = pdscp_cmd(&root, with_netns.then_some(&bed.a), &args);
        cmd.current_dir(cwd.path());
        let out = run_cmd(cmd);
        cases.fetch_add(1, Ordering::Relaxed);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let noop = out.status.success() && may_noop && stdout.contains("not attached");
        if noop {
            noops.fetch_add(1, Ordering::Relaxed);
        }
        prop_assert!(
            noop || (!out.status.success() && out.status.code().is_some() && !out.stderr.is_empty()),
            "{call:?} {args:?} should be refused: {}",
            output_text(&out)
        );
        if !noop && String::from_utf8_lossy(&out.stderr).lines().count() != 1 {
            multi_line.fetch_add(1, Ordering::Relaxed);
        }
        for a in &args {
            for c in Path::new(a).components() {
                tried.lock().unwrap().insert(c.as_os_str().to_os_string());
            }
        }
        prop_assert_eq!(&snapshot(), &before, "{:?} changed state", args);
        prop_assert!(dir_names(cwd.path()).is_empty(), "{:?} ran something", args);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(
        pdscp_hooks(&bed.a),
        hooks_before,
        "programs on the devices unchanged"
    );
    let tried = tried.into_inner().unwrap();
    let escaped: Vec<_> = top()
        .difference(&top_before)
        .filter(|n| tried.contains(OsStr::new(n.as_str())))
        .cloned()
        .collect();
    assert!(
        escaped.is_empty(),
        "created at the top of /sys/fs/bpf: {escaped:?}"
    );
    assert_eq!(multi_line.load(Ordering::Relaxed), 0, "every error is one line");
    eprintln!(
        "hostile input: {} cases run, all refused ({} well-formed detaches of nothing were no-ops; \
         {} errors on more than one line), state unchanged",
        cases.load(Ordering::Relaxed),
        noops.load(Ordering::Relaxed),
        multi_line.load(Ordering::Relaxed)
    );
}

/// Was a bug (fixed): README: "errors ... are found before anything changes
/// (bad interface names, unknown devices, ...)". An attach of an unknown
/// device is refused, but only after the pin root has been created (with
/// every missing parent): `pdscp --pin-root /sys/fs/bpf/x/y attach nosuch
/// --uplink up0 --port 1` exits 1 and leaves /sys/fs/bpf/x/y behind.
#[test]
fn refused_attach_leaves_no_pin_root() {
    let bed = TestBed::new();
    bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let scratch = Scratch::new(Path::new("/sys/fs/bpf"), "pdscp-refused");
    let root = scratch.path().join("x/root");
    for args in [
        &["attach", "nosuchdev", "--uplink", UPLINK, "--port", "1"][..],
        &["attach", "wg0", "--uplink", "nosuchdev", "--port", "1"],
        &["attach", "wg0", "--uplink", UPLINK],
    ] {
        let out = run_cmd(pdscp_cmd(&root, Some(&bed.a), args));
        assert!(!out.status.success(), "{args:?}: {}", output_text(&out));
        assert_eq!(
            listing(scratch.path()),
            Vec::<String>::new(),
            "{args:?} was refused but created the pin root"
        );
    }
}

/// Was a bug (fixed): README: "errors are one line on stderr". User input
/// is printed raw in some messages, so a newline in it splits the error:
///   pdscp --netns $'wg0\n' status
///     pdscp: no network namespace "wg0\n" (/run/netns/wg0
///      not found): No such file or directory (os error 2)
/// (netns::validate_name lets control characters through and the context
/// prints the path with `display()`), and
///   pdscp --pin-root $'/tmp/pd\nx' attach wg0 --uplink up0 --port 1
/// (bpffs.rs prints pin roots with `display()`). Interface names are
/// refused with `{:?}` and stay on one line.
#[test]
fn errors_about_input_with_a_newline_are_one_line() {
    let bed = TestBed::new();
    let tmp = Scratch::new(&std::env::temp_dir(), "pdscp-newline");
    let root = tmp.path().join("a\nb");
    let mut outs = vec![(
        "--netns wg0\\n status",
        run_cmd(pdscp_cmd(&bed.pin_root, None, &["--netns", "wg0\n", "status"])),
    )];
    outs.push((
        "--pin-root <dir>/a\\nb attach",
        run_cmd(pdscp_cmd(
            &root,
            Some(&bed.a),
            &["attach", "wg0", "--uplink", UPLINK, "--port", "1"],
        )),
    ));
    let mut split = Vec::new();
    for (what, out) in outs {
        assert!(!out.status.success(), "{what}: {}", output_text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.lines().count() != 1 {
            split.push(format!("{what}: {stderr:?}"));
        }
    }
    assert!(split.is_empty(), "errors on several lines:\n{}", split.join("\n"));
}

/// README: "errors are one line on stderr". That holds for usage errors
/// found by the argument parser too (bad port, unknown option, non-UTF-8),
/// which clap would print with its usage block.
#[test]
fn usage_errors_are_one_line() {
    let bed = TestBed::new();
    for args in [
        vec![
            OsString::from("attach"),
            "wg0".into(),
            "--port".into(),
            "0".into(),
        ],
        vec!["detach".into(), "--frobnicate".into()],
        vec!["detach".into(), OsString::from_vec(vec![b'w', 0xff])],
    ] {
        let out = bed.pdscp(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", output_text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line of error: {stderr:?}"
        );
        assert!(stderr.starts_with("pdscp: "), "{stderr:?}");
    }
}

// ---------------------------------------------------------------------------
// 8. Security
// ---------------------------------------------------------------------------

/// Whatever the caller's umask: the pin root and every directory under it
/// are 0700 and root's; no pin is writable (or readable) by group or others.
#[test]
fn pins_and_directories_are_private() {
    let bed = TestBed::new();
    let t1 = bed.add_vxlan("wg1", 101, 51820, Underlay::V4, 1);
    let t2 = bed.add_vxlan("wg2", 102, 51830, Underlay::V4, 2);
    for t in [&t1, &t2] {
        let mut cmd = pdscp_cmd(&bed.pin_root, Some(&bed.a), &attach_args(t, UPLINK, "tcx"));
        // SAFETY: umask is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        ok(run_cmd(cmd));
    }
    let mut checked = Vec::new();
    let mut check = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        let mode = m.mode() & 0o7777;
        assert_eq!(m.uid(), 0, "{} is root's", p.display());
        if m.is_dir() {
            assert_eq!(mode, 0o700, "{} is 0700", p.display());
        } else {
            assert!(!m.file_type().is_symlink(), "{}", p.display());
            assert_eq!(
                mode & 0o077,
                0,
                "{} mode {mode:o}: nothing for group/others",
                p.display()
            );
        }
        checked.push(format!("{} {mode:o}", p.display()));
    };
    check(&bed.pin_root);
    for entry in listing(&bed.pin_root) {
        let rel = entry.split(' ').nth(1).unwrap();
        check(&bed.pin_root.join(rel));
    }
    assert!(checked.len() >= 11, "{checked:#?}");
    eprintln!("private pins: {checked:?}");
}

/// A pin root that is a symlink is refused, whether it points into bpffs or
/// at another filesystem, and nothing is created at its target.
#[test]
fn symlinked_pin_root_is_refused() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let bpffs = Scratch::new(Path::new("/sys/fs/bpf"), "pdscp-symlink");
    let tmp = Scratch::new(&std::env::temp_dir(), "pdscp-symlink-target");
    let real = bpffs.path().join("real");
    fs::DirBuilder::new().mode(0o700).create(&real).unwrap();
    let into_bpffs = bpffs.path().join("to-bpffs");
    let into_tmp = bpffs.path().join("to-tmp");
    std::os::unix::fs::symlink(&real, &into_bpffs).unwrap();
    std::os::unix::fs::symlink(tmp.path(), &into_tmp).unwrap();
    for (link, why) in [
        (&into_bpffs, "opening pin root"),
        (&into_tmp, "is not on a bpf filesystem"),
    ] {
        for args in [attach_args(&t, UPLINK, "tcx"), vec!["gc".to_string()]] {
            let msg = refused(run_cmd(pdscp_cmd(link, Some(&bed.a), &args)), why);
            eprintln!("symlinked pin root {}, {args:?}: {}", link.display(), msg.trim());
        }
        assert!(fs::symlink_metadata(link).unwrap().file_type().is_symlink());
    }
    assert!(dir_names(&real).is_empty(), "nothing created in the bpffs target");
    assert!(
        dir_names(tmp.path()).is_empty(),
        "nothing created in the tmpfs target"
    );
    assert!(pdscp_hooks(&bed.a).is_empty(), "nothing attached");
}

/// Was a bug (fixed; it was serious): a pin root below /sys/fs/bpf whose nearest existing
/// ancestor is not bpffs makes pdscp mount a second bpffs over /sys/fs/bpf,
/// hiding every pin on the host (all tools', pdscp's own state included):
/// `ensure_bpffs_for` mounts whenever the root "starts with" /sys/fs/bpf
/// (a lexical test) without checking that /sys/fs/bpf is already bpffs.
/// Reproduce (in a throw-away mount namespace!):
///   unshare -m sh -c 'pdscp --pin-root /sys/fs/bpf/../x attach wg0 --uplink up0 --port 1;
///                     grep " /sys/fs/bpf " /proc/self/mountinfo'
/// shows a new bpf mount stacked on /sys/fs/bpf (on the host, every other
/// pdscp command would then find nothing attached). With a symlinked
/// ancestor (/sys/fs/bpf/l -> /tmp/d, --pin-root /sys/fs/bpf/l/root) the
/// attach even succeeds, pinning into the freshly mounted, empty bpffs, where
/// the symlink no longer exists. Expected: refuse (the root is not on
/// bpffs; /sys/fs/bpf already is), mount nothing. Each case runs in a
/// private mount namespace, so the bug cannot hide the host's pins.
#[test]
fn pin_root_below_bpffs_never_mounts_a_second_bpffs() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let bpffs = Scratch::new(Path::new("/sys/fs/bpf"), "pdscp-stack");
    let tmp = Scratch::new(&std::env::temp_dir(), "pdscp-stack-target");
    let link = bpffs.path().join("l");
    std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
    let mut failures = Vec::new();
    for root in [PathBuf::from("/sys/fs/bpf/../pdscp-stacked"), link.join("root")] {
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "m() { grep -c ' /sys/fs/bpf ' /proc/self/mountinfo; }
                 before=$(m); \"$@\" >/dev/null 2>&1; rc=$?; after=$(m)
                 echo \"$rc $before $after\"",
            )
            .arg("sh")
            .arg(pdscp_bin())
            .arg("--pin-root")
            .arg(&root)
            .args(["--netns", &bed.a.name])
            .args(attach_args(&t, UPLINK, "tcx"));
        let out = run_cmd(cmd);
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let v: Vec<u32> = line.split(' ').map(|x| x.parse().expect("number")).collect();
        let (rc, before, after) = (v[0], v[1], v[2]);
        if rc == 0 || after != before {
            failures.push(format!(
                "--pin-root {}: exit {rc}, mounts on /sys/fs/bpf {before} -> {after}",
                root.display()
            ));
        }
    }
    assert!(dir_names(tmp.path()).is_empty(), "nothing created in /tmp");
    assert!(
        failures.is_empty(),
        "pdscp mounted bpffs over /sys/fs/bpf:\n{}",
        failures.join("\n")
    );
}

/// A memory cgroup of its own (v1 or v2, whichever this machine has) limited
/// to `limit` bytes, removed on drop. BPF maps are charged to it, so a flow
/// map larger than the limit fails to load in the kernel, for real.
struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    fn new(limit: u64) -> MemoryCgroup {
        let (parent, limit_file) = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            ("/sys/fs/cgroup", "memory.max")
        } else if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            panic!("no memory cgroup controller (neither cgroup v2 nor v1's memory)");
        };
        let dir = Path::new(parent).join(unique("pdscp-mem"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let cg = MemoryCgroup { dir };
        fs::write(cg.dir.join(limit_file), limit.to_string()).expect("setting the memory limit");
        cg
    }

    /// `cmd` run as a member of the cgroup (sh joins it, then execs `cmd`).
    fn wrap(&self, cmd: &Command) -> Command {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(r#"echo $$ >"$0" && exec "$@""#)
            .arg(self.dir.join("cgroup.procs"))
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        sh
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Was a bug (fixed): the first attach to an uplink created the uplink's
/// directory before loading, and a load the kernel refused (here: a flow map
/// beyond the memory limit; on a big-endian router, an object built for the
/// wrong byte order) left it behind, so `status` showed a phantom uplink
/// "DEVICE GONE, NOT ATTACHED" with an error until the next gc. A failed first
/// attach must leave nothing, and touch no other uplink.
#[test]
fn attach_that_fails_to_load_leaves_nothing() {
    let bed = TestBed::new();
    bed.add_veth(UP1, A1_V4, B1_V4, 1);
    let by = bed.add_tunnel(&on("lf0", 501, 44000, UPLINK, A_V4, B_V4, 1), false);
    let t = bed.add_tunnel(&on("lf1", 502, 44010, UP1, A1_V4, B1_V4, 2), false);
    attach(&bed, &by, UPLINK, "auto");
    let before = status_without_counters(&bed.pin_root, &bed.a);
    let pins_before = listing(&bed.pin_root);

    // 16M flow entries need about a gigabyte, the cgroup allows 128 MiB.
    let cgroup = MemoryCgroup::new(128 << 20);
    let mut args = attach_args(&t, UP1, "auto");
    args.extend(["--map-size".into(), "16777216".into()]);
    let out = run_cmd(cgroup.wrap(&pdscp_cmd(&bed.pin_root, Some(&bed.a), &args)));
    let err = refused(out, "loading the BPF programs");
    assert!(err.contains("Cannot allocate memory"), "{err}");

    assert!(
        !bed.pin_root.join(UP1).exists(),
        "{UP1}'s directory was left: {:?}",
        listing(&bed.pin_root)
    );
    assert_eq!(
        listing(&bed.pin_root),
        pins_before,
        "the failed attach changed the pins"
    );
    assert_eq!(
        status_without_counters(&bed.pin_root, &bed.a),
        before,
        "the failed attach changed status"
    );
    assert!(
        pdscp_hooks(&bed.a).iter().all(|h| h.dev != UP1 && h.dev != "lf1"),
        "{:?}",
        pdscp_hooks(&bed.a)
    );
    let w = wire(&bed, &[UPLINK]);
    send_ef(&bed, &[&by], 9000, 5);
    expect_marked(&w.stop(), &by, 9000, 5, "the bystander after the failed attach");

    // Without the limit the same tunnel attaches (the failure was the kernel's).
    drop(cgroup);
    attach(&bed, &t, UP1, "auto");
}
