//! Files and directories: scratch directories, and listings of pin trees.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::namespaces::unique;

/// A scratch directory (mode 0700) named `<tag>-<pid>-<n>` under `parent`,
/// removed with everything in it (pins too) on drop. A leftover of a crashed
/// run whose pid was recycled is removed first.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(parent: &Path, tag: &str) -> Scratch {
        let p = parent.join(unique(tag));
        let _ = fs::remove_dir_all(&p);
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&p)
            .unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        Scratch(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Names in a directory (empty if it does not exist).
pub fn dir_names(dir: &Path) -> BTreeSet<String> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Recursive listing (path, type, mode, owner, inode) of `dir`, following no
/// symlinks: a pin replaced by another shows a new inode.
pub fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.map(|e| e.expect("dir entry").path()).collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).expect("metadata");
            let rel = p.strip_prefix(base).expect("under base").display().to_string();
            let kind = if m.is_dir() {
                "d"
            } else if m.file_type().is_symlink() {
                "l"
            } else {
                "f"
            };
            out.push(format!(
                "{kind} {rel} {:o} {} {}",
                m.mode() & 0o7777,
                m.uid(),
                m.ino()
            ));
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}
