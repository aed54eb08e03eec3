//! WireGuard in the test bed: keys, devices in `a` and `b`, the handshake.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::sync::OnceLock;

use super::*;

/// A WireGuard key pair (base64, as `wg` prints them).
#[derive(Clone, Debug)]
pub(super) struct Key {
    pub(super) private: String,
    pub(super) public: String,
}

impl Key {
    /// Key pair `n` of a pool made once per test process by `wg genkey` and
    /// `wg pubkey` (every process spawn costs under QEMU's TCG). Tunnels in
    /// one bed take different pairs; beds do not see each other, so they
    /// may reuse them.
    pub(super) fn pool(n: usize) -> Key {
        static POOL: OnceLock<Vec<Key>> = OnceLock::new();
        let pool = POOL.get_or_init(|| {
            let script = format!(
                "for i in $(seq {KEY_POOL}); do k=$(wg genkey); echo \"$k $(echo \"$k\" | wg pubkey)\"; done"
            );
            let out = Command::new("sh")
                .args(["-c", &script])
                .output()
                .unwrap_or_else(|e| panic!("spawning sh: {e}"));
            let text = String::from_utf8_lossy(&out.stdout);
            let keys: Vec<Key> = text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(private, public)| Key {
                    private: private.to_owned(),
                    public: public.to_owned(),
                })
                .collect();
            assert!(
                out.status.success() && keys.len() == KEY_POOL && keys.iter().all(|k| k.public.len() == 44),
                "wg genkey/pubkey (install wireguard-tools): {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            keys
        });
        pool[n].clone()
    }
}

/// Key pairs in the pool: two per tunnel, tunnel indexes 1..=4.
const KEY_POOL: usize = 8;

/// One WireGuard tunnel between `a` and `b` (one peer on each side).
#[derive(Clone, Debug)]
pub(super) struct Wg {
    pub(super) name: String,
    /// Listen ports: `a`'s is the outer source port of what pdscp marks.
    pub(super) port_a: u16,
    pub(super) port_b: u16,
    /// Endpoint addresses: the outer source and destination of `a`'s packets.
    pub(super) outer_a: IpAddr,
    pub(super) outer_b: IpAddr,
    pub(super) v4_a: Ipv4Addr,
    pub(super) v4_b: Ipv4Addr,
    pub(super) v6_a: Ipv6Addr,
    pub(super) v6_b: Ipv6Addr,
    pub(super) mtu: usize,
    pub(super) key_a: Key,
    pub(super) key_b: Key,
}

impl Wg {
    pub(super) fn b_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.v6_b.into()
        } else {
            self.v4_b.into()
        }
    }
}

/// A test bed on a kernel with WireGuard (see [`require_wireguard`]).
pub(super) fn wireguard_bed() -> TestBed {
    require_wireguard();
    TestBed::new()
}

/// Makes sure the kernel has WireGuard, with a clear message if not.
pub(super) fn require_wireguard() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let _ = Command::new("modprobe").arg("wireguard").output();
        let ns = Netns::new("wgcheck");
        let out = ns.try_sh("ip link add wgcheck type wireguard");
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    });
    if let Err(e) = result {
        panic!("this kernel has no WireGuard ({e}): run scripts/vm-tests.sh");
    }
}

/// One end of a tunnel: in namespace `a` or in `b`.
#[derive(Clone, Copy, Debug)]
pub(super) enum End {
    A,
    B,
}

impl Wg {
    /// Creates and configures the device at `end`: its listen port and key,
    /// the other end as the only peer (all addresses allowed), its inner
    /// addresses /24 and /64, up.
    pub(super) fn create(&self, bed: &TestBed, end: End) {
        let a = (
            &bed.a,
            self.port_a,
            &self.key_a,
            self.outer_a,
            self.v4_a,
            self.v6_a,
        );
        let b = (
            &bed.b,
            self.port_b,
            &self.key_b,
            self.outer_b,
            self.v4_b,
            self.v6_b,
        );
        let ((ns, port, key, _, v4, v6), (_, peer_port, peer, peer_outer, ..)) = match end {
            End::A => (a, b),
            End::B => (b, a),
        };
        let endpoint = SocketAddr::new(peer_outer, peer_port);
        let (name, mtu) = (&self.name, self.mtu);
        ns.sh(&format!(
            "set -e
             ip link add {name} mtu {mtu} type wireguard
             printf '%s\\n' '{private}' | wg set {name} listen-port {port} private-key /proc/self/fd/0 \
                peer {public} endpoint {endpoint} allowed-ips 0.0.0.0/0,::/0
             ip addr add {v4}/24 dev {name}
             ip addr add {v6}/64 dev {name} nodad
             ip link set {name} up",
            private = key.private,
            public = peer.public,
        ));
    }
}

/// Builds WireGuard device `name` in `a` and `b`: listen ports `ports`
/// (`a`'s, `b`'s), endpoints `outer` (where the outer packets go from and
/// to), inner addresses 198.19.`index`.1|2/24 and 2001:db8:`index`::1|2/64
/// (index >= 1), then completes the handshake so that captures see data
/// messages only.
pub(super) fn add_wg(
    bed: &TestBed,
    name: &str,
    index: u8,
    (port_a, port_b): (u16, u16),
    (outer_a, outer_b): (IpAddr, IpAddr),
    mtu: usize,
) -> Wg {
    assert!(
        (1..=KEY_POOL as u8 / 2).contains(&index),
        "index 0 would overlap the underlay 2001:db8::/64; the key pool has {KEY_POOL} pairs"
    );
    let wg = Wg {
        name: name.to_owned(),
        port_a,
        port_b,
        outer_a,
        outer_b,
        v4_a: Ipv4Addr::new(198, 19, index, 1),
        v4_b: Ipv4Addr::new(198, 19, index, 2),
        v6_a: Ipv6Addr::new(0x2001, 0xdb8, index.into(), 0, 0, 0, 0, 1),
        v6_b: Ipv6Addr::new(0x2001, 0xdb8, index.into(), 0, 0, 0, 0, 2),
        mtu,
        key_a: Key::pool(2 * usize::from(index) - 2),
        key_b: Key::pool(2 * usize::from(index) - 1),
    };
    wg.create(bed, End::A);
    wg.create(bed, End::B);
    handshake(bed, &wg);
    wg
}

/// The usual tunnel: over `up0`, IPv4 or IPv6 underlay, MTU 1420.
pub(super) fn add_wg_up0(
    bed: &TestBed,
    name: &str,
    index: u8,
    port_a: u16,
    port_b: u16,
    underlay: Underlay,
) -> Wg {
    let (a, b): (IpAddr, IpAddr) = match underlay {
        Underlay::V4 => (A_V4.into(), B_V4.into()),
        Underlay::V6 => (A_V6.into(), B_V6.into()),
    };
    add_wg(bed, name, index, (port_a, port_b), (a, b), 1420)
}

/// Pings through the tunnel until the handshake is done (TCG is slow).
pub(super) fn handshake(bed: &TestBed, wg: &Wg) {
    for _ in 0..10 {
        if bed
            .a
            .try_sh(&format!("ping -4 -n -q -c 1 -W 2 {}", wg.v4_b))
            .status
            .success()
        {
            return;
        }
    }
    panic!(
        "{}: no WireGuard handshake between a and b:\n{}",
        wg.name,
        bed.a.sh(&format!("wg show {}", wg.name))
    );
}
