//! A canary never fails open: every canary ends in a recorded outcome within
//! a bounded time, and a rolled-back one leaves exactly what was live before
//! (nothing at all before the first apply; the live mix of generations, not
//! the last whole one). Real XDP on a veth pair, driven through the CLI.

mod common;

use std::{
    process::Output,
    time::{Duration, Instant},
};

use common::{Scratch, fluxgate, fluxgate_cmd, ok, write};
use fluxgate_testkit::net::{self, IF_B};

const GATEWAY: &str = "default pass\n";
const GATEWAY_2: &str = "default pass\nproto tcp dport 23 drop\n";
const ACME: &str = "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000 pass\n";
const ACME_2: &str =
    "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000-7001 pass\n";

/// A canary of `dir` whose health command is `cmd`, watched for `window`.
fn canary(s: &Scratch, ns: &str, dir: &str, window: &str, cmd: &str, timeout: &str) -> Output {
    fluxgate(
        s,
        &[
            "-n",
            ns,
            "apply",
            dir,
            "--canary",
            window,
            "--baseline",
            "0.2s",
            "--health-cmd",
            cmd,
            "--health-timeout",
            timeout,
        ],
    )
}

/// A veth pair with gateway + acme loaded on its `b` end; the ruleset dir.
fn loaded(name: &str) -> (net::Link, Scratch, String) {
    net::require_root();
    let link = net::Link::new();
    let s = Scratch::new(name);
    write(&s.rules, "gateway.fg", GATEWAY);
    write(&s.rules, "acme.fg", ACME);
    let rules = s.rules.display().to_string();
    ok(fluxgate(&s, &["-n", link.b.name(), "load", &rules, IF_B]));
    (link, s, rules)
}

fn status(s: &Scratch, ns: &str) -> serde_json::Value {
    let out = ok(fluxgate(s, &["-n", ns, "status", IF_B, "--json"]));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    json["interfaces"][0].clone()
}

fn tenant_generation(status: &serde_json::Value, name: &str) -> Option<u64> {
    status["tenants"]
        .as_array()?
        .iter()
        .find(|t| t["tenant"] == name)?["generation"]
        .as_u64()
}

fn history(s: &Scratch, ns: &str) -> String {
    String::from_utf8_lossy(&ok(fluxgate(s, &["-n", ns, "history"])).stdout).into_owned()
}

#[test]
fn a_first_apply_that_regresses_goes_back_to_nothing() {
    net::require_root();
    let link = net::Link::new();
    let s = Scratch::new("canary-first");
    let ns = link.b.name();
    write(&s.rules, "gateway.fg", "default drop\n");
    ok(fluxgate(&s, &["-n", ns, "attach", IF_B]));
    assert_eq!(net::udp_exchange(&link, 7100, 10, 16), 10, "unfiltered");
    let rules = s.rules.display().to_string();
    let out = canary(&s, ns, &rules, "3s", "false", "5s");
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status(&s, ns);
    assert_eq!(st["global_generation"], serde_json::Value::Null, "{st}");
    assert_eq!(st["dispatch_generation"], serde_json::Value::Null, "{st}");
    assert_eq!(
        net::udp_exchange(&link, 7100, 10, 16),
        10,
        "the default drop is gone again: traffic passes as before the apply"
    );
    assert!(history(&s, ns).contains("canary-rollback"));
}

#[test]
fn a_hung_health_command_is_killed_and_the_change_rolled_back_in_bounded_time() {
    let (link, s, rules) = loaded("canary-hung");
    let ns = link.b.name();
    write(&s.rules, "acme.fg", ACME_2);
    let started = Instant::now();
    let out = canary(&s, ns, &rules, "3s", "sleep 999", "1s");
    assert!(started.elapsed() < Duration::from_secs(20), "bounded");
    assert_eq!(out.status.code(), Some(9));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("did not finish within 1.0 s"), "{said}");
    assert_eq!(tenant_generation(&status(&s, ns), "acme"), Some(1));
    // The lock was released: an emergency command gets through at once.
    ok(fluxgate(&s, &["-n", ns, "rollback", "--to", "1"]));
}

#[test]
fn a_gateway_wide_rollback_restores_the_live_mix_not_the_last_whole_generation() {
    let (link, s, rules) = loaded("canary-mix");
    let ns = link.b.name();
    write(&s.rules, "acme.fg", ACME_2);
    ok(fluxgate(&s, &["-n", ns, "apply", &rules]));
    // acme alone goes back to generation 1: live is a mix (whole generation
    // 2, acme at 1).
    ok(fluxgate(
        &s,
        &["-n", ns, "rollback", "--tenant", "acme", "--to", "1"],
    ));
    let before = status(&s, ns);
    assert_eq!(before["live_generation"], 2, "{before}");
    assert_eq!(tenant_generation(&before, "acme"), Some(1), "{before}");
    // A gateway-wide change (the global rules) that regresses.
    write(&s.rules, "gateway.fg", GATEWAY_2);
    write(&s.rules, "acme.fg", ACME);
    let out = canary(&s, ns, &rules, "3s", "false", "5s");
    assert_eq!(out.status.code(), Some(9));
    let after = status(&s, ns);
    for key in ["global_generation", "dispatch_generation", "tenants"] {
        assert_eq!(after[key], before[key], "{key}: {after}");
    }
}

#[test]
fn an_interrupted_canary_rolls_back_and_records_it() {
    let (link, s, rules) = loaded("canary-term");
    let ns = link.b.name();
    write(&s.rules, "acme.fg", ACME_2);
    let child = fluxgate_cmd(&s)
        .args([
            "-n",
            ns,
            "apply",
            &rules,
            "--canary",
            "60s",
            "--baseline",
            "0.2s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the canary");
    // Wait until the change is live, then interrupt.
    let live = net::eventually(Duration::from_secs(10), || {
        tenant_generation(&status(&s, ns), "acme") == Some(2)
    });
    assert!(live, "the canary published");
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(killed);
    let out = child.wait_with_output().expect("canary exits");
    assert_eq!(out.status.code(), Some(9), "rolled back, not killed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("interrupted"));
    assert_eq!(tenant_generation(&status(&s, ns), "acme"), Some(1));
    assert!(history(&s, ns).contains("canary-rollback"));
}
