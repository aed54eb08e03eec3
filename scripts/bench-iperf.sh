#!/usr/bin/env bash
# TCP throughput through a fixed-port VXLAN tunnel between two network
# namespaces, with and without pdscp attached, in alternating runs. Prints
# each pair and the median ratio with/without (target >= 0.97).
#
#   sudo scripts/bench-iperf.sh            # 5 pairs of 5-second runs
#   PAIRS=9 DURATION=10 GSO=on sudo scripts/bench-iperf.sh
#   STREAMS=8 sudo scripts/bench-iperf.sh  # 8 parallel TCP streams (flows)
#
# GSO=off (default) turns segmentation offload off on the tunnel, so every
# MTU-sized packet crosses both programs, as every encrypted packet crosses
# the writer with WireGuard; GSO=on lets 64 KB super-packets through, which
# hides per-packet cost. The inner packets carry DSCP 46, so the reader keeps
# a flow entry and the writer rewrites every outer packet.
#
# Only 198.18.0.0/15 addresses, only inside the namespaces made here; the
# namespaces and the pin root are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-5}
DURATION=${DURATION:-5}
GSO=${GSO:-off}
STREAMS=${STREAMS:-1}
PDSCP=${PDSCP:-target/release/pdscp}
PORT=40000 # the tunnel's outer UDP source port
TOS=0xb8   # DSCP 46 (EF)
A=pdscp-bench-a-$$
B=pdscp-bench-b-$$
PIN_ROOT=/sys/fs/bpf/pdscp-bench-$$
SERVER_PID=

if [[ $(id -u) -ne 0 ]]; then
    echo "bench-iperf: run as root" >&2
    exit 1
fi
missing=()
for tool in iperf3 jq ethtool; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ ! -x $PDSCP ]]; then
    cargo build --release --locked --bin pdscp
fi

cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
    fi
    "$PDSCP" --pin-root "$PIN_ROOT" --netns "$A" detach vx0 >/dev/null 2>&1 || true
    rm -rf "$PIN_ROOT"
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT

# The bed of tests/testbed: veth up0 between a and b, static neighbours,
# tunnel segmentation offload off on up0, VXLAN vx0 with srcport fixed at PORT.
ip netns add "$A"
ip netns add "$B"
ip -n "$A" link add up0 type veth peer name up0 netns "$B"
for side in a b; do
    if [[ $side == a ]]; then
        ns=$A me=1 peer=2
    else
        ns=$B me=2 peer=1
    fi
    ip -n "$ns" link set lo up
    ip -n "$ns" link set up0 address "02:00:00:00:00:0$me"
    ip -n "$ns" addr add "198.18.0.$me/24" dev up0
    ip -n "$ns" neigh replace "198.18.0.$peer" lladdr "02:00:00:00:00:0$peer" dev up0 nud permanent
    ip -n "$ns" link set up0 up
    ip netns exec "$ns" ethtool -K up0 tx-udp_tnl-segmentation off tx-udp_tnl-csum-segmentation off
    ip -n "$ns" link add vx0 address "02:00:00:01:01:0$me" type vxlan id 42 \
        local "198.18.0.$me" remote "198.18.0.$peer" dev up0 dstport 4789 \
        srcport "$PORT" "$((PORT + 1))" nolearning
    ip -n "$ns" addr add "198.19.1.$me/24" dev vx0
    ip -n "$ns" neigh replace "198.19.1.$peer" lladdr "02:00:00:01:01:0$peer" dev vx0 nud permanent
    ip -n "$ns" link set vx0 up
    if [[ $GSO == off ]]; then
        ip netns exec "$ns" ethtool -K vx0 tso off gso off
    fi
done

ip netns exec "$B" iperf3 --server --bind 198.19.1.2 >/dev/null 2>&1 &
SERVER_PID=$!
sleep 0.5

# Prints the Gbit/s of one run.
throughput() {
    ip netns exec "$A" iperf3 --client 198.19.1.2 --time "$1" --omit 1 --tos "$TOS" \
        --parallel "$STREAMS" --json |
        jq '.end.sum_received.bits_per_second / 1e9'
}

attach() {
    "$PDSCP" --pin-root "$PIN_ROOT" --netns "$A" attach vx0 --uplink up0 --port "$PORT" >/dev/null
}

detach() {
    "$PDSCP" --pin-root "$PIN_ROOT" --netns "$A" detach vx0 >/dev/null
}

# Packets the writer marked so far, to check a run with pdscp really used it.
marked() {
    "$PDSCP" --pin-root "$PIN_ROOT" --netns "$A" status --json | jq '.uplinks[0].counters.marked'
}

throughput 2 >/dev/null # warm-up
echo "TCP over VXLAN, $STREAMS stream(s), $PAIRS pairs of ${DURATION}s runs, GSO $GSO, $(nproc) CPUs, kernel $(uname -r)"
echo
echo "| pair | without pdscp (Gbit/s) | with pdscp (Gbit/s) | ratio |"
echo "|---:|---:|---:|---:|"
ratios=()
for ((i = 1; i <= PAIRS; i++)); do
    # Alternate which goes first, so a drift in the machine's speed cancels out.
    if ((i % 2)); then
        without=$(throughput "$DURATION")
        attach
        with=$(throughput "$DURATION")
    else
        attach
        with=$(throughput "$DURATION")
    fi
    n=$(marked)
    if ((n == 0)); then
        echo "bench-iperf: pdscp marked no packet; is it attached?" >&2
        exit 1
    fi
    detach
    if ! ((i % 2)); then
        without=$(throughput "$DURATION")
    fi
    ratio=$(awk -v w="$with" -v o="$without" 'BEGIN { printf "%.3f", w / o }')
    ratios+=("$ratio")
    printf '| %d | %.2f | %.2f | %s |\n' "$i" "$without" "$with" "$ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
echo
verdict=$(awk -v m="$median" 'BEGIN { print (m >= 0.97) ? "ok" : "MISSED" }')
echo "median ratio with/without: $median (target >= 0.97: $verdict)"
