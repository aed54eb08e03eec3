//! Running a case: pdscp's maps set up as pdscp would for one tunnel on one
//! uplink, the program run with BPF_PROG_TEST_RUN, its counters checked.
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapMut, ProgramInput, ProgramMut};
use pdscp::maps::abi;
use pdscp::skel::{types, PdscpSkel};

use crate::cases::{stat, Case, Hash, Prog, Via, FLOWS_BASE, HASH_HIT, REFLECTED_FLOW};
use crate::cases::{REFLECT_IN, REFLECT_OUT, TUNNEL_IN_USE};
use crate::floor_skel::BenchFloorSkel;
use crate::packets::{outer_dscp, DSCP_EF, INNER_A_V4, INNER_B_V4, INNER_DPORT, INNER_SPORT};
use crate::packets::{IPPROTO_TCP, PORT};

/// The test run's device: `lo`.
const IFINDEX: u32 = 1;
/// Runs before each measured one: warms caches, stores a steady flow's
/// entry, and fills the default-size flow map (16384) for the "map full" case.
const WARMUP: u32 = 20_000;
/// Inserts between two emptyings of the flow map: the LRU map starts
/// evicting a little before it is full.
const INSERT_BATCH: u32 = 10_000;
const TC_ACT_UNSPEC: u32 = -1i32 as u32;
/// Values of bench_floor.bpf.c's `hash_mode`.
const HASH_KEEP: u32 = 0;
const HASH_SET: u32 = 1;
const HASH_CLEAR: u32 = 2;

/// One round of a case: its cost and the floor's, measured just before it.
#[derive(Clone, Copy)]
pub struct Sample {
    pub case: Timing,
    pub floor: Timing,
    /// The case's churn counter per run.
    pub churn: f64,
}

/// ns per packet of one measured run.
#[derive(Clone, Copy)]
pub struct Timing {
    /// The kernel's figure: whole ns, rescheduling left out.
    pub kernel: f64,
    /// Wall clock around the syscall, divided by repeat.
    pub wall: f64,
}

pub struct Bench<'o> {
    /// pdscp's object with the default flow map, and with a BIG_MAP one.
    pub pdscp: [PdscpSkel<'o>; 2],
    pub floor: BenchFloorSkel<'o>,
    pub repeat: u32,
    /// The next unused hash for new flows; far below the others.
    pub next_hash: u32,
}

