//! A tunnel attached to several uplinks: its marks follow the route from one
//! to the other with no pdscp command (multi-WAN failover), and each uplink
//! can be taken away on its own.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

const EF: u8 = 0xb8;
const AF41: u8 = 0x88;

/// The bed with up1 beside up0, and loopback tunnels routed over up0 for now.
fn two_routes(tunnels: &[(&str, u32, u16, u8)]) -> (TestBed, Vec<Tunnel>) {
    let bed = TestBed::new();
    bed.add_up1();
    bed.loopback_ends();
    let made = tunnels
        .iter()
        .map(|(name, vni, port, inner)| bed.loopback_tunnel(name, *vni, *port, *inner))
        .collect();
    (bed, made)
}

fn attach_to(bed: &TestBed, t: &Tunnel, uplinks: &[&str], mode: &str) -> String {
    let port = t.srcport.to_string();
    let mut args = vec!["attach", &t.name, "--port", &port, "--mode", mode];
    for u in uplinks {
        args.extend(["--uplink", u]);
    }
    ok(bed.pdscp(&args))
}

/// A TCP stream marked `tos` from a to b: 32 KiB every 20 ms until `stop`.
/// Returns (bytes sent, bytes received).
fn steady_tcp(bed: &TestBed, dst: IpAddr, port: u16, tos: u8, stop: &'static AtomicBool) -> (usize, usize) {
    use std::io::{Read, Write};
    let listener = bed.b.run_in("listen", move || {
        std::net::TcpListener::bind((dst, port)).expect("bind")
    });
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got += n,
                Err(e) => panic!("tcp read: {e}"),
            }
        }
    });
    let sent = bed.a.run_in("steady TCP", move || {
        let mut conn = std::net::TcpStream::connect((dst, port)).expect("connect");
        set_tos(&conn, false, tos);
        let chunk = vec![0x5au8; 32 << 10];
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            conn.write_all(&chunk).expect("tcp write");
            sent += chunk.len();
            thread::sleep(Duration::from_millis(20));
        }
        sent
    });
    (sent, server.join().expect("tcp server"))
}

/// Outer packets of `t` from a, with inner protocol `proto` and, for UDP,
/// inner destination port `dport`.
fn of_flow(frames: &[Vec<u8>], t: &Tunnel, proto: u8, dport: Option<u16>) -> Vec<TunnelPacket> {
    from_a(frames, t, proto)
        .into_iter()
        .filter(|p| p.inner_src == t.a_addr(false) && (dport.is_none() || p.inner_dport == dport))
        .collect()
}

