//! NetworkManager's dispatcher: listed tunnels, and uplinks coming up.

use super::*;

/// up attaches a listed tunnel, leaves an unlisted one alone; pre-down
/// detaches; down after the device is gone leaves nothing.
#[test]
fn networkmanager_dispatcher_attaches_listed_tunnels() {
    let (bed, s, env) = bed_and_sandbox();
    let t = bed.add_vxlan("vx2", 102, 40002, Underlay::V6, 2);
    bed.add_vxlan("vx3", 103, 40003, Underlay::V4, 3);
    s.write(
        "tunnels",
        "# pdscp hooks test\n\n  vx2\tuplink=up0   port=40002  # the tunnel\nother0 port=1\n",
    );

    nm_dispatcher(&bed.a, &env, "vx3", "up");
    nm_dispatcher(&bed.a, &env, "vx2", "dhcp4-change");
    assert_nothing_left(&bed);

    nm_dispatcher(&bed.a, &env, "vx2", "up");
    assert_attached(&bed, "vx2", UPLINK, Some(40002), &s);
    // The uplink coming up attaches it again (a no-op here).
    nm_dispatcher(&bed.a, &env, UPLINK, "up");
    nm_dispatcher(&bed.a, &env, "vx2", "up");
    assert_attached(&bed, "vx2", UPLINK, Some(40002), &s);
    assert_marked(&udp_through(&bed, &t));
    nm_dispatcher(&bed.a, &env, "vx3", "down");
    assert_attached(&bed, "vx2", UPLINK, Some(40002), &s);

    nm_dispatcher(&bed.a, &env, "vx2", "pre-down");
    assert_nothing_left(&bed);
    nm_dispatcher(&bed.a, &env, "vx2", "up");
    assert_attached(&bed, "vx2", UPLINK, Some(40002), &s);
    del_link(&bed, "vx2");
    nm_dispatcher(&bed.a, &env, "vx2", "down");
    assert_nothing_left(&bed);
    s.assert_no_errors_logged();
}

/// An interface that is no configured tunnel coming up may be a recreated
/// uplink without pdscp's program (PPP reconnect; here the writer's tc filter
/// went with the clsact qdisc): `pdscp gc` puts it back, whoever attached
/// the tunnel. It may also be the route a listed tunnel's uplink discovery
/// lacked: the listed tunnels that exist are attached.
#[test]
fn uplink_up_repairs_and_attaches_its_tunnels() {
    let (bed, s, env) = bed_and_sandbox();
    bed.add_vxlan("vx4", 104, 40004, Underlay::V4, 4);
    bed.add_vxlan("vx5", 105, 40005, Underlay::V4, 5);
    let stanza = [
        ("IF_PDSCP_UPLINK", UPLINK),
        ("IF_PDSCP_PORT", "40005"),
        ("IF_PDSCP_MODE", "tc"),
    ];
    ifupdown(&bed.a, &env, "vx5", true, &stanza);
    assert_attached(&bed, "vx5", UPLINK, Some(40005), &s);

    bed.a.sh("tc qdisc del dev up0 clsact");
    let st = status(&bed);
    assert_eq!(find_tunnel(&st, "vx5").unwrap().0["attached"], false, "{st:#}");
    ifupdown(&bed.a, &env, UPLINK, true, &[]);
    let st = assert_attached(&bed, "vx5", UPLINK, Some(40005), &s);
    assert_eq!(find_tunnel(&st, "vx5").unwrap().0["mode"], "tc", "{st:#}");
    assert!(
        s.syslog().contains("daemon.debug -- up0: writer re-attached"),
        "{}",
        s.syslog()
    );

    // A tunnel attached on an uplink event is news (info); one that was
    // attached already is not (debug).
    s.write("tunnels", "vx4 uplink=up0 port=40004\n");
    nm_dispatcher(&bed.a, &env, UPLINK, "up");
    assert_attached(&bed, "vx4", UPLINK, Some(40004), &s);
    assert!(
        s.syslog().contains("daemon.info -- vx4: attached"),
        "{}",
        s.syslog()
    );
    nm_dispatcher(&bed.a, &env, UPLINK, "up");
    assert!(
        s.syslog().contains("daemon.debug -- vx4: already attached"),
        "{}",
        s.syslog()
    );
    s.assert_no_errors_logged();
}
