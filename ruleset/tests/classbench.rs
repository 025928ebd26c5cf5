//! ClassBench import and the synthetic generator.

use fluxgate_ruleset::classbench::{parse_filters, parse_trace, to_ruleset};
use fluxgate_ruleset::{Config, ErrorKind, Verdict, reference, validate};
use fluxgate_testkit::synth::{Family, classbench_like, trace};

const FILTERS: &str = "@192.168.0.0/16\t10.0.0.0/8\t0 : 65535\t1024 : 1024\t0x06/0xFF\t0x0000/0x0000\n\
@0.0.0.0/0\t10.1.0.0/16\t53 : 53\t0 : 65535\t0x11/0xFF\n\
@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t80 : 90\t0x00/0x00\t0x0000/0x0000\n\
@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x06/0xFF\t0x1000/0x1000\n";

#[test]
fn filters_import_with_classbench_indices() {
    let f = parse_filters("acl1", FILTERS).expect("parses");
    assert_eq!(f.len(), 4);
    assert_eq!(f[0].proto, Some(6));
    assert_eq!(f[2].proto, None, "mask 0x00 means any protocol");
    assert_eq!(f[1].flags, None, "flags field may be missing");
    let rs = validate(to_ruleset(&f), &Config::classbench()).expect("valid");
    assert_eq!(
        rs.gateway()
            .rules
            .iter()
            .map(|r| r.position)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    // the printed ruleset re-imports to the same filters
    let text: String = f.iter().map(|x| format!("{x}\n")).collect();
    assert_eq!(parse_filters("again", &text).expect("parses"), f);

    let trace = "3232235777\t167772161\t5000\t1024\t6\t0\t1\n\
                 1\t167837697\t53\t9999\t17\t2\n\
                 167772161\t1\t1\t85\t47\t3\n\
                 1\t2\t1\t2\t6\t4\n\
                 1\t2\t1\t2\t17\t0\n";
    let entries = parse_trace("acl1_trace", trace).expect("trace parses");
    for e in &entries {
        let d = reference::classify(&rs, &e.header);
        let got = d.rule.map(|r| r.position);
        let want = e.expected.filter(|&i| i != 0);
        assert_eq!(got, want, "{}: {}", e.header, d.reason);
        assert_eq!(
            d.verdict,
            if want.is_some() {
                Verdict::Pass
            } else {
                Verdict::Drop
            }
        );
    }
}

#[test]
fn bad_filter_lines_point_at_the_field() {
    let e = parse_filters(
        "f",
        "@10.0.0.0/8\t10.0.0.0/40\t0 : 65535\t0 : 65535\t0x06/0xFF\n",
    )
    .unwrap_err();
    let d = &e.errors[0];
    assert_eq!(d.kind, ErrorKind::Syntax);
    assert_eq!((d.location.line, d.location.col), (1, 13));
    let e = parse_filters(
        "f",
        "@10.0.0.0/8\t10.0.0.0/8\t0 : 65535\t0 : 65535\t0x06/0x0F\n",
    )
    .unwrap_err();
    assert_eq!(e.errors[0].location.col, 44);
    let e = parse_trace("t", "1 2 3\n").unwrap_err();
    assert_eq!(e.errors[0].location.line, 1);
    // Later lines, after a blank one: the offsets carry over.
    let e = parse_trace("t", "1 2 3 4 6\n\n1 2 x 4 6\n").unwrap_err();
    let l = &e.errors[0].location;
    assert_eq!((l.line, l.col), (3, 5));
    let e = parse_filters(
        "f",
        "@10.0.0.0/8\t10.0.0.0/8\t0 : 65535\t0 : 65535\t0x06/0xFF\n\n@1.2.3.4/33\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x06/0xFF\n",
    )
    .unwrap_err();
    let l = &e.errors[0].location;
    assert_eq!((l.line, l.col), (3, 2));
}

#[test]
fn synthetic_sets_are_deterministic_and_agree_with_reference() {
    for fam in [Family::Acl, Family::Fw, Family::Ipc] {
        let a = classbench_like(fam, 1000, 7);
        assert_eq!(a, classbench_like(fam, 1000, 7));
        assert_ne!(a, classbench_like(fam, 1000, 8));
        let rs = validate(to_ruleset(&a), &Config::classbench()).expect("valid");
        for e in trace(&a, 300, 1) {
            let d = reference::classify(&rs, &e.header);
            assert_eq!(
                d.rule.map(|r| r.position),
                e.expected,
                "{:?}: {}",
                fam,
                e.header
            );
        }
    }
    // sizes the benches use
    for n in [10, 1000, 10_000] {
        assert_eq!(classbench_like(Family::Acl, n, 1).len(), n);
    }
}

/// "Never warn falsely": for every rule reported as shadowed, packets drawn inside it
/// are always decided by an earlier rule.
#[test]
fn shadow_warnings_are_never_false() {
    use fluxgate_ruleset::ErrorKind;
    use fluxgate_testkit::synth::{Rng, packet_in};
    let mut checked = 0;
    for (fam, seed) in [
        (Family::Acl, 1),
        (Family::Fw, 2),
        (Family::Ipc, 3),
        (Family::Fw, 4),
    ] {
        let filters = classbench_like(fam, 3000, seed);
        let rs = validate(to_ruleset(&filters), &Config::classbench()).expect("valid");
        let mut rng = Rng::new(seed);
        for w in rs
            .warnings()
            .iter()
            .filter(|w| w.kind == ErrorKind::Shadowed)
        {
            // the warning text names the rule: "rule #N can never match: …"
            let pos: usize = w
                .message
                .split_whitespace()
                .nth(1)
                .and_then(|s| s[1..].parse().ok())
                .expect("rule #N");
            for _ in 0..20 {
                let p = packet_in(&filters[pos - 1], &mut rng);
                let d = reference::classify(&rs, &p);
                let by = d.rule.map(|r| r.position as usize).expect("a rule decides");
                assert!(
                    by < pos,
                    "{}: shadowed rule #{pos} reached by {p} ({})",
                    w.message,
                    d.reason
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 400, "only {checked} packets checked");
}
