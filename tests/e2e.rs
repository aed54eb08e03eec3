//! End to end: the real pdscp binary, real BPF programs in the kernel, two
//! network namespaces joined by a veth pair, VXLAN tunnels with a fixed outer
//! source port standing in for WireGuard, and the outer packets captured on
//! the far side of the wire. Needs root.

mod testbed;

use std::net::{Ipv4Addr, UdpSocket};

use serde_json::Value;
use testbed::*;

const MODES: [&str; 2] = ["tcx", "tc"];

/// Outer packets of tunnel `t` leaving a, carrying inner protocol `proto`.
fn from_a(frames: &[Vec<u8>], t: &Tunnel, proto: u8) -> Vec<TunnelPacket> {
    parse_all(frames)
        .into_iter()
        .filter(|p| p.vni == t.vni && p.outer_sport == t.srcport && p.inner_proto == proto)
        .filter(|p| p.inner_src == t.a_addr(false) || p.inner_src == t.a_addr(true))
        .collect()
}

/// Every packet carries the inner DSCP outside, ECN as the tunnel set it, a valid checksum.
fn assert_marked(pkts: &[TunnelPacket], min: usize, what: &str) {
    assert!(
        pkts.len() >= min,
        "{what}: {} packets, expected at least {min}",
        pkts.len()
    );
    for p in pkts {
        assert_eq!(
            p.outer_dscp(),
            p.inner_dscp(),
            "{what}: outer DSCP copied from inner: {p:?}"
        );
        assert_eq!(p.outer_ecn(), p.inner_ecn(), "{what}: ECN kept: {p:?}");
        assert!(
            p.outer_ipv4_checksum_ok,
            "{what}: IPv4 header checksum valid: {p:?}"
        );
    }
}

fn assert_unmarked(pkts: &[TunnelPacket], min: usize, what: &str) {
    assert!(
        pkts.len() >= min,
        "{what}: {} packets, expected at least {min}",
        pkts.len()
    );
    for p in pkts {
        assert_eq!(p.outer_dscp(), 0, "{what}: outer DSCP must stay 0: {p:?}");
    }
}

/// Sends UDP (IPv4 and IPv6 inner), pings and a TCP bulk transfer through
/// `t` and checks every outer packet of them is marked like its inner one.
fn check_all_traffic_marked(bed: &TestBed, t: &Tunnel) {
    let cap = Capture::start(&bed.b, UPLINK);
    // EF with ECT(1): ECN must survive the rewrite.
    send_udp(&bed.a, t.b_addr(false), 9000, 0xb9, 5);
    // AF11 with ECT(0) over IPv6: the original read the whole traffic class as DSCP.
    send_udp(&bed.a, t.b_addr(true), 9001, 0x2a, 5);
    // Port-less traffic: its hash survives iptunnel_xmit only because the reader marks it L4.
    assert!(ping(&bed.a, t.b_addr(false), 0xb8, 3).status.success());
    assert!(ping(&bed.a, t.b_addr(true), 0x88, 3).status.success());
    let frames = cap.stop();
    let udp = from_a(&frames, t, IPPROTO_UDP);
    assert_marked(&udp, 10, "UDP");
    assert!(
        udp.iter().any(|p| p.inner_version == 6 && p.outer_tos == 0x2a),
        "IPv6 inner AF11: {udp:?}"
    );
    assert!(
        udp.iter().any(|p| p.inner_version == 4 && p.outer_tos == 0xb9),
        "IPv4 inner EF/ECT(1)"
    );
    let icmp = from_a(&frames, t, IPPROTO_ICMP);
    assert_marked(&icmp, 3, "ICMP");
    assert!(icmp.iter().all(|p| p.outer_dscp() == 46));
    let icmp6 = from_a(&frames, t, IPPROTO_ICMPV6);
    assert!(
        icmp6.iter().filter(|p| p.outer_dscp() == 34).count() >= 3,
        "ICMPv6 echo marked AF41: {icmp6:?}"
    );

    // TCP bulk: GSO super-packets are rewritten once on the uplink and cut
    // into MTU-sized frames afterwards; every frame must carry the mark.
    let cap = Capture::start(&bed.b, UPLINK);
    let sent = 1 << 20;
    assert_eq!(tcp_bulk(&bed.a, &bed.b, t.b_addr(false), 5201, 0x28, sent), sent);
    assert_eq!(tcp_bulk(&bed.a, &bed.b, t.b_addr(true), 5202, 0x48, sent), sent);
    let tcp = from_a(&cap.stop(), t, IPPROTO_TCP);
    assert_marked(&tcp, 1000, "TCP bulk");
    assert!(
        tcp.iter().all(|p| p.outer_len <= 1500),
        "segmented after the writer"
    );
    assert!(tcp.iter().any(|p| p.inner_version == 6 && p.outer_dscp() == 18));
    assert!(tcp.iter().any(|p| p.inner_version == 4 && p.outer_dscp() == 10));
}

