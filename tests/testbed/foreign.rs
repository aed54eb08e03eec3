//! Somebody else's TC programs (bpf/test_foreign.bpf.c) on pdscp's hooks:
//! loaded, pinned where the test says, and attached as a cls_bpf filter or a
//! TCX link, as another tool would.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::libbpf_sys;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::ProgramHandle;

use super::library::pin_fd;
use super::namespaces::{ifindex_here, Netns};
use super::tc::ensure_clsact;

/// The skeleton of bpf/test_foreign.bpf.c.
pub mod foreign_skel {
    #![allow(clippy::all, dead_code, unused_imports, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/test_foreign.skel.rs"));
}

/// The foreign programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForeignProgram {
    /// Counts packets in its map, changes nothing.
    Count,
    /// Marks every IPv4 UDP packet CS1 (as qosify's defaults do on a WAN).
    MarkCs1,
}

/// Loads the foreign object and pins `program` at `dir/<label>_prog` and
/// its counter map at `dir/<label>_map`; returns the program's pin.
pub fn pin_foreign(dir: &Path, label: &str, program: ForeignProgram) -> PathBuf {
    let mut storage = MaybeUninit::uninit();
    let open = foreign_skel::TestForeignSkelBuilder::default()
        .open(&mut storage)
        .expect("opening test_foreign");
    let skel = open.load().expect("loading test_foreign");
    let prog_pin = dir.join(format!("{label}_prog"));
    let prog = match program {
        ForeignProgram::Count => &skel.progs.foreign_count,
        ForeignProgram::MarkCs1 => &skel.progs.foreign_mark_cs1,
    };
    pin_fd(prog.as_fd(), &prog_pin).expect("pin prog");
    pin_fd(
        skel.maps.foreign_packets.as_fd(),
        &dir.join(format!("{label}_map")),
    )
    .expect("pin map");
    prog_pin
}

/// The pinned program as a cls_bpf filter at `prio` on `dev`'s egress.
pub fn add_foreign_filter(ns: &Netns, dev: &str, prio: u16, prog_pin: &Path) {
    ensure_clsact(ns, dev);
    ns.sh(&format!(
        "tc filter add dev {dev} egress prio {prio} handle 0x1 bpf object-pinned {} direct-action",
        prog_pin.display()
    ));
}

/// The pinned program as a TCX link on `dev`'s egress (after those there),
/// pinned at `link_pin`.
pub fn add_foreign_tcx(ns: &Netns, dev: &str, prog_pin: &Path, link_pin: &Path) {
    let (dev, prog_pin, link_pin) = (dev.to_string(), prog_pin.to_path_buf(), link_pin.to_path_buf());
    ns.run_in("foreign tcx", move || {
        let prog = ProgramHandle::from_pinned_path(&prog_pin).expect("foreign prog");
        let opts = libbpf_sys::bpf_link_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
            ..Default::default()
        };
        let ifindex = ifindex_here(&dev);
        // SAFETY: plain syscall wrapper; the result is checked.
        let fd = unsafe {
            libbpf_sys::bpf_link_create(
                prog.as_fd().as_raw_fd(),
                ifindex as i32,
                libbpf_sys::BPF_TCX_EGRESS,
                &opts,
            )
        };
        assert!(fd >= 0, "foreign TCX link on {dev}: errno {}", -fd);
        // SAFETY: a fresh descriptor nobody else owns.
        let link = unsafe { OwnedFd::from_raw_fd(fd) };
        pin_fd(link.as_fd(), &link_pin).expect("pin link");
    });
}
