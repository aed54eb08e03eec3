#!/usr/bin/env bash
# Installs what building and testing pdscp needs on Debian/Ubuntu (run as root).
# The Rust toolchain itself comes from rustup (Debian's cargo is too old).
set -euo pipefail

PACKAGES=(
    clang make pkg-config libelf-dev zlib1g-dev # build: BPF object + libbpf-sys
    iproute2 iputils-ping tcpdump bpftool       # tests and demo: namespaces, traffic, captures
    nftables                                    # tests: NAT in front of a reflecting concentrator
    shellcheck busybox-static                   # lint (CI); busybox for the OpenWrt hook tests
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup: no cargo found; install Rust 1.82 or newer with rustup (https://rustup.rs)" >&2
    exit 1
fi
