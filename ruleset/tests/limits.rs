//! Rate limits: the grammar (the issue's lines as written), bad input with
//! `file:line:col`, stable ids, and the reference against the userspace
//! classifier on timed traces.

use fluxgate_ruleset::{
    Arrival, Classifier, CompileOptions, Config, ErrorKind, Meter, PacketHeader, Ruleset,
    ValidRuleset, Verdict, compile_with, reference, validate,
};

const GW: &str = "default drop\n\
    proto udp dport 53 limit rate over 2000/second burst 500 packets drop\n\
    proto tcp dport 80 limit rate over 20 mbytes/second drop\n";

const ACME: &str = "tenant acme\n\
    prefix 203.0.113.0/24\n\
    default pass\n\
    ceiling 1000/second 20 mbytes/second\n\
    proto tcp dport 22 limit rate over 100/second per saddr/32 drop\n\
    proto udp limit rate over 10/second burst 3 packets pass\n\
    proto udp drop\n";

fn valid(files: &[(&str, &str)]) -> ValidRuleset {
    validate(
        Ruleset::parse_files(files).expect("parses"),
        &Config::default(),
    )
    .expect("valid")
}

/// `(kind, "file:line:col")` of every error of a ruleset that must fail.
fn errors(files: &[(&str, &str)]) -> Vec<(ErrorKind, String)> {
    let err = match Ruleset::parse_files(files) {
        Ok(rs) => validate(rs, &Config::default()).expect_err("must fail"),
        Err(e) => e,
    };
    err.errors
        .iter()
        .map(|d| (d.kind, d.location.to_string()))
        .collect()
}

#[test]
fn the_issues_lines_parse_as_written_and_print_back() {
    let rs = valid(&[("gateway.fg", GW), ("acme.fg", ACME)]);
    let gw = &rs.gateway().rules;
    let l = gw[0].limit.expect("limit");
    assert_eq!(
        (l.rate.amount, l.rate.bytes, l.burst),
        (2000, false, Some(500))
    );
    let l = gw[1].limit.expect("limit");
    assert_eq!((l.rate.amount, l.rate.bytes), (20 << 20, true));
    let t = &rs.tenants()[0];
    assert_eq!(t.ceiling.packets.map(|l| l.rate.amount), Some(1000));
    assert_eq!(t.ceiling.bytes.map(|l| l.rate.amount), Some(20 << 20));
    let per = t.rules[0].limit.and_then(|l| l.per_source).expect("per");
    assert_eq!((per.v4, per.v6), (32, 64));
    assert_eq!(
        gw[0].to_string(),
        "proto udp dport 53 limit rate over 2000/second burst 500 packets drop"
    );
    assert_eq!(
        gw[1].to_string(),
        "proto tcp dport 80 limit rate over 20 mbytes/second drop"
    );
    // printed files parse back to the same model
    let files = rs.ruleset().to_files();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let again = valid(&files);
    assert_eq!(again.ruleset(), rs.ruleset());
}

