//! `pdscp check` on real WireGuard: a tunnel carrying EF passes, a probe
//! to an address of its peer's allowed IPs passes without other traffic,
//! and a reader taken away is named.

use std::thread::sleep;
use std::time::Duration;

use super::*;

const EF: u8 = 0xb8;

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn a_wireguard_tunnel_checks_ok_with_traffic_and_with_a_probe() {
    let bed = wireguard_bed();
    let wg = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    ok(bed.pdscp(&["attach", "wg0"]));
    let sender = SteadyUdp::start(&bed.a, wg.b_addr(false), 9700, EF, 200);
    sleep(Duration::from_millis(300));
    let (passed, text) = bed.check("wg0", &[]);
    sender.stop();
    assert!(passed, "with traffic:\n{text}");
    assert!(
        text.contains("from port 51820: ef "),
        "the wire shows EF:\n{text}"
    );
    eprintln!("check on WireGuard, with traffic:\n{text}");
    // Nothing else runs now: the probe's EF flow alone must pass.
    let (passed, text) = bed.check("wg0", &["--probe"]);
    assert!(passed, "with a probe:\n{text}");
    assert!(
        text.contains("probe: 100 ef packets sent to 192.0.2.1"),
        "allowed IPs 0.0.0.0/0:\n{text}"
    );
    eprintln!("check on WireGuard, probe only:\n{text}");
}

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn a_reader_taken_away_from_a_wireguard_tunnel_is_named() {
    let bed = wireguard_bed();
    let wg = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    ok(bed.pdscp(&["attach", "wg0", "--mode", "tc"]));
    bed.a
        .sh(&format!("tc filter del dev wg0 egress pref {PDSCP_PRIO_READER}"));
    let sender = SteadyUdp::start(&bed.a, wg.b_addr(false), 9700, EF, 200);
    sleep(Duration::from_millis(300));
    let result = bed.check("wg0", &[]);
    sender.stop();
    assert_check_fails_naming(
        result,
        "the reader is not running on wg0 (its tc hook is gone)",
        "wg",
    );
}
