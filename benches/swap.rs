//! Hot swap costs, side by side in one run (root needed):
//! - publish flip: a tenant slot's selector flipped to the table staged in its
//!   standby buffer, at 10, 10k (and, with `FLUXGATE_BENCH_100K=1`, 100k)
//!   rules — flat in size is the point; rolling back to the previous
//!   generation is the same flip;
//! - place: putting a table in the standby buffer (its region base written
//!   to the slot map), the first half of publishing;
//! - rollback to an older kept generation: reopen its pin, place, flip;
//! - staging: validate + compile + copy the table into the cell pool beside the
//!   live one (median of 5);
//! - tail call: the bare `XDP_PASS` floor vs the floor reached through one tail
//!   call (what the dispatcher → classifier hop costs per packet);
//! - drop capture: a dropped packet with capture off (the classifier alone),
//!   on but filtered out, and on recording every drop.
//!
//! The program is attached (generic mode) to `lo` of a private network
//! namespace and pinned under a private bpffs directory, both removed at the end.
//!
//! Run: `cargo bench --bench swap` (as root).

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion};
use fluxgate::{
    common::{GatewayConfig, table::Cell},
    dataplane::{
        AttachMode, PinnedAttachment, Program, Slot, StagedImage, StagedTable, Tables, netns,
    },
    ruleset::{CompileOptions, Config, Ruleset, classbench, compile_with, validate},
};
use fluxgate_testkit::synth::{self, Family};

