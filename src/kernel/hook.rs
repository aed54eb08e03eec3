//! Attach back-ends: where a pinned program is hooked onto a device's egress.
//!
//! - TCX (kernel 6.6+): a bpf_link, pinned in bpffs so it outlives pdscp and
//!   can be found and detached later by path.
//! - tc: a cls_bpf direct-action filter on the clsact qdisc at pdscp's own
//!   handle and priority. The qdisc may be shared with other filters, so
//!   pdscp creates it when missing but never deletes it.
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use libbpf_rs::libbpf_sys;
use libbpf_rs::query::LinkTypeInfo;
use libbpf_rs::{Link, ProgramHandle};
use serde::Serialize;

use crate::pins::Role;

/// pdscp's cls_bpf slots on clsact egress ("d5c"). Filters at other
/// handles/priorities are someone else's and are never touched. A device can
/// be both an uplink (of an inner tunnel) and a tunnel (of an outer uplink),
/// so writer and reader get their own slots, the writer first: the reader
/// must see the outer DSCP the writer just set.
pub const TC_HANDLE: u32 = 0xd5c;
fn tc_priority(role: Role) -> u32 {
    match role {
        Role::Uplink => 0xd5c,
        Role::Tunnel => 0xd5d,
    }
}

/// Prefix of pdscp's program names, to recognise its own filters.
pub const PROG_PREFIX: &str = "pdscp_";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Tcx = 1,
    Tc = 2,
}

impl Mode {
    pub fn from_raw(raw: u8) -> Option<Mode> {
        match raw {
            1 => Some(Mode::Tcx),
            2 => Some(Mode::Tc),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Tcx => "tcx",
            Mode::Tc => "tc",
        }
    }
}

/// Why a TCX attach failed: the kernel has no TCX, or something else.
pub enum TcxError {
    Unsupported,
    Other(anyhow::Error),
}

/// Creates a TCX egress link for `prog` on `ifindex` and pins it at `pin`.
/// The link lives as long as the pin does. Writers go first on the device,
/// readers last (see TC_HANDLE).
pub fn tcx_attach(prog: BorrowedFd<'_>, ifindex: u32, role: Role, pin: &Path) -> Result<(), TcxError> {
    let mut opts: libbpf_sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _;
    if role == Role::Uplink {
        opts.flags = libbpf_sys::BPF_F_BEFORE;
    }
    let fd = unsafe {
        libbpf_sys::bpf_link_create(
            prog.as_raw_fd(),
            ifindex as i32,
            libbpf_sys::BPF_TCX_EGRESS,
            &opts,
        )
    };
    if fd < 0 {
        let errno = -fd;
        // Kernels before 6.6 reject the attach type.
        if errno == libc::EINVAL || errno == libc::EOPNOTSUPP || errno == 524 {
            return Err(TcxError::Unsupported);
        }
        return Err(TcxError::Other(
            anyhow::Error::from(io::Error::from_raw_os_error(errno)).context("creating a TCX link"),
        ));
    }
    // Dropping the fd before pinning detaches the link again: no half state.
    let link = unsafe { OwnedFd::from_raw_fd(fd) };
    crate::crash::crash_point(match role {
        Role::Uplink => "attach:writer-link-created",
        Role::Tunnel => "attach:reader-link-created",
    });
    pin_fd(link.as_fd(), pin).map_err(TcxError::Other)
}

/// What a pinned TCX link points at: its device (0 once the device is gone)
/// and program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcxLinkState {
    pub ifindex: u32,
    pub prog_id: u32,
}

/// Reads the pinned link at `pin`; None if there is no pin.
pub fn tcx_state(pin: &Path) -> Result<Option<TcxLinkState>> {
    if !pin.exists() {
        return Ok(None);
    }
    let link = Link::open(pin).with_context(|| format!("opening link {}", pin.display()))?;
    let info = link
        .info()
        .with_context(|| format!("reading link {}", pin.display()))?;
    let ifindex = match info.info {
        LinkTypeInfo::Tcx(tcx) => tcx.ifindex,
        _ => bail!("{} is not a TCX link", pin.display()),
    };
    Ok(Some(TcxLinkState {
        ifindex,
        prog_id: info.prog_id,
    }))
}

/// Points an existing pinned link at another program, atomically: the device
/// never runs without one.
pub fn tcx_update(pin: &Path, prog: BorrowedFd<'_>) -> Result<()> {
    let link = Link::open(pin).with_context(|| format!("opening link {}", pin.display()))?;
    let ret =
        unsafe { libbpf_sys::bpf_link_update(link.as_fd().as_raw_fd(), prog.as_raw_fd(), std::ptr::null()) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret)).context("updating a TCX link");
    }
    Ok(())
}

/// Detaches and unpins the link at `pin`; nothing to do if it is gone.
pub fn tcx_detach(pin: &Path) -> Result<()> {
    if !pin.exists() {
        return Ok(());
    }
    if let Ok(link) = Link::open(pin) {
        // A defunct link (device deleted) has nothing to detach; unpinning frees it.
        let _ = link.detach();
    }
    remove_pin(pin)
}