fn marks_everything(underlay: Underlay, mode: &str) {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, underlay, 1);
    let msg = attach(&bed, &t, UPLINK, mode);
    assert!(msg.contains(&format!("mode {mode}")), "{msg}");
    check_all_traffic_marked(&bed, &t);
}

#[test]
fn marks_udp_tcp_icmp_over_ipv4_underlay_tcx() {
    marks_everything(Underlay::V4, "tcx");
}

#[test]
fn marks_udp_tcp_icmp_over_ipv4_underlay_tc() {
    marks_everything(Underlay::V4, "tc");
}

#[test]
fn marks_udp_tcp_icmp_over_ipv6_underlay_tcx() {
    marks_everything(Underlay::V6, "tcx");
}

#[test]
fn marks_udp_tcp_icmp_over_ipv6_underlay_tc() {
    marks_everything(Underlay::V6, "tc");
}

/// Without pdscp the same bed loses every mark: the tests above can fail.
#[test]
fn without_pdscp_marks_are_lost() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t.b_addr(false), 9000, 0xb8, 5);
    assert_unmarked(&from_a(&cap.stop(), &t, IPPROTO_UDP), 5, "no pdscp");
}

/// One flow (one socket) changes its mark, then drops it to 0: the outer
/// DSCP follows, down to 0.
#[test]
fn mark_changes_follow_the_flow() {
    for mode in MODES {
        let bed = TestBed::new();
        let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
        attach(&bed, &t, UPLINK, mode);
        let cap = Capture::start(&bed.b, UPLINK);
        let dst = t.b_addr(false);
        bed.a.run_in("one flow, three marks", move || {
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            for tos in [0xb8u8, 0x28, 0x00] {
                set_tos(&sock, false, tos);
                for _ in 0..3 {
                    sock.send_to(&[tos], (dst, 9000)).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        });
        let pkts = from_a(&cap.stop(), &t, IPPROTO_UDP);
        assert_eq!(pkts.len(), 9, "{mode}");
        let outer: Vec<u8> = pkts.iter().map(|p| p.outer_dscp()).collect();
        assert_eq!(outer, [46, 46, 46, 10, 10, 10, 0, 0, 0], "{mode}");
        let s = status(&bed);
        assert_eq!(s["uplinks"][0]["counters"]["flow_inserts"], 1, "{mode}: {s}");
        assert_eq!(s["uplinks"][0]["counters"]["flow_updates"], 2, "{mode}: {s}");
    }
}

/// Two tunnels on one uplink, a third unattached one beside them; detaching
/// one leaves the other marked.
#[test]
fn two_tunnels_one_uplink_detach_one() {
    for mode in MODES {
        let bed = TestBed::new();
        let t1 = bed.add_vxlan("wg1", 101, 51820, Underlay::V4, 1);
        let t2 = bed.add_vxlan("wg2", 102, 51830, Underlay::V6, 2);
        let t3 = bed.add_vxlan("wg3", 103, 51840, Underlay::V4, 3);
        attach(&bed, &t1, UPLINK, mode);
        attach(&bed, &t2, UPLINK, mode);

        let send = || {
            let cap = Capture::start(&bed.b, UPLINK);
            for t in [&t1, &t2, &t3] {
                send_udp(&bed.a, t.b_addr(false), 9000, 0xb8, 5);
            }
            cap.stop()
        };
        let frames = send();
        assert_marked(&from_a(&frames, &t1, IPPROTO_UDP), 5, "wg1");
        assert_marked(&from_a(&frames, &t2, IPPROTO_UDP), 5, "wg2");
        assert_unmarked(&from_a(&frames, &t3, IPPROTO_UDP), 5, "wg3, not attached");
        assert_eq!(
            status(&bed)["uplinks"][0]["counters"]["marked_by_dscp"]["46"],
            10,
            "{mode}"
        );

        let msg = ok(bed.pdscp(&["detach", "wg1"]));
        assert!(msg.contains("detached from up0"), "{msg}");
        let frames = send();
        assert_unmarked(&from_a(&frames, &t1, IPPROTO_UDP), 5, "wg1 after its detach");
        assert_marked(&from_a(&frames, &t2, IPPROTO_UDP), 5, "wg2 after wg1's detach");
        assert_unmarked(&from_a(&frames, &t3, IPPROTO_UDP), 5, "wg3");

        let s = status(&bed);
        let tunnels = &s["uplinks"][0]["tunnels"];
        assert_eq!(tunnels.as_array().unwrap().len(), 1, "{s}");
        assert_eq!(tunnels[0]["name"], "wg2");
        assert_eq!(tunnels[0]["port"], 51830);
        assert_eq!(tunnels[0]["attached"], true);
        assert_eq!(s["uplinks"][0]["mode"], mode);
    }
}

/// The id of the TCX link pinned at `path`, or None.
fn pinned_link_id(path: &std::path::Path) -> Option<u64> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "link", "show", "pinned"])
        .arg(path)
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["id"].as_u64()
}

