//! Collateral: other tools' filters, links and pins beside pdscp's survive it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::*;

/// Somebody else's programs beside pdscp's: test_foreign as a cls_bpf filter
/// (prio FOREIGN_PRIO) and as a pinned TCX link, each on both uplinks' and the
/// tunnel's egress, pinned with its map in a directory of its own under
/// /sys/fs/bpf; and u32 counter filters (prio COUNTER_PRIO) on both uplinks'
/// egress, up0's ingress and the tunnel's egress.
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
    fn hooks(&self) -> [(&'static str, &str, ForeignHook); 6] {
        [
            ("cls_up", UPLINK, ForeignHook::Cls),
            ("cls_up1", UP1, ForeignHook::Cls),
            ("cls_tun", &self.tunnel, ForeignHook::Cls),
            ("tcx_up", UPLINK, ForeignHook::Tcx),
            ("tcx_up1", UP1, ForeignHook::Tcx),
            ("tcx_tun", &self.tunnel, ForeignHook::Tcx),
        ]
    }

    /// The u32 counters: (label, device, direction).
    fn counters(&self) -> [(&'static str, &str, TcDir); 4] {
        [
            ("u32_up_egress", UPLINK, TcDir::Egress),
            ("u32_up1_egress", UP1, TcDir::Egress),
            ("u32_up_ingress", UPLINK, TcDir::Ingress),
            ("u32_tun_egress", &self.tunnel, TcDir::Egress),
        ]
    }

    fn install(bed: &TestBed, tunnel: &str) -> Foreign {
        let f = Foreign {
            dir: Scratch::new(Path::new("/sys/fs/bpf"), "pdscp-foreign"),
            tunnel: tunnel.to_string(),
        };
        for (label, dev, hook) in f.hooks() {
            let prog_pin = pin_foreign(f.dir.path(), label, ForeignProgram::Count);
            match hook {
                ForeignHook::Cls => add_foreign_filter(&bed.a, dev, FOREIGN_PRIO, &prog_pin),
                ForeignHook::Tcx => add_foreign_tcx(&bed.a, dev, &prog_pin, &f.pin(label, "link")),
            }
        }
        for (_, dev, dir) in f.counters() {
            tc_filter_add_counter(&bed.a, dev, dir, COUNTER_PRIO);
        }
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
        for (label, dev, dir) in self.counters() {
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
        for (_, dev, dir) in self.counters() {
            assert!(
                tc_filter_exists(&bed.a, dev, dir, COUNTER_PRIO),
                "{when}: u32 counter on {dev} {dir:?}"
            );
        }
    }

    /// Sends 10 EF packets through the tunnel routed over each uplink in
    /// turn, and checks every foreign counter rose.
    fn assert_counting(&self, bed: &TestBed, t: &Tunnel, dport: u16, when: &str) -> Vec<Vec<u8>> {
        let before = self.counts(bed);
        let w = wire(bed, &[UPLINK, UP1]);
        for uplink in [UP1, UPLINK] {
            bed.route_via(uplink);
            send_ef(bed, &[t], dport, 10);
        }
        // Something for the uplink's ingress too.
        send_udp(&bed.b, A_V4.into(), dport, 0, 3);
        let frames = w.stop();
        let after = self.counts(bed);
        for (k, b) in &before {
            let min = match k.as_str() {
                "u32_up_ingress" => 3,
                k if k.ends_with("_tun") || k.ends_with("tun_egress") => 20,
                _ => 10,
            };
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
/// half way included) and keep counting while pdscp is attached, with the
/// tunnel on two uplinks.
fn collateral(mode: &str) {
    let bed = two_uplinks();
    let t = bed.loopback_tunnel("wg0", 100, 51820, 1);
    let t2 = bed.loopback_tunnel("wg2", 102, 51830, 2);
    let f = Foreign::install(&bed, "wg0");
    f.assert_intact(&bed, "installed");
    let frames = f.assert_counting(&bed, &t, 9500, "before pdscp");
    expect_unmarked(&frames, &t, 9500, 20, "before pdscp");

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

    step(attach_args_on(&t, &[UPLINK, UP1], mode), None);
    step(attach_args_on(&t, &[UPLINK, UP1], mode), None);
    step(args(&["status"]), None);
    step(args(&["gc"]), None);
    let frames = f.assert_counting(&bed, &t, 9501, &format!("{mode}: attached"));
    expect_marked(&frames, &t, 9501, 20, "attached beside foreign programs");

    // Crash half way through attaching a second tunnel, then repair.
    let half = if mode == "tcx" {
        "attach:reader-link-created"
    } else {
        "attach:clsact-ready"
    };
    step(attach_args_on(&t2, &[UPLINK, UP1], mode), Some(half));
    let frames = f.assert_counting(&bed, &t, 9502, &format!("{mode}: after a crash"));
    expect_marked(&frames, &t, 9502, 20, "after a crash");
    step(args(&["gc"]), None);
    // Crash while the tunnel leaves one uplink, then repair.
    step(
        args(&["detach", "wg0", "--uplink", UP1]),
        Some("detach:writer-detached"),
    );
    f.assert_counting(&bed, &t, 9506, &format!("{mode}: after a crash leaving up1"));
    step(args(&["gc"]), None);
    // Crash while the last tunnel takes the uplink down, then repair.
    step(args(&["detach", "wg0"]), Some("detach:writer-detached"));
    f.assert_counting(&bed, &t, 9503, &format!("{mode}: after a crash in detach"));
    step(args(&["gc"]), None);
    assert_state(&bed, &Attached::new(), "after gc");

    step(attach_args_on(&t, &[UPLINK, UP1], mode), None);
    let frames = f.assert_counting(&bed, &t, 9504, &format!("{mode}: attached again"));
    expect_marked(&frames, &t, 9504, 20, "attached again");
    step(args(&["detach", "wg0"]), None);
    step(args(&["detach", "wg0"]), None);
    step(args(&["gc"]), None);
    assert!(pdscp_hooks(&bed.a).is_empty(), "{mode}: pdscp gone");
    let frames = f.assert_counting(&bed, &t, 9505, &format!("{mode}: pdscp detached"));
    expect_unmarked(&frames, &t, 9505, 20, "detached");
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
