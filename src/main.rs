//! pdscp: keep DSCP marks alive across WireGuard (and other hash-preserving) tunnels.
//!
//! Where things happen:
//! - packets are parsed and marked in `bpf/pdscp.bpf.c`;
//! - state is pinned in bpffs by `pins.rs` (layout, load, repair) under the lock of `bpffs.rs`;
//! - programs are attached to devices by `attach.rs` (TCX links or clsact filters);
//! - `commands.rs` strings these together for attach / detach, `status.rs` reports.

mod attach;
mod bpffs;
mod cli;
mod commands;
mod iface;
mod netns;
mod pins;
mod privileges;
mod status;
mod wireguard;

mod skel {
    #![allow(clippy::all, dead_code, unused_imports, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/pdscp.skel.rs"));
}

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the operator (or a hook's syslog) sees the whole chain at once.
            eprintln!("pdscp: {err:#}");
            ExitCode::FAILURE
        }
    }
}
