//! Which pdscp made the state, and what this one may do with it
//! (docs/state.md, Versions).
use anyhow::Result;

use super::layout::Layout;
use super::{legacy, objects};
use crate::maps::{abi, Stamp, LAYOUT};

/// This pdscp's version, packed as the stamp holds it.
pub fn packed_version() -> u32 {
    pack(env!("CARGO_PKG_VERSION"))
}

fn pack(version: &str) -> u32 {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    (major.min(0xffff) << 16) | (minor.min(0xff) << 8) | patch.min(0xff)
}

/// "0.2.0" from a packed version.
pub fn version_text(packed: u32) -> String {
    format!("{}.{}.{}", packed >> 16, (packed >> 8) & 0xff, packed & 0xff)
}

/// The stamp this pdscp writes.
pub fn mine(netns: u32) -> Stamp {
    Stamp {
        layout: LAYOUT,
        version: packed_version(),
        object: abi::OBJECT_HASH,
        netns,
    }
}

/// A stamp (or layout 1) as people read it: "pdscp 0.2.0 (layout 2)".
pub fn describe(stamp: Option<&Stamp>) -> String {
    match stamp {
        Some(s) => format!("pdscp {} (layout {})", version_text(s.version), s.layout),
        None => "pdscp 0.1.0 (layout 1)".into(),
    }
}

/// What the state is to this pdscp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No state.
    Empty,
    /// Made by this pdscp.
    Current,
    /// Made by an older pdscp, another build of this one, or an upgrade
    /// that was cut short: the next command that changes state upgrades it.
    Older { from: String },
    /// Made by a newer pdscp: refused.
    Newer { by: String },
}

/// Compares a stamp with this pdscp; `legacy` says layout-1 directories exist.
pub fn judge(stamp: Option<&Stamp>, legacy: bool) -> Standing {
    let me = mine(0);
    match stamp {
        Some(s) if (s.layout, s.version) > (me.layout, me.version) => Standing::Newer {
            by: describe(Some(s)),
        },
        Some(_) if legacy => Standing::Older {
            from: format!("{}, upgrade cut short", describe(None)),
        },
        Some(s) if s.layout == me.layout && s.version == me.version && s.object == me.object => {
            Standing::Current
        }
        Some(s) if s.layout == me.layout && s.version == me.version => Standing::Older {
            from: format!("another build of {}", describe(Some(s))),
        },
        Some(s) => Standing::Older {
            from: describe(Some(s)),
        },
        None if legacy => Standing::Older { from: describe(None) },
        None => Standing::Empty,
    }
}

/// Reads the stamp and looks for layout-1 directories.
pub fn standing(layout: &Layout) -> Result<Standing> {
    if !layout.root.exists() {
        return Ok(Standing::Empty);
    }
    let stamp = objects::read_stamp(layout)?;
    let legacy = !legacy::uplinks(&layout.root)?.is_empty();
    Ok(judge(stamp.as_ref(), legacy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(layout: u32, version: &str, object: u64) -> Stamp {
        Stamp {
            layout,
            version: pack(version),
            object,
            netns: 1,
        }
    }

    #[test]
    fn versions_pack_and_print() {
        assert_eq!(pack("0.2.0"), 0x000200);
        assert_eq!(pack("1.12.3-rc1"), 0x010c03);
        assert_eq!(version_text(pack("1.12.3")), "1.12.3");
        assert_eq!(version_text(packed_version()), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn state_is_judged_against_this_pdscp() {
        let me = mine(1);
        let current = Stamp { netns: 1, ..me };
        assert_eq!(judge(Some(&current), false), Standing::Current);
        assert_eq!(judge(None, false), Standing::Empty);
        assert!(matches!(judge(None, true), Standing::Older { from } if from == "pdscp 0.1.0 (layout 1)"));
        assert!(
            matches!(judge(Some(&current), true), Standing::Older { from } if from.contains("cut short"))
        );
        let other_build = Stamp {
            object: me.object ^ 1,
            ..current
        };
        assert!(
            matches!(judge(Some(&other_build), false), Standing::Older { from } if from.contains("another build"))
        );
        let older = stamp(me.layout, "0.1.9", 1);
        assert!(matches!(judge(Some(&older), false), Standing::Older { .. }));
        let newer = stamp(me.layout, "99.0.0", 1);
        assert!(matches!(judge(Some(&newer), false), Standing::Newer { by } if by.contains("99.0.0")));
        let newer_layout = stamp(me.layout + 1, "0.0.1", 1);
        assert!(matches!(
            judge(Some(&newer_layout), false),
            Standing::Newer { .. }
        ));
    }
}
