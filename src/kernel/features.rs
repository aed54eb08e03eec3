//! What pdscp needs of the kernel, checked before the first load so that a
//! kernel too old says so in one line instead of a verifier's dump.
use anyhow::{bail, Result};
use libbpf_rs::libbpf_sys;
use libbpf_rs::ProgramType;

/// The oldest kernel pdscp is tested on (Debian 11, OpenWrt 22.03). Needed
/// below it: WireGuard keeping skb->hash (5.7), batched map reads (5.6).
pub const MINIMUM: (u32, u32) = (5, 10);

/// The running kernel's release ("6.1.0-26-amd64"); PDSCP_TEST_KERNEL_RELEASE
/// stands in for it in tests.
pub fn release() -> String {
    if let Some(fake) = std::env::var_os("PDSCP_TEST_KERNEL_RELEASE") {
        return fake.to_string_lossy().into_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default()
}

/// (major, minor) of a release string.
pub fn version(release: &str) -> (u32, u32) {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// Refuses a kernel older than MINIMUM, or one without what the programs
/// call (bpf_set_hash for tc programs).
pub fn check() -> Result<()> {
    let release = release();
    if version(&release) < MINIMUM {
        bail!(
            "pdscp needs Linux {}.{} or newer; this kernel is {release}",
            MINIMUM.0,
            MINIMUM.1
        );
    }
    match ProgramType::SchedCls.is_helper_supported(libbpf_sys::BPF_FUNC_set_hash) {
        Ok(false) => bail!("this kernel's tc BPF programs cannot call bpf_set_hash, which pdscp needs"),
        // A probe that cannot run says nothing; the load will tell.
        Ok(true) | Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_to_major_and_minor() {
        assert_eq!(version("6.1.0-26-amd64"), (6, 1));
        assert_eq!(version("5.10.0-46-amd64"), (5, 10));
        assert_eq!(version("5.15.167"), (5, 15));
        assert_eq!(version("4.19"), (4, 19));
        assert_eq!(version(""), (0, 0));
        assert!(version("5.9.16") < MINIMUM && version("5.10.1") >= MINIMUM);
    }
}
