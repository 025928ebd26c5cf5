//! Rate limits in the kernel, on a real veth pair: a rule's token bucket
//! lets its burst through and limits the rest (a refill period of an hour
//! makes the counts exact however slowly the test runs), the packets over
//! it are the rule's counter; a swap of an unrelated rule keeps the bucket,
//! a changed limit starts full, a rollback brings the previous bucket back;
//! a per-source limit keeps a bucket per source (one abusive source is
//! limited, a second one is not), forgets sources when its LRU map is full
//! (counted as evicted); bad limits, and more per-source limits than the
//! map has entries, are refused with their location and change nothing.

mod common;

use std::net::Ipv4Addr;

use common::{Scratch, fluxgate, hits, ok, stats_json, write};
use fluxgate_testkit::net::{self, IF_B, Link};

const ACME: Ipv4Addr = Ipv4Addr::new(10, 78, 1, 2);

fn acme(extra: &str, burst: u32) -> String {
    format!(
        "tenant acme\nprefix 10.78.1.0/24\ndefault pass\n\
         proto udp dport 7000 limit rate over 1/hour burst {burst} packets drop\n{extra}"
    )
}

#[test]
fn a_rule_limit_survives_an_unrelated_swap_restarts_when_changed_and_rolls_back() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    let s = Scratch::new("rl");
    write(&s.rules, "gateway.fg", "default pass\n");
    write(&s.rules, "acme.fg", &acme("", 5));
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    ok(fluxgate(&s, &["-n", ns, "load", &rules, IF_B]));

    // The burst passes, the rest is over the limit: dropped, counted on the rule.
    assert_eq!(net::udp_exchange_to(&link, ACME, 7000, 20, 16), 5);
    // Within the limit a packet goes on: the default passes port 7001.
    assert_eq!(net::udp_exchange_to(&link, ACME, 7001, 10, 16), 10);
    let json = stats_json(&s, ns, IF_B);
    assert_eq!(hits(&json, "acme", 1), 15, "limited packets: {json}");
    assert_eq!(hits(&json, "acme", 0), 15, "default: 5 within + 10 on 7001");
    let rule = json["interfaces"][0]["tenants"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["tenant"] == "acme"))
        .and_then(|t| t["rules"].as_array())
        .and_then(|rs| rs.iter().find(|r| r["position"] == 1))
        .cloned()
        .expect("acme#1");
    assert_eq!(rule["limited"], 15, "{rule}");
    let text =
        String::from_utf8_lossy(&ok(fluxgate(&s, &["-n", ns, "stats", IF_B])).stdout).into_owned();
    assert!(text.contains("15 limited"), "{text}");
    // explain: the rule's limit is shown, and the kernel agrees (a probe
    // run sees a full bucket, as the reference's first packet does)
    let out = ok(fluxgate(
        &s,
        &[
            "-n",
            ns,
            "explain",
            "--packet",
            "udp 10.0.0.1:4000 -> 10.78.1.2:7000",
            IF_B,
        ],
    ));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("limit rate over 1/hour burst 5 packets"),
        "{text}"
    );
    assert!(text.contains("counted as limited"), "{text}");
    assert!(text.contains("(agrees)"), "{text}");
    // metrics: the limited packets of the rule
    let body = scrape_metrics(&s, ns);
    let want = "fluxgate_rule_limited_packets_total{iface=\"fg-b\",scope=\"acme\",rule=\"1\",";
    let line = body
        .lines()
        .find(|l| l.starts_with(want))
        .unwrap_or_else(|| panic!("no {want} in:\n{body}"));
    assert!(line.ends_with(" 15"), "{line}");

    // An unrelated rule changes: the bucket stays empty (no new burst).
    write(&s.rules, "acme.fg", &acme("proto udp dport 7002 drop\n", 5));
    ok(fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]));
    assert_eq!(net::udp_exchange_to(&link, ACME, 7000, 10, 16), 0);
    assert_eq!(hits(&stats_json(&s, ns, IF_B), "acme", 1), 25);

    // The limit changes: a new rule, a full bucket.
    write(&s.rules, "acme.fg", &acme("proto udp dport 7002 drop\n", 8));
    ok(fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]));
    assert_eq!(net::udp_exchange_to(&link, ACME, 7000, 10, 16), 8);

    // Rollback: the previous limit, with its (empty) bucket.
    ok(fluxgate(&s, &["-n", ns, "rollback", IF_B]));
    assert_eq!(net::udp_exchange_to(&link, ACME, 7000, 10, 16), 0);
    ok(fluxgate(&s, &["-n", ns, "detach", IF_B]));
}

#[test]
fn bad_limits_and_limits_the_kernel_cannot_enforce_change_nothing() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    let s = Scratch::new("rl");
    write(&s.rules, "gateway.fg", "default pass\n");
    write(&s.rules, "acme.fg", &acme("", 5));
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    ok(fluxgate(&s, &["-n", ns, "load", &rules, IF_B]));
    let status = |s: &Scratch| {
        String::from_utf8_lossy(&ok(fluxgate(s, &["-n", ns, "status", IF_B])).stdout).into_owned()
    };
    let before = status(&s);
    for (text, at) in [
        ("proto udp limit rate over 0/second drop\n", "acme.fg:5:27"),
        (
            "proto udp limit rate over 10/second burst 0 packets drop\n",
            "acme.fg:5:43",
        ),
        ("ceiling 0/second\n", "acme.fg:5:9"),
    ] {
        write(&s.rules, "acme.fg", &acme(text, 5));
        let out = fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]);
        assert_eq!(out.status.code(), Some(7), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(at), "{text}: {err}");
        assert_eq!(status(&s), before, "{text}: live state changed");
    }
    // The live limit still holds.
    assert_eq!(net::udp_exchange_to(&link, ACME, 7000, 10, 16), 5);
    ok(fluxgate(&s, &["-n", ns, "detach", IF_B]));
}

