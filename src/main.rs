//! The pdscp command: parses the command line, runs it, and turns the
//! outcome into an exit code and at most one line on stderr.
use std::process::ExitCode;

use clap::Parser;
use pdscp::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors in one line like every other error (hooks log them to
        // syslog); --help and --version print as usual.
        Err(e) if e.use_stderr() => {
            eprintln!("pdscp: {}", cli::usage_error_line(&e));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match cli::run(cli) {
        Ok(code) => code,

        Err(err) => {
            // One line: the operator (or a hook's syslog) sees the whole chain at once.
            eprintln!("pdscp: {err:#}");
            ExitCode::FAILURE
        }
    }
}
