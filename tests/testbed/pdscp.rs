//! Running the pdscp binary: bpffs, bounded runs, and what their output must be.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::namespaces::{join, Netns, STEP_TIMEOUT};

/// bpffs magic (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Mounts bpffs on /sys/fs/bpf unless one is there already.
pub fn ensure_bpffs() {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let st = nix::sys::statfs::statfs("/sys/fs/bpf").expect("statfs /sys/fs/bpf");
    if st.filesystem_type().0 as i64 != BPF_FS_MAGIC {
        nix::mount::mount(
            Some("bpf"),
            "/sys/fs/bpf",
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mounting bpffs on /sys/fs/bpf");
    }
}

/// Runs `pdscp --pin-root <pin_root> --netns <ns.name> <args...>` (from the
/// host namespace: pdscp enters `ns` itself), killing it after
/// [`STEP_TIMEOUT`]. Panics only if the crate has no `pdscp` binary, so tests
/// that never call this do not depend on it.
pub fn pdscp(ns: &Netns, pin_root: &Path, args: &[&str]) -> Output {
    // option_env!, not env!: a test crate must compile even without the bin.
    let Some(bin) = option_env!("CARGO_BIN_EXE_pdscp") else {
        panic!("the crate has no pdscp binary");
    };
    let mut cmd = Command::new(bin);
    cmd.arg("--pin-root")
        .arg(pin_root)
        .arg("--netns")
        .arg(&ns.name)
        .args(args);
    run_bounded(cmd, STEP_TIMEOUT)
}

/// Runs `cmd` with no stdin and its output captured, killing it (and
/// panicking) after `timeout`. The pipes are drained while waiting, so a
/// chatty child cannot block on them.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            v
        })
    };
    let out_t = drain(Box::new(child.stdout.take().expect("stdout")));
    let err_t = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for a child") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: join(out_t),
        stderr: join(err_t),
    }
}

/// A command's stdout and stderr, for assertion messages.
fn output_text(out: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A command that must succeed; returns its stdout.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "pdscp failed: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A refused command: non-zero exit (not a crash) and exactly one line on
/// stderr that contains `expect`; returns that line.
pub fn refused(out: Output, expect: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "should have been refused: {}",
        output_text(&out)
    );
    assert_eq!(stderr.lines().count(), 1, "one line of error: {stderr:?}");
    assert!(stderr.contains(expect), "error {stderr:?} should say {expect:?}");
    stderr
}