#[test]
fn a_per_source_limit_limits_one_source_and_not_another_and_counts_evictions() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    let second = Ipv4Addr::new(10, 77, 0, 11);
    let third = Ipv4Addr::new(10, 77, 0, 12);
    link.add_a_address(second);
    link.add_a_address(third);
    let s = Scratch::new("rlps");
    write(&s.rules, "gateway.fg", "default pass\n");
    let per_source = |burst: u32| {
        format!(
            "tenant acme\nprefix 10.78.1.0/24\ndefault pass\n\
             proto udp dport 7000 limit rate over 1/hour burst {burst} packets per saddr/32 drop\n"
        )
    };
    write(&s.rules, "acme.fg", &per_source(6));
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    // Two entries: a third source evicts one.
    ok(fluxgate(
        &s,
        &["-n", ns, "load", "--source-buckets", "2", &rules, IF_B],
    ));
    // The abusive source gets its burst, then nothing.
    assert_eq!(net::udp_exchange_to(&link, ACME, 7000, 30, 16), 6);
    // A second source to the same tenant and port has its own bucket:
    // everything it sends within its burst passes, while the first is
    // still limited.
    assert_eq!(net::udp_exchange_from(&link, second, ACME, 7000, 6, 16), 6);
    assert_eq!(net::udp_exchange_to(&link, ACME, 7000, 10, 16), 0);
    let json = stats_json(&s, ns, IF_B);
    assert_eq!(hits(&json, "acme", 1), 34, "limited packets: {json}");
    let b = &json["interfaces"][0]["source_buckets"];
    assert_eq!(b["capacity"], 2, "{json}");
    assert_eq!(b["present"], 2, "{json}");
    assert_eq!(b["inserted"], 2, "{json}");
    assert_eq!(b["evicted"], 0, "{json}");
    // A third source in a map of two: one bucket is evicted.
    assert_eq!(net::udp_exchange_from(&link, third, ACME, 7000, 3, 16), 3);
    let json = stats_json(&s, ns, IF_B);
    let b = &json["interfaces"][0]["source_buckets"];
    assert_eq!(b["inserted"], 3, "{json}");
    assert!(b["present"].as_u64().is_some_and(|p| p <= 2), "{json}");
    assert!(b["evicted"].as_u64().is_some_and(|e| e >= 1), "{json}");
    let text =
        String::from_utf8_lossy(&ok(fluxgate(&s, &["-n", ns, "stats", IF_B])).stdout).into_owned();
    assert!(text.contains("per-source buckets"), "{text}");
    assert!(text.contains("3 inserted"), "{text}");
    let body = scrape_metrics(&s, ns);
    assert!(
        body.lines()
            .any(|l| l.starts_with("fluxgate_source_buckets_evicted_total{iface=\"fg-b\"}")),
        "{body}"
    );
    // A changed limit is a new rule: every source starts with a full bucket.
    write(&s.rules, "acme.fg", &per_source(4));
    ok(fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]));
    assert_eq!(net::udp_exchange_from(&link, second, ACME, 7000, 10, 16), 4);
    ok(fluxgate(&s, &["-n", ns, "detach", IF_B]));
}

#[test]
fn more_per_source_limits_than_the_map_holds_are_refused_and_change_nothing() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    let s = Scratch::new("rlmap");
    write(&s.rules, "gateway.fg", "default pass\n");
    write(&s.rules, "acme.fg", &acme("", 5));
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    ok(fluxgate(
        &s,
        &["-n", ns, "load", "--source-buckets", "1", &rules, IF_B],
    ));
    let status = |s: &Scratch| {
        String::from_utf8_lossy(&ok(fluxgate(s, &["-n", ns, "status", IF_B])).stdout).into_owned()
    };
    let before = status(&s);
    write(
        &s.rules,
        "acme.fg",
        &acme(
            "proto udp dport 7001 limit rate over 10/second per saddr/32 drop\n\
             proto udp dport 7002 limit rate over 10/second per saddr/24 drop\n",
            5,
        ),
    );
    let out = fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]);
    assert_eq!(out.status.code(), Some(7));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("acme.fg:6:22"), "{err}");
    assert!(err.contains("holds 1 source buckets"), "{err}");
    assert_eq!(status(&s), before, "live state changed");
    // gateway.fg asking for a larger map than the attachment's.
    write(&s.rules, "acme.fg", &acme("", 5));
    write(&s.rules, "gateway.fg", "default pass\nmeter-size 2\n");
    let out = fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]);
    assert_eq!(out.status.code(), Some(7));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gateway.fg:2:12"), "{err}");
    assert!(err.contains("`meter-size 2` asks"), "{err}");
    assert_eq!(status(&s), before, "live state changed");
    assert_eq!(net::udp_exchange_to(&link, ACME, 7000, 10, 16), 5);
    ok(fluxgate(&s, &["-n", ns, "detach", IF_B]));
}

/// Kills the child on drop (also when the test fails).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One scrape of `fluxgate serve --metrics` on a free port.
fn scrape_metrics(s: &Scratch, ns: &str) -> String {
    use std::io::{BufRead, Read, Write};
    let mut child = Child(
        common::fluxgate_cmd(s)
            .args(["-n", ns, "serve", "--metrics", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn serve"),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let addr = line
        .trim()
        .strip_prefix("serving metrics on http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected: {line}"))
        .to_owned();
    let mut c = std::net::TcpStream::connect(&addr).expect("connect to the metrics endpoint");
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    c.read_to_string(&mut out).expect("response");
    out
}