/// Marks follow the route: UDP marked EF and AF41 at 250 packets a second
/// each, and a TCP transfer marked AF41, while the route flips between the
/// two uplinks 20 times. Every outer packet of those flows, on either
/// uplink, must carry its mark, and none may be lost.
fn marks_follow_the_route(modes: [&str; 2]) {
    let (bed, tunnels) = two_routes(&[("wg0", 100, 51820, 1)]);
    let t = &tunnels[0];
    if modes[0] == modes[1] {
        let msg = attach_to(&bed, t, &[UPLINK, UP1], modes[0]);
        assert!(msg.contains("attached to up0, up1"), "{msg}");
    } else {
        // One uplink in each mode: up1 first, in its own; up0 then takes auto's.
        attach_to(&bed, t, &[UP1], modes[1]);
        let msg = ok(bed.pdscp(&["attach", "wg0", "--port", "51820", "--uplink", UPLINK]));
        assert!(msg.contains("attached to up0, up1"), "{msg}");
    }
    let s = status(&bed);
    for (up, mode) in [UPLINK, UP1].iter().zip(modes) {
        assert_eq!(uplink(&s, up)["mode"], mode, "{s:#}");
    }

    let caps = [Capture::start(&bed.b, UPLINK), Capture::start(&bed.b, UP1)];
    let dst = t.b_addr(false);
    let ef = SteadyUdp::start(&bed.a, dst, 9500, EF, 250);
    let af41 = SteadyUdp::start(&bed.a, dst, 9501, AF41, 250);
    static TCP_STOP: AtomicBool = AtomicBool::new(false);
    TCP_STOP.store(false, Ordering::Relaxed);
    let (switches, (tcp_sent, tcp_received)) = thread::scope(|s| {
        let tcp = s.spawn(|| steady_tcp(&bed, dst, 5201, AF41, &TCP_STOP));
        let started = Instant::now();
        let mut switches = 0;
        for i in 0..20 {
            thread::sleep(Duration::from_millis(100));
            bed.route_via(if i % 2 == 0 { UP1 } else { UPLINK });
            switches += 1;
        }
        thread::sleep(Duration::from_millis(100));
        TCP_STOP.store(true, Ordering::Relaxed);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "flipping took too long"
        );
        (switches, tcp.join().expect("tcp"))
    });
    let sent = [ef.stop(), af41.stop()];
    let frames: Vec<Vec<Vec<u8>>> = caps.into_iter().map(Capture::stop).collect();

    let what = format!("{modes:?}");
    assert_eq!(tcp_received, tcp_sent, "{what}: TCP stream");
    let mut report = Vec::new();
    for (i, up) in [UPLINK, UP1].iter().enumerate() {
        let mut line = format!("{up}:");
        for ((dport, tos), n_sent) in [(9500, EF), (9501, AF41)].iter().zip(sent) {
            let pkts = of_flow(&frames[i], t, IPPROTO_UDP, Some(*dport));
            let marked = pkts.iter().filter(|p| p.outer_dscp() == tos >> 2).count();
            assert_eq!(
                marked,
                pkts.len(),
                "{what}: UDP to {dport} on {up}: every packet marked"
            );
            line += &format!(" udp {tos:#x} {}/{n_sent} marked", pkts.len());
        }
        // The handshake leaves before the socket's mark is set: every segment
        // carries its own inner mark outside, and the rest are AF41.
        let tcp = of_flow(&frames[i], t, IPPROTO_TCP, None);
        let copied = tcp.iter().filter(|p| p.outer_dscp() == p.inner_dscp()).count();
        assert_eq!(
            copied,
            tcp.len(),
            "{what}: TCP on {up}: every segment carries its inner mark"
        );
        let tcp_marked = tcp.iter().filter(|p| p.outer_dscp() == AF41 >> 2).count();
        assert!(
            tcp_marked + 3 >= tcp.len(),
            "{what}: TCP on {up}: {tcp_marked} of {} AF41",
            tcp.len()
        );
        assert!(!tcp.is_empty(), "{what}: the TCP stream crossed {up} too");
        assert!(tcp.iter().all(|p| p.outer_ipv4_checksum_ok), "{what}: checksums");
        line += &format!(", tcp {tcp_marked}/{} marked", tcp.len());
        report.push(line);
    }
    let mut lost = Vec::new();
    for ((dport, _), n_sent) in [(9500, EF), (9501, AF41)].iter().zip(sent) {
        let on_wire: usize = frames
            .iter()
            .map(|f| of_flow(f, t, IPPROTO_UDP, Some(*dport)).len())
            .sum();
        // A route change may itself drop a packet in flight (seen once in
        // 20 switches on a loaded machine); pdscp never drops one.
        assert!(
            on_wire <= n_sent && n_sent - on_wire <= switches,
            "{what}: UDP to {dport}: {n_sent} sent, {on_wire} seen on the two uplinks"
        );
        lost.push(n_sent - on_wire);
        for f in &frames {
            assert!(
                !of_flow(f, t, IPPROTO_UDP, Some(*dport)).is_empty(),
                "{what}: both uplinks carried {dport}"
            );
        }
    }
    eprintln!(
        "failover {what}: {switches} switches; {}; UDP lost to route changes {lost:?}",
        report.join("; ")
    );
}

#[test]
fn marks_follow_the_route_between_two_uplinks_tcx() {
    marks_follow_the_route(["tcx", "tcx"]);
}

#[test]
fn marks_follow_the_route_between_two_uplinks_tc() {
    marks_follow_the_route(["tc", "tc"]);
}

#[test]
fn marks_follow_the_route_between_a_tcx_and_a_tc_uplink() {
    marks_follow_the_route(["tcx", "tc"]);
}

