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
//!   `dev_slots[1]`, an Ethernet-type entry switched between reader and writer.
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
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapMut, OpenObject, ProgramInput, ProgramMut};
use pdscp::skel::{types, PdscpSkel, PdscpSkelBuilder};

mod floor_skel {
    #![allow(clippy::all, dead_code, unused_imports, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/bench_floor.skel.rs"));
}
use floor_skel::{BenchFloorSkel, BenchFloorSkelBuilder};

/// The bench's view of pdscp's counters (tunnel slot 0, its link row 1 on
/// uplink slot 0, and that uplink), flattened in this order.
mod stat {
    pub const WRITER_MARKED: usize = 0;
    pub const READER_SEEN: usize = 64;
    pub const WRITER_MISS: usize = 128;
    pub const WRITER_NOT_TUNNEL: usize = 129;
    pub const READER_INSERT: usize = 130;
    pub const READER_UPDATE: usize = 131;
}

/// The test run's device: `lo`.
const IFINDEX: u32 = 1;
/// The tunnel's outer UDP source port.
const PORT: u16 = 51820;
const VXLAN_PORT: u16 = 4789;
const DSCP_EF: u8 = 46;
/// skb->hash the trampoline gives writer packets that hit.
const HASH_HIT: u32 = 0xa5a5_0001;
/// Runs before each measured one: warms caches, stores a steady flow's
/// entry, and fills the default-size flow map (16384) for the "map full" case.
const WARMUP: u32 = 20_000;
/// Inserts between two emptyings of the flow map: the LRU map starts
/// evicting a little before it is full.
const INSERT_BATCH: u32 = 10_000;
const TC_ACT_UNSPEC: u32 = -1i32 as u32;
/// Values of bench_floor.bpf.c's `hash_mode`.
const HASH_SET: u32 = 1;
const HASH_CLEAR: u32 = 2;

fn main() -> Result<()> {
    // `cargo bench` passes --bench; `cargo test --benches` does not: a quick smoke run then.
    let full = std::env::args().any(|a| a == "--bench");
    let repeat = env_u32("PDSCP_BENCH_REPEAT", if full { 1_000_000 } else { 10_000 })?;
    let rounds = env_u32("PDSCP_BENCH_ROUNDS", if full { 7 } else { 1 })?;
    ensure!(repeat > 0 && rounds > 0, "repeat and rounds must be positive");
    libbpf_rs::set_print(None);
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    pin_to_last_cpu(cpus);

    let mut objects = [const { MaybeUninit::uninit() }; 2];
    let [o1, o2] = &mut objects;
    let mut bench = Bench {
        pdscp: load_pdscp(o1)?,
        floor: load_floor(o2)?,
        repeat,
        next_hash: 1,
    };
    bench.fill_maps()?;

    let cases = cases();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
    // Round-robin, so that drift in the machine's speed reaches every case.
    for _ in 0..rounds {
        for (case, samples) in cases.iter().zip(samples.iter_mut()) {
            let sample = bench.run(case).with_context(|| format!("case {:?}", case.name))?;
            samples.push(sample);
        }
    }
    print_table(repeat, cpus, &cases, &samples);
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
/// default map sizes.
fn load_pdscp(object: &mut MaybeUninit<OpenObject>) -> Result<PdscpSkel<'_>> {
    PdscpSkelBuilder::default()
        .open(object)
        .context("opening pdscp's BPF object")?
        .load()
        .context("loading pdscp's programs (needs root)")
}

fn load_floor(object: &mut MaybeUninit<OpenObject>) -> Result<BenchFloorSkel<'_>> {
    BenchFloorSkelBuilder::default()
        .open(object)?
        .load()
        .context("loading bpf/bench_floor.bpf.c (needs root)")
}

#[derive(Clone, Copy, PartialEq)]
enum Prog {
    Reader,
    Writer,
    /// Yardsticks from bench_floor.bpf.c.
    HashLookup,
    ArrayLookup,
}

/// What the trampoline does to skb->hash before tail-calling the program.
#[derive(Clone, Copy)]
enum Hash {
    /// This hash on every run.
    Fixed(u32),
    /// A new hash, so a new flow, on every run.
    New,
    /// No hash: bpf_get_hash_recalc() dissects the packet every time.
    Cleared,
}

#[derive(Clone, Copy)]
struct Via {
    hash: Hash,
    /// Write the packet's first 64 bytes back before each run.
    restore: bool,
}

