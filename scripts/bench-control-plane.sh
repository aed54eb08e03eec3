#!/usr/bin/env bash
# Control-plane cost: in one namespace, attach 256 VXLAN tunnels (distinct
# VNIs and source ports) to one uplink one by one, timing every command, time
# `status --json` at 256 tunnels (target < 100 ms), then detach them all.
# Times are whole commands (process start included), as an operator sees them.
#
#   sudo scripts/bench-control-plane.sh
#   TUNNELS=512 MODE=tc sudo scripts/bench-control-plane.sh
#
# Only 198.18.0.0/15 addresses, inside a namespace made here; the namespace
# and the pin root are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

TUNNELS=${TUNNELS:-256}
MODE=${MODE:-auto}
STATUS_RUNS=${STATUS_RUNS:-9}
PDSCP=${PDSCP:-target/release/pdscp}
PORT_BASE=20000 # tunnel i sends from PORT_BASE + 2i
NS=pdscp-bench-cp-$$
PIN_ROOT=/sys/fs/bpf/pdscp-bench-cp-$$
WORK=$(mktemp -d)

if [[ $(id -u) -ne 0 ]]; then
    echo "bench-control-plane: run as root" >&2
    exit 1
fi
if ! command -v jq >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null
fi
if [[ ! -x $PDSCP ]]; then
    cargo build --release --locked --bin pdscp
fi

cleanup() {
    rm -rf "$PIN_ROOT" "$WORK"
    ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT

pdscp() {
    "$PDSCP" --pin-root "$PIN_ROOT" --netns "$NS" "$@"
}

# Milliseconds taken by a command, whose output is discarded.
time_ms() {
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null
    end=$(date +%s%N)
    awk -v ns="$((end - start))" 'BEGIN { printf "%.1f\n", ns / 1e6 }'
}

# Prints "median p90 max" of the numbers in a file.
summary() {
    sort -g "$1" | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        p = v[int(NR * 0.9 + 0.999)]
        printf "%.1f %.1f %.1f\n", m, p, v[NR] }'
}

# Median of lines FROM..TO of a file (1-based), in command order.
median_of() {
    sed -n "$2,$3p" "$1" | sort -g | awk '{ v[NR] = $1 } END {
        printf "%.1f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The uplink is one end of a veth pair: nothing is sent, only attached.
ip netns add "$NS"
{
    echo "link set lo up"
    echo "link add up0 type veth peer name up0p"
    echo "addr add 198.18.0.1/24 dev up0"
    echo "link set up0p up"
    echo "link set up0 up"
    for ((i = 0; i < TUNNELS; i++)); do
        port=$((PORT_BASE + 2 * i))
        echo "link add vx$i type vxlan id $((1000 + i)) local 198.18.0.1 remote 198.18.0.2" \
            "dev up0 dstport 4789 srcport $port $((port + 1))"
        echo "link set vx$i up"
    done
} >"$WORK/ip.batch"
ip -n "$NS" -batch "$WORK/ip.batch"

for ((i = 0; i < TUNNELS; i++)); do
    time_ms pdscp attach "vx$i" --uplink up0 --port "$((PORT_BASE + 2 * i))" --mode "$MODE" >>"$WORK/attach"
done
attached=$(pdscp status --json | jq '[.uplinks[].tunnels[] | select(.attached)] | length')
if ((attached != TUNNELS)); then
    echo "bench-control-plane: $attached of $TUNNELS tunnels attached" >&2
    exit 1
fi
for ((i = 0; i < STATUS_RUNS; i++)); do
    time_ms pdscp status --json >>"$WORK/status"
done
time_ms pdscp status >/dev/null # text output, for comparison
for ((i = 0; i < TUNNELS; i++)); do
    time_ms pdscp detach "vx$i" >>"$WORK/detach"
done
if [[ -n $(ls -A "$PIN_ROOT" 2>/dev/null) ]]; then
    echo "bench-control-plane: state left in $PIN_ROOT after detaching everything" >&2
    exit 1
fi

quarter=$((TUNNELS / 4))
read -r a_med a_p90 a_max < <(summary "$WORK/attach")
read -r d_med d_p90 d_max < <(summary "$WORK/detach")
read -r s_med s_p90 s_max < <(summary "$WORK/status")
echo "pdscp control plane: $TUNNELS VXLAN tunnels on one uplink, mode $MODE, $(nproc) CPUs, kernel $(uname -r)"
echo
echo "| command | 1st | ${quarter}th | ${TUNNELS}th | median | p90 | max | median of first $quarter | median of last $quarter |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for what in attach detach; do
    f=$WORK/$what
    if [[ $what == attach ]]; then
        med=$a_med p90=$a_p90 max=$a_max
    else
        med=$d_med p90=$d_p90 max=$d_max
    fi
    printf '| %s (ms) | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$what" \
        "$(sed -n 1p "$f")" "$(sed -n "${quarter}p" "$f")" "$(sed -n "${TUNNELS}p" "$f")" \
        "$med" "$p90" "$max" "$(median_of "$f" 1 "$quarter")" \
        "$(median_of "$f" $((TUNNELS - quarter + 1)) "$TUNNELS")"
done
echo
verdict=$(awk -v m="$s_med" 'BEGIN { print (m < 100) ? "ok" : "MISSED" }')
echo "status --json at $TUNNELS tunnels: median $s_med ms, p90 $s_p90 ms, max $s_max ms over $STATUS_RUNS runs (target < 100 ms: $verdict)"
growth=$(awk -v f="$(median_of "$WORK/attach" 1 "$quarter")" \
    -v l="$(median_of "$WORK/attach" $((TUNNELS - quarter + 1)) "$TUNNELS")" \
    'BEGIN { printf "%.2f", l / f }')
echo "attach time, last $quarter over first $quarter (medians): ${growth}x"
