//! pdscp on the kernel's real WireGuard. This machine's kernel has none, so
//! every test here is ignored by a plain `cargo test`; scripts/vm-tests.sh
//! runs them with `--ignored` inside Debian's stock 6.1 (tc) and 6.12 (TCX)
//! kernels under QEMU. Needs root and wireguard-tools (`wg`).
//!
//! Each test builds WireGuard tunnels between the test bed's namespaces `a`
//! (pdscp's router) and `b` on top of the veth `up0`, attaches pdscp in `a`
//! and captures what crosses the wire. Outer packets are encrypted, so a
//! flow is told by what is visible outside: WireGuard data messages (type 4)
//! from `a`'s listen port, and their length. WireGuard pads the inner packet
//! to a multiple of 16, so a data message's UDP payload is
//! `32 + roundup16(inner IP length)`; each flow a test sends has its own
//! inner length. Keepalives (payload 32, no inner packet) are ignored.

mod testbed;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::Duration;

use serde_json::Value;
use testbed::*;

// ---------------------------------------------------------------------------
// WireGuard in the test bed
// ---------------------------------------------------------------------------

/// A WireGuard key pair (base64, as `wg` prints them).
#[derive(Clone, Debug)]
struct Key {
    private: String,
    public: String,
}

impl Key {
    /// Key pair `n` of a pool made once per test process by `wg genkey` and
    /// `wg pubkey` (every process spawn costs under QEMU's TCG). Tunnels in
    /// one bed take different pairs; beds do not see each other, so they
    /// may reuse them.
    fn pool(n: usize) -> Key {
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
struct Wg {
    name: String,
    /// Listen ports: `a`'s is the outer source port of what pdscp marks.
    port_a: u16,
    port_b: u16,
    /// Endpoint addresses: the outer source and destination of `a`'s packets.
    outer_a: IpAddr,
    outer_b: IpAddr,
    v4_a: Ipv4Addr,
    v4_b: Ipv4Addr,
    v6_a: Ipv6Addr,
    v6_b: Ipv6Addr,
    mtu: usize,
    key_a: Key,
    key_b: Key,
}

impl Wg {
    fn b_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.v6_b.into()
        } else {
            self.v4_b.into()
        }
    }
}