fn link_exists(id: u64) -> bool {
    std::process::Command::new("bpftool")
        .args(["link", "show", "id", &id.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The pdscp filters (by program name) on a device's egress, in tc mode.
fn pdscp_tc_filters(ns: &Netns, dev: &str) -> usize {
    ns.sh(&format!("tc filter show dev {dev} egress"))
        .matches("name pdscp_")
        .count()
}

#[test]
fn detach_after_the_tunnel_device_is_gone() {
    for mode in MODES {
        let bed = TestBed::new();
        let t1 = bed.add_vxlan("wg1", 101, 51820, Underlay::V4, 1);
        let t2 = bed.add_vxlan("wg2", 102, 51830, Underlay::V4, 2);
        attach(&bed, &t1, UPLINK, mode);
        attach(&bed, &t2, UPLINK, mode);
        let uplink_dir = bed.pin_root.join(UPLINK);
        let uplink_link = pinned_link_id(&uplink_dir.join("link"));
        assert_eq!(
            uplink_link.is_some(),
            mode == "tcx",
            "{mode}: uplink link pinned only in tcx mode"
        );

        bed.a.sh("ip link del wg1");
        let s = status(&bed);
        assert_eq!(s["uplinks"][0]["tunnels"][0]["present"], false, "{s}");
        let msg = ok(bed.pdscp(&["detach", "wg1"]));
        assert!(msg.contains("detached"), "{msg}");
        assert!(!uplink_dir.join("tunnels/wg1").exists());

        let cap = Capture::start(&bed.b, UPLINK);
        send_udp(&bed.a, t2.b_addr(false), 9000, 0xb8, 5);
        assert_marked(
            &from_a(&cap.stop(), &t2, IPPROTO_UDP),
            5,
            "wg2 after wg1 vanished",
        );

        // The last tunnel goes: the uplink's attachment and pins go too.
        bed.a.sh("ip link del wg2");
        let msg = ok(bed.pdscp(&["detach", "wg2"]));
        assert!(msg.contains("uplink released"), "{msg}");
        assert!(!uplink_dir.exists(), "{mode}: uplink pin directory removed");
        if let Some(id) = uplink_link {
            assert!(!link_exists(id), "{mode}: the uplink's TCX link is gone");
        }
        assert_eq!(
            pdscp_tc_filters(&bed.a, UPLINK),
            0,
            "{mode}: no pdscp filter left on the uplink"
        );
        assert_eq!(status(&bed)["uplinks"].as_array().unwrap().len(), 0);
        // Detaching what is gone succeeds.
        assert!(ok(bed.pdscp(&["detach", "wg2"])).contains("not attached"));
    }
}

/// Other filters on the uplink (after pdscp's, where a TC_ACT_OK verdict
/// would have skipped them) and on the tunnel keep seeing traffic, and
/// survive detach with their clsact qdisc.
#[test]
fn unrelated_filters_keep_running_and_survive() {
    for mode in MODES {
        let bed = TestBed::new();
        let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
        tc_filter_add_counter(&bed.a, UPLINK, TcDir::Egress, COUNTER_PRIO);
        tc_filter_add_counter(&bed.a, UPLINK, TcDir::Ingress, COUNTER_PRIO);
        tc_filter_add_counter(&bed.a, "wg0", TcDir::Egress, COUNTER_PRIO);
        attach(&bed, &t, UPLINK, mode);

        // Non-tunnel packets on the uplink (the writer's other exit).
        let before = tc_filter_packets(&bed.a, UPLINK, TcDir::Egress, COUNTER_PRIO);
        send_udp(&bed.a, B_V4.into(), 9000, 0xb8, 10);
        assert!(
            tc_filter_packets(&bed.a, UPLINK, TcDir::Egress, COUNTER_PRIO) >= before + 10,
            "{mode}: not-tunnel"
        );

        let before = tc_filter_packets(&bed.a, UPLINK, TcDir::Egress, COUNTER_PRIO);
        let before_tunnel = tc_filter_packets(&bed.a, "wg0", TcDir::Egress, COUNTER_PRIO);
        let cap = Capture::start(&bed.b, UPLINK);
        send_udp(&bed.a, t.b_addr(false), 9000, 0xb8, 20);
        assert_marked(&from_a(&cap.stop(), &t, IPPROTO_UDP), 20, mode);
        assert!(
            tc_filter_packets(&bed.a, UPLINK, TcDir::Egress, COUNTER_PRIO) >= before + 20,
            "{mode}: uplink filter ran"
        );
        assert!(
            tc_filter_packets(&bed.a, "wg0", TcDir::Egress, COUNTER_PRIO) >= before_tunnel + 20,
            "{mode}: tunnel filter ran"
        );

        ok(bed.pdscp(&["detach", "wg0"]));
        for (dev, dir) in [
            (UPLINK, TcDir::Egress),
            (UPLINK, TcDir::Ingress),
            ("wg0", TcDir::Egress),
        ] {
            assert!(
                tc_filter_exists(&bed.a, dev, dir, COUNTER_PRIO),
                "{mode}: {dev} {dir:?} filter survives detach"
            );
        }
        assert_eq!(
            pdscp_tc_filters(&bed.a, UPLINK) + pdscp_tc_filters(&bed.a, "wg0"),
            0,
            "{mode}"
        );
        let before = tc_filter_packets(&bed.a, UPLINK, TcDir::Egress, COUNTER_PRIO);
        send_udp(&bed.a, t.b_addr(false), 9000, 0xb8, 5);
        assert!(
            tc_filter_packets(&bed.a, UPLINK, TcDir::Egress, COUNTER_PRIO) >= before + 5,
            "{mode}: still counting"
        );
    }
}

/// Repeats are no-ops, conflicts and bad input are refused with one line,
/// and none of it disturbs what is attached.
#[test]
fn idempotent_attach_and_refusals_leave_state_alone() {
    let bed = TestBed::new();
    let t1 = bed.add_vxlan("wg1", 101, 51820, Underlay::V4, 1);
    bed.add_vxlan("wg2", 102, 51830, Underlay::V4, 2);
    bed.a
        .sh("ip link add up1 type veth peer name up1p && ip link set up1 up && ip link set up1p up");
    attach(&bed, &t1, UPLINK, "auto");
    let again = attach(&bed, &t1, UPLINK, "auto");
    assert!(again.contains("already attached"), "{again}");
    let before = status(&bed);

    let p = |args: &[&str]| bed.pdscp(args);
    refused(
        p(&["attach", "wg1", "--uplink", "up1", "--port", "51820"]),
        "already attached to uplink up0",
    );
    refused(
        p(&["attach", "wg2", "--uplink", UPLINK, "--port", "51820"]),
        "already used by tunnel wg1",
    );
    refused(
        p(&["attach", "nosuchdev", "--uplink", UPLINK, "--port", "1"]),
        "no network device named",
    );
    refused(
        p(&["attach", "wg2", "--uplink", "nosuchdev", "--port", "1"]),
        "no network device named",
    );
    refused(
        p(&["attach", "wg2", "--uplink", UPLINK]),
        "wg2 is not a WireGuard device: give its outer UDP source port with --port N",
    );
    bed.a.sh("ip tuntap add dev tun9 mode tun && ip link set tun9 up");
    refused(
        p(&["attach", "tun9", "--uplink", UPLINK, "--port", "51820"]),
        "TUN device (userspace WireGuard",
    );
    refused(p(&["attach", "tun9", "--uplink", UPLINK]), "keeps no flow hash");
    refused(
        p(&["attach", "wg2", "--uplink", "wg2", "--any-port"]),
        "another device",
    );
    refused(
        p(&["attach", "../../x", "--uplink", UPLINK, "--any-port"]),
        "invalid interface name",
    );
    refused(
        p(&["attach", "wg2", "--uplink", "x23456789012345678", "--any-port"]),
        "longer than 15 bytes",
    );
    refused(p(&["detach", "wg 1"]), "white space");
    refused(
        p(&[
            "attach", "wg2", "--uplink", UPLINK, "--port", "51830", "--mode", "tc",
        ]),
        "attached in tcx mode",
    );
    let bad_netns = std::process::Command::new(pdscp_bin())
        .arg("--pin-root")
        .arg(&bed.pin_root)
        .args(["--netns", "pdscp-no-such-ns", "status"])
        .output()
        .unwrap();
    refused(bad_netns, "no network namespace");
    assert!(ok(p(&["detach", "wg2"])).contains("not attached"));
    assert!(ok(p(&["detach", "wg1", "--uplink", "up1"])).contains("not attached"));

    // Counters move with the namespaces' own background traffic; the rest must not.
    let without_counters = |s: Value| without_uplink_fields(s, &["counters"]);
    let after = status(&bed);
    assert_eq!(
        without_counters(before),
        without_counters(after),
        "refused commands changed nothing"
    );
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t1.b_addr(false), 9000, 0xb8, 5);
    assert_marked(
        &from_a(&cap.stop(), &t1, IPPROTO_UDP),
        5,
        "wg1 after the refusals",
    );
}

/// `--any-port` matches on the flow hash alone; a tunnel attached with the
/// wrong port is never rewritten.
#[test]
fn any_port_and_wrong_port() {
    let bed = TestBed::new();
    let t1 = bed.add_vxlan("wg1", 101, 51820, Underlay::V4, 1);
    let t2 = bed.add_vxlan("wg2", 102, 51830, Underlay::V6, 2);
    ok(bed.pdscp(&["attach", "wg1", "--uplink", UPLINK, "--any-port"]));
    ok(bed.pdscp(&["attach", "wg2", "--uplink", UPLINK, "--port", "4000"]));
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t1.b_addr(true), 9000, 0xb8, 5);
    send_udp(&bed.a, t2.b_addr(true), 9000, 0xb8, 5);
    let frames = cap.stop();
    assert_marked(&from_a(&frames, &t1, IPPROTO_UDP), 5, "any port");
    assert_unmarked(&from_a(&frames, &t2, IPPROTO_UDP), 5, "wrong port");
    let s = status(&bed);
    let tunnels = s["uplinks"][0]["tunnels"].as_array().unwrap().clone();
    assert_eq!(tunnels[0]["any_port"], true, "{s}");
    assert_eq!(tunnels[1]["port"], 4000, "{s}");
    assert!(
        s["uplinks"][0]["counters"]["missed"].as_u64().unwrap() >= 5,
        "{s}"
    );
}

/// Default pin root layout and the privacy of the pins.
#[test]
fn pins_are_laid_out_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "tcx");
    let dir = bed.pin_root.join(UPLINK);
    for pin in [
        "flows",
        "ifaces",
        "ports",
        "stats",
        "reader",
        "writer",
        "link",
        "tunnels/wg0/link",
    ] {
        assert!(dir.join(pin).exists(), "{pin} pinned");
    }
    for d in [&bed.pin_root, &dir, &dir.join("tunnels")] {
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is private", d.display());
    }
    let text = ok(bed.pdscp(&["status"]));
    assert!(
        text.contains("uplink up0") && text.contains("wg0") && text.contains("51820"),
        "{text}"
    );
}

