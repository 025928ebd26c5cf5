//! On a terminal, an apply that runs longer than a second shows its phase
//! and how long it has run; with `--json` (or off a terminal) it never does.
//! The terminal is a real pty, made by util-linux `script`.

mod common;

use std::{fmt::Write as _, process::Command};

use common::{Scratch, fluxgate, ok, write};
use fluxgate_testkit::net::{self, IF_B};

/// A ruleset of `n` tenants (a /28 and two rules each): seconds to apply.
fn many_tenants(s: &Scratch, n: u32) {
    write(&s.rules, "gateway.fg", "default pass\n");
    for i in 0..n {
        let mut text = String::new();
        let (hi, lo) = (i / 16, (i % 16) * 16);
        let _ = write!(
            text,
            "tenant t{i}\nprefix 10.{}.{hi_lo}.{lo}/28\ndefault drop\n\
             proto tcp dport {{ 80, 443 }} pass\nproto udp dport 53 pass\n",
            100 + hi / 256,
            hi_lo = hi % 256
        );
        write(&s.rules, &format!("t{i}.fg"), &text);
    }
}

/// Runs `fluxgate ARGS` on a pty; returns everything the terminal showed.
fn on_a_terminal(s: &Scratch, args: &[&str]) -> String {
    let mut line = format!(
        "{} --bpffs {} --state {}",
        env!("CARGO_BIN_EXE_fluxgate"),
        s.pins.display(),
        s.state.display()
    );
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    // Shown from the first redraw (200 ms), not after a second: an apply of
    // 2,000 tenants no longer takes one.
    let out = Command::new("script")
        .env("FLUXGATE_PROGRESS_AFTER_MS", "0")
        .args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_long_apply_shows_its_phase_on_a_terminal_and_never_in_json() {
    net::require_root();
    let link = net::Link::new();
    let s = Scratch::new("progress");
    let ns = link.b.name();
    many_tenants(&s, 2000);
    let rules = s.rules.display().to_string();
    ok(fluxgate(&s, &["-n", ns, "attach", IF_B]));
    let shown = on_a_terminal(&s, &["-n", ns, "apply", &rules]);
    assert!(
        shown.contains("fluxgate: apply: "),
        "progress shown: {shown}"
    );
    assert!(
        ["compile", "stage", "preflight", "publish"]
            .iter()
            .any(|phase| shown.contains(&format!("apply: {phase} ("))),
        "names its phase: {shown}"
    );
    assert!(shown.contains("generation 1 live"), "{shown}");

    // The same size of change with --json: one line of JSON, no progress.
    write(
        &s.rules,
        "t0.fg",
        "tenant t0\nprefix 10.100.0.0/28\ndefault pass\n",
    );
    std::fs::remove_file(s.rules.join("t1.fg")).expect("remove t1");
    let shown = on_a_terminal(&s, &["-n", ns, "apply", &rules, "--json"]);
    assert!(!shown.contains("fluxgate: apply"), "no progress: {shown}");
    let json: serde_json::Value = serde_json::from_str(shown.trim()).expect("one JSON object");
    assert_eq!(json["generation"], 2);
}
