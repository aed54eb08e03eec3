//! Reflection: return traffic gets the mark its flow carried the other way.
//!
//! A (namespace `a`, the client) reaches the internet I (namespace `i`)
//! through the tunnel to the concentrator S (namespace `b`), which
//! masquerades A's inner addresses towards I (nftables). I answers unmarked.
//! `--reflect out` on S marks I's answers on their way into the tunnel;
//! `--reflect in` on A marks them as they come out of it.

use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use super::*;

const EF: u8 = 0xb8;
const AF41: u8 = 0x88;
const CS1: u8 = 0x20;
const CS6: u8 = 0xc0;

/// The client, the concentrator (with a pin root of its own: one pin root
/// serves one namespace) and the internet behind it.
struct World {
    bed: TestBed,
    inet: Internet,
    tunnel: Tunnel,
    s_root: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = run_cmd(pdscp_cmd(&self.s_root, Some(&self.bed.b), &["detach", "--all"]));
        let _ = std::fs::remove_dir_all(&self.s_root);
    }
}

fn world() -> World {
    let bed = TestBed::new();
    let tunnel = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
    let inet = Internet::behind_b(&bed, "wg0", tunnel.inner_v4_b, tunnel.inner_v6_b);
    let s_root = PathBuf::from(format!("{}-s", bed.pin_root.display()));
    World {
        bed,
        inet,
        tunnel,
        s_root,
    }
}

impl World {
    /// pdscp on the concentrator.
    fn s(&self, args: &[&str]) -> String {
        ok(run_cmd(pdscp_cmd(&self.s_root, Some(&self.bed.b), args)))
    }

    fn attach_s(&self, mode: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "attach", "wg0", "--uplink", UPLINK, "--port", "51820", "--mode", mode,
        ];
        args.extend(extra);
        self.s(&args)
    }

    fn attach_a(&self, mode: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "attach", "wg0", "--uplink", UPLINK, "--port", "51820", "--mode", mode,
        ];
        args.extend(extra);
        ok(self.bed.pdscp(&args))
    }
}

fn echo_on_i(w: &World, v6: bool, port: u16, reply_tos: u8, count: usize) -> thread::JoinHandle<usize> {
    w.inet.echo(v6, port, reply_tos, count)
}

fn ask_from_a(w: &World, v6: bool, port: u16, tos: &[u8]) -> Vec<u8> {
    ask_from(&w.bed.a, v6, port, tos)
}

/// Outer packets S sent to A on the uplink.
fn from_s(frames: &[Vec<u8>], t: &Tunnel) -> Vec<TunnelPacket> {
    parse_all(frames)
        .into_iter()
        .filter(|p| p.outer_src == IpAddr::from(B_V4) && p.vni == t.vni)
        .collect()
}