/// An L3 uplink (no Ethernet header, like PPP or an outer WireGuard): a tun
/// device in namespace a carries the VXLAN tunnel's outer packets, which
/// this test reads from the tun file descriptor after the writer ran.
#[test]
fn l3_uplink_tun() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd};

    let bed = TestBed::new();
    let tun = bed.a.run_in("open tun0", || {
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(fd >= 0, "open /dev/net/tun: {}", std::io::Error::last_os_error());
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut ifr = [0u8; 40];
        ifr[..4].copy_from_slice(b"tun0");
        let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as u16;
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, ifr.as_mut_ptr()) };
        assert_eq!(ret, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
        file
    });
    bed.a
        .sh("ip addr add 198.20.0.1/30 dev tun0 && ip link set tun0 up
         ip link add vx0 type vxlan id 7 local 198.20.0.1 remote 198.20.0.2 dstport 4789 srcport 40001 40002
         ip addr add 198.21.0.1/24 dev vx0 && ip link set vx0 up
         ip neigh replace 198.21.0.2 lladdr 02:00:00:00:21:02 dev vx0 nud permanent");
    ok(bed.pdscp(&["attach", "vx0", "--uplink", "tun0", "--port", "40001"]));
    assert_eq!(status(&bed)["uplinks"][0]["attached"], true);

    // IPv4 (VXLAN outer, rewritten) | UDP 4789 | VXLAN | Ethernet | IPv4 (inner)
    // Only the test's own flow: inner IPv4 UDP (not the devices' IPv6 chatter).
    let is_tunnel_packet = |ip: &[u8]| {
        ip.len() > 20 + 8 + 8 + 14 + 20
            && ip[0] == 0x45
            && ip[9] == 17
            && ip[20..22] == 40001u16.to_be_bytes()
            && ip[48..50] == [0x08, 0x00]
            && ip[50 + 9] == 17
    };
    // Non-blocking reads with a deadline, so the test cannot hang.
    let reader = std::thread::spawn(move || {
        let mut tun = tun;
        let mut packets = Vec::new();
        let mut buf = [0u8; 2048];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        unsafe { libc::fcntl(tun.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        while packets.len() < 5 && std::time::Instant::now() < deadline {
            match tun.read(&mut buf) {
                Ok(n) if is_tunnel_packet(&buf[..n]) => packets.push(buf[..n].to_vec()),
                Ok(_) => {}
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        packets
    });
    send_udp(&bed.a, "198.21.0.2".parse().unwrap(), 9000, 0xb9, 5);
    let outer = reader.join().unwrap();
    assert_eq!(outer.len(), 5, "VXLAN packets read from tun0");
    for ip in outer {
        assert_eq!(ip[20 + 8 + 8 + 14 + 1], 0xb9, "inner TOS");
        assert_eq!(ip[1], 0xb9, "outer marked, ECN kept");
        let sum: u32 = ip[..20]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        assert_eq!((sum + (sum >> 16)) as u16, 0xffff, "outer header checksum valid");
    }
}

/// Without CAP_BPF/CAP_NET_ADMIN pdscp says so in one line and changes nothing.
#[test]
fn refuses_without_privileges() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "auto");
    let before = std::fs::read_dir(bed.pin_root.join(UPLINK)).unwrap().count();
    for args in [&["detach", "wg0"][..], &["status"]] {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", pdscp_bin()])
            .arg("--pin-root")
            .arg(&bed.pin_root)
            .args(args)
            .output()
            .unwrap();
        refused(out, "pdscp needs CAP_BPF and CAP_NET_ADMIN");
    }
    assert_eq!(
        std::fs::read_dir(bed.pin_root.join(UPLINK)).unwrap().count(),
        before
    );
    assert_eq!(status(&bed)["uplinks"][0]["tunnels"][0]["attached"], true);
}

/// `ip netns exec` gives the command a fresh /sys without bpffs: pins made
/// there would vanish, so pdscp refuses and points to --netns.
#[test]
fn refuses_inside_ip_netns_exec() {
    let bed = TestBed::new();
    bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &bed.a.name, pdscp_bin()])
        .args(["attach", "wg0", "--uplink", UPLINK, "--port", "51820"])
        .output()
        .unwrap();
    refused(out, "use `pdscp --netns NAME` instead");
    for cmd in ["status", "detach wg0"] {
        let out = bed
            .a
            .try_sh(&format!("ip netns exec {} {} {cmd}", bed.a.name, pdscp_bin()));
        refused(out, "use `pdscp --netns NAME` instead");
    }
}

