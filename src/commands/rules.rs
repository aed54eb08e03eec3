//! Decisions of the commands, as plain functions of what was read: which
//! mode to attach in, whether a port or a namespace conflicts. No I/O here.
use anyhow::{bail, Result};

use crate::kernel::hook::NoTcx;
use crate::model::{Mode, PortMatch};
use crate::state::registry::Registry;

/// The mode for an uplink's writer: the one it runs in (an uplink keeps the
/// mode it was first attached in), else the one asked for, else TCX where
/// the kernel has it and tc where not.
pub fn writer_mode(
    asked: Option<Mode>,
    live: Option<Mode>,
    tcx_available: bool,
    uplink: &str,
) -> Result<Mode> {
    match (live, asked) {
        (Some(live), Some(asked)) if live != asked => bail!(
            "uplink {uplink} is attached in {} mode; detach its tunnels before using --mode {}",
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

/// Refuses a port another tunnel of this uplink already uses, unless that
/// tunnel's device is gone (`present` tells: name and ifindex -> exists).
pub fn claim_port(
    registry: &Registry,
    tunnel: &str,
    ifindex: u32,
    ports: PortMatch,
    present: impl Fn(&str, u32) -> bool,
) -> Result<()> {
    let PortMatch::Port(port) = ports else {
        return Ok(());
    };
    match registry.port_owner(port) {
        Some((owner, cfg)) if owner != ifindex && present(&cfg.name, owner) => bail!(
            "{tunnel}: outer port {port} is already used by tunnel {} on this uplink",
            cfg.name
        ),
        _ => Ok(()),
    }
}

/// Refuses to act on an uplink that was attached from another network
/// namespace: its names and ifindexes mean other devices there.
pub fn check_netns(registry: &Registry, uplink: &str, netns: u32) -> Result<()> {
    match registry.uplink() {
        Some((_, cfg)) if cfg.netns != netns => bail!(
            "uplink {uplink} under this pin root belongs to another network namespace \
             (inode {}); use a separate --pin-root per namespace",
            cfg.netns
        ),
        _ => Ok(()),
    }
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
    use crate::model::{IfaceCfg, Role};

    fn tunnel(name: &str, port: u16) -> IfaceCfg {
        IfaceCfg {
            role: Role::Tunnel,
            name: name.into(),
            ethernet: false,
            mode: Mode::Tc,
            ports: Some(PortMatch::Port(port)),
            netns: 7,
        }
    }

    fn uplink(netns: u32) -> IfaceCfg {
        IfaceCfg {
            role: Role::Uplink,
            name: "eth0".into(),
            ethernet: true,
            mode: Mode::Tc,
            ports: None,
            netns,
        }
    }

    #[test]
    fn writer_mode_keeps_the_live_mode_and_falls_back_to_tc() {
        let pick = |asked, live, tcx| writer_mode(asked, live, tcx, "eth0");
        assert_eq!(pick(None, None, true).unwrap(), Mode::Tcx);
        assert_eq!(pick(None, None, false).unwrap(), Mode::Tc);
        assert_eq!(pick(Some(Mode::Tc), None, true).unwrap(), Mode::Tc);
        assert_eq!(pick(None, Some(Mode::Tc), true).unwrap(), Mode::Tc);
        assert_eq!(pick(Some(Mode::Tc), Some(Mode::Tc), true).unwrap(), Mode::Tc);
        let e = pick(Some(Mode::Tcx), Some(Mode::Tc), true).unwrap_err();
        assert!(e.to_string().contains("attached in tc mode"), "{e}");
        let e = pick(Some(Mode::Tcx), None, false).unwrap_err();
        assert!(e.is::<NoTcx>(), "{e}");
    }

    #[test]
    fn a_port_belongs_to_one_live_tunnel() {
        let reg = Registry::from_entries(vec![(3, tunnel("wg0", 51820)), (4, tunnel("wg1", 51821))]);
        let everyone = |_: &str, _: u32| true;
        let nobody = |_: &str, _: u32| false;
        assert!(claim_port(&reg, "wg2", 5, PortMatch::Port(51820), everyone).is_err());
        assert!(
            claim_port(&reg, "wg0", 3, PortMatch::Port(51820), everyone).is_ok(),
            "its own"
        );
        assert!(
            claim_port(&reg, "wg2", 5, PortMatch::Port(51820), nobody).is_ok(),
            "owner gone"
        );
        assert!(claim_port(&reg, "wg2", 5, PortMatch::Port(51822), everyone).is_ok());
        assert!(claim_port(&reg, "wg2", 5, PortMatch::Any, everyone).is_ok());
    }

    #[test]
    fn an_uplink_of_another_namespace_is_refused() {
        let reg = Registry::from_entries(vec![(2, uplink(7))]);
        assert!(check_netns(&reg, "eth0", 7).is_ok());
        let e = check_netns(&reg, "eth0", 8).unwrap_err();
        assert!(e.to_string().contains("another network namespace"), "{e}");
        assert!(
            check_netns(&Registry::default(), "eth0", 8).is_ok(),
            "nothing recorded yet"
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
