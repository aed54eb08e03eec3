//! The idempotent steps that attach, detach and repair are made of. Each
//! checks what exists first, so running it again is harmless, and each
//! leaves a state the next command can finish or undo.
use anyhow::{Context, Result};

use super::rules;
use crate::kernel::hook::{self, Hook};
use crate::kernel::iface::{self, Iface};
use crate::model::{IfaceCfg, Mode, Program, Role};
use crate::state::registry::Registry;
use crate::state::uplink::{Pinned, UplinkDir};
use crate::testhooks::{crash_point, Step};

/// Where the writer runs (or would run) on the uplink.
pub fn writer_hook(dir: &UplinkDir, ifindex: u32) -> Hook {
    Hook {
        program: Program::Writer,
        ifindex,
        link_pin: dir.writer_link(),
    }
}

/// Where the reader runs (or would run) on a tunnel.
pub fn reader_hook(dir: &UplinkDir, tunnel: &str, ifindex: u32) -> Hook {
    Hook {
        program: Program::Reader,
        ifindex,
        link_pin: dir.reader_link(tunnel),
    }
}

/// Records the uplink and makes sure the writer runs on it, in the mode it
/// runs in already, else `asked`, else the best the kernel has. Returns the mode.
pub fn attach_writer(
    dir: &UplinkDir,
    pinned: &Pinned,
    registry: &mut Registry,
    dev: &Iface,
    ethernet: bool,
    asked: Option<Mode>,
    netns: u32,
) -> Result<Mode> {
    let recorded = registry.uplink().map(|(i, c)| (i, c.mode));
    let live = match recorded {
        Some((ifindex, mode)) if ifindex == dev.ifindex => writer_hook(dir, ifindex)
            .runs(mode, pinned.writer.id())?
            .then_some(mode),
        _ => None,
    };
    if let Some((ifindex, _)) = recorded {
        if ifindex != dev.ifindex {
            // The uplink device was recreated: its old entry is stale.
            registry.forget(pinned, ifindex)?;
        }
    }
    // Only a new writer needs to know what the kernel offers.
    let tcx_available = live.is_some() || hook::tcx_available();
    let mode = rules::writer_mode(asked, live, tcx_available, &dev.name)?;
    let cfg = IfaceCfg {
        role: Role::Uplink,
        name: dev.name.clone(),
        ethernet,
        mode,
        ports: None,
        netns,
    };
    registry.record(pinned, dev.ifindex, &cfg)?;
    writer_hook(dir, dev.ifindex)
        .ensure(mode, &pinned.writer)
        .with_context(|| format!("attaching to uplink {}", dev.name))?;
    Ok(mode)
}

/// After new programs were pinned, points every attached tunnel but
/// `except` at the new reader.
pub fn retarget_readers(dir: &UplinkDir, pinned: &Pinned, registry: &Registry, except: &str) -> Result<()> {
    for (ifindex, cfg) in registry.tunnels() {
        if cfg.name != except && iface::is_present(&cfg.name, ifindex) {
            reader_hook(dir, &cfg.name, ifindex).ensure(cfg.mode, &pinned.reader)?;
        }
    }
    Ok(())
}

/// Stops the reader on a tunnel and forgets it: reader first, so the
/// device never runs a reader whose entries the writer no longer matches.
pub fn release_tunnel(
    dir: &UplinkDir,
    pinned: Option<&Pinned>,
    registry: &mut Registry,
    tunnel: &str,
) -> Result<()> {
    let recorded = registry.tunnel(tunnel).map(|(i, _)| i);
    let ifindex = recorded.unwrap_or_default();
    let present = recorded.is_some() && iface::is_present(tunnel, ifindex);
    reader_hook(dir, tunnel, ifindex).remove(present)?;
    crash_point(Step::ReaderDetached);
    if let (Some(pinned), Some(_)) = (pinned, recorded) {
        registry.forget(pinned, ifindex)?;
    }
    crash_point(Step::TunnelForgotten);
    dir.remove_tunnel_dir(tunnel)
}

/// Stops the writer and removes the uplink's state once no tunnel is left.
pub fn release_uplink(dir: &UplinkDir) -> Result<()> {
    // Removes only a filter in pdscp's own slot, and only if it runs pdscp's program.
    let ifindex = Iface::by_name(&dir.name).ok().map(|d| d.ifindex);
    writer_hook(dir, ifindex.unwrap_or_default()).remove(ifindex.is_some())?;
    crash_point(Step::WriterDetached);
    dir.remove()
}
