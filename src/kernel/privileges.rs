//! Refuses early, with one clear line, when pdscp lacks the capabilities it
//! needs, instead of failing half way with EPERM from some syscall.
use anyhow::{bail, Context, Result};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

pub fn check() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let caps = effective_caps(&status).context("no CapEff line in /proc/self/status")?;
    if let Some(missing) = missing(caps) {
        bail!("pdscp needs {missing} (run it as root)");
    }
    Ok(())
}

fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// CAP_NET_ADMIN for tc and links; CAP_BPF (or, before 5.8, CAP_SYS_ADMIN)
/// to load programs. Mounting bpffs needs CAP_SYS_ADMIN, checked when needed.
fn missing(caps: u64) -> Option<&'static str> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);
    match (has(CAP_NET_ADMIN), bpf) {
        (true, true) => None,
        (false, true) => Some("CAP_NET_ADMIN"),
        (true, false) => Some("CAP_BPF"),
        (false, false) => Some("CAP_BPF and CAP_NET_ADMIN"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_effective_capabilities() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }

    #[test]
    fn names_what_is_missing() {
        assert_eq!(missing(0), Some("CAP_BPF and CAP_NET_ADMIN"));
        assert_eq!(missing(1 << CAP_NET_ADMIN), Some("CAP_BPF"));
        assert_eq!(missing(1 << CAP_BPF), Some("CAP_NET_ADMIN"));
        assert_eq!(missing(1 << CAP_BPF | 1 << CAP_NET_ADMIN), None);
        assert_eq!(missing(1 << CAP_SYS_ADMIN | 1 << CAP_NET_ADMIN), None);
    }
}
