//! `pdscp detach`: stop marking a tunnel, everywhere or on some uplinks; an
//! uplink goes with its last tunnel, the shared objects with the last uplink.
use anyhow::Result;

use super::reconcile;
use super::steps::{self, Current};
use crate::state::pin_root::PinRoot;

/// Detaches `tunnel` from `only` (empty: from every uplink).
pub fn detach(root: &PinRoot, tunnel: &str, only: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let Some(mut cur) = steps::open_current(root, &mut out)? else {
        out.push(format!("{tunnel}: not attached"));
        return Ok(out);
    };
    let Some((slot, rec)) = cur.registry.tunnel(tunnel).map(|(s, r)| (s, r.clone())) else {
        // Not attached; but an attach or detach of it may have been cut
        // short, leaving a directory or an uplink without tunnels.
        out.extend(reconcile::repair(&mut cur)?);
        steps::remove_if_unused(cur)?;
        out.push(format!("{tunnel}: not attached"));
        return Ok(out);
    };
    let attached = cur.registry.uplink_names(&rec);
    let leaving: Vec<String> = match only.is_empty() {
        true => attached.clone(),
        false => attached.iter().filter(|u| only.contains(u)).cloned().collect(),
    };
    if leaving.is_empty() {
        out.push(format!("{tunnel}: not attached to {}", only.join(", ")));
        return Ok(out);
    }
    if leaving.len() == attached.len() {
        steps::release_tunnel(&mut cur, slot)?;
    } else {
        let mut kept = rec.clone();
        kept.links.retain(|uplink, _| {
            !cur.registry
                .uplink_at(*uplink)
                .is_some_and(|u| leaving.contains(&u.name))
        });
        cur.registry.put_tunnel(&cur.objects, slot, kept)?;
    }
    let released = steps::release_unused_uplinks(&mut cur)?;
    out.extend(reconcile::repair(&mut cur)?);
    out.push(describe(tunnel, &leaving, &released));
    steps::remove_if_unused(cur)?;
    Ok(out)
}

/// `detach --all`: every tunnel, then the uplinks and the shared objects.
pub fn detach_all(root: &PinRoot) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let Some(mut cur) = steps::open_current(root, &mut out)? else {
        out.push("nothing attached".into());
        return Ok(out);
    };
    let tunnels: Vec<(usize, String)> = cur.registry.tunnels().map(|(s, r)| (s, r.name.clone())).collect();
    for (slot, name) in &tunnels {
        steps::release_tunnel(&mut cur, *slot)?;
        out.push(format!("{name}: detached"));
    }
    for name in steps::release_unused_uplinks(&mut cur)? {
        out.push(format!("{name}: released"));
    }
    out.extend(reconcile::repair(&mut cur)?);
    if tunnels.is_empty() && out.is_empty() {
        out.push("nothing attached".into());
    }
    release_everything(cur)?;
    Ok(out)
}

fn release_everything(cur: Current) -> Result<()> {
    steps::remove_if_unused(cur).map(|_| ())
}

/// "wg0: detached from eth0 (its last tunnel; uplink released)".
fn describe(tunnel: &str, leaving: &[String], released: &[String]) -> String {
    let mut text = format!("{tunnel}: detached from {}", leaving.join(", "));
    match released {
        [] => {}
        [one] if leaving.len() == 1 && leaving[0] == *one => {
            text.push_str(" (its last tunnel; uplink released)")
        }
        many => text.push_str(&format!(" (uplinks released: {})", many.join(", "))),
    }
    text
}
