//! Operating a fleet: groups (a selector), `fleet rollback --tenant`,
//! `fleet pause` and `fleet abort`.

use std::time::Duration;

use fluxgate_testkit::net::{self, IF_B};

use crate::harness::{ACME_ADDR, BETA_ADDR, Fleet, json, rules, text};

/// A rollout for `--selector cluster=c1` changes only that cluster's
/// gateways; `fleet rollback --tenant acme` then flips acme (alone) back
/// on them.
#[test]
fn a_selector_picks_a_group_and_a_tenant_rolls_back_alone() {
    let fleet = Fleet::new("group", 3);
    fleet.wait_registered(3);
    let v2 = fleet.ruleset("v2", &rules::ACME_7001);
    let out = fleet.fleet(&[
        "rollout",
        v2.to_str().expect("path"),
        "--selector",
        "cluster=c1",
        "--waves",
        "1,100%",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let record = json(&out);
    assert_eq!(
        record["waves"],
        serde_json::json!([["gw0"], ["gw2"]]),
        "{record}"
    );
    let opens =
        |g: &crate::harness::Gw| net::udp_exchange_to(&g.link, ACME_ADDR, 7001, 10, 16) == 10;
    assert!(opens(&fleet.gws[0]) && opens(&fleet.gws[2]));
    assert!(!opens(&fleet.gws[1]), "gw1 (cluster c2) changed");
    assert_eq!(fleet.gws[1].generation(), 1);
    let back = fleet.fleet(&["rollback", "--tenant", "acme", "--json"]);
    assert!(back.status.success(), "{}", text(&back));
    assert_eq!(json(&back)["state"], "rolled-back", "{}", text(&back));
    for g in &fleet.gws {
        assert!(!opens(g), "{}: acme still opens 7001", g.name);
        assert_eq!(net::udp_exchange_to(&g.link, ACME_ADDR, 7000, 10, 16), 10);
        assert_eq!(net::udp_exchange_to(&g.link, BETA_ADDR, 7100, 10, 16), 10);
    }
    for g in [&fleet.gws[0], &fleet.gws[2]] {
        assert!(g.history().contains("rollback"), "{}", g.history());
    }
}

/// `fleet pause` while a controller drives: it stops before the next wave
/// (the controller exits, the rollout is `paused`); `fleet abort` then
/// rolls the changed gateway back.
#[test]
fn pause_stops_before_the_next_wave_and_abort_rolls_back() {
    let fleet = Fleet::new("pause", 3);
    fleet.wait_registered(3);
    let v2 = fleet.ruleset("v2", &rules::ACME_7001);
    let driver = fleet.spawn(&[
        "rollout",
        v2.to_str().expect("path"),
        "--waves",
        "1,100%",
        "--canary",
        "2s",
        "--json",
    ]);
    let written = net::eventually(Duration::from_secs(30), || {
        fleet.active()["written"].as_array().map_or(0, Vec::len) == 1
    });
    assert!(written, "{}", fleet.status());
    let pause = fleet.fleet(&["pause"]);
    assert!(pause.status.success(), "{}", text(&pause));
    let out = driver.finish(Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    let record = json(&out);
    assert_eq!(record["state"], "paused", "{record}");
    assert_eq!(fleet.gws[0].generation(), 2, "wave 1 was realized");
    for g in &fleet.gws[1..] {
        assert_eq!(g.generation(), 1, "{} changed while paused", g.name);
    }
    let abort = fleet.fleet(&["abort", "--reason", "changed my mind", "--json"]);
    assert_eq!(
        abort.status.code(),
        Some(fluxgate_control::fleet::HALTED),
        "{}",
        text(&abort)
    );
    let record = json(&abort);
    assert_eq!(record["state"], "rolled-back", "{record}");
    assert!(
        record["halt_reason"]
            .as_str()
            .is_some_and(|r| r.contains("changed my mind")),
        "{record}"
    );
    assert_eq!(fleet.gws[0].generation(), 1, "gw0 not rolled back");
    let status = fleet.status();
    assert_eq!(
        status["status"]["gw0"]["interfaces"][IF_B]["outcome"], "rolled-back",
        "{status}"
    );
    assert!(status["rollout"].is_null(), "{status}");
}
