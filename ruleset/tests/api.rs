//! Behaviour of the public API outside the case table: ids, diff, packets,
//! diagnostics rendering, directory loading.

use fluxgate_ruleset::diff::diff;
use fluxgate_ruleset::{Config, ErrorKind, PacketHeader, Ruleset, validate};

fn tenant(rules: &str) -> String {
    format!("tenant acme\nprefix 203.0.113.0/24\ndefault drop\n{rules}")
}

fn parse(gw: &str, acme: &str) -> Ruleset {
    Ruleset::parse_files(&[("gateway.fg", gw), ("acme.fg", acme)]).expect("parses")
}

#[test]
fn rule_ids_survive_edits_of_other_rules() {
    let a = parse(
        "default drop\n",
        &tenant("proto tcp dport 22 pass\nproto tcp dport 80 pass\n"),
    );
    let b = parse(
        "default drop\n",
        &tenant(
            "# new first rule\nproto tcp dport 443 pass\n\nproto tcp dport 22 pass\nproto tcp  dport 80 pass\n",
        ),
    );
    let ids = |r: &Ruleset| r.tenants[0].rules.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(&a)[..], ids(&b)[1..]);
    assert_eq!(b.tenants[0].rules[1].position, 2);
    // duplicates get distinct ids; the same rule in another tenant too
    let c = parse(
        "default drop\nproto tcp dport 22 pass\n",
        &tenant("proto tcp dport 22 pass\nproto tcp dport 22 pass\n"),
    );
    let (r0, r1) = (&c.tenants[0].rules[0], &c.tenants[0].rules[1]);
    assert_ne!(r0.id, r1.id);
    assert_ne!(r0.id, c.gateway.rules[0].id);
}

