//! gateway.fg's `allocate` and `quota`: what each tenant may claim and
//! consume, with every error at `file:line:col` of the tenant's file.

use fluxgate_ruleset::{
    CompileOptions, Config, ErrorKind, Errors, Ruleset, ValidRuleset, check_table_quotas,
    compile_with, validate,
};

fn check(files: &[(&str, &str)]) -> Result<ValidRuleset, Errors> {
    validate(Ruleset::parse_files(files)?, &Config::default())
}

fn found(err: &Errors) -> Vec<(ErrorKind, String)> {
    err.errors
        .iter()
        .map(|d| (d.kind, d.location.to_string()))
        .collect()
}

const ACME: &str = "tenant acme\nprefixes { 203.0.113.0/24, 2001:db8:ac::/48 }\ndefault drop\n";
const BOB: &str = "tenant bob\nprefix 198.51.100.0/24\ndefault pass\n";

#[test]
fn a_claim_inside_the_allocation_is_valid() {
    let gw = "default drop\nallocate acme { 203.0.113.0/23, 2001:db8:ac::/48 }\nallocate bob 198.51.100.0/24\n";
    let rs = check(&[("gateway.fg", gw), ("acme.fg", ACME), ("bob.fg", BOB)]).unwrap();
    assert_eq!(rs.gateway().allocations.len(), 2);
    assert_eq!(rs.gateway().allocations[1].tenant, "bob");
}

#[test]
fn a_claim_outside_the_allocation_is_an_error_at_the_prefix_naming_it() {
    // bob claims the gateway's management address, which nobody else claims
    let gw = "default drop\nallocate acme { 203.0.113.0/24, 2001:db8:ac::/48 }\nallocate bob 198.51.100.0/25\n";
    let err = check(&[("gateway.fg", gw), ("acme.fg", ACME), ("bob.fg", BOB)]).unwrap_err();
    assert_eq!(
        found(&err),
        [(ErrorKind::Allocation, "bob.fg:2:8".to_owned())]
    );
    let d = &err.errors[0];
    assert!(
        d.message
            .contains("outside its allocation `allocate bob { 198.51.100.0/25 }`"),
        "{}",
        d.message
    );
    let related = d.related.as_ref().map(|r| r.location.to_string());
    assert_eq!(related.as_deref(), Some("gateway.fg:3:10"));
}

#[test]
fn once_one_allocation_is_declared_every_tenant_needs_one() {
    let gw = "default drop\nallocate acme { 203.0.113.0/24, 2001:db8:ac::/48 }\n";
    let err = check(&[("gateway.fg", gw), ("acme.fg", ACME), ("bob.fg", BOB)]).unwrap_err();
    assert_eq!(
        found(&err),
        [(ErrorKind::Allocation, "bob.fg:1:8".to_owned())]
    );
    // without any allocation, the claims are taken as written (as before)
    check(&[
        ("gateway.fg", "default drop\n"),
        ("acme.fg", ACME),
        ("bob.fg", BOB),
    ])
    .unwrap();
}

#[test]
fn overlapping_claims_are_reported_at_the_claim_outside_its_allocation() {
    // bob also claims acme's space: with allocations the error is bob's alone
    let bob = "tenant bob\nprefixes { 198.51.100.0/24, 203.0.113.128/25 }\ndefault pass\n";
    let gw = "default drop\nallocate acme { 203.0.113.0/24, 2001:db8:ac::/48 }\nallocate bob 198.51.100.0/24\n";
    let err = check(&[("gateway.fg", gw), ("acme.fg", ACME), ("bob.fg", bob)]).unwrap_err();
    assert_eq!(
        found(&err),
        [(ErrorKind::Allocation, "bob.fg:2:29".to_owned())]
    );
}

#[test]
fn allocations_of_two_tenants_must_not_overlap() {
    let gw = "default drop\nallocate acme 203.0.113.0/24\nallocate bob { 198.51.100.0/24, 203.0.113.64/26 }\nallocate acme 192.0.2.0/24\n";
    let err = check(&[("gateway.fg", gw)]).unwrap_err();
    assert_eq!(
        found(&err),
        [
            (ErrorKind::Allocation, "gateway.fg:3:33".to_owned()), // the second one
            (ErrorKind::Allocation, "gateway.fg:4:10".to_owned()), // acme twice
        ]
    );
    assert!(
        err.errors[0]
            .message
            .contains("overlaps allocation 203.0.113.0/24 of tenant `acme`")
    );
}

#[test]
fn allocate_and_quota_belong_to_the_operator() {
    let acme = "tenant acme\nprefix 203.0.113.0/24\ndefault drop\nallocate acme 0.0.0.0/0\nquota acme rules 1000000\n";
    let err =
        Ruleset::parse_files(&[("gateway.fg", "default drop\n"), ("acme.fg", acme)]).unwrap_err();
    assert_eq!(
        found(&err),
        [
            (ErrorKind::Syntax, "acme.fg:4:1".to_owned()),
            (ErrorKind::Syntax, "acme.fg:5:1".to_owned())
        ]
    );
    assert!(err.errors[0].message.contains("belongs in gateway.fg"));
}

