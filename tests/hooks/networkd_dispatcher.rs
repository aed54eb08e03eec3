//! networkd-dispatcher: routable and off.

use super::*;

#[test]
fn networkd_dispatcher_routable_and_off() {
    let (bed, s, env) = bed_and_sandbox();
    bed.add_vxlan("vx5", 105, 40005, Underlay::V4, 5);
    bed.add_vxlan("vx6", 106, 40006, Underlay::V4, 6);
    bed.add_vxlan("vx7", 107, 40007, Underlay::V4, 7);
    // vx7 without uplink=: the hook runs `pdscp attach vx7 --port 40007` and
    // pdscp finds the uplink itself (the VXLAN's underlay device).
    s.write("tunnels", "vx5 uplink=up0 any-port\nvx7 port=40007\n");

    networkd_dispatcher(&bed.a, &env, "vx5", "degraded");
    networkd_dispatcher(&bed.a, &env, "vx6", "off");
    assert_nothing_left(&bed);
    networkd_dispatcher(&bed.a, &env, "vx5", "routable");
    assert_attached(&bed, "vx5", UPLINK, None, &s);
    networkd_dispatcher(&bed.a, &env, "vx7", "routable");
    assert_attached(&bed, "vx7", UPLINK, Some(40007), &s);
    networkd_dispatcher(&bed.a, &env, "vx7", "off");
    assert_not_attached(&bed, "vx7");
    // vx6 is no tunnel, but it may be vx7's uplink (vx7 has no uplink=): vx7
    // is attached (again), vx5, over up0, is left as it is.
    networkd_dispatcher(&bed.a, &env, "vx6", "routable");
    assert_attached(&bed, "vx7", UPLINK, Some(40007), &s);
    assert_attached(&bed, "vx5", UPLINK, None, &s);
    del_link(&bed, "vx5");
    networkd_dispatcher(&bed.a, &env, "vx5", "off");
    assert_not_attached(&bed, "vx5");
    networkd_dispatcher(&bed.a, &env, "vx7", "off");
    assert_nothing_left(&bed);
    s.assert_no_errors_logged();
}
