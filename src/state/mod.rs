//! pdscp's state, which lives in bpffs and nowhere else (docs/state.md):
//! the pin root and its lock, where everything lives under it, the shared
//! objects and the stamp, the registry of records, and the layout-1 state
//! an older pdscp left.
pub mod layout;
pub mod legacy;
pub mod objects;
pub mod pin_root;
pub mod registry;
pub mod version;
