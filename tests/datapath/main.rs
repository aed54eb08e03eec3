//! Properties of the datapath: pdscp's three programs (bpf/pdscp.bpf.c) run
//! with BPF_PROG_TEST_RUN on generated packets, checked against an oracle
//! written here (oracle.rs) from the documented rules. Needs root; loads the
//! skeleton once per test and never pins, attaches or touches a device.
//!
//! For every case: the program returns TC_ACT_UNSPEC (-1); a packet that is
//! not an attached tunnel's outer UDP packet with a mark to give (writer),
//! or whose flow has no reflected mark to take (reader, ingress), comes out
//! byte for byte unchanged; a rewritten one differs only in the DSCP bits of
//! the header the oracle names (and the IPv4 checksum, which stays valid),
//! and carries the DSCP the oracle expects; skb->priority, the flows map and
//! the reflect map end as the oracle says (check.rs).
//!
//! Packets (gen.rs, packet.rs): Ethernet with 0-3 in-band 802.1Q/802.1ad
//! tags, or none (L3 devices); IPv4 with options, fragments (first and
//! later), lying IHL, version or checksum; IPv6 with extension headers;
//! UDP (WireGuard handshakes and data, a lying length, shorter than its
//! header), TCP, ICMP and ICMPv6 echo and others; other ethertypes; random
//! bytes; any of them truncated anywhere or with bytes flipped. Maps: tunnel
//! A in slot 0 (link row 1 on uplink slot 0) with any mix of flags, maybe
//! tunnel B in slot 1, --any-port tunnels, tunnels attached elsewhere, flow
//! entries for the skb's hash and others, reflect entries for the packet's
//! flow and others, marks above 63. Two cases in five are aimed (a whole,
//! well-formed packet on the program's own device), so that about one in
//! eight reaches a rewrite; the others stray anywhere.
//!
//! Besides the generated cases: packets each program must rewrite, cut at
//! every length (truncation.rs), and IPv4 checksum updates at the corners of
//! one's complement arithmetic, too rare to come up by chance (checksum.rs).
//!
//! What BPF_PROG_TEST_RUN allows (net/bpf/test_run.c), and what follows:
//! - The skb is built on `lo` (ifindex 1), so the programs find their
//!   device at devices[1].
//! - Packets shorter than 14 bytes (ETH_HLEN) are refused with EINVAL, and
//!   on newer kernels (6.18 here) so are packets whose skb->protocol is IPv4
//!   or IPv6 but too short for 14 bytes and that header: those are checked
//!   to run nothing (the maps stay as they were). So a cut inside the IP
//!   header reaches the programs only behind a VLAN tag (skb->protocol
//!   802.1Q/802.1ad) or under another ethertype, never on an L3 device.
//! - skb->protocol is always eth_type_trans() of bytes 0-13, and skb->data
//!   is byte 0 for a tc program. An L3 device (dev_slot.l2 = 0) reads the IP
//!   header at byte 0 and trusts skb->protocol, so an L3 packet is tested
//!   faithfully exactly when its own bytes 12-13 spell its ethertype: the
//!   IPv4 source address starting 8.0 (0x0800), the IPv6 source address's
//!   bytes 4-5 being 0x86dd. The generator builds most L3 packets so
//!   (`Link::Bare { fit: true }`); the others, and random bytes, give an
//!   skb->protocol that disagrees with the packet, as a confused device might.
//!   Nothing else of an L3 skb can be had: the flow dissector still reads
//!   from byte 14, so a directly run reader stores an unknown hash.
//! - skb->hash cannot be preset (EINVAL): a direct run has hash 0. Cases with
//!   a hash go through bench_trampoline (bpf/bench_floor.bpf.c), which sets
//!   it and tail-calls the program; the others run the program directly.
//! - skb->priority comes in and out through the context (struct __sk_buff).
//!
//! Seeded: `PDSCP_PROPTEST_SEED=<n>` repeats a run (the seed is printed on
//! failure, with the shrunk case), `PROPTEST_CASES=<n>` sets the cases per
//! program.

mod case;
mod check;
mod checksum;
mod gen;
mod harness;
mod oracle;
mod packet;
mod parse;
mod truncation;

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::time::Instant;

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use case::Case;
use check::Seen;
use harness::{Harness, Outcome};
use packet::hex;

