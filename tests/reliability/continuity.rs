//! Continuity: a steady flow keeps its marks while another tunnel churns.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::*;

/// A steady EF flow on wg1 (at least 3000 packets, 1 ms apart) while wg2 on
/// the same uplink is detached and attached 100 times: every packet arrives
/// and every one is marked.
fn continuity(mode: &str) {
    const MIN_PACKETS: usize = 3000;
    const CYCLES: usize = 100;
    let bed = TestBed::new();
    let t1 = bed.add_vxlan("wg1", 101, 51820, Underlay::V4, 1);
    let t2 = bed.add_vxlan("wg2", 102, 51830, Underlay::V4, 2);
    attach(&bed, &t1, UPLINK, mode);
    attach(&bed, &t2, UPLINK, mode);

    let cap = Capture::start(&bed.b, UPLINK);
    let done = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let dst = t1.b_addr(false);
    let sender = {
        let (done, started) = (done.clone(), started.clone());
        bed.a.spawn("steady flow", move || {
            let sock = marked_udp_socket(dst, EF);
            let mut sent = 0usize;
            while sent < MIN_PACKETS || !done.load(Ordering::Relaxed) {
                sock.send_to(&sent.to_be_bytes(), (dst, 9300)).expect("send");
                sent += 1;
                started.store(sent, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
            sent
        })
    };
    while started.load(Ordering::Relaxed) < 50 {
        thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..CYCLES {
        detach(&bed, &t2);
        attach(&bed, &t2, UPLINK, mode);
    }
    done.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("sender");
    let frames = cap.stop();
    let pkts = flow(&frames, &t1, 9300);
    let wrong = pkts.iter().filter(|p| p.outer_dscp() != 46).count();
    eprintln!(
        "continuity {mode}: {} commands on wg2; wg1 sent {sent}, received {}, wrong DSCP {wrong}",
        2 * CYCLES,
        pkts.len()
    );
    assert_eq!(pkts.len(), sent, "{mode}: every packet arrives");
    assert_eq!(wrong, 0, "{mode}: no mark lost");
    assert_state(&bed, &attached_map(&[(UPLINK, &["wg1", "wg2"])]), mode);
}

#[test]
fn steady_flow_keeps_its_marks_while_another_tunnel_churns_tcx() {
    continuity("tcx");
}

#[test]
fn steady_flow_keeps_its_marks_while_another_tunnel_churns_tc() {
    continuity("tc");
}
