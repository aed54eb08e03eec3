//! The options of `pdscp attach` as every hook passes them: only when
//! configured, and checked (a malformed one is logged and nothing attached).

use std::fs;
use std::path::Path;

use super::*;

/// A pdscp that records its arguments, and an `ip` that shows one
/// WireGuard device, wgx (which this kernel cannot make), in a namespace of
/// its own with only `lo`.
struct Recorder {
    ns: Netns,
    s: Sandbox,
    env: Vec<(String, String)>,
}

impl Recorder {
    fn new() -> Recorder {
        let ns = Netns::new("stub");
        let s = Sandbox::new();
        s.write_exec(
            "bin/fake-pdscp",
            &format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >>'{}'\n",
                s.path("calls").display()
            ),
        );
        let real_ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("ip");
        s.write_exec(
            "bin/ip",
            &format!(
                "#!/bin/sh\nif [ \"$*\" = '-o link show type wireguard' ]; then\n\
                 echo '7: wgx: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1420 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/none'\n\
                 exit 0\nfi\nexec {real_ip} \"$@\"\n"
            ),
        );
        let env = s.env(
            Path::new("/nonexistent"),
            &s.path("bin/fake-pdscp").display().to_string(),
        );
        Recorder { ns, s, env }
    }

    /// The pdscp command lines run since the last call, one a line.
    fn take(&self) -> String {
        let calls = self.s.path("calls");
        let v = fs::read_to_string(&calls).unwrap_or_default();
        let _ = fs::remove_file(&calls);
        v
    }
}

