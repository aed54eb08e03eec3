//! `pdscp detach`: stop marking a tunnel; its uplink goes with its last tunnel.
use anyhow::Result;

use super::reconcile::reconcile;
use super::{rules, steps};
use crate::kernel::iface;
use crate::state::pin_root::PinRoot;
use crate::state::registry::Registry;
use crate::testhooks::{crash_point, Step};

pub fn detach(root: &PinRoot, tunnel: &str, only_uplink: Option<&str>) -> Result<String> {
    let candidates = match only_uplink {
        Some(name) => vec![root.uplink(name)],
        None => root.uplinks()?,
    };
    let Some(dir) = candidates.iter().find(|d| d.has_tunnel(tunnel)) else {
        // Not attached; but an attach or detach of it may have been cut
        // short, leaving registry entries or an uplink without tunnels.
        for dir in &candidates {
            reconcile(dir)?;
        }
        return Ok(format!("{tunnel}: not attached"));
    };
    // Broken pins must not block cleaning up what can be cleaned.
    let pinned = dir.open().ok();
    let mut registry = match &pinned {
        Some(p) => Registry::read(p)?,
        None => Registry::default(),
    };
    rules::check_netns(&registry, &dir.name, iface::current_netns()?)?;
    steps::release_tunnel(dir, pinned.as_ref(), &mut registry, tunnel)?;
    crash_point(Step::TunnelReleased);
    reconcile(dir)?;
    if dir.exists() {
        Ok(format!("{tunnel}: detached from {}", dir.name))
    } else {
        Ok(format!(
            "{tunnel}: detached from {} (its last tunnel; uplink released)",
            dir.name
        ))
    }
}
