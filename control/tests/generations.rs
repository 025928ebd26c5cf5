//! Generations under real traffic (namespaces + veth, real XDP): hot swaps,
//! classifier version changes and dispatcher replacements lose nothing and
//! never touch the other tenant; a broken tenant is rolled back in one
//! command; a killed control process leaves traffic and counters untouched;
//! incompatible pinned maps are refused.

mod common;

use std::{
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{Scratch, fluxgate, fluxgate_cmd, hits, ok, stats_json, write};
use fluxgate_common::Outcome;
use fluxgate_control::{
    ApplyOptions, AttachOptions, Gateway, Interface, RulesetSource, TableScope, stats::TenantStats,
};
use fluxgate_testkit::net::{self, Flow, IF_B, Link};

const ACME: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
const BETA: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);
const PORT: u16 = 7000;

const GATEWAY: &str = "default pass\nproto tcp dport 23 drop\n";
const ACME_PASS: &str =
    "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000 pass\n";
const ACME_DROP: &str =
    "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000 drop\n";
const BETA_PASS: &str =
    "tenant beta\nprefix 10.77.2.0/24\ndefault drop\nproto udp dport 7000 pass\n";

/// Applies the ruleset in `dir` to `it`, recording `reason`.
fn apply(
    it: &mut Interface,
    dir: &Path,
    reason: &str,
) -> Result<fluxgate_control::Applied, fluxgate_control::ControlError> {
    let opts = ApplyOptions {
        reason: reason.to_owned(),
        ..ApplyOptions::default()
    };
    it.apply(&RulesetSource::dir(dir), &opts)
}

/// Writes a ruleset directory with the gateway, `acme` and `beta` files.
fn ruleset(dir: &Path, acme: &str) -> PathBuf {
    write(dir, "gateway.fg", GATEWAY);
    write(dir, "acme.fg", acme);
    write(dir, "beta.fg", BETA_PASS);
    dir.to_path_buf()
}

fn tenant<'a>(stats: &'a [TenantStats], name: &str) -> &'a TenantStats {
    stats
        .iter()
        .find(|t| t.tenant == name)
        .unwrap_or_else(|| panic!("no tenant {name}"))
}

fn rule_hits(t: &TenantStats, position: u32) -> u64 {
    t.rules.iter().find(|r| r.position == position).map_or_else(
        || panic!("no rule #{position} in {}", t.tenant),
        |r| r.packets,
    )
}

