//! Where everything lives under the pin root (docs/state.md). Creating
//! these values touches nothing.
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::kernel::bpf::remove_pin;
use crate::kernel::hook::Hook;
use crate::model::Program;

/// The paths of one pin root's layout-2 state.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub fn stamp(&self) -> PathBuf {
        self.root.join("stamp")
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn progs_dir(&self) -> PathBuf {
        self.root.join("progs")
    }

    pub fn prog(&self, name: &str) -> PathBuf {
        self.progs_dir().join(name)
    }

    pub fn uplinks_dir(&self) -> PathBuf {
        self.root.join("uplinks")
    }

    pub fn tunnels_dir(&self) -> PathBuf {
        self.root.join("tunnels")
    }

    pub fn uplink_dir(&self, uplink: &str) -> PathBuf {
        self.uplinks_dir().join(dir_name(uplink))
    }

    pub fn tunnel_dir(&self, tunnel: &str) -> PathBuf {
        self.tunnels_dir().join(dir_name(tunnel))
    }

    /// The writer's TCX link on an uplink.
    pub fn writer_link(&self, uplink: &str) -> PathBuf {
        self.uplink_dir(uplink).join("link")
    }

    /// The reader's TCX link on a tunnel.
    pub fn reader_link(&self, tunnel: &str) -> PathBuf {
        self.tunnel_dir(tunnel).join("link")
    }

    /// The ingress program's TCX link on a tunnel.
    pub fn ingress_link(&self, tunnel: &str) -> PathBuf {
        self.tunnel_dir(tunnel).join("ingress")
    }

    /// Where a program runs (or would run) on a device, with its link pin.
    pub fn hook(&self, program: Program, device: &str, ifindex: u32) -> Hook {
        let link_pin = match program {
            Program::Writer => self.writer_link(device),
            Program::Reader => self.reader_link(device),
            Program::Ingress => self.ingress_link(device),
        };
        Hook {
            program,
            ifindex,
            link_pin,
        }
    }

    /// Names of the uplinks with a directory.
    pub fn uplink_dirs(&self) -> Result<Vec<String>> {
        dir_names(&self.uplinks_dir())
    }

    /// Names of the tunnels with a directory.
    pub fn tunnel_dirs(&self) -> Result<Vec<String>> {
        dir_names(&self.tunnels_dir())
    }

    pub fn create_uplink_dir(&self, uplink: &str) -> Result<()> {
        create_dir(&self.uplink_dir(uplink))
    }

    pub fn create_tunnel_dir(&self, tunnel: &str) -> Result<()> {
        create_dir(&self.tunnel_dir(tunnel))
    }

    /// Removes an uplink's directory with its link pin; unknown files stay.
    pub fn remove_uplink_dir(&self, uplink: &str) -> Result<()> {
        remove_pin(&self.writer_link(uplink))?;
        remove_dir(&self.uplink_dir(uplink))
    }

    /// Removes a tunnel's directory with its link pins; unknown files stay.
    pub fn remove_tunnel_dir(&self, tunnel: &str) -> Result<()> {
        remove_pin(&self.reader_link(tunnel))?;
        remove_pin(&self.ingress_link(tunnel))?;
        remove_dir(&self.tunnel_dir(tunnel))
    }
}

/// A device name as a bpffs name: bpffs refuses '.', which device names
/// may hold (eth0.2) and which becomes ':', which they may not.
pub fn dir_name(device: &str) -> String {
    device.replace('.', ":")
}

/// The device a directory is named for.
pub fn device_name(dir: &str) -> String {
    dir.replace(':', ".")
}

/// The device names of the directories in `dir` (none if it does not exist).
fn dir_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    if let Some(name) = entry.file_name().to_str() {
                        names.push(device_name(name));
                    }
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    names.sort();
    Ok(names)
}

/// Creates a directory (and its parents) private to root.
pub fn create_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Removes an empty directory; one that is gone is fine.
pub fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_device_names_get_bpffs_names_and_back() {
        assert_eq!(dir_name("eth0.2"), "eth0:2");
        assert_eq!(device_name("eth0:2"), "eth0.2");
        assert_eq!(dir_name("wg0"), "wg0");
        let layout = Layout::new(Path::new("/sys/fs/bpf/p"));
        assert_eq!(
            layout.writer_link("eth0.2"),
            Path::new("/sys/fs/bpf/p/uplinks/eth0:2/link")
        );
        assert_eq!(
            layout.ingress_link("wg0"),
            Path::new("/sys/fs/bpf/p/tunnels/wg0/ingress")
        );
    }
}
