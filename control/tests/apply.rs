//! The apply pipeline through the CLI, on a real attached interface: guards
//! block a bad patch with a report naming the guard and the deciding rule,
//! dry runs and checks change nothing, diffs show what would change, bad input
//! of every kind is refused with a clear error and a documented exit code,
//! concurrent changes are serialized, and a crash at any step of an apply
//! leaves a state the next command reports exactly (and can resume or discard).

mod common;

use std::{os::fd::AsRawFd, path::Path, process::Output};

use common::{Scratch, fluxgate, fluxgate_cmd, ok, write};
use fluxgate_testkit::net::{self, IF_B, Link};

const GATEWAY: &str = "default pass\nproto udp dport 11211 drop\n";
const ACME: &str = "tenant acme\nprefix 10.77.1.0/24\ndefault drop\n\
proto tcp dport { 80, 443 } pass\n\
guard \"tcp 198.51.100.7:40000 -> 10.77.1.2:443 flags S\" pass\n\
guard \"tcp 198.51.100.7:40000 -> 10.77.1.2:3306 flags S\" drop\n";
/// A patch that closes acme's web ports: its first guard must catch it.
const ACME_BROKEN: &str = "tenant acme\nprefix 10.77.1.0/24\ndefault drop\n\
proto tcp dport { 80, 443 } drop\n\
guard \"tcp 198.51.100.7:40000 -> 10.77.1.2:443 flags S\" pass\n\
guard \"tcp 198.51.100.7:40000 -> 10.77.1.2:3306 flags S\" drop\n";
/// A good change: also SSH from the office.
const ACME_SSH: &str = "tenant acme\nprefix 10.77.1.0/24\ndefault drop\n\
proto tcp dport { 80, 443 } pass\n\
saddr 198.51.100.0/28 proto tcp dport 22 pass\n\
guard \"tcp 198.51.100.7:40000 -> 10.77.1.2:443 flags S\" pass\n\
guard \"tcp 198.51.100.7:40000 -> 10.77.1.2:22 flags S\" pass\n";
const BETA: &str = "tenant beta\nprefix 10.77.2.0/24\ndefault pass\nproto tcp dport 22 drop\n\
guard \"tcp 198.51.100.7:40000 -> 10.77.2.2:22 flags S\" drop\n";
const BETA_DNS: &str = "tenant beta\nprefix 10.77.2.0/24\ndefault pass\nproto tcp dport 22 drop\n\
proto udp dport 53 pass\n\
guard \"tcp 198.51.100.7:40000 -> 10.77.2.2:22 flags S\" drop\n";

