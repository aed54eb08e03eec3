# shellcheck shell=dash
# pdscp-openwrt.sh: pdscp's OpenWrt logic, shared by the hotplug script
# (/etc/hotplug.d/iface/95-pdscp) and the init script (/etc/init.d/pdscp).
# Installed as /usr/share/pdscp/pdscp-openwrt.sh. busybox ash; reads UCI
# (/etc/config/pdscp) with config_load & co. from /lib/functions.sh, which
# hotplug-call and rc.common have sourced already. See docs/hooks.md.
#
# Logging, running pdscp, checking options and building the pdscp attach
# command come from the Debian-side hooks' library,
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
# From it: pdscp_log LEVEL MESSAGE... (to syslog, logread -e pdscp; warnings
# and errors also to stderr); pdscp_run LEVEL ARGS... (runs `pdscp ARGS`,
# bounded by PDSCP_TIMEOUT, and logs what it said); pdscp_parse_options, which
# checks tunnels-file style options (uplink=wan port=51820 ...) and logs
# what is wrong; pdscp_attach, which turns them into `pdscp attach`. The
# library's functions for the tunnels file itself are not used here.
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

# pdscp_section SECTION: reads a `config tunnel` section's PDSCP_ENABLED,
# PDSCP_DEVICE (default: the section's name) and PDSCP_UCI_UPLINKS (option or
# list uplink: logical interfaces or devices, space-separated).
pdscp_section() {
    config_get_bool PDSCP_ENABLED "$1" enabled 1
    config_get PDSCP_DEVICE "$1" device "$1"
    config_get PDSCP_UCI_UPLINKS "$1" uplink
}

# pdscp_uplink_device NAME: sets PDSCP_UPLINK_DEVICE to the device of uplink
# NAME: the event's DEVICE if NAME is the event's INTERFACE, else the l3
# device of logical interface NAME (wan -> pppoe-wan, through
# /lib/functions/network.sh), else NAME itself (a device name, or an
# interface that is down: pdscp_attach leaves out a device that is not there).
pdscp_uplink_device() {
    PDSCP_UPLINK_DEVICE=$1
    if [ -n "${PDSCP_EV_DEVICE:-}" ] && [ "$1" = "${PDSCP_EV_IFACE:-}" ]; then
        PDSCP_UPLINK_DEVICE=$PDSCP_EV_DEVICE
        return 0
    fi
    if ! type network_get_device >/dev/null 2>&1; then
        [ -r "$PDSCP_NETWORK_SH" ] || return 0
        # shellcheck source=/dev/null
        . "$PDSCP_NETWORK_SH"
    fi
    network_get_device PDSCP_UPLINK_DEVICE "$1" && [ -n "$PDSCP_UPLINK_DEVICE" ] ||
        PDSCP_UPLINK_DEVICE=$1
}

# pdscp_attach_section SECTION [LEVEL]: attaches the `config tunnel` section
# SECTION (pdscp_section has read it) with the options it sets, checked like
# the tunnels file's: a malformed one is logged as an error and nothing is
# attached. LEVEL as for pdscp_run (default info).
pdscp_attach_section() {
    local section=$1 level=${2:-info} value item list
    set --
    config_get value "$section" uplink
    set -f
    for item in $value; do
        set -- "$@" "uplink=$item"
    done
    set +f
    config_get value "$section" port
    [ -z "$value" ] || set -- "$@" "port=$value"
    config_get_bool value "$section" any_port 0
    [ "$value" = 0 ] || set -- "$@" any-port
    config_get value "$section" mode
    [ -z "$value" ] || set -- "$@" "mode=$value"
    config_get value "$section" dscp_map
    [ -z "$value" ] || set -- "$@" "dscp-map=$value"
    config_get value "$section" fixed
    [ -z "$value" ] || set -- "$@" "fixed=$value"
    config_get value "$section" handshake_dscp
    [ -z "$value" ] || set -- "$@" "handshake-dscp=$value"
    config_get_bool value "$section" priority_only 0
    [ "$value" = 0 ] || set -- "$@" priority-only
    config_get value "$section" reflect
    [ -z "$value" ] || set -- "$@" "reflect=$value"
    config_get_bool value "$section" reflect_override 0
    [ "$value" = 0 ] || set -- "$@" reflect-override
    # An option (ef,af41) or a list (list reflect_allow 'ef').
    config_get value "$section" reflect_allow
    list=''
    set -f
    for item in $value; do
        list="${list:+$list,}$item"
    done
    set +f
    [ -z "$list" ] || set -- "$@" "reflect-allow=$list"
    config_get value "$section" map_size
    [ -z "$value" ] || set -- "$@" "map-size=$value"
    config_get value "$section" reflect_size
    [ -z "$value" ] || set -- "$@" "reflect-size=$value"
    pdscp_parse_options "${UCI_CONFIG_DIR:-/etc/config}/pdscp: tunnel '$section'" "$@" || return 0
    # Logical interfaces to devices.
    value=$PDSCP_UPLINKS
    PDSCP_UPLINKS=''
    set -f
    for item in $value; do
        pdscp_uplink_device "$item"
        PDSCP_UPLINKS="${PDSCP_UPLINKS:+$PDSCP_UPLINKS }$PDSCP_UPLINK_DEVICE"
    done
    set +f
    pdscp_attach "$PDSCP_DEVICE" "$level"
}