#[test]
fn bad_limits_are_errors_at_their_place() {
    let tenant = |rule: &str| format!("tenant acme\nprefix 203.0.113.0/24\ndefault pass\n{rule}\n");
    let at = |files: &[(&str, &str)]| errors(files);
    let zero = tenant("proto udp limit rate over 0/second drop");
    assert_eq!(
        at(&[("gateway.fg", "default drop\n"), ("acme.fg", &zero)]),
        [(ErrorKind::RateLimit, "acme.fg:4:27".to_owned())]
    );
    let absurd = tenant("proto udp limit rate over 99999999999/second drop");
    assert_eq!(
        at(&[("gateway.fg", "default drop\n"), ("acme.fg", &absurd)]),
        [(ErrorKind::RateLimit, "acme.fg:4:27".to_owned())]
    );
    let burst0 = tenant("proto udp limit rate over 10/second burst 0 packets drop");
    assert_eq!(
        at(&[("gateway.fg", "default drop\n"), ("acme.fg", &burst0)]),
        [(ErrorKind::RateLimit, "acme.fg:4:43".to_owned())]
    );
    let unit = tenant("proto udp limit rate over 10/second burst 5 bytes drop");
    assert_eq!(
        at(&[("gateway.fg", "default drop\n"), ("acme.fg", &unit)]),
        [(ErrorKind::Syntax, "acme.fg:4:45".to_owned())]
    );
    let no_over = tenant("proto udp limit rate 10/second drop");
    assert_eq!(
        at(&[("gateway.fg", "default drop\n"), ("acme.fg", &no_over)]),
        [(ErrorKind::Syntax, "acme.fg:4:22".to_owned())]
    );
    let per = tenant("proto udp limit rate over 10/second per saddr/33 drop");
    assert_eq!(
        at(&[("gateway.fg", "default drop\n"), ("acme.fg", &per)]),
        [(ErrorKind::Syntax, "acme.fg:4:41".to_owned())]
    );
    let count = tenant("proto udp limit rate over 10/second count");
    assert_eq!(
        at(&[("gateway.fg", "default drop\n"), ("acme.fg", &count)]),
        [(ErrorKind::RateLimit, "acme.fg:4:11".to_owned())]
    );
    assert_eq!(
        at(&[("gateway.fg", "default drop\nmeter-size 0\n")]),
        [(ErrorKind::RateLimit, "gateway.fg:2:12".to_owned())]
    );
    assert_eq!(
        at(&[("gateway.fg", "default drop\nmeter-size 99999999999\n")]),
        [(ErrorKind::RateLimit, "gateway.fg:2:12".to_owned())]
    );
    // the operator's file only
    let meter = tenant("meter-size 10");
    assert_eq!(
        at(&[("gateway.fg", "default drop\n"), ("acme.fg", &meter)]),
        [(ErrorKind::Syntax, "acme.fg:4:1".to_owned())]
    );
}

#[test]
fn quotas_cap_limits_and_ceilings() {
    let gw = "default drop\nquota acme limits 1 ceiling 2000/second\n";
    let two = "tenant acme\nprefix 203.0.113.0/24\ndefault pass\n\
               proto udp limit rate over 10/second drop\n\
               proto tcp limit rate over 10/second drop\n";
    assert_eq!(
        errors(&[("gateway.fg", gw), ("acme.fg", two)]),
        [(ErrorKind::Quota, "acme.fg:5:11".to_owned())]
    );
    let above = "tenant acme\nprefix 203.0.113.0/24\ndefault pass\nceiling 2001/second\n";
    let err = Ruleset::parse_files(&[("gateway.fg", gw), ("acme.fg", above)])
        .map(|rs| validate(rs, &Config::default()).expect_err("above the operator's"))
        .expect("parses");
    assert_eq!(err.errors.len(), 1);
    let d = &err.errors[0];
    assert_eq!(
        (d.kind, d.location.to_string()),
        (ErrorKind::RateLimit, "acme.fg:4:1".to_owned())
    );
    assert!(
        d.message
            .contains("above the 2000/second its operator allows"),
        "{}",
        d.message
    );
    // lower is fine; with none of its own, the operator's applies
    let lower = "tenant acme\nprefix 203.0.113.0/24\ndefault pass\nceiling 60000/minute\n";
    let rs = valid(&[("gateway.fg", gw), ("acme.fg", lower)]);
    assert_eq!(
        rs.ceiling(&rs.tenants()[0]).packets.map(|l| l.rate.amount),
        Some(60000)
    );
    let none = "tenant acme\nprefix 203.0.113.0/24\ndefault pass\n";
    let rs = valid(&[("gateway.fg", gw), ("acme.fg", none)]);
    assert_eq!(
        rs.ceiling(&rs.tenants()[0]).packets.map(|l| l.rate.amount),
        Some(2000)
    );
}