/// With a pdscp that records its arguments: options are passed only when
/// configured, so a bare `pdscp attach wgx` lets pdscp find the uplinks and
/// read the listen port; patterns match WireGuard devices only and lose to a
/// line with the exact name.
#[test]
fn hooks_pass_only_configured_options() {
    let r = Recorder::new();
    let (ns, s, env) = (&r.ns, &r.s, &r.env);
    let take = || r.take();

    s.write("tunnels", "*\n");
    nm_dispatcher(ns, env, "wgx", "up");
    assert_eq!(take(), "attach wgx\n");
    nm_dispatcher(ns, env, "wgx", "down");
    assert_eq!(take(), "detach wgx\n");
    nm_dispatcher(ns, env, "lo", "up");
    assert_eq!(take(), "");
    // Not WireGuard, so not covered by "*"; but it may be wgx's uplink.
    networkd_dispatcher(ns, env, "eth9", "routable");
    assert_eq!(
        take(),
        "gc\nattach wgx\n",
        "re-attach of a tunnel without uplink="
    );

    s.write("tunnels", "wg* any-port\nwgx uplink=eth1 port=51821 mode=tc\n");
    networkd_dispatcher(ns, env, "wgx", "routable");
    assert_eq!(take(), "attach wgx --uplink eth1 --port 51821 --mode tc\n");
    networkd_dispatcher(ns, env, "eth1", "routable");
    assert_eq!(take(), "gc\nattach wgx --uplink eth1 --port 51821 --mode tc\n");
    networkd_dispatcher(ns, env, "eth2", "routable");
    assert_eq!(take(), "gc\n");

    s.write("tunnels", "");
    ifupdown(ns, env, "wgx", true, &[("IF_PDSCP", "yes")]);
    assert_eq!(take(), "attach wgx\n");
    ifupdown(
        ns,
        env,
        "wgx",
        true,
        &[("IF_PDSCP_PORT", "any"), ("IF_PDSCP_MODE", "tcx")],
    );
    assert_eq!(take(), "attach wgx --any-port --mode tcx\n");
    ifupdown(ns, env, "wgx", false, &[("IF_PDSCP", "on")]);
    assert_eq!(take(), "detach wgx\n");
    ifupdown(ns, env, "wgx", true, &[]);
    assert_eq!(take(), "gc\n");

    let out = run_in(ns, &[&hook("pdscp-hook"), "attach", "wgy"], env, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(take(), "attach wgy\n");

    s.write("uci/pdscp", "config pdscp 'global'\n\nconfig tunnel 'wgx'\n");
    openwrt_hotplug(ns, s, env, "ifup", "wgx", "wgx");
    assert_eq!(take(), "attach wgx\n");
    openwrt_hotplug(ns, s, env, "ifdown", "wgx", "wgx");
    assert_eq!(take(), "detach wgx\n");
    // Flags set to 0 are not passed.
    s.write(
        "uci/pdscp",
        "config tunnel 'wgx'\n\toption any_port '0'\n\toption priority_only '0'\n\
         \toption reflect_override 'no'\n",
    );
    openwrt_hotplug(ns, s, env, "ifup", "wgx", "wgx");
    assert_eq!(take(), "attach wgx\n");

    // Several uplinks and every other option of pdscp attach: all of them
    // from the tunnels file, an ifupdown stanza and UCI, in one order.
    let all = "--uplink eth1 --uplink eth2 --port 51821 --mode tc --dscp-map 46=46,af41=34,*=0 \
               --fixed ef --handshake-dscp cs1 --priority-only --reflect both --reflect-override \
               --reflect-allow ef,af41 --map-size 4096 --reflect-size 1024";
    let attach_all = format!("attach wgx {all}\n");
    s.write(
        "tunnels",
        "wg* any-port\nwgx uplink=eth1 uplink=eth2 port=51821 mode=tc dscp-map=46=46,af41=34,*=0 fixed=ef \
         handshake-dscp=cs1 priority-only reflect=both reflect-override reflect-allow=ef,af41 \
         map-size=4096 reflect-size=1024\n",
    );
    nm_dispatcher(ns, env, "wgx", "up");
    assert_eq!(take(), attach_all);
    let out = run_in(ns, &[&hook("pdscp-hook"), "attach", "wgx"], env, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(take(), attach_all);
    // Either uplink coming up attaches it again; another one does not.
    networkd_dispatcher(ns, env, "eth2", "routable");
    assert_eq!(take(), format!("gc\n{attach_all}"));
    networkd_dispatcher(ns, env, "eth3", "routable");
    assert_eq!(take(), "gc\n");
    // Each option alone.
    for (word, args) in [
        ("uplink=eth1", "--uplink eth1"),
        ("dscp-map=diffserv4", "--dscp-map diffserv4"),
        ("fixed=46", "--fixed 46"),
        ("handshake-dscp=0", "--handshake-dscp 0"),
        ("priority-only", "--priority-only"),
        ("reflect=out", "--reflect out"),
        ("reflect-override", "--reflect-override"),
        ("reflect-allow=all", "--reflect-allow all"),
        ("map-size=65536", "--map-size 65536"),
        ("reflect-size=16", "--reflect-size 16"),
    ] {
        s.write("tunnels", &format!("wgx {word}\n"));
        nm_dispatcher(ns, env, "wgx", "up");
        assert_eq!(take(), format!("attach wgx {args}\n"), "{word}");
    }
    // A listed uplink that is not there is left out while another one is
    // (lo stands in for it here).
    s.write("tunnels", "wgx uplink=eth7 uplink=lo\n");
    nm_dispatcher(ns, env, "wgx", "up");
    assert_eq!(take(), "attach wgx --uplink lo\n");
    assert!(
        s.syslog()
            .contains("daemon.info -- wgx: uplink eth7 not there (yet): added when it comes up"),
        "{}",
        s.syslog()
    );

    s.write("tunnels", "");
    let stanza = [
        ("IF_PDSCP_UPLINK", "eth1 eth2"),
        ("IF_PDSCP_PORT", "51821"),
        ("IF_PDSCP_MODE", "tc"),
        ("IF_PDSCP_DSCP_MAP", "46=46,af41=34,*=0"),
        ("IF_PDSCP_FIXED", "ef"),
        ("IF_PDSCP_HANDSHAKE_DSCP", "cs1"),
        ("IF_PDSCP_PRIORITY_ONLY", "yes"),
        ("IF_PDSCP_REFLECT", "both"),
        ("IF_PDSCP_REFLECT_OVERRIDE", "on"),
        ("IF_PDSCP_REFLECT_ALLOW", "ef,af41"),
        ("IF_PDSCP_MAP_SIZE", "4096"),
        ("IF_PDSCP_REFLECT_SIZE", "1024"),
    ];
    ifupdown(ns, env, "wgx", true, &stanza);
    assert_eq!(take(), attach_all);
    ifupdown(
        ns,
        env,
        "wgx",
        true,
        &[
            ("IF_PDSCP_PRIORITY_ONLY", "no"),
            ("IF_PDSCP_REFLECT_OVERRIDE", "0"),
        ],
    );
    assert_eq!(
        take(),
        "attach wgx\n",
        "flags that are off: enabled, nothing passed"
    );

    s.write(
        "uci/pdscp",
        "config tunnel 'wgx'\n\tlist uplink 'eth1'\n\tlist uplink 'eth2'\n\toption port '51821'\n\
         \toption mode 'tc'\n\toption dscp_map '46=46,af41=34,*=0'\n\toption fixed 'ef'\n\
         \toption handshake_dscp 'cs1'\n\toption priority_only '1'\n\toption reflect 'both'\n\
         \toption reflect_override 'yes'\n\tlist reflect_allow 'ef'\n\tlist reflect_allow 'af41'\n\
         \toption map_size '4096'\n\toption reflect_size '1024'\n",
    );
    openwrt_hotplug(ns, s, env, "ifup", "wgx", "wgx");
    assert_eq!(take(), attach_all);
    // mwan3track's events: connected as ifup (here for the tunnel itself,
    // an mwan3 member; wgx is no device /proc/net/dev knows, so the uplink
    // path, tested in openwrt.rs, finds nothing to attach here); disconnected,
    // connecting and disconnecting do nothing.
    openwrt_hotplug(ns, s, env, "connected", "wgx", "wgx");
    assert_eq!(take(), attach_all);
    openwrt_hotplug(ns, s, env, "connected", "wanc", "eth3");
    assert_eq!(take(), "gc\n");
    openwrt_hotplug(ns, s, env, "disconnected", "wanb", "");
    openwrt_hotplug(ns, s, env, "connecting", "wanb", "eth2");
    openwrt_hotplug(ns, s, env, "disconnecting", "wanb", "eth2");
    assert_eq!(take(), "");
}

/// Malformed options, in the tunnels file, an ifupdown stanza or UCI: the
/// hook logs an error naming the option and runs no attach, for the tunnel's
/// own event and for an uplink's.
#[test]
fn hooks_log_malformed_options_and_attach_nothing() {
    let r = Recorder::new();
    let (ns, s, env) = (&r.ns, &r.s, &r.env);
    let err_for = |what: &str, expect: &str| {
        let log = s.syslog();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("daemon.err")).collect();
        assert_eq!(errors.len(), 1, "{what}: one error: {log}");
        assert!(errors[0].contains(expect), "{what}: {expect:?} in {log}");
        let _ = fs::remove_file(s.path("syslog"));
    };

    for (word, expect) in [
        (
            "uplink=eth1,eth2",
            "'uplink=eth1,eth2': give one uplink= per uplink (uplink=eth1 uplink=eth2)",
        ),
        ("uplink=", "unknown option 'uplink='"),
        ("dscp-map=46", "bad dscp-map '46' (copy, diffserv4,"),
        ("dscp-map=46=46,ef", "bad dscp-map '46=46,ef'"),
        ("dscp-map=46=46,", "bad dscp-map '46=46,'"),
        ("fixed=64", "bad fixed '64' (a DSCP: 0..63, or a name"),
        ("handshake-dscp=af44", "bad handshake-dscp 'af44'"),
        ("reflect=yes", "bad reflect 'yes' (off, out, in or both)"),
        ("reflect-allow=ef,,cs1", "bad reflect-allow 'ef,,cs1'"),
        ("map-size=16k", "bad map-size '16k' (a number)"),
        ("reflect-size=", "bad reflect-size ''"),
        ("priority-only=1", "unknown option 'priority-only=1'"),
        ("reflect-override=yes", "unknown option 'reflect-override=yes'"),
    ] {
        // wgx exists only as a WireGuard device the stub `ip` lists.
        s.write("tunnels", &format!("wg* any-port\nwgx port=51820 {word}\n"));
        nm_dispatcher(ns, env, "wgx", "up");
        assert_eq!(r.take(), "", "{word}");
        err_for(word, &format!("tunnels: wgx: {expect}"));
        networkd_dispatcher(ns, env, "eth1", "routable");
        assert_eq!(r.take(), "gc\n", "{word}");
        err_for(word, expect);
        let out = run_in(ns, &[&hook("pdscp-hook"), "attach", "wgx"], env, &[]);
        assert!(!out.status.success(), "{word}: pdscp-hook attach fails");
        assert_eq!(r.take(), "", "{word}");
        err_for(word, expect);
    }

    s.write("tunnels", "");
    for (var, value, expect) in [
        ("IF_PDSCP_PRIORITY_ONLY", "maybe", "'pdscp-priority-only maybe'"),
        ("IF_PDSCP_REFLECT_OVERRIDE", "2", "'pdscp-reflect-override 2'"),
        (
            "IF_PDSCP_FIXED",
            "zz",
            "/etc/network/interfaces: wgx: bad fixed 'zz'",
        ),
        ("IF_PDSCP_UPLINK", "eth1,eth2", "give one uplink= per uplink"),
    ] {
        ifupdown(ns, env, "wgx", true, &[(var, value)]);
        assert_eq!(r.take(), "", "{var}");
        err_for(var, expect);
    }

    for (option, expect) in [
        ("option fixed '99'", "pdscp: tunnel 'wgx': bad fixed '99'"),
        (
            "list uplink 'wan,wanb'",
            "give one uplink= per uplink (uplink=wan uplink=wanb)",
        ),
        ("option dscp_map '46=46, *=0'", "bad dscp-map '46=46, *=0'"),
        ("option reflect 'on'", "bad reflect 'on'"),
    ] {
        s.write("uci/pdscp", &format!("config tunnel 'wgx'\n\t{option}\n"));
        openwrt_hotplug(ns, s, env, "ifup", "wgx", "wgx");
        assert_eq!(r.take(), "", "{option}");
        err_for(option, expect);
        openwrt_hotplug(ns, s, env, "connected", "wan", "eth1");
        assert_eq!(r.take(), "gc\n", "{option}");
    }
}
