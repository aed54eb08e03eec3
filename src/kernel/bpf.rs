//! BPF objects as the kernel keeps them: pins in bpffs, ids, what a program
//! uses, and libbpf's own error messages.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use anyhow::{Context, Result};
use libbpf_rs::{libbpf_sys, MapCore, MapHandle, MapInfo};
use std::os::fd::AsFd;

/// Pins a map, program or link by its fd at `pin`.
pub fn pin_fd(fd: BorrowedFd<'_>, pin: &Path) -> Result<()> {
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes())?;
    // SAFETY: `path` is NUL-terminated and outlives the call; the fd is open.
    let ret = unsafe { libbpf_sys::bpf_obj_pin(fd.as_raw_fd(), path.as_ptr()) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret)).with_context(|| format!("pinning {}", pin.display()));
    }
    Ok(())
}

/// Removes a pin; a pin that is already gone is fine.
pub fn remove_pin(pin: &Path) -> Result<()> {
    match std::fs::remove_file(pin) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("unpinning {}", pin.display()))
        }
        _ => Ok(()),
    }
}

/// The ids of the maps a program uses.
pub fn prog_map_ids(prog: BorrowedFd<'_>) -> Result<Vec<u32>> {
    const MAX_MAPS: usize = 16;
    let mut ids = vec![0u32; MAX_MAPS];
    let mut info = libbpf_sys::bpf_prog_info {
        nr_map_ids: ids.len() as u32,
        map_ids: ids.as_mut_ptr() as u64,
        ..Default::default()
    };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    // SAFETY: `info` is a bpf_prog_info of `len` bytes whose map_ids points
    // at room for nr_map_ids ids; the kernel writes no more than that.
    let ret = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut info, &mut len) };
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret)).context("reading program info");
    }
    ids.truncate((info.nr_map_ids as usize).min(MAX_MAPS));
    Ok(ids)
}

/// Every (key, value) of a map in one BPF_MAP_LOOKUP_BATCH call. Not
/// libbpf-rs's `lookup_batch`: its iterator ends silently on an error, and a
/// registry that looks empty because a read failed would make repair release
/// everything. (Not for per-CPU maps, which 5.10 cannot batch.)
pub fn lookup_all(map: &MapHandle) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let (key_size, value_size) = (map.key_size() as usize, map.value_size() as usize);
    let capacity = (MapInfo::new(map.as_fd())?.info.max_entries as usize).max(1);
    let mut keys = vec![0u8; capacity * key_size];
    let mut values = vec![0u8; capacity * value_size];
    let mut out_batch = vec![0u8; key_size.max(4)];
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        ..Default::default()
    };
    let mut count = capacity as u32;
    // SAFETY: keys and values have room for `count` entries of the map's key
    // and value sizes, out_batch for one batch token; the kernel writes no
    // more. One call with room for every entry: the first batch is the last
    // (ENOENT).
    let ret = unsafe {
        libbpf_sys::bpf_map_lookup_batch(
            map.as_fd().as_raw_fd(),
            std::ptr::null_mut(),
            out_batch.as_mut_ptr().cast(),
            keys.as_mut_ptr().cast(),
            values.as_mut_ptr().cast(),
            &mut count,
            &opts,
        )
    };
    if ret < 0 && -ret != libc::ENOENT {
        let name = MapInfo::new(map.as_fd())
            .ok()
            .and_then(|i| i.name().ok().map(str::to_string));
        return Err(io::Error::from_raw_os_error(-ret))
            .with_context(|| format!("reading map {}", name.unwrap_or_default()));
    }
    Ok(keys
        .chunks_exact(key_size)
        .zip(values.chunks_exact(value_size))
        .take(count as usize)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect())
}

/// The name of the program with this id ("" if it is gone).
pub fn prog_name(id: u32) -> String {
    libbpf_rs::ProgramHandle::from_prog_id(id)
        .map(|p| p.name().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// libbpf's own error codes (LIBBPF_ERRNO__*, 4000 and up) reach us as OS
/// errors, which std prints as "Unknown error 4003 (os error 4003)": add
/// libbpf's message ("Endian mismatch").
pub fn with_libbpf_message(err: libbpf_rs::Error) -> anyhow::Error {
    let Some(code) = os_error(&err).filter(|n| (4000..4100).contains(n)) else {
        return err.into();
    };
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: libbpf writes a NUL-terminated string of at most buf.len() bytes.
    unsafe { libbpf_sys::libbpf_strerror(-code, buf.as_mut_ptr(), buf.len() as _) };
    // SAFETY: NUL-terminated, see above.
    let message = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    anyhow::Error::new(err).context(format!("libbpf: {message}"))
}

/// The errno behind a libbpf-rs error, if it carries one. libbpf-rs keeps
/// the io::Error but exposes only its text, "... (os error N)".
pub fn os_error(err: &libbpf_rs::Error) -> Option<i32> {
    let text = err.to_string();
    text.rsplit_once("(os error ")?.1.strip_suffix(')')?.parse().ok()
}

/// Silences libbpf's messages (e.g. "Exclusivity flag on" when clsact
/// exists), noise for operators, unless PDSCP_DEBUG is set.
pub fn quiet_libbpf_unless_debugging() {
    if std::env::var_os("PDSCP_DEBUG").is_none() {
        libbpf_rs::set_print(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libbpf_error_codes_get_libbpf_messages() {
        let err = with_libbpf_message(libbpf_rs::Error::from_raw_os_error(4003));
        assert!(
            format!("{err:#}").starts_with("libbpf: Endian mismatch: "),
            "{err:#}"
        );
        let err = with_libbpf_message(libbpf_rs::Error::from_raw_os_error(libc::EPERM));
        assert!(!format!("{err:#}").contains("libbpf:"), "{err:#}");
        assert_eq!(
            os_error(&libbpf_rs::Error::from_raw_os_error(libc::ENODEV)),
            Some(libc::ENODEV)
        );
    }
}
