//! Things dying in the middle of a rollout: the controller (SIGKILL), a
//! second controller, an agent mid-apply, etcd itself.

use std::time::Duration;

use fluxgate_control::{exit, fleet::HALTED};
use fluxgate_testkit::net::{self, Flow};

use crate::harness::{ACME_ADDR, BETA_ADDR, Fleet, json, rules, text};

/// Polls the unfinished rollout until `f` holds (20 s at most).
fn wait_rollout(fleet: &Fleet, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let ok = net::eventually(Duration::from_secs(30), || f(&fleet.active()));
    assert!(ok, "rollout never {what}: {}", fleet.status());
}

fn written(r: &serde_json::Value) -> usize {
    r["written"].as_array().map_or(0, Vec::len)
}

/// A controller killed with SIGKILL mid-wave (twice, at two steps) is
/// resumed by another to the same outcome; while one drives, a second
/// controller refuses.
#[test]
fn a_killed_controller_is_resumed_by_another_and_two_never_drive() {
    let fleet = Fleet::new("ctl", 3);
    fleet.wait_registered(3);
    let v2 = fleet.ruleset("v2", &rules::ACME_7001);
    let v2 = v2.to_str().expect("path");
    let args = ["--waves", "1,2,100%", "--canary", "2s", "--json"];
    let mut first = fleet.spawn(&[&["rollout", v2][..], &args].concat());
    // Killed while wave 1's gateway runs its canary.
    wait_rollout(&fleet, "wrote wave 1", |r| written(r) == 1);
    // Two controllers at once: the second refuses, naming the first.
    let second = fleet.fleet(&["rollout", v2, "--waves", "100%"]);
    assert_eq!(
        second.status.code(),
        Some(exit::CONFLICT),
        "{}",
        text(&second)
    );
    assert!(
        text(&second).contains("drives this fleet"),
        "{}",
        text(&second)
    );
    let third = fleet.fleet(&["resume", "--wait", "0s"]);
    assert_eq!(
        third.status.code(),
        Some(exit::CONFLICT),
        "{}",
        text(&third)
    );
    first.kill();
    // Resumed by another process once the dead one's lock expired; then
    // killed again at another step (wave 2 realized, wave 3 not written).
    let mut resumer = fleet.spawn(&["resume", "--wait", "20s", "--json"]);
    wait_rollout(&fleet, "reached wave 3", |r| r["wave"] == 2);
    resumer.kill();
    let done = fleet.fleet(&["resume", "--wait", "20s", "--json"]);
    assert!(done.status.success(), "{}", text(&done));
    let record = json(&done);
    assert_eq!(record["state"], "done", "{record}");
    let drivers: std::collections::BTreeSet<&str> = record["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|s| s["by"].as_str())
        .collect();
    assert_eq!(drivers.len(), 3, "three controllers drove it: {record}");
    for g in &fleet.gws {
        assert_eq!(g.generation(), 2, "{}", g.name);
        assert_eq!(net::udp_exchange_to(&g.link, ACME_ADDR, 7001, 10, 16), 10);
    }
    assert!(fleet.active().is_null(), "still active: {}", fleet.status());
}

/// An agent killed mid-apply (after recording, before publishing): its
/// lease expires, the wave fails and rolls back, and the restarted agent
/// reconciles without a flip (nothing had changed).
#[test]
fn an_agent_killed_mid_apply_fails_the_wave_and_comes_back_without_a_flip() {
    let mut fleet = Fleet::new("agentkill", 3);
    fleet.gws[0].start_agent_with(&[("FLUXGATE_CRASH_AT", "recorded")]);
    fleet.wait_registered(3);
    let v2 = fleet.ruleset("v2", &rules::ACME_7001);
    let rollout = fleet.spawn(&[
        "rollout",
        v2.to_str().expect("path"),
        "--waves",
        "1,100%",
        "--deadline",
        "60s",
        "--json",
    ]);
    assert!(
        fleet.gws[0].agent_exited(Duration::from_secs(30)),
        "the agent did not crash: {}",
        fleet.gws[0].agent_log()
    );
    wait_rollout(&fleet, "halted", |r| r["state"] == "rolling-back");
    fleet.gws[0].start_agent();
    let out = rollout.finish(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(HALTED), "{}", text(&out));
    let record = json(&out);
    let why = record["halt_reason"].as_str().unwrap_or_default();
    assert!(why.contains("gw0 lost its lease"), "{record}");
    let history = fleet.gws[0].history();
    assert!(history.contains("discarded"), "{history}");
    assert!(!history.contains("rollback"), "flipped: {history}");
    for g in &fleet.gws {
        assert_eq!(g.generation(), 1, "{}", g.name);
    }
    let status = fleet.status();
    assert_eq!(
        status["status"]["gw0"]["interfaces"][net::IF_B]["outcome"],
        "rolled-back",
        "{status}"
    );
}

/// etcd killed in the middle of a wave: every gateway keeps filtering (the
/// untouched tenant loses nothing), the rollout waits, and when etcd is
/// back it ends consistently (done everywhere, or rolled back everywhere);
/// the agents show the outage.
#[test]
fn etcd_killed_mid_wave_loses_no_packet_and_the_rollout_ends_consistently() {
    let mut fleet = Fleet::new("etcdkill", 3);
    fleet.wait_registered(3);
    let flows: Vec<Flow> = fleet
        .gws
        .iter()
        .map(|g| Flow::start(&g.link, &[(BETA_ADDR, 7100)], 200))
        .collect();
    let v2 = fleet.ruleset("v2", &rules::ACME_7001);
    let rollout = fleet.spawn(&[
        "rollout",
        v2.to_str().expect("path"),
        "--waves",
        "1,100%",
        "--canary",
        "3s",
        "--json",
    ]);
    wait_rollout(&fleet, "wrote wave 1", |r| written(r) == 1);
    fleet.etcd.kill();
    // Every gateway shows the outage itself (its status in etcd cannot).
    let shown = net::eventually(Duration::from_secs(10), || {
        fleet.gws.iter().all(|g| {
            g.metrics()
                .lines()
                .any(|l| l.starts_with("fluxgate_fleet_etcd_connected{") && l.ends_with(" 0"))
        })
    });
    assert!(
        shown,
        "the gateways do not show etcd down: {}",
        fleet.gws[0].metrics()
    );
    std::thread::sleep(Duration::from_secs(2));
    fleet.etcd.restart();
    let out = rollout.finish(Duration::from_secs(120));
    let counts: Vec<Vec<(u64, u64)>> = flows.into_iter().map(Flow::stop).collect();
    for (g, c) in fleet.gws.iter().zip(&counts) {
        assert!(c[0].0 > 0, "{}: nothing sent", g.name);
        assert_eq!(
            c[0].0, c[0].1,
            "{}: lost packets while etcd was down",
            g.name
        );
    }
    let record = json(&out);
    let opened: Vec<bool> = fleet
        .gws
        .iter()
        .map(|g| net::udp_exchange_to(&g.link, ACME_ADDR, 7001, 10, 16) == 10)
        .collect();
    eprintln!(
        "after the etcd outage the rollout ended {}",
        record["state"]
    );
    match record["state"].as_str() {
        Some("done") => assert!(opened.iter().all(|o| *o), "{opened:?} {record}"),
        Some("rolled-back") => assert!(opened.iter().all(|o| !*o), "{opened:?} {record}"),
        _ => panic!("rollout did not end: {}", text(&out)),
    }
    let ok = net::eventually(Duration::from_secs(20), || {
        let s = fleet.status();
        fleet.gws.iter().all(|g| {
            s["status"][&g.name]["etcd"]["reconnects"]
                .as_u64()
                .is_some_and(|n| n >= 1)
        })
    });
    assert!(ok, "the agents do not show the outage: {}", fleet.status());
    for g in &fleet.gws {
        let m = g.metrics();
        assert!(
            m.lines()
                .any(|l| l.starts_with("fluxgate_fleet_etcd_connected{") && l.ends_with(" 1")),
            "{}: {m}",
            g.name
        );
    }
}
