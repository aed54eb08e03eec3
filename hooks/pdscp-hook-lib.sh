# shellcheck shell=dash
# pdscp-hook-lib.sh: what pdscp's network-manager hooks share (ifupdown,
# NetworkManager, networkd-dispatcher, pdscp-hook for systemd); OpenWrt's
# pdscp-openwrt.sh uses its settings, logging, option checks and pdscp_attach.
# Sourced, not run; POSIX sh plus `local` (dash, bash, busybox ash). See
# docs/hooks.md.
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
#   NAME [uplink=DEV]... [port=N | port=any | any-port] [mode=auto|tcx|tc]
#        [dscp-map=SPEC] [fixed=DSCP] [handshake-dscp=DSCP] [priority-only]
#        [reflect=off|out|in|both] [reflect-override] [reflect-allow=LIST]
#        [map-size=N] [reflect-size=N]
# NAME is a device name, or a shell pattern (wg*, *) that matches WireGuard
# devices only. A line naming the device exactly wins over patterns; among
# patterns the first matching line wins. uplink= may be repeated, one device
# each. Without uplink=, pdscp finds the uplinks itself (those the peers are
# routed over); without port=, it reads a WireGuard device's listen port.
# Every other word is the pdscp attach option of the same name, passed only
# when it is given.

: "${PDSCP_CONFIG:=/etc/pdscp/tunnels}"
: "${PDSCP_TIMEOUT:=30}"
if [ -z "${PDSCP:-}" ]; then
    PDSCP=$(command -v pdscp 2>/dev/null) || PDSCP=/usr/sbin/pdscp
fi

# pdscp_reset_options: empties the results of pdscp_parse_options (and so of
# pdscp_configured), which pdscp_attach turns into pdscp's options:
# PDSCP_UPLINKS (devices, space-separated), PDSCP_PORT (a number, "any" or
# empty), PDSCP_MODE, PDSCP_DSCP_MAP, PDSCP_FIXED, PDSCP_HANDSHAKE_DSCP,
# PDSCP_REFLECT, PDSCP_REFLECT_ALLOW, PDSCP_MAP_SIZE, PDSCP_REFLECT_SIZE (the
# option's value, or empty), PDSCP_PRIORITY_ONLY and PDSCP_REFLECT_OVERRIDE
# (1 or empty).
pdscp_reset_options() {
    PDSCP_UPLINKS='' PDSCP_PORT='' PDSCP_MODE='' PDSCP_DSCP_MAP=''
    PDSCP_FIXED='' PDSCP_HANDSHAKE_DSCP='' PDSCP_PRIORITY_ONLY=''
    PDSCP_REFLECT='' PDSCP_REFLECT_OVERRIDE='' PDSCP_REFLECT_ALLOW=''
    PDSCP_MAP_SIZE='' PDSCP_REFLECT_SIZE=''
}
pdscp_reset_options

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
# LEVEL debug or change, as a warning). LEVEL change is for an attach that is
# usually a no-op: logged at debug if pdscp said only "already attached",
# else at info. Returns pdscp's exit status.
pdscp_run() {
    local level=$1 out rc line
    shift
    if command -v timeout >/dev/null 2>&1; then
        out=$(timeout "$PDSCP_TIMEOUT" "$PDSCP" "$@" 2>&1)
    else
        out=$("$PDSCP" "$@" 2>&1)
    fi
    rc=$?
    if [ "$rc" -ne 0 ]; then
        case $level in debug | change) level=warning ;; *) level=err ;; esac
    elif [ "$level" = change ]; then
        level=debug
        while read -r line; do
            case $line in '' | *': already attached'*) ;; *) level=info ;; esac
        done <<EOF
$out
EOF
    fi
    # One syslog line: clap's usage errors come with several.
    out=$(printf '%s' "$out" | tr -s '\n' ' ')
    out=${out#pdscp: }
    if [ "$rc" -eq 0 ]; then
        pdscp_log "$level" "${out:-pdscp $*: done}"
    else
        [ "$rc" -eq 124 ] && out="timed out after ${PDSCP_TIMEOUT}s"
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

# pdscp_is_number TEXT: digits only (pdscp checks the range).
pdscp_is_number() {
    case $1 in '' | *[!0-9]*) return 1 ;; esac
    return 0
}

