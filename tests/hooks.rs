//! The network-manager hooks in hooks/ (see docs/hooks.md), each run the way
//! its manager runs it (same arguments, same environment variables), inside
//! namespace `a` of the test bed (with `nsenter --net=`, as `ip netns exec`
//! hides bpffs), against the real pdscp binary and the bed's own pin root;
//! then pdscp's state is checked with `pdscp status --json`, and for one hook
//! the packets on the wire. VXLAN tunnels with a fixed source port stand in
//! for WireGuard, so their configuration gives the port.
//!
//! Nothing is read from or installed into /etc: the hooks are pointed at the
//! repository's hooks/ and at a scratch directory by their environment
//! variables (PDSCP, PDSCP_PIN_ROOT, PDSCP_HOOK_LIB, PDSCP_CONFIG,
//! PDSCP_OPENWRT_LIB, UCI_CONFIG_DIR, ...). `logger` is a stub in the scratch
//! directory's bin/ (first in PATH) that records what would go to syslog.
//! OpenWrt's /lib/functions.sh and /etc/rc.common are small stand-ins
//! written here; the OpenWrt scripts run under busybox sh, as on a router.
//! Needs root.

mod testbed;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use testbed::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Upper bound for one hook run (pdscp itself is bounded by the hooks).
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

fn hook(rel: &str) -> String {
    format!("{REPO}/hooks/{rel}")
}

// ---------------------------------------------------------------------------
// The sandbox: config files, stubs, the syslog stand-in
// ---------------------------------------------------------------------------

/// Stand-in for OpenWrt's /lib/functions.sh: its UCI part, as the pdscp
/// scripts use it. Like the real config_load (which evaluates
/// `uci export`, the same format as the file), it runs the config file with
/// `config` and `option` defined.
const FUNCTIONS_SH: &str = r#"# Test stand-in for OpenWrt's /lib/functions.sh (UCI functions only).
config_load() {
    CONFIG_SECTIONS=''
    CONFIG_NUM=0
    . "${UCI_CONFIG_DIR:-/etc/config}/$1"
}
package() { :; }
config() {
    CONFIG_NUM=$((CONFIG_NUM + 1))
    CONFIG_SECTION=${2:-cfg$CONFIG_NUM}
    CONFIG_SECTIONS="$CONFIG_SECTIONS $CONFIG_SECTION"
    eval "CONFIG_${CONFIG_SECTION}_TYPE=\$1"
}
option() { eval "CONFIG_${CONFIG_SECTION}_$1=\$2"; }
config_get() { eval "$1=\${CONFIG_$2_$3:-\$4}"; }
config_get_bool() {
    local _v
    config_get _v "$2" "$3" "$4"
    case $_v in
        1 | on | true | yes | enabled) _v=1 ;;
        0 | off | false | no | disabled) _v=0 ;;
        *) _v=$4 ;;
    esac
    eval "$1=\$_v"
}
config_foreach() {
    local fn=$1 type=${2:-} s t
    for s in $CONFIG_SECTIONS; do
        eval "t=\$CONFIG_${s}_TYPE"
        if [ -z "$type" ] || [ "$t" = "$type" ]; then "$fn" "$s"; fi
    done
}
"#;

/// Stand-in for OpenWrt's /etc/rc.common (procd flavour): `rc.common
/// INITSCRIPT ACTION`, as the kernel runs `#!/bin/sh /etc/rc.common`.
const RC_COMMON: &str = r#"# Test stand-in for OpenWrt's /etc/rc.common with USE_PROCD=1.
initscript=$1
action=${2:-help}
. "$PDSCP_FUNCTIONS_SH"
procd_add_reload_trigger() { echo "reload trigger: $*" >&2; }
. "$initscript"
case $action in
    start) start_service; service_triggers ;;
    stop) stop_service ;;
    reload) reload_service ;;
    *) echo "rc.common stand-in: no action $action" >&2; exit 1 ;;
esac
"#;