struct Case {
    name: &'static str,
    prog: Prog,
    /// Empty the flow map every INSERT_BATCH runs, so inserts never evict.
    batched: bool,
    packet: Vec<u8>,
    /// Through the trampoline, or run directly.
    via: Option<Via>,
    /// A flow entry for hash 0 (a direct run's skb has no hash), so the
    /// writer hits; otherwise there is none.
    zero_entry: bool,
    /// The stats counter that every run must bump.
    counter: Option<usize>,
    /// Counters that must not move.
    quiet: &'static [usize],
    /// The DSCP the packet must leave with (writer hits).
    out_dscp: Option<u8>,
    /// Highest acceptable ratio to the floor.
    target: Option<f64>,
}

impl Case {
    fn new(name: &'static str, prog: Prog, packet: Vec<u8>, counter: usize) -> Case {
        Case {
            name,
            prog,
            batched: false,
            packet,
            via: None,
            zero_entry: false,
            counter: Some(counter),
            quiet: &[],
            out_dscp: None,
            target: None,
        }
    }

    /// A yardstick, which counts nothing.
    fn yardstick(name: &'static str, prog: Prog) -> Case {
        Case {
            counter: None,
            ..Case::new(name, prog, inner_v4(0, 1), 0)
        }
    }

    fn target(self, max: f64) -> Case {
        Case {
            target: Some(max),
            ..self
        }
    }

    /// Neither inserts nor updates a flow entry.
    fn steady(self) -> Case {
        Case {
            quiet: &[stat::READER_INSERT, stat::READER_UPDATE],
            ..self
        }
    }

    fn via(self, hash: Hash, restore: bool) -> Case {
        Case {
            via: Some(Via { hash, restore }),
            ..self
        }
    }

    fn batched(self) -> Case {
        Case {
            batched: true,
            ..self
        }
    }

    fn zero_entry(self) -> Case {
        Case {
            zero_entry: true,
            ..self
        }
    }

    fn leaves_with(self, dscp: u8) -> Case {
        Case {
            out_dscp: Some(dscp),
            ..self
        }
    }
}

fn cases() -> Vec<Case> {
    use Prog::{Reader, Writer};
    let seen_ef = stat::READER_SEEN + DSCP_EF as usize;
    let marked_ef = stat::WRITER_MARKED + DSCP_EF as usize;
    let (seen_0, insert) = (stat::READER_SEEN, stat::READER_INSERT);
    let (miss, not_tunnel) = (stat::WRITER_MISS, stat::WRITER_NOT_TUNNEL);
    let (v4, v6) = (inner_v4(DSCP_EF, 1), inner_v6(DSCP_EF, 1));
    let (new_v4, new_v6) = (inner_v4(DSCP_EF, 3), inner_v6(DSCP_EF, 3));
    let (out_v4, out_v6) = (outer_v4(PORT), outer_v6(PORT));
    let (other_v4, other_v6) = (outer_v4(PORT + 7), outer_v6(PORT + 7));
    let hit = Hash::Fixed(HASH_HIT);
    vec![
        Case::yardstick("yardstick: one hash map lookup", Prog::HashLookup),
        Case::yardstick("yardstick: one array map lookup", Prog::ArrayLookup),
        Case::new("reader v4, mark unchanged", Reader, v4.clone(), seen_ef)
            .steady()
            .target(2.5),
        Case::new("reader v6, mark unchanged", Reader, v6, seen_ef)
            .steady()
            .target(2.5),
        Case::new("reader v4, mark unchanged, no skb hash", Reader, v4, seen_ef)
            .steady()
            .via(Hash::Cleared, false),
        Case::new("reader v4, unmarked", Reader, inner_v4(0, 2), seen_0).steady(),
        Case::new("reader v6, unmarked", Reader, inner_v6(0, 2), seen_0).steady(),
        Case::new("reader v4, new flow (insert)", Reader, new_v4.clone(), insert)
            .batched()
            .via(Hash::New, false),
        Case::new("reader v6, new flow (insert)", Reader, new_v6, insert)
            .batched()
            .via(Hash::New, false),
        Case::new("reader v4, new flow, map full (evicts)", Reader, new_v4, insert).via(Hash::New, false),
        Case::new("writer v4 hit, rewrite", Writer, out_v4.clone(), marked_ef)
            .via(hit, true)
            .leaves_with(DSCP_EF)
            .target(2.5),
        Case::new("writer v6 hit, rewrite", Writer, out_v6, marked_ef)
            .via(hit, true)
            .leaves_with(DSCP_EF)
            .target(2.5),
        Case::new("writer v4 hit, already marked", Writer, out_v4.clone(), marked_ef)
            .zero_entry()
            .leaves_with(DSCP_EF)
            .target(2.5),
        Case::new("writer v4 miss (no entry)", Writer, out_v4, miss).target(2.0),
        Case::new("writer v4 not tunnel (other port)", Writer, other_v4, not_tunnel).target(2.0),
        Case::new("writer v6 not tunnel (other port)", Writer, other_v6, not_tunnel).target(2.0),
    ]
}

