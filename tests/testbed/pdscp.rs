//! Running the pdscp binary: bpffs, bounded runs, what their output must
//! be, the commands the tests repeat, and reading `status --json`.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bed::{TestBed, Tunnel};
use super::namespaces::{join, output_text, stdout_of, Netns};

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

/// Upper bound for one command (a hung pdscp fails the test, never blocks it).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The pdscp binary. Panics only if the crate has no `pdscp` binary, so
/// tests that never run it do not depend on it.
pub fn pdscp_bin() -> &'static str {
    // option_env!, not env!: a test crate must compile even without the bin.
    let Some(bin) = option_env!("CARGO_BIN_EXE_pdscp") else {
        panic!("the crate has no pdscp binary");
    };
    bin
}

/// `pdscp --pin-root ROOT [--netns NS] ARGS...` (from the host namespace:
/// pdscp enters `ns` itself), without inherited test hooks; mounts bpffs
/// first if needed.
pub fn pdscp_cmd<S: AsRef<OsStr>>(root: &Path, ns: Option<&Netns>, args: &[S]) -> Command {
    ensure_bpffs();
    let mut cmd = Command::new(pdscp_bin());
    cmd.env_remove("PDSCP_TEST_CRASH_AT")
        .env_remove("PDSCP_TEST_JOURNAL")
        .env_remove("PDSCP_TEST_KERNEL_RELEASE")
        .env_remove("PDSCP_PIN_ROOT")
        .arg("--pin-root")
        .arg(root);
    if let Some(ns) = ns {
        cmd.arg("--netns").arg(&ns.name);
    }
    cmd.args(args);
    cmd
}

/// Runs a command to completion with its output captured: no stdin, no core
/// dump (an injected crash aborts), working directory / unless set, killed
/// after [`RUN_TIMEOUT`].
pub fn run_cmd(mut cmd: Command) -> Output {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir("/");
    }
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    run_bounded(cmd, RUN_TIMEOUT)
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

/// A command that must succeed; returns its stdout.
pub fn ok(out: Output) -> String {
    stdout_of(out, "pdscp")
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

impl TestBed {
    /// Runs `pdscp --pin-root <pin_root> --netns <a> <args...>` (see
    /// [`pdscp_cmd`] and [`run_cmd`]).
    pub fn pdscp<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        run_cmd(pdscp_cmd(&self.pin_root, Some(&self.a), args))
    }
}

// ---------------------------------------------------------------------------
// attach and detach
// ---------------------------------------------------------------------------

impl TestBed {
    /// `pdscp check TUNNEL --seconds 2 [extra]` in a: (exit 0, its screen).
    pub fn check(&self, tunnel: &str, extra: &[&str]) -> (bool, String) {
        let mut args = vec!["check", tunnel, "--seconds", "2"];
        args.extend(extra);
        let out = self.pdscp(&args);
        let screen = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), screen)
    }
}

/// A failed `check` whose screen names `expect`.
pub fn assert_check_fails_naming(result: (bool, String), expect: &str, what: &str) {
    let (passed, text) = result;
    assert!(!passed, "{what}: check must fail:\n{text}");
    assert!(text.contains(expect), "{what}: expected {expect:?} in:\n{text}");
    assert!(text.contains("marks are NOT flowing"), "{what}:\n{text}");
    eprintln!("check, {what}:\n{text}");
}

/// `attach T --uplink UPLINK --port PORT --mode MODE`, PORT being the
/// tunnel's outer source port.
pub fn attach_args(t: &Tunnel, uplink: &str, mode: &str) -> Vec<String> {
    attach_args_on(t, &[uplink], mode)
}

/// The same with `--uplink` once for each of `uplinks`.
pub fn attach_args_on(t: &Tunnel, uplinks: &[&str], mode: &str) -> Vec<String> {
    let port = t.srcport.to_string();
    let mut args: Vec<String> = ["attach", &t.name, "--port", &port, "--mode", mode]
        .map(String::from)
        .to_vec();
    for uplink in uplinks {
        args.extend(["--uplink".to_string(), uplink.to_string()]);
    }
    args
}

/// Attaches `t` to `uplink` in the bed; returns what pdscp said.
pub fn attach(bed: &TestBed, t: &Tunnel, uplink: &str, mode: &str) -> String {
    attach_on(bed, t, &[uplink], mode)
}

/// Attaches `t` to every one of `uplinks` at once.
pub fn attach_on(bed: &TestBed, t: &Tunnel, uplinks: &[&str], mode: &str) -> String {
    ok(bed.pdscp(&attach_args_on(t, uplinks, mode)))
}

/// Detaches `t` in the bed; returns what pdscp said.
pub fn detach(bed: &TestBed, t: &Tunnel) -> String {
    ok(bed.pdscp(&["detach", &t.name]))
}

// ---------------------------------------------------------------------------
// status --json
// ---------------------------------------------------------------------------

/// `status --json` of the pins under `root`, as seen from `ns`.
pub fn status_at(root: &Path, ns: &Netns) -> Value {
    let json = ok(run_cmd(pdscp_cmd(root, Some(ns), &["status", "--json"])));
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("status --json: {e}: {json}"))
}

/// `status --json` of the bed.
pub fn status(bed: &TestBed) -> Value {
    status_at(&bed.pin_root, &bed.a)
}

/// A status report without the fields `keys` of each uplink.
pub fn without_uplink_fields(mut s: Value, keys: &[&str]) -> Value {
    for u in s["uplinks"].as_array_mut().into_iter().flatten() {
        let u = u.as_object_mut().expect("uplink object");
        for k in keys {
            u.remove(*k);
        }
    }
    s
}

/// `status --json` without what background traffic moves (counters, flow count).
pub fn status_without_counters(root: &Path, ns: &Netns) -> Value {
    let mut s = without_uplink_fields(status_at(root, ns), &["counters", "map_entries"]);
    for t in s["tunnels"].as_array_mut().into_iter().flatten() {
        t.as_object_mut().expect("tunnel").remove("counters");
    }
    if let Some(flows) = s["flows"].as_object_mut() {
        flows.remove("entries");
    }
    s
}

/// The uplink `name` in a status report.
pub fn uplink<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["uplinks"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == name))
        .unwrap_or_else(|| panic!("no uplink {name} in {s:#}"))
}

/// The tunnel `name` of uplink `up` in a status report.
pub fn tunnel<'a>(s: &'a Value, up: &str, name: &str) -> &'a Value {
    uplink(s, up)["tunnels"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no tunnel {name} on {up} in {s:#}"))
}

/// The names of uplink `up`'s tunnels in a status report.
pub fn tunnel_names(s: &Value, up: &str) -> Vec<String> {
    uplink(s, up)["tunnels"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The tunnel `name` on whichever uplink has it, with that uplink.
pub fn find_tunnel<'a>(s: &'a Value, name: &str) -> Option<(&'a Value, &'a Value)> {
    s["uplinks"].as_array()?.iter().find_map(|u| {
        u["tunnels"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| (u, t))
    })
}
