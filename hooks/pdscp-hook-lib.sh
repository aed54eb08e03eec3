# shellcheck shell=dash
# pdscp-hook-lib.sh: what pdscp's network-manager hooks share (ifupdown,
# NetworkManager, networkd-dispatcher, pdscp-hook for systemd); OpenWrt's
# pdscp-openwrt.sh uses its settings, pdscp_log and pdscp_run. Sourced, not
# run; POSIX sh plus `local` (dash, bash, busybox ash). See docs/hooks.md.
#
# A hook calls pdscp_ifup / pdscp_ifdown for an interface event: they act only
# for interfaces configured in the tunnels file, log to syslog (logger -t
# pdscp) and always return 0, so an interface never fails to come up or go
# down because of pdscp.
#
# Settings, for tests and unusual installs (the defaults fit the packages):
#   PDSCP          the pdscp binary (default: pdscp in PATH, else /usr/sbin/pdscp)
#   PDSCP_CONFIG   the tunnels file (default /etc/pdscp/tunnels)
#   PDSCP_TIMEOUT  seconds one pdscp command may take (default 30)
#   PDSCP_PIN_ROOT is read by pdscp itself.
#
# The tunnels file, one tunnel per line ('#' starts a comment):
#   NAME [uplink=DEV] [port=N | port=any | any-port] [mode=auto|tcx|tc]
# NAME is a device name, or a shell pattern (wg*, *) that matches WireGuard
# devices only. A line naming the device exactly wins over patterns; among
# patterns the first matching line wins. Without uplink=, pdscp finds the
# uplink itself; without port=, it reads a WireGuard device's listen port.

: "${PDSCP_CONFIG:=/etc/pdscp/tunnels}"
: "${PDSCP_TIMEOUT:=30}"
if [ -z "${PDSCP:-}" ]; then
    PDSCP=$(command -v pdscp 2>/dev/null) || PDSCP=/usr/sbin/pdscp
fi

# Results of pdscp_configured / pdscp_parse_options, used by pdscp_attach.
PDSCP_UPLINK=
PDSCP_PORT=
PDSCP_MODE=

# pdscp_installed: whether the pdscp binary is there (a removed but not
# purged package leaves its hooks in /etc behind; they must then do nothing).
pdscp_installed() {
    [ -x "$PDSCP" ]
}

# pdscp_log LEVEL MESSAGE...: to syslog (facility daemon) as "pdscp"; warnings
# and errors also to stderr, where ifup, NetworkManager and systemd show them.
pdscp_log() {
    local level=$1
    shift
    if ! logger -t pdscp -p "daemon.$level" -- "$*" 2>/dev/null; then
        echo "pdscp: $*" >&2
    elif [ "$level" = err ] || [ "$level" = warning ]; then
        echo "pdscp: $*" >&2
    fi
}

# pdscp_run LEVEL ARGS...: runs `pdscp ARGS`, bounded by PDSCP_TIMEOUT, and
# logs what it said: at LEVEL if it succeeded, else as an error (or, with
# LEVEL debug, as a warning). Returns pdscp's exit status.
pdscp_run() {
    local level=$1 out rc
    shift
    if command -v timeout >/dev/null 2>&1; then
        out=$(timeout "$PDSCP_TIMEOUT" "$PDSCP" "$@" 2>&1)
    else
        out=$("$PDSCP" "$@" 2>&1)
    fi
    rc=$?
    # One syslog line: clap's usage errors come with several.
    out=$(printf '%s' "$out" | tr -s '\n' ' ')
    out=${out#pdscp: }
    if [ "$rc" -eq 0 ]; then
        pdscp_log "$level" "${out:-pdscp $*: done}"
    else
        [ "$rc" -eq 124 ] && out="timed out after ${PDSCP_TIMEOUT}s"
        if [ "$level" = debug ]; then level=warning; else level=err; fi
        pdscp_log "$level" "pdscp $* failed: ${out:-exit status $rc}"
    fi
    return "$rc"
}

# pdscp_exists DEV: DEV exists in this network namespace.
pdscp_exists() {
    ip link show dev "$1" >/dev/null 2>&1
}

# pdscp_wireguard_devices: names of this namespace's WireGuard devices, one a line.
pdscp_wireguard_devices() {
    ip -o link show type wireguard 2>/dev/null | sed -n 's/^[0-9]*: \([^:@ ]*\).*/\1/p'
}

# pdscp_is_wireguard DEV
pdscp_is_wireguard() {
    local dev
    for dev in $(pdscp_wireguard_devices); do
        [ "$dev" = "$1" ] && return 0
    done
    return 1
}

# pdscp_is_pattern NAME: NAME holds a shell pattern character.
pdscp_is_pattern() {
    case $1 in *[*?[]*) return 0 ;; esac
    return 1
}

# pdscp_config_lines: the tunnels file without comments and blank lines,
# fields separated by one space.
pdscp_config_lines() {
    [ -r "$PDSCP_CONFIG" ] || return 0
    sed -e 's/#.*//' -e 's/[[:space:]][[:space:]]*/ /g' -e 's/^ //' -e 's/ $//' -e '/^$/d' \
        "$PDSCP_CONFIG"
}

# pdscp_parse_options WHERE OPTION...: sets PDSCP_UPLINK, PDSCP_PORT (a number,
# "any" or empty) and PDSCP_MODE from tunnels-file style options. An unknown
# or malformed option is logged (naming WHERE) and makes it return 1.
pdscp_parse_options() {
    local where=$1 opt
    shift
    PDSCP_UPLINK='' PDSCP_PORT='' PDSCP_MODE=''
    for opt in "$@"; do
        case $opt in
            uplink=?*) PDSCP_UPLINK=${opt#uplink=} ;;
            any-port | port=any) PDSCP_PORT=any ;;
            port=*[!0-9]* | port=)
                pdscp_log err "$where: bad port '${opt#port=}' (a number or 'any')"
                return 1
                ;;
            port=*) PDSCP_PORT=${opt#port=} ;;
            mode=auto | mode=tcx | mode=tc) PDSCP_MODE=${opt#mode=} ;;
            *)
                pdscp_log err "$where: unknown option '$opt'"
                return 1
                ;;
        esac
    done
    return 0
}

