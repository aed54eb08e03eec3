//! What pdscp refuses: repeats and conflicts (which change nothing), no
//! privileges, `ip netns exec`.

use super::*;

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
    let before = status_without_counters(&bed.pin_root, &bed.a);

    let p = |args: &[&str]| bed.pdscp(args);
    refused(
        p(&[
            "attach",
            "wg2",
            "--uplink",
            UPLINK,
            "--port",
            "51830",
            "--priority-only",
        ]),
        "has no CAKE root qdisc",
    );
    refused(
        p(&[
            "attach",
            "wg2",
            "--uplink",
            UPLINK,
            "--port",
            "51830",
            "--fixed",
            "cs1",
            "--reflect",
            "out",
        ]),
        "cannot be combined with --reflect",
    );
    refused(
        p(&[
            "attach",
            "wg2",
            "--uplink",
            UPLINK,
            "--any-port",
            "--fixed",
            "cs1",
        ]),
        "--fixed needs the tunnel's own port",
    );
    refused(
        p(&["attach", "wg2", "--uplink", UPLINK, "--dscp-map", "46=99"]),
        "is not a DSCP",
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
    let after = status_without_counters(&bed.pin_root, &bed.a);
    assert_eq!(before, after, "refused commands changed nothing");
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t1.b_addr(false), 9000, 0xb8, 5);
    assert_marked(
        &from_a(&cap.stop(), &t1, IPPROTO_UDP),
        5,
        "wg1 after the refusals",
    );
}

/// Without CAP_BPF/CAP_NET_ADMIN pdscp says so in one line and changes nothing.
#[test]
fn refuses_without_privileges() {
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "auto");
    let before = listing(&bed.pin_root);
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
    assert_eq!(listing(&bed.pin_root), before);
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

/// A kernel older than the minimum is refused in one line before anything
/// is loaded or pinned (PDSCP_TEST_KERNEL_RELEASE stands in for an old one).
#[test]
fn refuses_a_kernel_older_than_5_10() {
    let bed = TestBed::new();
    bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    for old in ["5.4.0-150-generic", "4.19.0"] {
        let mut cmd = pdscp_cmd(
            &bed.pin_root,
            Some(&bed.a),
            &["attach", "wg0", "--uplink", UPLINK, "--port", "51820"],
        );
        cmd.env("PDSCP_TEST_KERNEL_RELEASE", old);
        let msg = refused(
            run_cmd(cmd),
            &format!("pdscp needs Linux 5.10 or newer; this kernel is {old}"),
        );
        assert_eq!(msg.trim().lines().count(), 1, "{msg}");
        assert!(
            listing(&bed.pin_root).is_empty(),
            "{old}: {:?}",
            listing(&bed.pin_root)
        );
        assert!(pdscp_hooks(&bed.a).is_empty(), "{old}");
    }
    let mut cmd = pdscp_cmd(
        &bed.pin_root,
        Some(&bed.a),
        &["attach", "wg0", "--uplink", UPLINK, "--port", "51820"],
    );
    cmd.env("PDSCP_TEST_KERNEL_RELEASE", "5.10.0-46-amd64");
    ok(run_cmd(cmd));
}
