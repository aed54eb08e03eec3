//! `--netns NAME`: run inside /run/netns/NAME without `ip netns exec`,
//! which would remount /sys and hide the host's bpffs.
use std::fs::File;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

const NETNS_DIR: &str = "/run/netns";

pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        bail!("invalid network namespace name {name:?}");
    }
    Ok(())
}

/// Moves this (single-threaded) process into the named network namespace.
/// The mount namespace, and so bpffs, stays the host's.
pub fn enter(name: &str) -> Result<()> {
    let path = PathBuf::from(NETNS_DIR).join(name);
    let file = File::open(&path)
        .with_context(|| format!("no network namespace {name:?} ({} not found)", path.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering network namespace {name:?}"))?;
    Ok(())
}
