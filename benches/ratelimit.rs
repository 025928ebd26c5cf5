//! What rate limits cost in the kernel, side by side in one run (kernel ns per
//! packet by BPF_PROG_TEST_RUN, the same packet repeated: hot), each setup
//! a tenant with the same rules but for the limit:
//!
//! - `plain`: `proto udp dport 53 pass` decides (the baseline);
//! - `limit_over`: `proto udp dport 53 limit rate over 1/hour burst 1 packets drop`
//!   first — every packet but the first is over it: the walk, one bucket
//!   read, the rule decides;
//! - `limit_within`: the same limit at 1e9/second with a burst of 2^40 — every
//!   packet is within it: a bucket update (compare-and-exchange), a tail call
//!   and the walk again after the rule, then `pass` decides;
//! - `ceiling`: the plain tenant with `ceiling 1000000000/second` (within).
//!
//! And the choice of one bucket shared by every CPU (one compare-and-exchange
//! on one word) over per-CPU buckets, as a userspace proxy on this machine:
//! the GCRA step of `fluxgate_common::limit` by two threads on one shared
//! atomic word, beside each thread on its own word (what per-CPU buckets cost).
//!
//! Run: `cargo bench --bench ratelimit` (as root).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::Instant,
};

use criterion::Criterion;
use fluxgate::{
    common::{
        GatewayConfig,
        limit::{Bucket, LimitSlot},
    },
    dataplane::{Program, StagedImage, Tables, frame::FrameSpec},
    ruleset::{CompileOptions, Config, PacketHeader, Ruleset, compile_with, validate},
};

struct Setup {
    name: &'static str,
    program: Program,
    _staged: StagedImage,
}

fn setup(name: &'static str, tenant: &str) -> Setup {
    let rs = validate(
        Ruleset::parse_files(&[("gateway.fg", "default drop\n"), ("acme.fg", tenant)])
            .expect("parses"),
        &Config::default(),
    )
    .expect("valid");
    let image = compile_with(&rs, &CompileOptions::default()).expect("compile");
    let mut program = Program::load(&GatewayConfig::default()).expect("load (needs root)");
    let staged = StagedImage::new(&mut program, &image).expect("stage");
    let buckets: Vec<(u32, LimitSlot)> = image
        .counters
        .iter()
        .filter_map(|c| {
            let bucket = c.limit?.bucket()?;
            Some((c.slot, LimitSlot { bucket, tat: 0 }))
        })
        .collect();
    program.write_buckets(&buckets).expect("buckets");
    program.publish_image(&staged).expect("publish");
    Setup {
        name,
        program,
        _staged: staged,
    }
}

const HEAD: &str = "tenant acme\nprefix 203.0.113.0/24\ndefault drop\n";
const RULES: &str = "proto tcp dport 22 pass\nproto udp dport 53 pass\n";

fn setups() -> Vec<Setup> {
    vec![
        setup("plain", &format!("{HEAD}{RULES}")),
        setup(
            "limit_over",
            &format!(
                "{HEAD}proto udp dport 53 limit rate over 1/hour burst 1 packets drop\n{RULES}"
            ),
        ),
        setup(
            "limit_within",
            &format!(
                "{HEAD}proto udp dport 53 limit rate over 1000000000/second burst \
                 1099511627776 packets drop\n{RULES}"
            ),
        ),
        setup(
            "ceiling",
            &format!("{HEAD}ceiling 1000000000/second burst 1099511627776 packets\n{RULES}"),
        ),
    ]
}

fn hot_ns(program: &Program, f: &[u8]) -> f64 {
    let mut v: Vec<u128> = (0..7)
        .map(|_| {
            let out = program.test_run(f, 500_000).expect("run");
            out.duration.as_nanos()
        })
        .collect();
    v.sort();
    v[3] as f64
}

/// GCRA steps per second per thread: `threads` threads, on one shared word
/// (compare-and-exchange) or each on its own.
fn gcra_rate(threads: usize, shared: bool) -> f64 {
    const STEPS: u64 = 2_000_000;
    let bucket = Bucket::new(1_000_000_000, 1_000_000_000, 1 << 40, false).expect("bucket");
    let words: Arc<Vec<AtomicU64>> = Arc::new((0..threads).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let words = words.clone();
            thread::spawn(move || {
                let w = &words[if shared { 0 } else { t }];
                let t0 = Instant::now();
                for _ in 0..STEPS {
                    let now = t0.elapsed().as_nanos() as u64 + 1_000_000_000;
                    loop {
                        let old = w.load(Ordering::Relaxed);
                        let Some(next) = bucket.take(old, now, 64) else {
                            break;
                        };
                        if w.compare_exchange(old, next, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok()
                        {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    STEPS as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let setups = setups();
    let p: PacketHeader = "udp 192.0.2.1:4000 -> 203.0.113.9:53"
        .parse()
        .expect("packet");
    let frame = FrameSpec::from_header(&p).expect("frame").build();
    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("ratelimit_kernel_hot");
    for s in &setups {
        group.bench_function(s.name, |b| {
            b.iter_custom(|iters| {
                let repeat = iters.clamp(1, u64::from(u32::MAX)) as u32;
                s.program.test_run(&frame, repeat).expect("run").duration * repeat
            })
        });
    }
    group.finish();
    criterion.final_summary();

    // Alternating rounds, medians: the ratios are what to read.
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    for _ in 0..5 {
        for (s, v) in setups.iter().zip(&mut ns) {
            v.push(hot_ns(&s.program, &frame));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&mut ns[0].clone());
    println!("\nrate limits, kernel hot ns/packet (median of 5 alternating rounds):");
    for (s, v) in setups.iter().zip(&mut ns) {
        let m = median(v);
        println!(
            "  {:<14} {:>6.1} ns  {:>+6.1} ns  ×{:.2}",
            s.name,
            m,
            m - base,
            m / base
        );
    }
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus.clamp(2, 8);
    let shared = gcra_rate(threads, true);
    let own = gcra_rate(threads, false);
    println!(
        "GCRA step, {threads} threads ({cpus} CPUs): shared word {:.1} M/s per thread, \
         a word each (per-CPU) {:.1} M/s per thread, ×{:.2}",
        shared / 1e6,
        own / 1e6,
        own / shared
    );
}