/// A scratch directory of its own per test (removed on drop) with what the
/// hooks are pointed at: bin/ (first in PATH) with the `logger` stub, the
/// OpenWrt stand-ins, the tunnels file, uci/.
struct Sandbox {
    dir: Scratch,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = Scratch::new(&std::env::temp_dir(), "pdscp-hooks");
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        fs::create_dir_all(dir.path().join("uci")).unwrap();
        let s = Sandbox { dir };
        // syslog stand-in: one line per message, with logger's options.
        s.write_exec(
            "bin/logger",
            &format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >>'{}'\n",
                s.path("syslog").display()
            ),
        );
        s.write("functions.sh", FUNCTIONS_SH);
        s.write("rc.common", RC_COMMON);
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        fs::write(self.path(rel), text).unwrap();
    }

    fn write_exec(&self, rel: &str, text: &str) {
        self.write(rel, text);
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// What went to syslog so far.
    fn syslog(&self) -> String {
        fs::read_to_string(self.path("syslog")).unwrap_or_default()
    }

    /// The environment every hook gets on top of its manager's: where pdscp,
    /// its pins, the hook library and the configuration are.
    fn env(&self, pin_root: &Path, pdscp: &str) -> Vec<(String, String)> {
        let p = |rel: &str| self.path(rel).display().to_string();
        vec![
            (
                "PATH".into(),
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    p("bin")
                ),
            ),
            ("PDSCP".into(), pdscp.into()),
            ("PDSCP_PIN_ROOT".into(), pin_root.display().to_string()),
            ("PDSCP_HOOK_LIB".into(), hook("pdscp-hook-lib.sh")),
            ("PDSCP_CONFIG".into(), p("tunnels")),
            ("PDSCP_OPENWRT_LIB".into(), hook("openwrt/pdscp-openwrt.sh")),
            ("PDSCP_FUNCTIONS_SH".into(), p("functions.sh")),
            ("PDSCP_NETWORK_SH".into(), p("network.sh")),
            ("UCI_CONFIG_DIR".into(), p("uci")),
        ]
    }
}

// ---------------------------------------------------------------------------
// Running hooks
// ---------------------------------------------------------------------------

