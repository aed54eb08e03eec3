//! `pdscp check TUNNEL`: a healthy tunnel passes (exit 0), and each cause of
//! missing marks is made true on the bed and named: not attached, the
//! reader gone, the device recreated, a program rewriting DSCP after
//! pdscp, NAT rewriting the source port, a peer routed over an unattached
//! uplink, a userspace tunnel on a TUN device, a kernel too old.

use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::Duration;

use super::*;

const EF: u8 = 0xb8;

/// `check` while EF traffic runs through `t`.
fn check_with_traffic(bed: &TestBed, t: &Tunnel, extra: &[&str]) -> (bool, String) {
    let sender = SteadyUdp::start(&bed.a, t.b_addr(false), 9700, EF, 200);
    thread::sleep(Duration::from_millis(200));
    let result = bed.check(&t.name, extra);
    sender.stop();
    result
}

#[test]
fn a_healthy_tunnel_checks_ok_and_exits_0() {
    for mode in MODES {
        let bed = TestBed::new();
        let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
        attach(&bed, &t, UPLINK, mode);
        let (passed, text) = check_with_traffic(&bed, &t, &[]);
        assert!(passed, "{mode}: healthy tunnel:\n{text}");
        assert!(text.contains("marks are flowing"), "{text}");
        assert!(!text.contains("FAIL"), "{text}");
        assert!(
            text.contains(&format!("the writer runs on {UPLINK} ({mode})")),
            "{text}"
        );
        assert!(text.contains("from port 51820: ef "), "the wire shows EF: {text}");
        let sender = SteadyUdp::start(&bed.a, t.b_addr(false), 9700, EF, 200);
        let out = bed.pdscp(&["check", "wg0", "--seconds", "2", "--json"]);
        sender.stop();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check --json");
        assert!(out.status.success(), "{json:#}");
        assert_eq!(json["flowing"], true, "{json:#}");
        assert!(
            json["traffic"]["marked_by_dscp"]["46"].as_u64() > Some(100),
            "{json:#}"
        );
        eprintln!("check {mode}, healthy:\n{text}");
    }
}

#[test]
fn without_traffic_check_fails_and_a_probe_makes_it_pass() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "auto");
    // Idle but for the odd unmarked IPv6 chatter: nothing to carry either way.
    assert_check_fails_naming(bed.check("wg0", &[]), "run with --probe", "idle");
    for probe in ["--probe".to_string(), format!("--probe={}", t.b_addr(false))] {
        let (passed, text) = bed.check("wg0", &[&probe]);
        assert!(passed, "{probe}:\n{text}");
        assert!(
            text.contains("probe: 100 ef packets sent to 198.19.1.2"),
            "{text}"
        );
    }
}

#[test]
fn a_tunnel_that_is_not_attached_is_named() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    assert_check_fails_naming(
        check_with_traffic(&bed, &t, &[]),
        "wg0 is not attached",
        "never attached",
    );
    attach(&bed, &t, UPLINK, "auto");
    detach(&bed, &t);
    assert_check_fails_naming(
        check_with_traffic(&bed, &t, &[]),
        "wg0 is not attached",
        "detached",
    );
}

#[test]
fn a_reader_taken_away_is_named() {
    for mode in MODES {
        let bed = TestBed::new();
        let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
        attach(&bed, &t, UPLINK, mode);
        match mode {
            "tc" => {
                bed.a
                    .sh(&format!("tc filter del dev wg0 egress pref {PDSCP_PRIO_READER}"));
            }
            _ => {
                std::fs::remove_file(bed.pin_root.join("tunnels/wg0/link")).expect("unpin the reader's link")
            }
        }
        assert_check_fails_naming(
            check_with_traffic(&bed, &t, &[]),
            &format!("the reader is not running on wg0 (its {mode} hook is gone)"),
            mode,
        );
    }
}

#[test]
fn a_recreated_tunnel_device_is_named() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "auto");
    let old = bed.a.ifindex("wg0");
    bed.a.sh("ip link del wg0");
    let spec = TunnelSpec {
        name: "wg0",
        vni: 100,
        srcport: 51820,
        lower: Some(UPLINK),
        a_ip: A_V4,
        b_ip: B_V4,
        inner: 1,
    };
    bed.add_tunnel(&spec, true);
    let new = bed.a.ifindex("wg0");
    assert_check_fails_naming(
        check_with_traffic(&bed, &t, &[]),
        &format!("wg0 was recreated (ifindex {old} is now {new})"),
        "recreated",
    );
}