# pdscp_is_dscp TEXT: a DSCP as pdscp takes it: 0..63, or a name (cs0..cs7,
# af11..af43, ef, va, le, be, df, default; in any case).
pdscp_is_dscp() {
    case $1 in
        [cC][sS][0-7] | [aA][fF][1-4][1-3] | [eE][fF] | [vV][aA] | [lL][eE]) return 0 ;;
        [bB][eE] | [dD][fF] | [dD][eE][fF][aA][uU][lL][tT]) return 0 ;;
    esac
    pdscp_is_number "$1" && [ "$1" -lt 64 ] 2>/dev/null
}

# pdscp_is_dscp_list TEXT: DSCPs separated by commas (reflect-allow=), or "all".
pdscp_is_dscp_list() {
    local rest="$1," item
    [ "$1" = all ] && return 0
    while [ -n "$rest" ]; do
        item=${rest%%,*}
        rest=${rest#*,}
        pdscp_is_dscp "$item" || return 1
    done
    return 0
}

# pdscp_is_dscp_map TEXT: a dscp-map= SPEC: a preset, or a table of IN=OUT
# entries separated by commas (IN a DSCP or *, OUT a DSCP).
pdscp_is_dscp_map() {
    local rest="$1," entry
    case $1 in copy | diffserv4 | diffserv3 | precedence | wash) return 0 ;; esac
    while [ -n "$rest" ]; do
        entry=${rest%%,*}
        rest=${rest#*,}
        case $entry in *=*) ;; *) return 1 ;; esac
        [ "${entry%%=*}" = '*' ] || pdscp_is_dscp "${entry%%=*}" || return 1
        pdscp_is_dscp "${entry#*=}" || return 1
    done
    return 0
}

# pdscp_parse_options WHERE OPTION...: sets PDSCP_UPLINKS, PDSCP_PORT, ...
# (see pdscp_reset_options) from tunnels-file style options. An unknown or
# malformed option is logged as an error (naming WHERE) and makes it return 1.
pdscp_parse_options() {
    local where=$1 opt value hint
    shift
    pdscp_reset_options
    for opt in "$@"; do
        value=${opt#*=} hint=''
        case $opt in
            uplink=*,*)
                pdscp_log err "$where: '$opt': give one uplink= per uplink (uplink=${value%%,*} uplink=${value#*,})"
                return 1
                ;;
            uplink=?*) PDSCP_UPLINKS="${PDSCP_UPLINKS:+$PDSCP_UPLINKS }$value" ;;
            any-port | port=any) PDSCP_PORT=any ;;
            port=*) hint="a number or 'any'" && pdscp_is_number "$value" && PDSCP_PORT=$value hint='' ;;
            mode=auto | mode=tcx | mode=tc) PDSCP_MODE=$value ;;
            mode=*) hint='auto, tcx or tc' ;;
            dscp-map=*)
                hint='copy, diffserv4, diffserv3, precedence, wash, or a table such as 46=46,34=34,*=0'
                pdscp_is_dscp_map "$value" && PDSCP_DSCP_MAP=$value hint=''
                ;;
            fixed=*)
                hint='a DSCP: 0..63, or a name such as ef, af41, cs1'
                pdscp_is_dscp "$value" && PDSCP_FIXED=$value hint=''
                ;;
            handshake-dscp=*)
                hint='a DSCP: 0..63, or a name such as ef, af41, cs1'
                pdscp_is_dscp "$value" && PDSCP_HANDSHAKE_DSCP=$value hint=''
                ;;
            priority-only) PDSCP_PRIORITY_ONLY=1 ;;
            reflect=off | reflect=out | reflect=in | reflect=both) PDSCP_REFLECT=$value ;;
            reflect=*) hint='off, out, in or both' ;;
            reflect-override) PDSCP_REFLECT_OVERRIDE=1 ;;
            reflect-allow=*)
                hint="DSCPs separated by commas, such as ef,af41, or 'all'"
                pdscp_is_dscp_list "$value" && PDSCP_REFLECT_ALLOW=$value hint=''
                ;;
            map-size=*) hint='a number' && pdscp_is_number "$value" && PDSCP_MAP_SIZE=$value hint='' ;;
            reflect-size=*) hint='a number' && pdscp_is_number "$value" && PDSCP_REFLECT_SIZE=$value hint='' ;;
            *)
                pdscp_log err "$where: unknown option '$opt'"
                return 1
                ;;
        esac
        if [ -n "$hint" ]; then
            pdscp_log err "$where: bad ${opt%%=*} '$value' ($hint)"
            return 1
        fi
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