/// Makes sure the kernel has WireGuard, with a clear message if not.
fn require_wireguard() {
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

/// Creates and configures one side's device `name`: listen port, key, the
/// other side as the only peer (all addresses allowed), inner addresses
/// `v4`/24 and `v6`/64, up.
#[allow(clippy::too_many_arguments)]
fn wg_side(
    ns: &Netns,
    name: &str,
    port: u16,
    key: &Key,
    peer: &Key,
    endpoint: SocketAddr,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    mtu: usize,
) {
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

/// Builds WireGuard device `name` in `a` and `b`: listen ports `port_a` /
/// `port_b`, endpoints `outer_a` / `outer_b` (where the outer packets go
/// from and to), inner addresses 198.19.`index`.1|2/24 and
/// 2001:db8:`index`::1|2/64 (index >= 1), then completes the handshake so
/// that captures see data messages only.
#[allow(clippy::too_many_arguments)]
fn add_wg(
    bed: &TestBed,
    name: &str,
    index: u8,
    port_a: u16,
    port_b: u16,
    outer_a: IpAddr,
    outer_b: IpAddr,
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
    wg_side(
        &bed.a,
        name,
        port_a,
        &wg.key_a,
        &wg.key_b,
        SocketAddr::new(outer_b, port_b),
        wg.v4_a,
        wg.v6_a,
        mtu,
    );
    wg_side(
        &bed.b,
        name,
        port_b,
        &wg.key_b,
        &wg.key_a,
        SocketAddr::new(outer_a, port_a),
        wg.v4_b,
        wg.v6_b,
        mtu,
    );
    handshake(bed, &wg);
    wg
}

/// The usual tunnel: over `up0`, IPv4 or IPv6 underlay, MTU 1420.
fn add_wg_up0(bed: &TestBed, name: &str, index: u8, port_a: u16, port_b: u16, underlay: Underlay) -> Wg {
    let (a, b): (IpAddr, IpAddr) = match underlay {
        Underlay::V4 => (A_V4.into(), B_V4.into()),
        Underlay::V6 => (A_V6.into(), B_V6.into()),
    };
    add_wg(bed, name, index, port_a, port_b, a, b, 1420)
}

/// Pings through the tunnel until the handshake is done (TCG is slow).
fn handshake(bed: &TestBed, wg: &Wg) {
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

// ---------------------------------------------------------------------------
// Outer packets on the wire
// ---------------------------------------------------------------------------

/// The visible part of a captured UDP packet.
#[derive(Clone, Debug)]
struct Outer {
    /// VLAN ids of in-band 802.1Q/802.1ad tags, outermost first.
    vlans: Vec<u16>,
    src: IpAddr,
    dst: IpAddr,
    /// IPv4 TOS or IPv6 traffic class.
    tos: u8,
    /// IPv4 header checksum verifies (true for IPv6).
    checksum_ok: bool,
    /// IPv6 flow label (0 for IPv4).
    flow_label: u32,
    sport: u16,
    dport: u16,
    /// UDP payload length (from the UDP header).
    len: usize,
    /// WireGuard message type: first payload byte, if the next three are 0.
    wg_type: Option<u8>,
}

/// Parses an IPv4/IPv6 packet carrying (unfragmented) UDP.
fn parse_ip_udp(ip: &[u8], vlans: Vec<u16>) -> Option<Outer> {
    let h = parse_ip(ip)?;
    if h.proto != IPPROTO_UDP || h.fragmented {
        return None;
    }
    let l4 = ip.get(h.header_len..)?;
    let len = usize::from(be16(l4, 4)?).checked_sub(8)?;
    let payload = l4.get(8..)?;
    let wg_type = match payload.get(..4)? {
        [t, 0, 0, 0] => Some(*t),
        _ => None,
    };
    Some(Outer {
        vlans,
        src: h.src,
        dst: h.dst,
        tos: h.tos,
        checksum_ok: h.checksum_ok,
        flow_label: h.flow_label,
        sport: be16(l4, 0)?,
        dport: be16(l4, 2)?,
        len,
        wg_type,
    })
}

/// Parses an Ethernet frame with up to two in-band VLAN tags.
fn parse_eth(frame: &[u8]) -> Option<Outer> {
    let mut off = 12;
    let mut vlans = Vec::new();
    let mut ethertype = be16(frame, off)?;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        vlans.push(be16(frame, off + 2)? & 0x0fff);
        off += 4;
        ethertype = be16(frame, off)?;
    }
    if ethertype != 0x0800 && ethertype != 0x86dd {
        return None;
    }
    parse_ip_udp(frame.get(off + 2..)?, vlans)
}

/// Data messages `a` sent over `wg` (outer source = `a`'s endpoint and
/// listen port), keepalives left out. `l3`: frames start with the IP header.
fn data_from_a(frames: &[Vec<u8>], wg: &Wg, l3: bool) -> Vec<Outer> {
    frames
        .iter()
        .filter_map(|f| {
            if l3 {
                parse_ip_udp(f, Vec::new())
            } else {
                parse_eth(f)
            }
        })
        .filter(|p| p.src == wg.outer_a && p.sport == wg.port_a)
        .filter(|p| p.dst == wg.outer_b && p.dport == wg.port_b)
        .filter(|p| p.wg_type == Some(4) && p.len > 32)
        .collect()
}

/// UDP payload length of the data message carrying an inner packet of
/// `inner_len` bytes (WireGuard pads to 16, at most to the MTU).
fn wg_len(inner_len: usize, mtu: usize) -> usize {
    32 + inner_len.next_multiple_of(16).min(mtu)
}

/// The outer TOS WireGuard writes for an inner TOS: DSCP 0, ECN copied
/// except CE, which becomes ECT(0) (INET_ECN_encapsulate).
fn wg_outer_tos(inner: u8) -> u8 {
    match inner & 3 {
        3 => 2,
        e => e,
    }
}

/// What pdscp makes of it: the inner DSCP, WireGuard's ECN.
fn marked_tos(inner: u8) -> u8 {
    (inner & 0xfc) | wg_outer_tos(inner)
}

/// One flow as seen outside: its data messages' length and how many.
#[derive(Clone, Debug)]
struct Expect {
    what: String,
    len: usize,
    count: usize,
    /// `count` exactly, or at least `count` (a SYN may be sent again).
    exact: bool,
    tos: u8,
}

/// Every data message belongs to one of `flows` (by length), each flow has
/// exactly its packets, every one with the expected TOS (DSCP and ECN) and
/// a valid IPv4 header checksum.
fn check_flows(pkts: &[Outer], flows: &[Expect], ctx: &str) {
    for f in flows {
        let mine: Vec<&Outer> = pkts.iter().filter(|p| p.len == f.len).collect();
        assert!(
            mine.len() == f.count || (!f.exact && mine.len() > f.count),
            "{ctx}: {}: {} data messages of {} bytes, expected {}: {mine:#?}",
            f.what,
            mine.len(),
            f.len,
            f.count
        );
        for p in mine {
            assert_eq!(
                p.tos, f.tos,
                "{ctx}: {}: outer TOS {:#04x}, expected {:#04x}: {p:?}",
                f.what, p.tos, f.tos
            );
            assert!(p.checksum_ok, "{ctx}: {}: IPv4 header checksum: {p:?}", f.what);
            // WireGuard sends IPv6 with flow label 0; the rewrite keeps it.
            assert_eq!(p.flow_label, 0, "{ctx}: {}: flow label: {p:?}", f.what);
        }
    }
    let others: Vec<&Outer> = pkts
        .iter()
        .filter(|p| !flows.iter().any(|f| f.len == p.len))
        .collect();
    assert!(others.is_empty(), "{ctx}: unexpected data messages: {others:#?}");
}

/// Returns once everything `a` sent through `wg` so far has crossed the
/// wire: a TCP SYN to a closed port of `b` queues behind it (WireGuard
/// sends each peer's packets in order) and `b`'s RST comes back only after
/// the SYN arrived. The SYN is a data message of its own, unmarked.
fn barrier(bed: &TestBed, wg: &Wg) -> Expect {
    let dst = SocketAddr::new(wg.v4_b.into(), 9);
    bed.a.run_in("barrier", move || {
        match TcpStream::connect_timeout(&dst, Duration::from_secs(20)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            other => panic!("barrier: connecting to {dst} should be refused: {other:?}"),
        }
    });
    Expect {
        what: format!("{} barrier SYN", wg.name),
        // IPv4 20 + TCP 20 + options 20 (MSS, SACK, timestamps, window scale).
        len: wg_len(60, wg.mtu),
        count: 1,
        exact: false,
        tos: 0,
    }
}

/// Sends `count` UDP datagrams of `payload` bytes from `a` to `dst`, 2 ms
/// apart, from one socket with TOS / traffic class `tos`.
fn send_udp_sized(bed: &TestBed, dst: IpAddr, tos: u8, payload: usize, count: usize) {
    bed.a.run_in("send_udp_sized", move || {
        let sock = marked_udp_socket(dst, tos);
        let data = vec![0x42u8; payload];
        for _ in 0..count {
            sock.send_to(&data, (dst, 9000)).expect("sending UDP");
            sleep(Duration::from_millis(2));
        }
    });
}

/// IP header + UDP header length of the inner family.
fn udp_overhead(v6: bool) -> usize {
    if v6 {
        48
    } else {
        28
    }
}

/// A UDP flow: `payload` bytes, `count` datagrams, inner TOS `tos`, sent
/// through `wg`; returns what it must look like outside if `marked`.
fn udp_flow(bed: &TestBed, wg: &Wg, v6: bool, tos: u8, payload: usize, count: usize, marked: bool) -> Expect {
    send_udp_sized(bed, wg.b_addr(v6), tos, payload, count);
    Expect {
        what: format!("{} UDP{} tos {tos:#04x}", wg.name, if v6 { "v6" } else { "v4" }),
        len: wg_len(udp_overhead(v6) + payload, wg.mtu),
        count,
        exact: true,
        tos: if marked {
            marked_tos(tos)
        } else {
            wg_outer_tos(tos)
        },
    }
}

/// `count` echo requests (56 data bytes) through `wg` with inner TOS `tos`.
fn ping_flow(bed: &TestBed, wg: &Wg, v6: bool, tos: u8, count: u32, marked: bool) -> Expect {
    let out = ping(&bed.a, wg.b_addr(v6), tos, count);
    assert!(
        out.status.success(),
        "ping through {}: {}{}",
        wg.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // IPv4 20 + ICMP 8 + 56; IPv6 40 + ICMPv6 8 + 56.
    let inner = if v6 { 104 } else { 84 };
    Expect {
        what: format!("{} ping{} tos {tos:#04x}", wg.name, if v6 { "6" } else { "" }),
        len: wg_len(inner, wg.mtu),
        count: count as usize,
        exact: true,
        tos: if marked {
            marked_tos(tos)
        } else {
            wg_outer_tos(tos)
        },
    }
}

/// UDP over both inner families (EF with ECT(1), AF11 with ECT(0), AF41
/// with CE, which WireGuard turns into ECT(0) outside, and an unmarked
/// flow) and pings over both (the port-less flows the original lost):
/// captured on `dev` in `ns`, each flow checked.
fn check_udp_and_icmp(bed: &TestBed, wg: &Wg, ns: &Netns, dev: &str, marked: bool, ctx: &str) -> Vec<Outer> {
    let cap = Capture::start(ns, dev);
    let flows = [
        udp_flow(bed, wg, false, 0xb9, 100, 5, marked),
        udp_flow(bed, wg, true, 0x2a, 200, 5, marked),
        udp_flow(bed, wg, false, 0x8b, 300, 5, marked),
        udp_flow(bed, wg, true, 0x01, 400, 5, marked),
        ping_flow(bed, wg, false, 0xa0, 3, marked),
        ping_flow(bed, wg, true, 0x68, 3, marked),
    ];
    // The pings came back: everything before them has crossed too.
    let pkts = data_from_a(&cap.stop(), wg, false);
    check_flows(&pkts, &flows, ctx);
    pkts
}

/// The same, captured where `b` receives them.
fn check_marked(bed: &TestBed, wg: &Wg, ctx: &str) {
    check_udp_and_icmp(bed, wg, &bed.b, UPLINK, true, ctx);
}

/// A few EF datagrams through each tunnel; each must come out marked or not.
fn check_udp(bed: &TestBed, cases: &[(&Wg, bool)], ctx: &str) {
    let cap = Capture::start(&bed.b, UPLINK);
    let flows: Vec<(&Wg, bool, Expect)> = cases
        .iter()
        .map(|&(wg, marked)| (wg, marked, udp_flow(bed, wg, false, 0xb8, 100, 5, marked)))
        .collect();
    let barriers: Vec<Expect> = cases.iter().map(|&(wg, _)| barrier(bed, wg)).collect();
    let frames = cap.stop();
    for ((wg, marked, flow), barrier) in flows.into_iter().zip(barriers) {
        let what = format!(
            "{ctx}: {} {}",
            wg.name,
            if marked { "marked" } else { "unmarked" }
        );
        check_flows(&data_from_a(&frames, wg, false), &[flow, barrier], &what);
    }
}

/// TCP bulk transfers (GSO: the reader sees super-packets, WireGuard
/// segments them before encrypting) over both inner families: every data
/// message carries the inner DSCP, ECN not set (no ECN negotiated).
/// Returns the number of data messages per family.
fn check_tcp(bed: &TestBed, wg: &Wg, ctx: &str) -> [(u8, usize); 2] {
    let bytes = 512 << 10;
    let mut counts = [(0, 0); 2];
    for (i, (v6, tos, port)) in [(false, 0x30u8, 5201u16), (true, 0x50, 5202)]
        .into_iter()
        .enumerate()
    {
        let cap = Capture::start(&bed.b, UPLINK);
        assert_eq!(tcp_bulk(&bed.a, &bed.b, wg.b_addr(v6), port, tos, bytes), bytes);
        let barrier = barrier(bed, wg);
        let mut pkts = data_from_a(&cap.stop(), wg, false);
        let what = format!("{ctx}: TCP{} tos {tos:#04x}", if v6 { "v6" } else { "v4" });
        // The barrier's SYN is as long as the flow's ACKs; it is the last
        // unmarked one.
        let syn = pkts
            .iter()
            .rposition(|p| p.len == barrier.len && p.tos == barrier.tos)
            .unwrap_or_else(|| panic!("{what}: no barrier SYN"));
        pkts.remove(syn);
        assert!(
            pkts.len() >= bytes / wg.mtu,
            "{what}: only {} data messages",
            pkts.len()
        );
        for p in &pkts {
            assert_eq!(p.tos, tos, "{what}: outer TOS {:#04x}: {p:?}", p.tos);
            assert!(p.checksum_ok, "{what}: IPv4 header checksum: {p:?}");
            assert_eq!(p.flow_label, 0, "{what}: flow label: {p:?}");
        }
        assert!(
            pkts.iter().any(|p| p.len == wg_len(wg.mtu, wg.mtu)),
            "{what}: full-size segments"
        );
        counts[i] = (tos >> 2, pkts.len());
    }
    counts
}

// ---------------------------------------------------------------------------
// pdscp
// ---------------------------------------------------------------------------

/// The running kernel's (major, minor), from `uname -r`.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// What `--mode auto` must pick here: TCX from Linux 6.6, tc before.
fn auto_mode() -> &'static str {
    if kernel_version() >= (6, 6) {
        "tcx"
    } else {
        "tc"
    }
}

/// Checks the tunnel is attached to `up` with `a`'s listen port as its port.
fn assert_attached(s: &Value, up: &str, wg: &Wg) {
    let t = tunnel(s, up, &wg.name);
    assert_eq!(t["port"], wg.port_a, "{}: port: {s:#}", wg.name);
    assert_eq!(t["present"], true, "{}: {s:#}", wg.name);
    assert_eq!(t["attached"], true, "{}: {s:#}", wg.name);
    assert_eq!(uplink(s, up)["attached"], true, "{up}: {s:#}");
}

fn counter(s: &Value, up: &str, which: &str, dscp: u8) -> u64 {
    uplink(s, up)["counters"][which][dscp.to_string()]
        .as_u64()
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// The problem: WireGuard alone writes outer DSCP 0 (ECN copied), so the
/// checks below can fail.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn wireguard_alone_loses_marks() {
    require_wireguard();
    let bed = TestBed::new();
    let wg = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    check_udp_and_icmp(&bed, &wg, &bed.b, UPLINK, false, "without pdscp");
}

/// UDP, TCP (bulk, GSO) and ICMP over both inner families: every data
/// message carries the inner DSCP outside, WireGuard's ECN, a valid IPv4
/// checksum. `--mode auto`, plus `--mode tc` where auto gives TCX.
fn marks_everything(underlay: Underlay) {
    require_wireguard();
    let mut modes = vec!["auto"];
    if auto_mode() == "tcx" {
        modes.push("tc");
    }
    for mode in modes {
        let bed = TestBed::new();
        let wg = add_wg_up0(&bed, "wg0", 1, 51820, 52820, underlay);
        let msg = ok(bed.pdscp(&["attach", "wg0", "--uplink", UPLINK, "--mode", mode]));
        let want = if mode == "auto" { auto_mode() } else { mode };
        assert!(msg.contains(&format!("mode {want}, port 51820")), "{msg}");
        let ctx = format!("{underlay:?} underlay, --mode {mode}");
        check_marked(&bed, &wg, &ctx);
        let tcp = check_tcp(&bed, &wg, &ctx);

        let s = status(&bed);
        assert_attached(&s, UPLINK, &wg);
        assert_eq!(uplink(&s, UPLINK)["mode"], want, "{s:#}");
        for (dscp, outer) in tcp {
            // The writer marked each data message; the reader saw fewer,
            // larger packets: GSO super-packets, segmented by WireGuard.
            let marked = counter(&s, UPLINK, "marked_by_dscp", dscp);
            let seen = counter(&s, UPLINK, "seen_by_dscp", dscp);
            assert_eq!(marked, outer as u64, "{ctx}: DSCP {dscp} marked: {s:#}");
            assert!(
                seen < marked,
                "{ctx}: DSCP {dscp}: GSO: seen {seen} < marked {marked}"
            );
        }
    }
}

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn marks_udp_tcp_icmp_over_ipv4_underlay() {
    marks_everything(Underlay::V4);
}

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn marks_udp_tcp_icmp_over_ipv6_underlay() {
    marks_everything(Underlay::V6);
}

/// `pdscp attach wgX` alone: the listen port and the uplink come from the
/// kernel (IPv4 and IPv6 endpoints), and `--mode auto` picks TCX from 6.6,
/// tc before.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn attach_discovers_port_uplink_and_mode() {
    require_wireguard();
    let bed = TestBed::new();
    let wg0 = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    let wg1 = add_wg_up0(&bed, "wg1", 2, 51821, 52821, Underlay::V6);
    let mode = auto_mode();
    for wg in [&wg0, &wg1] {
        let msg = ok(bed.pdscp(&["attach", &wg.name]));
        assert!(
            msg.contains(&format!("attached to up0 (mode {mode}, port {})", wg.port_a)),
            "{msg}"
        );
    }
    let s = status(&bed);
    assert_eq!(s["uplinks"].as_array().map(Vec::len), Some(1), "{s:#}");
    assert_eq!(
        uplink(&s, UPLINK)["mode"],
        mode,
        "kernel {:?}: {s:#}",
        kernel_version()
    );
    assert_attached(&s, UPLINK, &wg0);
    assert_attached(&s, UPLINK, &wg1);
    check_marked(&bed, &wg0, "discovered, IPv4 endpoint");
    check_marked(&bed, &wg1, "discovered, IPv6 endpoint");
    assert!(ok(bed.pdscp(&["attach", "wg0"])).contains("already attached"));
}

/// The uplink is looked up with WireGuard's fwmark: policy routing sends
/// wg0's packets out of a second link, and pdscp attaches there.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn attach_follows_the_fwmark_route() {
    require_wireguard();
    let bed = TestBed::new();
    bed.a.sh(&format!(
        "set -e
         ip link add up1 type veth peer name up1 netns {b}
         ip addr add 198.18.2.1/24 dev up1
         ip link set up1 address 02:00:00:00:02:01 up",
        b = bed.b.name
    ));
    bed.b.sh("set -e
         ip addr add 198.18.2.2/24 dev up1
         ip link set up1 address 02:00:00:00:02:02 up
         ip neigh replace 198.18.2.1 lladdr 02:00:00:00:02:01 dev up1 nud permanent");
    // Marked packets to b's up0 address go out of up1.
    bed.a.sh(&format!(
        "set -e
         ip neigh replace 198.18.2.2 lladdr 02:00:00:00:02:02 dev up1 nud permanent
         ip route add {B_V4}/32 via 198.18.2.2 dev up1 src 198.18.2.1 table 100
         ip rule add fwmark 0x51 lookup 100"
    ));
    for ns in [&bed.a, &bed.b] {
        ns.sh("sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.up1.rp_filter=0 net.ipv4.conf.up0.rp_filter=0");
    }
    let wg = add_wg(
        &bed,
        "wg0",
        1,
        51820,
        52820,
        "198.18.2.1".parse().unwrap(),
        B_V4.into(),
        1420,
    );
    bed.a.sh("wg set wg0 fwmark 0x51");
    handshake(&bed, &wg);
    let msg = ok(bed.pdscp(&["attach", "wg0"]));
    assert!(msg.contains("attached to up1"), "{msg}");
    assert_attached(&status(&bed), "up1", &wg);
    check_udp_and_icmp(&bed, &wg, &bed.b, "up1", true, "fwmark route");
}

/// Two WireGuard interfaces on one uplink: detaching one leaves the other
/// marked, attaching it again marks it again.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn two_tunnels_one_uplink_detach_and_reattach_one() {
    require_wireguard();
    let bed = TestBed::new();
    let wg0 = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    let wg1 = add_wg_up0(&bed, "wg1", 2, 51821, 52821, Underlay::V6);
    let wg2 = add_wg_up0(&bed, "wg2", 3, 51822, 52822, Underlay::V4);
    ok(bed.pdscp(&["attach", "wg0"]));
    ok(bed.pdscp(&["attach", "wg1"]));
    check_udp(
        &bed,
        &[(&wg0, true), (&wg1, true), (&wg2, false)],
        "both attached",
    );

    let msg = ok(bed.pdscp(&["detach", "wg0"]));
    assert!(msg.contains("wg0: detached from up0"), "{msg}");
    check_udp(
        &bed,
        &[(&wg0, false), (&wg1, true), (&wg2, false)],
        "wg0 detached",
    );
    let s = status(&bed);
    assert_eq!(tunnel_names(&s, UPLINK), ["wg1"], "{s:#}");
    assert_attached(&s, UPLINK, &wg1);

    ok(bed.pdscp(&["attach", "wg0"]));
    check_udp(
        &bed,
        &[(&wg0, true), (&wg1, true), (&wg2, false)],
        "wg0 re-attached",
    );
    check_marked(&bed, &wg1, "wg1 after wg0 came and went");

    ok(bed.pdscp(&["detach", "wg1"]));
    check_udp(
        &bed,
        &[(&wg0, true), (&wg1, false), (&wg2, false)],
        "wg1 detached",
    );
}

