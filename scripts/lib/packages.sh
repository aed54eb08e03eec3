# shellcheck shell=bash
# packages.sh: installing the Debian packages a script needs, sourced by the
# scripts in scripts/ (which define log()). Only what is missing is installed,
# without recommends (wireguard-tools, for one, would pull a linux-image into
# the host's /boot), and nothing else on the machine changes.

# apt_get ARGS...: apt-get, waiting for the dpkg lock rather than failing
# (other tools may be using apt too).
apt_get() {
    DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 \
        -o APT::Sandbox::User=root "$@"
}

# install_missing_packages PKG...: installs those of PKG that are not
# installed; a stale package list gets one apt-get update and a retry.
# Returns non-zero if they could not be installed.
install_missing_packages() {
    local pkg missing=()
    for pkg in "$@"; do
        if [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) != installed ]]; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]})) || return 0
    log "installing missing packages: ${missing[*]}"
    apt_get install -y --no-install-recommends "${missing[@]}" >&2 ||
        { apt_get update >&2 && apt_get install -y --no-install-recommends "${missing[@]}" >&2; }
}