/// S with `--reflect out`: I's unmarked answers to EF and AF41 requests
/// leave S marked EF and AF41, outside and inside; without reflection, 0.
fn concentrator_marks_answers(mode: &str) {
    let w = world();
    for reflect in [false, true] {
        let extra: &[&str] = if reflect { &["--reflect", "out"] } else { &[] };
        w.attach_s(mode, extra);
        for v6 in [false, true] {
            let what = format!("{mode}, reflect out {reflect}, inner v6 {v6}");
            let cap = Capture::start(&w.bed.a, UPLINK);
            let server = echo_on_i(&w, v6, 7000, 0, 6);
            let got = ask_from_a(&w, v6, 7000, &[EF, EF, EF, AF41, AF41, AF41]);
            assert_eq!(server.join().expect("echo"), 6);
            let want: Vec<u8> = if reflect {
                vec![EF, EF, EF, AF41, AF41, AF41]
            } else {
                vec![0; 6]
            };
            // The first AF41 answer may still carry EF: the mark follows within one round trip.
            assert_eq!(
                got[..3],
                want[..3],
                "{what}: answers to EF requests, as A receives them"
            );
            assert_eq!(got[4..], want[4..], "{what}: answers to AF41 requests");
            let outer: Vec<u8> = from_s(&cap.stop(), &w.tunnel)
                .iter()
                .filter(|p| p.inner_proto == IPPROTO_UDP)
                .map(|p| p.outer_dscp())
                .collect();
            assert_eq!(outer.len(), 6, "{what}: answers on the wire");
            let want_outer: Vec<u8> = want.iter().map(|t| t >> 2).collect();
            assert_eq!(
                (outer[..3].to_vec(), outer[4..].to_vec()),
                (want_outer[..3].to_vec(), want_outer[4..].to_vec()),
                "{what}: outer DSCP"
            );
        }
    }
    // ICMP echo: the identifier stands for the ports; replies as marked as the requests.
    for v6 in [false, true] {
        let cap = Capture::start(&w.bed.a, UPLINK);
        let out = ping(&w.bed.a, Internet::addr(v6), EF, 3);
        assert!(out.status.success(), "{}", output_text(&out));
        let proto = if v6 { 58 } else { 1 };
        let replies: Vec<u8> = from_s(&cap.stop(), &w.tunnel)
            .iter()
            .filter(|p| p.inner_proto == proto)
            .map(|p| p.outer_dscp())
            .collect();
        assert_eq!(
            replies,
            [46; 3],
            "{mode}: ping{} replies leave S marked",
            if v6 { "6" } else { "" }
        );
    }
    let s = status_at(&w.s_root, &w.bed.b);
    let reflected = &s["tunnels"][0]["counters"]["reflected_out_by_dscp"];
    assert!(
        reflected["46"].as_u64().unwrap_or(0) >= 12 && reflected["34"].as_u64().unwrap_or(0) >= 4,
        "{s:#}"
    );
    assert!(s["reflect"]["entries"].as_u64().unwrap_or(0) >= 2, "{s:#}");
    eprintln!(
        "reflect out {mode}: 12 UDP answers (6 v4, 6 v6) and 6 echo replies answered unmarked by I; \
         reflected by S per DSCP: {reflected}; without --reflect all 12 UDP answers left with 0"
    );
    // --reflect off removes it again without a detach, and leaves nothing behind.
    w.attach_s(mode, &["--reflect", "off"]);
    let s = status_at(&w.s_root, &w.bed.b);
    assert_eq!(
        (
            s["reflect"]["entries"].as_u64(),
            s["tunnels"][0]["reflection"]["mode"].as_str()
        ),
        (Some(0), Some("off")),
        "{s:#}"
    );
    assert!(
        pdscp_hooks(&w.bed.b).iter().all(|h| !h.how.contains("ingress")),
        "{:?}",
        pdscp_hooks(&w.bed.b)
    );
    let server = echo_on_i(&w, false, 7000, 0, 1);
    assert_eq!(ask_from_a(&w, false, 7000, &[EF]), [0], "after --reflect off");
    server.join().expect("echo");
}

#[test]
fn concentrator_reflects_marks_onto_answers_tcx() {
    concentrator_marks_answers("tcx");
}

#[test]
fn concentrator_reflects_marks_onto_answers_tc() {
    concentrator_marks_answers("tc");
}

/// What reflection must not do: an answer I marks itself keeps its mark;
/// CS6 from A is not reflected (the far end may not raise traffic above
/// its station); --reflect-override lets reflection win; --reflect-allow
/// lists what may be reflected.
#[test]
fn own_marks_win_and_cs6_is_never_reflected_by_default() {
    let w = world();
    w.attach_s("auto", &["--reflect", "out"]);
    let server = echo_on_i(&w, false, 7001, CS1, 3);
    assert_eq!(
        ask_from_a(&w, false, 7001, &[EF, EF, EF]),
        [CS1; 3],
        "I's own CS1 wins"
    );
    server.join().expect("echo");
    let server = echo_on_i(&w, false, 7002, 0, 3);
    assert_eq!(
        ask_from_a(&w, false, 7002, &[CS6, CS6, CS6]),
        [0; 3],
        "CS6 is not reflected"
    );
    server.join().expect("echo");

    w.attach_s(
        "auto",
        &[
            "--reflect",
            "out",
            "--reflect-override",
            "--reflect-allow",
            "ef,cs6",
        ],
    );
    let server = echo_on_i(&w, false, 7003, CS1, 3);
    assert_eq!(
        ask_from_a(&w, false, 7003, &[EF, EF, EF]),
        [EF; 3],
        "override: reflection wins over CS1"
    );
    server.join().expect("echo");
    let server = echo_on_i(&w, false, 7004, 0, 3);
    assert_eq!(
        ask_from_a(&w, false, 7004, &[CS6, CS6, CS6]),
        [CS6; 3],
        "cs6 listed"
    );
    server.join().expect("echo");
    let server = echo_on_i(&w, false, 7005, 0, 3);
    assert_eq!(
        ask_from_a(&w, false, 7005, &[AF41, AF41, AF41]),
        [0; 3],
        "af41 not listed"
    );
    server.join().expect("echo");
}

