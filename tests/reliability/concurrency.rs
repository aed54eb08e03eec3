//! Concurrency: many pdscp commands at once end as the last one asked.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Output};
use std::sync::Barrier;
use std::thread;

use serde_json::Value;

use super::*;

/// A small deterministic PRNG (xorshift64*) for shuffles.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Runs every command of `cmds` at once (behind a barrier), journaling to
/// `journal` (emptied first); returns their outputs in `cmds`' order.
fn all_at_once(bed: &TestBed, cmds: &[Vec<String>], journal: &std::path::Path) -> Vec<Output> {
    let _ = fs::remove_file(journal);
    let barrier = Barrier::new(cmds.len());
    thread::scope(|s| {
        let handles: Vec<_> = cmds
            .iter()
            .map(|args| {
                let mut cmd = pdscp_cmd(&bed.pin_root, Some(&bed.a), args);
                cmd.env("PDSCP_TEST_JOURNAL", journal);
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    run_cmd(cmd)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("command thread"))
            .collect()
    })
}

/// The journal's (verb, tunnel) lines, in lock order.
fn journal_entries(journal: &std::path::Path) -> Vec<(String, String)> {
    fs::read_to_string(journal)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (verb, name) = l.split_once(' ').unwrap_or_else(|| panic!("journal line {l:?}"));
            (verb.to_string(), name.to_string())
        })
        .collect()
}

