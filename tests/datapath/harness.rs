//! pdscp's programs under BPF_PROG_TEST_RUN. One skeleton per test, loaded
//! as pdscp loads it (default map sizes) but never pinned or attached; the
//! maps are set for each case as pdscp records its tunnels, the program runs
//! once on the packet, and the flows and reflect maps are read back and
//! emptied for the next case.
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{ErrorKind, MapCore, MapFlags, MapMut, OpenObject, ProgramInput};
use pdscp::skel::{types, PdscpSkel, PdscpSkelBuilder};

use crate::case::{flag, Case, Tunnel};
use crate::oracle::{FlowKey, FlowMark, Model, ReflectKey, ReflectMark};
use crate::{Prog, IFINDEX, PORT_A, PORT_B};

mod floor_skel {
    #![allow(clippy::all, dead_code, unused_imports, non_camel_case_types)]
    include!(concat!(env!("OUT_DIR"), "/bench_floor.skel.rs"));
}
use floor_skel::{BenchFloorSkel, BenchFloorSkelBuilder};

/// bench_floor.bpf.c's hash_mode that sets skb->hash.
const HASH_SET: u32 = 1;
/// Bytes of struct __sk_buff given and taken back (at least its size), and
/// where its `priority` is.
const CTX_LEN: usize = 256;
const CTX_PRIORITY: usize = 32;

pub struct Harness<'o> {
    pdscp: PdscpSkel<'o>,
    floor: BenchFloorSkel<'o>,
    prog: Prog,
}

/// What a test run gave back.
#[derive(Debug)]
pub enum Outcome {
    /// BPF_PROG_TEST_RUN refused the packet (EINVAL): nothing ran.
    Refused,
    Ran {
        ret: i32,
        data: Vec<u8>,
        priority: u32,
        maps: Model,
    },
}

