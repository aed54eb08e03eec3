//! Repair: bring the state back in line with the kernel after devices came
//! and went or a command was interrupted (docs/state.md, Repair). `attach`
//! and `detach` repair first; `pdscp gc` only repairs.
use anyhow::Result;

use super::steps::{self, Current, UplinkDevice};
use crate::kernel::iface::{self, Iface};
use crate::model::Program;
use crate::state::pin_root::PinRoot;

/// Releases tunnels whose device is gone or was recreated (another
/// ifindex) or whose hooks do not run, and directories or links without a
/// record; re-hooks the writer on a recreated uplink device; releases
/// uplinks without tunnels; rewrites the programs' indexes where they
/// differ from the records. Returns what it did, one line each.
pub fn repair(cur: &mut Current) -> Result<Vec<String>> {
    let mut done = Vec::new();
    // One device listing, whatever the number of tunnels.
    let devices = iface::devices()?;
    let tunnels: Vec<(usize, crate::model::TunnelRecord)> =
        cur.registry.tunnels().map(|(s, r)| (s, r.clone())).collect();
    for (slot, rec) in tunnels {
        let mut live =
            devices.get(&rec.ifindex) == Some(&rec.name) && cur.layout.tunnel_dir(&rec.name).is_dir();
        for (program, wanted) in [(Program::Reader, rec.reader), (Program::Ingress, rec.ingress)] {
            if let (true, Some(mode)) = (live, wanted) {
                let id = cur.objects.program(program).id();
                live = cur.layout.hook(program, &rec.name, rec.ifindex).runs(mode, id)?;
            }
        }
        if !live {
            steps::release_tunnel(cur, slot)?;
            done.push(format!(
                "{}: released (device gone, recreated or not attached)",
                rec.name
            ));
            continue;
        }
        // Rows of uplinks that are no longer recorded.
        let mut kept = rec.clone();
        kept.links
            .retain(|uplink, _| cur.registry.uplink_at(*uplink).is_some());
        if kept != rec {
            cur.registry.put_tunnel(&cur.objects, slot, kept)?;
        }
    }
    for name in cur.layout.tunnel_dirs()? {
        if cur.registry.tunnel(&name).is_none() {
            // Left by a detach cut short after the record went.
            cur.layout.remove_tunnel_dir(&name)?;
        }
    }
    for name in steps::release_unused_uplinks(cur)? {
        done.push(format!("{name}: released (no tunnels left)"));
    }
    for name in cur.layout.uplink_dirs()? {
        if cur.registry.uplink(&name).is_none() {
            cur.layout.remove_uplink_dir(&name)?;
        }
    }
    let uplinks: Vec<crate::model::UplinkRecord> = cur.registry.uplinks().map(|(_, r)| r.clone()).collect();
    for rec in uplinks {
        // A device that is gone keeps its record: its tunnels stay attached
        // for when it returns (a PPP link reconnecting is a new device).
        let Ok(dev) = Iface::by_name(&rec.name) else {
            continue;
        };
        let writer = cur.objects.program(Program::Writer).id();
        let runs = dev.ifindex == rec.ifindex
            && cur
                .layout
                .hook(Program::Writer, &rec.name, rec.ifindex)
                .runs(rec.mode, writer)?;
        if !runs {
            let up = UplinkDevice {
                ethernet: rec.ethernet,
                cake: rec.cake.clone(),
                dev,
            };
            steps::attach_writer(cur, &up, Some(rec.mode))?;
            done.push(format!("{}: writer re-attached", rec.name));
        }
    }
    let fixed = cur.registry.repair_indexes(&cur.objects)?;
    if fixed > 0 {
        done.push(format!("{fixed} index entries rewritten from the records"));
    }
    Ok(done)
}

/// `pdscp gc`: repairs, and removes the shared objects when nothing is left.
pub fn gc(root: &PinRoot) -> Result<String> {
    let mut done = Vec::new();
    let here = iface::current_netns()?;
    if crate::state::objects::read_stamp(&root.layout())?.is_some_and(|s| s.netns != here) {
        // Another namespace's state: not ours to judge from here.
        return Ok("nothing to repair here (the pin root belongs to another network namespace)".into());
    }
    if let Some(mut cur) = steps::open_current(root, &mut done)? {
        done.extend(repair(&mut cur)?);
        if steps::remove_if_unused(cur)? {
            done.push("nothing attached: shared objects removed".into());
        }
    }
    if done.is_empty() {
        done.push("nothing to repair".into());
    }
    Ok(done.join("\n"))
}