/// Network namespace and bpffs directory of this run; removed on drop.
struct Sandbox {
    ns: String,
    pins: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let ns = format!("fgbench-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add (the bench needs root)");
        Sandbox {
            pins: PathBuf::from("/sys/fs/bpf").join(&ns),
            ns,
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A ClassBench-like ACL ruleset of `n` rules, as the parser would give it.
fn ruleset(n: usize) -> Ruleset {
    classbench::to_ruleset(&synth::classbench_like(Family::Acl, n, 42))
}

/// Validates and compiles `rs`: its global table.
fn table(rs: Ruleset) -> Vec<Cell> {
    let rs = validate(rs, &Config::classbench()).expect("valid");
    compile_with(&rs, &CompileOptions::default())
        .expect("compile")
        .global
        .cells
}

struct Size {
    n: usize,
    scope: String,
    a: StagedTable,
    b: StagedTable,
    stage: Duration,
}

fn main() {
    let sandbox = Sandbox::new();
    netns::enter(&sandbox.ns).expect("enter the bench namespace");
    // 100k-rule tables need more than the default pool (two of them staged).
    let pool = if std::env::var_os("FLUXGATE_BENCH_100K").is_some() {
        1 << 21
    } else {
        fluxgate::common::DEFAULT_POOL_CELLS
    };
    let program = Program::load_sized(&GatewayConfig::default(), pool).expect("load (needs root)");
    let attached = program
        .attach("lo", AttachMode::Generic)
        .expect("attach to lo");
    let frame = fluxgate::dataplane::frame::FrameSpec::from_header(
        &"udp 198.51.100.1:1000 -> 203.0.113.1:2000"
            .parse()
            .expect("packet"),
    )
    .expect("frame")
    .build();
    let tail = tail_call_ns(attached.program(), &frame);
    let mut attached = attached;
    let capture = capture_ns(attached.program_mut(), &frame);
    let mut pinned = attached.pin(&sandbox.pins).expect("pin");

    let mut sizes_n = vec![10, 10_000];
    if std::env::var_os("FLUXGATE_BENCH_100K").is_some() {
        sizes_n.push(100_000);
    } else {
        println!("note: 100k rules skipped (a 256 MiB cell pool); set FLUXGATE_BENCH_100K=1");
    }
    let sizes: Vec<Size> = sizes_n
        .into_iter()
        .map(|n| {
            // Staging = validate + compile + copy into the cell pool beside the
            // live tables: the median of 5 (each staged table kept until the
            // end, so no run waits to reuse another's cells). The first two
            // staged tables are the A and B the flips below alternate between.
            let rs = ruleset(n);
            let mut runs = Vec::new();
            let mut held = Vec::new();
            for _ in 0..5 {
                let rs = rs.clone();
                let started = Instant::now();
                let cells = table(rs);
                held.push(pinned.stage("bench", &cells).expect("stage"));
                runs.push(started.elapsed());
            }
            runs.sort();
            let stage = runs[runs.len() / 2];
            let mut held = held.into_iter();
            let (a, b) = (held.next().expect("staged"), held.next().expect("staged"));
            let scope = format!("bench-{n}");
            pinned.keep_table(&scope, 1, &a).expect("keep");
            pinned.keep_table(&scope, 2, &b).expect("keep");
            Size {
                n,
                scope,
                a,
                b,
                stage,
            }
        })
        .collect();

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let mut flips = Vec::new();
    let mut rollbacks = Vec::new();
    {
        let mut group = c.benchmark_group("swap");
        for s in &sizes {
            // A live, B in standby: each flip publishes one and rolls back the other.
            pinned.publish(Slot::Tenant(0), &s.b).expect("publish");
            pinned.publish(Slot::Tenant(0), &s.a).expect("publish");
            group.bench_function(BenchmarkId::new("publish_flip", s.n), |bench| {
                bench.iter(|| pinned.flip(Slot::Tenant(0)).expect("flip"))
            });
            group.bench_function(BenchmarkId::new("place_standby", s.n), |bench| {
                let mut odd = false;
                bench.iter(|| {
                    odd = !odd;
                    let t = if odd { &s.a } else { &s.b };
                    pinned.place(Slot::Tenant(0), t).expect("place");
                })
            });
            group.bench_function(BenchmarkId::new("rollback_from_pin", s.n), |bench| {
                let mut g = 1;
                bench.iter(|| {
                    g = 3 - g;
                    let t = pinned.kept_table(&s.scope, g).expect("kept");
                    pinned.publish(Slot::Tenant(0), &t).expect("publish");
                })
            });
        }
        group.finish();
    }
    // Summary from direct timings (criterion's report has the distributions).
    let mut places = Vec::new();
    for s in &sizes {
        pinned.publish(Slot::Tenant(0), &s.b).expect("publish");
        pinned.publish(Slot::Tenant(0), &s.a).expect("publish");
        flips.push(median_us(1001, |_| {
            pinned.flip(Slot::Tenant(0)).expect("flip");
        }));
        places.push(median_us(21, |i| {
            let t = if i % 2 == 0 { &s.a } else { &s.b };
            pinned.place(Slot::Tenant(0), t).expect("place");
        }));
        rollbacks.push(median_us(21, |i| {
            let t = pinned
                .kept_table(&s.scope, 1 + (i % 2) as u64)
                .expect("kept");
            pinned.publish(Slot::Tenant(0), &t).expect("publish");
        }));
    }
    println!("\n== swap summary (medians) ==");
    println!(
        "{:>8} {:>28} {:>12} {:>26} {:>10}",
        "rules", "publish / rollback flip µs", "place µs", "rollback to older gen µs", "stage ms"
    );
    for (i, s) in sizes.iter().enumerate() {
        println!(
            "{:>8} {:>28.1} {:>12.1} {:>26.1} {:>10.1}",
            s.n,
            flips[i],
            places[i],
            rollbacks[i],
            s.stage.as_secs_f64() * 1e3
        );
    }
    println!(
        "tail call: floor {:.1} ns, floor via one tail call {:.1} ns → +{:.1} ns per packet",
        tail.0,
        tail.1,
        tail.1 - tail.0
    );
    println!(
        "capture (dropped packet, same run): classifier alone {:.1} ns; capture on, filtered out {:.1} ns ({:.2}×); \
         capture on, recording every drop {:.1} ns ({:.2}×)",
        capture.0,
        capture.1,
        capture.1 / capture.0,
        capture.2,
        capture.2 / capture.0
    );
    drop(sizes);
    cleanup(pinned);
    drop(sandbox);
}

fn cleanup(pinned: PinnedAttachment) {
    pinned.detach().expect("detach");
}

/// Median wall time of `f` over `runs` runs, in µs.
fn median_us(runs: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut v: Vec<f64> = (0..runs)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[runs / 2]
}

/// Kernel ns per dropped packet with capture off, on but filtered out, and on
/// recording every drop (runs of 2,000 so the ring never fills; drained between).
fn capture_ns(program: &mut Program, frame: &[u8]) -> (f64, f64, f64) {
    use fluxgate::common::{CaptureConfig, Trace};
    let rs = validate(
        Ruleset::parse_files(&[("gateway.fg", "default drop\nproto tcp dport 22 drop\n")])
            .expect("parse"),
        &Config::default(),
    )
    .expect("valid");
    let image = compile_with(&rs, &CompileOptions::default()).expect("compile");
    let staged = StagedImage::new(program, &image).expect("stage");
    program.publish_image(&staged).expect("publish");
    let run = |program: &mut Program, repeat: u32| {
        let mut v: Vec<f64> = (0..5)
            .map(|_| {
                program.drain_drops().expect("drain");
                let out = program.test_run(frame, repeat).expect("run");
                assert_eq!(out.verdict, fluxgate::common::xdp::DROP);
                out.duration.as_nanos() as f64
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[2]
    };
    program.set_capture(&CaptureConfig::default()).expect("off");
    let off = run(program, 2000);
    let on = CaptureConfig {
        enabled: 1,
        tenant: Trace::NONE,
        slot: Trace::NONE,
        sample: 1,
        rate: 0,
        snaplen: 256,
    };
    program
        .set_capture(&CaptureConfig { tenant: 7, ..on })
        .expect("filtered");
    let filtered = run(program, 2000);
    program.set_capture(&on).expect("on");
    let recording = run(program, 2000);
    program.set_capture(&CaptureConfig::default()).expect("off");
    program.drain_drops().expect("drain");
    drop(staged);
    (off, filtered, recording)
}

/// Median kernel ns of the floor and of the floor behind one tail call.
fn tail_call_ns(program: &Program, frame: &[u8]) -> (f64, f64) {
    let med = |tail: bool| {
        let mut v: Vec<u128> = (0..5)
            .map(|_| {
                let out = if tail {
                    program.test_run_tail_floor(frame, 1_000_000)
                } else {
                    program.test_run_floor(frame, 1_000_000)
                };
                out.expect("run").duration.as_nanos()
            })
            .collect();
        v.sort();
        v[2] as f64
    };
    (med(false), med(true))
}
