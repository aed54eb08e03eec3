//! What the kernel runs, and whether pdscp's pins account for it: the BPF
//! programs on each device, pinned programs, links and maps, and an audit
//! of the pins against the kernel and `status --json`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::Path;

use libbpf_rs::libbpf_sys;
use libbpf_rs::query::{LinkInfoIter, LinkTypeInfo};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};
use serde_json::Value;

use super::bed::TestBed;
use super::files::{dir_names, listing};
use super::library::tcx_state;
use super::namespaces::Netns;
use super::pdscp::status;

/// A BPF program on a device's egress in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hook {
    pub dev: String,
    /// "tc" (a cls_bpf filter at priority `pref`) or "tcx".
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
    let mut ids = [0u32; 64];
    let mut opts = libbpf_sys::bpf_prog_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as _,
        prog_ids: ids.as_mut_ptr(),
        ..Default::default()
    };
    opts.__bindgen_anon_1.count = ids.len() as u32;
    // SAFETY: `opts` points at `ids`, which holds `count` entries.
    let ret =
        unsafe { libbpf_sys::bpf_prog_query_opts(ifindex as i32, libbpf_sys::BPF_TCX_EGRESS, &mut opts) };
    if ret < 0 {
        return Vec::new(); // The device went away meanwhile.
    }
    // SAFETY: the kernel wrote the count back.
    let n = unsafe { opts.__bindgen_anon_1.count } as usize;
    ids[..n.min(ids.len())].to_vec()
}

