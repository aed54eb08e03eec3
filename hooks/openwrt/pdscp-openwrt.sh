# shellcheck shell=dash
# pdscp-openwrt.sh: pdscp's OpenWrt logic, shared by the hotplug script
# (/etc/hotplug.d/iface/95-pdscp) and the init script (/etc/init.d/pdscp).
# Installed as /usr/share/pdscp/pdscp-openwrt.sh. busybox ash; reads UCI
# (/etc/config/pdscp) with config_load & co. from /lib/functions.sh, which
# hotplug-call and rc.common have sourced already. See docs/hooks.md.
#
# pdscp_log and pdscp_run come from the Debian-side hooks' library,
# pdscp-hook-lib.sh (POSIX sh), which the OpenWrt package installs too, as
# /usr/lib/pdscp/pdscp-hook-lib.sh. Sourcing this file returns 1 (and logs
# why) if that library is missing.
#
# Settings, for tests and unusual installs:
#   PDSCP               the pdscp binary (default /usr/sbin/pdscp)
#   PDSCP_HOOK_LIB      pdscp-hook-lib.sh (default /usr/lib/pdscp/pdscp-hook-lib.sh)
#   PDSCP_FUNCTIONS_SH  /lib/functions.sh, if not sourced yet
#   PDSCP_NETWORK_SH    /lib/functions/network.sh (logical interface -> device)
#   PDSCP_TIMEOUT       seconds one pdscp command may take (default 30)
#   UCI_CONFIG_DIR      read by config_load (default /etc/config)
#   PDSCP_PIN_ROOT      read by pdscp itself

: "${PDSCP:=/usr/sbin/pdscp}"
: "${PDSCP_NETWORK_SH:=/lib/functions/network.sh}"
: "${PDSCP_HOOK_LIB:=/usr/lib/pdscp/pdscp-hook-lib.sh}"
if [ ! -r "$PDSCP_HOOK_LIB" ]; then
    logger -t pdscp -p daemon.err "$PDSCP_HOOK_LIB is missing" 2>/dev/null ||
        echo "pdscp: $PDSCP_HOOK_LIB is missing" >&2
    return 1
fi
# pdscp_log LEVEL MESSAGE...: to syslog (logread -e pdscp), warnings and
# errors also to stderr. pdscp_run LEVEL ARGS...: runs `pdscp ARGS` (bounded
# by PDSCP_TIMEOUT) and logs what it said, at LEVEL if it succeeded, else as
# an error (a warning with LEVEL debug). The library's other functions are
# for the tunnels file and are not used here.
# shellcheck source=hooks/pdscp-hook-lib.sh
. "$PDSCP_HOOK_LIB"
if ! type config_load >/dev/null 2>&1; then
    # shellcheck source=/dev/null
    . "${PDSCP_FUNCTIONS_SH:-/lib/functions.sh}"
fi

# pdscp_exists DEV: DEV exists in this network namespace. Replaces the
# library's, which asks `ip`: /proc/net/dev is per namespace, and busybox
# may have no `ip`.
pdscp_exists() {
    local name rest
    while IFS=: read -r name rest; do
        [ "${name##* }" = "$1" ] && return 0
    done </proc/net/dev
    return 1
}

# pdscp_enabled: the global switch (config pdscp 'global' / option enabled).
pdscp_enabled() {
    local on
    config_get_bool on global enabled 1
    [ "$on" = 1 ]
}

# pdscp_section SECTION: reads a `config tunnel` section into PDSCP_ENABLED,
# PDSCP_DEVICE (default: the section's name), PDSCP_UPLINK, PDSCP_PORT,
# PDSCP_ANY_PORT and PDSCP_MODE.
pdscp_section() {
    config_get_bool PDSCP_ENABLED "$1" enabled 1
    config_get PDSCP_DEVICE "$1" device "$1"
    config_get PDSCP_UPLINK "$1" uplink
    config_get PDSCP_PORT "$1" port
    config_get_bool PDSCP_ANY_PORT "$1" any_port 0
    config_get PDSCP_MODE "$1" mode
}

# pdscp_attach_section [LEVEL [UPLINK_DEVICE]]: attaches the section read
# last (the library's pdscp_attach is for tunnels-file lines). The uplink is
# UPLINK_DEVICE if given, else option uplink: a logical interface (its l3
# device, e.g. wan -> pppoe-wan) or a device name; none: pdscp finds it.
pdscp_attach_section() {
    local level=${1:-info} uplink=${2:-}
    if [ -z "$uplink" ] && [ -n "$PDSCP_UPLINK" ]; then
        uplink=$PDSCP_UPLINK
        if [ -r "$PDSCP_NETWORK_SH" ]; then
            # shellcheck source=/dev/null
            . "$PDSCP_NETWORK_SH"
            network_get_device uplink "$PDSCP_UPLINK" || uplink=$PDSCP_UPLINK
        fi
    fi
    set -- attach "$PDSCP_DEVICE"
    [ -n "$uplink" ] && set -- "$@" --uplink "$uplink"
    if [ "$PDSCP_ANY_PORT" = 1 ]; then
        set -- "$@" --any-port
    elif [ -n "$PDSCP_PORT" ]; then
        set -- "$@" --port "$PDSCP_PORT"
    fi
    [ -n "$PDSCP_MODE" ] && set -- "$@" --mode "$PDSCP_MODE"
    pdscp_run "$level" "$@"
}