/// The test run's device: `lo`.
pub const IFINDEX: u32 = 1;
/// Outer UDP source ports of tunnels A and B.
pub const PORT_A: u16 = 51820;
pub const PORT_B: u16 = 4500;
/// Cases per program unless PROPTEST_CASES says otherwise.
const CASES: u32 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    Reader,
    Writer,
    Ingress,
}

#[test]
fn writer_properties() {
    properties(Prog::Writer);
}

#[test]
fn reader_properties() {
    properties(Prog::Reader);
}

#[test]
fn ingress_properties() {
    properties(Prog::Ingress);
}

/// Runs one case: the oracle's expectation, the program, the checks.
pub fn run_case(h: &mut Harness<'_>, case: &Case) -> Result<Seen, String> {
    let initial = oracle::initial(case);
    let exp = oracle::expect(case, &initial);
    let outcome = h.run(case, &initial).map_err(|e| format!("harness: {e:#}"))?;
    check::check(&case.bytes, &outcome, &exp).map_err(|why| {
        let out = match &outcome {
            Outcome::Ran { ret, data, .. } => format!("returned {ret}, packet out:\n{}", hex(data)),
            Outcome::Refused => "refused".into(),
        };
        format!("{why}\nexpected: {exp:?}\n{out}")
    })
}

/// How many cases came out each way.
#[derive(Debug, Default)]
struct Tally {
    refused: u32,
    unchanged: u32,
    rewritten: u32,
    kept: u32,
    priority: u32,
}

/// Runs in a thread of its own: the strategies' value trees are large for
/// the test threads' default stack in debug builds.
fn properties(prog: Prog) {
    let thread = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || check_properties(prog))
        .expect("spawning the test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn check_properties(prog: Prog) {
    let seed = seed();
    let mut config = Config::default(); // PROPTEST_CASES, if set
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    config.failure_persistence = None;
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed, prog));
    let mut runner = TestRunner::new_with_rng(config.clone(), rng);
    let mut objects = [const { MaybeUninit::uninit() }; 2];
    let harness = RefCell::new(Harness::load(&mut objects, prog).expect("loading the programs"));
    let tally = RefCell::new(Tally::default());
    let start = Instant::now();
    let result = runner.run(&gen::case(prog), |case| {
        let seen = run_case(&mut harness.borrow_mut(), &case).map_err(TestCaseError::fail)?;
        let mut t = tally.borrow_mut();
        match seen {
            Seen::Refused => t.refused += 1,
            Seen::Unchanged => t.unchanged += 1,
            Seen::Rewritten => t.rewritten += 1,
            Seen::Kept => t.kept += 1,
            Seen::Priority => t.priority += 1,
        }
        Ok(())
    });
    let name = format!("{prog:?}_properties").to_lowercase();
    let again = format!("PDSCP_PROPTEST_SEED={seed} cargo test --test datapath {name}");
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, case)) => {
            panic!("{prog:?}, seed {seed}: {why}\nshrunk case: {case:?}\nagain: {again}")
        }
        Err(e) => panic!("{prog:?}, seed {seed}: {e}\nagain: {again}"),
    }
    let t = tally.into_inner();
    println!(
        "{prog:?}: {} cases in {:.1?}, seed {seed}: {t:?}",
        config.cases,
        start.elapsed()
    );
    // The generators must keep reaching the programs' work, not only their
    // early exits (about 12% of cases are rewrites).
    let cases = config.cases;
    assert!(
        cases < 1000 || (t.rewritten >= cases / 16 && t.unchanged >= cases / 4),
        "{prog:?}: too few cases of one kind: {t:?} (seed {seed})"
    );
}

/// PDSCP_PROPTEST_SEED, or a new seed.
fn seed() -> u64 {
    match std::env::var("PDSCP_PROPTEST_SEED") {
        Ok(s) => s.parse().expect("PDSCP_PROPTEST_SEED must be a number"),
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            splitmix(now.as_nanos() as u64 ^ u64::from(std::process::id()))
        }
    }
}

/// ChaCha's 32-byte seed from one seed, distinct per program.
fn seed_bytes(seed: u64, prog: Prog) -> Vec<u8> {
    let mut x = seed ^ (prog as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..4)
        .flat_map(|_| {
            x = splitmix(x);
            x.to_le_bytes()
        })
        .collect()
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
