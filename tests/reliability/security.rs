//! Security: private pins, symlinked pin roots, no second bpffs.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

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
