//! Debian ifupdown: `pdscp*` options in a stanza, if-up.d and if-post-down.d.

use super::*;

/// A stanza with `pdscp yes`, `pdscp-uplink`, `pdscp-port`: post-up attaches
/// (once per address family: idempotent) and the packets leave marked;
/// post-down after the stanza's `post-down ip link del` leaves nothing.
#[test]
fn ifupdown_stanza_attaches_marks_and_detaches() {
    let (bed, s, env) = bed_and_sandbox();
    let t = bed.add_vxlan("vx1", 101, 40001, Underlay::V4, 1);
    let stanza = [
        ("IF_ADDRESS", "198.19.1.1/24"),
        ("IF_PDSCP", "yes"),
        ("IF_PDSCP_UPLINK", UPLINK),
        ("IF_PDSCP_PORT", "40001"),
    ];
    assert_unmarked(&udp_through(&bed, &t));

    ifupdown(&bed.a, &env, "vx1", true, &stanza);
    assert_attached(&bed, "vx1", UPLINK, Some(40001), &s);
    assert!(
        s.syslog().contains("daemon.info -- vx1: attached"),
        "{}",
        s.syslog()
    );
    // ifupdown runs if-up.d again for the inet6 stanza of the same interface.
    let mut inet6 = stanza.to_vec();
    inet6.push(("ADDRFAM", "inet6"));
    ifupdown(&bed.a, &env, "vx1", true, &inet6);
    assert_attached(&bed, "vx1", UPLINK, Some(40001), &s);
    assert_marked(&udp_through(&bed, &t));

    del_link(&bed, "vx1");
    ifupdown(&bed.a, &env, "vx1", false, &stanza);
    assert_nothing_left(&bed);
    // A second ifdown (or one for a tunnel never attached) is harmless.
    ifupdown(&bed.a, &env, "vx1", false, &stanza);
    s.assert_no_errors_logged();
}

/// Interfaces without pdscp options and not in the tunnels file, the uplink
/// itself, and a stanza with `pdscp no` (even if the tunnels file lists it)
/// are left alone; `pdscp-port any` and an interface found only in the
/// tunnels file are attached.
#[test]
fn ifupdown_acts_only_for_configured_interfaces() {
    let (bed, s, env) = bed_and_sandbox();
    bed.add_vxlan("vx1", 101, 40001, Underlay::V4, 1);
    bed.add_vxlan("vx2", 102, 40002, Underlay::V4, 2);
    bed.add_vxlan("vx3", 103, 40003, Underlay::V4, 3);

    ifupdown(&bed.a, &env, "vx1", true, &[("IF_ADDRESS", "198.19.1.1/24")]);
    ifupdown(&bed.a, &env, UPLINK, true, &[]);
    ifupdown(&bed.a, &env, "--all", true, &[]);
    ifupdown(&bed.a, &env, "lo", true, &[]);
    assert_nothing_left(&bed);

    s.write(
        "tunnels",
        "vx1 uplink=up0 port=40001\nvx3 uplink=up0 port=40003\n",
    );
    ifupdown(&bed.a, &env, "vx1", true, &[("IF_PDSCP", "no")]);
    assert_nothing_left(&bed);

    ifupdown(
        &bed.a,
        &env,
        "vx2",
        true,
        &[("IF_PDSCP_UPLINK", UPLINK), ("IF_PDSCP_PORT", "40002")],
    );
    assert_attached(&bed, "vx2", UPLINK, Some(40002), &s);
    ifupdown(&bed.a, &env, "vx3", true, &[]);
    assert_attached(&bed, "vx3", UPLINK, Some(40003), &s);
    assert_not_attached(&bed, "vx1");
    s.assert_no_errors_logged();
}
