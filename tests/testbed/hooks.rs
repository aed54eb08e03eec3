//! What the kernel runs: the BPF programs on the egress and ingress of each
//! device of a namespace (tc filters and TCX links), by program name. The
//! kernel is asked here directly, not through pdscp's own queries
//! (src/kernel/egress.rs asks the same for `check`): the audit that uses
//! this must not share pdscp's mistakes.

use std::collections::BTreeMap;

use libbpf_rs::libbpf_sys;
use libbpf_rs::ProgramHandle;
use serde_json::Value;

use super::namespaces::Netns;

/// A BPF program on a device's egress or ingress in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hook {
    pub dev: String,
    /// "tc" (a cls_bpf filter at priority `pref`) or "tcx", on egress;
    /// "tc ingress" and "tcx ingress" on ingress.
    pub how: &'static str,
    pub pref: u64,
    pub prog_id: u32,
    pub prog_name: String,
}

/// The devices of `ns`: name -> ifindex.
pub fn devices(ns: &Netns) -> BTreeMap<String, u32> {
    let v: Value = serde_json::from_str(&ns.sh("ip -j link show")).expect("ip -j link");
    v.as_array()
        .expect("ip -j link: array")
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().expect("ifname").to_string(),
                l["ifindex"].as_u64().expect("ifindex") as u32,
            )
        })
        .collect()
}

pub fn prog_name(id: u32) -> String {
    ProgramHandle::from_prog_id(id)
        .map(|p| p.name().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The programs on TCX egress of `ifindex` in the calling thread's namespace.
pub fn tcx_prog_ids(ifindex: u32) -> Vec<u32> {
    tcx_prog_ids_at(ifindex, libbpf_sys::BPF_TCX_EGRESS)
}

/// The programs on a TCX hook (egress or ingress) of `ifindex`.
fn tcx_prog_ids_at(ifindex: u32, hook: libbpf_sys::bpf_attach_type) -> Vec<u32> {
    let mut ids = [0u32; 64];
    let mut opts = libbpf_sys::bpf_prog_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as _,
        prog_ids: ids.as_mut_ptr(),
        ..Default::default()
    };
    opts.__bindgen_anon_1.count = ids.len() as u32;
    // SAFETY: `opts` points at `ids`, which holds `count` entries.
    let ret = unsafe { libbpf_sys::bpf_prog_query_opts(ifindex as i32, hook, &mut opts) };
    if ret < 0 {
        return Vec::new(); // The device went away meanwhile.
    }
    // SAFETY: the kernel wrote the count back.
    let n = unsafe { opts.__bindgen_anon_1.count } as usize;
    ids[..n.min(ids.len())].to_vec()
}

/// Every BPF program on the egress and ingress of every device of `ns`
/// (cls_bpf filters and TCX programs), with the devices.
pub fn hooks(ns: &Netns) -> (BTreeMap<String, u32>, Vec<Hook>) {
    let devs = devices(ns);
    let script: String = devs
        .keys()
        .flat_map(|d| {
            ["egress", "ingress"].map(|dir| {
                format!("echo '== {d} {dir}'; tc -j filter show dev '{d}' {dir} 2>/dev/null; echo; ")
            })
        })
        .collect();
    let mut hooks = Vec::new();
    let mut dev = String::new();
    let mut ingress = false;
    for line in ns.sh(&script).lines() {
        if let Some(d) = line.strip_prefix("== ") {
            let (d, dir) = d.rsplit_once(' ').expect("== DEV DIR");
            dev = d.to_string();
            ingress = dir == "ingress";
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("tc json {e}: {line}"));
        for f in v.as_array().into_iter().flatten() {
            if let Some(prog) = f.pointer("/options/prog") {
                hooks.push(Hook {
                    dev: dev.clone(),
                    how: if ingress { "tc ingress" } else { "tc" },
                    pref: f["pref"].as_u64().unwrap_or(0),
                    prog_id: prog["id"].as_u64().expect("prog id") as u32,
                    prog_name: prog["name"].as_str().unwrap_or("").to_string(),
                });
            }
        }
    }
    let list: Vec<(String, u32)> = devs.clone().into_iter().collect();
    let tcx = ns.run_in("tcx query", move || {
        list.into_iter()
            .flat_map(|(d, i)| {
                let egress = tcx_prog_ids(i).into_iter().map(|id| (false, id));
                let ingress = tcx_prog_ids_at(i, libbpf_sys::BPF_TCX_INGRESS)
                    .into_iter()
                    .map(|id| (true, id));
                egress
                    .chain(ingress)
                    .map(move |(on_ingress, id)| (d.clone(), on_ingress, id))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    });
    for (dev, on_ingress, prog_id) in tcx {
        hooks.push(Hook {
            dev,
            how: if on_ingress { "tcx ingress" } else { "tcx" },
            pref: 0,
            prog_id,
            prog_name: prog_name(prog_id),
        });
    }
    hooks.sort();
    (devs, hooks)
}

/// pdscp's programs (by name) on the devices of `ns`.
pub fn pdscp_hooks(ns: &Netns) -> Vec<Hook> {
    hooks(ns)
        .1
        .into_iter()
        .filter(|h| h.prog_name.starts_with("pdscp_"))
        .collect()
}