# --- hotplug: ACTION=ifup|ifdown|connected|disconnected INTERFACE DEVICE ---

# pdscp_hotplug ACTION INTERFACE DEVICE: attaches an enabled tunnel section
# whose device is DEVICE (or whose name is INTERFACE) on ifup and detaches it
# on ifdown. Any other interface coming up may be a recreated uplink that
# lost pdscp's program (PPPoE reconnect), or an uplink a tunnel now uses:
# `pdscp gc` repairs what is attached, and the enabled tunnels that list it
# as an uplink, or have no uplink option (pdscp then adds whichever uplinks
# their peers are routed over now), are attached again.
#
# mwan3 sends its tracking results down the same chain (mwan3track:
# `hotplug-call iface` with ACTION=connected or disconnected, INTERFACE and
# DEVICE, which may be empty): connected is handled as ifup (a tunnel that is
# attached already stays as it is, logged at debug level); disconnected needs
# nothing, since a tunnel stays attached to every uplink it has and its marks
# follow mwan3's failover by themselves. connecting, disconnecting and other
# actions are ignored.
pdscp_hotplug() {
    case $1 in ifup | ifdown | connected | disconnected) ;; *) return 0 ;; esac
    [ -x "$PDSCP" ] || return 0
    config_load pdscp
    pdscp_enabled || return 0
    if [ "$1" = disconnected ]; then
        pdscp_log debug "$2: disconnected (mwan3): nothing to do, tunnels stay attached to every uplink"
        return 0
    fi
    PDSCP_EV_ACTION=$1 PDSCP_EV_IFACE=$2 PDSCP_EV_DEVICE=$3 PDSCP_EV_MATCHED=''
    config_foreach pdscp_hotplug_tunnel tunnel
    if [ "$1" != ifdown ] && [ -z "$PDSCP_EV_MATCHED" ]; then
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
    case $PDSCP_EV_ACTION in
        ifup) pdscp_attach_section "$1" info ;;
        connected) pdscp_attach_section "$1" change ;;
        ifdown) pdscp_run info detach "$PDSCP_DEVICE" ;;
    esac
    return 0
}

pdscp_hotplug_uplink() {
    pdscp_section "$1"
    [ "$PDSCP_ENABLED" = 1 ] || return 0
    pdscp_exists "$PDSCP_DEVICE" || return 0
    if [ -n "$PDSCP_UCI_UPLINKS" ]; then
        case " $PDSCP_UCI_UPLINKS " in
            *" $PDSCP_EV_IFACE "*) ;;
            *" ${PDSCP_EV_DEVICE:-$PDSCP_EV_IFACE} "*) ;;
            *) return 0 ;;
        esac
    fi
    pdscp_attach_section "$1" change
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
        pdscp_exists "$PDSCP_DEVICE" && pdscp_attach_section "$1" info
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
