//! Compiles the BPF programs in bpf/ into libbpf skeletons in OUT_DIR:
//! pdscp.skel.rs (the product), bench_floor.skel.rs (the floor, yardstick
//! and trampoline programs of benches/per_packet.rs) and test_foreign.skel.rs
//! (a foreign TC program for tests/reliability.rs).
use std::env;
use std::path::PathBuf;
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

const SKELETONS: [(&str, &str); 3] = [
    ("bpf/pdscp.bpf.c", "pdscp.skel.rs"),
    ("bpf/bench_floor.bpf.c", "bench_floor.skel.rs"),
    ("bpf/test_foreign.bpf.c", "test_foreign.skel.rs"),
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let mut clang_args = vec!["-Wall".to_string(), "-Wno-unused-function".to_string()];
    // The uapi headers include <asm/types.h>, which Debian keeps under the
    // multiarch directory of the build host. BPF bytecode does not depend on
    // the target architecture beyond endianness, so the host's headers do.
    if let Some(multiarch) = host_multiarch() {
        clang_args.push(format!("-I/usr/include/{multiarch}"));
    }
    for (source, skeleton) in SKELETONS {
        SkeletonBuilder::new()
            .source(source)
            .clang_args(clang_args.clone())
            .build_and_generate(out_dir.join(skeleton))
            .unwrap_or_else(|e| panic!("building {source} (needs clang and libbpf headers): {e}"));
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-changed=bpf/pdscp.h");
}

fn host_multiarch() -> Option<String> {
    let out = Command::new("cc").arg("-print-multiarch").output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}
