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

/// OpenWrt's network.sh for the tests below: logical interface wan is
/// device up0, wanb is up1 while up1 exists (an interface that is down has
/// no l3 device).
const NETWORK_SH_TWO_WANS: &str = "network_get_device() {
    case $2 in
        wan) eval \"$1=up0\" ;;
        wanb) ip link show dev up1 >/dev/null 2>&1 || return 1; eval \"$1=up1\" ;;
        *) return 1 ;;
    esac
}
";

/// `list uplink` with two logical interfaces attaches the tunnel to both
/// devices at once (init.d start and hotplug ifup), with the new options
/// given as UCI options reaching pdscp.
#[test]
fn openwrt_list_uplink_attaches_the_tunnel_to_every_member() {
    let (bed, s, env) = bed_and_sandbox();
    bed.add_up1();
    bed.loopback_ends();
    bed.loopback_tunnel("vx24", 124, 40024, 24);
    s.write("network.sh", NETWORK_SH_TWO_WANS);
    s.write(
        "uci/pdscp",
        "config tunnel 'vpn'\n\toption device 'vx24'\n\tlist uplink 'wan'\n\tlist uplink 'wanb'\n\
         \toption port '40024'\n\toption dscp_map 'diffserv4'\n\toption handshake_dscp 'cs1'\n",
    );

    openwrt_init(&bed.a, &s, &env, "start");
    assert_eq!(tunnel_uplinks(&bed, "vx24"), [UPLINK, UP1], "{}", s.syslog());
    let st = status(&bed);
    assert_eq!(st["tunnels"][0]["policy"]["dscp_map"], "diffserv4", "{st:#}");
    assert_eq!(st["tunnels"][0]["policy"]["handshake"], 8, "{st:#}");
    openwrt_init(&bed.a, &s, &env, "stop");
    assert_nothing_left(&bed);

    openwrt_hotplug(&bed.a, &s, &env, "ifup", "vpn", "vx24");
    assert_eq!(tunnel_uplinks(&bed, "vx24"), [UPLINK, UP1], "{}", s.syslog());
    s.assert_no_errors_logged();
}

/// mwan3 with two WAN members (wan on up0, wanb on up1, which comes later).
/// mwan3track's `ACTION=connected` for wanb, which reaches
/// /etc/hotplug.d/iface/ like ifup (here with an empty DEVICE), adds up1 to
/// the tunnel that lists wanb and to the one without uplinks whose peer is
/// now routed over up1; again, it changes nothing and logs at debug.
/// `disconnected` and `ifdown` (DEVICE empty, as mwan3 sends them) detach
/// nothing: the tunnels stay on both members for the next failover.
#[test]
fn mwan3_connected_adds_a_member_and_disconnected_detaches_nothing() {
    let (bed, s, env) = bed_and_sandbox();
    bed.loopback_ends();
    bed.loopback_tunnel("vx25", 125, 40025, 25);
    bed.loopback_tunnel("vx26", 126, 40026, 26);
    s.write("network.sh", NETWORK_SH_TWO_WANS);
    s.write(
        "uci/pdscp",
        "config tunnel 'vpn'\n\toption device 'vx25'\n\tlist uplink 'wan'\n\tlist uplink 'wanb'\n\
         \toption port '40025'\n\nconfig tunnel 'vx26'\n\toption port '40026'\n",
    );

    openwrt_hotplug(&bed.a, &s, &env, "ifup", "vpn", "vx25");
    openwrt_hotplug(&bed.a, &s, &env, "ifup", "vx26", "vx26");
    assert_eq!(tunnel_uplinks(&bed, "vx25"), [UPLINK], "{}", s.syslog());
    assert_eq!(tunnel_uplinks(&bed, "vx26"), [UPLINK], "{}", s.syslog());
    assert!(
        s.syslog().contains("vx25: uplink wanb not there (yet)"),
        "{}",
        s.syslog()
    );

    bed.add_up1();
    bed.route_via(UP1);
    openwrt_hotplug(&bed.a, &s, &env, "connected", "wanb", "");
    assert_eq!(tunnel_uplinks(&bed, "vx25"), [UPLINK, UP1], "{}", s.syslog());
    assert_eq!(tunnel_uplinks(&bed, "vx26"), [UPLINK, UP1], "{}", s.syslog());

    let _ = std::fs::remove_file(s.path("syslog"));
    openwrt_hotplug(&bed.a, &s, &env, "connected", "wanb", "up1");
    let log = s.syslog();
    assert!(log.contains("daemon.debug -- vx25: already attached"), "{log}");
    assert!(log.contains("daemon.debug -- vx26: already attached"), "{log}");
    assert!(!log.contains("daemon.info"), "nothing changed: {log}");

    let _ = std::fs::remove_file(s.path("syslog"));
    openwrt_hotplug(&bed.a, &s, &env, "disconnected", "wanb", "");
    openwrt_hotplug(&bed.a, &s, &env, "ifdown", "wanb", "");
    openwrt_hotplug(&bed.a, &s, &env, "disconnecting", "wan", "up0");
    for t in ["vx25", "vx26"] {
        assert_eq!(tunnel_uplinks(&bed, t), [UPLINK, UP1], "{t}: {}", s.syslog());
    }
    let log = s.syslog();
    assert!(
        log.contains("daemon.debug -- wanb: disconnected (mwan3): nothing to do"),
        "{log}"
    );
    assert_eq!(log.lines().count(), 1, "only that: {log}");
}

