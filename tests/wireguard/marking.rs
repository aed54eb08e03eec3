//! Which packets leave marked: WireGuard alone, then pdscp over both
//! underlays.

use super::*;

/// The problem: WireGuard alone writes outer DSCP 0 (ECN copied), so the
/// checks below can fail.
#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn wireguard_alone_loses_marks() {
    let bed = wireguard_bed();
    let wg = add_wg_up0(&bed, "wg0", 1, 51820, 52820, Underlay::V4);
    check_udp_and_icmp(&bed, &wg, &bed.b, UPLINK, false, "without pdscp");
}

/// UDP, TCP (bulk, GSO) and ICMP over both inner families: every data
/// message carries the inner DSCP outside, WireGuard's ECN, a valid IPv4
/// checksum. `--mode auto`, plus `--mode tc` where auto gives TCX.
fn marks_everything(underlay: Underlay) {
    require_wireguard();
    let mut modes = vec!["auto"];
    if auto_mode() == "tcx" {
        modes.push("tc");
    }
    for mode in modes {
        let bed = TestBed::new();
        let wg = add_wg_up0(&bed, "wg0", 1, 51820, 52820, underlay);
        let msg = ok(bed.pdscp(&["attach", "wg0", "--uplink", UPLINK, "--mode", mode]));
        let want = if mode == "auto" { auto_mode() } else { mode };
        assert!(msg.contains(&format!("mode {want}, port 51820")), "{msg}");
        let ctx = format!("{underlay:?} underlay, --mode {mode}");
        check_marked(&bed, &wg, &ctx);
        let tcp = check_tcp(&bed, &wg, &ctx);

        let s = status(&bed);
        assert_attached(&s, UPLINK, &wg);
        assert_eq!(uplink(&s, UPLINK)["mode"], want, "{s:#}");
        for (dscp, outer) in tcp {
            // The writer marked each data message; the reader saw GSO
            // super-packets, which WireGuard segments, and counts each as
            // the segments it becomes: the counts match the wire.
            let marked = counter(&s, UPLINK, "marked_by_dscp", dscp);
            let seen = counter(&s, UPLINK, "seen_by_dscp", dscp);
            assert_eq!(marked, outer as u64, "{ctx}: DSCP {dscp} marked: {s:#}");
            assert_eq!(seen, marked, "{ctx}: DSCP {dscp}: GSO counted as segments");
        }
    }
}

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn marks_udp_tcp_icmp_over_ipv4_underlay() {
    marks_everything(Underlay::V4);
}

#[test]
#[ignore = "needs WireGuard: run scripts/vm-tests.sh"]
fn marks_udp_tcp_icmp_over_ipv6_underlay() {
    marks_everything(Underlay::V6);
}
