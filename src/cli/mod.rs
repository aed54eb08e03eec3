//! Command line: clap's definitions, input validation, dispatch and
//! printing. The only layer that knows about arguments: it maps them onto
//! the model (`ModeArg` -> `Option<Mode>`) at this boundary.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::commands::{attach, detach, reconcile, status};
use crate::kernel::{bpf, iface, netns, privileges};
use crate::model::{Mode, PortMatch};
use crate::state::pin_root::{self, PinRoot};
use crate::testhooks::journal;

pub mod render;

#[derive(Parser, Debug)]
#[command(
    name = "pdscp",
    version,
    about = "Keep DSCP (QoS) marks alive across WireGuard tunnels",
    long_about = "Keep DSCP (QoS) marks alive across WireGuard tunnels.\n\n\
        A reader program on each tunnel's egress remembers the inner packet's DSCP by flow \
        hash; a writer program on the uplink's egress copies it onto the outer packet. \
        Programs and maps are pinned in bpffs under <PIN_ROOT>/<UPLINK>/, so tunnels can be \
        attached and detached one at a time.\n\n\
        Privacy: copying marks to the outer header shows observers on the path which \
        traffic classes the tunnel carries."
)]
pub struct Cli {
    /// bpffs directory that holds pdscp's state, one sub-directory per uplink
    #[arg(long, global = true, env = "PDSCP_PIN_ROOT", default_value = pin_root::DEFAULT_PIN_ROOT)]
    pub pin_root: PathBuf,

    /// Run in the network namespace /run/netns/NAME (instead of `ip netns exec`, which hides bpffs)
    #[arg(long, global = true, value_name = "NAME")]
    pub netns: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start marking a tunnel's packets on an uplink (a no-op if already attached)
    Attach(AttachArgs),
    /// Stop marking a tunnel (succeeds if it is not attached; works after the device is gone)
    Detach(DetachArgs),
    /// Show uplinks, tunnels, attachments and counters
    Status(StatusArgs),
    /// Repair state: release tunnels whose device is gone or was recreated,
    /// finish or undo interrupted commands, re-attach to recreated uplinks
    Gc,
    /// Write the man page or shell completions to stdout (for packaging)
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

#[derive(Subcommand, Debug)]
pub enum Generate {
    /// pdscp(8) in roff
    Man,
    /// Completions for a shell
    Completions { shell: clap_complete::Shell },
}

#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// Tunnel device (WireGuard, VXLAN, ...) whose inner DSCP is read
    pub tunnel: String,
    /// Device the tunnel's outer packets leave by (default: found from the
    /// routes to the tunnel's peers, using WireGuard's fwmark)
    #[arg(long)]
    pub uplink: Option<String>,
    /// The tunnel's fixed outer UDP source port (default for WireGuard: its listen port)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "any_port")]
    pub port: Option<u16>,
    /// Match outer packets on the flow hash alone, whatever their UDP source port
    #[arg(long)]
    pub any_port: bool,
    /// How to attach: tcx links (kernel 6.6+), tc clsact filters, or auto (tcx, else tc)
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,
    /// Flow map size, used when the uplink's map is first created
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(16..=1 << 24))]
    pub map_size: u32,
}

#[derive(clap::Args, Debug)]
pub struct DetachArgs {
    /// Tunnel device to stop marking
    pub tunnel: String,
    /// Only look for the tunnel on this uplink
    #[arg(long)]
    pub uplink: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Machine-readable output
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// node_exporter textfile-collector format
    #[arg(long)]
    pub prometheus: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    Auto,
    Tcx,
    Tc,
}

impl ModeArg {
    /// The mode asked for; None leaves the choice to pdscp.
    fn asked(self) -> Option<Mode> {
        match self {
            ModeArg::Auto => None,
            ModeArg::Tcx => Some(Mode::Tcx),
            ModeArg::Tc => Some(Mode::Tc),
        }
    }
}

/// A usage error as one line (hooks log errors to syslog); exit code 2.
pub fn usage_error_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_string()
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Command::Generate(what) = &cli.command {
        return generate(what);
    }
    bpf::quiet_libbpf_unless_debugging();
    // Validate everything the user typed before touching any state.
    validate(&cli)?;
    privileges::check()?;
    if let Some(name) = &cli.netns {
        netns::enter(name)?;
    }
    match &cli.command {
        Command::Attach(args) => {
            let ports = match (args.port, args.any_port) {
                (Some(p), _) => Some(PortMatch::Port(p)),
                (None, true) => Some(PortMatch::Any),
                // WireGuard: read from the device.
                (None, false) => None,
            };
            // Devices first: a refused attach leaves no trace, not even a pin root.
            let plan = attach::plan(&args.tunnel, args.uplink.as_deref(), ports)?;
            let root = PinRoot::open(&cli.pin_root, true)?;
            let msg = attach::attach(&root, &plan, args.mode.asked(), args.map_size)?;
            println!("{msg}");
            journal(&format!("attach {}", args.tunnel));
        }
        Command::Detach(args) => {
            let Some(root) = PinRoot::open_existing(&cli.pin_root, true)? else {
                println!("{}: not attached", args.tunnel);
                return Ok(());
            };
            let msg = detach::detach(&root, &args.tunnel, args.uplink.as_deref())?;
            println!("{msg}");
            journal(&format!("detach {}", args.tunnel));
        }
        Command::Gc => {
            if let Some(root) = PinRoot::open_existing(&cli.pin_root, true)? {
                println!("{}", reconcile::gc(&root)?);
            }
        }
        Command::Status(args) => {
            let report = match PinRoot::open_existing(&cli.pin_root, false)? {
                Some(root) => status::collect(&root)?,
                None => status::Report::empty(&cli.pin_root),
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if args.prometheus {
                print!("{}", render::prometheus(&report));
            } else {
                print!("{}", render::text(&report));
            }
        }
        Command::Generate(_) => unreachable!("handled above"),
    }
    Ok(())
}

