//! Compiles bpf/pdscp.bpf.c into a libbpf skeleton (src/bpf/pdscp.skel.rs in OUT_DIR).
use std::env;
use std::path::PathBuf;
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/pdscp.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("pdscp.skel.rs");
    let mut clang_args = vec!["-Wall".to_string(), "-Wno-unused-function".to_string()];
    // The uapi headers include <asm/types.h>, which Debian keeps under the
    // multiarch directory of the build host. BPF bytecode does not depend on
    // the target architecture beyond endianness, so the host's headers do.
    if let Some(multiarch) = host_multiarch() {
        clang_args.push(format!("-I/usr/include/{multiarch}"));
    }
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args(clang_args)
        .build_and_generate(&out)
        .expect("building the BPF skeleton (needs clang and libbpf headers)");
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=bpf/pdscp.h");
}

fn host_multiarch() -> Option<String> {
    let out = Command::new("cc").arg("-print-multiarch").output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}
