//! Upgrade in place: state an older pdscp made (pdscp 0.1.0's layout 1, or
//! older programs of layout 2) is brought up to date by the next command,
//! with no packet of a running flow lost or unmarked, also when the upgrade
//! is cut short; newer state is refused and left alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};

use super::*;

/// pdscp 0.1.0, built once from the repository's history (scripts/old-pdscp.sh).
fn old_pdscp() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/old-pdscp.sh");
        let out = run_bounded(Command::new(script), Duration::from_secs(900));
        PathBuf::from(stdout_of(out, "scripts/old-pdscp.sh").trim())
    })
}

/// The old binary, run like `bed.pdscp`.
fn old(bed: &TestBed, args: &[&str]) -> Output {
    let mut cmd = pdscp_cmd(&bed.pin_root, Some(&bed.a), args);
    let args: Vec<_> = cmd.get_args().map(|a| a.to_os_string()).collect();
    let mut old = Command::new(old_pdscp());
    old.args(args).env_remove("PDSCP_PIN_ROOT");
    cmd = old;
    run_cmd(cmd)
}

/// A steady EF flow through each tunnel, 1 ms apart, to inner port 9700.
struct Steady {
    done: Arc<AtomicBool>,
    senders: Vec<thread::JoinHandle<usize>>,
}

