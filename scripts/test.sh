#!/usr/bin/env bash
# Runs pdscp's whole test suite (as root: the tests build namespaces, veths
# and tunnels and load BPF programs into the running kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
    echo "test: run as root (sudo scripts/test.sh)" >&2
    exit 1
fi
scripts/setup.sh
cargo test --locked "$@"
