//! Kernel cost per packet of the parse-and-pass program, measured with
//! BPF_PROG_TEST_RUN (the kernel's own per-run timing), side by side with a bare
//! `XDP_PASS` program from the same object in the same run. Every later
//! classifier is reported against these numbers.
//!
//! Run as root: `cargo bench --bench xdp_baseline`.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use criterion::{BenchmarkId, Criterion, Throughput};
use fluxgate::{
    common::GatewayConfig,
    dataplane::{
        Program, TestRunOutput,
        frame::{FrameSpec, L4},
    },
};

const TCP: L4 = L4::Tcp {
    sport: 40000,
    dport: 443,
    flags: 0x10,
};

/// The two reference packets: 64-byte TCP/IPv4 and 78-byte TCP/IPv6.
fn packets() -> [(&'static str, Vec<u8>); 2] {
    let mut v4 = FrameSpec::new(
        Ipv4Addr::new(198, 51, 100, 7).into(),
        Ipv4Addr::new(203, 0, 113, 10).into(),
        TCP,
    );
    v4.payload = vec![0; 64 - (14 + 20 + 20)];
    let mut v6 = FrameSpec::new(
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7).into(),
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10).into(),
        TCP,
    );
    v6.payload = vec![0; 78 - (14 + 40 + 20)];
    let (v4, v6) = (v4.build(), v6.build());
    assert_eq!((v4.len(), v6.len()), (64, 78));
    [("tcp4_64B", v4), ("tcp6_78B", v6)]
}

type Runner = fn(&Program, &[u8], u32) -> Result<TestRunOutput, fluxgate::dataplane::Error>;

const PROGRAMS: [(&str, Runner); 2] = [
    ("xdp_pass_floor", Program::test_run_floor),
    ("parse_and_pass", Program::test_run),
];

fn bench(c: &mut Criterion, program: &Program) {
    let mut group = c.benchmark_group("xdp_baseline");
    group.throughput(Throughput::Elements(1));
    for (packet, frame) in packets() {
        for (name, run) in PROGRAMS {
            group.bench_with_input(BenchmarkId::new(name, packet), &frame, |b, frame| {
                // The kernel times `iters` runs and reports the mean per run.
                b.iter_custom(|iters| {
                    let repeat = iters.clamp(1, u64::from(u32::MAX)) as u32;
                    let out = run(program, frame, repeat).expect("BPF_PROG_TEST_RUN");
                    out.duration * repeat
                });
            });
        }
    }
    group.finish();
}

/// Median of 5 runs of 1M repeats, in kernel-reported ns per packet.
fn median_ns(program: &Program, run: Runner, frame: &[u8]) -> u128 {
    let mut runs: Vec<Duration> = (0..5)
        .map(|_| run(program, frame, 1_000_000).expect("test run").duration)
        .collect();
    runs.sort();
    runs[2].as_nanos()
}

fn summary(program: &Program) {
    eprintln!("\nxdp_baseline summary (median of 5 × 1M BPF_PROG_TEST_RUN repeats, same run):");
    for (packet, frame) in packets() {
        let floor = median_ns(program, PROGRAMS[0].1, &frame);
        let parse = median_ns(program, PROGRAMS[1].1, &frame);
        eprintln!(
            "  {packet}: xdp_pass_floor {floor} ns, parse_and_pass {parse} ns, ratio {:.2}",
            parse as f64 / floor.max(1) as f64
        );
    }
}

fn main() {
    let program = Program::load(&GatewayConfig::default())
        .expect("load the XDP program (benchmarks need root, like the tests)");
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion, &program);
    criterion.final_summary();
    summary(&program);
}
