//! The bed: namespace `a` (pdscp's router) and `b` (the far end) joined by
//! the veth uplink `up0`, further uplinks beside it, and VXLAN tunnels
//! between them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::ethtool::set_features_off;
use super::namespaces::{unique, Netns};

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
/// Offloads turned off on every uplink (see [`TestBed::new`]).
const UDP_TUNNEL_SEGMENTATION: [&str; 2] = ["tx-udp_tnl-segmentation", "tx-udp_tnl-csum-segmentation"];

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

/// One side of a link: its MAC and addresses (IPv6 optional).
struct End {
    mac: String,
    v4: Ipv4Addr,
    v6: Option<Ipv6Addr>,
}

/// Shell lines that give `dev` its addresses (/24, /64), a static neighbour
/// entry for each of `peer`'s, and bring it up.
fn addresses_and_neighbours(dev: &str, me: &End, peer: &End) -> String {
    let mut lines = vec![format!("ip addr add {}/24 dev {dev}", me.v4)];
    lines.extend(me.v6.map(|v6| format!("ip addr add {v6}/64 dev {dev} nodad")));
    let peer_ips = [Some(IpAddr::from(peer.v4)), peer.v6.map(IpAddr::from)];
    for ip in peer_ips.into_iter().flatten() {
        lines.push(format!(
            "ip neigh replace {ip} lladdr {} dev {dev} nud permanent",
            peer.mac
        ));
    }
    lines.push(format!("ip link set {dev} up"));
    lines.join("\n")
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
        let bed = TestBed {
            a: Netns::new("a"),
            b: Netns::new("b"),
            pin_root: PathBuf::from(format!("/sys/fs/bpf/pdscp-test-{}", unique("pins"))),
        };
        let end = |mac: &str, v4, v6| End {
            mac: mac.to_owned(),
            v4,
            v6: Some(v6),
        };
        bed.link_veth(UPLINK, [end(A_MAC, A_V4, A_V6), end(B_MAC, B_V4, B_V6)]);
        bed
    }

    /// Another veth uplink `dev` between `a` and `b`, like `up0` but IPv4
    /// only: `a_ip`/24 and `b_ip`/24, MACs 02:00:00:02:`n`:01 and :02.
    pub fn add_veth(&self, dev: &str, a_ip: Ipv4Addr, b_ip: Ipv4Addr, n: u8) {
        let end = |side: u8, v4| End {
            mac: format!("02:00:00:02:{n:02x}:{side:02x}"),
            v4,
            v6: None,
        };
        self.link_veth(dev, [end(1, a_ip), end(2, b_ip)]);
    }

    /// A veth pair `dev` between `a` and `b` with static neighbours and
    /// UDP-tunnel segmentation off.
    fn link_veth(&self, dev: &str, ends: [End; 2]) {
        self.a.sh(&format!(
            "ip link add {dev} type veth peer name {dev} netns {}",
            self.b.name
        ));
        for (ns, me, peer) in [(&self.a, &ends[0], &ends[1]), (&self.b, &ends[1], &ends[0])] {
            ns.sh(&format!(
                "set -e\nip link set {dev} address {}\n{}",
                me.mac,
                addresses_and_neighbours(dev, me, peer)
            ));
            set_features_off(ns, dev, &UDP_TUNNEL_SEGMENTATION);
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
        let t = Tunnel::new(name, vni, srcport, underlay, inner_index);
        let ends: (IpAddr, IpAddr) = match underlay {
            Underlay::V4 => (A_V4.into(), B_V4.into()),
            Underlay::V6 => (A_V6.into(), B_V6.into()),
        };
        self.link_vxlan(&t, Some(UPLINK), ends, true, false);
        t
    }

    /// Creates the tunnel `s` in `a` (and in `b` unless `a_only`), like
    /// [`TestBed::add_vxlan`] but over any uplink, or routed. Only the inner
    /// IPv4 addresses are configured.
    pub fn add_tunnel(&self, s: &TunnelSpec, a_only: bool) -> Tunnel {
        let t = Tunnel::new(s.name, s.vni, s.srcport, Underlay::V4, s.inner);
        self.link_vxlan(&t, s.lower, (s.a_ip.into(), s.b_ip.into()), false, a_only);
        t
    }

    /// The VXLAN devices of `t` between underlay addresses `ends` (a's, b's),
    /// bound to `lower` if given; inner IPv6 addresses only if `v6`.
    fn link_vxlan(&self, t: &Tunnel, lower: Option<&str>, ends: (IpAddr, IpAddr), v6: bool, a_only: bool) {
        let i = t.inner_index;
        let end = |side: u8, v4, v6_addr| End {
            mac: format!("02:00:00:01:{i:02x}:{side:02x}"),
            v4,
            v6: v6.then_some(v6_addr),
        };
        let (a, b) = (
            end(1, t.inner_v4_a, t.inner_v6_a),
            end(2, t.inner_v4_b, t.inner_v6_b),
        );
        let sides = [
            (&self.a, ends.0, ends.1, &a, &b),
            (&self.b, ends.1, ends.0, &b, &a),
        ];
        let lower = lower.map(|d| format!(" dev {d}")).unwrap_or_default();
        let (name, vni, sp) = (&t.name, t.vni, t.srcport);
        let sp_end = sp.checked_add(1).expect("srcport must be < 65535");
        for (ns, local, remote, me, peer) in sides.into_iter().take(if a_only { 1 } else { 2 }) {
            ns.sh(&format!(
                "set -e\n\
                 ip link add {name} address {mac} type vxlan id {vni} local {local} remote {remote}{lower} \
                    dstport {VXLAN_PORT} srcport {sp} {sp_end} nolearning\n{}",
                addresses_and_neighbours(name, me, peer),
                mac = me.mac,
            ));
        }
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

/// A VXLAN tunnel with a fixed outer source port (WireGuard's stand-in), for
/// [`TestBed::add_tunnel`].
pub struct TunnelSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub srcport: u16,
    /// `dev LOWER`: bound to the uplink (and deleted with it); None: routed.
    pub lower: Option<&'a str>,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
    /// Inner subnet 198.19.`inner`.0/24 (unique per bed).
    pub inner: u8,
}

/// What [`TestBed::add_vxlan`] made.
#[derive(Clone, Debug)]
pub struct Tunnel {
    pub name: String,
    pub vni: u32,
    pub srcport: u16,
    pub dstport: u16,
    pub underlay: Underlay,
    /// The third byte of the inner addresses.
    pub inner_index: u8,
    pub inner_v4_a: Ipv4Addr,
    pub inner_v4_b: Ipv4Addr,
    pub inner_v6_a: Ipv6Addr,
    pub inner_v6_b: Ipv6Addr,
}

impl Tunnel {
    /// Inner addresses 198.19.`i`.1|2 and 2001:db8:`i`::1|2.
    fn new(name: &str, vni: u32, srcport: u16, underlay: Underlay, i: u8) -> Tunnel {
        Tunnel {
            name: name.to_owned(),
            vni,
            srcport,
            dstport: VXLAN_PORT,
            underlay,
            inner_index: i,
            inner_v4_a: Ipv4Addr::new(198, 19, i, 1),
            inner_v4_b: Ipv4Addr::new(198, 19, i, 2),
            inner_v6_a: Ipv6Addr::new(0x2001, 0xdb8, i.into(), 0, 0, 0, 0, 1),
            inner_v6_b: Ipv6Addr::new(0x2001, 0xdb8, i.into(), 0, 0, 0, 0, 2),
        }
    }

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
