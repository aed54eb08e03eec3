//! tc beside pdscp: an unrelated legacy filter with a hit counter.

use super::namespaces::Netns;

/// Veth pair that [`tc_filter_add_counter`] mirrors into (the peer drops it).
pub const COUNTER_SINK: &str = "pdsink0";
pub const COUNTER_SINK_PEER: &str = "pdsink0p";

/// Side of a clsact qdisc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcDir {
    Ingress,
    Egress,
}

impl TcDir {
    pub fn as_str(self) -> &'static str {
        match self {
            TcDir::Ingress => "ingress",
            TcDir::Egress => "egress",
        }
    }
}

/// Adds the clsact qdisc to `dev` unless it is there already.
pub fn ensure_clsact(ns: &Netns, dev: &str) {
    let out = ns.try_sh(&format!("tc qdisc add dev {dev} clsact"));
    if !out.status.success() && !ns.sh(&format!("tc qdisc show dev {dev}")).contains("clsact") {
        panic!("adding clsact to {dev}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Installs a match-everything u32 filter at `prio` on `dev`'s clsact hook,
/// whose action mirrors each packet into [`COUNTER_SINK`] and then
/// `continue`s, so classification goes on exactly as without it. This kernel
/// has neither matchall nor gact, so mirred is the action with a counter;
/// the sink's peer drops the copies (wrong MAC). Capturing on
/// [`COUNTER_SINK_PEER`] shows what the hook saw (e.g. GSO super-packets).
pub fn tc_filter_add_counter(ns: &Netns, dev: &str, dir: TcDir, prio: u16) {
    tc_filter_add_counter_matching(ns, dev, dir, prio, "protocol all u32 match u32 0 0");
}

/// The same, counting only IPv4 packets with DSCP `dscp`.
pub fn tc_filter_add_dscp_counter(ns: &Netns, dev: &str, dir: TcDir, prio: u16, dscp: u8) {
    let tos = dscp << 2;
    tc_filter_add_counter_matching(
        ns,
        dev,
        dir,
        prio,
        &format!("protocol ip u32 match ip dsfield {tos:#04x} 0xfc"),
    );
}

fn tc_filter_add_counter_matching(ns: &Netns, dev: &str, dir: TcDir, prio: u16, selector: &str) {
    ensure_clsact(ns, dev);
    ns.sh(&format!(
        "set -e
         if ! ip link show {COUNTER_SINK} >/dev/null 2>&1; then
             ip link add {COUNTER_SINK} type veth peer name {COUNTER_SINK_PEER}
             ip link set {COUNTER_SINK} addrgenmode none
             ip link set {COUNTER_SINK_PEER} addrgenmode none
             ip link set {COUNTER_SINK} up
             ip link set {COUNTER_SINK_PEER} up
         fi
         tc filter add dev {dev} {dir} prio {prio} {selector} \
            action mirred egress mirror dev {COUNTER_SINK} continue",
        dir = dir.as_str()
    ));
}

/// Packets counted by the filter at `prio` (0 if there is none any more).
pub fn tc_filter_packets(ns: &Netns, dev: &str, dir: TcDir, prio: u16) -> u64 {
    tc_filter_stat(ns, dev, dir, prio, "packets")
}

/// Bytes counted by the filter at `prio` (GRO packets count whole).
pub fn tc_filter_bytes(ns: &Netns, dev: &str, dir: TcDir, prio: u16) -> u64 {
    tc_filter_stat(ns, dev, dir, prio, "bytes")
}

fn tc_filter_stat(ns: &Netns, dev: &str, dir: TcDir, prio: u16, what: &str) -> u64 {
    let json = ns.sh(&format!(
        "tc -s -j filter show dev {dev} {} prio {prio}",
        dir.as_str()
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("tc json {e}: {json}"));
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.pointer("/options/actions")?.as_array())
        .flatten()
        .filter_map(|a| a.pointer(&format!("/stats/{what}"))?.as_u64())
        .sum()
}

/// Whether a filter exists at `prio` on `dev`'s clsact hook.
pub fn tc_filter_exists(ns: &Netns, dev: &str, dir: TcDir, prio: u16) -> bool {
    let out = ns.try_sh(&format!(
        "tc -j filter show dev {dev} {} prio {prio}",
        dir.as_str()
    ));
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"kind\"")
}

/// Priority of the counter filters the tests put beside pdscp's.
pub const COUNTER_PRIO: u16 = 40000;
/// Priority of the foreign cls_bpf program the tests put beside pdscp's.
pub const FOREIGN_PRIO: u16 = 20000;

/// Bytes each tin of the CAKE root qdisc on `dev` has sent, in `tc -s`
/// order (diffserv4: Bulk, Best Effort, Video, Voice).
pub fn cake_tin_bytes(ns: &Netns, dev: &str) -> Vec<u64> {
    let json = ns.sh(&format!("tc -s -j qdisc show dev {dev} root"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("tc json {e}: {json}"));
    let tins = v
        .as_array()
        .and_then(|q| q.iter().find(|q| q["kind"] == "cake"))
        .and_then(|q| q.get("tins"))
        .and_then(|t| t.as_array())
        .unwrap_or_else(|| panic!("no CAKE tins on {dev}: {json}"));
    tins.iter()
        .map(|t| t["sent_bytes"].as_u64().unwrap_or(0))
        .collect()
}
