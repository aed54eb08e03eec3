//! OpenWrt: UCI configuration, hotplug and the init script.

use super::*;

const UCI_PDSCP: &str = "
config pdscp 'global'
\toption enabled '1'

config tunnel 'vx8'
\toption uplink 'up0'
\toption port '40008'
\toption mode 'tc'

config tunnel 'vpn'
\toption device 'vx9'
\toption uplink 'wan'
\toption any_port '1'
\toption mode 'tc'

config tunnel 'vx10'
\toption enabled '0'
\toption uplink 'up0'
\toption port '40010'
";

/// hotplug ifup/ifdown with INTERFACE and DEVICE: a section named after the
/// logical interface, one whose `device` is the l3 device, a disabled one,
/// the global switch; ifdown of a deleted device leaves nothing.
#[test]
fn openwrt_hotplug_ifup_ifdown() {
    let (bed, s, env) = bed_and_sandbox();
    let t8 = bed.add_vxlan("vx8", 108, 40008, Underlay::V4, 8);
    bed.add_vxlan("vx9", 109, 40009, Underlay::V6, 9);
    bed.add_vxlan("vx10", 110, 40010, Underlay::V4, 10);
    s.write("uci/pdscp", UCI_PDSCP);
    // OpenWrt's network.sh: logical interface wan is device up0.
    s.write(
        "network.sh",
        "network_get_device() { case $2 in wan) eval \"$1=up0\" ;; *) return 1 ;; esac; }\n",
    );

    openwrt_hotplug(&bed.a, &s, &env, "ifup", "lan", "br-lan");
    openwrt_hotplug(&bed.a, &s, &env, "ifup", "vx10", "vx10");
    openwrt_hotplug(&bed.a, &s, &env, "ifupdate", "vx8", "vx8");
    assert_nothing_left(&bed);

    openwrt_hotplug(&bed.a, &s, &env, "ifup", "vx8", "vx8");
    assert_attached(&bed, "vx8", UPLINK, Some(40008), &s);
    assert_marked(&udp_through(&bed, &t8));
    openwrt_hotplug(&bed.a, &s, &env, "ifup", "vpn", "vx9");
    let st = assert_attached(&bed, "vx9", UPLINK, None, &s);
    assert_eq!(find_tunnel(&st, "vx9").unwrap().0["mode"], "tc");

    // Logical wan (device up0) coming up re-attaches the tunnels over it.
    bed.a.sh("tc qdisc del dev up0 clsact");
    openwrt_hotplug(&bed.a, &s, &env, "ifup", "wan", "up0");
    assert_attached(&bed, "vx9", UPLINK, None, &s);

    del_link(&bed, "vx8");
    openwrt_hotplug(&bed.a, &s, &env, "ifdown", "vx8", "vx8");
    assert_not_attached(&bed, "vx8");
    openwrt_hotplug(&bed.a, &s, &env, "ifdown", "vpn", "vx9");
    assert_nothing_left(&bed);

    // Disabled globally: nothing happens.
    s.write(
        "uci/pdscp",
        &UCI_PDSCP.replace("option enabled '1'", "option enabled '0'"),
    );
    openwrt_hotplug(&bed.a, &s, &env, "ifup", "vpn", "vx9");
    assert_nothing_left(&bed);
    s.assert_no_errors_logged();
}

/// init.d start attaches every enabled tunnel whose device exists (and says
/// nothing about one that does not), reload detaches a disabled one, stop
/// detaches everything.
#[test]
fn openwrt_init_start_reload_stop() {
    let (bed, s, env) = bed_and_sandbox();
    bed.add_vxlan("vx8", 108, 40008, Underlay::V4, 8);
    bed.add_vxlan("vx10", 110, 40010, Underlay::V4, 10);
    // vx9 (section vpn) does not exist.
    s.write("uci/pdscp", UCI_PDSCP);

    openwrt_init(&bed.a, &s, &env, "start");
    assert_attached(&bed, "vx8", UPLINK, Some(40008), &s);
    assert_not_attached(&bed, "vx10");
    assert_not_attached(&bed, "vx9");
    openwrt_init(&bed.a, &s, &env, "start");
    assert_attached(&bed, "vx8", UPLINK, Some(40008), &s);

    s.write(
        "uci/pdscp",
        &UCI_PDSCP
            .replace(
                "config tunnel 'vx10'\n\toption enabled '0'",
                "config tunnel 'vx10'\n\toption enabled '1'",
            )
            .replace(
                "config tunnel 'vx8'\n",
                "config tunnel 'vx8'\n\toption enabled 'no'\n",
            ),
    );
    openwrt_init(&bed.a, &s, &env, "reload");
    assert_not_attached(&bed, "vx8");
    assert_attached(&bed, "vx10", UPLINK, Some(40010), &s);

    openwrt_init(&bed.a, &s, &env, "stop");
    assert_nothing_left(&bed);
    s.assert_no_errors_logged();
}