#[test]
fn diff_reports_rules_tenants_and_gateway() {
    let old = Ruleset::parse_files(&[
        ("gateway.fg", "default drop\nset web { 80 }\n".to_owned()),
        (
            "acme.fg",
            tenant("proto tcp dport 22 pass\nproto tcp dport @web pass\nproto udp pass\n"),
        ),
        (
            "beta.fg",
            "tenant beta\nprefix 198.51.100.0/24\ndefault pass\n".to_owned(),
        ),
        (
            "gone.fg",
            "tenant gone\nprefix 192.0.2.0/24\ndefault pass\n".to_owned(),
        ),
    ])
    .expect("old");
    let new = Ruleset::parse_files(&[
        (
            "gateway.fg",
            "default pass\nset web { 80, 443 }\nproto tcp dport 25 drop\n".to_owned(),
        ),
        (
            "acme.fg",
            tenant("proto udp pass\nproto tcp dport @web pass\nproto tcp dport 23 pass\n"),
        ),
        (
            "beta.fg",
            "tenant beta\nprefix 198.51.100.0/24\ndefault pass\n".to_owned(),
        ),
        (
            "new.fg",
            "tenant new\nprefix 192.0.2.0/24\ndefault pass\n".to_owned(),
        ),
    ])
    .expect("new");
    let (vo, vn) = (
        validate(old, &Config::default()).expect("v"),
        validate(new, &Config::default()).expect("v"),
    );
    let d = diff(vo.ruleset(), vn.ruleset());
    assert_eq!(
        d.gateway_default_changed
            .map(|x| x.1.to_string())
            .as_deref(),
        Some("pass")
    );
    assert!(d.gateway_sets_changed);
    assert_eq!(d.gateway_rules.added.len(), 1);
    assert_eq!(d.tenants_added, ["new"]);
    assert_eq!(d.tenants_removed, ["gone"]);
    assert_eq!(d.tenants_untouched, ["beta"]);
    let acme = &d.tenants_changed[0];
    assert_eq!(acme.name, "acme");
    assert_eq!(
        acme.rules
            .added
            .iter()
            .map(|r| r.position)
            .collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(
        acme.rules
            .removed
            .iter()
            .map(|r| r.position)
            .collect::<Vec<_>>(),
        [1]
    );
    // `@web` changed contents: same id, different resolved match
    assert_eq!(acme.rules.changed.len(), 1);
    assert_eq!(
        (acme.rules.changed[0].old, acme.rules.changed[0].new),
        (2, 2)
    );
    assert!(!acme.rules.reordered.is_empty(), "udp moved before @web");
    assert!(diff(vn.ruleset(), vn.ruleset()).is_empty());
}

#[test]
fn packet_text_round_trips_and_rejects_nonsense() {
    for s in [
        "tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S",
        "udp [2001:db8::1]:53 -> [2001:db8:1::2]:5353 iif eth1 vlan 42",
        "icmp 192.0.2.1 -> 203.0.113.10 type 8 code 0",
        "icmpv6 2001:db8::1 -> 2001:db8::2 type 135",
        "tcp 192.0.2.1 -> 203.0.113.10",
        "47 192.0.2.1 -> 203.0.113.10",
    ] {
        let p: PacketHeader = s.parse().expect(s);
        assert_eq!(p.to_string(), s);
    }
    let frag: PacketHeader = "tcp 192.0.2.1 -> 203.0.113.10".parse().expect("frag");
    assert_eq!((frag.sport, frag.tcp_flags), (None, None));
    for bad in [
        "",
        "tcp",
        "tcp 1.2.3.4:1 => 5.6.7.8:2",
        "tcp 1.2.3.4:1 -> [::1]:2",
        "udp 1.2.3.4:1 -> 5.6.7.8:2 flags S",
        "tcp 1.2.3.4:99999 -> 5.6.7.8:1",
        "foo 1.1.1.1 -> 2.2.2.2",
    ] {
        assert!(bad.parse::<PacketHeader>().is_err(), "{bad}");
    }
}

#[test]
fn diagnostics_render_a_caret_under_the_token() {
    let e = Ruleset::parse_files(&[("gateway.fg", "default drop\nproto tcp dport 8o pass\n")])
        .unwrap_err();
    let d = &e.errors[0];
    assert_eq!(d.kind, ErrorKind::Syntax);
    assert_eq!(d.to_string(), "gateway.fg:2:17: `8o` is not a port number");
    let r = d.render();
    assert!(r.contains("proto tcp dport 8o pass"), "{r}");
    let caret_line = r.lines().find(|l| l.contains('^')).expect("caret");
    let src_line = r.lines().find(|l| l.contains("dport 8o")).expect("source");
    assert_eq!(caret_line.find('^'), src_line.find("8o"), "{r}");
}

#[test]
fn shadow_warning_names_both_rules() {
    let rs = parse(
        "default drop\n",
        &tenant("proto tcp pass\nproto tcp dport 22 drop\n"),
    );
    let v = validate(rs, &Config::default()).expect("valid");
    let w = &v.warnings()[0];
    assert_eq!(w.kind, ErrorKind::Shadowed);
    assert_eq!(w.location.to_string(), "acme.fg:5:1");
    assert_eq!(
        w.related
            .as_ref()
            .map(|r| r.location.to_string())
            .as_deref(),
        Some("acme.fg:4:1")
    );
    assert!(w.render().contains("rule #1 matches first"));
}

#[test]
fn load_dir_reads_gateway_and_tenant_files() {
    let dir = std::env::temp_dir().join(format!("fluxgate-ruleset-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("gateway.fg"), "default drop\n").expect("write");
    std::fs::write(dir.join("acme.fg"), tenant("proto tcp dport 443 pass\n")).expect("write");
    std::fs::write(dir.join("README"), "ignored").expect("write");
    let rs = Ruleset::load_dir(&dir).expect("loads");
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(rs.tenants.len(), 1);
    assert_eq!(rs.tenants[0].rules.len(), 1);
    let e = Ruleset::load_dir(dir.join("missing")).unwrap_err();
    assert_eq!(e.errors[0].kind, ErrorKind::Io);
    // A file or directory that cannot be read has no line to point at.
    let text = e.errors[0].to_string();
    let missing = dir.join("missing").display().to_string();
    assert!(text.starts_with(&format!("{missing}: ")), "{text}");
}

#[test]
fn limits_on_tenants_and_total_rules() {
    let rs = parse(
        "default drop\nproto tcp pass\n",
        &tenant("proto tcp pass\n"),
    );
    let cfg = Config {
        max_tenants: 0,
        max_total_rules: 1,
        ..Config::default()
    };
    let e = validate(rs, &cfg).unwrap_err();
    assert_eq!(
        e.errors
            .iter()
            .filter(|d| d.kind == ErrorKind::Limit)
            .count(),
        2
    );
}

#[test]
fn models_built_in_code_are_checked_like_parsed_ones() {
    use fluxgate_ruleset::{Action, Match, Rule, RuleId, RuleSpans};
    let mut rs = parse("default drop\n", &tenant(""));
    let bad = |m: Match| Rule {
        id: RuleId(0),
        position: 0,
        matches: m,
        action: Action::Drop,
        limit: None,
        spans: RuleSpans::default(),
    };
    rs.gateway.rules = vec![
        bad(Match {
            iif: Some("has space".into()),
            ..Match::default()
        }),
        bad(Match {
            vlan: Some(5000),
            ..Match::default()
        }),
    ];
    rs.tenants[0].name = "../x".into();
    rs.assign_ids();
    let e = validate(rs, &Config::default()).unwrap_err();
    let kinds: Vec<ErrorKind> = e.errors.iter().map(|d| d.kind).collect();
    for k in [
        ErrorKind::Syntax,
        ErrorKind::VlanOutOfRange,
        ErrorKind::TenantName,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }
}

#[test]
fn gateway_decision_still_names_the_destination_tenant() {
    let rs = parse("default drop\nproto udp drop\n", &tenant("pass\n"));
    let v = validate(rs, &Config::default()).expect("valid");
    let d = fluxgate_ruleset::reference::classify(
        &v,
        &"udp 192.0.2.1:1 -> 203.0.113.9:53".parse().expect("p"),
    );
    assert_eq!(d.tenant_name.as_deref(), Some("acme"));
    assert_eq!(d.rule.map(|r| r.to_string()).as_deref(), Some("gateway#1"));
}

#[test]
fn an_error_inside_a_multiline_set_does_not_cascade() {
    let gw = "default drop\nset web {\n  80,\n  8o,\n  443\n}\nproto tcp dport 99999 pass\n";
    let e = Ruleset::parse_files(&[("gateway.fg", gw)]).unwrap_err();
    let at: Vec<String> = e.errors.iter().map(|d| d.location.to_string()).collect();
    assert_eq!(at, ["gateway.fg:4:3", "gateway.fg:7:17"]);
}

#[test]
fn compile_errors_point_at_the_rule() {
    use fluxgate_ruleset::{CompileOptions, compile_with};
    let compile = |acme: &str, opts: &CompileOptions| {
        let rs =
            validate(parse("default pass\n", &tenant(acme)), &Config::default()).expect("valid");
        compile_with(&rs, opts).expect_err("refused").to_string()
    };
    let opts = CompileOptions::default();
    assert_eq!(
        compile("proto tcp dport 22 pass\niif uplink0 drop\n", &opts),
        "acme.fg:5:1: acme rule #2: no interface named \"uplink0\" on this host"
    );
    let opts = CompileOptions {
        max_expansion: 3,
        ..CompileOptions::default()
    };
    assert_eq!(
        compile(
            "proto tcp dport 22 pass\n  proto tcp dport { 1, 3, 5, 7 } drop\n",
            &opts
        ),
        "acme.fg:5:3: acme rule #2 expands into 4 table rules (limit 3); split it"
    );
    // Seventeen count rules on the same traffic, then a drop: no cut separates them.
    let counts = "proto tcp dport 80 count\n".repeat(17);
    let text = compile(
        &format!("proto tcp dport 22 pass\n{counts}proto tcp dport 80 drop\n"),
        &CompileOptions::default(),
    );
    assert!(
        text.starts_with(
            "acme.fg:5:1: acme rules #2, #3, #4, #5, #6, #7, #8, #9, … overlap in one region"
        ),
        "{text}"
    );
    assert!(
        text.contains("18 table rules, a leaf holds at most 16"),
        "{text}"
    );
}