#[test]
fn quota_syntax() {
    let gw = "default drop\nquota rules 5000 table-bytes 4mbytes counters 5000\nquota acme rules 100000 table-bytes 512 kbytes\nquota rules rules 7\n";
    let rs = Ruleset::parse_files(&[("gateway.fg", gw)]).unwrap();
    let q = &rs.gateway.quotas;
    assert_eq!(
        (
            q[0].tenant.as_deref(),
            q[0].rules,
            q[0].table_bytes,
            q[0].counters
        ),
        (None, Some(5000), Some(4 << 20), Some(5000))
    );
    assert_eq!(
        (
            q[1].tenant.as_deref(),
            q[1].rules,
            q[1].table_bytes,
            q[1].counters
        ),
        (Some("acme"), Some(100_000), Some(512 << 10), None)
    );
    assert_eq!(
        (q[2].tenant.as_deref(), q[2].rules),
        (Some("rules"), Some(7))
    );
    // acme's own limits, the default's for the rest
    let acme = rs.gateway.quota_for("acme");
    assert_eq!(acme.rules.map(|q| q.0), Some(100_000));
    assert_eq!(acme.counters.map(|q| q.0), Some(5000));
    // printed back, it parses to the same
    let again = Ruleset::parse_files(&[("gateway.fg", rs.gateway.to_string())]).unwrap();
    assert_eq!(again.gateway, rs.gateway);

    let bad = "default drop\nquota acme\nquota rules 5 rules 6\nquota table-bytes 4gbytes\nquota acme pies 4\n";
    let err = Ruleset::parse_files(&[("gateway.fg", bad)]).unwrap_err();
    let at: Vec<String> = err.errors.iter().map(|d| d.location.to_string()).collect();
    assert_eq!(
        at,
        [
            "gateway.fg:2:11",
            "gateway.fg:3:15",
            "gateway.fg:4:19",
            "gateway.fg:5:12"
        ]
    );
}

#[test]
fn a_tenant_over_its_rules_quota_is_an_error_at_the_rule_crossing_it() {
    let gw = "default drop\nquota rules 100\nquota acme rules 3\n";
    let acme = "tenant acme\nprefix 203.0.113.0/24\ndefault drop\nproto tcp dport 22 pass\nproto tcp dport { 80, 443 } pass\nproto udp dport 53 pass\n";
    let err = check(&[("gateway.fg", gw), ("acme.fg", acme), ("bob.fg", BOB)]).unwrap_err();
    assert_eq!(found(&err), [(ErrorKind::Quota, "acme.fg:6:1".to_owned())]);
    let d = &err.errors[0];
    assert!(
        d.message.contains("tenant `acme`") && d.message.contains("quota of rules"),
        "{}",
        d.message
    );
    let related = d.related.as_ref().map(|r| r.location.to_string());
    assert_eq!(related.as_deref(), Some("gateway.fg:3:1"));
}

#[test]
fn a_tenant_over_its_counter_quota_is_an_error_at_the_first_rule_past_it() {
    // 2 counters: one rule and the default
    let gw = "default drop\nquota counters 2\n";
    let acme = "tenant acme\nprefix 203.0.113.0/24\ndefault drop\nproto tcp dport 22 pass\nproto tcp dport 80 pass\nproto tcp dport 443 pass\n";
    let err = check(&[("gateway.fg", gw), ("acme.fg", acme), ("bob.fg", BOB)]).unwrap_err();
    assert_eq!(found(&err), [(ErrorKind::Quota, "acme.fg:5:1".to_owned())]);
    assert!(err.errors[0].message.contains("quota of 2 counters"));
}

#[test]
fn a_table_over_its_byte_quota_is_refused_after_compiling() {
    let gw = "default drop\nquota acme table-bytes 1kbytes\n";
    let mut acme = String::from("tenant acme\nprefix 203.0.113.0/24\ndefault drop\n");
    for p in 1..=60 {
        acme.push_str(&format!("proto tcp dport {p} pass\n"));
    }
    let rs = check(&[("gateway.fg", gw), ("acme.fg", &acme), ("bob.fg", BOB)]).unwrap();
    let image = compile_with(&rs, &CompileOptions::default()).unwrap();
    let err = check_table_quotas(&rs, &image).unwrap_err();
    assert_eq!(found(&err), [(ErrorKind::Quota, "acme.fg:1:8".to_owned())]);
    assert!(err.errors[0].message.contains("quota of 1024 table bytes"));
    // bob has no table-bytes quota
    let gw = "default drop\nquota bob table-bytes 1kbytes\n";
    let rs = check(&[("gateway.fg", gw), ("acme.fg", &acme), ("bob.fg", BOB)]).unwrap();
    check_table_quotas(&rs, &compile_with(&rs, &CompileOptions::default()).unwrap()).unwrap();
}