/// `detach --uplink up1` takes the tunnel off up1 only: up0 keeps marking,
/// up1 carries it unmarked and runs no program of pdscp's.
#[test]
fn detach_from_one_uplink_leaves_the_other_marking() {
    for mode in MODES {
        let (bed, tunnels) = two_routes(&[("wg0", 100, 51820, 1)]);
        let t = &tunnels[0];
        attach_to(&bed, t, &[UPLINK, UP1], mode);
        let msg = ok(bed.pdscp(&["detach", "wg0", "--uplink", UP1]));
        assert!(msg.contains("detached from up1") && msg.contains("up1"), "{msg}");
        assert_state(
            &bed,
            &attached_map(&[(UPLINK, &["wg0"])]),
            &format!("{mode}: after detach --uplink"),
        );
        assert!(
            pdscp_hooks(&bed.a).iter().all(|h| h.dev != UP1),
            "{mode}: nothing on up1"
        );
        for (up, marked) in [(UPLINK, true), (UP1, false)] {
            bed.route_via(up);
            let cap = Capture::start(&bed.b, up);
            send_udp(&bed.a, t.b_addr(false), 9000, EF, 5);
            let pkts = from_a(&cap.stop(), t, IPPROTO_UDP);
            if marked {
                assert_marked(&pkts, 5, &format!("{mode}: via {up}"));
            } else {
                assert_unmarked(&pkts, 5, &format!("{mode}: via {up}"));
            }
        }
        let msg = ok(bed.pdscp(&["detach", "wg0", "--uplink", UPLINK]));
        assert!(
            msg.contains("uplink released"),
            "{mode}: the last uplink takes the tunnel: {msg}"
        );
        assert!(
            listing(&bed.pin_root).is_empty(),
            "{mode}: {:?}",
            listing(&bed.pin_root)
        );
    }
}

/// Two tunnels share both uplinks: each keeps its own marks on either, and
/// one leaving takes nothing of the other's.
#[test]
fn two_tunnels_share_two_uplinks() {
    let (bed, tunnels) = two_routes(&[("wg0", 100, 51820, 1), ("wg1", 101, 51830, 2)]);
    for t in &tunnels {
        attach_to(&bed, t, &[UPLINK, UP1], "auto");
    }
    assert_state(
        &bed,
        &attached_map(&[(UPLINK, &["wg0", "wg1"]), (UP1, &["wg0", "wg1"])]),
        "both on both",
    );
    let check = |tunnels: &[&Tunnel], what: &str| {
        for up in [UP1, UPLINK] {
            bed.route_via(up);
            let cap = Capture::start(&bed.b, up);
            for (t, tos) in tunnels.iter().zip([EF, AF41]) {
                send_udp(&bed.a, t.b_addr(false), 9000, tos, 5);
            }
            let frames = cap.stop();
            for (t, tos) in tunnels.iter().zip([EF, AF41]) {
                let pkts = from_a(&frames, t, IPPROTO_UDP);
                assert_marked(&pkts, 5, &format!("{what}: {} via {up}", t.name));
                assert!(
                    pkts.iter().all(|p| p.outer_dscp() == tos >> 2),
                    "{what}: {} keeps its own mark",
                    t.name
                );
            }
        }
    };
    check(&[&tunnels[0], &tunnels[1]], "both attached");
    ok(bed.pdscp(&["detach", "wg0"]));
    assert_state(
        &bed,
        &attached_map(&[(UPLINK, &["wg1"]), (UP1, &["wg1"])]),
        "wg0 gone",
    );
    check(&[&tunnels[1]], "wg1 alone");
}

/// A peer routed over an uplink the tunnel is not attached to leaves
/// unmarked: status says so in text, JSON and Prometheus.
#[test]
fn status_flags_a_peer_routed_over_an_unattached_uplink() {
    let (bed, tunnels) = two_routes(&[("wg0", 100, 51820, 1)]);
    attach_to(&bed, &tunnels[0], &[UPLINK], "auto");
    let flagged = |bed: &TestBed| {
        let s = status(bed);
        let t = &s["tunnels"][0];
        assert_eq!(t["routes"][0]["peer"], LO_B.to_string(), "{s:#}");
        (t["unmarked_peers"].as_u64(), t["routes"][0]["uplink"].clone())
    };
    assert_eq!(flagged(&bed), (Some(0), UPLINK.into()));
    bed.route_via(UP1);
    assert_eq!(flagged(&bed), (Some(1), UP1.into()));
    let text = ok(bed.pdscp(&["status"]));
    assert!(
        text.contains("via up1 (NOT ATTACHED THERE: leaves unmarked)"),
        "{text}"
    );
    let prom = ok(bed.pdscp(&["status", "--prometheus"]));
    assert!(
        prom.contains("pdscp_tunnel_unmarked_peers{tunnel=\"wg0\"} 1\n"),
        "{prom}"
    );
    // Attaching it there too clears the flag.
    attach_to(&bed, &tunnels[0], &[UP1], "auto");
    assert_eq!(flagged(&bed), (Some(0), UP1.into()));
}