/// One round of a case: its cost and the floor's, measured just before it.
#[derive(Clone, Copy)]
struct Sample {
    case: Timing,
    floor: Timing,
}

/// ns per packet of one measured run.
#[derive(Clone, Copy)]
struct Timing {
    /// The kernel's figure: whole ns, rescheduling left out.
    kernel: f64,
    /// Wall clock around the syscall, divided by repeat.
    wall: f64,
}

struct Bench<'o> {
    pdscp: PdscpSkel<'o>,
    floor: BenchFloorSkel<'o>,
    repeat: u32,
    /// The next unused hash for new flows; far below HASH_HIT.
    next_hash: u32,
}

impl Bench<'_> {
    fn fill_maps(&self) -> Result<()> {
        // As pdscp records a tunnel in slot 0 attached to uplink slot 0 with
        // link_stats row 1, whose outer port PORT is the only tunnel port.
        let mut block = types::port_block::default();
        block.tunnel[usize::from(PORT & 0xff)] = 1;
        let maps = &self.pdscp.maps;
        maps.ports.update(
            &u32::from(PORT >> 8).to_ne_bytes(),
            as_bytes(&block),
            MapFlags::ANY,
        )?;
        let mut tunnel = types::tunnel_rec {
            flags: 1, // TUNNEL_IN_USE
            l2: 1,
            ifindex: IFINDEX,
            port: PORT.to_be(),
            reader_mode: 2,
            ..Default::default()
        };
        tunnel.links[0] = 1;
        tunnel.dscp_map = std::array::from_fn(|d| d as u8);
        maps.tunnels
            .update(&0u32.to_ne_bytes(), as_bytes(&tunnel), MapFlags::ANY)?;
        let (key, value) = (IFINDEX.to_ne_bytes(), 1u32.to_ne_bytes());
        let maps = &self.floor.maps;
        maps.hash_map.update(&key, &value, MapFlags::ANY)?;
        maps.array_map.update(&key, &value, MapFlags::ANY)?;
        Ok(())
    }

    /// One measured run of `case`, its results checked, and of the floor.
    /// Through the trampoline, the trampoline's cost is replaced by the floor's.
    fn run(&mut self, case: &Case) -> Result<Sample> {
        let Bench {
            pdscp: skel,
            floor,
            repeat,
            next_hash,
        } = self;
        let repeat = *repeat;
        // As pdscp records a device that is the tunnel (slot 0) and the
        // uplink (slot 0) at once: the programs read `devices`.
        let slot = types::dev_slot {
            roles: match case.prog {
                Prog::Writer => 2, // DEV_UPLINK
                _ => 1,            // DEV_TUNNEL
            },
            l2: 1,
            tunnel_flags: 1,
            port: PORT.to_be(),
            ..Default::default()
        };
        skel.maps
            .devices
            .update(&IFINDEX.to_ne_bytes(), as_bytes(&slot), MapFlags::ANY)?;
        skel.maps
            .flows
            .update(&flow_key(HASH_HIT), &flow_mark(DSCP_EF), MapFlags::ANY)?;
        if case.zero_entry {
            skel.maps
                .flows
                .update(&flow_key(0), &flow_mark(DSCP_EF), MapFlags::ANY)?;
        } else {
            match skel.maps.flows.delete(&flow_key(0)) {
                Err(e) if e.kind() != libbpf_rs::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }

        let floor_prog = &floor.progs.bench_floor;
        test_run(floor_prog, &case.packet, WARMUP, None)?;
        let floor_alone = test_run(floor_prog, &case.packet, repeat, None)?;
        let mut tramp = None;
        if let Some(via) = case.via {
            let floor_fd = floor.progs.bench_floor.as_fd().as_raw_fd();
            set_tramp(floor, via, &case.packet, floor_fd, next_hash, repeat)?;
            let tr = &floor.progs.bench_trampoline;
            test_run(tr, &case.packet, WARMUP, None)?;
            tramp = Some(test_run(tr, &case.packet, repeat, None)?);
            let prog_fd = program(skel, floor, case.prog).as_fd().as_raw_fd();
            set_tramp(floor, via, &case.packet, prog_fd, next_hash, repeat)?;
        }
        let run_prog = match case.via {
            Some(_) => &floor.progs.bench_trampoline,
            None => program(skel, floor, case.prog),
        };

        let flows = &skel.maps.flows;
        let mut out = vec![0u8; case.packet.len()];
        let (t, before, after) = if case.batched {
            let mut left = repeat;
            let (mut kernel, mut wall) = (0.0, 0.0);
            drain(flows)?;
            test_run(run_prog, &case.packet, INSERT_BATCH, None)?;
            let before = counters(skel)?;
            while left > 0 {
                let n = left.min(INSERT_BATCH);
                // Also proof that the last batch's inserts evicted nothing.
                let entries = drain(flows)?;
                ensure!(
                    entries >= u64::from(INSERT_BATCH),
                    "the flow map held {entries} entries: inserts evicted others"
                );
                let t = test_run(run_prog, &case.packet, n, Some(&mut out))?;
                kernel += t.kernel * f64::from(n);
                wall += t.wall * f64::from(n);
                left -= n;
            }
            let after = counters(skel)?;
            let t = Timing {
                kernel: kernel / f64::from(repeat),
                wall: wall / f64::from(repeat),
            };
            (t, before, after)
        } else {
            test_run(run_prog, &case.packet, WARMUP, None)?;
            let before = counters(skel)?;
            let t = test_run(run_prog, &case.packet, repeat, Some(&mut out))?;
            (t, before, counters(skel)?)
        };

        let moved = |i: usize| after[i] - before[i];
        if let Some(i) = case.counter {
            ensure!(
                moved(i) == u64::from(repeat),
                "counter {i} moved by {}, not once per run",
                moved(i)
            );
        }
        for &i in case.quiet {
            ensure!(moved(i) == 0, "counter {i} moved by {}", moved(i));
        }
        if let Some(dscp) = case.out_dscp {
            ensure!(outer_dscp(&out) == Some(dscp), "the outer DSCP was not rewritten");
        }
        let t = match tramp {
            Some(tr) => Timing {
                wall: t.wall - tr.wall + floor_alone.wall,
                kernel: t.kernel - tr.kernel + floor_alone.kernel,
            },
            None => t,
        };
        Ok(Sample {
            case: t,
            floor: floor_alone,
        })
    }
}