/// `ip link del wg0`, then `pdscp detach wg0` succeeds and wg1 stays
/// marked; the last tunnel's detach releases the uplink.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn detach_after_ip_link_del() {
    require_wireguard();
    let bed = TestBed::new();
    add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    let wg1 = add_wg_up0(&bed, "wg1", 2, 51821, 52821, Underlay::V4);
    ok(bed.pdscp(&["attach", "wg0"]));
    ok(bed.pdscp(&["attach", "wg1"]));

    bed.a.sh("ip link del wg0");
    let s = status(&bed);
    assert_eq!(tunnel(&s, UPLINK, "wg0")["present"], false, "{s:#}");
    let msg = ok(bed.pdscp(&["detach", "wg0"]));
    assert!(msg.contains("wg0: detached from up0"), "{msg}");
    let s = status(&bed);
    assert_eq!(tunnel_names(&s, UPLINK), ["wg1"], "{s:#}");
    assert_attached(&s, UPLINK, &wg1);
    check_marked(&bed, &wg1, "wg1 after wg0 was deleted");
    assert!(ok(bed.pdscp(&["detach", "wg0"])).contains("not attached"));

    bed.a.sh("ip link del wg1");
    let msg = ok(bed.pdscp(&["detach", "wg1"]));
    assert!(msg.contains("uplink released"), "{msg}");
    assert!(!bed.pin_root.join(UPLINK).exists(), "uplink pins removed");
    assert_eq!(status(&bed)["uplinks"].as_array().map(Vec::len), Some(0));
}

