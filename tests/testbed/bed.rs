//! The bed: namespace `a` (pdscp's router) and `b` (the far end) joined by
//! the veth uplink `up0`, and VXLAN tunnels between them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Output;

use super::ethtool::set_features_off;
use super::namespaces::{unique, Netns};
use super::pdscp::{ensure_bpffs, pdscp};

/// Name of the veth uplink in both namespaces.
pub const UPLINK: &str = "up0";
/// Underlay addresses of `a` and `b` on [`UPLINK`].
pub const A_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const B_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const A_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const B_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// Fixed MACs, so neighbour entries can be static (see [`TestBed::new`]).
const A_MAC: &str = "02:00:00:00:00:01";
const B_MAC: &str = "02:00:00:00:00:02";
/// Outer UDP destination port of every tunnel (the VNI tells tunnels apart).
pub const VXLAN_PORT: u16 = 4789;

/// Address family of a tunnel's outer (underlay) header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Underlay {
    V4,
    V6,
}

/// Namespace `a` (pdscp's router) and `b` (far end), joined by `up0`.
pub struct TestBed {
    pub a: Netns,
    pub b: Netns,
    /// Unique bpffs directory for pdscp's pins; removed on drop.
    pub pin_root: PathBuf,
}

impl TestBed {
    /// Builds the two namespaces and the uplink:
    /// a `up0` 198.18.0.1/24 2001:db8::1/64 <-> b `up0` 198.18.0.2/24 2001:db8::2/64.
    ///
    /// Neighbour entries are static (here and for tunnels), so no ARP/ND
    /// precedes the first packet of a flow and packet counts are exact
    /// without a warm-up ping.
    ///
    /// UDP-tunnel segmentation offload is off on both `up0`: a TCP super-packet
    /// then still crosses the tunnel device and the uplink's tc egress hook
    /// whole, and is cut into MTU-sized frames after it (in
    /// `validate_xmit_skb`), as on a NIC without tunnel TSO. With the veth
    /// defaults, 64 KB frames would reach `b`. Plain TSO/GSO stay on: they do
    /// not matter for tunnel traffic.
    pub fn new() -> TestBed {
        let a = Netns::new("a");
        let b = Netns::new("b");
        a.sh(&format!(
            "ip link add {UPLINK} type veth peer name {UPLINK} netns {}",
            b.name
        ));
        for (ns, mac, v4, v6, peer_mac, peer_v4, peer_v6) in [
            (&a, A_MAC, A_V4, A_V6, B_MAC, B_V4, B_V6),
            (&b, B_MAC, B_V4, B_V6, A_MAC, A_V4, A_V6),
        ] {
            ns.sh(&format!(
                "set -e
                 ip link set {UPLINK} address {mac}
                 ip addr add {v4}/24 dev {UPLINK}
                 ip addr add {v6}/64 dev {UPLINK} nodad
                 ip neigh replace {peer_v4} lladdr {peer_mac} dev {UPLINK} nud permanent
                 ip neigh replace {peer_v6} lladdr {peer_mac} dev {UPLINK} nud permanent
                 ip link set {UPLINK} up"
            ));
            set_features_off(
                ns,
                UPLINK,
                &["tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation"],
            );
        }
        TestBed {
            a,
            b,
            pin_root: PathBuf::from(format!("/sys/fs/bpf/pdscp-test-{}", unique("pins"))),
        }
    }

