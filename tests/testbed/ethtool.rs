//! ethtool features, in-process (so the bed needs no ethtool package).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::namespaces::Netns;

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// `struct ifreq` with the `ifr_data` member (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// SIOCETHTOOL on `dev` with `buf` as the command block.
fn ethtool_ioctl(sock: RawFd, dev: &str, buf: &mut [u32]) -> std::io::Result<libc::c_int> {
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: buf.as_mut_ptr().cast(),
        _pad: [0; 16],
    };
    assert!(dev.len() < libc::IFNAMSIZ, "device name too long: {dev}");
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: `req` points at a live buffer sized for the command it holds.
    let r = unsafe { libc::ioctl(sock, libc::SIOCETHTOOL as _, &mut req) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `ethtool -K dev <f> off` for each feature name, verified afterwards.
pub fn set_features_off(ns: &Netns, dev: &str, features: &[&str]) {
    let dev = dev.to_owned();
    let features: Vec<String> = features.iter().map(|s| s.to_string()).collect();
    ns.run_in("ethtool", move || {
        let sock = udp_socket_fd();
        let fd = sock.as_raw_fd();
        // How many feature bits the kernel has, then their names.
        // ethtool_sset_info: {cmd, reserved, u64 sset_mask, data[1]}.
        let mask = (1u64 << ETH_SS_FEATURES).to_ne_bytes();
        let word = |b: &[u8]| u32::from_ne_bytes(b.try_into().expect("4 bytes"));
        let mut info = [ETHTOOL_GSSET_INFO, 0, word(&mask[..4]), word(&mask[4..]), 0];
        ethtool_ioctl(fd, &dev, &mut info).expect("ETHTOOL_GSSET_INFO");
        let count = info[4] as usize;
        let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
        strings[..3].copy_from_slice(&[ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count as u32]);
        ethtool_ioctl(fd, &dev, &mut strings).expect("ETHTOOL_GSTRINGS");
        let bytes: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        let names: Vec<String> = bytes
            .chunks(ETH_GSTRING_LEN)
            .map(|c| String::from_utf8_lossy(c.split(|&b| b == 0).next().unwrap_or(&[])).into_owned())
            .collect();
        let bits: Vec<usize> = features
            .iter()
            .map(|f| {
                names
                    .iter()
                    .position(|n| n == f)
                    .unwrap_or_else(|| panic!("no feature {f}"))
            })
            .collect();
        let words = count.div_ceil(32);
        // ethtool_sfeatures: {cmd, size, [{valid, requested}; size]}; requested 0 = off.
        let mut set = vec![0u32; 2 + 2 * words];
        set[..2].copy_from_slice(&[ETHTOOL_SFEATURES, words as u32]);
        for &bit in &bits {
            set[2 + 2 * (bit / 32)] |= 1 << (bit % 32);
        }
        ethtool_ioctl(fd, &dev, &mut set).expect("ETHTOOL_SFEATURES");
        // ethtool_gfeatures: {cmd, size, [{available, requested, active, never_changed}; size]}.
        let mut get = vec![0u32; 2 + 4 * words];
        get[..2].copy_from_slice(&[ETHTOOL_GFEATURES, words as u32]);
        ethtool_ioctl(fd, &dev, &mut get).expect("ETHTOOL_GFEATURES");
        for (&bit, f) in bits.iter().zip(&features) {
            let active = get[2 + 4 * (bit / 32) + 2] & (1 << (bit % 32)) != 0;
            assert!(!active, "{dev}: could not turn {f} off");
        }
    });
}

fn udp_socket_fd() -> OwnedFd {
    // SAFETY: plain socket(2); the result is checked before being owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
