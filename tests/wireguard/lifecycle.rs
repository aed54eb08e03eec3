//! Tunnels side by side: detach one, attach it again, delete one.

use super::*;

/// Two WireGuard interfaces on one uplink: detaching one leaves the other
/// marked, attaching it again marks it again.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn two_tunnels_one_uplink_detach_and_reattach_one() {
    let bed = wireguard_bed();
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
    let bed = wireguard_bed();
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
    assert!(
        !bed.pin_root.join("uplinks").join(UPLINK).exists(),
        "uplink pins removed"
    );
    assert!(
        listing(&bed.pin_root).is_empty(),
        "nothing left: {:?}",
        listing(&bed.pin_root)
    );
    assert_eq!(status(&bed)["uplinks"].as_array().map(Vec::len), Some(0));
}