    /// Creates VXLAN device `name` in both namespaces: VNI `vni`, outer UDP
    /// source port fixed at `srcport` (WireGuard's listen port), destination
    /// port [`VXLAN_PORT`], remote = the other side's underlay address, MTU
    /// derived from `up0` (1450 over IPv4, 1430 over IPv6).
    ///
    /// Inner addresses: 198.19.`inner_index`.1/24 and
    /// 2001:db8:`inner_index`::1/64 in `a`, `.2` / `::2` in `b` (the third
    /// IPv6 group is `inner_index`, so it must be >= 1 to stay off the
    /// underlay's 2001:db8::/64).
    ///
    /// TOS is left at its default 0 (not `inherit`): outer DSCP 0, as with
    /// WireGuard; the kernel still copies the inner ECN bits outwards.
    pub fn add_vxlan(
        &self,
        name: &str,
        vni: u32,
        srcport: u16,
        underlay: Underlay,
        inner_index: u8,
    ) -> Tunnel {
        assert!(
            inner_index >= 1,
            "inner_index 0 would overlap the underlay 2001:db8::/64"
        );
        let srcport_end = srcport.checked_add(1).expect("srcport must be < 65535");
        let i = inner_index;
        let t = Tunnel {
            name: name.to_owned(),
            vni,
            srcport,
            dstport: VXLAN_PORT,
            underlay,
            inner_v4_a: Ipv4Addr::new(198, 19, i, 1),
            inner_v4_b: Ipv4Addr::new(198, 19, i, 2),
            inner_v6_a: Ipv6Addr::new(0x2001, 0xdb8, i.into(), 0, 0, 0, 0, 1),
            inner_v6_b: Ipv6Addr::new(0x2001, 0xdb8, i.into(), 0, 0, 0, 0, 2),
        };
        let (ua, ub): (IpAddr, IpAddr) = match underlay {
            Underlay::V4 => (A_V4.into(), B_V4.into()),
            Underlay::V6 => (A_V6.into(), B_V6.into()),
        };
        let mac_a = format!("02:00:00:01:{i:02x}:01");
        let mac_b = format!("02:00:00:01:{i:02x}:02");
        for (ns, local, remote, mac, v4, v6, peer_mac, peer_v4, peer_v6) in [
            (
                &self.a,
                ua,
                ub,
                &mac_a,
                t.inner_v4_a,
                t.inner_v6_a,
                &mac_b,
                t.inner_v4_b,
                t.inner_v6_b,
            ),
            (
                &self.b,
                ub,
                ua,
                &mac_b,
                t.inner_v4_b,
                t.inner_v6_b,
                &mac_a,
                t.inner_v4_a,
                t.inner_v6_a,
            ),
        ] {
            ns.sh(&format!(
                "set -e
                 ip link add {name} address {mac} type vxlan id {vni} local {local} remote {remote} \
                    dev {UPLINK} dstport {VXLAN_PORT} srcport {srcport} {srcport_end} nolearning
                 ip addr add {v4}/24 dev {name}
                 ip addr add {v6}/64 dev {name} nodad
                 ip neigh replace {peer_v4} lladdr {peer_mac} dev {name} nud permanent
                 ip neigh replace {peer_v6} lladdr {peer_mac} dev {name} nud permanent
                 ip link set {name} up"
            ));
        }
        t
    }

    /// Runs pdscp against namespace `a` with this bed's pin root
    /// (see [`pdscp`]); mounts bpffs first if needed.
    pub fn pdscp(&self, args: &[&str]) -> Output {
        ensure_bpffs();
        pdscp(&self.a, &self.pin_root, args)
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        // Unpinning releases pdscp's programs; the namespaces go after this.
        if self.pin_root.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pin_root) {
                eprintln!("removing {}: {e}", self.pin_root.display());
            }
        }
    }
}

/// What [`TestBed::add_vxlan`] made.
#[derive(Clone, Debug)]
pub struct Tunnel {
    pub name: String,
    pub vni: u32,
    pub srcport: u16,
    pub dstport: u16,
    pub underlay: Underlay,
    pub inner_v4_a: Ipv4Addr,
    pub inner_v4_b: Ipv4Addr,
    pub inner_v6_a: Ipv6Addr,
    pub inner_v6_b: Ipv6Addr,
}

impl Tunnel {
    /// `b`'s inner address of the given family (`v6` false: IPv4).
    pub fn b_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.inner_v6_b.into()
        } else {
            self.inner_v4_b.into()
        }
    }

    /// `a`'s inner address of the given family.
    pub fn a_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.inner_v6_a.into()
        } else {
            self.inner_v4_a.into()
        }
    }
}