/// The listen port changes, in place (`wg set listen-port`) and by
/// recreating the device: attaching again updates the port and marks.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn listen_port_change_is_picked_up_by_attach() {
    require_wireguard();
    let bed = TestBed::new();
    let mut wg = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    let wg_other = add_wg_up0(&bed, "wg1", 2, 51821, 52821, Underlay::V6);
    ok(bed.pdscp(&["attach", "wg0"]));
    ok(bed.pdscp(&["attach", "wg1"]));
    check_udp(&bed, &[(&wg, true), (&wg_other, true)], "before");
    let ifindex = bed.a.ifindex("wg0");

    // In place: same device, new port; b follows (roaming), told explicitly.
    let set_port = |wg: &Wg, port: u16| {
        bed.a.sh(&format!("wg set wg0 listen-port {port}"));
        bed.b.sh(&format!(
            "wg set wg0 peer {} endpoint {}",
            wg.key_a.public,
            SocketAddr::new(wg.outer_a, port)
        ));
    };
    set_port(&wg, 51830);
    wg.port_a = 51830;
    let msg = ok(bed.pdscp(&["attach", "wg0"]));
    assert!(msg.contains("port 51830"), "{msg}");
    let s = status(&bed);
    assert_attached(&s, UPLINK, &wg);
    assert_eq!(tunnel(&s, UPLINK, "wg0")["ifindex"], ifindex, "{s:#}");
    check_udp(&bed, &[(&wg, true), (&wg_other, true)], "port changed in place");

    // Recreated with another port (same keys): a new ifindex too.
    bed.a.sh("ip link del wg0");
    wg.port_a = 51840;
    wg_side(
        &bed.a,
        "wg0",
        wg.port_a,
        &wg.key_a,
        &wg.key_b,
        SocketAddr::new(wg.outer_b, wg.port_b),
        wg.v4_a,
        wg.v6_a,
        wg.mtu,
    );
    bed.b.sh(&format!(
        "wg set wg0 peer {} endpoint {}",
        wg.key_a.public,
        SocketAddr::new(wg.outer_a, wg.port_a)
    ));
    handshake(&bed, &wg);
    let msg = ok(bed.pdscp(&["attach", "wg0"]));
    assert!(msg.contains("port 51840"), "{msg}");
    let s = status(&bed);
    assert_attached(&s, UPLINK, &wg);
    assert_ne!(tunnel(&s, UPLINK, "wg0")["ifindex"], ifindex, "{s:#}");
    assert_eq!(tunnel_names(&s, UPLINK).len(), 2, "{s:#}");
    check_udp(&bed, &[(&wg, true), (&wg_other, true)], "device recreated");
}