fn tc_hook(ifindex: u32) -> libbpf_sys::bpf_tc_hook {
    let mut hook: libbpf_sys::bpf_tc_hook = unsafe { std::mem::zeroed() };
    hook.sz = std::mem::size_of::<libbpf_sys::bpf_tc_hook>() as _;
    hook.ifindex = ifindex as i32;
    hook.attach_point = libbpf_sys::BPF_TC_EGRESS;
    hook
}

fn tc_opts(role: Role, prog_fd: i32, flags: u32) -> libbpf_sys::bpf_tc_opts {
    let mut opts: libbpf_sys::bpf_tc_opts = unsafe { std::mem::zeroed() };
    opts.sz = std::mem::size_of::<libbpf_sys::bpf_tc_opts>() as _;
    opts.handle = TC_HANDLE;
    opts.priority = tc_priority(role);
    opts.prog_fd = prog_fd;
    opts.flags = flags;
    opts
}

/// The id of the program in pdscp's tc slot on `ifindex`'s egress, if any.
pub fn tc_state(ifindex: u32, role: Role) -> Result<Option<u32>> {
    let hook = tc_hook(ifindex);
    let mut opts = tc_opts(role, 0, 0);
    let ret = unsafe { libbpf_sys::bpf_tc_query(&hook, &mut opts) };
    match -ret {
        0 => Ok(Some(opts.prog_id)),
        // No clsact, no filter at our slot, or no such device.
        libc::ENOENT | libc::EINVAL | libc::ENODEV => Ok(None),
        errno => Err(io::Error::from_raw_os_error(errno)).context("querying tc filters"),
    }
}

/// Puts `prog` into pdscp's tc slot on `ifindex`'s egress, creating the
/// clsact qdisc if the device has none, replacing only pdscp's own filter.
pub fn tc_attach(prog: BorrowedFd<'_>, ifindex: u32, role: Role) -> Result<()> {
    ensure_tc_slot_is_ours(ifindex, role)?;
    let mut hook = tc_hook(ifindex);
    let ret = unsafe { libbpf_sys::bpf_tc_hook_create(&mut hook) };
    if ret < 0 && -ret != libc::EEXIST {
        return Err(io::Error::from_raw_os_error(-ret)).context("creating the clsact qdisc");
    }
    crate::crash::crash_point("attach:clsact-ready");
    let mut opts = tc_opts(role, prog.as_raw_fd(), libbpf_sys::BPF_TC_F_REPLACE);
    let ret = unsafe { libbpf_sys::bpf_tc_attach(&hook, &mut opts) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret)).context("attaching a tc filter");
    }
    Ok(())
}

/// Removes pdscp's tc filter from `ifindex`; nothing to do if it is gone.
pub fn tc_detach(ifindex: u32, role: Role) -> Result<()> {
    if tc_state(ifindex, role)?.is_none() {
        return Ok(());
    }
    ensure_tc_slot_is_ours(ifindex, role)?;
    let hook = tc_hook(ifindex);
    let opts = tc_opts(role, 0, 0);
    let ret = unsafe { libbpf_sys::bpf_tc_detach(&hook, &opts) };
    match -ret {
        0 | libc::ENOENT | libc::ENODEV => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)).context("removing the tc filter"),
    }
}

/// Refuses to replace or remove a filter in pdscp's slot that another tool put there.
fn ensure_tc_slot_is_ours(ifindex: u32, role: Role) -> Result<()> {
    let Some(id) = tc_state(ifindex, role)? else {
        return Ok(());
    };
    let name = ProgramHandle::from_prog_id(id)
        .map(|p| p.name().to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.starts_with(PROG_PREFIX) {
        bail!(
            "the tc filter at handle {TC_HANDLE:#x} priority {} on ifindex {ifindex} \
             runs program {name:?}, which is not pdscp's; leaving it alone",
            tc_priority(role)
        );
    }
    Ok(())
}

pub fn pin_fd(fd: BorrowedFd<'_>, pin: &Path) -> Result<()> {
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes())?;
    let ret = unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), path.as_ptr()) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret)).with_context(|| format!("pinning {}", pin.display()));
    }
    Ok(())
}

/// Removes a pin; a pin that is already gone is fine.
pub fn remove_pin(pin: &Path) -> Result<()> {
    match std::fs::remove_file(pin) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("unpinning {}", pin.display()))
        }
        _ => Ok(()),
    }
}

/// The ids of the maps a program uses.
pub fn prog_map_ids(prog: BorrowedFd<'_>) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 16];
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    info.nr_map_ids = ids.len() as u32;
    info.map_ids = ids.as_mut_ptr() as u64;
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut info, &mut len) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret)).context("reading program info");
    }
    ids.truncate((info.nr_map_ids as usize).min(16));
    Ok(ids)
}
