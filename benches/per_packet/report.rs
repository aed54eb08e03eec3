//! The table `cargo bench --bench per_packet` prints.
use crate::cases::Case;
use crate::run::{Sample, Timing};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: impl Iterator<Item = f64>, digits: usize) -> String {
    let v: Vec<f64> = v.collect();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.digits$}..{max:.digits$}")
}

pub fn print_table(repeat: u32, cpus: libc::c_long, cases: &[Case], samples: &[Vec<Sample>]) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let floors: Vec<Timing> = samples.iter().flatten().map(|s| s.floor).collect();
    println!(
        "pdscp per-packet cost: BPF_PROG_TEST_RUN, repeat {repeat}, median of {} rounds; \
         kernel {}, {cpus} CPUs",
        samples.first().map_or(0, Vec::len),
        release.trim()
    );
    println!();
    println!("| case | ns/packet | min..max | wall ns | x floor | min..max | churn | target |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    println!(
        "| floor: empty TC program (all rounds) | {:.0} | {} | {:.1} | 1.00 | | | |",
        median(floors.iter().map(|t| t.kernel).collect()),
        spread(floors.iter().map(|t| t.kernel), 0),
        median(floors.iter().map(|t| t.wall).collect()),
    );
    let mut missed = 0;
    for (case, s) in cases.iter().zip(samples) {
        // Each round against the floor measured just before it.
        let ratios = || s.iter().map(|s| s.case.kernel / s.floor.kernel);
        let ratio = median(ratios().collect());
        let target = match case.target {
            Some(max) if ratio <= max => format!("<= {max:.1} ok"),
            Some(max) => {
                missed += 1;
                format!("<= {max:.1} MISSED")
            }
            None => String::new(),
        };
        let churn = match case.churn {
            Some(_) => format!("{:.3}", median(s.iter().map(|s| s.churn).collect())),
            None => String::new(),
        };
        println!(
            "| {}{} | {:.0} | {} | {:.1} | {ratio:.2} | {} | {churn} | {target} |",
            case.name,
            if case.via.is_some() { " *" } else { "" },
            median(s.iter().map(|s| s.case.kernel).collect()),
            spread(s.iter().map(|s| s.case.kernel), 0),
            median(s.iter().map(|s| s.case.wall).collect()),
            spread(ratios(), 2),
        );
    }
    println!();
    println!(
        "* through bench_trampoline (sets skb->hash, restores the packet, tail-calls); its cost, \
         measured by tail-calling the floor in the same round, is replaced by the floor's."
    );
    println!(
        "churn: many-flows cases, per packet: reader inserts (a flow found evicted), writer \
         misses (no entry)."
    );
    println!("targets missed: {missed}");
}