#[test]
fn a_changed_limit_is_a_new_rule_an_unchanged_one_keeps_its_id() {
    let id = |acme: &str| {
        let rs = valid(&[("gateway.fg", "default drop\n"), ("acme.fg", acme)]);
        rs.tenants()[0]
            .rules
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    let base = "tenant acme\nprefix 203.0.113.0/24\ndefault pass\n\
                proto udp limit rate over 10/second drop\nproto tcp pass\n";
    let other = base.replace("proto tcp pass", "proto tcp dport 22 pass");
    let changed = base.replace("10/second", "11/second");
    let plain = base.replace(" limit rate over 10/second", "");
    assert_eq!(id(base)[0], id(&other)[0]);
    assert_ne!(id(base)[0], id(&changed)[0]);
    assert_ne!(id(base)[0], id(&plain)[0]);
    // a rule without a limit keeps the id it had before limits existed
    assert_eq!(id(&plain)[0], id(&plain)[0]);
}

/// A small deterministic generator (no dependency for a handful of numbers).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn reference_and_userspace_classifier_agree_on_timed_traces() {
    let rs = valid(&[("gateway.fg", GW), ("acme.fg", ACME)]);
    let image = compile_with(&rs, &CompileOptions::default()).expect("compiles");
    let classifier = Classifier::new(image, []);
    let packets: Vec<PacketHeader> = [
        "udp 192.0.2.1:4000 -> 203.0.113.9:53",
        "udp 192.0.2.2:4000 -> 203.0.113.9:5353",
        "tcp 192.0.2.1:4000 -> 203.0.113.9:22 flags S",
        "tcp 192.0.2.7:4000 -> 203.0.113.9:22 flags S",
        "tcp 192.0.2.1:4000 -> 203.0.113.9:80 flags A",
        "tcp 192.0.2.1:4000 -> 198.51.100.1:80 flags A",
    ]
    .iter()
    .map(|s| s.parse().expect("packet"))
    .collect();
    for seed in 0..4 {
        let mut rng = Lcg(seed);
        let (mut reference_meter, mut user_meter) = (Meter::new(), Meter::new());
        let mut t = 1_000_000_000u64;
        let (mut limited, mut within) = (0, 0);
        for i in 0..20_000 {
            // bursts and lulls: 0–2 ms apart
            t += rng.next(2_000_000);
            let p = &packets[rng.next(packets.len() as u64) as usize];
            let at = Arrival {
                at_ns: t,
                len: 64 + rng.next(1400) as u32,
            };
            let want = reference::classify_at(&rs, &mut reference_meter, p, at);
            let got = classifier.to_decision(&classifier.classify_at(&mut user_meter, p, at));
            assert!(
                want.same_outcome(&got),
                "seed {seed} packet {i} ({p} at {t}): reference {want:?}, classifier {got:?}"
            );
            if want.limited {
                limited += 1;
            } else {
                within += 1;
            }
        }
        assert!(
            limited > 100 && within > 100,
            "{limited} limited, {within} not"
        );
    }
}

#[test]
fn the_ceiling_holds_a_flood_to_its_rate_and_the_rest_passes() {
    let rs = valid(&[
        ("gateway.fg", "default drop\n"),
        (
            "a.fg",
            "tenant a\nprefix 203.0.113.0/24\ndefault pass\nceiling 1000/second\n",
        ),
        ("b.fg", "tenant b\nprefix 198.51.100.0/24\ndefault pass\n"),
    ]);
    let to_a: PacketHeader = "udp 192.0.2.1:4000 -> 203.0.113.9:53"
        .parse()
        .expect("packet");
    let to_b: PacketHeader = "udp 192.0.2.1:4000 -> 198.51.100.9:53"
        .parse()
        .expect("packet");
    let mut meter = Meter::new();
    // 10 s: A at 100k packets/s, B at 1k packets/s.
    let mut a_passed = [0u32; 10];
    let mut b_lost = 0;
    for i in 0..1_000_000u64 {
        let at = Arrival {
            at_ns: 1_000_000_000 + i * 10_000,
            len: 100,
        };
        let d = reference::classify_at(&rs, &mut meter, &to_a, at);
        if d.verdict == Verdict::Pass {
            a_passed[(i / 100_000) as usize] += 1;
        } else {
            assert!(d.limited && d.rule.is_none());
        }
        if i % 100 == 0
            && reference::classify_at(&rs, &mut meter, &to_b, at).verdict != Verdict::Pass
        {
            b_lost += 1;
        }
    }
    assert_eq!(b_lost, 0);
    // burst 5 in the first second, then exactly the rate
    assert!((1000..=1005).contains(&a_passed[0]), "{a_passed:?}");
    assert!(
        a_passed[1..].iter().all(|&n| (999..=1001).contains(&n)),
        "{a_passed:?}"
    );
}

#[test]
fn at_most_fifteen_limits_a_file() {
    let rules: String = (0..16)
        .map(|i| {
            format!(
                "proto udp dport {} limit rate over 10/second drop\n",
                1000 + i
            )
        })
        .collect();
    let acme = format!("tenant acme\nprefix 203.0.113.0/24\ndefault pass\n{rules}");
    assert_eq!(
        errors(&[("gateway.fg", "default drop\n"), ("acme.fg", &acme)]),
        [(ErrorKind::RateLimit, "acme.fg:19:22".to_owned())]
    );
}
