//! A second uplink (`up1`) beside up0, and tunnels between the loopbacks of
//! a and b, bound to no device: the route to b's end decides which uplink
//! they leave by (multi-WAN failover, uplinks found from routes).

use std::net::Ipv4Addr;

use super::bed::{TestBed, Tunnel, TunnelSpec, A_V4, B_V4, UPLINK};

pub const UP1: &str = "up1";
pub const UP1_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const UP1_B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The loopback tunnels' ends.
pub const LO_A: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 1);
pub const LO_B: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 2);

impl TestBed {
    /// Adds uplink up1 between a and b (198.18.1.1/24 and .2).
    pub fn add_up1(&self) {
        self.add_veth(UP1, UP1_A, UP1_B, 9);
    }

    /// Gives a and b the loopback addresses the tunnels of
    /// [`TestBed::loopback_tunnel`] run between, routed over up0.
    pub fn loopback_ends(&self) {
        self.a.sh(&format!(
            "ip addr add {LO_A}/32 dev lo && ip route add {LO_B}/32 via {B_V4} dev {UPLINK}"
        ));
        self.b.sh(&format!(
            "ip addr add {LO_B}/32 dev lo && ip route add {LO_A}/32 via {A_V4} dev {UPLINK}"
        ));
    }

    /// A VXLAN tunnel (outer source port `port`) between the loopbacks.
    pub fn loopback_tunnel(&self, name: &str, vni: u32, port: u16, inner: u8) -> Tunnel {
        let spec = TunnelSpec {
            name,
            vni,
            srcport: port,
            lower: None,
            a_ip: LO_A,
            b_ip: LO_B,
            inner,
        };
        self.add_tunnel(&spec, false)
    }

    /// Moves a's route to b's end of the loopback tunnels onto `uplink`.
    pub fn route_via(&self, uplink: &str) {
        let gw = if uplink == UPLINK { B_V4 } else { UP1_B };
        self.a
            .sh(&format!("ip route replace {LO_B}/32 via {gw} dev {uplink}"));
    }
}
