//! The arguments of each command, checked before anything is touched, and
//! turned into the commands' own requests.
use anyhow::{bail, Result};
use clap::ValueEnum;

use crate::commands::attach::AttachRequest;
use crate::kernel::iface;
use crate::model::{Mode, Policy, PortMatch, Reflection};
use crate::policy;
use crate::state::objects::Sizes;

#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// Tunnel device (WireGuard, VXLAN, ...) whose inner DSCP is read
    pub tunnel: String,
    /// A device the tunnel's outer packets may leave by; repeat for several
    /// (mwan3 members). Default: every uplink its peers are routed over now,
    /// found with WireGuard's fwmark
    #[arg(long = "uplink", value_name = "UPLINK")]
    pub uplinks: Vec<String>,
    /// The tunnel's fixed outer UDP source port (default for WireGuard: its listen port)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "any_port")]
    pub port: Option<u16>,
    /// Match outer packets on the flow hash alone, whatever their UDP source port
    #[arg(long)]
    pub any_port: bool,
    /// How to attach: tcx links (kernel 6.6+), tc clsact filters, or auto (tcx, else tc)
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,
    /// Flow map size, used when pdscp's shared state is first created
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(16..=1 << 24))]
    pub map_size: u32,
    /// Reflection map size, used when pdscp's shared state is first created
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(16..=1 << 24))]
    pub reflect_size: u32,
    /// How inner marks become outer marks: copy, diffserv4, diffserv3,
    /// precedence, wash, or a table such as 46=46,34=34,10=8,*=0
    #[arg(long, value_name = "SPEC", default_value = "copy", value_parser = parse_map)]
    pub dscp_map: [u8; 64],
    /// Every outer packet from the tunnel's port gets this DSCP (no reader;
    /// also for userspace WireGuard on a TUN device)
    #[arg(long, value_name = "DSCP", value_parser = parse_dscp)]
    pub fixed: Option<u8>,
    /// WireGuard handshake packets get this outer DSCP instead of the kernel's AF41
    #[arg(long, value_name = "DSCP", value_parser = parse_dscp)]
    pub handshake_dscp: Option<u8>,
    /// No mark on the wire: set the priority that puts the packet in the CAKE
    /// tin its inner class deserves (needs CAKE as the uplink's root qdisc)
    #[arg(long)]
    pub priority_only: bool,
    /// Return traffic gets its flow's mark: out (concentrator: flows arriving
    /// from the tunnel teach it), in (client: flows leaving teach it), both, off
    #[arg(long, value_enum, default_value_t = ReflectArg::Off)]
    pub reflect: ReflectArg,
    /// A reflected mark replaces a packet's own non-zero mark
    #[arg(long)]
    pub reflect_override: bool,
    /// DSCPs reflection may copy (numbers or names, or all); default every class but cs6, cs7
    #[arg(long, value_name = "LIST", value_parser = parse_allow)]
    pub reflect_allow: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct DetachArgs {
    /// Tunnel device to stop marking
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub tunnel: Option<String>,
    /// Only from this uplink (repeat for several); the last one takes the tunnel
    #[arg(long = "uplink", value_name = "UPLINK")]
    pub uplinks: Vec<String>,
    /// Every tunnel of the pin root, then its uplinks and shared state
    #[arg(long, conflicts_with = "uplinks")]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Machine-readable output
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// node_exporter textfile-collector format
    #[arg(long)]
    pub prometheus: bool,
    /// A live view, redrawn every SECONDS (default 1): packets and bytes per
    /// second per tunnel and DSCP class, marked and missed; q or Ctrl-C quits
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1",
          value_parser = parse_interval, conflicts_with_all = ["json", "prometheus"])]
    pub watch: Option<f64>,
}

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.2..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds from 0.2 to 3600")),
    }
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Tunnel device to check
    pub tunnel: String,
    /// How long to watch the counters and the uplinks
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = parse_seconds)]
    pub seconds: f64,
    /// Send a short EF-marked flow into the tunnel (to ADDRESS, or to an
    /// address of its first WireGuard peer or a neighbour) to test without live traffic
    #[arg(long, value_name = "ADDRESS", num_args = 0..=1, require_equals = true)]
    pub probe: Option<Option<std::net::IpAddr>>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.5..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds from 0.5 to 3600")),
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    Auto,
    Tcx,
    Tc,
}

impl ModeArg {
    /// The mode asked for; None leaves the choice to pdscp.
    pub fn asked(self) -> Option<Mode> {
        match self {
            ModeArg::Auto => None,
            ModeArg::Tcx => Some(Mode::Tcx),
            ModeArg::Tc => Some(Mode::Tc),
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReflectArg {
    Off,
    Out,
    In,
    Both,
}

fn parse_map(spec: &str) -> Result<[u8; 64], String> {
    policy::parse_dscp_map(spec).map_err(|e| format!("{e:#}"))
}

fn parse_dscp(text: &str) -> Result<u8, String> {
    policy::parse_dscp(text).map_err(|e| format!("{e:#}"))
}

fn parse_allow(list: &str) -> Result<u64, String> {
    policy::parse_allow_list(list).map_err(|e| format!("{e:#}"))
}

impl AttachArgs {
    /// Refuses names no device can have, before anything is looked up.
    pub fn validate(&self) -> Result<()> {
        iface::validate_name(&self.tunnel)?;
        for uplink in &self.uplinks {
            iface::validate_name(uplink)?;
            if *uplink == self.tunnel {
                bail!(
                    "attach {}: the uplink must be another device than the tunnel",
                    self.tunnel
                );
            }
        }
        Ok(())
    }

    pub fn request(&self) -> AttachRequest {
        AttachRequest {
            tunnel: self.tunnel.clone(),
            uplinks: self.uplinks.clone(),
            ports: match (self.port, self.any_port) {
                (Some(p), _) => Some(PortMatch::Port(p)),
                (None, true) => Some(PortMatch::Any),
                // WireGuard: read from the device.
                (None, false) => None,
            },
            mode: self.mode.asked(),
            sizes: Sizes {
                flows: self.map_size,
                reflect: self.reflect_size,
            },
            policy: Policy {
                map: self.dscp_map,
                fixed: self.fixed,
                handshake: self.handshake_dscp,
                priority_only: self.priority_only,
            },
            reflection: Reflection {
                out: matches!(self.reflect, ReflectArg::Out | ReflectArg::Both),
                into: matches!(self.reflect, ReflectArg::In | ReflectArg::Both),
                override_own: self.reflect_override,
                allow: self.reflect_allow.unwrap_or(policy::DEFAULT_REFLECT_ALLOW),
            },
        }
    }
}

impl DetachArgs {
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.tunnel {
            iface::validate_name(t)?;
        }
        for u in &self.uplinks {
            iface::validate_name(u)?;
        }
        Ok(())
    }
}
