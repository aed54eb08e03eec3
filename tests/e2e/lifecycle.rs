//! Attaching and detaching: tunnels side by side, devices that vanish, the
//! pins left behind (none), and other filters that outlive pdscp.

use serde_json::Value;

use super::*;

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

#[test]
fn detach_after_the_tunnel_device_is_gone() {
    for mode in MODES {
        let bed = TestBed::new();
        let t1 = bed.add_vxlan("wg1", 101, 51820, Underlay::V4, 1);
        let t2 = bed.add_vxlan("wg2", 102, 51830, Underlay::V4, 2);
        attach(&bed, &t1, UPLINK, mode);
        attach(&bed, &t2, UPLINK, mode);
        let uplink_dir = bed.pin_root.join("uplinks").join(UPLINK);
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
        assert!(!bed.pin_root.join("tunnels/wg1").exists());

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
        assert!(
            std::fs::read_dir(&bed.pin_root).unwrap().next().is_none(),
            "{mode}: nothing attached, nothing pinned"
        );
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

/// Default pin root layout and the privacy of the pins.
#[test]
fn pins_are_laid_out_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let bed = TestBed::new();
    let t = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    attach(&bed, &t, UPLINK, "tcx");
    let dir = &bed.pin_root;
    for pin in [
        "stamp",
        "maps/flows",
        "maps/reflect",
        "maps/tunnels",
        "maps/uplinks",
        "maps/devices",
        "maps/ports",
        "maps/tunnel_stats",
        "maps/link_stats",
        "maps/uplink_stats",
        "progs/reader",
        "progs/writer",
        "progs/ingress",
        "uplinks/up0/link",
        "tunnels/wg0/link",
    ] {
        assert!(dir.join(pin).exists(), "{pin} pinned");
        if !pin.ends_with("link") || pin.contains('/') {
            let mode = std::fs::metadata(dir.join(pin)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{pin} is private");
        }
    }
    for d in [
        "",
        "maps",
        "progs",
        "uplinks",
        "uplinks/up0",
        "tunnels",
        "tunnels/wg0",
    ]
    .map(|d| dir.join(d))
    {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is private", d.display());
    }
    let text = ok(bed.pdscp(&["status"]));
    assert!(
        text.contains("uplink up0") && text.contains("wg0") && text.contains("51820"),
        "{text}"
    );
}