/// Man page and completions come from the same definitions as --help.
fn generate(what: &Generate) -> Result<()> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = std::io::stdout();
    match what {
        Generate::Man => clap_mangen::Man::new(cmd).section("8").render(&mut out)?,
        Generate::Completions { shell } => clap_complete::generate(*shell, &mut cmd, "pdscp", &mut out),
    }
    Ok(())
}

fn validate(cli: &Cli) -> Result<()> {
    pin_root::validate_pin_root(&cli.pin_root)?;
    if let Some(ns) = &cli.netns {
        netns::validate_name(ns)?;
    }
    match &cli.command {
        Command::Attach(a) => {
            iface::validate_name(&a.tunnel)?;
            if let Some(uplink) = &a.uplink {
                iface::validate_name(uplink)?;
                if a.tunnel == *uplink {
                    bail!(
                        "attach {}: the uplink must be another device than the tunnel",
                        a.tunnel
                    );
                }
            }
        }
        Command::Detach(d) => {
            iface::validate_name(&d.tunnel)?;
            if let Some(u) = &d.uplink {
                iface::validate_name(u)?;
            }
        }
        Command::Status(_) | Command::Gc | Command::Generate(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pdscp").chain(args.iter().copied()))
    }

    #[test]
    fn attach_parses_port_and_mode() {
        let cli = parse(&[
            "attach", "wg0", "--uplink", "eth0", "--port", "51820", "--mode", "tc",
        ])
        .unwrap();
        let Command::Attach(a) = cli.command else {
            panic!("not attach")
        };
        assert_eq!((a.tunnel.as_str(), a.uplink.as_deref()), ("wg0", Some("eth0")));
        assert_eq!(a.port, Some(51820));
        assert_eq!(a.mode, ModeArg::Tc);
        assert_eq!(a.map_size, 16384);
    }

    #[test]
    fn port_and_any_port_conflict() {
        assert!(parse(&["attach", "wg0", "--uplink", "eth0", "--port", "1", "--any-port"]).is_err());
    }

    #[test]
    fn port_zero_and_bad_mode_are_refused() {
        assert!(parse(&["attach", "wg0", "--uplink", "eth0", "--port", "0"]).is_err());
        assert!(parse(&["attach", "wg0", "--uplink", "eth0", "--port", "65536"]).is_err());
        assert!(parse(&["attach", "wg0", "--uplink", "eth0", "--mode", "xdp"]).is_err());
        assert!(parse(&["attach"]).is_err(), "a tunnel is required");
    }

    #[test]
    fn validation_refuses_bad_names_and_same_device() {
        for args in [
            &["attach", "wg0", "--uplink", "wg0", "--any-port"][..],
            &["attach", "../x", "--uplink", "eth0", "--any-port"],
            &["attach", "wg0", "--uplink", "", "--any-port"],
            &["detach", "a-name-longer-than-15"],
            &["detach", "wg0", "--uplink", ".."],
            &["--netns", "../../etc", "status"],
            &["--netns", "wg0\n", "status"],
            &["--pin-root", "/sys/fs/bpf/../x", "status"],
            &["--pin-root", "relative", "status"],
            &["--pin-root", "/sys/fs/bpf/a\nb", "status"],
        ] {
            let cli = parse(args).unwrap();
            assert!(validate(&cli).is_err(), "{args:?} should be refused");
        }
        let ok = parse(&[
            "--netns",
            "router",
            "attach",
            "wg0",
            "--uplink",
            "eth0.10",
            "--any-port",
        ])
        .unwrap();
        validate(&ok).unwrap();
    }

    #[test]
    fn generates_man_page_and_completions() {
        let cli = parse(&["generate", "completions", "bash"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Generate(Generate::Completions { .. })
        ));
        assert!(parse(&["generate", "man"]).is_ok());
        assert!(parse(&["generate", "completions", "nosh"]).is_err());
    }

    #[test]
    fn pin_root_defaults() {
        std::env::remove_var("PDSCP_PIN_ROOT");
        let cli = parse(&["status"]).unwrap();
        assert_eq!(cli.pin_root, PathBuf::from("/sys/fs/bpf/preserve-dscp"));
    }
}
