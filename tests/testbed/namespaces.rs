//! Network namespaces, and what the rest of the bed shares: unique names,
//! commands that must succeed, threads that re-raise their panics.

use std::ffi::CString;
use std::fmt::Display;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sched::CloneFlags;

/// Upper bound for any single step (thread join, accept, connect); pdscp
/// runs have their own, `RUN_TIMEOUT`.
pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(20);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `<tag>-<pid>-<n>`: unique within the machine while this process lives.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{}-{n}", std::process::id())
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub(super) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    stdout_of(out, format_args!("{cmd:?}"))
}

/// A command's exit status, stdout and stderr, for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The stdout of a command that must have succeeded; panics with `what`
/// and the command's output if it did not.
pub fn stdout_of(out: Output, what: impl Display) -> String {
    assert!(out.status.success(), "{what} failed: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`/run/netns/<name>`), deleted on drop together
/// with all its devices.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `pdscp-<tag>-<pid>-<n>` and brings its `lo` up.
    pub fn new(tag: &str) -> Netns {
        let name = format!("pdscp-{}", unique(tag));
        // A leftover of a crashed run whose pid was recycled would block `add`.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// `/run/netns/<name>`: what `nsenter --net=` and `setns` take.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `sh -c cmd` inside the namespace and returns whatever happened.
    pub fn try_sh(&self, cmd: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .args(["sh", "-c", cmd])
            .output()
            .unwrap_or_else(|e| panic!("spawning nsenter: {e}"))
    }

    /// Runs `sh -c cmd` inside the namespace; panics with its output on failure.
    pub fn sh(&self, cmd: &str) -> String {
        stdout_of(self.try_sh(cmd), format_args!("[{}] `{cmd}`", self.name))
    }

    /// Runs `f` on a new thread that has entered this namespace, for
    /// in-process sockets (setns only moves the calling thread).
    pub fn spawn<T, F>(&self, what: &str, f: F) -> JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let path = self.path();
        thread::Builder::new()
            .name(format!("{what}@{}", self.name))
            .spawn(move || {
                let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                f()
            })
            .expect("spawning a thread")
    }

    /// [`Netns::spawn`] and wait for the result.
    pub fn run_in<T, F>(&self, what: &str, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        join(self.spawn(what, f))
    }

    /// ifindex of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> u32 {
        let dev = dev.to_owned();
        self.run_in("ifindex", move || ifindex_here(&dev))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip").args(["netns", "del", &self.name]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("ip netns del {}: {e}", self.name),
        }
    }
}

/// Joins a thread, re-raising its panic with the original message.
pub(super) fn join<T>(h: JoinHandle<T>) -> T {
    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// ifindex of `dev` in the calling thread's namespace.
pub fn ifindex_here(dev: &str) -> u32 {
    let c = CString::new(dev).expect("device name");
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(idx != 0, "no device {dev}: {}", std::io::Error::last_os_error());
    idx
}
