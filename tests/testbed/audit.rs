//! Whether pdscp's pins account for what the kernel runs (hooks.rs): pinned
//! programs, links and maps read directly, and an audit of the pins against
//! the kernel and `status --json`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::Path;

use libbpf_rs::query::{LinkInfoIter, LinkTypeInfo};
use libbpf_rs::{MapCore, MapFlags, MapHandle, ProgramHandle};

use super::bed::TestBed;
use super::files::{dir_names, listing};
use super::hooks::hooks;
use super::library::tcx_state;
use super::namespaces::Netns;
use super::pdscp::status;

pub fn prog_id_at(pin: &Path) -> Option<u32> {
    ProgramHandle::from_pinned_path(pin).ok().map(|p| p.id())
}

pub fn map_len(pin: &Path) -> Option<usize> {
    MapHandle::from_pinned_path(pin).ok().map(|m| m.keys().count())
}

/// Every value of a pinned array map, by index.
fn array_values(pin: &Path) -> Option<Vec<Vec<u8>>> {
    let map = MapHandle::from_pinned_path(pin).ok()?;
    let max = libbpf_rs::MapInfo::new(map.as_fd()).ok()?.info.max_entries;
    (0..max)
        .map(|i| map.lookup(&i.to_ne_bytes(), MapFlags::ANY).ok().flatten())
        .collect()
}

/// Entries of the pinned `devices` array in use (a role byte set).
pub fn used_slots(pin: &Path) -> Option<usize> {
    Some(array_values(pin)?.iter().filter(|v| v[0] != 0).count())
}

/// Ports with a tunnel in the pinned `ports` blocks (256 u16 slots each;
/// slot 0 of block 0 counts --any-port tunnels and is not a port).
pub fn port_bits(pin: &Path) -> Option<usize> {
    let blocks = array_values(pin)?;
    let mut n = 0;
    for (b, block) in blocks.iter().enumerate() {
        for (i, slot) in block.chunks_exact(2).enumerate() {
            if (b, i) != (0, 0) && u16::from_ne_bytes([slot[0], slot[1]]) != 0 {
                n += 1;
            }
        }
    }
    Some(n)
}

/// A record read from the pinned `tunnels` map, decoded here by hand
/// (bpf/pdscp.h, struct tunnel_rec) so the audit does not trust pdscp's codec.
#[derive(Clone, Debug)]
pub struct TunnelPin {
    pub slot: usize,
    pub name: String,
    pub ifindex: u32,
    /// Uplink slots it is attached to.
    pub uplinks: Vec<usize>,
    pub reader_mode: u8,
    pub ingress_mode: u8,
}

fn c_name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len())]).into_owned()
}

/// The tunnels recorded under `root` (flags byte 136 has TUNNEL_IN_USE).
pub fn tunnel_pins(root: &Path) -> Vec<TunnelPin> {
    let values = array_values(&root.join("maps/tunnels")).unwrap_or_default();
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.len() == 168 && v[136] & 1 != 0)
        .map(|(slot, v)| TunnelPin {
            slot,
            name: c_name(&v[152..168]),
            ifindex: u32::from_ne_bytes([v[140], v[141], v[142], v[143]]),
            uplinks: (0..32).filter(|u| v[2 * u] != 0 || v[2 * u + 1] != 0).collect(),
            reader_mode: v[146],
            ingress_mode: v[147],
        })
        .collect()
}

/// The uplinks recorded under `root`: slot -> (name, ifindex).
pub fn uplink_pins(root: &Path) -> BTreeMap<usize, (String, u32)> {
    let values = array_values(&root.join("maps/uplinks")).unwrap_or_default();
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.len() == 96 && v[0] != 0)
        .map(|(slot, v)| {
            (
                slot,
                (c_name(&v[80..96]), u32::from_ne_bytes([v[4], v[5], v[6], v[7]])),
            )
        })
        .collect()
}