# pdscp_find_line DEV: prints the options of the line for DEV, prefixed by
# "exact " or "pattern ", and returns 0; returns 1 if no line names DEV.
# Pattern lines are returned whatever the device's kind: callers check.
pdscp_find_line() {
    local lines name opts pattern_opts='' found=''
    lines=$(pdscp_config_lines)
    while read -r name opts; do
        [ -n "$name" ] || continue
        if [ "$name" = "$1" ]; then
            echo "exact $opts"
            return 0
        fi
        if [ -z "$found" ] && pdscp_is_pattern "$name"; then
            # shellcheck disable=SC2254 # the pattern is meant to match
            case $1 in $name)
                found=1
                pattern_opts=$opts
                ;;
            esac
        fi
    done <<EOF
$lines
EOF
    [ -n "$found" ] || return 1
    echo "pattern $pattern_opts"
}

# pdscp_configured DEV [down]: whether the tunnels file covers DEV, setting
# PDSCP_UPLINK, PDSCP_PORT and PDSCP_MODE from its line. A pattern line covers
# only WireGuard devices; with "down", also a device that is gone (its kind
# cannot be told any more, and detaching what is not attached is harmless).
pdscp_configured() {
    local dev=$1 line how
    PDSCP_UPLINK='' PDSCP_PORT='' PDSCP_MODE=''
    line=$(pdscp_find_line "$dev") || return 1
    how=${line%% *}
    line=${line#"$how"}
    if [ "$how" = pattern ] && ! pdscp_is_wireguard "$dev"; then
        if [ "${2:-}" != down ] || pdscp_exists "$dev"; then
            return 1
        fi
    fi
    # Word splitting is wanted here, globbing is not.
    set -f
    # shellcheck disable=SC2086
    set -- $line
    set +f
    pdscp_parse_options "$PDSCP_CONFIG: $dev" "$@"
}

# pdscp_attach DEV [LEVEL]: `pdscp attach DEV` with the options in
# PDSCP_UPLINK, PDSCP_PORT and PDSCP_MODE (only those that are set).
pdscp_attach() {
    local dev=$1 level=${2:-info}
    set -- attach "$dev"
    [ -n "$PDSCP_UPLINK" ] && set -- "$@" --uplink "$PDSCP_UPLINK"
    case $PDSCP_PORT in
        '') ;;
        any) set -- "$@" --any-port ;;
        *) set -- "$@" --port "$PDSCP_PORT" ;;
    esac
    [ -n "$PDSCP_MODE" ] && set -- "$@" --mode "$PDSCP_MODE"
    pdscp_run "$level" "$@"
}

# pdscp_detach DEV [LEVEL]
pdscp_detach() {
    pdscp_run "${2:-info}" detach "$1"
}

# pdscp_reattach_over UPLINK: UPLINK came up, and may be a new device with the
# old name (a PPP link after a reconnect) that lost pdscp's program, or the
# route a tunnel's uplink discovery lacked so far. `pdscp gc` re-attaches the
# writer to a recreated uplink, whoever attached its tunnels; then every
# configured tunnel that exists and whose uplink= is UPLINK or not given is
# attached (again: a no-op if it is). Logs at debug level.
pdscp_reattach_over() {
    local lines name opts dev candidates='' seen=''
    pdscp_run debug gc
    lines=$(pdscp_config_lines)
    while read -r name opts; do
        [ -n "$name" ] || continue
        if pdscp_is_pattern "$name"; then
            for dev in $(pdscp_wireguard_devices); do
                # shellcheck disable=SC2254 # the pattern is meant to match
                case $dev in $name) candidates="$candidates $dev" ;; esac
            done
        elif pdscp_exists "$name"; then
            candidates="$candidates $name"
        fi
    done <<EOF
$lines
EOF
    for dev in $candidates; do
        [ "$dev" != "$1" ] || continue
        # Each device once, with its own (winning) line.
        case " $seen " in *" $dev "*) continue ;; esac
        seen="$seen $dev"
        pdscp_configured "$dev" || continue
        [ -z "$PDSCP_UPLINK" ] || [ "$PDSCP_UPLINK" = "$1" ] || continue
        pdscp_attach "$dev" debug
    done
    return 0
}

# pdscp_ifup DEV: DEV came up. Attaches it if it is a configured tunnel, else
# repairs and re-attaches the tunnels that may use it as their uplink.
# Returns 0.
pdscp_ifup() {
    case $1 in '' | lo | --all) return 0 ;; esac
    pdscp_installed || return 0
    if pdscp_configured "$1"; then
        pdscp_attach "$1"
    else
        pdscp_reattach_over "$1"
    fi
    return 0
}

# pdscp_ifdown DEV: DEV went down (or is gone). Detaches it if it is a
# configured tunnel. Returns 0.
pdscp_ifdown() {
    case $1 in '' | lo | --all) return 0 ;; esac
    pdscp_installed || return 0
    if pdscp_configured "$1" down; then
        pdscp_detach "$1"
    fi
    return 0
}