#[test]
fn swap_under_load_loses_nothing_and_never_touches_the_other_tenant() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    link.add_b_address(BETA);
    let s = Scratch::new("swap");
    let ns = link.b.name().to_owned();
    let pass_dir = ruleset(&s.rules, ACME_PASS);
    let drop_dir = ruleset(&s.rules_dir("drop"), ACME_DROP);
    let fg = Gateway::new()
        .with_bpffs(&s.pins)
        .with_state(&s.state)
        .in_netns(Some(ns.clone()));

    {
        let (fg, pass_dir) = (fg.clone(), pass_dir.clone());
        link.b.run(move || {
            fg.attach(IF_B, AttachOptions::default()).expect("attach");
            fg.open(Some(IF_B))
                .and_then(|mut it| apply(&mut it, &pass_dir, "first"))
                .expect("first apply");
        });
    }

    let flow = Flow::start(&link, &[(ACME, PORT), (BETA, PORT)], 2000);
    let (applies, versions, dispatchers) = {
        let fg = fg.clone();
        link.b.run(move || {
            let mut gw = fg.open(Some(IF_B)).expect("open");
            let (mut applies, mut versions, mut dispatchers) = (0, 0, 0);
            let mut acme_version = 0;
            for i in 0..1000 {
                let dir = if i % 2 == 0 { &drop_dir } else { &pass_dir };
                let applied = apply(&mut gw, dir, "swap").expect("apply");
                assert_eq!(
                    applied.changed,
                    [TableScope::Tenant("acme".into())],
                    "only acme's slot flips"
                );
                applies += 1;
                if i % 20 == 10 {
                    // A new classifier version for acme alone; the old one goes.
                    let v = gw.stage_version().expect("stage version").version;
                    gw.assign(v, &["acme".to_owned()]).expect("assign");
                    if acme_version != 0 {
                        gw.unload_version(acme_version).expect("unload");
                    }
                    acme_version = v;
                    versions += 1;
                }
                if i % 100 == 50 {
                    gw.replace_dispatcher().expect("replace dispatcher");
                    dispatchers += 1;
                }
            }
            // Everything still on version 0 but acme; beta never moved.
            assert_eq!(gw.pinned().version_of(Some(1)).ok(), Some(0));
            (applies, versions, dispatchers)
        })
    };
    assert_eq!((applies, versions, dispatchers), (1000, 50, 10));
    // Keep traffic flowing a moment on the final generation, then stop.
    std::thread::sleep(Duration::from_millis(300));
    let result = flow.stop();
    let (acme_sent, acme_received) = result[0];
    let (beta_sent, beta_received) = result[1];
    assert!(
        acme_sent > 500 && beta_sent > 500,
        "traffic ran: {result:?}"
    );

    let (stats, counters) = {
        let fg = fg.clone();
        link.b.run(move || {
            let stats = fg
                .open_read(Some(IF_B))
                .and_then(|mut it| it.tenant_stats(None))
                .expect("stats");
            let pinned = fluxgate_dataplane::PinnedAttachment::open(&fg.pin_root(), IF_B)
                .expect("open pinned");
            (stats, pinned.counters().expect("counters"))
        })
    };
    let beta = tenant(&stats, "beta");
    assert_eq!(beta_received, beta_sent, "beta lost packets");
    assert_eq!(
        (beta.passed, beta.dropped),
        (beta_sent, 0),
        "beta's verdicts"
    );
    assert_eq!(
        rule_hits(beta, 1),
        beta_sent,
        "beta's rule counted every packet"
    );
    assert_eq!(rule_hits(beta, 0), 0, "beta's default never decided");

    let acme = tenant(&stats, "acme");
    assert_eq!(
        acme.passed + acme.dropped,
        acme_sent,
        "every acme packet got a verdict"
    );
    assert_eq!(acme.passed, acme_received, "acme passes arrived");
    assert_eq!(
        rule_hits(acme, 1),
        acme_received,
        "the pass rule counted every pass, across 1000 swaps"
    );
    assert_eq!(
        rule_hits(acme, 0),
        0,
        "no acme packet fell through to the default: old or new rule, never neither"
    );
    assert!(
        acme.passed > 0 && acme.dropped > 0,
        "both generations served"
    );
    assert_eq!(counters.outcome(Outcome::Unclassified).packets, 0);
}