/// The device a directory of the layout is named for ('.' is spelt ':').
fn device_of(dir: &str) -> String {
    dir.replace(':', ".")
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

/// Checks pdscp's pins under `root` (docs/state.md) against what the kernel
/// runs in `ns`, and returns uplink -> tunnels. Fails on: objects without a
/// stamp or the other way round; an uplink or tunnel directory without its
/// record, or a record without its directory; an uplink without tunnels; a
/// writer, reader or ingress program that does not run where its record
/// says; a pinned link that is defunct or on another device or program; a
/// pdscp program on any device of `ns` that the records do not account for
/// (stale, orphaned or twice); a TCX link of the pinned programs that is not
/// on an accounted device; index entries (`devices`, `ports`) beyond the
/// attached devices.
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
    let stamped = root.join("stamp").exists();
    let programs: Vec<Option<u32>> = ["reader", "writer", "ingress"]
        .iter()
        .map(|p| prog_id_at(&root.join("progs").join(p)))
        .collect();
    let uplink_dirs: BTreeSet<String> = dir_names(&root.join("uplinks"))
        .into_iter()
        .map(|d| device_of(&d))
        .collect();
    let tunnel_dirs: BTreeSet<String> = dir_names(&root.join("tunnels"))
        .into_iter()
        .map(|d| device_of(&d))
        .collect();
    let tunnels = tunnel_pins(root);
    let uplinks = uplink_pins(root);
    if !stamped {
        if root.join("maps").exists()
            || root.join("progs").exists()
            || !uplink_dirs.is_empty()
            || !tunnel_dirs.is_empty()
        {
            problems.push("objects or directories without a stamp".to_string());
        }
    } else if let [Some(reader), Some(writer), Some(ingress)] = programs[..] {
        ours.extend([reader, writer, ingress]);
        let runs = |dev: &str, id: u32| hooks.iter().any(|h| h.dev == dev && h.prog_id == id);
        for (slot, (name, _)) in &uplinks {
            if !uplink_dirs.contains(name) {
                problems.push(format!("uplink {name}: recorded, but no directory"));
            }
            let on: BTreeSet<String> = tunnels
                .iter()
                .filter(|t| t.uplinks.contains(slot))
                .map(|t| t.name.clone())
                .collect();
            if on.is_empty() {
                problems.push(format!("{name}: uplink without tunnels"));
            }
            if runs(name, writer) {
                accounted.insert((name.clone(), writer));
            } else {
                problems.push(format!("{name}: its writer (prog {writer}) does not run on it"));
            }
            check_link(
                &root.join("uplinks").join(name.replace('.', ":")).join("link"),
                name,
                writer,
                &mut problems,
            );
            state.insert(name.clone(), on);
        }
        for dir in &uplink_dirs {
            if !uplinks.values().any(|(n, _)| n == dir) {
                problems.push(format!("uplinks/{dir}: a directory without a record"));
            }
        }
        for t in &tunnels {
            if !tunnel_dirs.contains(&t.name) {
                problems.push(format!("tunnel {}: recorded, but no directory", t.name));
            }
            for u in &t.uplinks {
                if !uplinks.contains_key(u) {
                    problems.push(format!(
                        "tunnel {}: attached to uplink slot {u}, which is not recorded",
                        t.name
                    ));
                }
            }
            let dir = root.join("tunnels").join(t.name.replace('.', ":"));
            for (mode, prog, pin) in [
                (t.reader_mode, reader, "link"),
                (t.ingress_mode, ingress, "ingress"),
            ] {
                if mode == 0 {
                    continue;
                }
                if runs(&t.name, prog) {
                    accounted.insert((t.name.clone(), prog));
                } else {
                    problems.push(format!(
                        "tunnel {}: recorded, but prog {prog} does not run on it",
                        t.name
                    ));
                }
                check_link(&dir.join(pin), &t.name, prog, &mut problems);
            }
        }
        for dir in &tunnel_dirs {
            if !tunnels.iter().any(|t| &t.name == dir) {
                problems.push(format!("tunnels/{dir}: a directory without a record"));
            }
        }
        // The programs' indexes agree with the records: one device entry per
        // attached device, one port per tunnel (ports are distinct here).
        let devices: BTreeSet<u32> = tunnels
            .iter()
            .map(|t| t.ifindex)
            .chain(uplinks.values().map(|(_, i)| *i))
            .collect();
        let indexes = (
            used_slots(&root.join("maps/devices")),
            port_bits(&root.join("maps/ports")),
        );
        if indexes != (Some(devices.len()), Some(tunnels.len())) {
            problems.push(format!(
                "indexes (devices, ports) = {indexes:?} for {} devices, {} tunnels",
                devices.len(),
                tunnels.len()
            ));
        }
    } else {
        problems.push(format!("stamped, but programs pinned: {programs:?}"));
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
        .filter(|h| h.how.starts_with("tcx") && ours.contains(&h.prog_id))
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
