//! systemd: the `pdscp@.service` template.

use std::fs;
use std::process::Command;

use super::*;

/// The unit's settings, and its ExecStart/ExecStop run as systemd would for
/// instance `pdscp@vx\x2d7` (device vx-7): %i escaped, %I unescaped.
#[test]
fn systemd_unit_attaches_and_detaches() {
    let unit = fs::read_to_string(hook("systemd/pdscp@.service")).unwrap();
    let get = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(get("BindsTo"), ["sys-subsystem-net-devices-%i.device"]);
    assert!(get("After")
        .iter()
        .any(|a| a.split(' ').any(|u| u == "sys-subsystem-net-devices-%i.device")));
    assert_eq!(get("Type"), ["oneshot"]);
    assert_eq!(get("RemainAfterExit"), ["yes"]);
    assert_eq!(get("WantedBy"), ["sys-subsystem-net-devices-%i.device"]);
    let exec = |key: &str| -> Vec<String> {
        let [line] = &get(key)[..] else {
            panic!("one {key}")
        };
        line.replace("/usr/lib/pdscp/pdscp-hook", &hook("pdscp-hook"))
            .replace("%I", "vx-7")
            .replace("%i", "vx\\x2d7")
            .split(' ')
            .map(str::to_string)
            .collect()
    };
    let (start, stop) = (exec("ExecStart"), exec("ExecStop"));
    let start: Vec<&str> = start.iter().map(String::as_str).collect();
    let stop: Vec<&str> = stop.iter().map(String::as_str).collect();

    let (bed, s, mut env) = bed_and_sandbox();
    // systemd's environment: PATH and little else.
    env.push(("INVOCATION_ID".into(), "0123456789abcdef0123456789abcdef".into()));
    bed.add_vxlan("vx-7", 107, 40007, Underlay::V4, 7);

    // Not WireGuard and no port: the unit fails, with pdscp's one-line reason.
    s.write("tunnels", "vx-7 uplink=up0\n");
    let out = run_in(&bed.a, &start, &env, &[]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not a WireGuard device"), "{stderr}");
    assert_nothing_left(&bed);

    s.write("tunnels", "vx* uplink=eth9\nvx-7 uplink=up0 port=40007\n");
    exits_0(run_in(&bed.a, &start, &env, &[]), "ExecStart");
    assert_attached(&bed, "vx-7", UPLINK, Some(40007), &s);
    exits_0(run_in(&bed.a, &start, &env, &[]), "ExecStart again");
    // The device goes away: BindsTo stops the unit after the fact.
    del_link(&bed, "vx-7");
    exits_0(run_in(&bed.a, &stop, &env, &[]), "ExecStop");
    assert_nothing_left(&bed);
    exits_0(run_in(&bed.a, &stop, &env, &[]), "ExecStop again");

    // systemd's own check of the unit, where systemd-analyze exists.
    if Command::new("systemd-analyze").arg("--version").output().is_ok() {
        let text = unit.replace("/usr/lib/pdscp/pdscp-hook", &hook("pdscp-hook"));
        s.write("pdscp@.service", &text);
        let inst = s.path("pdscp@wg0.service");
        fs::copy(s.path("pdscp@.service"), &inst).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&inst)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("pdscp@"),
            "systemd-analyze verify: {err}"
        );
    }
}
