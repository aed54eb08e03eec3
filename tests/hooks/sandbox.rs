//! The sandbox a hook runs against: config files, stubs, the syslog stand-in.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

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
# As the real one: config_get gives a list's items separated by spaces.
list() {
    eval "CONFIG_${CONFIG_SECTION}_$1=\"\${CONFIG_${CONFIG_SECTION}_$1:+\$CONFIG_${CONFIG_SECTION}_$1 }\$2\""
}
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
pub(super) struct Sandbox {
    dir: Scratch,
}

impl Sandbox {
    pub(super) fn new() -> Sandbox {
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
        // busybox (busybox-static at least) runs its own applets before
        // PATH, so under busybox sh only a function reaches the stub.
        s.write(
            "functions.sh",
            &format!(
                "{FUNCTIONS_SH}# Test only: busybox's logger applet would bypass the syslog stand-in.\n\
                 logger() {{ '{}' \"$@\"; }}\n",
                s.path("bin/logger").display()
            ),
        );
        s.write("rc.common", RC_COMMON);
        s
    }

    pub(super) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub(super) fn write(&self, rel: &str, text: &str) {
        fs::write(self.path(rel), text).unwrap();
    }

    pub(super) fn write_exec(&self, rel: &str, text: &str) {
        self.write(rel, text);
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// What went to syslog so far.
    pub(super) fn syslog(&self) -> String {
        fs::read_to_string(self.path("syslog")).unwrap_or_default()
    }

    /// Nothing went to syslog as an error.
    pub(super) fn assert_no_errors_logged(&self) {
        assert!(!self.syslog().contains("daemon.err"), "{}", self.syslog());
    }

    /// The environment every hook gets on top of its manager's: where pdscp,
    /// its pins, the hook library and the configuration are.
    pub(super) fn env(&self, pin_root: &Path, pdscp: &str) -> Vec<(String, String)> {
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