# pdscp_configured DEV [down]: whether the tunnels file covers DEV (0),
# setting PDSCP_UPLINKS, PDSCP_PORT, ... from its line; 1 if it does not; 2
# if its line is malformed (logged). A pattern line covers only WireGuard
# devices; with "down", also a device that is gone (its kind cannot be told
# any more, and detaching what is not attached is harmless).
pdscp_configured() {
    local dev=$1 line how
    pdscp_reset_options
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
    pdscp_parse_options "$PDSCP_CONFIG: $dev" "$@" || return 2
}

# pdscp_uses_uplink DEV: PDSCP_UPLINKS names DEV, or is empty (pdscp finds
# the uplinks, and DEV may be one of them).
pdscp_uses_uplink() {
    [ -z "$PDSCP_UPLINKS" ] && return 0
    case " $PDSCP_UPLINKS " in *" $1 "*) return 0 ;; esac
    return 1
}

# pdscp_attach DEV [LEVEL]: `pdscp attach DEV` with the options in
# PDSCP_UPLINKS, PDSCP_PORT, ... (only those that are set), logged at LEVEL
# (default info; see pdscp_run). An uplink of PDSCP_UPLINKS whose device does
# not exist (yet) is left out, to be added when it comes up (pdscp_ifup); if
# none exists, all are passed, and pdscp says why it cannot attach.
pdscp_attach() {
    local dev=$1 level=${2:-info} up present='' missing=''
    set -f
    for up in $PDSCP_UPLINKS; do
        if pdscp_exists "$up"; then
            present="$present $up"
        else
            missing="$missing $up"
        fi
    done
    if [ -z "$present" ]; then
        present=$PDSCP_UPLINKS
        missing=''
    fi
    set -- attach "$dev"
    for up in $present; do
        set -- "$@" --uplink "$up"
    done
    set +f
    case $PDSCP_PORT in
        '') ;;
        any) set -- "$@" --any-port ;;
        *) set -- "$@" --port "$PDSCP_PORT" ;;
    esac
    [ -n "$PDSCP_MODE" ] && set -- "$@" --mode "$PDSCP_MODE"
    [ -n "$PDSCP_DSCP_MAP" ] && set -- "$@" --dscp-map "$PDSCP_DSCP_MAP"
    [ -n "$PDSCP_FIXED" ] && set -- "$@" --fixed "$PDSCP_FIXED"
    [ -n "$PDSCP_HANDSHAKE_DSCP" ] && set -- "$@" --handshake-dscp "$PDSCP_HANDSHAKE_DSCP"
    [ -n "$PDSCP_PRIORITY_ONLY" ] && set -- "$@" --priority-only
    [ -n "$PDSCP_REFLECT" ] && set -- "$@" --reflect "$PDSCP_REFLECT"
    [ -n "$PDSCP_REFLECT_OVERRIDE" ] && set -- "$@" --reflect-override
    [ -n "$PDSCP_REFLECT_ALLOW" ] && set -- "$@" --reflect-allow "$PDSCP_REFLECT_ALLOW"
    [ -n "$PDSCP_MAP_SIZE" ] && set -- "$@" --map-size "$PDSCP_MAP_SIZE"
    [ -n "$PDSCP_REFLECT_SIZE" ] && set -- "$@" --reflect-size "$PDSCP_REFLECT_SIZE"
    if [ -n "$missing" ]; then
        if [ "$level" = change ]; then up=debug; else up=$level; fi
        pdscp_log "$up" "$dev: uplink$missing not there (yet): added when it comes up"
    fi
    pdscp_run "$level" "$@"
}

# pdscp_detach DEV [LEVEL]
pdscp_detach() {
    pdscp_run "${2:-info}" detach "$1"
}

# pdscp_reattach_over UPLINK: UPLINK came up. It may be a new device with the
# old name (a PPP link after a reconnect) that lost pdscp's program: `pdscp
# gc` re-attaches the writer to it, whoever attached its tunnels. Configured
# tunnels may now use it: every configured tunnel that exists, and whose
# uplink= names UPLINK or that has no uplink= (pdscp then adds whichever
# uplinks its peers are routed over now), is attached again with its
# configured options. Nothing changed: logged at debug level.
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
        pdscp_uses_uplink "$1" || continue
        pdscp_attach "$dev" change
    done
    return 0
}

# pdscp_ifup DEV: DEV came up. Attaches it if it is a configured tunnel, else
# repairs and re-attaches the tunnels that may use it as an uplink (a tunnel
# whose line is malformed gets neither). Returns 0.
pdscp_ifup() {
    case $1 in '' | lo | --all) return 0 ;; esac
    pdscp_installed || return 0
    pdscp_configured "$1"
    case $? in
        0) pdscp_attach "$1" ;;
        1) pdscp_reattach_over "$1" ;;
    esac
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