impl Steady {
    fn start(bed: &TestBed, tunnels: &[&Tunnel]) -> Steady {
        let done = Arc::new(AtomicBool::new(false));
        let senders = tunnels
            .iter()
            .map(|t| {
                let (dst, done) = (t.b_addr(false), done.clone());
                bed.a.spawn("steady flow", move || {
                    let sock = marked_udp_socket(dst, EF);
                    let mut sent = 0usize;
                    while sent < 200 || !done.load(Ordering::Relaxed) {
                        sock.send_to(&sent.to_be_bytes(), (dst, 9700)).expect("send");
                        sent += 1;
                        thread::sleep(Duration::from_millis(1));
                    }
                    sent
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(100));
        Steady { done, senders }
    }

    /// Stops the flows, then the capture; every packet sent must be on the
    /// wire, marked EF.
    fn check(self, wire: Wire, tunnels: &[&Tunnel], what: &str) -> String {
        self.done.store(true, Ordering::Relaxed);
        let sent: Vec<usize> = self
            .senders
            .into_iter()
            .map(|s| s.join().expect("sender"))
            .collect();
        let frames = wire.stop();
        let mut report = Vec::new();
        for (t, sent) in tunnels.iter().zip(sent) {
            let frames = &frames;
            let pkts = flow(frames, t, 9700);
            let unmarked = pkts.iter().filter(|p| p.outer_dscp() != 46).count();
            assert_eq!(
                (pkts.len(), unmarked),
                (sent, 0),
                "{what}: {}: (received, unmarked) of {sent} sent",
                t.name
            );
            report.push(format!("{} {sent} sent/{} marked", t.name, pkts.len() - unmarked));
        }
        report.join(", ")
    }
}

/// The bed with two uplinks and a tunnel on each, attached by pdscp 0.1.0.
fn old_state(mode: &str) -> (TestBed, Vec<Tunnel>) {
    let bed = two_uplinks();
    let t0 = bed.add_tunnel(&on("ug0", 400, 45000, UPLINK, A_V4, B_V4, 1), false);
    let t1 = bed.add_tunnel(&on("ug1", 401, 45010, UP1, UP1_A, UP1_B, 2), false);
    for (t, up) in [(&t0, UPLINK), (&t1, UP1)] {
        let port = t.srcport.to_string();
        ok(old(
            &bed,
            &["attach", &t.name, "--uplink", up, "--port", &port, "--mode", mode],
        ));
    }
    (bed, vec![t0, t1])
}

fn expected() -> Attached {
    attached_map(&[(UPLINK, &["ug0"]), (UP1, &["ug1"])])
}

/// The ids of the programs pinned under `dirs` of the pin root.
fn pinned_programs(root: &Path, pins: &[&str]) -> Vec<u32> {
    pins.iter().filter_map(|p| prog_id_at(&root.join(p))).collect()
}

/// Runs the commands that finish an upgrade cut short, in turn.
fn finish(bed: &TestBed, how: usize) -> &'static str {
    match how % 4 {
        0 => {
            ok(bed.pdscp(&["upgrade"]));
            "upgrade"
        }
        1 => {
            ok(bed.pdscp(&["gc"]));
            "gc"
        }
        2 => {
            ok(bed.pdscp(&["attach", "ug0", "--uplink", UPLINK, "--port", "45000"]));
            "attach"
        }
        _ => {
            let status = ok(bed.pdscp(&["status", "--json"]));
            assert!(status.contains("\"upgrade_pending\": true"), "{status}");
            ok(bed.pdscp(&["detach", "nosuch0"]));
            "status, then detach of another tunnel"
        }
    }
}

/// From pdscp 0.1.0: status reads the old state and says an upgrade is
/// pending; the upgrade (plain, or cut short at each of its steps and
/// finished by the next command) keeps both flows marked with nothing lost,
/// leaves layout 2 with no layout-1 pin and no old program, and carries the
/// counters over.
fn from_layout_1(mode: &str) {
    let steps: Vec<Option<&str>> = std::iter::once(None)
        .chain(["upgrade:loaded", "upgrade:writers-moved", "upgrade:readers-moved"].map(Some))
        .collect();
    for (i, step) in steps.iter().enumerate() {
        let what = format!("{mode} from 0.1.0, {}", step.unwrap_or("not interrupted"));
        let (bed, tunnels) = old_state(mode);
        let ts: Vec<&Tunnel> = tunnels.iter().collect();
        let old_progs = pinned_programs(
            &bed.pin_root,
            &["up0/reader", "up0/writer", "up1/reader", "up1/writer"],
        );
        assert_eq!(old_progs.len(), 4, "{what}: 0.1.0's programs");
        let w = wire(&bed, &[UPLINK, UP1]);
        let steady = Steady::start(&bed, &ts);

        let s = status(&bed);
        assert_eq!(
            (
                s["version"]["layout"].as_u64(),
                s["version"]["upgrade_pending"].as_bool()
            ),
            (Some(1), Some(true)),
            "{what}: {s:#}"
        );
        assert_eq!(status_view(&bed), expected(), "{what}: status reads layout 1");
        assert!(ok(bed.pdscp(&["status"])).contains("UPGRADE PENDING"), "{what}");
        assert!(
            ok(bed.pdscp(&["status", "--prometheus"])).contains("pdscp_upgrade_pending 1\n"),
            "{what}"
        );

        let finished_by = match step {
            None => {
                let msg = ok(bed.pdscp(&["upgrade"]));
                assert!(
                    msg.contains("upgraded the state from pdscp 0.1.0 (layout 1) to pdscp 0.2.0 (layout 2)"),
                    "{msg}"
                );
                "upgrade"
            }
            Some(step) => {
                let out = pd_crash(&bed, step, &["upgrade"]);
                assert!(crashed(&out), "{what}: reached {step}: {}", output_text(&out));
                finish(&bed, i)
            }
        };
        thread::sleep(Duration::from_millis(100));
        let report = steady.check(w, &ts, &what);
        assert_state(&bed, &expected(), &what);
        let s = status(&bed);
        assert_eq!(
            (
                s["version"]["layout"].as_u64(),
                s["version"]["upgrade_pending"].as_bool()
            ),
            (Some(2), Some(false)),
            "{what}: {s:#}"
        );
        assert!(
            !bed.pin_root.join(UPLINK).exists() && !bed.pin_root.join(UP1).exists(),
            "{what}: layout 1 left: {:?}",
            listing(&bed.pin_root)
        );
        for id in &old_progs {
            assert!(
                ProgramHandle::from_prog_id(*id).is_err(),
                "{what}: old program {id} still loaded"
            );
        }
        for t in &s["tunnels"].as_array().expect("tunnels").clone() {
            let seen = t["counters"]["seen_by_dscp"]["46"].as_u64().unwrap_or(0);
            assert!(
                seen >= 100,
                "{what}: {}'s counters carried over and counting: {t:#}",
                t["name"]
            );
        }
        eprintln!("{what}, finished by {finished_by}: {report}");
    }
}

#[test]
fn upgrade_from_0_1_0_loses_no_mark_tcx() {
    from_layout_1("tcx");
}

#[test]
fn upgrade_from_0_1_0_loses_no_mark_tc() {
    from_layout_1("tc");
}

/// Rewrites the stamp's version (major.minor.patch) and flips the object hash.
fn restamp(root: &Path, version: (u32, u32, u32), other_object: bool) {
    let map = MapHandle::from_pinned_path(root.join("stamp")).expect("stamp");
    let mut v = map
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .expect("lookup")
        .expect("stamp value");
    let packed = (version.0 << 16) | (version.1 << 8) | version.2;
    v[8..12].copy_from_slice(&packed.to_ne_bytes());
    if other_object {
        v[16] ^= 1;
    }
    map.update(&0u32.to_ne_bytes(), &v, MapFlags::ANY)
        .expect("update stamp");
}

/// Layout 2 made by an older build: the programs are swapped for this
/// build's where each hook runs, plain or cut short at each step.
fn newer_programs(mode: &str) {
    for (i, step) in [
        None,
        Some("upgrade:loaded"),
        Some("upgrade:writers-moved"),
        Some("upgrade:readers-moved"),
    ]
    .iter()
    .enumerate()
    {
        let what = format!(
            "{mode} from an older 0.2 build, {}",
            step.unwrap_or("not interrupted")
        );
        let bed = two_uplinks();
        let t0 = bed.add_tunnel(&on("ug0", 400, 45000, UPLINK, A_V4, B_V4, 1), false);
        let t1 = bed.add_tunnel(&on("ug1", 401, 45010, UP1, UP1_A, UP1_B, 2), false);
        attach(&bed, &t0, UPLINK, mode);
        attach(&bed, &t1, UP1, mode);
        restamp(&bed.pin_root, (0, 1, 9), true);
        let before = pinned_programs(&bed.pin_root, &["progs/reader", "progs/writer", "progs/ingress"]);
        let ts = [&t0, &t1];
        let w = wire(&bed, &[UPLINK, UP1]);
        let steady = Steady::start(&bed, &ts);
        let finished_by = match step {
            None => {
                let msg = ok(bed.pdscp(&["upgrade"]));
                assert!(msg.contains("from pdscp 0.1.9 (layout 2)"), "{msg}");
                "upgrade"
            }
            Some(step) => {
                let out = pd_crash(&bed, step, &["upgrade"]);
                assert!(crashed(&out), "{what}: reached {step}: {}", output_text(&out));
                finish(&bed, i)
            }
        };
        thread::sleep(Duration::from_millis(100));
        let report = steady.check(w, &ts, &what);
        assert_state(&bed, &expected(), &what);
        let after = pinned_programs(&bed.pin_root, &["progs/reader", "progs/writer", "progs/ingress"]);
        assert_eq!(after.len(), 3, "{what}");
        assert!(
            after.iter().all(|id| !before.contains(id)),
            "{what}: new programs {after:?} after {before:?}"
        );
        assert!(
            listing(&bed.pin_root).iter().all(|p| !p.contains(":next")),
            "{what}: {:?}",
            listing(&bed.pin_root)
        );
        assert_eq!(status(&bed)["version"]["upgrade_pending"], false, "{what}");
        eprintln!("{what}, finished by {finished_by}: {report}");
    }
}

#[test]
fn upgrade_of_the_programs_loses_no_mark_tcx() {
    newer_programs("tcx");
}

#[test]
fn upgrade_of_the_programs_loses_no_mark_tc() {
    newer_programs("tc");
}

/// State stamped by a newer pdscp: every command, status too, is refused
/// with one line, and nothing changes.
#[test]
fn newer_state_is_refused_and_left_alone() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "auto");
    restamp(&bed.pin_root, (99, 0, 0), false);
    let before = listing(&bed.pin_root);
    let hooks_before = pdscp_hooks(&bed.a);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["upgrade"],
        &["gc"],
        &["detach", "wg0"],
        &["detach", "--all"],
        &["attach", "wg0", "--uplink", UPLINK, "--port", "51820"],
    ] {
        let msg = refused(
            bed.pdscp(args),
            "made by pdscp 99.0.0 (layout 2), newer than this pdscp 0.2.0",
        );
        assert_eq!(msg.trim().lines().count(), 1, "{args:?}: {msg}");
    }
    assert_eq!(listing(&bed.pin_root), before, "pins unchanged");
    assert_eq!(pdscp_hooks(&bed.a), hooks_before, "hooks unchanged");
    let w = wire(&bed, &[UPLINK]);
    send_ef(&bed, &[&t], 9000, 5);
    expect_marked(&w.stop(), &t, 9000, 5, "still marking");
    restamp(&bed.pin_root, (0, 2, 0), false);
}
