//! Running hooks the way each manager runs them: arguments, environment,
//! shell.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::*;

/// Upper bound for one hook run (pdscp itself is bounded by the hooks).
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `argv` in `ns` (nsenter --net) with exactly `base` + `extra` as its
/// environment, within [`HOOK_TIMEOUT`].
pub(super) fn run_in(ns: &Netns, argv: &[&str], base: &[(String, String)], extra: &[(&str, &str)]) -> Output {
    ensure_bpffs();
    let mut cmd = Command::new("/usr/bin/nsenter");
    cmd.arg(format!("--net={}", ns.path().display()))
        .args(argv)
        .env_clear()
        .envs(base.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra.iter().copied());
    run_bounded(cmd, HOOK_TIMEOUT)
}

/// A hook run that must exit 0 (hooks never fail an interface).
pub(super) fn exits_0(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what} failed: {}", output_text(&out));
    out
}

/// A shell like OpenWrt's: busybox ash if this machine has busybox, else sh.
pub(super) fn ash() -> Vec<&'static str> {
    if Path::new("/usr/bin/busybox").exists() || Path::new("/bin/busybox").exists() {
        vec!["busybox", "sh"]
    } else {
        eprintln!("no busybox: running the OpenWrt scripts with sh");
        vec!["sh"]
    }
}

/// ifupdown: run-parts runs the script with IFACE, LOGICAL, ADDRFAM, METHOD,
/// MODE, PHASE, VERBOSITY and the stanza's options as IF_*.
pub(super) fn ifupdown(
    ns: &Netns,
    env: &[(String, String)],
    iface: &str,
    up: bool,
    stanza: &[(&str, &str)],
) -> Output {
    let (mode, phase, dir) = if up {
        ("start", "post-up", "if-up.d")
    } else {
        ("stop", "post-down", "if-post-down.d")
    };
    let mut vars = vec![
        ("IFACE", iface),
        ("LOGICAL", iface),
        ("ADDRFAM", "inet"),
        ("METHOD", "static"),
        ("MODE", mode),
        ("PHASE", phase),
        ("VERBOSITY", "0"),
    ];
    vars.extend_from_slice(stanza);
    exits_0(
        run_in(ns, &[&hook("ifupdown/pdscp")], env, &vars),
        &format!("{dir}/pdscp {iface}"),
    )
}

/// NetworkManager's dispatcher: `50-pdscp IFACE ACTION` with DEVICE_IFACE,
/// DEVICE_IP_IFACE, CONNECTION_ID, NM_DISPATCHER_ACTION, ...
pub(super) fn nm_dispatcher(ns: &Netns, env: &[(String, String)], iface: &str, action: &str) -> Output {
    let vars = [
        ("DEVICE_IFACE", iface),
        ("DEVICE_IP_IFACE", iface),
        ("CONNECTION_ID", iface),
        ("CONNECTION_UUID", "5e5c0b7a-6f0e-4c4b-9a57-3a1f1c2d9e11"),
        ("NM_DISPATCHER_ACTION", action),
    ];
    exits_0(
        run_in(ns, &[&hook("networkmanager/50-pdscp"), iface, action], env, &vars),
        &format!("50-pdscp {iface} {action}"),
    )
}

/// networkd-dispatcher: the script in STATE.d/ with IFACE, STATE,
/// OperationalState, AdministrativeState, ...
pub(super) fn networkd_dispatcher(ns: &Netns, env: &[(String, String)], iface: &str, state: &str) -> Output {
    let admin = if state == "off" { "unmanaged" } else { "configured" };
    let vars = [
        ("IFACE", iface),
        ("STATE", state),
        ("OperationalState", state),
        ("AdministrativeState", admin),
        ("ADDR", ""),
        ("ESSID", ""),
    ];
    exits_0(
        run_in(ns, &[&hook("networkd-dispatcher/50-pdscp")], env, &vars),
        &format!("{state}.d/50-pdscp {iface}"),
    )
}

/// OpenWrt's hotplug-call: sources /lib/functions.sh, then each script of
/// /etc/hotplug.d/iface/ in a subshell, with ACTION, INTERFACE and DEVICE.
pub(super) fn openwrt_hotplug(
    ns: &Netns,
    s: &Sandbox,
    env: &[(String, String)],
    action: &str,
    interface: &str,
    device: &str,
) -> Output {
    let mut argv = ash();
    let functions = s.path("functions.sh").display().to_string();
    let script = hook("openwrt/pdscp.hotplug");
    argv.extend([
        "-c",
        r#". "$0"; for script in "$1"; do ( [ -f "$script" ] && . "$script" ); done"#,
        &functions,
        &script,
    ]);
    let vars = [
        ("ACTION", action),
        ("INTERFACE", interface),
        ("DEVICE", device),
        ("HOTPLUG_TYPE", "iface"),
    ];
    exits_0(
        run_in(ns, &argv, env, &vars),
        &format!("hotplug {action} {interface}"),
    )
}

/// `/etc/init.d/pdscp ACTION`: `/bin/sh /etc/rc.common /etc/init.d/pdscp ACTION`.
pub(super) fn openwrt_init(ns: &Netns, s: &Sandbox, env: &[(String, String)], action: &str) -> Output {
    let mut argv = ash();
    let rc = s.path("rc.common").display().to_string();
    let init = hook("openwrt/pdscp.init");
    argv.extend([rc.as_str(), init.as_str(), action]);
    exits_0(run_in(ns, &argv, env, &[]), &format!("init.d/pdscp {action}"))
}