impl<'o> Harness<'o> {
    pub fn load(objects: &'o mut [MaybeUninit<OpenObject>; 2], prog: Prog) -> Result<Self> {
        let [o1, o2] = objects;
        let pdscp = PdscpSkelBuilder::default()
            .open(o1)
            .context("opening pdscp's BPF object")?
            .load()
            .context("loading pdscp's programs (needs root)")?;
        let floor = BenchFloorSkelBuilder::default()
            .open(o2)?
            .load()
            .context("loading bpf/bench_floor.bpf.c")?;
        let h = Harness { pdscp, floor, prog };
        // bench_trampoline tail-calls the program under test.
        let fd = h.program().as_fd().as_raw_fd();
        h.floor
            .maps
            .target
            .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)?;
        Ok(h)
    }

    fn program(&self) -> &libbpf_rs::ProgramMut<'o> {
        let progs = &self.pdscp.progs;
        match self.prog {
            Prog::Reader => &progs.pdscp_reader,
            Prog::Writer => &progs.pdscp_writer,
            Prog::Ingress => &progs.pdscp_ingress,
        }
    }

    /// Sets the maps for `case` (`initial`: flows and reflect), runs the
    /// program once, reads the maps back and empties flows and reflect.
    pub fn run(&mut self, case: &Case, initial: &Model) -> Result<Outcome> {
        self.set_maps(case, initial)?;
        let via = match case.setup.hash {
            Some(hash) => {
                let bss = self
                    .floor
                    .maps
                    .bss_data
                    .as_deref_mut()
                    .context("bench_floor's .bss is not mapped")?;
                (bss.hash_mode, bss.hash, bss.hash_step, bss.restore_on) = (HASH_SET, hash, 0, 0);
                &self.floor.progs.bench_trampoline
            }
            None => self.program(),
        };
        let mut ctx_in = [0u8; CTX_LEN];
        ctx_in[CTX_PRIORITY..CTX_PRIORITY + 4].copy_from_slice(&case.setup.priority.to_ne_bytes());
        let mut ctx_out = [0u8; CTX_LEN];
        let mut data_out = vec![0u8; case.bytes.len() + 64];
        let input = ProgramInput {
            data_in: Some(&case.bytes),
            data_out: Some(&mut data_out),
            context_in: Some(&mut ctx_in),
            context_out: Some(&mut ctx_out),
            repeat: 1,
            ..Default::default()
        };
        let ran = via.test_run(input);
        let outcome = match ran {
            Err(e) if e.kind() == ErrorKind::InvalidInput => Outcome::Refused,
            Err(e) => return Err(e).context("BPF_PROG_TEST_RUN"),
            Ok(out) => Outcome::Ran {
                ret: out.return_value as i32,
                data: out.data.context("no data out")?.to_vec(),
                priority: u32::from_ne_bytes(ctx_out[CTX_PRIORITY..CTX_PRIORITY + 4].try_into()?),
                maps: Model::default(),
            },
        };
        let maps = self.drain()?;
        Ok(match outcome {
            Outcome::Ran {
                ret, data, priority, ..
            } => Outcome::Ran {
                ret,
                data,
                priority,
                maps,
            },
            Outcome::Refused => {
                ensure!(maps == *initial, "maps changed although nothing ran");
                Outcome::Refused
            }
        })
    }

    /// devices, tunnels, uplinks and ports as pdscp records tunnel A (slot 0,
    /// port PORT_A, link row 1) and B (slot 1, PORT_B, row 2) on uplink slot
    /// 0, all on the test run's device; flows and reflect from `initial`.
    fn set_maps(&self, case: &Case, initial: &Model) -> Result<()> {
        let s = &case.setup;
        let maps = &self.pdscp.maps;
        let l2 = u8::from(s.l2(case.ethernet()));
        let dev = types::dev_slot {
            roles: s.roles,
            l2,
            tunnel_flags: s.a.flags | flag::IN_USE,
            uplink: 0,
            tunnel: 0,
            port: s.a.port(PORT_A).to_be(),
        };
        maps.devices
            .update(&IFINDEX.to_ne_bytes(), as_bytes(&dev), MapFlags::ANY)?;
        let a = tunnel_rec(&s.a, PORT_A, 1, 3, l2);
        let b =
            s.b.as_ref()
                .map_or_else(types::tunnel_rec::default, |b| tunnel_rec(b, PORT_B, 2, 1, l2));
        for (slot, rec) in [(0u32, a), (1, b)] {
            maps.tunnels
                .update(&slot.to_ne_bytes(), as_bytes(&rec), MapFlags::ANY)?;
        }
        let (major, tins) = s.cake.unwrap_or((0, [0; 64]));
        let up = types::uplink_rec {
            in_use: 1,
            l2,
            mode: 2,
            ifindex: IFINDEX,
            priority_major: major,
            tin_of: tins,
            ..Default::default()
        };
        maps.uplinks
            .update(&0u32.to_ne_bytes(), as_bytes(&up), MapFlags::ANY)?;

        // ports: tunnel slot + 1 by source port; [0][0] counts --any-port tunnels.
        let mut blocks = [
            (0u16, [0u16; 256]),
            (PORT_A >> 8, [0; 256]),
            (PORT_B >> 8, [0; 256]),
        ];
        let mut set = |port: u16, value: u16| {
            for (block, ports) in blocks.iter_mut() {
                if *block == port >> 8 {
                    ports[usize::from(port & 0xff)] += value;
                }
            }
        };
        for (slot, t, port) in [(0, Some(&s.a), PORT_A), (1, s.b.as_ref(), PORT_B)] {
            match t {
                Some(t) if t.any_port => set(0, 1),
                Some(_) => set(port, slot + 1),
                None => {}
            }
        }
        for (block, tunnel) in blocks {
            let value = types::port_block { tunnel };
            maps.ports
                .update(&u32::from(block).to_ne_bytes(), as_bytes(&value), MapFlags::ANY)?;
        }

        for (k, v) in &initial.flows {
            maps.flows
                .update(&flow_key(k), &flow_mark(v), MapFlags::NO_EXIST)?;
        }
        for (k, v) in &initial.reflect {
            maps.reflect
                .update(&reflect_key(k), &[v.out, v.inn, 0, 0], MapFlags::NO_EXIST)?;
        }
        Ok(())
    }

    /// The flows and reflect entries, which are then deleted.
    fn drain(&self) -> Result<Model> {
        let mut m = Model::default();
        for (k, v) in drain(&self.pdscp.maps.flows)? {
            ensure!(
                k.len() == 8 && k[6..] == [0, 0] && v.len() == 4,
                "odd flow entry {k:?} {v:?}"
            );
            let key = FlowKey {
                hash: u32::from_ne_bytes(k[..4].try_into()?),
                port: u16::from_be_bytes([k[4], k[5]]),
            };
            let mark = FlowMark {
                dscp: v[0],
                tunnel: u16::from_ne_bytes([v[2], v[3]]),
            };
            ensure!(v[1] == 0, "flow entry with padding {v:?}");
            m.flows.insert(key, mark);
        }
        for (k, v) in drain(&self.pdscp.maps.reflect)? {
            ensure!(k.len() == 40 && v.len() == 4, "odd reflect entry {k:?} {v:?}");
            let key = ReflectKey {
                tunnel: u16::from_ne_bytes([k[0], k[1]]),
                proto: k[2],
                v6: match k[3] {
                    0 => false,
                    1 => true,
                    x => bail!("reflect key with v6 = {x}"),
                },
                lo: (k[8..24].try_into()?, u16::from_be_bytes([k[4], k[5]])),
                hi: (k[24..40].try_into()?, u16::from_be_bytes([k[6], k[7]])),
            };
            ensure!(v[2..] == [0, 0], "reflect entry with padding {v:?}");
            m.reflect.insert(key, ReflectMark { out: v[0], inn: v[1] });
        }
        Ok(m)
    }
}