/// A on its own (`--reflect in`): S returns unmarked inner packets; as they
/// come out of A's tunnel they carry the mark their flow left with: for the
/// application's socket (UDP over IPv4 and IPv6, ICMP echo), and for a
/// TCP download, whose segments a classifier on an ifb behind the tunnel's
/// ingress counts.
fn client_marks_arrivals(mode: &str) {
    let w = world();
    w.attach_a(mode, &["--reflect", "in"]);
    for v6 in [false, true] {
        let server = echo_on_i(&w, v6, 7010, 0, 4);
        assert_eq!(
            ask_from_a(&w, v6, 7010, &[EF, EF, AF41, AF41])[..2],
            [EF, EF],
            "{mode}: v6 {v6}"
        );
        server.join().expect("echo");
    }
    // ICMP echo: the reply is marked as the request was (ping shows the
    // reply's TOS only in verbose mode; the ifb counter below checks TCP).
    let out = ping(&w.bed.a, Internet::addr(false), EF, 3);
    assert!(out.status.success(), "{}", output_text(&out));

    // A TCP download from I marked by nothing but A's ACKs (AF41), counted
    // by a classifier on an ifb that the tunnel's ingress redirects to (as
    // sqm-scripts shapes downloads), behind pdscp's program.
    w.bed.a.sh("ip link add ifb0 type ifb && ip link set ifb0 up");
    ensure_clsact(&w.bed.a, "wg0");
    w.bed.a.sh("tc filter add dev wg0 ingress prio 10 protocol all u32 match u32 0 0 action mirred egress redirect dev ifb0");
    tc_filter_add_dscp_counter(&w.bed.a, "ifb0", TcDir::Egress, 10, AF41 >> 2);
    let bytes = 256 << 10;
    let listener = w
        .inet
        .ns
        .run_in("listen", || TcpListener::bind((I_V4, 5300)).expect("bind"));
    let server = thread::spawn(move || {
        use std::io::Write;
        let (mut c, _) = listener.accept().expect("accept");
        c.write_all(&vec![7u8; bytes]).expect("send download");
    });
    let got = w.bed.a.run_in("download", move || {
        use std::io::Read;
        let mut c = tcp_connect((I_V4, 5300).into(), AF41);
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).expect("read");
        buf.len()
    });
    server.join().expect("server");
    assert_eq!(got, bytes);
    // Whole GRO packets count, so bytes: at least the download's.
    let af41_bytes = tc_filter_bytes(&w.bed.a, "ifb0", TcDir::Egress, 10);
    assert!(
        af41_bytes as usize >= bytes,
        "{mode}: {af41_bytes} bytes marked AF41 behind the tunnel's ingress"
    );
    let s = status(&w.bed);
    let reflected = &s["tunnels"][0]["counters"]["reflected_in_by_dscp"];
    assert!(
        reflected["34"].as_u64().unwrap_or(0) >= (bytes / 1500) as u64,
        "{s:#}"
    );
    eprintln!(
        "reflect in {mode}: a {bytes}-byte download sent unmarked; {af41_bytes} bytes counted AF41 behind \
         the tunnel's ingress; reflected by A per DSCP: {reflected}"
    );
}

#[test]
fn client_reflects_marks_onto_arrivals_tcx() {
    client_marks_arrivals("tcx");
}

#[test]
fn client_reflects_marks_onto_arrivals_tc() {
    client_marks_arrivals("tc");
}

/// 20 000 short flows from A leave S's reflection state at its bound (an
/// LRU of --reflect-size entries).
#[test]
fn twenty_thousand_short_flows_stay_within_the_bound() {
    let w = world();
    w.attach_s("auto", &["--reflect", "out", "--reflect-size", "1024"]);
    w.bed.a.run_in("many flows", || {
        for i in 0..20_000u32 {
            let sock = marked_udp_socket(I_V4.into(), EF);
            sock.send_to(&i.to_be_bytes(), (I_V4, 7100)).expect("send");
            if i % 500 == 0 {
                thread::sleep(Duration::from_millis(20));
            }
        }
    });
    thread::sleep(Duration::from_millis(300));
    let s = status_at(&w.s_root, &w.bed.b);
    let (entries, capacity) = (
        s["reflect"]["entries"].as_u64().unwrap(),
        s["reflect"]["capacity"].as_u64().unwrap(),
    );
    let learned = s["tunnels"][0]["counters"]["reflections_learned"]
        .as_u64()
        .unwrap();
    assert_eq!(capacity, 1024, "{s:#}");
    assert!(
        entries <= capacity && entries >= capacity / 2,
        "{entries} of {capacity}: {s:#}"
    );
    assert!(learned >= 19_000, "learned {learned} flows: {s:#}");
    // Detaching leaves nothing behind.
    w.s(&["detach", "wg0"]);
    assert!(listing(&w.s_root).is_empty(), "{:?}", listing(&w.s_root));
}
