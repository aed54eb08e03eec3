//! Every hook: errors, missing pdscp; lint. (The options they pass: options.rs.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::*;

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