impl Bench<'_> {
    pub fn fill_maps(&self) -> Result<()> {
        for skel in &self.pdscp {
            fill_pdscp(skel)?;
        }
        let (key, value) = (IFINDEX.to_ne_bytes(), 1u32.to_ne_bytes());
        let maps = &self.floor.maps;
        maps.hash_map.update(&key, &value, MapFlags::ANY)?;
        maps.array_map.update(&key, &value, MapFlags::ANY)?;
        let wide: Vec<u8> = (0..10u32)
            .flat_map(|i| if i == 0 { IFINDEX } else { 0 }.to_ne_bytes())
            .collect();
        maps.flows_map
            .update(&u64::from(IFINDEX).to_ne_bytes(), &value, MapFlags::ANY)?;
        maps.reflect_map.update(&wide, &value, MapFlags::ANY)?;
        Ok(())
    }

    /// One measured run of `case`, its results checked, and of the floor.
    /// Through the trampoline, the trampoline's cost is replaced by the floor's.
    pub fn run(&mut self, case: &Case) -> Result<Sample> {
        let Bench {
            pdscp,
            floor,
            repeat,
            next_hash,
        } = self;
        let repeat = *repeat;
        let skel = &pdscp[usize::from(case.big_map)];
        // As pdscp records a device that is the tunnel (slot 0) and the
        // uplink (slot 0) at once: the programs read `devices`.
        let slot = types::dev_slot {
            roles: match case.prog {
                Prog::Writer => abi::DEV_UPLINK as u8,
                _ => abi::DEV_TUNNEL as u8,
            },
            l2: 1,
            tunnel_flags: TUNNEL_IN_USE | case.flags,
            port: PORT.to_be(),
            ..Default::default()
        };
        skel.maps
            .devices
            .update(&IFINDEX.to_ne_bytes(), as_bytes(&slot), MapFlags::ANY)?;
        let flows = &skel.maps.flows;
        if let Some(Via {
            hash: Hash::Cycle { flows: n, .. },
            ..
        }) = case.via
        {
            drain(flows)?;
            for i in 0..n {
                flows.update(&flow_key(FLOWS_BASE + i), &flow_mark(DSCP_EF), MapFlags::ANY)?;
            }
        } else {
            flows.update(&flow_key(HASH_HIT), &flow_mark(DSCP_EF), MapFlags::ANY)?;
        }
        if case.zero_entry {
            flows.update(&flow_key(0), &flow_mark(DSCP_EF), MapFlags::ANY)?;
        } else {
            match flows.delete(&flow_key(0)) {
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
        if !case.counters.is_empty() {
            let sum: u64 = case.counters.iter().map(|&i| moved(i)).sum();
            ensure!(
                sum == u64::from(repeat),
                "counters {:?} moved by {sum}, not once per run",
                case.counters
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
            churn: case.churn.map_or(0.0, |i| moved(i) as f64 / f64::from(repeat)),
        })
    }
}

/// As pdscp records a tunnel in slot 0 attached to uplink slot 0 with
/// link_stats row 1, whose outer port PORT is the only tunnel port, allowed
/// to reflect any mark; and the reflect entry of REFLECTED_FLOW.
fn fill_pdscp(skel: &PdscpSkel<'_>) -> Result<()> {
    let mut block = types::port_block::default();
    block.tunnel[usize::from(PORT & 0xff)] = 1;
    let maps = &skel.maps;
    maps.ports.update(
        &u32::from(PORT >> 8).to_ne_bytes(),
        as_bytes(&block),
        MapFlags::ANY,
    )?;
    let mut tunnel = types::tunnel_rec {
        flags: TUNNEL_IN_USE | REFLECT_OUT | REFLECT_IN,
        reflect_allow: u64::MAX,
        l2: 1,
        ifindex: IFINDEX,
        port: PORT.to_be(),
        reader_mode: 2,
        ingress_mode: 2,
        ..Default::default()
    };
    tunnel.links[0] = 1;
    tunnel.dscp_map = std::array::from_fn(|d| d as u8);
    maps.tunnels
        .update(&0u32.to_ne_bytes(), as_bytes(&tunnel), MapFlags::ANY)?;
    // The lower end (A) first.
    let mut key = types::reflect_key {
        proto: IPPROTO_TCP,
        port_lo: (INNER_SPORT + REFLECTED_FLOW).to_be(),
        port_hi: INNER_DPORT.to_be(),
        ..Default::default()
    };
    key.addr_lo[..4].copy_from_slice(&INNER_A_V4);
    key.addr_hi[..4].copy_from_slice(&INNER_B_V4);
    let mark = types::reflect_mark {
        out: DSCP_EF,
        ..Default::default()
    };
    maps.reflect
        .update(as_bytes(&key), as_bytes(&mark), MapFlags::ANY)?;
    Ok(())
}

fn program<'a>(skel: &'a PdscpSkel<'_>, floor: &'a BenchFloorSkel<'_>, prog: Prog) -> &'a ProgramMut<'a> {
    match prog {
        Prog::Reader => &skel.progs.pdscp_reader,
        Prog::Writer => &skel.progs.pdscp_writer,
        Prog::Ingress => &skel.progs.pdscp_ingress,
        Prog::HashLookup => &floor.progs.bench_hash_lookup,
        Prog::ArrayLookup => &floor.progs.bench_array_lookup,
        Prog::FlowsLookup => &floor.progs.bench_flows_lookup,
        Prog::ReflectLookup => &floor.progs.bench_reflect_lookup,
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
    (cfg.flow_mask, cfg.burst_shift, cfg.runs) = (0, 0, 0);
    (cfg.hash_mode, cfg.hash, cfg.hash_step) = match via.hash {
        Hash::Keep => (HASH_KEEP, 0, 0),
        Hash::Fixed(h) => (HASH_SET, h, 0),
        Hash::New => {
            let h = *next_hash;
            *next_hash += WARMUP + repeat;
            (HASH_SET, h, 1)
        }
        Hash::Cleared => (HASH_CLEAR, 0, 0),
        Hash::Cycle { flows, burst } => {
            ensure!(
                flows.is_power_of_two() && burst.is_power_of_two(),
                "flows and bursts must be powers of two"
            );
            (cfg.flow_mask, cfg.burst_shift) = (flows - 1, burst.trailing_zeros());
            (HASH_SET, FLOWS_BASE, 0)
        }
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

/// The counters of tunnel slot 0, link row 1 and uplink slot 0, summed over
/// CPUs, flattened as `stat` says.
fn counters(skel: &PdscpSkel<'_>) -> Result<Vec<u64>> {
    use pdscp::maps::stats;
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
    let mut flat = Vec::with_capacity(stat::LEN);
    flat.extend(&link[stats::MARKED..stats::MARKED + 64]);
    flat.extend(&tunnel[stats::SEEN..stats::SEEN + 64]);
    flat.extend(&tunnel[stats::REFLECTED_IN..stats::REFLECTED_IN + 64]);
    flat.push(link[stats::MISSED]);
    flat.push(uplink[stats::NOT_TUNNEL]);
    flat.push(tunnel[stats::INSERTS]);
    flat.push(tunnel[stats::UPDATES]);
    flat.push(tunnel[stats::LEARNED]);
    flat.push(tunnel[stats::ARRIVED]);
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