fn ruleset(s: &Scratch, name: &str, acme: &str, beta: &str) -> String {
    let dir = s.rules_dir(name);
    write(&dir, "gateway.fg", GATEWAY);
    write(&dir, "acme.fg", acme);
    write(&dir, "beta.fg", beta);
    dir.display().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(s: &Scratch, ns: &str) -> serde_json::Value {
    let out = ok(fluxgate(s, &["-n", ns, "status", IF_B, "--json"]));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("status json")["interfaces"][0]
        .clone()
}

/// (live generation, newest generation, acme's generation, beta's generation).
fn generations(s: &Scratch, ns: &str) -> (u64, u64, u64, u64) {
    let st = status(s, ns);
    let tenant = |name: &str| {
        st["tenants"]
            .as_array()
            .expect("tenants")
            .iter()
            .find(|t| t["tenant"] == name)
            .and_then(|t| t["generation"].as_u64())
            .unwrap_or(0)
    };
    (
        st["live_generation"].as_u64().expect("live"),
        st["generation"].as_u64().expect("newest"),
        tenant("acme"),
        tenant("beta"),
    )
}

#[test]
fn guards_block_a_bad_patch_and_dry_runs_checks_and_diffs_change_nothing() {
    net::require_root();
    let link = Link::new();
    let s = Scratch::new("apply");
    let ns = link.b.name().to_owned();
    let good = ruleset(&s, "good", ACME, BETA);
    let broken = ruleset(&s, "broken", ACME_BROKEN, BETA);
    let better = ruleset(&s, "better", ACME_SSH, BETA_DNS);

    // `check` needs no attachment: the broken patch fails its guard already here.
    ok(fluxgate(&s, &["check", &good]));
    let out = fluxgate(&s, &["check", &broken]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("acme.fg:5:1 must pass"),
        "{}",
        stderr(&out)
    );

    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    let out = ok(fluxgate(
        &s,
        &["-n", &ns, "apply", &good, "--reason", "first"],
    ));
    assert!(
        stdout(&out).contains("preflight packets agreed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(generations(&s, &ns), (1, 1, 1, 1));

    // The broken patch is stopped by preflight: exit 8, the guard and the rule named.
    let out = fluxgate(&s, &["-n", &ns, "apply", &broken, "--reason", "bad patch"]);
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("guard") && err.contains("acme.fg:5:1 must pass"),
        "{err}"
    );
    assert!(
        err.contains("acme#1") && err.contains("dport { 80, 443 } drop"),
        "{err}"
    );
    assert_eq!(generations(&s, &ns), (1, 1, 1, 1), "nothing live changed");
    let history = stdout(&ok(fluxgate(&s, &["-n", &ns, "history"])));
    assert!(
        history.contains("aborted") && history.contains("bad patch"),
        "{history}"
    );

    // A dry run does everything but publish.
    let out = ok(fluxgate(
        &s,
        &["-n", &ns, "apply", &better, "--dry-run", "--json"],
    ));
    let dry: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(dry["dry_run"], true);
    assert!(dry["preflight_packets"].as_u64() > Some(0));
    assert_eq!(
        generations(&s, &ns),
        (1, 1, 1, 1),
        "dry run changed nothing"
    );

    // The diff names what would change, per tenant.
    let text = stdout(&ok(fluxgate(&s, &["-n", &ns, "diff", &better])));
    assert!(
        text.contains("acme (changed)") && text.contains("+ #2"),
        "{text}"
    );
    assert!(text.contains("beta (changed)"), "{text}");
    let out = ok(fluxgate(&s, &["-n", &ns, "diff", &better, "--json"]));
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(diff["changes"].as_array().map(Vec::len), Some(2), "{diff}");

    // --tenant applies one tenant's change only.
    let out = ok(fluxgate(
        &s,
        &["-n", &ns, "apply", &better, "--tenant", "beta", "--json"],
    ));
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        applied["changed"],
        serde_json::json!(["tenant-beta"]),
        "{applied}"
    );
    assert_eq!(generations(&s, &ns), (2, 2, 1, 2));
    let text = stdout(&ok(fluxgate(&s, &["-n", &ns, "diff", &better])));
    assert!(
        text.contains("acme (changed)") && !text.contains("beta (changed)"),
        "{text}"
    );
}

#[test]
fn bad_input_of_every_kind_is_refused_clearly_and_nothing_changes() {
    net::require_root();
    let link = Link::new();
    let s = Scratch::new("badin");
    let ns = link.b.name().to_owned();
    let good = ruleset(&s, "good", ACME, BETA);
    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    ok(fluxgate(&s, &["-n", &ns, "apply", &good]));

    let syntax = ruleset(
        &s,
        "syntax",
        "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto tcp dport 70000 pass\n",
        BETA,
    );
    let scope = ruleset(
        &s,
        "scope",
        "tenant acme\nprefix 10.77.1.0/24\ndefault drop\ndaddr 10.77.2.0/24 proto tcp dport 22 pass\n",
        BETA,
    );
    let unreadable = ruleset(&s, "unreadable", ACME, BETA);
    std::fs::write(Path::new(&unreadable).join("beta.fg"), [0xff, 0xfe, 0x00]).expect("write");
    let missing = s.rules.join("no-such-dir").display().to_string();
    let cases: [(&str, Vec<&str>, i32, &str); 5] = [
        ("syntax error", vec!["apply", &syntax], 7, "acme.fg:4:17"),
        (
            "scoping violation",
            vec!["apply", &scope],
            7,
            "is outside the",
        ),
        (
            "unknown tenant",
            vec!["apply", &good, "--tenant", "nosuch"],
            4,
            "unknown tenant \"nosuch\"",
        ),
        ("unreadable file", vec!["apply", &unreadable], 7, "beta.fg"),
        (
            "missing directory",
            vec!["apply", &missing],
            7,
            "no-such-dir",
        ),
    ];
    for (what, args, code, needle) in cases {
        let mut full = vec!["-n", ns.as_str()];
        full.extend(args);
        let out = fluxgate(&s, &full);
        assert_eq!(out.status.code(), Some(code), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{what}: {}", stderr(&out));
        assert_eq!(
            generations(&s, &ns),
            (1, 1, 1, 1),
            "{what}: nothing changed"
        );
    }
}

#[test]
fn a_second_change_while_one_runs_gets_a_clear_message() {
    net::require_root();
    let link = Link::new();
    let s = Scratch::new("lock");
    let ns = link.b.name().to_owned();
    let good = ruleset(&s, "good", ACME, BETA);
    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    ok(fluxgate(&s, &["-n", &ns, "apply", &good]));
    // Hold the interface's change lock as a running apply would.
    let lock_path = s.state.join(&ns).join(IF_B).join("lock");
    let lock = std::fs::File::open(&lock_path).expect("lock file");
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let better = ruleset(&s, "better", ACME_SSH, BETA_DNS);
    let out = fluxgate(&s, &["-n", &ns, "apply", &better]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another fluxgate change is in progress"),
        "{}",
        stderr(&out)
    );
    // Read-only commands still work meanwhile.
    assert_eq!(generations(&s, &ns), (1, 1, 1, 1));
    drop(lock);
    ok(fluxgate(&s, &["-n", &ns, "apply", &better]));
    assert_eq!(generations(&s, &ns), (2, 2, 2, 2));
}

#[test]
fn a_crash_at_any_step_of_an_apply_leaves_a_state_the_next_command_reports_exactly() {
    net::require_root();
    let link = Link::new();
    let s = Scratch::new("crash");
    let ns = link.b.name().to_owned();
    let v1 = ruleset(&s, "v1", ACME, BETA);
    let v2 = ruleset(&s, "v2", ACME_SSH, BETA_DNS);
    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    ok(fluxgate(&s, &["-n", &ns, "apply", &v1]));
    let mut from = v1.clone();
    let mut to = v2.clone();
    for step in [
        "staged",
        "preflighted",
        "kept",
        "recorded",
        "placed",
        "flipping",
        "flipped",
    ] {
        let (live, newest, acme, beta) = generations(&s, &ns);
        let out = fluxgate_cmd(&s)
            .env("FLUXGATE_CRASH_AT", step)
            .args(["-n", &ns, "apply", &to])
            .output()
            .expect("run");
        assert!(!out.status.success(), "{step}: the apply must have died");
        // The next command sees exactly what is live: each tenant at the old
        // or the new generation, never unknown.
        let (live2, newest2, acme2, beta2) = generations(&s, &ns);
        let new = newest + 1;
        assert!([acme, new].contains(&acme2), "{step}: acme at {acme2}");
        assert!([beta, new].contains(&beta2), "{step}: beta at {beta2}");
        assert!(newest2 == newest || newest2 == new, "{step}");
        let st = status(&s, &ns);
        let interrupted = st["interrupted"].as_array().expect("interrupted").clone();
        // Recorded but not (completely) published; one that died after its
        // last flip is finished by the next command.
        let recorded = matches!(step, "recorded" | "placed" | "flipping");
        assert_eq!(!interrupted.is_empty(), recorded, "{step}: {st}");
        if step == "flipping" {
            // Half published: acme flipped first, beta not yet.
            assert_eq!((acme2, beta2), (new, beta), "{step}");
            // Discarding puts the whole gateway back on the last whole generation.
            ok(fluxgate(&s, &["-n", &ns, "discard"]));
            let (_, _, acme3, beta3) = generations(&s, &ns);
            assert_eq!((acme3, beta3), (acme, beta), "discarded");
            assert!(
                status(&s, &ns)["interrupted"]
                    .as_array()
                    .expect("list")
                    .is_empty()
            );
        }
        // Resuming is applying again; then everything is at the new content.
        ok(fluxgate(&s, &["-n", &ns, "apply", &to]));
        let (live4, newest4, acme4, beta4) = generations(&s, &ns);
        assert_eq!(
            (live4, acme4, beta4),
            (newest4, newest4, newest4),
            "{step}: resumed"
        );
        assert!(live4 > live && live4 >= live2, "{step}");
        assert!(
            status(&s, &ns)["interrupted"]
                .as_array()
                .expect("list")
                .iter()
                .all(|g| g.as_u64() < Some(newest4)),
            "{step}"
        );
        std::mem::swap(&mut from, &mut to);
    }
}

#[test]
fn explain_names_every_rule_considered_and_the_kernel_agrees() {
    net::require_root();
    let link = Link::new();
    let s = Scratch::new("explain");
    let ns = link.b.name().to_owned();
    let v1 = ruleset(&s, "v1", ACME, BETA);
    let v2 = ruleset(&s, "v2", ACME_SSH, BETA_DNS);
    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    ok(fluxgate(&s, &["-n", &ns, "apply", &v1]));
    ok(fluxgate(&s, &["-n", &ns, "apply", &v2]));
    let ssh = "tcp 198.51.100.7:40000 -> 10.77.1.2:22 flags S";
    let out = ok(fluxgate(
        &s,
        &["-n", &ns, "explain", "--packet", ssh, "--json"],
    ));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(e["tenant"], "acme", "{e}");
    assert_eq!(e["verdict"], "pass", "{e}");
    assert_eq!(e["decided_by"], "acme#2", "{e}");
    assert_eq!(e["kernel"]["agrees"], true, "{e}");
    let considered = e["considered"].as_array().expect("considered");
    // The gateway rule, acme#1 (port 22 not in { 80, 443 }), acme#2 (matched).
    assert_eq!(considered.len(), 3, "{e}");
    assert_eq!(considered[1]["matched"], false);
    let why = considered[1]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["field"] == "dport")
        .expect("dport checked");
    assert_eq!(why["ok"], false);
    assert!(
        why["detail"]
            .as_str()
            .is_some_and(|d| d.contains("22 not in")),
        "{why}"
    );
    // The same packet against generation 1 (kept): acme's default dropped it.
    let out = ok(fluxgate(
        &s,
        &[
            "-n",
            &ns,
            "explain",
            "--packet",
            ssh,
            "--generation",
            "1",
            "--json",
        ],
    ));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (e["verdict"].as_str(), e["decided_by"].as_str()),
        (Some("drop"), Some("acme default"))
    );
    assert_eq!(e["kernel"]["agrees"], true, "{e}");
    // Text form.
    let text = stdout(&ok(fluxgate(&s, &["-n", &ns, "explain", "--packet", ssh])));
    assert!(
        text.contains("MATCH acme#2") && text.contains("agrees"),
        "{text}"
    );
    // IPv6 neighbour discovery passes before any rule, in the kernel too.
    let ns_packet = "icmpv6 fe80::1 -> ff02::1:ff00:2 type 135 code 0 hlim 255";
    let out = ok(fluxgate(
        &s,
        &["-n", &ns, "explain", "--packet", ns_packet, "--json"],
    ));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(e["verdict"], "pass", "{e}");
    assert_eq!(e["decided_by"], "neighbor discovery", "{e}");
    assert_eq!(e["considered"].as_array().map(Vec::len), Some(0), "{e}");
    assert_eq!(e["kernel"]["agrees"], true, "{e}");
}

