//! Every hook: the pdscp command line, errors, missing pdscp; lint.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::*;

/// With a pdscp that records its arguments (and an `ip` that shows one
/// WireGuard device, wgx, which this kernel cannot make): options are passed
/// only when configured, so a bare `pdscp attach wgx` lets pdscp find the
/// uplink and read the listen port; patterns match WireGuard devices only and
/// lose to a line with the exact name.
#[test]
fn hooks_pass_only_configured_options() {
    let ns = Netns::new("stub");
    let s = Sandbox::new();
    let calls = s.path("calls");
    s.write_exec(
        "bin/fake-pdscp",
        &format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >>'{}'\n", calls.display()),
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
    let take = || {
        let v = fs::read_to_string(&calls).unwrap_or_default();
        let _ = fs::remove_file(&calls);
        v
    };

    s.write("tunnels", "*\n");
    nm_dispatcher(&ns, &env, "wgx", "up");
    assert_eq!(take(), "attach wgx\n");
    nm_dispatcher(&ns, &env, "wgx", "down");
    assert_eq!(take(), "detach wgx\n");
    nm_dispatcher(&ns, &env, "lo", "up");
    assert_eq!(take(), "");
    // Not WireGuard, so not covered by "*"; but it may be wgx's uplink.
    networkd_dispatcher(&ns, &env, "eth9", "routable");
    assert_eq!(
        take(),
        "gc\nattach wgx\n",
        "re-attach of a tunnel without uplink="
    );

    s.write("tunnels", "wg* any-port\nwgx uplink=eth1 port=51821 mode=tc\n");
    networkd_dispatcher(&ns, &env, "wgx", "routable");
    assert_eq!(take(), "attach wgx --uplink eth1 --port 51821 --mode tc\n");
    networkd_dispatcher(&ns, &env, "eth1", "routable");
    assert_eq!(take(), "gc\nattach wgx --uplink eth1 --port 51821 --mode tc\n");
    networkd_dispatcher(&ns, &env, "eth2", "routable");
    assert_eq!(take(), "gc\n");

    s.write("tunnels", "");
    ifupdown(&ns, &env, "wgx", true, &[("IF_PDSCP", "yes")]);
    assert_eq!(take(), "attach wgx\n");
    ifupdown(
        &ns,
        &env,
        "wgx",
        true,
        &[("IF_PDSCP_PORT", "any"), ("IF_PDSCP_MODE", "tcx")],
    );
    assert_eq!(take(), "attach wgx --any-port --mode tcx\n");
    ifupdown(&ns, &env, "wgx", false, &[("IF_PDSCP", "on")]);
    assert_eq!(take(), "detach wgx\n");
    ifupdown(&ns, &env, "wgx", true, &[]);
    assert_eq!(take(), "gc\n");

    let out = run_in(&ns, &[&hook("pdscp-hook"), "attach", "wgy"], &env, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(take(), "attach wgy\n");

    s.write("uci/pdscp", "config pdscp 'global'\n\nconfig tunnel 'wgx'\n");
    openwrt_hotplug(&ns, &s, &env, "ifup", "wgx", "wgx");
    assert_eq!(take(), "attach wgx\n");
    openwrt_hotplug(&ns, &s, &env, "ifdown", "wgx", "wgx");
    assert_eq!(take(), "detach wgx\n");
}

/// pdscp refusing (a VXLAN tunnel listed without a port), a malformed line,
/// a pdscp that is not installed: every hook still exits 0, the errors are
/// in syslog.
#[test]
fn hooks_never_fail_and_log_errors() {
    let (bed, s, env) = bed_and_sandbox();
    bed.add_vxlan("vx11", 111, 40011, Underlay::V4, 11);
    bed.add_vxlan("vx12", 112, 40012, Underlay::V4, 12);
    s.write("tunnels", "vx11 uplink=up0\nvx12 uplink=up0 port=4x\n");

    nm_dispatcher(&bed.a, &env, "vx11", "up");
    networkd_dispatcher(&bed.a, &env, "vx12", "routable");
    ifupdown(&bed.a, &env, "vx11", true, &[("IF_PDSCP", "maybe")]);
    ifupdown(
        &bed.a,
        &env,
        "vx11",
        true,
        &[("IF_PDSCP_UPLINK", "up0"), ("IF_PDSCP_PORT", "0")],
    );
    assert_nothing_left(&bed);
    let log = s.syslog();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("-t pdscp -p daemon.err"))
        .collect();
    assert_eq!(errors.len(), 4, "{log}");
    assert!(
        errors[0].contains("pdscp attach vx11 --uplink up0 failed: ")
            && errors[0].contains("not a WireGuard device"),
        "{log}"
    );
    assert!(errors[1].contains("vx12: bad port '4x'"), "{log}");
    assert!(errors[2].contains("'pdscp maybe'"), "{log}");
    assert!(errors[3].contains("--port 0 failed"), "{log}");

    s.write("uci/pdscp", "config tunnel 'vx11'\n\toption uplink 'up0'\n");
    openwrt_hotplug(&bed.a, &s, &env, "ifup", "vx11", "vx11");
    assert!(s.syslog().contains("not a WireGuard device"));
    assert_nothing_left(&bed);

    // Package removed, hooks left in /etc: silence, exit 0.
    let _ = fs::remove_file(s.path("syslog"));
    let gone = s.env(&bed.pin_root, "/nonexistent/pdscp");
    s.write("tunnels", "vx11 uplink=up0 port=40011\n");
    nm_dispatcher(&bed.a, &gone, "vx11", "up");
    networkd_dispatcher(&bed.a, &gone, "vx11", "routable");
    ifupdown(&bed.a, &gone, "vx11", true, &[("IF_PDSCP", "yes")]);
    openwrt_hotplug(&bed.a, &s, &gone, "ifup", "vx11", "vx11");
    openwrt_init(&bed.a, &s, &gone, "start");
    let mut no_lib = env.clone();
    for (k, v) in no_lib.iter_mut() {
        if k == "PDSCP_HOOK_LIB" || k == "PDSCP_OPENWRT_LIB" {
            *v = "/nonexistent/lib.sh".into();
        }
    }
    nm_dispatcher(&bed.a, &no_lib, "vx11", "up");
    openwrt_hotplug(&bed.a, &s, &no_lib, "ifup", "vx11", "vx11");
    assert_eq!(s.syslog(), "");
    assert_nothing_left(&bed);
}

#[test]
fn hooks_are_shellcheck_clean() {
    let scripts = [
        "hooks/pdscp-hook-lib.sh",
        "hooks/pdscp-hook",
        "hooks/ifupdown/pdscp",
        "hooks/networkmanager/50-pdscp",
        "hooks/networkd-dispatcher/50-pdscp",
        "hooks/openwrt/pdscp-openwrt.sh",
        "hooks/openwrt/pdscp.hotplug",
        "hooks/openwrt/pdscp.init",
    ];
    let out = Command::new("shellcheck")
        .arg("-x")
        .args(scripts)
        .arg("packaging/build-deb.sh")
        .current_dir(REPO)
        .output()
        .expect("shellcheck (apt-get install shellcheck)");
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The hooks run under Debian's dash, the OpenWrt scripts under busybox ash.
    for script in &scripts {
        for sh in [&["sh", "-n"][..], &["busybox", "sh", "-n"]] {
            if sh[0] == "busybox" && ash().len() == 1 {
                continue;
            }
            let out = Command::new(sh[0])
                .args(&sh[1..])
                .arg(script)
                .current_dir(REPO)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{sh:?} {script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for exec in [
        "hooks/pdscp-hook",
        "hooks/ifupdown/pdscp",
        "hooks/networkmanager/50-pdscp",
        "hooks/networkd-dispatcher/50-pdscp",
        "hooks/openwrt/pdscp.init",
    ] {
        let mode = fs::metadata(Path::new(REPO).join(exec))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{exec} is executable");
    }
}