/// 32 attach/detach commands on 8 tunnels over 2 uplinks (up0 in tcx mode,
/// up1 in tc mode), all started at once behind a barrier, twice. The end
/// state is exactly what the last command per tunnel (in the journal's lock
/// order) asked for: in the pins, in `status --json`, in `tc filter show`
/// (tc uplink), in the TCX links of the pinned reader (bpftool), and on the
/// wire. Without the lock, concurrent loads and pins collide (EEXIST) or
/// registry entries are lost.
#[test]
fn concurrent_commands_end_as_the_last_one_asked() {
    let bed = two_uplinks();
    let tunnels: Vec<(Tunnel, &str, &str)> = (0u8..8)
        .map(|i| {
            let (uplink, a_ip, b_ip, mode) = if i < 4 {
                (UPLINK, A_V4, B_V4, "tcx")
            } else {
                (UP1, UP1_A, UP1_B, "tc")
            };
            let name = format!("ct{i}");
            let spec = TunnelSpec {
                name: &name,
                vni: 200 + u32::from(i),
                srcport: 41000 + 2 * u16::from(i),
                lower: Some(uplink),
                a_ip,
                b_ip,
                inner: i + 1,
            };
            (bed.add_tunnel(&spec, false), uplink, mode)
        })
        .collect();
    let scratch = Scratch::new(&std::env::temp_dir(), "pdscp-journal");
    let journal = scratch.path().join("journal");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut attached: BTreeMap<String, bool> =
        tunnels.iter().map(|(t, ..)| (t.name.clone(), false)).collect();
    let mut commands = 0;
    for round in 0..2u16 {
        // Four commands per tunnel, attach or detach at random, in random order.
        let mut cmds: Vec<(usize, bool)> = (0..32).map(|k| (k % 8, rng.next() % 2 == 0)).collect();
        rng.shuffle(&mut cmds);
        let args: Vec<Vec<String>> = cmds
            .iter()
            .map(|&(i, is_attach)| {
                let (t, uplink, mode) = &tunnels[i];
                if is_attach {
                    attach_args(t, uplink, mode)
                } else {
                    vec!["detach".to_string(), t.name.clone()]
                }
            })
            .collect();
        let outs = all_at_once(&bed, &args, &journal);
        commands += outs.len();
        let mut not_attached_detaches = 0;
        for (out, &(i, is_attach)) in outs.into_iter().zip(&cmds) {
            let msg = ok(out);
            if !is_attach && msg.contains("not attached") {
                not_attached_detaches += 1;
            }
            assert!(msg.contains(&tunnels[i].0.name), "{msg}");
        }
        // The journal: one line per completed change, in lock order. A
        // detach that found no pin root at all (before any attach made it)
        // writes none: it came first, and changed nothing.
        let entries = journal_entries(&journal);
        let lines = format!("{entries:?}");
        let attaches = cmds.iter().filter(|c| c.1).count();
        assert_eq!(
            entries.iter().filter(|e| e.0 == "attach").count(),
            attaches,
            "every attach is journaled: {lines}"
        );
        assert!(
            cmds.len() - entries.len() <= not_attached_detaches,
            "only detaches of nothing go unjournaled: {lines}"
        );
        for (verb, name) in &entries {
            attached.insert(name.to_string(), verb == "attach");
        }

        let mut expected = Attached::new();
        for (t, uplink, _) in &tunnels {
            if attached[&t.name] {
                expected
                    .entry(uplink.to_string())
                    .or_default()
                    .insert(t.name.clone());
            }
        }
        assert_state(&bed, &expected, &format!("round {round}"));

        // tc uplink: pdscp_reader on exactly the attached tunnels, the writer
        // iff any is attached.
        let filters = |dev: &str| {
            bed.a
                .sh(&format!("tc filter show dev {dev} egress 2>/dev/null || true"))
        };
        let pdscp_tc = pdscp_hooks(&bed.a);
        let in_slot = |dev: &str, name: &str, pref: u64| {
            pdscp_tc
                .iter()
                .any(|h| h.dev == dev && h.how == "tc" && h.prog_name == name && h.pref == pref)
        };
        for (t, _uplink, mode) in &tunnels {
            if *mode == "tc" {
                assert_eq!(
                    filters(&t.name).contains("pdscp_reader"),
                    attached[&t.name],
                    "round {round}: tc filter on {}",
                    t.name
                );
                assert_eq!(
                    in_slot(&t.name, "pdscp_reader", PDSCP_PRIO_READER),
                    attached[&t.name],
                    "round {round}: reader at prio {PDSCP_PRIO_READER} on {}",
                    t.name
                );
            } else {
                let link = bed.pin_root.join("tunnels").join(&t.name).join("link");
                assert_eq!(
                    link.exists(),
                    attached[&t.name],
                    "round {round}: {}",
                    link.display()
                );
            }
        }
        assert_eq!(
            filters(UP1).contains("pdscp_writer") && in_slot(UP1, "pdscp_writer", PDSCP_PRIO_WRITER),
            expected.contains_key(UP1),
            "round {round}: writer on {UP1} at prio {PDSCP_PRIO_WRITER}"
        );
        // tcx uplink: the links of the pinned reader (bpftool) are exactly
        // the attached tunnels' (which device each is on: audit above).
        let tcx_attached = expected.get(UPLINK).map_or(0, |t| t.len());
        let reader_pin = bed.pin_root.join("progs").join("reader");
        let links_of_reader = if reader_pin.exists() {
            let out = run_cmd({
                let mut c = Command::new("bpftool");
                c.args(["-j", "prog", "show", "pinned"]).arg(&reader_pin);
                c
            });
            let prog: Value = serde_json::from_slice(&out.stdout).expect("bpftool prog json");
            let id = prog["id"].as_u64().expect("reader id");
            let out = run_cmd({
                let mut c = Command::new("bpftool");
                c.args(["-j", "link", "show"]);
                c
            });
            let links: Value = serde_json::from_slice(&out.stdout).expect("bpftool link json");
            links
                .as_array()
                .into_iter()
                .flatten()
                .filter(|l| l["prog_id"].as_u64() == Some(id))
                .count()
        } else {
            0
        };
        assert_eq!(
            links_of_reader, tcx_attached,
            "round {round}: TCX links of the reader"
        );

        // The wire: attached tunnels marked, the others not.
        let w = wire(&bed, &[UPLINK, UP1]);
        let dport = 9400 + round;
        for (t, ..) in &tunnels {
            send_ef(&bed, &[t], dport, 3);
        }
        let frames = w.stop();
        for (t, ..) in &tunnels {
            expect_marked_iff(&frames, t, dport, 3, attached[&t.name], &format!("round {round}"));
        }
        eprintln!(
            "concurrency round {round}: {} commands at once, {} journaled, end state {expected:?}",
            cmds.len(),
            entries.len()
        );
    }
    eprintln!("concurrency: {commands} commands in all");
}