#[test]
fn a_removed_tenant_falls_to_the_gateway_default_and_a_rollback_brings_it_back() {
    net::require_root();
    let link = Link::new();
    let s = Scratch::new("remove");
    let ns = link.b.name().to_owned();
    let both = ruleset(&s, "both", ACME, BETA);
    let only_acme = s.rules_dir("only-acme");
    write(&only_acme, "gateway.fg", GATEWAY);
    write(&only_acme, "acme.fg", ACME);
    let only_acme = only_acme.display().to_string();
    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    ok(fluxgate(&s, &["-n", &ns, "apply", &both]));
    let ssh = "tcp 198.51.100.7:40000 -> 10.77.2.2:22 flags S";
    let explain = |s: &Scratch| -> serde_json::Value {
        let out = ok(fluxgate(
            s,
            &["-n", &ns, "explain", "--packet", ssh, "--json"],
        ));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    assert_eq!(explain(&s)["decided_by"], "beta#1");

    let out = ok(fluxgate(&s, &["-n", &ns, "apply", &only_acme, "--json"]));
    let applied: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(applied["removed"], serde_json::json!(["beta"]), "{applied}");
    let e = explain(&s);
    assert_eq!(
        (e["tenant"].is_null(), e["decided_by"].as_str()),
        (true, Some("gateway default")),
        "{e}"
    );
    assert_eq!(
        e["kernel"]["agrees"], true,
        "the kernel no longer dispatches to beta: {e}"
    );
    assert_eq!(status(&s, &ns)["tenants"].as_array().map(Vec::len), Some(1));

    ok(fluxgate(&s, &["-n", &ns, "rollback"]));
    let e = explain(&s);
    assert_eq!(e["decided_by"], "beta#1", "{e}");
    assert_eq!(e["kernel"]["agrees"], true, "{e}");
    assert_eq!(generations(&s, &ns), (1, 2, 1, 1));
}
