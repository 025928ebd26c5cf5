//! One tenant's file cannot block another tenant's change, nor claim space
//! the operator did not allocate to it, nor go over its quota: with real XDP
//! on a veth pair, the refused tenant keeps its live rules while the other
//! tenant's change goes live (exit 10, `--json` naming the refused tenant);
//! `--atomic` refuses everything (exit 7).

mod common;

use std::net::Ipv4Addr;

use common::{Scratch, fluxgate, ok, write};
use fluxgate_testkit::net::{self, IF_B, Link};

const ACME: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
const BETA: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);

/// The operator's file: each tenant's address space; ADDR_B (the gateway's
/// own address, 10.77.0.2) is nobody's.
const GATEWAY: &str = "default pass\n\
                       allocate acme { 10.77.1.0/24 }\n\
                       allocate beta { 10.77.2.0/24 }\n\
                       quota rules 100 counters 100\n\
                       quota beta rules 3\n";
const ACME_V1: &str = "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000 pass\n";
/// acme's change: also opens 7001.
const ACME_V2: &str =
    "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport { 7000, 7001 } pass\n";
const BETA_V1: &str = "tenant beta\nprefix 10.77.2.0/24\ndefault pass\nproto udp dport 7000 drop\n";
/// beta claims the gateway's address, outside its allocation, to drop its traffic.
const BETA_GRAB: &str =
    "tenant beta\nprefixes { 10.77.2.0/24, 10.77.0.2 }\ndefault drop\nproto udp dport 7000 drop\n";

const N: usize = 20;

/// Packets of N that get through to `dst:port`.
fn through(link: &Link, dst: Ipv4Addr, port: u16) -> usize {
    net::udp_exchange_to(link, dst, port, N, 16)
}

fn setup(tag: &str) -> (Link, Scratch) {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    link.add_b_address(BETA);
    let s = Scratch::new(tag);
    write(&s.rules, "gateway.fg", GATEWAY);
    write(&s.rules, "acme.fg", ACME_V1);
    write(&s.rules, "beta.fg", BETA_V1);
    let rules = s.rules.display().to_string();
    ok(fluxgate(&s, &["-n", link.b.name(), "load", &rules, IF_B]));
    assert_eq!(through(&link, ACME, 7001), 0, "acme v1 drops 7001");
    (link, s)
}

#[test]
fn a_claim_outside_its_allocation_is_refused_while_the_other_tenant_applies() {
    let (link, s) = setup("apart-alloc");
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    write(&s.rules, "acme.fg", ACME_V2);
    write(&s.rules, "beta.fg", BETA_GRAB);

    // All or nothing: beta's bad file refuses acme's change too.
    let out = fluxgate(&s, &["-n", ns, "apply", &rules, IF_B, "--atomic"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    // The report wraps long lines (`\n  | `) where the path's length puts
    // them: read it as one line.
    let flat: Vec<&str> = err.split_whitespace().filter(|w| *w != "|").collect();
    let flat = flat.join(" ");
    assert!(
        flat.contains("beta.fg:2:26") && flat.contains("outside its allocation"),
        "{err}"
    );
    assert_eq!(
        through(&link, ACME, 7001),
        0,
        "--atomic: acme's change is not live"
    );

    // By default beta is refused alone and acme's change goes live.
    let out = fluxgate(&s, &["-n", ns, "apply", &rules, IF_B, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object: {lines:?}");
    let json: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(json["generation"], 2);
    assert_eq!(json["refused"][0]["tenant"], "beta");
    assert_eq!(json["refused"][0]["kept_live"], true);
    let diag = &json["refused"][0]["diagnostics"][0];
    assert_eq!(diag["kind"], "Allocation");
    assert!(
        diag["at"]["file"].as_str().unwrap().ends_with("beta.fg"),
        "{diag}"
    );
    assert_eq!(
        (diag["at"]["line"].as_u64(), diag["at"]["col"].as_u64()),
        (Some(2), Some(26))
    );
    assert!(
        diag["message"]
            .as_str()
            .unwrap()
            .contains("allocate beta { 10.77.2.0/24 }")
    );
    assert_eq!(json["changed"], serde_json::json!(["tenant-acme"]));

    assert_eq!(through(&link, ACME, 7001), N, "acme's change is live");
    assert_eq!(through(&link, ACME, 7002), 0, "acme default drop");
    assert_eq!(
        through(&link, net::ADDR_B, 7002),
        N,
        "the gateway's address stays nobody's"
    );
    assert_eq!(
        through(&link, BETA, 7002),
        N,
        "beta keeps its live default pass"
    );
    assert_eq!(through(&link, BETA, 7000), 0, "beta keeps its live rule");

    // Now only beta's file differs from what is live: refusing it leaves
    // nothing to apply, so the apply is a rejected ruleset (7), as it was.
    let out = fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("beta.fg:2:26"), "{err}");
}

#[test]
fn a_tenant_over_its_quota_is_refused_with_its_name_while_the_other_applies() {
    let (link, s) = setup("apart-quota");
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    write(&s.rules, "acme.fg", ACME_V2);
    // 4 table rules, over beta's quota of 3
    write(
        &s.rules,
        "beta.fg",
        "tenant beta\nprefix 10.77.2.0/24\ndefault drop\nproto udp dport { 7000, 7001, 7002, 7003 } pass\n",
    );
    let out = fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(
        err.contains("refused tenant beta: keeps its live rules"),
        "{err}"
    );
    assert!(
        err.contains("tenant `beta`") && err.contains("quota of rules"),
        "{err}"
    );
    assert!(err.contains("partially applied"), "{err}");
    assert_eq!(through(&link, ACME, 7001), N, "acme's change is live");
    assert_eq!(through(&link, BETA, 7000), 0, "beta keeps its live rules");
    assert_eq!(
        through(&link, BETA, 7005),
        N,
        "beta keeps its live default pass"
    );

    // `check` reports the bad tenant (exit 7), as before.
    let out = fluxgate(&s, &["check", &rules]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("beta.fg:4:1"), "{err}");
}

#[test]
fn without_allocations_an_overlapping_claim_is_refused_not_the_tenant_it_overlaps() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    link.add_b_address(BETA);
    let s = Scratch::new("apart-overlap");
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    // No `allocate`: claims are taken as written, as before allocations.
    write(&s.rules, "gateway.fg", "default pass\n");
    write(&s.rules, "acme.fg", ACME_V1);
    write(&s.rules, "beta.fg", BETA_V1);
    ok(fluxgate(&s, &["-n", ns, "load", &rules, IF_B]));

    // beta grabs all of 10.77.0.0/16, acme's /24 inside it; the overlap is
    // reported at acme's prefix (it sorts second), but beta changed its file.
    write(&s.rules, "acme.fg", ACME_V2);
    write(
        &s.rules,
        "beta.fg",
        "tenant beta\nprefix 10.77.0.0/16\ndefault drop\n",
    );
    let out = fluxgate(&s, &["-n", ns, "apply", &rules, IF_B, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["refused"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json["refused"][0]["tenant"], "beta");
    assert_eq!(
        json["refused"][0]["diagnostics"][0]["kind"],
        "TenantOverlap"
    );
    assert_eq!(through(&link, ACME, 7001), N, "acme's change is live");
    assert_eq!(through(&link, net::ADDR_B, 7001), N, "not beta's");
    assert_eq!(
        through(&link, BETA, 7002),
        N,
        "beta keeps its live default pass"
    );
}
