//! Command line: clap's definitions, input validation, dispatch and
//! printing. The only layer that knows about arguments: it maps them onto
//! the model (`ModeArg` -> `Option<Mode>`) at this boundary.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::commands::{attach, check, detach, reconcile, status, upgrade};
use crate::kernel::{bpf, iface, netns, privileges};

use crate::state::pin_root::{self, PinRoot};
use crate::testhooks::journal;

pub mod args;
pub mod prometheus;
mod screen;
pub mod text;
mod watch;

pub use args::{AttachArgs, CheckArgs, DetachArgs, ModeArg, ReflectArg, StatusArgs};

#[derive(Parser, Debug)]
#[command(
    name = "pdscp",
    version,
    about = "Keep DSCP (QoS) marks alive across WireGuard tunnels",
    long_about = "Keep DSCP (QoS) marks alive across WireGuard tunnels.\n\n\
        A reader program on each tunnel's egress remembers the inner packet's DSCP by flow \
        hash; a writer program on each uplink's egress copies it onto the outer packet, on \
        whichever attached uplink it leaves by. Programs and maps are pinned in bpffs under \
        <PIN_ROOT>, so tunnels can be attached and detached one at a time.\n\n\
        Privacy: copying marks to the outer header shows observers on the path which \
        traffic classes the tunnel carries."
)]
pub struct Cli {
    /// bpffs directory that holds pdscp's state (docs/state.md)
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
    /// Start marking a tunnel's packets on its uplinks (a no-op if already attached)
    Attach(AttachArgs),
    /// Stop marking a tunnel (succeeds if it is not attached; works after the device is gone)
    Detach(DetachArgs),
    /// Show uplinks, tunnels, attachments and counters
    Status(StatusArgs),
    /// Say why a tunnel's marks do or do not arrive: watch it for a few
    /// seconds, each line a verdict with its evidence (exit 0 only when marks flow)
    Check(CheckArgs),
    /// Repair state: release tunnels whose device is gone or was recreated,
    /// finish or undo interrupted commands, re-attach to recreated uplinks
    Gc,
    /// Bring state an older pdscp made up to this version, in place
    /// (attach, detach and gc do it too, before anything else)
    Upgrade,
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

/// A usage error as one line (hooks log errors to syslog); exit code 2.
pub fn usage_error_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_string()
}

/// Runs a parsed command line; `check` fails (exit 1) when marks do not flow.
pub fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Generate(what) = &cli.command {
        generate(what)?;
        return Ok(ExitCode::SUCCESS);
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
            // Devices first: a refused attach leaves no trace, not even a pin root.
            let plan = attach::plan(args.request())?;
            let root = PinRoot::open(&cli.pin_root, true)?;
            print_lines(&attach::attach(&root, &plan)?);
            journal(&format!("attach {}", args.tunnel));
        }
        Command::Detach(args) => {
            let Some(root) = PinRoot::open_existing(&cli.pin_root, true)? else {
                println!("{}: not attached", args.tunnel.as_deref().unwrap_or("nothing"));
                return Ok(ExitCode::SUCCESS);
            };
            match &args.tunnel {
                Some(tunnel) => {
                    print_lines(&detach::detach(&root, tunnel, &args.uplinks)?);
                    journal(&format!("detach {tunnel}"));
                }
                None => print_lines(&detach::detach_all(&root)?),
            }
        }
        Command::Gc => {
            if let Some(root) = PinRoot::open_existing(&cli.pin_root, true)? {
                println!("{}", reconcile::gc(&root)?);
            }
        }
        Command::Upgrade => {
            let done = match PinRoot::open_existing(&cli.pin_root, true)? {
                Some(root) => upgrade::upgrade(&root)?,
                None => Vec::new(),
            };
            if done.is_empty() {
                println!("nothing to upgrade");
            }
            print_lines(&done);
        }
        Command::Status(StatusArgs {
            watch: Some(every), ..
        }) => watch::watch(&cli.pin_root, *every)?,
        Command::Status(args) => {
            let report = match PinRoot::open_existing(&cli.pin_root, false)? {
                Some(root) => status::collect(&root)?,
                None => status::Report::empty(&cli.pin_root),
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if args.prometheus {
                print!("{}", prometheus::prometheus(&report));
            } else {
                print!("{}", text::text(&report));
            }
        }
        Command::Check(args) => {
            let root = PinRoot::open_existing(&cli.pin_root, false)?;
            let request = check::CheckRequest {
                tunnel: args.tunnel.clone(),
                window: Duration::from_secs_f64(args.seconds),
                probe: args.probe,
            };
            let diagnosis = check::check(root.as_ref(), &request)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&diagnosis)?);
            } else {
                print!("{}", text::check_text(&diagnosis));
            }
            if !diagnosis.flowing {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Generate(_) => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_lines(lines: &[String]) {
    for line in lines {
        println!("{line}");
    }
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
        Command::Attach(a) => a.validate(),
        Command::Detach(d) => d.validate(),
        Command::Check(c) => iface::validate_name(&c.tunnel),
        Command::Status(_) | Command::Gc | Command::Upgrade | Command::Generate(_) => Ok(()),
    }
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
        assert_eq!(
            (a.tunnel.as_str(), a.uplinks.as_slice()),
            ("wg0", &["eth0".to_string()][..])
        );
        assert_eq!(a.port, Some(51820));
        assert_eq!(a.mode, ModeArg::Tc);
        assert_eq!(a.map_size, 16384);
        assert!(a.request().policy.is_copy());
        assert!(!a.request().reflection.is_on());
    }

    #[test]
    fn attach_takes_several_uplinks_and_a_policy() {
        let cli = parse(&[
            "attach",
            "wg0",
            "--uplink",
            "wan",
            "--uplink",
            "wwan",
            "--dscp-map",
            "diffserv4",
            "--handshake-dscp",
            "cs1",
            "--reflect",
            "both",
            "--reflect-allow",
            "ef,af41",
        ])
        .unwrap();
        let Command::Attach(a) = cli.command else {
            panic!("not attach")
        };
        let r = a.request();
        assert_eq!(r.uplinks, ["wan", "wwan"]);
        assert_eq!((r.policy.map[34], r.policy.handshake), (34, Some(8)));
        assert!(r.reflection.out && r.reflection.into);
        assert_eq!(r.reflection.allow, (1 << 46) | (1 << 34));
        for bad in [
            &["attach", "wg0", "--dscp-map", "46=99"][..],
            &["attach", "wg0", "--fixed", "ef1"],
            &["attach", "wg0", "--reflect", "sideways"],
            &["detach"],
            &["detach", "wg0", "--all"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&["detach", "--all"]).is_ok());
    }

    #[test]
    fn check_takes_a_window_and_an_optional_probe_address() {
        let probe = |args: &[&str]| match parse(args).map(|c| c.command) {
            Ok(Command::Check(c)) => Ok((c.seconds, c.probe)),
            Ok(_) => panic!("not check"),
            Err(e) => Err(e),
        };
        assert_eq!(probe(&["check", "wg0"]).unwrap(), (5.0, None));
        assert_eq!(probe(&["check", "wg0", "--probe"]).unwrap().1, Some(None));
        let to = "10.0.0.2".parse().ok();
        assert_eq!(
            probe(&["check", "wg0", "--probe=10.0.0.2", "--seconds", "2"]).unwrap(),
            (2.0, Some(to))
        );
        for bad in [
            &["check"][..],
            &["check", "wg0", "--seconds", "0"],
            &["check", "wg0", "--probe=x"],
        ] {
            assert!(probe(bad).is_err(), "{bad:?}");
        }
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