/// 24 commands at once on 6 tunnels between the loopbacks, each attached to
/// both uplinks at once (half of them with reflection) or detached, while two bound tunnels keep up0 in tcx
/// and up1 in tc mode (so every attach meets both modes), twice. The end
/// state is what the last command per tunnel asked for, in the pins and
/// status, and on the wire with the route over up0 and then over up1.
#[test]
fn concurrent_commands_on_tunnels_sharing_two_uplinks_end_as_the_last_one_asked() {
    let bed = two_uplinks();
    let anchors = [
        bed.add_tunnel(&on("anc0", 500, 43100, UPLINK, A_V4, B_V4, 30), false),
        bed.add_tunnel(&on("anc1", 501, 43102, UP1, UP1_A, UP1_B, 31), false),
    ];
    attach(&bed, &anchors[0], UPLINK, "tcx");
    attach(&bed, &anchors[1], UP1, "tc");
    let tunnels: Vec<Tunnel> = (0u8..6)
        .map(|i| {
            bed.loopback_tunnel(
                &format!("mu{i}"),
                510 + u32::from(i),
                43000 + 2 * u16::from(i),
                40 + i,
            )
        })
        .collect();
    let scratch = Scratch::new(&std::env::temp_dir(), "pdscp-journal");
    let journal = scratch.path().join("journal");
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let mut attached: BTreeMap<String, bool> = tunnels.iter().map(|t| (t.name.clone(), false)).collect();
    for round in 0..2u16 {
        let mut cmds: Vec<(usize, bool)> = (0..24).map(|k| (k % 6, rng.next() % 2 == 0)).collect();
        rng.shuffle(&mut cmds);
        let args: Vec<Vec<String>> = cmds
            .iter()
            .map(|&(i, is_attach)| match is_attach {
                true => {
                    let mut args = attach_args_on(&tunnels[i], &[UPLINK, UP1], "auto");
                    // Half of them with reflection: a third hook, on the tunnel's ingress.
                    if i % 2 == 0 {
                        args.extend(["--reflect".to_string(), "both".to_string()]);
                    }
                    args
                }
                false => vec!["detach".to_string(), tunnels[i].name.clone()],
            })
            .collect();
        for out in all_at_once(&bed, &args, &journal) {
            ok(out);
        }
        for (verb, name) in journal_entries(&journal) {
            attached.insert(name, verb == "attach");
        }
        let mut expected = attached_map(&[(UPLINK, &["anc0"]), (UP1, &["anc1"])]);
        for t in tunnels.iter().filter(|t| attached[&t.name]) {
            for uplink in [UPLINK, UP1] {
                expected
                    .entry(uplink.to_string())
                    .or_default()
                    .insert(t.name.clone());
            }
        }
        assert_state(&bed, &expected, &format!("round {round}"));
        for (k, uplink) in [UPLINK, UP1].into_iter().enumerate() {
            bed.route_via(uplink);
            let w = wire(&bed, &[uplink]);
            let dport = 9500 + 2 * round + k as u16;
            let all: Vec<&Tunnel> = tunnels.iter().collect();
            send_ef(&bed, &all, dport, 3);
            let frames = w.stop();
            for t in &tunnels {
                let what = format!("round {round}, routed over {uplink}");
                expect_marked_iff(&frames, t, dport, 3, attached[&t.name], &what);
            }
        }
        bed.route_via(UPLINK);
        eprintln!("concurrency on two uplinks, round {round}: end state {expected:?}");
    }
}
