//! The pin root in bpffs and the lock that serialises pdscp commands.
//!
//! bpffs holds only pins and directories, so the lock is an flock on the pin
//! root directory itself: no lock file to create, nothing to follow.
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fs2::FileExt;
use nix::mount::{mount, MsFlags};
use nix::sys::statfs::statfs;

use super::layout::Layout;

pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/preserve-dscp";
const BPFFS_MOUNT_POINT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const HIDDEN_BPFFS: &str = "no bpffs at /sys/fs/bpf here: `ip netns exec` remounts /sys and hides it \
    (pins made here would vanish); use `pdscp --netns NAME` instead";

/// The pin root, opened and locked for the life of the value.
pub struct PinRoot {
    pub path: PathBuf,
    _lock: File,
}

impl PinRoot {
    /// Opens (creating it and mounting bpffs if needed) and locks exclusively,
    /// for commands that change state.
    pub fn open(path: &Path, create: bool) -> Result<PinRoot> {
        if !path.exists() && create {
            ensure_bpffs_for(path)?;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .with_context(|| format!("creating pin root {}", path.display()))?;
        }
        let root = Self::lock(path, true)?;
        Ok(root)
    }

    /// Opens an existing pin root with a lock (shared for readers), or None
    /// if there is none, so nothing is attached. Detach and status never
    /// create state.
    pub fn open_existing(path: &Path, exclusive: bool) -> Result<Option<PinRoot>> {
        if !path.exists() {
            if path.starts_with(BPFFS_MOUNT_POINT)
                && !is_bpffs(Path::new(BPFFS_MOUNT_POINT))?
                && in_ip_netns_exec()
            {
                bail!("{}", HIDDEN_BPFFS);
            }
            return Ok(None);
        }
        Ok(Some(Self::lock(path, exclusive)?))
    }

    fn lock(path: &Path, exclusive: bool) -> Result<PinRoot> {
        if !is_bpffs(path)? {
            bail!("pin root {:?} is not on a bpf filesystem", path);
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("opening pin root {}", path.display()))?;
        // flock(2) through fs2 (std's File::lock is newer than our MSRV).
        let locked = if exclusive {
            FileExt::lock_exclusive(&file)
        } else {
            FileExt::lock_shared(&file)
        };
        locked.with_context(|| format!("locking pin root {}", path.display()))?;
        Ok(PinRoot {
            path: path.to_path_buf(),
            _lock: file,
        })
    }

    /// Where everything lives under this root.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.path)
    }
}

/// Refuses pin roots that are relative, step through "." or "..", or hold
/// control characters: the root is where pdscp creates and deletes things.
pub fn validate_pin_root(path: &Path) -> Result<()> {
    use std::path::Component;
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .any(|b| b.is_ascii_control());
    if !plain {
        bail!("invalid pin root {path:?}: give an absolute path without '.', '..' or control characters");
    }
    Ok(())
}

pub fn is_bpffs(path: &Path) -> Result<bool> {
    let st = statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    Ok(st.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

/// Makes sure the pin root will land on bpffs: mounts bpffs on /sys/fs/bpf
/// when the root is below it and nothing is mounted there yet.
fn ensure_bpffs_for(root: &Path) -> Result<()> {
    let existing = root.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if is_bpffs(existing)? {
        return Ok(());
    }
    let mount_point = Path::new(BPFFS_MOUNT_POINT);
    // Mount only where nothing is mounted yet: a bpffs mounted over the
    // system's would hide every pin on the host. (A path that leaves bpffs
    // through a symlink lands here with /sys/fs/bpf already bpffs.)
    if !root.starts_with(mount_point) || !mount_point.is_dir() || is_bpffs(mount_point)? {
        bail!(
            "{:?} is not on a bpf filesystem; mount one first (mount -t bpf bpf DIR)",
            root
        );
    }
    if in_ip_netns_exec() {
        bail!("{}", HIDDEN_BPFFS);
    }
    mount(
        Some("bpf"),
        mount_point,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .with_context(|| format!("mounting bpffs on {BPFFS_MOUNT_POINT}"))?;
    Ok(())
}

/// `ip netns exec` runs its command in a new mount namespace with a fresh
/// /sys, where a bpffs mounted by pdscp (and every pin in it) would vanish
/// with the command. Its sign: an ancestor process in another mount
/// namespace sees a different /sys than we do.
fn in_ip_netns_exec() -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(own_ns), Ok(own_sys)) = (fs::read_link("/proc/self/ns/mnt"), fs::metadata("/sys")) else {
        return false;
    };
    let mut pid = std::process::id();
    for _ in 0..64 {
        pid = match parent_pid(pid) {
            Some(ppid) if ppid > 1 => ppid,
            _ => return false,
        };
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let Ok(ns) = fs::read_link(proc_dir.join("ns/mnt")) else {
            return false;
        };
        if ns == own_ns {
            continue;
        }
        return fs::metadata(proc_dir.join("root/sys")).is_ok_and(|sys| sys.dev() != own_sys.dev());
    }
    false
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}