fn tunnel_rec(t: &Tunnel, port: u16, row: u16, elsewhere: usize, l2: u8) -> types::tunnel_rec {
    let mut rec = types::tunnel_rec {
        dscp_map: t.map,
        reflect_allow: t.allow,
        flags: t.flags | flag::IN_USE,
        fixed_dscp: t.fixed,
        handshake_dscp: t.handshake,
        l2,
        ifindex: IFINDEX,
        port: t.port(port).to_be(),
        reader_mode: 2,
        ingress_mode: 2,
        ..Default::default()
    };
    rec.links[if t.here { 0 } else { elsewhere }] = row;
    rec
}

fn flow_key(k: &FlowKey) -> Vec<u8> {
    let mut b = k.hash.to_ne_bytes().to_vec();
    b.extend_from_slice(&k.port.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b
}

fn flow_mark(v: &FlowMark) -> Vec<u8> {
    let mut b = vec![v.dscp, 0];
    b.extend_from_slice(&v.tunnel.to_ne_bytes());
    b
}

/// struct reflect_key: tunnel, proto, v6, port_lo, port_hi (network order),
/// addr_lo, addr_hi.
fn reflect_key(k: &ReflectKey) -> Vec<u8> {
    let mut b = k.tunnel.to_ne_bytes().to_vec();
    b.extend_from_slice(&[k.proto, u8::from(k.v6)]);
    b.extend_from_slice(&k.lo.1.to_be_bytes());
    b.extend_from_slice(&k.hi.1.to_be_bytes());
    b.extend_from_slice(&k.lo.0);
    b.extend_from_slice(&k.hi.0);
    b
}

fn drain(map: &MapMut<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    let mut entries = Vec::with_capacity(keys.len());
    for k in keys {
        if let Some(v) = map.lookup(&k, MapFlags::ANY)? {
            entries.push((k.clone(), v));
        }
        map.delete(&k)?;
    }
    Ok(entries)
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: T is plain old data from the skeleton, built from Default
    // (padding zeroed); any byte pattern may be read.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}