/// Every BPF program on the egress of every device of `ns` (cls_bpf filters
/// and TCX programs), with the devices.
pub fn hooks(ns: &Netns) -> (BTreeMap<String, u32>, Vec<Hook>) {
    let devs = devices(ns);
    let script: String = devs
        .keys()
        .map(|d| format!("echo '== {d}'; tc -j filter show dev '{d}' egress 2>/dev/null; echo; "))
        .collect();
    let mut hooks = Vec::new();
    let mut dev = String::new();
    for line in ns.sh(&script).lines() {
        if let Some(d) = line.strip_prefix("== ") {
            dev = d.to_string();
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
                    how: "tc",
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
            .flat_map(|(d, i)| tcx_prog_ids(i).into_iter().map(move |id| (d.clone(), id)))
            .collect::<Vec<_>>()
    });
    for (dev, prog_id) in tcx {
        hooks.push(Hook {
            dev,
            how: "tcx",
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

pub fn prog_id_at(pin: &Path) -> Option<u32> {
    ProgramHandle::from_pinned_path(pin).ok().map(|p| p.id())
}

pub fn map_len(pin: &Path) -> Option<usize> {
    MapHandle::from_pinned_path(pin).ok().map(|m| m.keys().count())
}

/// Slots of the pinned dev_slots array in use (role byte set).
pub fn used_slots(pin: &Path) -> Option<usize> {
    let map = MapHandle::from_pinned_path(pin).ok()?;
    let max = libbpf_rs::MapInfo::new(map.as_fd()).ok()?.info.max_entries;
    let mut used = 0;
    for i in 0..max {
        let value = map.lookup(&i.to_ne_bytes(), MapFlags::ANY).ok()??;
        used += usize::from(value[0] != 0);
    }
    Some(used)
}

/// Bits set in the pinned port bitmap.
pub fn port_bits(pin: &Path) -> Option<usize> {
    let map = MapHandle::from_pinned_path(pin).ok()?;
    let value = map.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).ok()??;
    Some(value.iter().map(|b| b.count_ones() as usize).sum())
}

/// uplink -> its attached tunnels.
pub type Attached = BTreeMap<String, BTreeSet<String>>;

/// [`Attached`] from `(uplink, [tunnel, ...])` pairs.
pub fn attached_map(entries: &[(&str, &[&str])]) -> Attached {
    entries
        .iter()
        .map(|(u, ts)| (u.to_string(), ts.iter().map(|t| t.to_string()).collect()))
        .collect()
}

/// Checks pdscp's pins under `root` against what the kernel runs in `ns`,
/// and returns uplink -> tunnels. Fails on: an uplink directory without
/// tunnels or without its programs; a writer that does not run on its
/// uplink; a tunnel directory whose reader does not run on the device; a
/// pinned link that is defunct or on another device or program; a pdscp
/// program on any device of `ns` that the pins do not account for (stale,
/// orphaned or twice); a TCX link of the pinned programs anywhere that is
/// not on an accounted device; registry entries (`ifaces`, `ports`) beyond
/// the attached devices.
pub fn audit_at(ns: &Netns, root: &Path) -> Result<Attached, String> {
    let (devs, hooks) = hooks(ns);
    let mut problems = Vec::new();
    let mut accounted: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut ours = BTreeSet::new();
    let mut state = Attached::new();
    let check_link = |pin: &Path, dev: &str, prog: u32, problems: &mut Vec<String>| {
        if !pin.exists() {
            return;
        }
        match tcx_state(pin) {
            Ok(Some(s)) if Some(&s.ifindex) == devs.get(dev) && s.prog_id == prog => {}
            other => problems.push(format!(
                "{}: pinned link is not {prog} on {dev}: {other:?}",
                pin.display()
            )),
        }
    };
    for uplink in dir_names(root) {
        let dir = root.join(&uplink);
        if !dir.is_dir() {
            problems.push(format!("{}: not a directory", dir.display()));
            continue;
        }
        let tunnels = dir_names(&dir.join("tunnels"));
        if tunnels.is_empty() {
            problems.push(format!("{uplink}: uplink directory without tunnels"));
        }
        let (Some(reader), Some(writer)) = (prog_id_at(&dir.join("reader")), prog_id_at(&dir.join("writer")))
        else {
            problems.push(format!("{uplink}: reader or writer not pinned"));
            continue;
        };
        ours.extend([reader, writer]);
        let runs = |dev: &str, id: u32| hooks.iter().any(|h| h.dev == dev && h.prog_id == id);
        if runs(&uplink, writer) {
            accounted.insert((uplink.clone(), writer));
        } else {
            problems.push(format!("{uplink}: its writer (prog {writer}) does not run on it"));
        }
        check_link(&dir.join("link"), &uplink, writer, &mut problems);
        for t in &tunnels {
            if runs(t, reader) {
                accounted.insert((t.clone(), reader));
            } else {
                problems.push(format!(
                    "{uplink}/tunnels/{t}: pinned, but its reader (prog {reader}) does not run on {t}"
                ));
            }
            check_link(
                &dir.join("tunnels").join(t).join("link"),
                t,
                reader,
                &mut problems,
            );
        }
        // The registry has the uplink and its tunnels; the programs' copies
        // agree: a slot per device, a port bit per tunnel (ports are distinct here).
        let registry = (
            map_len(&dir.join("ifaces")),
            used_slots(&dir.join("dev_slots")),
            port_bits(&dir.join("ports")),
        );
        let n = tunnels.len();
        if registry != (Some(n + 1), Some(n + 1), Some(n)) {
            problems.push(format!(
                "{uplink}: registry (ifaces, dev_slots, port bits) = {registry:?} for {n} tunnels"
            ));
        }
        state.insert(uplink, tunnels);
    }
    for h in &hooks {
        if h.prog_name.starts_with("pdscp_") && !accounted.contains(&(h.dev.clone(), h.prog_id)) {
            problems.push(format!("orphaned pdscp program: {h:?}"));
        }
    }
    for (dev, id) in &accounted {
        let n = hooks.iter().filter(|h| &h.dev == dev && h.prog_id == *id).count();
        if n != 1 {
            problems.push(format!("prog {id} runs {n} times on {dev}"));
        }
    }
    // Every TCX link of these programs, in any namespace, is one of the above.
    let tcx_hooks = hooks
        .iter()
        .filter(|h| h.how == "tcx" && ours.contains(&h.prog_id))
        .count();
    let links: Vec<_> = LinkInfoIter::default()
        .filter(|l| ours.contains(&l.prog_id))
        .collect();
    for l in &links {
        match &l.info {
            LinkTypeInfo::Tcx(t) if t.ifindex != 0 => {}
            other => problems.push(format!(
                "link {} of prog {} is defunct: {other:?}",
                l.id, l.prog_id
            )),
        }
    }
    if links.len() != tcx_hooks {
        problems.push(format!(
            "{} TCX links of pdscp's programs, {tcx_hooks} attached in the namespace",
            links.len()
        ));
    }
    if problems.is_empty() {
        Ok(state)
    } else {
        Err(format!(
            "pins and kernel disagree:\n  {}\npdscp programs: {:#?}\npins: {:#?}",
            problems.join("\n  "),
            hooks
                .iter()
                .filter(|h| h.prog_name.starts_with("pdscp_"))
                .collect::<Vec<_>>(),
            listing(root)
        ))
    }
}

/// [`audit_at`] of the bed's namespace `a` and pin root.
pub fn audit(bed: &TestBed) -> Result<Attached, String> {
    audit_at(&bed.a, &bed.pin_root)
}

/// What `status --json` says is attached; every uplink and tunnel it lists
/// must be present and attached (a listed, unattached one is stale state).
pub fn status_view(bed: &TestBed) -> Attached {
    let s = status(bed);
    let mut view = Attached::new();
    for u in s["uplinks"].as_array().expect("uplinks") {
        let name = u["name"].as_str().expect("name").to_string();
        assert!(
            u["present"] == true && u["attached"] == true && u.get("error").is_none(),
            "status: {u}"
        );
        let tunnels = view.entry(name).or_default();
        for t in u["tunnels"].as_array().expect("tunnels") {
            assert!(t["present"] == true && t["attached"] == true, "status: {t}");
            tunnels.insert(t["name"].as_str().expect("name").to_string());
        }
    }
    view
}

/// The pins and the kernel agree, status agrees, and both say `expected`.
pub fn assert_state(bed: &TestBed, expected: &Attached, what: &str) {
    let pins = audit(bed).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(&pins, expected, "{what}: pins");
    assert_eq!(&status_view(bed), expected, "{what}: status --json");
}
