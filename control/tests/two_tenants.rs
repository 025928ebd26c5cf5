//! A two-tenant ruleset loaded with the CLI onto a real veth pair: each tenant's
//! packets are passed or dropped as its rules say, and the per-rule counters
//! read back by `fluxgate stats --json` equal the packets sent.

mod common;

use std::net::Ipv4Addr;

use common::{Scratch, fluxgate, hits, ok, stats_json, write};
use fluxgate_testkit::net::{self, IF_B, Link};

const ACME: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
const BETA: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);

#[test]
fn each_tenant_gets_its_own_verdicts_and_exact_rule_counters() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    link.add_b_address(BETA);
    let s = Scratch::new("2t");
    write(
        &s.rules,
        "gateway.fg",
        "default pass\nproto tcp dport 23 drop\n",
    );
    write(
        &s.rules,
        "acme.fg",
        "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000 pass\nproto udp dport 7001 count\n",
    );
    write(
        &s.rules,
        "beta.fg",
        "tenant beta\nprefix 10.77.2.0/24\ndefault pass\nproto udp dport 7000 drop\n",
    );
    let ns = link.b.name();
    let rules = s.rules.display().to_string();

    // Loading onto an interface that is not attached is refused.
    let out = fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first load attaches, then applies (as `attach` + `apply`).
    let loaded = ok(fluxgate(&s, &["-n", ns, "load", &rules, IF_B]));
    let said = String::from_utf8_lossy(&loaded.stdout);
    assert!(said.contains(&format!("attached to {IF_B}")), "{said}");
    assert!(said.contains("generation 1 live"), "{said}");

    let n = 40;
    // (destination, port, packets that get through, why); ADDR_B belongs to no tenant.
    let exchanges = [
        (ACME, 7000, n, "acme#1 passes"),
        (ACME, 7001, 0, "acme count rule, then default drop"),
        (ACME, 7002, 0, "acme default drop"),
        (BETA, 7000, 0, "beta#1 drops"),
        (BETA, 7002, n, "beta default pass"),
        (net::ADDR_B, 7003, n, "no tenant: gateway default pass"),
    ];
    for (dst, port, through, why) in exchanges {
        assert_eq!(
            net::udp_exchange_to(&link, dst, port, n, 16),
            through,
            "{why}"
        );
    }

    let json = stats_json(&s, ns, IF_B);
    let n = n as u64;
    assert_eq!(hits(&json, "acme", 1), n);
    assert_eq!(hits(&json, "acme", 2), n, "count rule counted");
    assert_eq!(hits(&json, "acme", 0), 2 * n, "acme default: 7001 and 7002");
    assert_eq!(hits(&json, "beta", 1), n);
    assert_eq!(hits(&json, "beta", 0), n);
    assert_eq!(hits(&json, "gateway", 1), 0);
    assert_eq!(hits(&json, "gateway", 0), n);

    // --tenant narrows the report; the text form names the rules.
    let out = ok(fluxgate(&s, &["-n", ns, "stats", IF_B, "--tenant", "beta"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("beta: 40 passed, 40 dropped"), "{text}");
    assert!(!text.contains("acme:"), "{text}");

    // Applying the same ruleset again changes nothing, counters included.
    let out = ok(fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nothing changed"), "{text}");
    let json = stats_json(&s, ns, IF_B);
    assert_eq!(hits(&json, "beta", 1), n);
    assert_eq!(hits(&json, "acme", 0), 2 * n);
    ok(fluxgate(&s, &["-n", ns, "detach", IF_B]));
}

#[test]
fn a_bad_ruleset_is_rejected_with_its_location_and_nothing_changes() {
    net::require_root();
    let link = Link::new();
    let s = Scratch::new("2t");
    write(
        &s.rules,
        "gateway.fg",
        "default pass\nproto tcp dport 70000 drop\n",
    );
    let ns = link.b.name();
    ok(fluxgate(&s, &["-n", ns, "attach", IF_B]));
    let out = fluxgate(
        &s,
        &["-n", ns, "apply", &s.rules.display().to_string(), IF_B],
    );
    assert_eq!(out.status.code(), Some(7), "bad ruleset exit code");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gateway.fg:2:17"),
        "error names file:line:col: {err}"
    );
    assert_eq!(
        net::udp_exchange(&link, 7100, 20, 16),
        20,
        "still passing everything"
    );
}

/// A first `load` that fails, or only dry-runs, leaves the interface as it
/// was: not attached, nothing pinned, no state; traffic untouched.
#[test]
fn a_first_load_that_fails_or_dry_runs_leaves_the_interface_unattached() {
    net::require_root();
    let link = Link::new();
    let s = Scratch::new("2t");
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    let unattached = |what: &str| {
        let status = ok(fluxgate(&s, &["-n", ns, "status", "--json"]));
        let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
        assert_eq!(json["interfaces"], serde_json::json!([]), "{what}: {json}");
        assert!(
            std::fs::read_dir(s.pins.join(ns)).map_or(true, |mut d| d.next().is_none()),
            "{what}: nothing left pinned"
        );
        assert!(
            !s.state.join(ns).join(IF_B).exists(),
            "{what}: no state left for the interface"
        );
    };

    // A bad ruleset: refused before the interface is touched.
    write(
        &s.rules,
        "gateway.fg",
        "default drop\nproto tcp dport 70000 drop\n",
    );
    let out = fluxgate(&s, &["-n", ns, "load", &rules, IF_B]);
    assert_eq!(out.status.code(), Some(7), "bad ruleset exit code");
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.fg:2:17"));
    unattached("bad ruleset");

    // A good ruleset that fails in the kernel (a pool too small for its
    // tables): attached, refused, detached again.
    write(
        &s.rules,
        "gateway.fg",
        "default drop\nproto udp dport 7100 pass\n",
    );
    let out = fluxgate(&s, &["-n", ns, "load", &rules, IF_B, "--pool-cells", "2"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pool is full") && err.contains("detached again"),
        "{err}"
    );
    unattached("pool too small");

    // More tenants than the attachment has slots: refused at compile, with
    // the number of slots said, before anything is published.
    write(
        &s.rules,
        "acme.fg",
        "tenant acme\nprefix 10.77.1.0/24\ndefault pass\n",
    );
    write(
        &s.rules,
        "beta.fg",
        "tenant beta\nprefix 10.77.2.0/24\ndefault pass\n",
    );
    let out = fluxgate(&s, &["-n", ns, "load", &rules, IF_B, "--tenant-slots", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "two tenants in one slot: {err}");
    assert!(err.contains("1 tenant slots"), "{err}");
    unattached("too few tenant slots");
    // More counters than the attachment has slots (the gateway's default and
    // rule, a default per tenant: 4): refused at compile too.
    let out = fluxgate(
        &s,
        &["-n", ns, "load", &rules, IF_B, "--counter-slots", "3"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "four counters in three slots: {err}");
    assert!(
        err.contains("needs 4 counter slots") && err.contains("3 counter slots of the attachment"),
        "{err}"
    );
    unattached("too few counter slots");
    std::fs::remove_file(s.rules.join("acme.fg")).expect("remove acme.fg");
    std::fs::remove_file(s.rules.join("beta.fg")).expect("remove beta.fg");

    // A dry run: preflighted in the kernel, then detached again.
    let out = ok(fluxgate(&s, &["-n", ns, "load", &rules, IF_B, "--dry-run"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry run"));
    unattached("dry run");

    // Through all of it, traffic was never filtered (default drop never went live).
    assert_eq!(net::udp_exchange(&link, 7200, 20, 16), 20, "still passing");

    // Loaded for real; a second `load` is an `apply` onto the attachment.
    ok(fluxgate(&s, &["-n", ns, "load", &rules, IF_B]));
    assert_eq!(
        net::udp_exchange(&link, 7200, 20, 16),
        0,
        "default drop live"
    );
    write(
        &s.rules,
        "gateway.fg",
        "default drop\nproto udp dport 7200 pass\n",
    );
    let again = ok(fluxgate(
        &s,
        &["-n", ns, "load", &rules, "--pool-cells", "4096"],
    ));
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(!said.contains("attached to"), "attached only once: {said}");
    let warned = String::from_utf8_lossy(&again.stderr);
    assert!(
        warned.contains("attached already") && warned.contains("--pool-cells"),
        "an attach option it cannot honour is not ignored silently: {warned}"
    );
    assert!(said.contains("generation 2 live"), "{said}");
    assert_eq!(net::udp_exchange(&link, 7200, 20, 16), 20, "new rule live");
}
