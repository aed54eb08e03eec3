//! Repair: bring an uplink's state back in line with the kernel after
//! devices came and went or a command was interrupted. `attach` and `detach`
//! run it for the uplinks they touch, `pdscp gc` for all of them.
use anyhow::{Context, Result};

use super::{rules, steps};
use crate::kernel::iface::{self, Iface};
use crate::state::pin_root::PinRoot;
use crate::state::registry::Registry;
use crate::state::uplink::UplinkDir;

/// Tunnels whose device is gone or was recreated (new ifindex), or whose
/// reader does not run, are released; registry entries without a tunnel
/// directory are dropped; the writer is re-attached to a recreated uplink
/// device; an uplink without tunnels is released. Returns what it did, one
/// line each. Another namespace's uplink is left alone.
pub fn reconcile(dir: &UplinkDir) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if !dir.exists() {
        return Ok(done);
    }
    let pinned = dir.open().ok();
    // One read of the registry and one device listing, whatever the number of tunnels.
    let mut registry = match &pinned {
        Some(p) => Registry::read(p)?,
        None => Registry::default(),
    };
    if rules::check_netns(&registry, &dir.name, iface::current_netns()?).is_err() {
        return Ok(done); // Another namespace's state: not ours to judge from here.
    }
    let devices = iface::devices()?;
    for tunnel in dir.tunnel_names()? {
        let live = match (&pinned, registry.tunnel(&tunnel)) {
            (Some(p), Some((ifindex, cfg))) => {
                devices.get(&ifindex) == Some(&tunnel)
                    && steps::reader_hook(dir, &tunnel, ifindex).runs(cfg.mode, p.reader.id())?
            }
            _ => false,
        };
        if !live {
            steps::release_tunnel(dir, pinned.as_ref(), &mut registry, &tunnel)?;
            done.push(format!(
                "{tunnel}: released from {} (device gone, recreated or not attached)",
                dir.name
            ));
        }
    }
    if let Some(p) = &pinned {
        let dirs = dir.tunnel_names()?;
        let orphans: Vec<(u32, String)> = registry
            .tunnels()
            .filter(|(_, c)| !dirs.contains(&c.name))
            .map(|(i, c)| (i, c.name.clone()))
            .collect();
        for (ifindex, name) in orphans {
            // Left by an attach interrupted before its directory was made.
            let present = iface::is_present(&name, ifindex);
            steps::reader_hook(dir, &name, ifindex).remove(present)?;
            registry.forget(p, ifindex)?;
        }
    }
    if dir.tunnel_names()?.is_empty() {
        steps::release_uplink(dir)?;
        done.push(format!("{}: released (no tunnels left)", dir.name));
        return Ok(done);
    }
    if let (Some(p), Ok(dev)) = (&pinned, Iface::by_name(&dir.name)) {
        if let Some((ifindex, cfg)) = registry.uplink().map(|(i, c)| (i, c.clone())) {
            if ifindex != dev.ifindex || !steps::writer_hook(dir, ifindex).runs(cfg.mode, p.writer.id())? {
                steps::attach_writer(
                    dir,
                    p,
                    &mut registry,
                    &dev,
                    cfg.ethernet,
                    Some(cfg.mode),
                    cfg.netns,
                )?;
                done.push(format!("{}: writer re-attached", dir.name));
            }
        }
    }
    Ok(done)
}

/// `pdscp gc`: reconciles every uplink under the pin root.
pub fn gc(root: &PinRoot) -> Result<String> {
    let mut done = Vec::new();
    for dir in root.uplinks()? {
        done.extend(reconcile(&dir).with_context(|| format!("repairing uplink {}", dir.name))?);
    }
    if done.is_empty() {
        done.push("nothing to repair".to_string());
    }
    Ok(done.join("\n"))
}
