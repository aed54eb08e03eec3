//! Fault injection for the interruption tests.

/// Test hook: `PDSCP_TEST_CRASH_AT=<step>` kills the process at that step,
/// as a power cut or `kill -9` would, so tests can prove the next command
/// repairs whatever was left half done.
pub fn crash_point(step: &str) {
    if std::env::var_os("PDSCP_TEST_CRASH_AT").is_some_and(|s| s == step) {
        std::process::abort();
    }
}
