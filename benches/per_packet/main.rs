//! Per-packet cost of pdscp's TC programs: `cargo bench --bench per_packet` (as root).
//!
//! Every case runs one program on one prepared packet with BPF_PROG_TEST_RUN,
//! `repeat` times inside the kernel per round. The table shows the median over
//! rounds in ns per packet, and the median ratio to an empty TC program (the
//! floor, bpf/bench_floor.bpf.c) run just before the case in the same round,
//! so the speed of the machine cancels out. ns/packet is the kernel's figure:
//! it leaves out time the loop spent rescheduled, which matters on a busy
//! machine, but is a whole number of ns. The wall-clock time of the syscall
//! divided by `repeat` is shown beside it.
//!
//! What the test run allows, and how the cases work around it:
//! - The skb is built from an Ethernet frame on `lo` (ctx.ifindex may only
//!   name another device of this netns), so both programs find their config at
//!   `devices[1]`, an Ethernet-type entry switched between reader and writer.
//! - The same skb runs `repeat` times: the reader's bpf_get_hash_recalc()
//!   dissects the packet once and then finds the hash it set, as for locally
//!   sent TCP, which carries its socket's hash. One case clears it every time.
//! - A preset skb->hash is refused (EINVAL). A direct run has hash 0, which the
//!   writer looks up like any other (the reader never stores it), so an entry
//!   for hash 0 gives a hit; but only the first of the runs rewrites the DSCP.
//!   Cases that need a real hash, a new flow on every run, or a rewrite on
//!   every run go through bench_trampoline, which sets the hash, writes back
//!   the packet's first 64 bytes and tail-calls the program. The trampoline's
//!   own cost is measured in the same round by tail-calling the floor with the
//!   same settings, and replaced by the floor's.
//! - A reader insert is a new flow on every run, into pdscp's default-size
//!   flow map (16384): either emptied every INSERT_BATCH runs, so no insert
//!   evicts (the kernel's per-batch figures are added up), or kept full, so
//!   every insert evicts the least recently used entry.
//! - Many flows: the trampoline gives run i the hash of flow
//!   (i / burst) % flows, and every flow has an entry beforehand, in the
//!   default-size flow map or in one of 64k entries: entries are cold in cache
//!   unless bursts repeat them. A flow the map could not hold is inserted
//!   again by the reader and missed by the writer; the table reports that
//!   per packet as churn.
//! - Reflection: the ingress program (and the reader) with the tunnel's
//!   reflection flags, on a flow whose reflect entry exists.
//!
//! Modules: cases (what is measured), run (maps, test runs, checks),
//! packets, report.
use std::mem::MaybeUninit;

use anyhow::{ensure, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::OpenObject;
use pdscp::skel::{PdscpSkel, PdscpSkelBuilder};

mod cases;
mod packets;
mod report;
mod run;

mod floor_skel {
    #![allow(clippy::all, dead_code, unused_imports, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/bench_floor.skel.rs"));
}
use floor_skel::{BenchFloorSkel, BenchFloorSkelBuilder};

fn main() -> Result<()> {
    // `cargo bench` passes --bench; `cargo test --benches` does not: a quick smoke run then.
    let full = std::env::args().any(|a| a == "--bench");
    let repeat = env_u32("PDSCP_BENCH_REPEAT", if full { 1_000_000 } else { 10_000 })?;
    let rounds = env_u32("PDSCP_BENCH_ROUNDS", if full { 7 } else { 1 })?;
    ensure!(repeat > 0 && rounds > 0, "repeat and rounds must be positive");
    let only = std::env::var("PDSCP_BENCH_ONLY").unwrap_or_default();
    libbpf_rs::set_print(None);
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    pin_to_last_cpu(cpus);

    let mut objects = [const { MaybeUninit::uninit() }; 3];
    let [o1, o2, o3] = &mut objects;
    let mut bench = run::Bench {
        pdscp: [load_pdscp(o1, None)?, load_pdscp(o2, Some(cases::BIG_MAP))?],
        floor: load_floor(o3)?,
        repeat,
        next_hash: 1,
    };
    bench.fill_maps()?;

    let mut cases = cases::cases();
    // PDSCP_BENCH_ONLY=a|b: only the cases whose name holds one of these, for
    // a quick look while working on one path.
    cases.retain(|c| only.is_empty() || only.split('|').any(|w| c.name.contains(w)));
    let mut samples: Vec<Vec<run::Sample>> = vec![Vec::new(); cases.len()];
    // Round-robin, so that drift in the machine's speed reaches every case.
    for _ in 0..rounds {
        for (case, samples) in cases.iter().zip(samples.iter_mut()) {
            let sample = bench.run(case).with_context(|| format!("case {:?}", case.name))?;
            samples.push(sample);
        }
    }
    report::print_table(repeat, cpus, &cases, &samples);
    Ok(())
}

fn env_u32(name: &str, default: u32) -> Result<u32> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

/// Stays on one CPU: less noise between rounds.
fn pin_to_last_cpu(cpus: libc::c_long) {
    // SAFETY: a zeroed cpu_set_t is valid, and CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus.clamp(1, 1024) as usize - 1, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// pdscp's object, loaded as pdscp loads it (without pinning), with the
/// default map sizes or a flow map of `flows` entries.
fn load_pdscp(object: &mut MaybeUninit<OpenObject>, flows: Option<u32>) -> Result<PdscpSkel<'_>> {
    let mut open = PdscpSkelBuilder::default()
        .open(object)
        .context("opening pdscp's BPF object")?;
    if let Some(n) = flows {
        open.maps.flows.set_max_entries(n)?;
    }
    open.load().context("loading pdscp's programs (needs root)")
}

fn load_floor(object: &mut MaybeUninit<OpenObject>) -> Result<BenchFloorSkel<'_>> {
    BenchFloorSkelBuilder::default()
        .open(object)?
        .load()
        .context("loading bpf/bench_floor.bpf.c (needs root)")
}
