//! What recording a change's outcome adds to the change: one
//! `OutcomeLog::append` (read the last number from the file's end, serialize,
//! append one line) beside a bare append of the same line to a file (the
//! floor), on a log of 1,000 outcomes. An apply takes milliseconds; this is
//! what it pays on top.
//!
//! Run: `cargo bench -p fluxgate-control --bench outcomes`.

use std::{collections::BTreeMap, io::Write, os::unix::fs::OpenOptionsExt};

use criterion::{Criterion, criterion_main};
use fluxgate_control::outcomes::{Outcome, OutcomeKind, OutcomeLog};

fn outcome() -> Outcome {
    Outcome {
        seq: 0,
        at: 1_764_758_520,
        generation: 42,
        kind: OutcomeKind::Applied,
        tenants: vec!["acme".into()],
        gateway_wide: false,
        who: "alice".into(),
        reason: "open port 7002 for the new API".into(),
        why: Vec::new(),
        cause_tenant: None,
        rules: BTreeMap::from([("acme".to_owned(), vec![2])]),
    }
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("fg-bench-outcomes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let log = OutcomeLog::in_dir(&dir);
    for _ in 0..1000 {
        log.append(&mut outcome()).expect("fill");
    }
    let mut line = serde_json::to_vec(&outcome()).expect("json");
    line.push(b'\n');
    let raw = dir.join("raw.jsonl");
    let mut g = c.benchmark_group("outcome_append");
    g.bench_function("bare_line_append", |b| {
        b.iter(|| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&raw)
                .expect("open");
            f.write_all(&line).expect("write");
        });
    });
    g.bench_function("outcome_log_append", |b| {
        b.iter(|| log.append(&mut outcome()).expect("append"));
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

// Private: the `pub fn` criterion_group! generates needs no docs here.
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