/// An L3 uplink: WireGuard inside WireGuard. wg1's endpoint is b's address
/// inside wg0, so wg1's uplink is wg0 (no Ethernet header), and wg0's is
/// the veth. wg0 runs wg1's writer and its own reader, writer first: the
/// mark travels inner packet -> wg1's outer packet -> wg0's outer packet.
/// Both attach orders.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn l3_uplink_wireguard_in_wireguard() {
    require_wireguard();
    let bed = TestBed::new();
    let wg0 = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    // 1420 - 20 (IPv4) - 8 (UDP) - 32 (WireGuard) = 1360: no fragments in wg0.
    let wg1 = add_wg(
        &bed,
        "wg1",
        2,
        51821,
        52821,
        wg0.v4_a.into(),
        wg0.v4_b.into(),
        1360,
    );
    for order in [["wg1", "wg0"], ["wg0", "wg1"]] {
        let ctx = format!("attached {order:?}");
        for name in order {
            let msg = ok(bed.pdscp(&["attach", name]));
            let up = if name == "wg1" { "wg0" } else { UPLINK };
            assert!(msg.contains(&format!("attached to {up} ")), "{ctx}: {msg}");
        }
        let s = status(&bed);
        assert_attached(&s, "wg0", &wg1);
        assert_attached(&s, UPLINK, &wg0);

        // wg1's data messages leaving a's wg0 (IP packets, no link header) ...
        let inner_cap = Capture::start(&bed.a, "wg0");
        let outer_cap = Capture::start(&bed.b, UPLINK);
        let flows = [
            udp_flow(&bed, &wg1, false, 0xb9, 100, 5, true),
            udp_flow(&bed, &wg1, true, 0x2a, 200, 5, true),
            ping_flow(&bed, &wg1, false, 0xa0, 3, true),
        ];
        let inner = data_from_a(&inner_cap.stop(), &wg1, true);
        check_flows(&inner, &flows, &format!("{ctx}: wg1 in wg0"));
        // ... and wg0's data messages carrying them, on the veth.
        let outer: Vec<Expect> = flows
            .iter()
            .map(|f| Expect {
                what: format!("{} in wg0", f.what),
                len: wg_len(28 + f.len, wg0.mtu),
                ..f.clone()
            })
            .collect();
        let on_wire = data_from_a(&outer_cap.stop(), &wg0, false);
        check_flows(&on_wire, &outer, &format!("{ctx}: wg0 on up0"));

        // wg0's own traffic is marked as well.
        check_marked(&bed, &wg0, &format!("{ctx}: wg0's own"));
        for name in order {
            ok(bed.pdscp(&["detach", name]));
        }
        assert_eq!(status(&bed)["uplinks"].as_array().map(Vec::len), Some(0));
    }

    // wg0 goes away: it was a tunnel (of up0) and an uplink (of wg1). Both
    // detach without it, and nothing is left behind.
    ok(bed.pdscp(&["attach", "wg1"]));
    ok(bed.pdscp(&["attach", "wg0"]));
    bed.a.sh("ip link del wg0");
    let s = status(&bed);
    assert_eq!(uplink(&s, "wg0")["present"], false, "{s:#}");
    assert_eq!(tunnel(&s, UPLINK, "wg0")["present"], false, "{s:#}");
    assert!(ok(bed.pdscp(&["detach", "wg1"])).contains("uplink released"));
    assert!(ok(bed.pdscp(&["detach", "wg0"])).contains("uplink released"));
    assert_eq!(status(&bed)["uplinks"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        std::fs::read_dir(&bed.pin_root).map(|d| d.count()).unwrap_or(0),
        0,
        "pins left"
    );
}

