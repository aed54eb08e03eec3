//! Upgrade in place (docs/state.md, Upgrade in place): an older pdscp's
//! state is brought to this pdscp's version by the first command that
//! changes state, with every hook swapped atomically to the new programs so
//! no packet passes a hook without one. Every step checks what is done
//! already, so an upgrade cut short is finished by the next command.
use anyhow::{bail, Context, Result};
use libbpf_rs::ProgramHandle;

use super::migrate;
use crate::kernel::hook::{self, tcx_link, Hook};
use crate::kernel::iface;
use crate::maps::{self};
use crate::model::{Mode, Program};
use crate::state::layout::Layout;
use crate::state::legacy::{self};
use crate::state::objects::{self, Objects};
use crate::state::pin_root::PinRoot;
use crate::state::registry::Registry;
use crate::state::version::{self, Standing};
use crate::testhooks::{crash_point, Step};

/// Upgrades the state if an older pdscp made it; refuses a newer one's.
/// Returns what it did (nothing if the state is current or absent).
pub fn upgrade(root: &PinRoot) -> Result<Vec<String>> {
    let layout = root.layout();
    let from = match version::standing(&layout)? {
        Standing::Empty | Standing::Current => return Ok(Vec::new()),
        Standing::Newer { by } => bail!("{}", newer_refusal(&by)),
        Standing::Older { from } => from,
    };
    let here = iface::current_netns()?;
    let mut notes = Vec::new();
    let legacy = legacy::uplinks(&root.path)?;
    if legacy.is_empty() {
        programs_only(&layout, here)?;
    } else {
        notes = migrate::from_layout1(&layout, &legacy, here)?;
    }
    let mine = version::describe(Some(&version::mine(here)));
    let mut out = vec![format!("upgraded the state from {from} to {mine}")];
    out.extend(notes);
    Ok(out)
}

/// The one line an older pdscp says when it meets newer state.
pub fn newer_refusal(by: &str) -> String {
    format!(
        "the state was made by {by}, newer than this pdscp {} (layout {}); use the newer pdscp \
         (nothing was changed)",
        env!("CARGO_PKG_VERSION"),
        maps::LAYOUT
    )
}

/// Same layout, new programs: load them beside the running ones with every
/// map reused, point every hook at them, let them take the pins' names,
/// then stamp.
fn programs_only(layout: &Layout, here: u32) -> Result<()> {
    let stamp = objects::read_stamp(layout)?.context("the stamp is gone")?;
    super::rules::check_netns(&layout.root, stamp.netns, here)?;
    let objects = Objects::open(layout)?;
    let next = objects.load_next_programs(layout)?;
    crash_point(Step::UpgradeLoaded);
    let program = |p: Program| {
        next.iter()
            .find(|(q, _)| *q == p)
            .map(|(_, h)| h)
            .expect("every program")
    };
    let registry = Registry::read(&objects)?;
    for (_, rec) in registry.uplinks() {
        retarget(
            layout.hook(Program::Writer, &rec.name, rec.ifindex),
            &rec.name,
            rec.ifindex,
            rec.mode,
            &objects,
            program(Program::Writer),
        )?;
    }
    crash_point(Step::UpgradeWritersMoved);
    for (_, rec) in registry.tunnels() {
        for (p, wanted) in [(Program::Reader, rec.reader), (Program::Ingress, rec.ingress)] {
            if let Some(mode) = wanted {
                retarget(
                    layout.hook(p, &rec.name, rec.ifindex),
                    &rec.name,
                    rec.ifindex,
                    mode,
                    &objects,
                    program(p),
                )?;
            }
        }
    }
    crash_point(Step::UpgradeReadersMoved);
    objects::promote_next_programs(layout)?;
    objects.write_stamp(&version::mine(stamp.netns))
}

/// Points a hook that runs pdscp's old program (or a program of an upgrade
/// cut short) at `new`; a hook that does not run at all is left for repair.
pub(super) fn retarget(
    hook: Hook,
    device: &str,
    ifindex: u32,
    mode: Mode,
    old: &Objects,
    new: &ProgramHandle,
) -> Result<()> {
    if !iface::is_present(device, ifindex) {
        return Ok(());
    }
    let running = match mode {
        Mode::Tcx => tcx_link(&hook.link_pin)?
            .filter(|l| l.ifindex == ifindex)
            .map(|l| l.prog_id),
        Mode::Tc => hook.tc_prog_id()?,
    };
    let ours = running.is_some_and(|id| {
        id == old.program(hook.program).id() || id == new.id() || hook::is_pdscp_program(id)
    });
    if ours {
        hook.ensure(mode, new)
            .with_context(|| format!("moving {device} to the new programs"))?;
    }
    Ok(())
}
