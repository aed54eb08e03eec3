//! What the tests take from pdscp itself rather than from its command line:
//! the library calls, the crash steps and the tc priorities. Every use of
//! the `pdscp` library crate by the tests goes through this file.
use ::pdscp::kernel::hook::tc_priority;
use ::pdscp::model::{Mode, Program};
use ::pdscp::testhooks;

// tcx_state(pin): what a pinned TCX link points at (device, program), None
// without a pin; pin_fd(fd, path): pins a program, map or link. Not every
// test crate uses both.
#[allow(unused_imports)]
pub use ::pdscp::kernel::{bpf::pin_fd, hook::tcx_link as tcx_state};

/// The crash points of attach and detach, in the order a command passes
/// them (`PDSCP_TEST_CRASH_AT=<step>` makes pdscp abort there). The
/// upgrade's own steps are crashed at by the upgrade tests.
pub static CRASH_STEPS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    testhooks::CRASH_STEPS
        .iter()
        .map(|s| s.name())
        .filter(|n| n.starts_with("attach:") || n.starts_with("detach:"))
        .collect()
});

/// Whether a crash step exists in a mode ("tcx" links vs. "tc" clsact filters).
pub fn step_applies(step: &str, mode: &str) -> bool {
    let mode = if mode == "tcx" { Mode::Tcx } else { Mode::Tc };
    testhooks::CRASH_STEPS
        .iter()
        .any(|s| s.name() == step && s.applies_to(mode))
}

/// Priorities of pdscp's cls_bpf filters (writer, reader) in tc mode.
pub const PDSCP_PRIO_WRITER: u64 = tc_priority(Program::Writer) as u64;
pub const PDSCP_PRIO_READER: u64 = tc_priority(Program::Reader) as u64;

/// The outer marks a `--dscp-map` SPEC gives each inner DSCP.
#[allow(unused_imports)]
pub use ::pdscp::policy::parse_dscp_map;