# --- hotplug: ACTION=ifup|ifdown INTERFACE=<logical> DEVICE=<l3 device> ---

# pdscp_hotplug ACTION INTERFACE DEVICE: attaches an enabled tunnel section
# whose device is DEVICE (or whose name is INTERFACE) on ifup and detaches it
# on ifdown. Any other interface coming up may be a recreated uplink that
# lost pdscp's program (PPPoE reconnect), or the route an uplink discovery
# lacked: `pdscp gc` repairs what is attached, and the enabled tunnels that
# use it as uplink, or have no uplink option, are attached (again).
pdscp_hotplug() {
    case $1 in ifup | ifdown) ;; *) return 0 ;; esac
    [ -x "$PDSCP" ] || return 0
    config_load pdscp
    pdscp_enabled || return 0
    PDSCP_EV_ACTION=$1 PDSCP_EV_IFACE=$2 PDSCP_EV_DEVICE=$3 PDSCP_EV_MATCHED=''
    config_foreach pdscp_hotplug_tunnel tunnel
    if [ "$1" = ifup ] && [ -z "$PDSCP_EV_MATCHED" ]; then
        # Re-attaches the writer to a recreated uplink, whoever attached.
        pdscp_run debug gc
        config_foreach pdscp_hotplug_uplink tunnel
    fi
    return 0
}

pdscp_hotplug_tunnel() {
    pdscp_section "$1"
    if [ -n "$PDSCP_EV_DEVICE" ] && [ "$PDSCP_DEVICE" = "$PDSCP_EV_DEVICE" ]; then
        :
    elif [ "$1" != "$PDSCP_EV_IFACE" ]; then
        return 0
    fi
    PDSCP_EV_MATCHED=1
    [ "$PDSCP_ENABLED" = 1 ] || return 0
    if [ "$PDSCP_EV_ACTION" = ifup ]; then
        pdscp_attach_section info
    else
        pdscp_run info detach "$PDSCP_DEVICE"
    fi
}

pdscp_hotplug_uplink() {
    pdscp_section "$1"
    [ "$PDSCP_ENABLED" = 1 ] || return 0
    case $PDSCP_UPLINK in
        '') pdscp_exists "$PDSCP_DEVICE" && pdscp_attach_section debug ;;
        "$PDSCP_EV_IFACE" | "$PDSCP_EV_DEVICE")
            [ -n "$PDSCP_EV_DEVICE" ] || return 0
            pdscp_exists "$PDSCP_DEVICE" && pdscp_attach_section debug "$PDSCP_EV_DEVICE"
            ;;
    esac
    return 0
}

# --- init script: start, stop, reload ---

# pdscp_start: attaches every enabled tunnel whose device exists.
pdscp_start() {
    [ -x "$PDSCP" ] || return 0
    config_load pdscp
    pdscp_enabled || return 0
    config_foreach pdscp_start_tunnel tunnel
    return 0
}

pdscp_start_tunnel() {
    pdscp_section "$1"
    if [ "$PDSCP_ENABLED" = 1 ]; then
        pdscp_exists "$PDSCP_DEVICE" && pdscp_attach_section info
    elif [ "${PDSCP_RELOADING:-}" = 1 ]; then
        pdscp_run info detach "$PDSCP_DEVICE"
    fi
    return 0
}

# pdscp_stop: detaches every configured tunnel (enabled or not, present or not).
pdscp_stop() {
    [ -x "$PDSCP" ] || return 0
    config_load pdscp
    config_foreach pdscp_stop_tunnel tunnel
    return 0
}

pdscp_stop_tunnel() {
    pdscp_section "$1"
    pdscp_run info detach "$PDSCP_DEVICE"
    return 0
}

# pdscp_reload: after a change of /etc/config/pdscp: attaches the enabled
# tunnels, detaches the disabled ones (all of them if pdscp is disabled).
# A section that was deleted is not known any more: detach it by hand.
pdscp_reload() {
    [ -x "$PDSCP" ] || return 0
    config_load pdscp
    if pdscp_enabled; then
        PDSCP_RELOADING=1
        config_foreach pdscp_start_tunnel tunnel
        PDSCP_RELOADING=''
    else
        config_foreach pdscp_stop_tunnel tunnel
    fi
    return 0
}
