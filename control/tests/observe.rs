//! Watching a live gateway, on real traffic: canary applies (a patch that
//! passes preflight but drops most of a tenant's real traffic is rolled back
//! by itself within its window, the other tenant sees no change; a harmless
//! patch stays), Prometheus metrics scraped over HTTP, and dropped packets
//! captured to pcapng and read back with tcpdump.

mod common;

use std::{net::Ipv4Addr, process::Output};

use common::{Scratch, fluxgate, hits, ok, stats_json, write};
use fluxgate_testkit::net::{self, Flow, IF_B, Link};

const ACME: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
const BETA: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);

fn acme(rule: &str) -> String {
    format!(
        "tenant acme\nprefix 10.77.1.0/24\ndefault drop\n{rule}\n\
         guard \"udp 198.51.100.7:40000 -> 10.77.1.2:7000\" pass\n\
         guard \"tcp 198.51.100.7:40000 -> 10.77.1.2:3306 flags S\" drop\n"
    )
}

fn ruleset(s: &Scratch, name: &str, acme_rule: &str) -> String {
    let dir = s.rules_dir(name);
    write(&dir, "gateway.fg", "default pass\n");
    write(&dir, "acme.fg", &acme(acme_rule));
    write(
        &dir,
        "beta.fg",
        "tenant beta\nprefix 10.77.2.0/24\ndefault drop\nproto udp dport 7000 pass\n\
         guard \"udp 198.51.100.7:40000 -> 10.77.2.2:7000\" pass\n",
    );
    dir.display().to_string()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_canary_that_hurts_real_traffic_rolls_itself_back_and_a_good_one_stays() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    link.add_b_address(BETA);
    let s = Scratch::new("canary");
    let ns = link.b.name().to_owned();
    let v1 = ruleset(&s, "v1", "proto udp dport 7000 pass");
    // Passes the guards (they come from 198.51.100.7), drops the real clients.
    let v2 = ruleset(&s, "v2", "saddr 198.51.100.0/24 proto udp dport 7000 pass");
    // Harmless: one more service.
    let v3 = ruleset(&s, "v3", "proto udp dport { 7000, 7001 } pass");
    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    ok(fluxgate(&s, &["-n", &ns, "apply", &v1]));

    let flow = Flow::start(&link, &[(ACME, 7000), (BETA, 7000)], 1000);
    let out = fluxgate(
        &s,
        &[
            "-n",
            &ns,
            "apply",
            &v2,
            "--canary",
            "5s",
            "--baseline",
            "1s",
            "--reason",
            "partners only",
        ],
    );
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    assert!(
        text(&out).contains("ROLLED BACK") && text(&out).contains("pass ratio"),
        "{}",
        text(&out)
    );
    let status = ok(fluxgate(&s, &["-n", &ns, "status", IF_B, "--json"]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let tenants = status["interfaces"][0]["tenants"]
        .as_array()
        .expect("tenants")
        .clone();
    let acme = tenants
        .iter()
        .find(|t| t["tenant"] == "acme")
        .expect("acme");
    assert_eq!(
        acme["generation"], 1,
        "acme back on its old rules: {status}"
    );
    let history =
        String::from_utf8_lossy(&ok(fluxgate(&s, &["-n", &ns, "history"])).stdout).into_owned();
    assert!(history.contains("canary-rollback"), "{history}");

    let out = ok(fluxgate(
        &s,
        &[
            "-n",
            &ns,
            "apply",
            &v3,
            "--canary",
            "2s",
            "--baseline",
            "1s",
        ],
    ));
    assert!(text(&out).contains("healthy"), "{}", text(&out));
    let result = flow.stop();
    let (beta_sent, beta_received) = result[1];
    assert_eq!(beta_received, beta_sent, "beta saw no change");
    let j = stats_json(&s, &ns, IF_B);
    assert_eq!(hits(&j, "beta", 1), beta_sent);
    let history =
        String::from_utf8_lossy(&ok(fluxgate(&s, &["-n", &ns, "history"])).stdout).into_owned();
    assert!(history.contains("canary-passed"), "{history}");
}

/// Kills the child on drop (also when the test fails).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

#[test]
fn metrics_are_scraped_over_http_with_per_tenant_and_per_rule_counters() {
    use std::io::BufRead;
    net::require_root();
    let link = Link::new();
    link.add_b_address(BETA);
    let s = Scratch::new("metrics");
    let ns = link.b.name().to_owned();
    let v1 = ruleset(&s, "v1", "proto udp dport 7000 pass");
    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    ok(fluxgate(&s, &["-n", &ns, "apply", &v1]));
    assert_eq!(net::udp_exchange_to(&link, BETA, 7000, 20, 16), 20);

    let mut child = Child(
        common::fluxgate_cmd(&s)
            .args(["-n", &ns, "serve", "--metrics", "127.0.0.1:0"])
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
    let body = scrape(&addr);
    assert!(body.starts_with("HTTP/1.0 200 OK"), "{body}");
    for want in [
        "fluxgate_tenant_packets_total{iface=\"fg-b\",tenant=\"beta\",verdict=\"pass\"} 20",
        "fluxgate_rule_packets_total{iface=\"fg-b\",scope=\"beta\",rule=\"1\",",
        "fluxgate_generation{iface=\"fg-b\",kind=\"live\"} 1",
        "fluxgate_changes_total{iface=\"fg-b\",kind=\"apply\"} 1",
        "fluxgate_packets_total{iface=\"fg-b\",outcome=\"passed\"}",
        "# EOF",
    ] {
        assert!(body.contains(want), "missing {want} in:\n{body}");
    }
    let not_found = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).expect("connect");
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("request");
        let mut out = String::new();
        c.read_to_string(&mut out).expect("response");
        out
    };
    assert!(not_found.starts_with("HTTP/1.0 404"), "{not_found}");

    // Slow and malicious clients only lose their own requests: one that
    // dribbles a byte and stalls, one that never sends, one that sends an
    // endless header. A normal scrape beside them is answered at once.
    use std::io::{Read, Write};
    let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
    slow.write_all(b"G").expect("one byte");
    let silent = std::net::TcpStream::connect(&addr).expect("connect");
    let mut huge = std::net::TcpStream::connect(&addr).expect("connect");
    let _ = huge.write_all(&vec![b'a'; 64 * 1024]);
    let started = std::time::Instant::now();
    assert!(scrape(&addr).starts_with("HTTP/1.0 200 OK"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "not held up by the slow clients"
    );
    let mut refused = String::new();
    let _ = huge.read_to_string(&mut refused);
    assert!(refused.starts_with("HTTP/1.0 431"), "{refused}");
    // The stalled client is cut off at the request deadline, not held for hours.
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut rest = Vec::new();
    let cut = slow.read_to_end(&mut rest);
    assert!(
        cut.is_ok() && rest.is_empty(),
        "closed without an answer: {cut:?}"
    );
    drop(silent);
    assert!(
        scrape(&addr).starts_with("HTTP/1.0 200 OK"),
        "still serving"
    );
}

#[test]
fn dropped_packets_are_captured_to_pcapng_with_their_rule_and_tcpdump_reads_them() {
    use std::io::BufRead;
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    link.add_b_address(BETA);
    let s = Scratch::new("capture");
    let ns = link.b.name().to_owned();
    let v1 = ruleset(&s, "v1", "proto udp dport 7000 pass");
    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    ok(fluxgate(&s, &["-n", &ns, "apply", &v1]));
    let file = s.rules.join("drops.pcapng");
    let mut child = Child(
        common::fluxgate_cmd(&s)
            .args([
                "-n",
                &ns,
                "capture",
                "--drops",
                "--tenant",
                "beta",
                "--count",
                "5",
                "--duration",
                "30s",
            ])
            .arg("-w")
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn capture"),
    );
    let mut out = std::io::BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    assert!(line.contains("capturing"), "{line}");
    // acme's drops are filtered out in the kernel; beta's default drops 7001.
    assert_eq!(net::udp_exchange_to(&link, ACME, 7001, 5, 16), 0);
    assert_eq!(net::udp_exchange_to(&link, BETA, 7001, 8, 16), 0);
    let status = child.0.wait().expect("capture exits after 5 packets");
    assert!(status.success());
    let mut rest = String::new();
    for l in out.lines() {
        rest.push_str(&l.expect("line"));
        rest.push('\n');
    }
    assert!(
        rest.contains("dropped by beta default") && rest.contains("5 packet(s) captured"),
        "{rest}"
    );
    // Each line says which packet it was, as a guard packet is written.
    assert!(
        rest.lines()
            .filter(|l| l.contains("dropped by"))
            .all(|l| l.contains("udp 10.77.0.1:") && l.contains(" -> 10.77.2.2:7001")),
        "{rest}"
    );
    let dump = std::process::Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&file)
        .output()
        .expect("run tcpdump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("10.77.0.1") && l.contains("10.77.2.2.7001")),
        "{text}"
    );
    // Other people's dropped traffic: the file is the owner's alone.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file)
        .expect("pcapng")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "pcapng mode {mode:o}");
    // An unbounded capture rate is refused; Ctrl-C switches kernel capture off.
    let unbounded = fluxgate(
        &s,
        &[
            "-n",
            &ns,
            "capture",
            "--drops",
            "--rate",
            "0",
            "--duration",
            "1s",
        ],
    );
    assert_eq!(
        unbounded.status.code(),
        Some(2),
        "--rate 0 is a usage error"
    );
    let capturing = || {
        let pinned = fluxgate_dataplane::PinnedAttachment::open(&s.pins.join(&ns), IF_B)
            .expect("open pinned");
        pinned.capture_config().expect("capture config").enabled != 0
    };
    let mut interrupted = Child(
        common::fluxgate_cmd(&s)
            .args(["-n", &ns, "capture", "--drops", "--duration", "60s"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn capture"),
    );
    let mut first = String::new();
    // Kept open until the end: its last line goes here.
    let mut said = std::io::BufReader::new(interrupted.0.stdout.take().expect("stdout"));
    said.read_line(&mut first).expect("first line");
    // The line comes just before the kernel is switched on.
    assert!(
        net::eventually(std::time::Duration::from_secs(10), capturing),
        "capture is on while it runs"
    );
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(interrupted.0.id() as i32, libc::SIGINT) };
    let ended = interrupted.0.wait().expect("capture exits");
    drop(said);
    assert!(
        ended.success(),
        "an interrupted capture ends cleanly: {ended}"
    );
    assert!(!capturing(), "and leaves kernel capture off");
    // The deciding rule is in each packet's comment.
    let raw = std::fs::read(&file).expect("read pcapng");
    let needle = b"fluxgate: dropped by beta default (tenant beta)";
    let hits = raw.windows(needle.len()).filter(|w| *w == needle).count();
    assert_eq!(hits, 5, "comments");
    // The captured file explains itself: each packet, why it was dropped.
    let out = ok(fluxgate(
        &s,
        &[
            "-n",
            &ns,
            "explain",
            "--pcap",
            &file.display().to_string(),
            "--json",
        ],
    ));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let reports = reports.as_array().expect("one report per packet");
    assert_eq!(reports.len(), 5);
    for r in reports {
        assert_eq!(
            (r["verdict"].as_str(), r["decided_by"].as_str()),
            (Some("drop"), Some("beta default")),
            "{r}"
        );
        assert_eq!(r["kernel"]["agrees"], true, "{r}");
    }
}