/// Runs `argv` in `ns` (nsenter --net) with exactly `base` + `extra` as its
/// environment, within [`HOOK_TIMEOUT`].
fn run_in(ns: &Netns, argv: &[&str], base: &[(String, String)], extra: &[(&str, &str)]) -> Output {
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
fn exits_0(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A shell like OpenWrt's: busybox ash if this machine has busybox, else sh.
fn ash() -> Vec<&'static str> {
    if Path::new("/usr/bin/busybox").exists() || Path::new("/bin/busybox").exists() {
        vec!["busybox", "sh"]
    } else {
        eprintln!("no busybox: running the OpenWrt scripts with sh");
        vec!["sh"]
    }
}

/// ifupdown: run-parts runs the script with IFACE, LOGICAL, ADDRFAM, METHOD,
/// MODE, PHASE, VERBOSITY and the stanza's options as IF_*.
fn ifupdown(ns: &Netns, env: &[(String, String)], iface: &str, up: bool, stanza: &[(&str, &str)]) -> Output {
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
fn nm_dispatcher(ns: &Netns, env: &[(String, String)], iface: &str, action: &str) -> Output {
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
fn networkd_dispatcher(ns: &Netns, env: &[(String, String)], iface: &str, state: &str) -> Output {
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
fn openwrt_hotplug(
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
fn openwrt_init(ns: &Netns, s: &Sandbox, env: &[(String, String)], action: &str) -> Output {
    let mut argv = ash();
    let rc = s.path("rc.common").display().to_string();
    let init = hook("openwrt/pdscp.init");
    argv.extend([rc.as_str(), init.as_str(), action]);
    exits_0(run_in(ns, &argv, env, &[]), &format!("init.d/pdscp {action}"))
}

// ---------------------------------------------------------------------------
// pdscp's state and the wire
// ---------------------------------------------------------------------------

/// `name` is attached and running, on uplink `uplink`, matching `port`
/// (None: any port); returns the status.
fn assert_attached(bed: &TestBed, name: &str, uplink: &str, port: Option<u16>, s: &Sandbox) -> Value {
    let st = status(bed);
    let Some((u, t)) = find_tunnel(&st, name) else {
        panic!("{name} not attached: {st:#}\nsyslog:\n{}", s.syslog());
    };
    assert_eq!(u["name"], uplink, "{st:#}");
    assert_eq!(u["attached"], true, "writer runs: {st:#}");
    assert_eq!(t["attached"], true, "reader runs: {st:#}");
    match port {
        Some(p) => assert_eq!(t["port"], p, "{st:#}"),
        None => assert_eq!(t["any_port"], true, "{st:#}"),
    }
    st
}

fn assert_not_attached(bed: &TestBed, name: &str) {
    let st = status(bed);
    assert!(
        find_tunnel(&st, name).is_none(),
        "{name} should not be attached: {st:#}"
    );
}

/// No uplink, no tunnel, no pinned directory left.
fn assert_nothing_left(bed: &TestBed) {
    let st = status(bed);
    assert_eq!(st["uplinks"], Value::Array(vec![]), "{st:#}");
    if let Ok(dir) = fs::read_dir(&bed.pin_root) {
        let left: Vec<_> = dir
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left in the pin root: {left:?}");
    }
}

/// Outer UDP packets of `t` leaving a, for UDP sent with EF (IPv4) and AF11
/// (IPv6) inside.
fn udp_through(bed: &TestBed, t: &Tunnel) -> Vec<TunnelPacket> {
    let cap = Capture::start(&bed.b, UPLINK);
    send_udp(&bed.a, t.b_addr(false), 9000, 0xb8, 5);
    send_udp(&bed.a, t.b_addr(true), 9001, 0x28, 5);
    parse_all(&cap.stop())
        .into_iter()
        .filter(|p| p.vni == t.vni && p.outer_sport == t.srcport && p.inner_proto == IPPROTO_UDP)
        .filter(|p| p.inner_src == t.a_addr(false) || p.inner_src == t.a_addr(true))
        .collect()
}

fn assert_marked(pkts: &[TunnelPacket]) {
    assert!(pkts.len() >= 10, "{} packets: {pkts:?}", pkts.len());
    for p in pkts {
        assert_ne!(p.inner_dscp(), 0);
        assert_eq!(p.outer_dscp(), p.inner_dscp(), "outer DSCP copied: {p:?}");
    }
}

fn assert_unmarked(pkts: &[TunnelPacket]) {
    assert!(pkts.len() >= 10, "{} packets: {pkts:?}", pkts.len());
    assert!(pkts.iter().all(|p| p.outer_dscp() == 0), "{pkts:?}");
}

fn del_link(bed: &TestBed, name: &str) {
    bed.a.sh(&format!("ip link del {name}"));
}

// ---------------------------------------------------------------------------
// Debian ifupdown
// ---------------------------------------------------------------------------

/// A stanza with `pdscp yes`, `pdscp-uplink`, `pdscp-port`: post-up attaches
/// (once per address family: idempotent) and the packets leave marked;
/// post-down after the stanza's `post-down ip link del` leaves nothing.
#[test]
fn ifupdown_stanza_attaches_marks_and_detaches() {
    let bed = TestBed::new();
    let s = Sandbox::new();
    let env = s.env(&bed.pin_root, pdscp_bin());
    let t = bed.add_vxlan("vx1", 101, 40001, Underlay::V4, 1);
    let stanza = [
        ("IF_ADDRESS", "198.19.1.1/24"),
        ("IF_PDSCP", "yes"),
        ("IF_PDSCP_UPLINK", UPLINK),
        ("IF_PDSCP_PORT", "40001"),
    ];
    assert_unmarked(&udp_through(&bed, &t));

    ifupdown(&bed.a, &env, "vx1", true, &stanza);
    assert_attached(&bed, "vx1", UPLINK, Some(40001), &s);
    assert!(
        s.syslog().contains("daemon.info -- vx1: attached"),
        "{}",
        s.syslog()
    );
    // ifupdown runs if-up.d again for the inet6 stanza of the same interface.
    let mut inet6 = stanza.to_vec();
    inet6.push(("ADDRFAM", "inet6"));
    ifupdown(&bed.a, &env, "vx1", true, &inet6);
    assert_attached(&bed, "vx1", UPLINK, Some(40001), &s);
    assert_marked(&udp_through(&bed, &t));

    del_link(&bed, "vx1");
    ifupdown(&bed.a, &env, "vx1", false, &stanza);
    assert_nothing_left(&bed);
    // A second ifdown (or one for a tunnel never attached) is harmless.
    ifupdown(&bed.a, &env, "vx1", false, &stanza);
    assert!(!s.syslog().contains("daemon.err"), "{}", s.syslog());
}

/// Interfaces without pdscp options and not in the tunnels file, the uplink
/// itself, and a stanza with `pdscp no` (even if the tunnels file lists it)
/// are left alone; `pdscp-port any` and an interface found only in the
/// tunnels file are attached.
#[test]
fn ifupdown_acts_only_for_configured_interfaces() {
    let bed = TestBed::new();
    let s = Sandbox::new();
    let env = s.env(&bed.pin_root, pdscp_bin());
    bed.add_vxlan("vx1", 101, 40001, Underlay::V4, 1);
    bed.add_vxlan("vx2", 102, 40002, Underlay::V4, 2);
    bed.add_vxlan("vx3", 103, 40003, Underlay::V4, 3);

    ifupdown(&bed.a, &env, "vx1", true, &[("IF_ADDRESS", "198.19.1.1/24")]);
    ifupdown(&bed.a, &env, UPLINK, true, &[]);
    ifupdown(&bed.a, &env, "--all", true, &[]);
    ifupdown(&bed.a, &env, "lo", true, &[]);
    assert_nothing_left(&bed);

    s.write(
        "tunnels",
        "vx1 uplink=up0 port=40001\nvx3 uplink=up0 port=40003\n",
    );
    ifupdown(&bed.a, &env, "vx1", true, &[("IF_PDSCP", "no")]);
    assert_nothing_left(&bed);

    ifupdown(
        &bed.a,
        &env,
        "vx2",
        true,
        &[("IF_PDSCP_UPLINK", UPLINK), ("IF_PDSCP_PORT", "40002")],
    );
    assert_attached(&bed, "vx2", UPLINK, Some(40002), &s);
    ifupdown(&bed.a, &env, "vx3", true, &[]);
    assert_attached(&bed, "vx3", UPLINK, Some(40003), &s);
    assert_not_attached(&bed, "vx1");
    assert!(!s.syslog().contains("daemon.err"), "{}", s.syslog());
}

// ---------------------------------------------------------------------------
// NetworkManager
// ---------------------------------------------------------------------------

/// up attaches a listed tunnel, leaves an unlisted one alone; pre-down
/// detaches; down after the device is gone leaves nothing.
#[test]
fn networkmanager_dispatcher_attaches_listed_tunnels() {
    let bed = TestBed::new();
    let s = Sandbox::new();
    let env = s.env(&bed.pin_root, pdscp_bin());
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
    assert!(!s.syslog().contains("daemon.err"), "{}", s.syslog());
}

/// An interface that is no configured tunnel coming up may be a recreated
/// uplink without pdscp's program (PPP reconnect; here the writer's tc filter
/// went with the clsact qdisc): `pdscp gc` puts it back, whoever attached
/// the tunnel. It may also be the route a listed tunnel's uplink discovery
/// lacked: the listed tunnels that exist are attached.
#[test]
fn uplink_up_repairs_and_attaches_its_tunnels() {
    let bed = TestBed::new();
    let s = Sandbox::new();
    let env = s.env(&bed.pin_root, pdscp_bin());
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

    s.write("tunnels", "vx4 uplink=up0 port=40004\n");
    nm_dispatcher(&bed.a, &env, UPLINK, "up");
    assert_attached(&bed, "vx4", UPLINK, Some(40004), &s);
    assert!(
        s.syslog().contains("daemon.debug -- vx4: attached"),
        "{}",
        s.syslog()
    );
    assert!(!s.syslog().contains("daemon.err"), "{}", s.syslog());
}

// ---------------------------------------------------------------------------
// networkd-dispatcher
// ---------------------------------------------------------------------------

#[test]
fn networkd_dispatcher_routable_and_off() {
    let bed = TestBed::new();
    let s = Sandbox::new();
    let env = s.env(&bed.pin_root, pdscp_bin());
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
    assert!(!s.syslog().contains("daemon.err"), "{}", s.syslog());
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

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

    let bed = TestBed::new();
    let s = Sandbox::new();
    // systemd's environment: PATH and little else.
    let mut env = s.env(&bed.pin_root, pdscp_bin());
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

// ---------------------------------------------------------------------------
// OpenWrt
// ---------------------------------------------------------------------------

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
    let bed = TestBed::new();
    let s = Sandbox::new();
    let env = s.env(&bed.pin_root, pdscp_bin());
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
    assert!(!s.syslog().contains("daemon.err"), "{}", s.syslog());
}

/// init.d start attaches every enabled tunnel whose device exists (and says
/// nothing about one that does not), reload detaches a disabled one, stop
/// detaches everything.
#[test]
fn openwrt_init_start_reload_stop() {
    let bed = TestBed::new();
    let s = Sandbox::new();
    let env = s.env(&bed.pin_root, pdscp_bin());
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
    assert!(!s.syslog().contains("daemon.err"), "{}", s.syslog());
}

// ---------------------------------------------------------------------------
// Every hook: the pdscp command line, errors, missing pdscp
// ---------------------------------------------------------------------------

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
    let bed = TestBed::new();
    let s = Sandbox::new();
    let env = s.env(&bed.pin_root, pdscp_bin());
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

// ---------------------------------------------------------------------------
// Lint
// ---------------------------------------------------------------------------

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