fn program<'a>(skel: &'a PdscpSkel<'_>, floor: &'a BenchFloorSkel<'_>, prog: Prog) -> &'a ProgramMut<'a> {
    match prog {
        Prog::Reader => &skel.progs.pdscp_reader,
        Prog::Writer => &skel.progs.pdscp_writer,
        Prog::HashLookup => &floor.progs.bench_hash_lookup,
        Prog::ArrayLookup => &floor.progs.bench_array_lookup,
    }
}

/// Points the trampoline at `prog_fd` with the settings of `via`.
fn set_tramp(
    floor: &mut BenchFloorSkel<'_>,
    via: Via,
    packet: &[u8],
    prog_fd: i32,
    next_hash: &mut u32,
    repeat: u32,
) -> Result<()> {
    let cfg = floor
        .maps
        .bss_data
        .as_deref_mut()
        .context("bench_floor's .bss is not mapped")?;
    (cfg.hash_mode, cfg.hash, cfg.hash_step) = match via.hash {
        Hash::Fixed(h) => (HASH_SET, h, 0),
        Hash::New => {
            let h = *next_hash;
            *next_hash += WARMUP + repeat;
            (HASH_SET, h, 1)
        }
        Hash::Cleared => (HASH_CLEAR, 0, 0),
    };
    cfg.restore_on = via.restore.into();
    let n = cfg.restore.len();
    ensure!(packet.len() >= n, "packet shorter than the trampoline's restore");
    cfg.restore.copy_from_slice(&packet[..n]);
    floor
        .maps
        .target
        .update(&0u32.to_ne_bytes(), &prog_fd.to_ne_bytes(), MapFlags::ANY)?;
    Ok(())
}

