//! Table compiler and userspace walk: build time, memory, depth at 10 / 1k / 10k / 100k
//! ClassBench-like IPv4 rules, and walk throughput at 10k rules.
//!
//! Goals: build 100k ≤ 150 ms on one core, ≤ 256 bytes per rule, walk ≥ 20 M lookups/s.
//! Besides criterion's numbers, a summary table is printed first (run with
//! `cargo bench -p fluxgate-ruleset --bench table`).

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use fluxgate_common::table::action;
use fluxgate_ruleset::table::{TreeConfig, build_table, walk};
use fluxgate_testkit::synth::flat::{classbench_like, keys};

const SIZES: [usize; 4] = [10, 1_000, 10_000, 100_000];

fn summary() {
    println!(
        "rules    build_ms  bytes/rule  cells    depth_max depth_avg leaf_max nodes  leaves  lists  repl"
    );
    for n in SIZES {
        let rules = classbench_like(n, 42);
        let cfg = TreeConfig::default();
        let mut best = f64::MAX;
        let mut img = None;
        for _ in 0..5 {
            let t = Instant::now();
            let i = build_table(&rules, action::DROP, 0, 1, &cfg);
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
            img = Some(i);
        }
        match img {
            Some(Ok(img)) => {
                let s = img.stats;
                println!(
                    "{n:<8} {best:>8.2} {:>11.1} {:>7} {:>9} {:>9.2} {:>8} {:>6} {:>7} {:>6} {:>5.2}",
                    s.bytes_per_rule(),
                    s.cells,
                    s.depth_max,
                    s.depth_avg,
                    s.leaf_max,
                    s.nodes,
                    s.leaves,
                    s.list_cells,
                    s.replication()
                );
            }
            Some(Err(e)) => println!("{n:<8} error: {e}"),
            None => {}
        }
    }
    // walk throughput, one core, 10k rules, 1M keys (half inside rules, half random)
    let rules = classbench_like(10_000, 42);
    if let Ok(img) = build_table(&rules, action::DROP, 0, 1, &TreeConfig::default()) {
        let ks = keys(&rules, 1 << 20, 7);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let mut acc = 0u32;
            for k in &ks {
                let w = walk(black_box(&img.cells), k);
                acc = acc.wrapping_add(w.decision.map_or(0, |d| d.1));
            }
            black_box(acc);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "walk 10k rules: {:.1} M lookups/s",
            ks.len() as f64 / best / 1e6
        );
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("table_build");
    g.sample_size(10);
    for n in SIZES {
        let rules = classbench_like(n, 42);
        g.bench_with_input(BenchmarkId::from_parameter(n), &rules, |b, rules| {
            b.iter(|| build_table(black_box(rules), action::DROP, 0, 1, &TreeConfig::default()))
        });
    }
    g.finish();
    let rules = classbench_like(10_000, 42);
    let Ok(img) = build_table(&rules, action::DROP, 0, 1, &TreeConfig::default()) else {
        return;
    };
    let ks = keys(&rules, 4096, 7);
    let mut g = c.benchmark_group("table_walk");
    g.throughput(Throughput::Elements(ks.len() as u64));
    g.bench_function("10k", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for k in &ks {
                acc = acc.wrapping_add(walk(&img.cells, black_box(k)).decision.map_or(0, |d| d.1));
            }
            acc
        })
    });
    g.finish();
}

fn main() {
    summary();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
