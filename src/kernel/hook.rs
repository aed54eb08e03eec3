//! Where a pinned program runs: the egress of a device, hooked in one of two
//! ways (the `Mode`):
//! - TCX (kernel 6.6+): a bpf_link, pinned in bpffs so it outlives pdscp and
//!   can be found and detached later by path;
//! - tc: a cls_bpf direct-action filter on the clsact qdisc at pdscp's own
//!   handle and priority. The qdisc may be shared with other filters, so
//!   pdscp creates it when missing but never deletes it, and touches only a
//!   filter in its own slot that runs one of its own programs.
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_rs::query::LinkTypeInfo;
use libbpf_rs::{libbpf_sys, Link, ProgramHandle, TcHook, TC_EGRESS, TC_INGRESS};

use super::bpf::{os_error, pin_fd, prog_name, remove_pin};
use super::qdisc;
use crate::model::{Mode, Program};
use crate::testhooks::{crash_point, Step};

/// pdscp's cls_bpf handle on clsact egress ("d5c"). Filters at other
/// handles/priorities are someone else's and are never touched.
pub const TC_HANDLE: u32 = 0xd5c;

/// pdscp's tc priority for a program. A device can be both an uplink (of an
/// inner tunnel) and a tunnel (of an outer uplink), so writer and reader get
/// their own slots, the writer first: the reader must see the outer DSCP the
/// writer just set. (TCX: the writer is attached before every other link.)
/// The ingress program goes first on ingress, before any redirect to an ifb
/// (sqm-scripts uses priority 10), which would take the packet away.
pub const fn tc_priority(program: Program) -> u32 {
    match program {
        Program::Writer => 0xd5c,
        Program::Reader => 0xd5d,
        Program::Ingress => 1,
    }
}

fn on_ingress(program: Program) -> bool {
    program == Program::Ingress
}

/// Prefix of pdscp's program names, to recognise its own filters.
pub const PROG_PREFIX: &str = "pdscp_";

/// Whether the program with this id is one of pdscp's (by its name).
pub fn is_pdscp_program(id: u32) -> bool {
    prog_name(id).starts_with(PROG_PREFIX)
}

/// The kernel has no TCX (Linux before 6.6).
#[derive(Debug)]
pub struct NoTcx;

impl std::fmt::Display for NoTcx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this kernel has no TCX (needs Linux 6.6+); use --mode tc or --mode auto")
    }
}

impl std::error::Error for NoTcx {}

/// One place a program of pdscp's runs or is to run, in either mode.
pub struct Hook {
    pub program: Program,
    pub ifindex: u32,
    /// Where its TCX link is (or would be) pinned.
    pub link_pin: PathBuf,
}

impl Hook {
    /// Whether the program with `prog_id` runs here now, hooked in `mode`.
    pub fn runs(&self, mode: Mode, prog_id: u32) -> Result<bool> {
        Ok(match mode {
            Mode::Tcx => {
                tcx_link(&self.link_pin)?.is_some_and(|l| l.ifindex == self.ifindex && l.prog_id == prog_id)
            }
            Mode::Tc => self.tc_prog_id()? == Some(prog_id),
        })
    }

    /// Makes `prog` run here, hooked in `mode`: nothing to do if it does already; a pinned TCX
    /// link on this device is pointed at it atomically (the device never
    /// runs without a program); a link of a deleted device is replaced.
    pub fn ensure(&self, mode: Mode, prog: &ProgramHandle) -> Result<()> {
        match mode {
            Mode::Tcx => {
                match tcx_link(&self.link_pin)? {
                    Some(l) if l.ifindex == self.ifindex && l.prog_id == prog.id() => return Ok(()),
                    Some(l) if l.ifindex == self.ifindex => return tcx_update(&self.link_pin, prog),
                    // Defunct (device deleted) or another device: replace it.
                    Some(_) => tcx_remove(&self.link_pin)?,
                    None => {}
                }
                self.tcx_attach(prog)
            }
            Mode::Tc => {
                if self.tc_prog_id()? == Some(prog.id()) {
                    return Ok(());
                }
                self.tc_attach(prog)
            }
        }
    }

