//! Per-tunnel and per-uplink counters: for two tunnels on one uplink, UDP in
//! several classes and a TCP transfer with GSO, the counts `status` gives in
//! text, JSON and Prometheus (parsed with a Prometheus parser) are exactly
//! what a capture on the wire sees.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::thread;
use std::time::Duration;

use super::*;

/// (tunnel, inner DSCP) -> count.
type Counts = BTreeMap<(String, u8), u64>;

/// (seen per tunnel, marked per tunnel, marked per uplink), as one view of `status` gives them.
type View = (Counts, Counts, Counts);

/// Non-zero DSCPs only: the odd IPv6 chatter inside a tunnel (router
/// solicitations, MLD) is CS0 and may fall outside the window.
fn add(counts: &mut Counts, tunnel: &str, by_dscp: &serde_json::Value) {
    for (dscp, n) in by_dscp.as_object().into_iter().flatten() {
        let dscp: u8 = dscp.parse().expect("dscp");
        if dscp != 0 {
            *counts.entry((tunnel.to_string(), dscp)).or_default() += n.as_u64().expect("count");
        }
    }
}

/// What `status --json` says: (seen, marked per tunnel, marked per uplink).
fn json_counts(bed: &TestBed) -> View {
    let s = status(bed);
    let (mut seen, mut marked, mut uplink) = (Counts::new(), Counts::new(), Counts::new());
    for t in s["tunnels"].as_array().expect("tunnels") {
        let name = t["name"].as_str().expect("name");
        add(&mut seen, name, &t["counters"]["seen_by_dscp"]);
        add(&mut marked, name, &t["counters"]["marked_by_dscp"]);
    }
    add(&mut uplink, UPLINK, &uplink_of(&s)["counters"]["marked_by_dscp"]);
    (seen, marked, uplink)
}

fn uplink_of(s: &serde_json::Value) -> &serde_json::Value {
    uplink(s, UPLINK)
}

/// The same from `status --prometheus`, through a Prometheus parser.
fn prometheus_counts(bed: &TestBed) -> View {
    let text = ok(bed.pdscp(&["status", "--prometheus"]));
    let scrape = prometheus_parse::Scrape::parse(text.as_bytes().lines()).expect("Prometheus text format");
    let (mut seen, mut marked, mut uplink) = (Counts::new(), Counts::new(), Counts::new());
    for s in &scrape.samples {
        let prometheus_parse::Value::Counter(v) = s.value else {
            continue;
        };
        let Some(dscp) = s.labels.get("dscp").and_then(|d| d.parse::<u8>().ok()) else {
            continue;
        };
        let into = match s.metric.as_str() {
            "pdscp_tunnel_seen_packets_total" => &mut seen,
            "pdscp_tunnel_marked_packets_total" => &mut marked,
            "pdscp_marked_packets_total" => &mut uplink,
            _ => continue,
        };
        let who = s.labels.get("tunnel").or(s.labels.get("uplink")).expect("label");
        if dscp != 0 {
            *into.entry((who.to_string(), dscp)).or_default() += v as u64;
        }
    }
    (seen, marked, uplink)
}

/// The same from the text `status`: its "seen by dscp" and "marked by
/// dscp" lines, under each "tunnel" and "uplink" heading.
fn text_counts(bed: &TestBed) -> View {
    let text = ok(bed.pdscp(&["status"]));
    let (mut seen, mut marked, mut uplink) = (Counts::new(), Counts::new(), Counts::new());
    let mut under: Option<(bool, String)> = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["tunnel", name, ..] => under = Some((true, name.to_string())),
            ["uplink", name, ..] => under = Some((false, name.trim_end_matches(':').to_string())),
            ["seen", "by", "dscp", rest @ ..] | ["marked", "by", "dscp", rest @ ..] => {
                let Some((is_tunnel, name)) = &under else { continue };
                let into = match (*is_tunnel, words[0]) {
                    (true, "seen") => &mut seen,
                    (true, _) => &mut marked,
                    (false, "marked") => &mut uplink,
                    _ => continue,
                };
                for pair in rest {
                    let (d, n) = pair.split_once(':').expect("dscp:count");
                    let d: u8 = d.parse().expect("dscp");
                    if d != 0 {
                        *into.entry((name.clone(), d)).or_default() += n.parse::<u64>().expect("count");
                    }
                }
            }
            _ => {}
        }
    }
    (seen, marked, uplink)
}

fn minus(after: &Counts, before: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

#[test]
fn per_tunnel_and_per_uplink_counts_match_the_wire_in_text_json_and_prometheus() {
    for mode in MODES {
        let bed = TestBed::new();
        let wg0 = bed.add_vxlan("wg0", 100, 51820, Underlay::V4, 1);
        let wg1 = bed.add_vxlan("wg1", 101, 51830, Underlay::V4, 2);
        attach(&bed, &wg0, UPLINK, mode);
        attach(&bed, &wg1, UPLINK, mode);
        let views: [fn(&TestBed) -> View; 3] = [json_counts, prometheus_counts, text_counts];
        let before: Vec<_> = views.iter().map(|v| v(&bed)).collect();
        let cap = Capture::start(&bed.b, UPLINK);
        for (t, tos, n) in [
            (&wg0, 0xb8, 30),
            (&wg0, 0x88, 20),
            (&wg1, 0x20, 25),
            (&wg1, 0xb8, 15),
        ] {
            send_udp(&bed.a, t.b_addr(false), 9800, tos, n);
        }
        let bytes = tcp_bulk(&bed.a, &bed.b, wg0.b_addr(false), 9801, 0x48, 2_000_000);
        assert_eq!(bytes, 2_000_000, "{mode}: the transfer completed");
        thread::sleep(Duration::from_millis(200));
        let after: Vec<_> = views.iter().map(|v| v(&bed)).collect();
        let frames = cap.stop();
        // What the wire saw, per tunnel: inner DSCPs (what the reader
        // counts) and outer ones (what the writer gave).
        let (mut wire_seen, mut wire_marked, mut wire_uplink) = (Counts::new(), Counts::new(), Counts::new());
        for t in [&wg0, &wg1] {
            for p in from_a(&frames, t, IPPROTO_UDP)
                .iter()
                .chain(&from_a(&frames, t, IPPROTO_TCP))
            {
                if p.inner_dscp() != 0 {
                    *wire_seen.entry((t.name.clone(), p.inner_dscp())).or_default() += 1;
                }
                if p.outer_dscp() != 0 {
                    *wire_marked.entry((t.name.clone(), p.outer_dscp())).or_default() += 1;
                    *wire_uplink
                        .entry((UPLINK.to_string(), p.outer_dscp()))
                        .or_default() += 1;
                }
            }
        }
        let tcp = wire_seen[&("wg0".to_string(), 18)];
        assert!(tcp > 200, "{mode}: the TCP transfer left as {tcp} segments");
        for (view, (b, a)) in ["json", "prometheus", "text"]
            .iter()
            .zip(before.iter().zip(&after))
        {
            assert_eq!(
                minus(&a.0, &b.0),
                wire_seen,
                "{mode} {view}: seen per tunnel and DSCP"
            );
            assert_eq!(
                minus(&a.1, &b.1),
                wire_marked,
                "{mode} {view}: marked per tunnel and DSCP"
            );
            assert_eq!(
                minus(&a.2, &b.2),
                wire_uplink,
                "{mode} {view}: marked on the uplink per DSCP"
            );
        }
        eprintln!("counters {mode}: wire and status agree: seen {wire_seen:?}, uplink {wire_uplink:?}");
    }
}
