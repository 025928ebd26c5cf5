//! Rate limits in the kernel, on a real veth pair: a rule's token bucket
//! lets its burst through and limits the rest (a refill period of an hour
//! makes the counts exact however slowly the test runs), the packets over
//! it are the rule's counter; a swap of an unrelated rule keeps the bucket,
//! a changed limit starts full, a rollback brings the previous bucket back;
//! what the kernel cannot enforce yet is refused with its location and
//! changes nothing.

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
        (
            "proto udp limit rate over 10/second per saddr/32 drop\n",
            "acme.fg:5:11",
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
