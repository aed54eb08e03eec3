#!/usr/bin/env bash
# pdscp demo on a throw-away test bed (run as root; touches nothing else):
#
#   [ns pdscp-demo-a]  vxdemo (VXLAN, fixed source port, stands in for wg0)
#         up0  ===== veth =====  up0  [ns pdscp-demo-b]  (we capture here)
#
# Pings with DSCP EF (tos 0xb8) go through the tunnel. Without pdscp the
# outer packets on the wire carry tos 0x0; with pdscp attached they carry 0xb8.
# State goes to its own pin root, so a real pdscp setup is never touched.
set -euo pipefail

cd "$(dirname "$0")/.."
A=pdscp-demo-a
B=pdscp-demo-b
PORT=40001
PIN_ROOT=/sys/fs/bpf/pdscp-demo
PDSCP=(./target/release/pdscp --pin-root "$PIN_ROOT" --netns "$A")

if [[ $(id -u) -ne 0 ]]; then
    echo "demo: run as root (it creates network namespaces and loads BPF programs)" >&2
    exit 1
fi

scripts/setup.sh
echo "== building pdscp (release)"
cargo build --release --quiet

cleanup() {
    "${PDSCP[@]}" detach vxdemo >/dev/null 2>&1 || true
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rmdir "$PIN_ROOT" 2>/dev/null || true
}
trap cleanup EXIT
cleanup

echo "== test bed: namespaces $A and $B, veth underlay, VXLAN tunnel with source port $PORT"
ip netns add "$A"
ip netns add "$B"
ip -n "$A" link add up0 type veth peer name up0 netns "$B"
for ns in "$A" "$B"; do
    if [[ $ns == "$A" ]]; then me=1 peer=2; else me=2 peer=1; fi
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "198.18.0.$me/24" dev up0
    ip -n "$ns" link set up0 up
    ip -n "$ns" link add vxdemo type vxlan id 42 local "198.18.0.$me" remote "198.18.0.$peer" \
        dstport 4789 srcport "$PORT" "$((PORT + 1))"
    ip -n "$ns" addr add "198.19.0.$me/24" dev vxdemo
    ip -n "$ns" link set vxdemo up
done

# Prints outer and inner TOS of the tunnelled pings seen on the wire in namespace B.
show_wire() {
    local capture
    capture=$(mktemp)
    nsenter --net="/run/netns/$B" timeout 5 tcpdump -l -n -v -i up0 "udp port 4789 and src host 198.18.0.1" \
        >"$capture" 2>/dev/null &
    local tcpdump=$!
    sleep 1
    nsenter --net="/run/netns/$A" ping -q -c 3 -i 0.2 -Q 0xb8 198.19.0.2 >/dev/null
    sleep 0.5
    kill "$tcpdump" 2>/dev/null || true
    wait "$tcpdump" 2>/dev/null || true
    # tcpdump -v prints the outer header on a time-stamped line, the inner one on the next.
    awk '/^[0-9]/ { match($0, /tos 0x[0-9a-f]+/); outer = substr($0, RSTART + 4, RLENGTH - 4); next }
         /^IP .*proto ICMP/ { match($0, /tos 0x[0-9a-f]+/)
             printf "  echo request: inner tos %s -> outer tos %s\n", substr($0, RSTART + 4, RLENGTH - 4), outer }' \
        "$capture"
    rm -f "$capture"
}

echo "== ping -Q 0xb8 (DSCP EF) through the tunnel, WITHOUT pdscp:"
show_wire

echo "== pdscp attach vxdemo --uplink up0 --port $PORT"
"${PDSCP[@]}" attach vxdemo --uplink up0 --port "$PORT"

echo "== the same ping WITH pdscp:"
show_wire

echo "== pdscp status"
"${PDSCP[@]}" status

echo "== pdscp detach vxdemo"
"${PDSCP[@]}" detach vxdemo