/// Without --uplink, the uplink is the device of the route to the tunnel's
/// peer (VXLAN here: its underlay device, else the route to its remote).
#[test]
fn attach_finds_the_uplink() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V6, 1);
    let msg = ok(bed.pdscp(&["attach", "wg0", "--port", "51820"]));
    assert!(msg.contains("attached to up0"), "{msg}");
    bed.a.sh(
        "ip link add vx9 type vxlan id 9 remote 198.18.0.2 dstport 4790 srcport 40009 40010 && ip link set vx9 up
         ip link add vx8 type vxlan id 8 remote 198.19.99.2 dstport 4791 srcport 40011 40012 && ip link set vx8 up
         ip link add vx7 type vxlan id 7 dstport 4792 && ip link set vx7 up",
    );
    let msg = ok(bed.pdscp(&["attach", "vx9", "--port", "40009"]));
    assert!(msg.contains("attached to up0"), "routed: {msg}");
    refused(
        bed.pdscp(&["attach", "vx8", "--port", "40011"]),
        "no route to its peers (198.19.99.2); pass --uplink",
    );
    refused(
        bed.pdscp(&["attach", "vx7", "--port", "40013"]),
        "cannot tell which device its packets leave by",
    );
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t.b_addr(true), 9000, 0xb8, 5);
    assert_marked(&from_a(&cap.stop(), &t, IPPROTO_UDP), 5, "discovered uplink");
}

