//! Parse + validate time for synthetic rulesets (goal: 100k rules ≤ 100 ms).

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_main};
use fluxgate_ruleset::classbench::to_ruleset;
use fluxgate_ruleset::{Config, Ruleset, validate};
use fluxgate_testkit::synth::{Family, Rng, classbench_like};

/// Global-only ClassBench-like ruleset as `.fg` text.
fn global_files(n: usize) -> Vec<(String, String)> {
    to_ruleset(&classbench_like(Family::Acl, n, 42)).to_files()
}

/// `n` rules spread over `n / 100` tenants, each owning a /24 and a /48.
fn tenant_files(n: usize) -> Vec<(String, String)> {
    let mut rng = Rng::new(9);
    let mut files = vec![(
        "gateway.fg".to_owned(),
        "default drop\nset admins { 192.0.2.0/24, 2001:db8:ad::/48 }\nsaddr 198.18.0.0/15 drop\n"
            .to_owned(),
    )];
    for t in 0..n / 100 {
        let (hi, lo) = (t / 256, t % 256);
        let mut s = format!(
            "tenant t{t}\nprefixes {{ 10.{hi}.{lo}.0/24, 2001:db8:{t:x}::/48 }}\ndefault drop\n"
        );
        for _ in 0..100 {
            let port = rng.below(65000) + 1;
            match rng.below(4) {
                0 => writeln!(s, "saddr @admins proto tcp dport {port} pass"),
                1 => writeln!(
                    s,
                    "saddr {}.{}.0.0/16 proto udp dport {port}-{} drop",
                    rng.below(223) + 1,
                    rng.below(256),
                    port + rng.below(100)
                ),
                2 => writeln!(
                    s,
                    "daddr 10.{hi}.{lo}.{} proto tcp dport {{ 80, 443, {port} }} pass",
                    rng.below(256)
                ),
                _ => writeln!(
                    s,
                    "proto tcp sport 1024-65535 dport {port} flags S/SA count"
                ),
            }
            .expect("write to String");
        }
        files.push((format!("t{t}.fg"), s));
    }
    files
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse+validate");
    g.sample_size(10);
    for (name, files, cfg) in [
        ("global_10k", global_files(10_000), Config::classbench()),
        ("global_100k", global_files(100_000), Config::classbench()),
        ("tenants_1000x100", tenant_files(100_000), Config::default()),
    ] {
        let rs = validate(Ruleset::parse_files(&files).expect("parses"), &cfg).expect("valid");
        eprintln!(
            "{name}: {} bytes, {} warnings",
            files.iter().map(|f| f.1.len()).sum::<usize>(),
            rs.warnings().len()
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                validate(
                    Ruleset::parse_files(black_box(&files)).expect("parses"),
                    &cfg,
                )
                .expect("valid")
            })
        });
    }
    g.finish();
}

// private module: the `pub fn` criterion_group! generates needs no docs here
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
