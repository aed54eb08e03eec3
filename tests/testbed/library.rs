//! What the tests take from pdscp itself rather than from its command line:
//! the library calls, the crash steps and the tc priorities. Every use of
//! the `pdscp` library crate by the tests goes through this file, so a
//! change of the library's paths is made here only.

// tcx_state(pin): what a pinned TCX link points at (device, program), None
// without a pin; pin_fd(fd, path): pins a program, map or link. Not every
// test crate uses both.
#[allow(unused_imports)]
pub use ::pdscp::kernel::{bpf::pin_fd, hook::tcx_link as tcx_state};

/// Every crash point of attach and detach, in the order a command passes them
/// (`PDSCP_TEST_CRASH_AT=<step>` makes pdscp abort there).
pub const CRASH_STEPS: [&str; 14] = [
    "attach:loaded",
    "attach:maps-pinned",
    "attach:pinned",
    "attach:writer-link-created",
    "attach:clsact-ready",
    "attach:uplink-attached",
    "attach:tunnel-recorded",
    "attach:tunnel-dir-created",
    "attach:reader-link-created",
    "detach:reader-detached",
    "detach:tunnel-forgotten",
    "detach:tunnel-released",
    "detach:writer-detached",
    "detach:unpinning",
];

/// Whether a crash step exists in a mode (TCX links vs. clsact filters).
pub fn step_applies(step: &str, mode: &str) -> bool {
    match step {
        "attach:writer-link-created" | "attach:reader-link-created" => mode == "tcx",
        "attach:clsact-ready" => mode == "tc",
        _ => true,
    }
}

/// Priorities of pdscp's cls_bpf filters (writer, reader) in tc mode.
pub const PDSCP_PRIO_WRITER: u64 = 3420;
pub const PDSCP_PRIO_READER: u64 = 3421;
