//! Several uplinks: `uplink=` repeated in the tunnels file (and
//! `pdscp-uplink` with several devices in an ifupdown stanza), and uplinks
//! coming up that tunnels now use. The bed has a second uplink, up1, and
//! tunnels between the loopbacks of a and b, so the route decides which
//! uplink a tunnel's packets leave by.

use super::*;

/// Every packet of 5 EF packets that left by `uplink` carries its mark.
fn assert_marked_via(bed: &TestBed, t: &Tunnel, uplink: &str) {
    let pkts = udp_via(bed, t, uplink);
    assert_eq!(pkts.len(), 5, "{} via {uplink}: {pkts:?}", t.name);
    assert!(
        pkts.iter().all(|p| p.outer_dscp() == 46),
        "{} via {uplink}: {pkts:?}",
        t.name
    );
}

/// `vx20 uplink=up0 uplink=up1` attaches the tunnel to both at once, so its
/// marks follow the route from one to the other with no further command; so
/// does a stanza's `pdscp-uplink up0 up1`.
#[test]
fn every_uplink_listed_for_a_tunnel_is_attached() {
    let (bed, s, env) = bed_and_sandbox();
    bed.add_up1();
    bed.loopback_ends();
    let t = bed.loopback_tunnel("vx20", 120, 40020, 20);
    s.write("tunnels", "vx20 uplink=up0 uplink=up1 port=40020\n");

    nm_dispatcher(&bed.a, &env, "vx20", "up");
    assert_eq!(tunnel_uplinks(&bed, "vx20"), [UPLINK, UP1], "{}", s.syslog());
    for up in [UP1, UPLINK, UP1] {
        assert_marked_via(&bed, &t, up);
    }
    nm_dispatcher(&bed.a, &env, "vx20", "pre-down");
    assert_nothing_left(&bed);

    let stanza = [("IF_PDSCP_UPLINK", "up0 up1"), ("IF_PDSCP_PORT", "40020")];
    ifupdown(&bed.a, &env, "vx20", true, &stanza);
    assert_eq!(tunnel_uplinks(&bed, "vx20"), [UPLINK, UP1], "{}", s.syslog());
    ifupdown(&bed.a, &env, "vx20", false, &stanza);
    assert_nothing_left(&bed);
    s.assert_no_errors_logged();
}

/// A tunnel without `uplink=` is attached to the uplink its peer is routed
/// over. When the route moves to up1 and up1 comes up, each manager's hook
/// adds up1 (logged at info); the same event again changes nothing
/// and is logged at debug. A tunnel whose `uplink=` names only up0 is left
/// alone (pdscp is not even run for it).
#[test]
fn an_uplink_coming_up_is_added_to_the_tunnels_routed_over_it() {
    let (bed, s, env) = bed_and_sandbox();
    bed.add_up1();
    bed.loopback_ends();
    let t = bed.loopback_tunnel("vx21", 121, 40021, 21);
    bed.loopback_tunnel("vx22", 122, 40022, 22);
    s.write("tunnels", "vx21 port=40021\nvx22 uplink=up0 port=40022\n");
    networkd_dispatcher(&bed.a, &env, "vx21", "routable");
    networkd_dispatcher(&bed.a, &env, "vx22", "routable");
    assert_eq!(tunnel_uplinks(&bed, "vx21"), [UPLINK], "{}", s.syslog());
    assert_eq!(tunnel_uplinks(&bed, "vx22"), [UPLINK]);

    bed.route_via(UP1);
    type Event = fn(&TestBed, &[(String, String)]);
    let managers: [(&str, Event); 3] = [
        ("ifupdown", |bed, env| {
            ifupdown(&bed.a, env, UP1, true, &[]);
        }),
        ("NetworkManager", |bed, env| {
            nm_dispatcher(&bed.a, env, UP1, "up");
        }),
        ("networkd-dispatcher", |bed, env| {
            networkd_dispatcher(&bed.a, env, UP1, "routable");
        }),
    ];
    for (manager, up1_up) in managers {
        ok(bed.pdscp(&["detach", "vx21", "--uplink", UP1]));
        assert_eq!(tunnel_uplinks(&bed, "vx21"), [UPLINK], "{manager}");
        let _ = fs::remove_file(s.path("syslog"));

        up1_up(&bed, &env);
        assert_eq!(
            tunnel_uplinks(&bed, "vx21"),
            [UPLINK, UP1],
            "{manager}: {}",
            s.syslog()
        );
        assert_eq!(tunnel_uplinks(&bed, "vx22"), [UPLINK], "{manager}");
        let log = s.syslog();
        assert!(log.contains("daemon.info -- vx21: attached"), "{manager}: {log}");
        assert!(
            !log.contains("vx22"),
            "{manager}: vx22's uplink= does not name up1, so it is not run: {log}"
        );

        let _ = fs::remove_file(s.path("syslog"));
        up1_up(&bed, &env);
        let log = s.syslog();
        assert!(
            log.contains("daemon.debug -- vx21: already attached"),
            "{manager}: {log}"
        );
        assert!(
            !log.contains("daemon.info") && !log.contains("daemon.err"),
            "{manager}: nothing changed, nothing above debug: {log}"
        );
    }
    assert_marked_via(&bed, &t, UP1);
    assert_marked_via(&bed, &t, UPLINK);
    s.assert_no_errors_logged();
}

/// A listed uplink whose device is not there yet (a modem that appears
/// later) is left out, so the tunnel is attached to the others; when it
/// comes up, it is added.
#[test]
fn a_listed_uplink_that_comes_later_is_added_when_it_comes_up() {
    let (bed, s, env) = bed_and_sandbox();
    bed.loopback_ends();
    let t = bed.loopback_tunnel("vx23", 123, 40023, 23);
    s.write("tunnels", "vx23 uplink=up0 uplink=up1 port=40023\n");

    nm_dispatcher(&bed.a, &env, "vx23", "up");
    assert_eq!(tunnel_uplinks(&bed, "vx23"), [UPLINK], "{}", s.syslog());
    assert!(
        s.syslog()
            .contains("daemon.info -- vx23: uplink up1 not there (yet): added when it comes up"),
        "{}",
        s.syslog()
    );
    assert_marked_via(&bed, &t, UPLINK);

    bed.add_up1();
    nm_dispatcher(&bed.a, &env, UP1, "up");
    assert_eq!(tunnel_uplinks(&bed, "vx23"), [UPLINK, UP1], "{}", s.syslog());
    assert_marked_via(&bed, &t, UP1);
    s.assert_no_errors_logged();
}
