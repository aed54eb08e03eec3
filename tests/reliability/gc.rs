//! `pdscp gc` repairs the state left by devices that came and went.

use super::*;

/// gc after devices came and went: a deleted tunnel's state goes; a tunnel
/// recreated under its name (new ifindex) is released, not taken for
/// attached, and marks again once re-attached; an uplink recreated (veth
/// pair and addresses) gets its writer back and marks again. The tunnels
/// are routed (no `dev up0`), so they outlive their uplink.
fn gc_repairs(mode: &str) {
    let bed = TestBed::new();
    let spec = |name, vni, srcport, inner| TunnelSpec {
        name,
        vni,
        srcport,
        lower: None,
        a_ip: A_V4,
        b_ip: B_V4,
        inner,
    };
    let g1 = bed.add_tunnel(&spec("gt1", 401, 43000, 1), false);
    let g2 = bed.add_tunnel(&spec("gt2", 402, 43010, 2), false);
    let g3 = bed.add_tunnel(&spec("gt3", 403, 43020, 3), false);
    for t in [&g1, &g2, &g3] {
        attach(&bed, t, UPLINK, mode);
    }
    assert_state(&bed, &attached_map(&[(UPLINK, &["gt1", "gt2", "gt3"])]), mode);

    // A deleted tunnel device.
    bed.a.sh("ip link del gt3");
    let msg = ok(bed.pdscp(&["gc"]));
    assert!(msg.contains("gt3: released"), "{mode}: {msg}");
    assert!(!bed.pin_root.join(UPLINK).join("tunnels/gt3").exists());
    assert_state(&bed, &attached_map(&[(UPLINK, &["gt1", "gt2"])]), "gt3 deleted");

    // A tunnel recreated under the same name.
    let old = bed.a.ifindex("gt2");
    bed.a.sh("ip link del gt2");
    bed.add_tunnel(&spec("gt2", 402, 43010, 2), true);
    assert_ne!(bed.a.ifindex("gt2"), old, "a new ifindex");
    let s = status(&bed);
    let gt2 = s["uplinks"][0]["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "gt2")
        .cloned()
        .unwrap_or_else(|| panic!("{mode}: gt2 in status: {s}"));
    assert_eq!(
        gt2["present"], false,
        "{mode}: recreated device is not the recorded one: {gt2}"
    );
    assert_eq!(gt2["attached"], false, "{mode}: {gt2}");
    let msg = ok(bed.pdscp(&["gc"]));
    assert!(msg.contains("gt2: released"), "{mode}: {msg}");
    assert_state(&bed, &attached_map(&[(UPLINK, &["gt1"])]), "gt2 recreated");
    let w = wire(&bed, &[UPLINK]);
    send_ef(&bed, &[&g1, &g2], 9201, 3);
    attach(&bed, &g2, UPLINK, mode);
    send_ef(&bed, &[&g1, &g2], 9202, 3);
    let frames = w.stop();
    expect_unmarked(&frames, &g2, 9201, 3, "recreated gt2, released");
    expect_marked(&frames, &g2, 9202, 3, "recreated gt2, re-attached");
    expect_marked(&frames, &g1, 9201, 3, "gt1");
    expect_marked(&frames, &g1, 9202, 3, "gt1");

    // The uplink recreated: veth pair, addresses, neighbours.
    let old = bed.a.ifindex(UPLINK);
    bed.a.sh(&format!("ip link del {UPLINK}"));
    bed.add_veth(UPLINK, A_V4, B_V4, 0);
    assert_ne!(bed.a.ifindex(UPLINK), old, "a new ifindex");
    assert_eq!(
        status(&bed)["uplinks"][0]["attached"],
        false,
        "{mode}: writer gone with the device"
    );
    let w = wire(&bed, &[UPLINK]);
    send_ef(&bed, &[&g1], 9203, 3);
    let msg = ok(bed.pdscp(&["gc"]));
    assert!(msg.contains("writer re-attached"), "{mode}: {msg}");
    assert_state(
        &bed,
        &attached_map(&[(UPLINK, &["gt1", "gt2"])]),
        "uplink recreated",
    );
    send_ef(&bed, &[&g1, &g2], 9204, 3);
    let frames = w.stop();
    expect_unmarked(&frames, &g1, 9203, 3, "before gc, no writer on the new uplink");
    expect_marked(&frames, &g1, 9204, 3, "gt1 after gc");
    expect_marked(&frames, &g2, 9204, 3, "gt2 after gc");
    assert!(ok(bed.pdscp(&["gc"])).contains("nothing to repair"));
}

#[test]
fn gc_repairs_after_devices_come_and_go_tcx() {
    gc_repairs("tcx");
}

#[test]
fn gc_repairs_after_devices_come_and_go_tc() {
    gc_repairs("tc");
}