/// Runs `prog` `repeat` times on `packet`; TC_ACT_UNSPEC is the only
/// acceptable verdict (the trampoline returns TC_ACT_SHOT if its tail call failed).
fn test_run(prog: &ProgramMut, packet: &[u8], repeat: u32, out: Option<&mut [u8]>) -> Result<Timing> {
    let input = ProgramInput {
        data_in: Some(packet),
        data_out: out,
        repeat,
        ..Default::default()
    };
    let start = Instant::now();
    let output = prog.test_run(input).context("BPF_PROG_TEST_RUN")?;
    let wall = start.elapsed();
    if output.return_value != TC_ACT_UNSPEC {
        bail!(
            "{} returned {}",
            prog.name().to_string_lossy(),
            output.return_value as i32
        );
    }
    Ok(Timing {
        wall: wall.as_nanos() as f64 / f64::from(repeat),
        kernel: output.duration.as_nanos() as f64,
    })
}

/// The stats counters, summed over CPUs.
/// The counters of tunnel slot 0, link row 1 and uplink slot 0, summed over
/// CPUs, flattened as `stat` says.
fn counters(skel: &PdscpSkel<'_>) -> Result<Vec<u64>> {
    let row = |map: &MapMut<'_>, key: u32| -> Result<Vec<u64>> {
        let per_cpu = map
            .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)?
            .unwrap_or_default();
        Ok(pdscp::maps::sum_rows(&per_cpu))
    };
    let (tunnel, link, uplink) = (
        row(&skel.maps.tunnel_stats, 0)?,
        row(&skel.maps.link_stats, 1)?,
        row(&skel.maps.uplink_stats, 0)?,
    );
    let mut flat = Vec::with_capacity(132);
    flat.extend(&link[pdscp::maps::stats::MARKED..pdscp::maps::stats::MARKED + 64]);
    flat.extend(&tunnel[pdscp::maps::stats::SEEN..pdscp::maps::stats::SEEN + 64]);
    flat.push(link[pdscp::maps::stats::MISSED]);
    flat.push(uplink[pdscp::maps::stats::NOT_TUNNEL]);
    flat.push(tunnel[pdscp::maps::stats::INSERTS]);
    flat.push(tunnel[pdscp::maps::stats::UPDATES]);
    Ok(flat)
}