    /// Removes whatever pdscp hooked here, in either mode: the TCX link
    /// pinned at `link_pin` (live or defunct) and, if the device still is the
    /// one recorded (`device_present`), pdscp's filter in its tc slot. The
    /// ifindex of a deleted device may already name another device, whose
    /// filter is not ours to remove.
    pub fn remove(&self, device_present: bool) -> Result<()> {
        tcx_remove(&self.link_pin)?;
        if device_present && self.tc_prog_id()?.is_some() {
            self.ensure_tc_slot_is_ours()?;
            let placeholder = placeholder_fd()?;
            let mut hook = self.tc_hook(&placeholder);
            match hook.detach() {
                Ok(()) => {}
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(e).context("removing the tc filter"),
            }
        }
        Ok(())
    }

    /// The id of the program in pdscp's tc slot on this device, if any.
    pub fn tc_prog_id(&self) -> Result<Option<u32>> {
        let placeholder = placeholder_fd()?;
        match self.tc_hook(&placeholder).query() {
            Ok(id) => Ok(Some(id)),
            // No clsact, no filter at our slot, or no such device.
            Err(e) if is_gone(&e) || os_error(&e) == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(e).context("querying tc filters"),
        }
    }

    fn tc_hook(&self, prog: &impl AsFd) -> TcHook {
        let mut hook = TcHook::new(prog.as_fd());
        hook.ifindex(self.ifindex as i32)
            .attach_point(if on_ingress(self.program) {
                TC_INGRESS
            } else {
                TC_EGRESS
            })
            .handle(TC_HANDLE)
            .priority(tc_priority(self.program));
        hook
    }

    fn tc_attach(&self, prog: &ProgramHandle) -> Result<()> {
        self.ensure_tc_slot_is_ours()?;
        self.ensure_no_classic_ingress()?;
        let mut hook = self.tc_hook(prog);
        // Creates clsact only if the device has none (EEXIST is success).
        if let Err(e) = hook.create() {
            if matches!(os_error(&e), Some(libc::EOPNOTSUPP) | Some(libc::ENOENT)) {
                bail!("this kernel has no clsact qdisc (CONFIG_NET_SCH_INGRESS), which tc mode needs");
            }
            return Err(e).context("creating the clsact qdisc");
        }
        crash_point(Step::ClsactReady);
        hook.replace(true).attach().context("attaching a tc filter")?;
        Ok(())
    }

    /// The classic `ingress` qdisc (sqm-scripts' redirect to an ifb) takes
    /// ffff:, where clsact would go, and offers its one filter block for
    /// egress too: a filter added "on egress" there would run on ingress.
    fn ensure_no_classic_ingress(&self) -> Result<()> {
        match qdisc::ingress_kind(self.ifindex)?.as_deref() {
            Some("ingress") => bail!(
                "ifindex {} has the classic ingress qdisc (sqm-scripts?), which cannot coexist with \
                 clsact: tc mode is impossible there; use --mode tcx (Linux 6.6+), or move its \
                 ingress filters to clsact",
                self.ifindex
            ),
            _ => Ok(()),
        }
    }

    /// Refuses to replace or remove a filter in pdscp's slot that another tool put there.
    fn ensure_tc_slot_is_ours(&self) -> Result<()> {
        let Some(id) = self.tc_prog_id()? else {
            return Ok(());
        };
        let name = prog_name(id);
        if !name.starts_with(PROG_PREFIX) {
            bail!(
                "the tc filter at handle {TC_HANDLE:#x} priority {} on ifindex {} \
                 runs program {name:?}, which is not pdscp's; leaving it alone",
                tc_priority(self.program),
                self.ifindex
            );
        }
        Ok(())
    }

