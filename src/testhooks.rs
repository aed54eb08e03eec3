//! Test hooks, inert unless their environment variable is set:
//! `PDSCP_TEST_CRASH_AT=<step>` kills the process at a named step, as a power
//! cut or `kill -9` would, so tests can prove the next command repairs
//! whatever was left half done; `PDSCP_TEST_JOURNAL=<file>` records the
//! order in which commands took effect.
use crate::model::Mode;

/// A point in a command where a crash is injected on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// attach: the BPF object is loaded, nothing of it pinned yet.
    Loaded,
    /// attach: the shared maps are pinned, the programs and stamp not yet.
    MapsPinned,
    /// attach: maps, programs and stamp are pinned, nothing attached yet.
    Pinned,
    /// attach (tcx): the writer's link exists but is not pinned.
    WriterLinkCreated,
    /// attach (tc): the clsact qdisc exists, the filter not yet.
    ClsactReady,
    /// attach: the writer runs on the uplink.
    UplinkAttached,
    /// attach: the tunnel is in the registry, its directory not made yet.
    TunnelRecorded,
    /// attach: the tunnel's directory exists, its reader not attached yet.
    TunnelDirCreated,
    /// attach (tcx): the reader's link exists but is not pinned.
    ReaderLinkCreated,
    /// detach: the reader no longer runs, the registry still has the tunnel.
    ReaderDetached,
    /// detach: the registry entry is gone, the directory not yet.
    TunnelForgotten,
    /// detach: the tunnel is released, its uplink not yet repaired.
    TunnelReleased,
    /// detach: the uplink's writer no longer runs, its pins remain.
    WriterDetached,
    /// detach: some of the shared pins are removed.
    Unpinning,
    /// upgrade: the new programs (and for a new layout, its maps) are pinned.
    UpgradeLoaded,
    /// upgrade: every writer runs the new program, the readers the old one.
    UpgradeWritersMoved,
    /// upgrade: every hook runs the new programs; the old pins remain.
    UpgradeReadersMoved,
}

/// Every crash step, in the order a command passes them.
pub const CRASH_STEPS: [Step; 17] = [
    Step::Loaded,
    Step::MapsPinned,
    Step::Pinned,
    Step::WriterLinkCreated,
    Step::ClsactReady,
    Step::UplinkAttached,
    Step::TunnelRecorded,
    Step::TunnelDirCreated,
    Step::ReaderLinkCreated,
    Step::ReaderDetached,
    Step::TunnelForgotten,
    Step::TunnelReleased,
    Step::WriterDetached,
    Step::Unpinning,
    Step::UpgradeLoaded,
    Step::UpgradeWritersMoved,
    Step::UpgradeReadersMoved,
];

impl Step {
    /// The value of PDSCP_TEST_CRASH_AT that stops here.
    pub fn name(self) -> &'static str {
        match self {
            Step::Loaded => "attach:loaded",
            Step::MapsPinned => "attach:maps-pinned",
            Step::Pinned => "attach:pinned",
            Step::WriterLinkCreated => "attach:writer-link-created",
            Step::ClsactReady => "attach:clsact-ready",
            Step::UplinkAttached => "attach:uplink-attached",
            Step::TunnelRecorded => "attach:tunnel-recorded",
            Step::TunnelDirCreated => "attach:tunnel-dir-created",
            Step::ReaderLinkCreated => "attach:reader-link-created",
            Step::ReaderDetached => "detach:reader-detached",
            Step::TunnelForgotten => "detach:tunnel-forgotten",
            Step::TunnelReleased => "detach:tunnel-released",
            Step::WriterDetached => "detach:writer-detached",
            Step::Unpinning => "detach:unpinning",
            Step::UpgradeLoaded => "upgrade:loaded",
            Step::UpgradeWritersMoved => "upgrade:writers-moved",
            Step::UpgradeReadersMoved => "upgrade:readers-moved",
        }
    }

    /// Whether a command in `mode` passes this step (links exist only in
    /// TCX mode, the clsact qdisc only in tc mode).
    pub fn applies_to(self, mode: Mode) -> bool {
        match self {
            Step::WriterLinkCreated | Step::ReaderLinkCreated => mode == Mode::Tcx,
            Step::ClsactReady => mode == Mode::Tc,
            _ => true,
        }
    }
}

/// Aborts the process here if PDSCP_TEST_CRASH_AT names this step.
pub fn crash_point(step: Step) {
    if std::env::var_os("PDSCP_TEST_CRASH_AT").is_some_and(|s| s == step.name()) {
        std::process::abort();
    }
}

/// Appends a completed change to PDSCP_TEST_JOURNAL, while the lock is still
/// held, so concurrency tests know the order in which commands took effect.
pub fn journal(line: &str) {
    use std::io::Write;
    if let Some(path) = std::env::var_os("PDSCP_TEST_JOURNAL") {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).create(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_are_unique_and_name_their_command() {
        let mut names: Vec<&str> = CRASH_STEPS.iter().map(|s| s.name()).collect();
        let commands = ["attach:", "detach:", "upgrade:"];
        assert!(names.iter().all(|n| commands.iter().any(|c| n.starts_with(c))));

        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CRASH_STEPS.len());
    }
}