#[test]
fn a_broken_tenant_is_rolled_back_in_one_command_and_the_other_never_notices() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    link.add_b_address(BETA);
    let s = Scratch::new("rollback");
    let ns = link.b.name().to_owned();
    let good = ruleset(&s.rules, ACME_PASS).display().to_string();
    let broken = ruleset(&s.rules_dir("broken"), ACME_DROP)
        .display()
        .to_string();
    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    ok(fluxgate(
        &s,
        &["-n", &ns, "apply", &good, IF_B, "--reason", "good"],
    ));

    let flow = Flow::start(&link, &[(ACME, PORT), (BETA, PORT)], 1000);
    std::thread::sleep(Duration::from_millis(500));
    ok(fluxgate(
        &s,
        &["-n", &ns, "apply", &broken, IF_B, "--reason", "bad patch"],
    ));
    // acme's traffic is now dropped …
    let dropping = net::eventually(Duration::from_secs(5), || {
        let j = stats_json(&s, &ns, IF_B);
        hits(&j, "acme", 1) > 50
    });
    assert!(dropping, "the broken ruleset drops acme's traffic");
    // … one command brings it back, without recompiling.
    let out = ok(fluxgate(
        &s,
        &["-n", &ns, "rollback", IF_B, "--tenant", "acme", "--json"],
    ));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(done["to"], 1, "{done}");
    let status = ok(fluxgate(&s, &["-n", &ns, "status", IF_B, "--json"]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let tenants = status["interfaces"][0]["tenants"]
        .as_array()
        .expect("tenants");
    let acme = tenants
        .iter()
        .find(|t| t["tenant"] == "acme")
        .expect("acme");
    let beta = tenants
        .iter()
        .find(|t| t["tenant"] == "beta")
        .expect("beta");
    assert_eq!(
        (acme["generation"].as_u64(), beta["generation"].as_u64()),
        (Some(1), Some(1))
    );
    std::thread::sleep(Duration::from_millis(500));
    let passing_again = {
        let before = hits(&stats_json(&s, &ns, IF_B), "acme", 1);
        std::thread::sleep(Duration::from_millis(500));
        hits(&stats_json(&s, &ns, IF_B), "acme", 1) > before
    };
    assert!(
        passing_again,
        "acme's traffic passes again after the rollback"
    );
    let result = flow.stop();
    let (beta_sent, beta_received) = result[1];
    assert_eq!(beta_received, beta_sent, "beta never noticed");
    let j = stats_json(&s, &ns, IF_B);
    assert_eq!(hits(&j, "beta", 1), beta_sent);

    // Roll forward to the broken generation and back again: one flip each.
    ok(fluxgate(
        &s,
        &["-n", &ns, "rollback", IF_B, "--tenant", "acme", "--to", "2"],
    ));
    ok(fluxgate(&s, &["-n", &ns, "rollback", IF_B, "--to", "1"]));
    // A generation that was never kept is not found (exit 4), clearly.
    let out = fluxgate(&s, &["-n", &ns, "rollback", IF_B, "--to", "99"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not kept"));
    let history = ok(fluxgate(&s, &["-n", &ns, "history", IF_B]));
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains("bad patch") && history.contains("rollback"),
        "{history}"
    );
}

#[test]
fn a_killed_control_process_loses_no_packet_and_the_next_one_adopts_the_state() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    link.add_b_address(BETA);
    let s = Scratch::new("restart");
    let ns = link.b.name().to_owned();
    // Both variants pass acme's traffic (by different rules).
    let one = ruleset(&s.rules, ACME_PASS).display().to_string();
    let two = ruleset(
        &s.rules_dir("two"),
        "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000-7001 pass\n",
    )
    .display()
    .to_string();
    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    ok(fluxgate(&s, &["-n", &ns, "apply", &one, IF_B]));

    let flow = Flow::start(&link, &[(ACME, PORT), (BETA, PORT)], 1000);
    // A control process applying in a loop, killed with SIGKILL mid-flight.
    let script = format!(
        "while true; do \"$0\" \"$@\" apply {two} {IF_B}; \"$0\" \"$@\" apply {one} {IF_B}; done"
    );
    let template = fluxgate_cmd(&s);
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(template.get_program())
        .args(template.get_args())
        .args(["-n", &ns])
        .process_group(0)
        .spawn()
        .expect("spawn the control loop");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling the process group we created.
    unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    // `wait` reaps the shell only: the killed fluxgate may still be leaving
    // a syscall (and hold the interface's lock) for a moment. Wait until no
    // process of the group is alive, as an operator's next command would.
    let pgid = child.id().to_string();
    let gone = net::eventually(Duration::from_secs(10), || {
        let alive = std::process::Command::new("pgrep")
            .args(["-g", &pgid, "-r", "R,S,D,T"])
            .output()
            .map(|o| !o.stdout.is_empty());
        alive.is_ok_and(|alive| !alive)
    });
    assert!(gone, "the killed control loop exited");

    // A new process adopts the pinned state: status works, applies work.
    let status = ok(fluxgate(&s, &["-n", &ns, "status", IF_B, "--json"]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert!(status["interfaces"][0]["live_generation"].as_u64() >= Some(1));
    ok(fluxgate(&s, &["-n", &ns, "apply", &one, IF_B]));
    std::thread::sleep(Duration::from_millis(300));
    let result = flow.stop();
    for (i, (sent, received)) in result.iter().enumerate() {
        assert_eq!(sent, received, "destination {i} lost packets: {result:?}");
    }
    let j = stats_json(&s, &ns, IF_B);
    assert_eq!(hits(&j, "beta", 1), result[1].0, "beta's counter continued");
    let passed = j["interfaces"][0]["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["tenant"] == "acme")
        .and_then(|t| t["passed"].as_u64());
    assert_eq!(passed, Some(result[0].0), "acme's counter continued");
}

#[test]
fn an_incompatible_pinned_map_is_refused_with_a_clear_error() {
    net::require_root();
    let link = Link::new();
    let s = Scratch::new("incompat");
    let ns = link.b.name().to_owned();
    ok(fluxgate(&s, &["-n", &ns, "attach", IF_B]));
    // Replace one pinned map by one with another key size.
    let pin = s.pins.join(&ns).join(IF_B).join("FG_VERSIONS");
    std::fs::remove_file(&pin).expect("unpin");
    let made = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&pin)
        .args([
            "type",
            "hash",
            "key",
            "8",
            "value",
            "4",
            "entries",
            "16",
            "name",
            "FG_VERSIONS",
        ])
        .status()
        .expect("run bpftool");
    assert!(made.success(), "bpftool map create");
    let out = fluxgate(&s, &["-n", &ns, "status", IF_B]);
    assert_eq!(out.status.code(), Some(5), "incompatible exit code");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FG_VERSIONS") && err.contains("key 8"),
        "names the map and the mismatch: {err}"
    );
}

#[test]
fn a_classifier_version_that_disagrees_with_the_reference_never_serves() {
    net::require_root();
    let link = Link::new();
    let s = Scratch::new("version");
    let ns = link.b.name().to_owned();
    let dir = ruleset(&s.rules, ACME_PASS);
    let fg = Gateway::new()
        .with_bpffs(&s.pins)
        .with_state(&s.state)
        .in_netns(Some(ns.clone()));
    link.b.run(move || {
        fg.attach(IF_B, AttachOptions::default()).expect("attach");
        let mut gw = fg.open(Some(IF_B)).expect("open");
        apply(&mut gw, &dir, "").expect("apply");
        // A "classifier" that passes everything: acme's default drop disagrees.
        let err = gw
            .stage_version_from(fluxgate_dataplane::EMBEDDED_OBJECT, "fluxgate_floor")
            .expect_err("a wrong classifier is refused");
        assert!(
            matches!(err, fluxgate_control::ControlError::Preflight(_)),
            "{err}"
        );
        assert!(err.to_string().contains("acme"), "names the tenant: {err}");
        assert_eq!(gw.versions().expect("versions").len(), 1, "unloaded again");
        // This build's classifier passes and can serve acme alone (a canary).
        let v = gw.stage_version().expect("stage").version;
        gw.assign(v, &["acme".to_owned()]).expect("assign");
        assert_eq!(gw.pinned().version_of(Some(0)).ok(), Some(v));
        assert_eq!(gw.pinned().version_of(Some(1)).ok(), Some(0));
        assert!(gw.unload_version(v).is_err(), "a serving version stays");
        gw.assign(0, &[]).expect("everyone back on 0");
        gw.unload_version(v).expect("unload");
    });
}

/// The dispatcher reaches every classifier version slot: it has one tail-call
/// site per slot (constant indices, so the JIT jumps directly), and a slot it
/// could not reach would leave its tenants unclassified. Staging fills all 16
/// slots (each new version is preflighted through the probe path's call site
/// for its slot); then acme is moved through every slot under real traffic.
#[test]
fn every_classifier_version_slot_serves_its_tenants() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    let s = Scratch::new("slots");
    let ns = link.b.name().to_owned();
    let dir = ruleset(&s.rules, ACME_PASS);
    let fg = Gateway::new()
        .with_bpffs(&s.pins)
        .with_state(&s.state)
        .in_netns(Some(ns.clone()));
    let versions = {
        let fg = fg.clone();
        link.b.run(move || {
            fg.attach(IF_B, AttachOptions::default()).expect("attach");
            let mut gw = fg.open(Some(IF_B)).expect("open");
            apply(&mut gw, &dir, "").expect("apply");
            let mut staged = vec![0];
            for _ in 1..fluxgate_common::MAX_VERSIONS {
                staged.push(
                    gw.stage_version()
                        .expect("stage (preflight via its slot)")
                        .version,
                );
            }
            staged.sort();
            staged
        })
    };
    assert_eq!(
        versions,
        (0..fluxgate_common::MAX_VERSIONS).collect::<Vec<_>>(),
        "every slot holds a version"
    );
    let mut expected_hits = 0;
    for v in versions {
        {
            let fg = fg.clone();
            link.b.run(move || {
                let mut gw = fg.open(Some(IF_B)).expect("open");
                gw.assign(v, &["acme".to_owned()]).expect("assign");
                assert_eq!(gw.pinned().version_of(Some(0)).ok(), Some(v));
            });
        }
        let received = net::udp_exchange_to(&link, ACME, PORT, 3, 32);
        assert_eq!(received, 3, "acme's packets pass on version {v}");
        expected_hits += 3;
        let fg = fg.clone();
        let (stats, unclassified) = link.b.run(move || {
            let stats = fg
                .open_read(Some(IF_B))
                .and_then(|mut it| it.tenant_stats(None))
                .expect("stats");
            let pinned = fluxgate_dataplane::PinnedAttachment::open(&fg.pin_root(), IF_B)
                .expect("open pinned");
            let counters = pinned.counters().expect("counters");
            (stats, counters.outcome(Outcome::Unclassified).packets)
        });
        assert_eq!(
            unclassified, 0,
            "version {v}: no packet missed its classifier"
        );
        assert_eq!(
            rule_hits(tenant(&stats, "acme"), 1),
            expected_hits,
            "version {v} classified acme's packets by its rule"
        );
    }
}