/// An uplink with 802.1Q tags: WireGuard over a VLAN device on the veth,
/// pdscp's writer on the veth, VLAN TX offload off there. With
/// `reorder_hdr off` the VLAN device writes the tag into the frame, so the
/// writer's hook sees it in-band; with the default (`reorder_hdr on`) the
/// tag travels as metadata and is written into the frame after the hook.
/// Frames are captured where `a`'s veth sends them (tags in-band), and a
/// mirror on the writer's hook shows which form it saw.
fn vlan_uplink(reorder_hdr: bool) {
    require_wireguard();
    let bed = TestBed::new();
    for (ns, me, peer, mac) in [
        (&bed.a, 1, 2, "02:00:00:00:00:02"),
        (&bed.b, 2, 1, "02:00:00:00:00:01"),
    ] {
        set_features_off(ns, UPLINK, &["tx-vlan-hw-insert"]);
        ns.sh(&format!(
            "set -e
             ip link add link {UPLINK} name {UPLINK}.10 type vlan id 10 reorder_hdr {r}
             ip addr add 198.18.10.{me}/24 dev {UPLINK}.10
             ip addr add 2001:db8:ff10::{me}/64 dev {UPLINK}.10 nodad
             ip neigh replace 198.18.10.{peer} lladdr {mac} dev {UPLINK}.10 nud permanent
             ip neigh replace 2001:db8:ff10::{peer} lladdr {mac} dev {UPLINK}.10 nud permanent
             ip link set {UPLINK}.10 up",
            r = if reorder_hdr { "on" } else { "off" }
        ));
    }
    let wg4 = add_wg(
        &bed,
        "wg0",
        1,
        51820,
        52820,
        "198.18.10.1".parse().unwrap(),
        "198.18.10.2".parse().unwrap(),
        1420,
    );
    let wg6 = add_wg(
        &bed,
        "wg1",
        2,
        51821,
        52821,
        "2001:db8:ff10::1".parse().unwrap(),
        "2001:db8:ff10::2".parse().unwrap(),
        1420,
    );
    for wg in [&wg4, &wg6] {
        let msg = ok(bed.pdscp(&["attach", &wg.name, "--uplink", UPLINK]));
        assert!(msg.contains("attached to up0"), "{msg}");
    }
    // Mirrors what the egress hook saw, after pdscp's writer, into a sink.
    tc_filter_add_counter(&bed.a, UPLINK, TcDir::Egress, COUNTER_PRIO);

    for wg in [&wg4, &wg6] {
        let ctx = format!("{}, reorder_hdr {reorder_hdr}", wg.name);
        let hook = Capture::start(&bed.a, COUNTER_SINK);
        let pkts = check_udp_and_icmp(&bed, wg, &bed.a, UPLINK, true, &ctx);
        assert!(
            pkts.iter().all(|p| p.vlans == [10]),
            "{ctx}: tagged 10 on the wire: {pkts:#?}"
        );
        let at_hook = data_from_a(&hook.stop(), wg, false);
        assert_eq!(at_hook.len(), pkts.len(), "{ctx}: mirrored from the hook");
        let want: &[u16] = if reorder_hdr { &[] } else { &[10] };
        for p in &at_hook {
            assert_eq!(p.vlans, want, "{ctx}: in-band tags at the hook: {p:?}");
        }
        // The mirror runs after the writer: the same marks as on the wire.
        let marks = |v: &[Outer]| {
            let mut m: Vec<(usize, u8)> = v.iter().map(|p| (p.len, p.tos)).collect();
            m.sort_unstable();
            m
        };
        assert_eq!(marks(&at_hook), marks(&pkts), "{ctx}: marked at the hook");
    }
}

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn vlan_uplink_tags_in_band_at_the_hook() {
    vlan_uplink(false);
}

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn vlan_uplink_tags_inserted_after_the_hook() {
    vlan_uplink(true);
}