/// pdscp first on TCX, a CS1 writer as a tc filter (which runs after every
/// TCX program); pdscp as a tc filter, the CS1 writer at a later priority.
#[test]
fn a_program_rewriting_dscp_after_pdscp_is_named() {
    for (mode, prio) in [("tcx", 0x110u16), ("tc", 0xe000)] {
        let bed = TestBed::new();
        let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
        attach(&bed, &t, UPLINK, mode);
        let dir = Scratch::new(std::path::Path::new("/sys/fs/bpf"), "pdscp-check");
        let prog = pin_foreign(dir.path(), "cs1", ForeignProgram::MarkCs1);
        add_foreign_filter(&bed.a, UPLINK, prio, &prog);
        let result = check_with_traffic(&bed, &t, &[]);
        assert_check_fails_naming(result.clone(), "but the wire shows cs1", mode);
        assert!(
            result
                .1
                .contains(&format!("tc filter bpf priority {prio} running foreign_mark_cs")),
            "{mode}: the culprit named:\n{}",
            result.1
        );
    }
}

#[test]
fn nat_rewriting_the_source_port_is_named() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "auto");
    bed.a.sh(&format!(
        "nft add table ip pdscp_check_nat && \
         nft add chain ip pdscp_check_nat post '{{ type nat hook postrouting priority 100 ; }}' && \
         nft add rule ip pdscp_check_nat post oifname {UPLINK} udp sport 51820 masquerade fully-random"
    ));
    assert_check_fails_naming(
        check_with_traffic(&bed, &t, &[]),
        &format!("NAT on {UPLINK} rewrites the source port"),
        "fully-random",
    );
}

#[test]
fn a_peer_routed_over_an_unattached_uplink_is_named() {
    let bed = TestBed::new();
    bed.add_up1();
    bed.loopback_ends();
    let t = bed.loopback_tunnel("wg0", 100, 51820, 1);
    ok(bed.pdscp(&["attach", "wg0", "--port", "51820", "--uplink", UPLINK]));
    let (passed, text) = check_with_traffic(&bed, &t, &[]);
    assert!(passed, "over up0:\n{text}");
    bed.route_via(UP1);
    assert_check_fails_naming(
        check_with_traffic(&bed, &t, &[]),
        &format!("is routed over {UP1}, which wg0 is not attached to"),
        "over up1",
    );
}

/// A userspace tunnel cannot be attached to copy marks (its packets keep
/// no flow hash): check says why, and passes once it has a fixed mark.
#[test]
fn a_userspace_tunnel_on_a_tun_device_is_named() {
    let bed = TestBed::new();
    let tun = open_tun(&bed.a, "tun9");
    bed.a
        .sh("ip addr add 198.19.9.1/24 dev tun9 && ip link set tun9 up");
    let tunnel = UserspaceTunnel::start(&bed.a, tun, 40100, SocketAddr::new(B_V4.into(), 40101));
    refused(
        bed.pdscp(&["attach", "tun9", "--port", "40100", "--uplink", UPLINK]),
        "TUN device",
    );
    let dst: IpAddr = "198.19.9.2".parse().expect("addr");
    let sender = SteadyUdp::start(&bed.a, dst, 9700, EF, 200);
    let result = bed.check("tun9", &[]);
    sender.stop();
    assert_check_fails_naming(result, "tun9 is a TUN device (userspace WireGuard", "tun");
    ok(bed.pdscp(&[
        "attach", "tun9", "--port", "40100", "--uplink", UPLINK, "--fixed", "af41",
    ]));
    let sender = SteadyUdp::start(&bed.a, dst, 9700, EF, 200);
    let (passed, text) = bed.check("tun9", &[]);
    sender.stop();
    assert!(tunnel.stop() > 100, "the userspace tunnel carried the traffic");
    assert!(passed, "with a fixed mark:\n{text}");
}

#[test]
fn a_kernel_older_than_the_minimum_is_named() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "auto");
    let sender = SteadyUdp::start(&bed.a, t.b_addr(false), 9700, EF, 200);
    let mut cmd = pdscp_cmd(&bed.pin_root, Some(&bed.a), &["check", "wg0", "--seconds", "2"]);
    cmd.env("PDSCP_TEST_KERNEL_RELEASE", "5.4.0-42-generic");
    let out = run_cmd(cmd);
    sender.stop();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_check_fails_naming(
        (out.status.success(), text),
        "kernel 5.4.0-42-generic is older than 5.10",
        "old kernel",
    );
}
