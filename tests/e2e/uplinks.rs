//! Uplinks: found from the route when not given, an L3 uplink (tun), a
//! tunnel inside a tunnel.

use super::*;

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

/// An L3 uplink (no Ethernet header, like PPP or an outer WireGuard): a tun
/// device in namespace a carries the VXLAN tunnel's outer packets, which
/// this test reads from the tun file descriptor after the writer ran.
#[test]
fn l3_uplink_tun() {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    let bed = TestBed::new();
    let tun = open_tun(&bed.a, "tun0");
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
