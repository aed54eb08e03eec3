//! Decisions of the commands, as plain functions of what was read: which
//! mode to attach in, whether a port, a namespace or a nesting conflicts. No
//! I/O here.
use std::path::Path;

use anyhow::{bail, Result};

use crate::kernel::hook::NoTcx;
use crate::model::{Mode, PortMatch};
use crate::state::registry::Registry;

/// The mode for a hook: the one it runs in (a device keeps the mode it was
/// first attached in), else the one asked for, else TCX where the kernel has
/// it and tc where not. `what` names the device ("uplink eth0").
pub fn choose_mode(asked: Option<Mode>, live: Option<Mode>, tcx_available: bool, what: &str) -> Result<Mode> {
    match (live, asked) {
        (Some(live), Some(asked)) if live != asked => bail!(
            "{what} is attached in {} mode; detach it before using --mode {}",
            live.name(),
            asked.name()
        ),
        (Some(live), _) => Ok(live),
        (None, Some(Mode::Tcx)) if !tcx_available => Err(NoTcx.into()),
        (None, Some(asked)) => Ok(asked),
        (None, None) if tcx_available => Ok(Mode::Tcx),
        (None, None) => Ok(Mode::Tc),
    }
}

/// Refuses a port another tunnel already uses, unless that tunnel's device
/// is gone (`present` tells: name and ifindex -> exists).
pub fn claim_port(
    registry: &Registry,
    tunnel: &str,
    ports: PortMatch,
    present: impl Fn(&str, u32) -> bool,
) -> Result<()> {
    let PortMatch::Port(port) = ports else {
        return Ok(());
    };
    match registry.port_owner(port) {
        Some((_, rec)) if rec.name != tunnel && present(&rec.name, rec.ifindex) => bail!(
            "{tunnel}: outer port {port} is already used by tunnel {}",
            rec.name
        ),
        _ => Ok(()),
    }
}

/// Refuses to act on a pin root that serves another network namespace: its
/// names and ifindexes mean other devices there.
pub fn check_netns(root: &Path, recorded: u32, here: u32) -> Result<()> {
    if recorded != here {
        bail!(
            "pin root {} belongs to another network namespace (inode {recorded}); use a separate \
             --pin-root per namespace",
            root.display()
        );
    }
    Ok(())
}

/// A device that is both a tunnel (its reader) and an uplink (its writer,
/// for a tunnel inside it) needs the writer to run first. TCX runs before
/// tc, so a reader in tcx mode and a writer in tc mode on one device would
/// read the DSCP before it is written: refuse that mix.
pub fn check_mode_order(device: &str, reader: Mode, writer: Mode) -> Result<()> {
    if reader == Mode::Tcx && writer == Mode::Tc {
        bail!(
            "{device} would run pdscp's reader in tcx mode and its writer in tc mode, so the reader \
             would run first and miss the mark; attach both with the same --mode"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Policy, Reflection, TunnelRecord};

    fn tunnel(name: &str, port: u16) -> TunnelRecord {
        TunnelRecord {
            name: name.into(),
            ifindex: u32::from(port),
            ethernet: false,
            ports: PortMatch::Port(port),
            reader: Some(Mode::Tc),
            ingress: None,
            policy: Policy::copy(),
            reflection: Reflection::default(),
            links: Default::default(),
        }
    }

    #[test]
    fn modes_keep_the_live_one_and_fall_back_to_tc() {
        let pick = |asked, live, tcx| choose_mode(asked, live, tcx, "uplink eth0");
        assert_eq!(pick(None, None, true).unwrap(), Mode::Tcx);
        assert_eq!(pick(None, None, false).unwrap(), Mode::Tc);
        assert_eq!(pick(Some(Mode::Tc), None, true).unwrap(), Mode::Tc);
        assert_eq!(pick(None, Some(Mode::Tc), true).unwrap(), Mode::Tc);
        assert_eq!(pick(Some(Mode::Tc), Some(Mode::Tc), true).unwrap(), Mode::Tc);
        let e = pick(Some(Mode::Tcx), Some(Mode::Tc), true).unwrap_err();
        assert!(
            e.to_string().contains("uplink eth0 is attached in tc mode"),
            "{e}"
        );
        let e = pick(Some(Mode::Tcx), None, false).unwrap_err();
        assert!(e.is::<NoTcx>(), "{e}");
    }

    #[test]
    fn a_port_belongs_to_one_live_tunnel() {
        let reg = Registry::from_records(vec![(0, tunnel("wg0", 51820)), (1, tunnel("wg1", 51821))], vec![]);
        let everyone = |_: &str, _: u32| true;
        let nobody = |_: &str, _: u32| false;
        assert!(claim_port(&reg, "wg2", PortMatch::Port(51820), everyone).is_err());
        assert!(
            claim_port(&reg, "wg0", PortMatch::Port(51820), everyone).is_ok(),
            "its own"
        );
        assert!(
            claim_port(&reg, "wg2", PortMatch::Port(51820), nobody).is_ok(),
            "owner gone"
        );
        assert!(claim_port(&reg, "wg2", PortMatch::Port(51822), everyone).is_ok());
        assert!(claim_port(&reg, "wg2", PortMatch::Any, everyone).is_ok());
    }

    #[test]
    fn a_pin_root_of_another_namespace_is_refused() {
        assert!(check_netns(Path::new("/sys/fs/bpf/p"), 7, 7).is_ok());
        let e = check_netns(Path::new("/sys/fs/bpf/p"), 7, 8).unwrap_err();
        assert!(
            e.to_string().contains("belongs to another network namespace"),
            "{e}"
        );
    }

    #[test]
    fn a_tcx_reader_with_a_tc_writer_on_one_device_is_refused() {
        assert!(check_mode_order("wg0", Mode::Tcx, Mode::Tc).is_err());
        for (r, w) in [
            (Mode::Tc, Mode::Tc),
            (Mode::Tcx, Mode::Tcx),
            (Mode::Tc, Mode::Tcx),
        ] {
            assert!(check_mode_order("wg0", r, w).is_ok(), "{r:?} {w:?}");
        }
    }
}
