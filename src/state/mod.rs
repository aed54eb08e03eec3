//! pdscp's state, which lives in bpffs and nowhere else (docs/state.md):
//! the pin root and its lock, one directory of pinned objects per uplink,
//! and the registry of attached devices kept in pinned maps.
pub mod pin_root;
pub mod registry;
pub mod uplink;
