//! The userspace classifier (compiled tables) against the reference, on the
//! shared case table and on generated rulesets and packets.

use fluxgate_ruleset::{
    Classifier, CompileOptions, Config, PacketHeader, Ruleset, compile_with, reference, validate,
};
use fluxgate_testkit::cases;

#[test]
fn case_table_passes_on_the_compiled_classifier() {
    let cases = cases::load(include_str!("cases.txt")).expect("case table parses");
    let mut checked = 0;
    let mut failures = Vec::new();
    for (case, rs) in cases::valid(&cases) {
        let image = compile_with(&rs, &CompileOptions::default());
        let image = match image {
            Ok(i) => i,
            Err(e) if e.to_string().contains("interface") => continue,
            Err(e) => panic!("{}: compile: {e}", case.name),
        };
        let classifier = Classifier::new(image, []);
        for p in &case.packets {
            if p.packet.iif.is_some() {
                continue;
            }
            let d = classifier.decide(&p.packet);
            if let Err(e) = cases::check_engine(&rs, p, &d) {
                failures.push(format!("{} (line {}): {e}", case.name, p.line));
            }
            checked += 1;
        }
    }
    cases::assert_agreed(checked, 60, &failures);
}

#[test]
fn iif_rules_use_the_interface_table() {
    let rs = Ruleset::parse_files(&[(
        "gateway.fg",
        "default pass\niif eth1 proto tcp dport 22 drop\n",
    )])
    .and_then(|rs| validate(rs, &Config::default()))
    .expect("valid");
    let err = compile_with(&rs, &CompileOptions::default()).expect_err("eth1 unknown");
    assert!(err.to_string().contains("eth1"), "{err}");
    let opts = CompileOptions {
        interfaces: [("eth1".to_owned(), 7)].into(),
        ..Default::default()
    };
    let c = Classifier::new(
        compile_with(&rs, &opts).expect("compile"),
        [("eth1".to_owned(), 7)],
    );
    let mut p: PacketHeader = "tcp 192.0.2.1:1000 -> 198.51.100.1:22"
        .parse()
        .expect("packet");
    assert_eq!(c.decide(&p).verdict, fluxgate_ruleset::Verdict::Pass);
    p.iif = Some("eth1".into());
    assert_eq!(c.decide(&p).verdict, fluxgate_ruleset::Verdict::Drop);
}

/// One `Classifier` shared by reference across threads (`Send + Sync`, no
/// locks) gives every thread the answers it gives one thread alone.
#[test]
fn one_classifier_serves_many_threads() {
    fn shareable<T: Send + Sync>(_: &T) {}
    use fluxgate_ruleset::classbench;
    use fluxgate_testkit::synth::{self, Family};
    let filters = synth::classbench_like(Family::Fw, 2_000, 11);
    let rs = validate(classbench::to_ruleset(&filters), &Config::classbench()).expect("valid");
    let classifier = Classifier::new(
        compile_with(&rs, &CompileOptions::default()).expect("compile"),
        [],
    );
    shareable(&classifier);
    let packets: Vec<PacketHeader> = synth::packets(&filters, 20_000, 12)
        .into_iter()
        .map(PacketHeader::on_the_wire)
        .collect();
    let alone: Vec<_> = packets.iter().map(|p| classifier.classify(p)).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let (classifier, packets) = (&classifier, &packets);
                // Each thread walks the trace from its own offset, so they
                // read the same cells at different times.
                scope.spawn(move || {
                    let n = packets.len();
                    (0..n)
                        .map(|i| (i + t * n / 4) % n)
                        .map(|i| (i, classifier.classify(&packets[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            for (i, c) in worker.join().expect("worker") {
                assert_eq!(c, alone[i], "packet {}", packets[i]);
            }
        }
    });
    // The answers themselves are the reference's (spot-checked).
    for (p, c) in packets.iter().zip(&alone).step_by(97) {
        assert!(
            classifier
                .to_decision(c)
                .same_outcome(&reference::classify(&rs, p)),
            "{p}"
        );
    }
}

mod generated {
    use super::*;
    use proptest::prelude::*;

    use fluxgate_testkit::synth::strategy::{packet, ruleset};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn compiled_classifier_agrees_with_reference(files in ruleset(), packets in prop::collection::vec(packet(), 40)) {
            let Ok(rs) = Ruleset::parse_files(&files).and_then(|rs| validate(rs, &Config::default())) else {
                return Ok(()); // generated something invalid (e.g. out of scope): not this test's business
            };
            let c = Classifier::new(compile_with(&rs, &CompileOptions::default()).expect("compile"), []);
            for p in &packets {
                let (d, r) = (c.decide(p), reference::classify(&rs, p));
                prop_assert!(d.same_outcome(&r), "packet {p}\nclassifier {d:?}\nreference {r:?}\nfiles {files:#?}");
            }
        }
    }
}
