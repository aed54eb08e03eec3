//! The pdscp command; everything else lives in the library (src/lib.rs).
use std::process::ExitCode;

fn main() -> ExitCode {
    match pdscp::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the operator (or a hook's syslog) sees the whole chain at once.
            eprintln!("pdscp: {err:#}");
            ExitCode::FAILURE
        }
    }
}
