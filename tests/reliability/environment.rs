//! Environment faults: pin roots on the wrong filesystem, no bpffs,
//! another namespace's state, a load the kernel refuses.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

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
/// "DEVICE GONE, NOT ATTACHED" with an error until the next gc. The load
/// happens when a pin root's shared state is first made: a failed first
/// attach must leave nothing in its pin root, and touch no other pin root.
#[test]
fn attach_that_fails_to_load_leaves_nothing() {
    let bed = two_uplinks();
    let by = bed.add_tunnel(&on("lf0", 501, 44000, UPLINK, A_V4, B_V4, 1), false);
    let t = bed.add_tunnel(&on("lf1", 502, 44010, UP1, UP1_A, UP1_B, 2), false);
    attach(&bed, &by, UPLINK, "auto");
    let before = status_without_counters(&bed.pin_root, &bed.a);
    let pins_before = listing(&bed.pin_root);
    let fresh = Scratch::new(Path::new("/sys/fs/bpf"), "fresh-root");
    let fresh_root = fresh.path().join("root");

    // 16M flow entries need about a gigabyte, the cgroup allows 128 MiB.
    let cgroup = MemoryCgroup::new(128 << 20);
    let mut args = attach_args(&t, UP1, "auto");
    args.extend(["--map-size".into(), "16777216".into()]);
    let out = run_cmd(cgroup.wrap(&pdscp_cmd(&fresh_root, Some(&bed.a), &args)));
    let err = refused(out, "loading the BPF programs");
    assert!(err.contains("Cannot allocate memory"), "{err}");

    assert!(
        listing(&fresh_root).is_empty(),
        "the failed attach left state: {:?}",
        listing(&fresh_root)
    );
    assert_eq!(
        listing(&bed.pin_root),
        pins_before,
        "the failed attach changed another pin root"
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
