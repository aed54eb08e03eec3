//! Reflection on real WireGuard, both directions, with CAKE shaping the
//! client's downloads on an ifb behind the tunnel's ingress.

use std::net::TcpListener;
use std::path::PathBuf;
use std::thread;

use super::*;

const EF: u8 = 0xb8;
const AF41: u8 = 0x88;

/// CAKE diffserv4's tins in `tc -s` order: Bulk, Best Effort, Video, Voice.
const BEST_EFFORT: usize = 1;
const VIDEO: usize = 2;

/// The client a, the concentrator b with the internet behind it.
fn world() -> (TestBed, Wg, Internet) {
    let bed = wireguard_bed();
    let wg = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    let inet = Internet::behind_b(&bed, "wg0", wg.v4_b, wg.v6_b);
    (bed, wg, inet)
}

/// A download of `bytes` from I to a, a's socket marked `tos` (its SYN too).
fn download(bed: &TestBed, inet: &Internet, tos: u8, bytes: usize) {
    let listener = inet
        .ns
        .run_in("listen", || TcpListener::bind((I_V4, 5300)).expect("bind"));
    let server = thread::spawn(move || {
        use std::io::Write;
        let (mut c, _) = listener.accept().expect("accept");
        c.write_all(&vec![7u8; bytes]).expect("send download");
    });
    let got = bed.a.run_in("download", move || {
        use std::io::Read;
        let mut c = tcp_connect((I_V4, 5300).into(), tos);
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).expect("read");
        buf.len()
    });
    server.join().expect("server");
    assert_eq!(got, bytes, "download");
}

/// `--reflect in` on a: a download marked by nothing but a's AF41 ACKs
/// lands in CAKE's Video tin on the ifb that shapes wg0's ingress; without
/// reflection, in Best Effort.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn client_reflection_puts_downloads_in_cakes_video_tin() {
    let (bed, _wg, inet) = world();
    bed.a.sh("set -e
         ip link add ifb0 type ifb
         ip link set ifb0 up
         tc qdisc add dev ifb0 root cake diffserv4");
    ensure_clsact(&bed.a, "wg0");
    // As sqm-scripts does on clsact: every arrival of wg0 shaped on ifb0.
    bed.a.sh("tc filter add dev wg0 ingress prio 10 protocol all u32 match u32 0 0 action mirred egress redirect dev ifb0");
    let bytes = 512 << 10;
    let mut seen = Vec::new();
    for reflect in [false, true] {
        if reflect {
            let msg = ok(bed.pdscp(&["attach", "wg0", "--reflect", "in"]));
            assert!(msg.contains("attached to up0"), "{msg}");
        }
        let before = cake_tin_bytes(&bed.a, "ifb0");
        download(&bed, &inet, AF41, bytes);
        let after = cake_tin_bytes(&bed.a, "ifb0");
        let moved: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let (tin, other) = if reflect {
            (VIDEO, BEST_EFFORT)
        } else {
            (BEST_EFFORT, VIDEO)
        };
        assert!(
            moved[tin] >= bytes as u64,
            "reflect {reflect}: tin {tin} got {moved:?}"
        );
        assert!(
            moved[other] < bytes as u64 / 10,
            "reflect {reflect}: tin {other} got {moved:?}"
        );
        seen.push(format!("reflect {reflect}: tins {moved:?}"));
    }
    let s = status(&bed);
    assert!(
        s["tunnels"][0]["counters"]["reflected_in_by_dscp"]["34"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{s:#}"
    );
    eprintln!(
        "CAKE diffserv4 on ifb0 (Bulk, Best Effort, Video, Voice) bytes: {}",
        seen.join("; ")
    );
}

/// `--reflect out` on b: I's unmarked answers to a's EF requests leave b
/// marked EF outside, and a's socket receives them marked.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn concentrator_reflection_marks_answers_on_wireguard() {
    let (bed, wg, inet) = world();
    let s_root = PathBuf::from(format!("{}-s", bed.pin_root.display()));
    let s = |args: &[&str]| ok(run_cmd(pdscp_cmd(&s_root, Some(&bed.b), args)));
    for reflect in [false, true] {
        if reflect {
            s(&["attach", "wg0", "--reflect", "out"]);
        }
        for v6 in [false, true] {
            let cap = Capture::start(&bed.a, UPLINK);
            let server = inet.echo(v6, 7000, 0, 4);
            let got = ask_from(&bed.a, v6, 7000, &[EF; 4]);
            assert_eq!(server.join().expect("echo"), 4);
            let want = if reflect { EF } else { 0 };
            assert_eq!(
                got, [want; 4],
                "reflect {reflect}, v6 {v6}: answers as a receives them"
            );
            // b's data messages to a: the answers among them.
            let from_b: Vec<Outer> = data_from_a(&cap.stop(), &reverse(&wg), false);
            let len = wg_len(if v6 { 48 } else { 28 } + "request 0".len(), wg.mtu);
            let answers: Vec<&Outer> = from_b.iter().filter(|p| p.len == len).collect();
            assert_eq!(answers.len(), 4, "reflect {reflect}, v6 {v6}: {from_b:#?}");
            assert!(
                answers.iter().all(|p| p.tos & 0xfc == want),
                "reflect {reflect}, v6 {v6}: {answers:#?}"
            );
        }
    }
    s(&["detach", "--all"]);
    let _ = std::fs::remove_dir_all(&s_root);
}

/// The same tunnel seen from b: its data messages to a.
fn reverse(wg: &Wg) -> Wg {
    Wg {
        port_a: wg.port_b,
        port_b: wg.port_a,
        outer_a: wg.outer_b,
        outer_b: wg.outer_a,
        ..wg.clone()
    }
}