    /// Creates a TCX egress link for `prog` and pins it. The writer goes
    /// before every other link on the device, the reader after them.
    fn tcx_attach(&self, prog: &ProgramHandle) -> Result<()> {
        let mut opts = libbpf_sys::bpf_link_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
            ..Default::default()
        };
        if self.program == Program::Writer {
            opts.flags = libbpf_sys::BPF_F_BEFORE;
        }
        let attach_type = if on_ingress(self.program) {
            libbpf_sys::BPF_TCX_INGRESS
        } else {
            libbpf_sys::BPF_TCX_EGRESS
        };
        // SAFETY: plain syscall wrapper; `opts` is a valid, sized options struct.
        let fd = unsafe {
            libbpf_sys::bpf_link_create(prog.as_fd().as_raw_fd(), self.ifindex as i32, attach_type, &opts)
        };
        if fd < 0 {
            let errno = -fd;
            // Kernels before 6.6 reject the attach type.
            if [libc::EINVAL, libc::EOPNOTSUPP, ENOTSUPP].contains(&errno) {
                return Err(NoTcx.into());
            }
            return Err(io::Error::from_raw_os_error(errno)).context("creating a TCX link");
        }
        // SAFETY: bpf_link_create returned a new fd that nothing else owns.
        // Dropping it before the pin exists detaches the link again: no half state.
        let link = unsafe { OwnedFd::from_raw_fd(fd) };
        crash_point(match self.program {
            Program::Writer => Step::WriterLinkCreated,
            Program::Reader | Program::Ingress => Step::ReaderLinkCreated,
        });
        pin_fd(link.as_fd(), &self.link_pin)
    }
}

/// The kernel's ENOTSUPP (524), which libc does not name.
const ENOTSUPP: i32 = 524;

/// What a pinned TCX link points at: its device (0 once the device is gone)
/// and program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcxLink {
    pub ifindex: u32,
    pub prog_id: u32,
}

/// Reads the pinned link at `pin`; None if there is no pin.
pub fn tcx_link(pin: &Path) -> Result<Option<TcxLink>> {
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
    Ok(Some(TcxLink {
        ifindex,
        prog_id: info.prog_id,
    }))
}

/// Points an existing pinned link at another program, atomically.
pub fn tcx_update(pin: &Path, prog: &ProgramHandle) -> Result<()> {
    let link = Link::open(pin).with_context(|| format!("opening link {}", pin.display()))?;
    // SAFETY: plain syscall wrapper on two open fds; NULL options are allowed.
    let ret = unsafe {
        libbpf_sys::bpf_link_update(
            link.as_fd().as_raw_fd(),
            prog.as_fd().as_raw_fd(),
            std::ptr::null(),
        )
    };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret)).context("updating a TCX link");
    }
    Ok(())
}

/// Detaches and unpins the link at `pin`; nothing to do if it is gone.
fn tcx_remove(pin: &Path) -> Result<()> {
    if !pin.exists() {
        return Ok(());
    }
    if let Ok(link) = Link::open(pin) {
        // A defunct link (device deleted) has nothing to detach; unpinning frees it.
        let _ = link.detach();
    }
    remove_pin(pin)
}

/// TcHook wants a program fd even to query or detach, which don't use it.
fn placeholder_fd() -> Result<File> {
    File::open("/").context("opening /")
}

/// No clsact, no filter in the slot, or no such device.
fn is_gone(e: &libbpf_rs::Error) -> bool {
    matches!(os_error(e), Some(libc::ENOENT) | Some(libc::ENODEV))
}

/// Whether the kernel has TCX (Linux 6.6+). Asking for the TCX programs of
/// `lo` (ifindex 1 in every namespace) changes nothing and fails with EINVAL
/// on older kernels, which do not know the attach type.
pub fn tcx_available() -> bool {
    let mut opts = libbpf_sys::bpf_prog_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_query_opts>() as _,
        ..Default::default()
    };
    // SAFETY: plain syscall wrapper; `opts` is a valid, sized options struct
    // whose output arrays are NULL (only the count is returned).
    let ret = unsafe { libbpf_sys::bpf_prog_query_opts(1, libbpf_sys::BPF_TCX_EGRESS, &mut opts) };
    ret == 0
}
