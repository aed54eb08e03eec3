//! What pdscp asks of the kernel: hooks (TCX links, tc filters), bpf pins
//! and objects, network devices, routes, WireGuard devices, netlink,
//! network namespaces and privileges. Nothing here knows pdscp's state.
pub mod bpf;
pub mod capture;
pub mod egress;
pub mod features;
pub mod hook;
pub mod iface;
pub mod netlink;
pub mod netns;
pub mod privileges;
pub mod probe;

pub mod qdisc;
pub mod route;
pub mod wireguard;