/// A package script of packaging/openwrt/Makefile (`define
/// Package/pdscp/NAME`) as the build writes it out (`$$` is `$`), with
/// /usr/sbin/pdscp made `pdscp`.
fn package_script(name: &str, pdscp: &str) -> String {
    let makefile = fs::read_to_string(format!("{REPO}/packaging/openwrt/Makefile")).unwrap();
    let start = format!("define Package/pdscp/{name}\n");
    let body = makefile
        .split_once(&start)
        .and_then(|(_, rest)| rest.split_once("\nendef\n"))
        .unwrap_or_else(|| panic!("no {start} in the Makefile"))
        .0;
    body.replace("$$", "$").replace("/usr/sbin/pdscp", pdscp)
}

/// Runs a package script as default_postinst and default_prerm do (sourced,
/// in a subshell), with `extra` in the environment; it must exit 0.
fn run_package_script(
    bed: &TestBed,
    s: &Sandbox,
    env: &[(String, String)],
    name: &str,
    extra: &[(&str, &str)],
) {
    let mut argv = ash();
    let path = s.path(name).display().to_string();
    argv.extend(["-c", r#"( . "$0" )"#, &path]);
    exits_0(run_in(&bed.a, &argv, env, extra), name);
}

/// The package's postinst and prerm, as opkg runs them with the init
/// script: an upgrade (the old prerm and init stop with PKG_UPGRADE=1, the
/// new postinst) keeps the tunnels attached and marked; a removal
/// (PKG_UPGRADE=0) detaches everything. pdscp is not run while nothing is
/// pinned, nor while an image is assembled (IPKG_INSTROOT).
#[test]
fn openwrt_package_scripts() {
    let (bed, s, env) = bed_and_sandbox();
    let t8 = bed.add_vxlan("vx8", 108, 40008, Underlay::V4, 8);
    s.write("uci/pdscp", UCI_PDSCP);
    // The real pdscp, each call written down.
    let calls = s.path("calls");
    s.write_exec(
        "bin/pdscp-logged",
        &format!(
            "#!/bin/sh\necho \"$*\" >>'{}'\nexec '{}' \"$@\"\n",
            calls.display(),
            pdscp_bin()
        ),
    );
    let logged = s.path("bin/pdscp-logged").display().to_string();
    s.write("postinst-pkg", &package_script("postinst", &logged));
    s.write("prerm-pkg", &package_script("prerm", &logged));
    let calls = || fs::read_to_string(&calls).unwrap_or_default();

    run_package_script(&bed, &s, &env, "postinst-pkg", &[("PKG_UPGRADE", "0")]);
    run_package_script(&bed, &s, &env, "prerm-pkg", &[("PKG_UPGRADE", "0")]);
    assert_eq!(calls(), "", "pdscp was run with nothing pinned");

    openwrt_init(&bed.a, &s, &env, "start");
    assert_attached(&bed, "vx8", UPLINK, Some(40008), &s);

    // opkg upgrade: old prerm, old init stop, new postinst, new init start.
    run_package_script(&bed, &s, &env, "prerm-pkg", &[("PKG_UPGRADE", "1")]);
    let mut upgrading = env.clone();
    upgrading.push(("PKG_UPGRADE".into(), "1".into()));
    openwrt_init(&bed.a, &s, &upgrading, "stop");
    assert_attached(&bed, "vx8", UPLINK, Some(40008), &s);
    run_package_script(&bed, &s, &env, "postinst-pkg", &[("PKG_UPGRADE", "1")]);
    assert_eq!(calls(), "upgrade\n");
    openwrt_init(&bed.a, &s, &upgrading, "start");
    assert_attached(&bed, "vx8", UPLINK, Some(40008), &s);
    assert_marked(&udp_through(&bed, &t8));

    // An image being assembled: nothing.
    run_package_script(
        &bed,
        &s,
        &env,
        "prerm-pkg",
        &[("PKG_UPGRADE", "0"), ("IPKG_INSTROOT", "/tmp/image-root")],
    );
    assert_attached(&bed, "vx8", UPLINK, Some(40008), &s);
    assert_eq!(calls(), "upgrade\n");

    // Removal: everything goes, while pdscp is still there.
    run_package_script(&bed, &s, &env, "prerm-pkg", &[("PKG_UPGRADE", "0")]);
    assert_eq!(calls(), "upgrade\ndetach --all\n");
    assert_nothing_left(&bed);
    s.assert_no_errors_logged();
}