/// Deletes every entry of `map`; returns how many there were.
fn drain(map: &MapMut<'_>) -> Result<u64> {
    let mut total = 0;
    // libbpf-rs's batch iterator stops at the first short batch, and the
    // kernel cuts batches at bucket boundaries: start over until empty.
    loop {
        let n = map
            .lookup_and_delete_batch(4096, MapFlags::ANY, MapFlags::ANY)?
            .count() as u64;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

fn flow_mark(dscp: u8) -> Vec<u8> {
    pdscp::maps::encode_flow_mark(dscp, 0)
}

fn flow_key(hash: u32) -> Vec<u8> {
    let key = types::flow_key {
        hash,
        port: PORT.to_be(),
        pad: 0,
    };
    as_bytes(&key).to_vec()
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is plain old data from the skeleton; any byte pattern may be read.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

// ---------------------------------------------------------------------------
// Packets. Addresses are from 198.18.0.0/15 and 2001:db8::/32; nothing is sent.
// ---------------------------------------------------------------------------

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(tos: u8, proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let len = (20 + payload.len()) as u16;
    let mut h = vec![0x45, tos];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let sum = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn ipv6(tclass: u8, next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let first = (6u32 << 28) | (u32::from(tclass) << 20) | 0x12345;
    let mut h = first.to_be_bytes().to_vec();
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A TCP segment with 64 bytes of data (checksum left 0: nothing checks it).
fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    s.extend_from_slice(&[0xab; 64]);
    s
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(payload);
    s
}

const A_V4: [u8; 4] = [198, 18, 0, 1];
const B_V4: [u8; 4] = [198, 18, 0, 2];
const A_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const B_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const INNER_A_V4: [u8; 4] = [198, 19, 1, 1];
const INNER_B_V4: [u8; 4] = [198, 19, 1, 2];
const INNER_A_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const INNER_B_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// What a VXLAN tunnel device's egress sees: Ethernet, IPv4, TCP. `flow`
/// picks the source port, so cases do not share flow entries.
fn inner_v4(dscp: u8, flow: u16) -> Vec<u8> {
    let ip = ipv4(
        dscp << 2,
        IPPROTO_TCP,
        INNER_A_V4,
        INNER_B_V4,
        &tcp(40000 + flow, 443),
    );
    ethernet(ETH_P_IP, &ip)
}

fn inner_v6(dscp: u8, flow: u16) -> Vec<u8> {
    let ip = ipv6(
        dscp << 2,
        IPPROTO_TCP,
        INNER_A_V6,
        INNER_B_V6,
        &tcp(40000 + flow, 443),
    );
    ethernet(ETH_P_IPV6, &ip)
}

/// What the uplink's egress sees: the tunnel's packet from UDP port `sport`,
/// outer DSCP 0.
fn outer_v4(sport: u16) -> Vec<u8> {
    let udp = udp(sport, VXLAN_PORT, &vxlan(&inner_v4(DSCP_EF, 1)));
    ethernet(ETH_P_IP, &ipv4(0, IPPROTO_UDP, A_V4, B_V4, &udp))
}

fn outer_v6(sport: u16) -> Vec<u8> {
    let udp = udp(sport, VXLAN_PORT, &vxlan(&inner_v6(DSCP_EF, 1)));
    ethernet(ETH_P_IPV6, &ipv6(0, IPPROTO_UDP, A_V6, B_V6, &udp))
}

fn vxlan(frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    v.extend_from_slice(frame);
    v
}

/// DSCP of the outer header of an Ethernet frame; None for an IPv4 header
/// whose checksum is wrong.
fn outer_dscp(frame: &[u8]) -> Option<u8> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    match ethertype {
        ETH_P_IP => {
            let sum = ip
                .get(..20)?
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum::<u32>();
            let sum = (sum & 0xffff) + (sum >> 16);
            (((sum & 0xffff) + (sum >> 16)) == 0xffff).then_some(ip[1] >> 2)
        }
        ETH_P_IPV6 => Some((((ip[0] & 0x0f) << 4) | (ip[1] >> 4)) >> 2),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn print_table(repeat: u32, cpus: libc::c_long, cases: &[Case], samples: &[Vec<Sample>]) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let floors: Vec<Timing> = samples.iter().flatten().map(|s| s.floor).collect();
    println!(
        "pdscp per-packet cost: BPF_PROG_TEST_RUN, repeat {repeat}, median of {} rounds; \
         kernel {}, {cpus} CPUs",
        samples.first().map_or(0, Vec::len),
        release.trim()
    );
    println!();
    println!("| case | ns/packet | rounds min-max | wall ns | x floor | target |");
    println!("|---|---:|---:|---:|---:|---|");
    println!(
        "| floor: empty TC program (all rounds) | {:.0} | {} | {:.1} | 1.00 | |",
        median(floors.iter().map(|t| t.kernel).collect()),
        spread(floors.iter().map(|t| t.kernel)),
        median(floors.iter().map(|t| t.wall).collect()),
    );
    let mut missed = 0;
    for (case, s) in cases.iter().zip(samples) {
        // Each round against the floor measured just before it.
        let ratio = median(s.iter().map(|s| s.case.kernel / s.floor.kernel).collect());
        let target = match case.target {
            Some(max) if ratio <= max => format!("<= {max:.1} ok"),
            Some(max) => {
                missed += 1;
                format!("<= {max:.1} MISSED")
            }
            None => String::new(),
        };
        println!(
            "| {}{} | {:.0} | {} | {:.1} | {ratio:.2} | {target} |",
            case.name,
            if case.via.is_some() { " *" } else { "" },
            median(s.iter().map(|s| s.case.kernel).collect()),
            spread(s.iter().map(|s| s.case.kernel)),
            median(s.iter().map(|s| s.case.wall).collect()),
        );
    }
    println!();
    println!(
        "* through bench_trampoline (sets skb->hash, restores the packet, tail-calls); its cost, \
         measured by tail-calling the floor in the same round, is replaced by the floor's."
    );
    println!("targets missed: {missed}");
}

fn spread(v: impl Iterator<Item = f64>) -> String {
    let v: Vec<f64> = v.collect();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.0}-{max:.0}")
}