/// Counters report exactly what was sent, in JSON and in Prometheus format.
#[test]
fn counters_count_exactly() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "auto");
    send_udp(&bed.a, t.b_addr(false), 9000, 0xb8, 7);
    send_udp(&bed.a, t.b_addr(true), 9001, 0x28, 5);
    send_udp(&bed.a, t.b_addr(false), 9002, 0x00, 3);
    let s = status(&bed);
    let c = &s["uplinks"][0]["counters"];
    assert_eq!(c["marked_by_dscp"], serde_json::json!({"46": 7, "10": 5}), "{s}");
    assert_eq!(c["seen_by_dscp"]["46"], 7, "{s}");
    assert_eq!(c["seen_by_dscp"]["10"], 5, "{s}");
    assert!(c["seen_by_dscp"]["0"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(c["flow_inserts"], 2, "{s}");
    assert_eq!(s["uplinks"][0]["map_entries"], 2, "{s}");
    let prom = ok(bed.pdscp(&["status", "--prometheus"]));
    for line in [
        "pdscp_marked_packets_total{uplink=\"up0\",dscp=\"46\"} 7",
        "pdscp_marked_packets_total{uplink=\"up0\",dscp=\"10\"} 5",
        "pdscp_flow_inserts_total{uplink=\"up0\"} 2",
        "pdscp_tunnel_attached{uplink=\"up0\",tunnel=\"wg0\"} 1",
        "pdscp_uplink_attached{uplink=\"up0\"} 1",
    ] {
        assert!(prom.lines().any(|l| l == line), "missing {line:?} in\n{prom}");
    }
}

/// A tunnel inside a tunnel: wg0 is the tunnel of up0 and the uplink of vxi.
/// Its writer (for vxi) must run before its reader (for up0); a tcx reader
/// with a tc writer would run the other way round, so that mix is refused.
#[test]
fn tunnel_in_tunnel_marks_both_layers_and_refuses_mixed_modes() {
    for first_inner in [false, true] {
        let bed = TestBed::new();
        bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
        for (ns, me, peer) in [(&bed.a, 1, 2), (&bed.b, 2, 1)] {
            ns.sh(&format!(
                "ip link add vxi type vxlan id 7 local 198.19.1.{me} remote 198.19.1.{peer} dstport 4790 \
                     srcport 40100 40101 dev wg0
                 ip addr add 198.21.0.{me}/24 dev vxi && ip link set vxi up"
            ));
        }
        let inner = ["attach", "vxi", "--uplink", "wg0", "--port", "40100"];
        let outer = ["attach", "wg0", "--uplink", UPLINK, "--port", "51820"];
        let with_mode = |args: &[&'static str], mode: &'static str| [args, &["--mode", mode]].concat();
        if first_inner {
            ok(bed.pdscp(&with_mode(&inner, "tc")));
            refused(
                bed.pdscp(&with_mode(&outer, "tcx")),
                "attach both with the same --mode",
            );
            ok(bed.pdscp(&["detach", "vxi"]));
        } else {
            ok(bed.pdscp(&with_mode(&outer, "tcx")));
            refused(
                bed.pdscp(&with_mode(&inner, "tc")),
                "attach both with the same --mode",
            );
            assert!(
                !bed.pin_root.join("wg0").exists(),
                "the refused uplink is released again"
            );
        }
        ok(bed.pdscp(&with_mode(&outer, "tcx")));
        ok(bed.pdscp(&with_mode(&inner, "tcx")));
        let cap = Capture::start(&bed.b, UPLINK);
        send_udp(&bed.a, "198.21.0.2".parse().unwrap(), 9000, 0xb8, 5);
        // parse_vxlan sees up0's header outside and vxi's outer header inside.
        let pkts: Vec<TunnelPacket> = parse_all(&cap.stop())
            .into_iter()
            .filter(|p| p.outer_sport == 51820 && p.inner_proto == IPPROTO_UDP && p.inner_dport == Some(4790))
            .collect();
        // vxi also carries the devices' own unmarked chatter (IPv6 ND/MLD).
        let marked = pkts.iter().filter(|p| p.inner_tos == 0xb8).count();
        assert_eq!(marked, 5, "vxi's outer header marked by wg0's writer: {pkts:#?}");
        for p in &pkts {
            assert_eq!(
                p.outer_dscp(),
                dscp(p.inner_tos),
                "up0's header follows vxi's: {p:?}"
            );
            assert!(p.outer_ipv4_checksum_ok);
        }
    }
}
