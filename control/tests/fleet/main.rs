//! Fleet rollout through a real etcd: gateways are network namespaces, each
//! with its own veth pair, bpffs directory, state directory, `fluxgate
//! agent` process and traffic; the controller is `fluxgate fleet`.

mod auth;
#[path = "../common/mod.rs"]
mod common;
mod crashes;
mod harness;
mod ops;
mod store;
mod upgrade;

use fluxgate_testkit::net::{self, Flow};
use harness::{ACME_ADDR, BETA_ADDR, Fleet, rules};

/// A good change (acme gets port 7001) over six gateways in three waves:
/// every gateway realizes it, and traffic to the untouched tenant (beta)
/// loses nothing on any gateway during the rollout.
#[test]
fn a_good_change_reaches_six_gateways_in_three_waves_without_loss() {
    let fleet = Fleet::new("waves", 6);
    fleet.wait_registered(6);
    let flows: Vec<Flow> = fleet
        .gws
        .iter()
        .map(|g| Flow::start(&g.link, &[(BETA_ADDR, 7100)], 200))
        .collect();
    let v2 = fleet.ruleset("v2", &rules::ACME_7001);
    let out = fleet.fleet(&[
        "rollout",
        v2.to_str().expect("path"),
        "--waves",
        "1,2,100%",
        "--reason",
        "acme opens 7001",
        "--json",
    ]);
    assert!(out.status.success(), "{}", harness::text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rollout JSON");
    assert_eq!(record["state"], "done", "{record}");
    let waves: Vec<usize> = record["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| w.as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(waves, vec![1, 1, 4]);
    for (flow, g) in flows.into_iter().zip(&fleet.gws) {
        let counts = flow.stop();
        assert!(counts[0].0 > 0, "{}: nothing sent", g.name);
        assert_eq!(
            counts[0].0, counts[0].1,
            "{}: the untouched tenant lost packets during the rollout",
            g.name
        );
    }
    // Every gateway runs the change: acme's 7001 passes now.
    for g in &fleet.gws {
        assert_eq!(
            net::udp_exchange_to(&g.link, ACME_ADDR, 7001, 10, 16),
            10,
            "{} does not pass acme:7001",
            g.name
        );
        assert_eq!(g.generation(), 2, "{}", g.name);
    }
    let status = fleet.status();
    for g in &fleet.gws {
        let iface = &status["status"][&g.name]["interfaces"][net::IF_B];
        assert_eq!(iface["outcome"], "applied", "{}: {status}", g.name);
        assert_eq!(iface["ruleset"], record["ruleset"], "{}", g.name);
    }
    // An agent restarted (SIGKILL first) adopts what is live: it reports
    // the change realized again without applying or flipping anything.
    let history = fleet.gws[0].history();
    let before = status["status"]["gw0"]["updated_ms"].clone();
    let mut fleet = fleet;
    fleet.gws[0].kill_agent();
    fleet.gws[0].start_agent();
    let again = net::eventually(std::time::Duration::from_secs(30), || {
        let s = fleet.status();
        s["status"]["gw0"]["updated_ms"] != before
            && s["status"]["gw0"]["interfaces"][net::IF_B]["outcome"] == "unchanged"
    });
    assert!(
        again,
        "the restarted agent did not report: {}",
        fleet.status()
    );
    assert_eq!(fleet.gws[0].generation(), 2);
    assert_eq!(
        fleet.gws[0].history(),
        history,
        "the restarted agent changed something"
    );
    // Rolling the same ruleset out again changes nothing anywhere.
    let again = fleet.fleet(&["rollout", v2.to_str().expect("path"), "--waves", "100%"]);
    assert!(again.status.success(), "{}", harness::text(&again));
    for g in &fleet.gws {
        assert_eq!(g.generation(), 2, "{}: flipped for nothing", g.name);
    }
}

/// A change that fails the canary on the first gateway (it drops acme's
/// traffic): the rollout halts, that gateway is rolled back, the other five
/// never apply it, and the history says why.
#[test]
fn a_canary_failure_on_the_first_gateway_halts_and_rolls_back() {
    let fleet = Fleet::new("canary", 6);
    fleet.wait_registered(6);
    let flows: Vec<Flow> = fleet
        .gws
        .iter()
        .map(|g| Flow::start(&g.link, &[(ACME_ADDR, 7000), (BETA_ADDR, 7100)], 400))
        .collect();
    let bad = fleet.ruleset("bad", &rules::ACME_CLOSED);
    let out = fleet.fleet(&[
        "rollout",
        bad.to_str().expect("path"),
        "--waves",
        "1,25%,100%",
        "--canary",
        "3s",
        "--reason",
        "close acme",
        "--json",
    ]);
    // Stopped (receivers joined) before the checks bind the same ports.
    let counts: Vec<Vec<(u64, u64)>> = flows.into_iter().map(Flow::stop).collect();
    assert_eq!(
        out.status.code(),
        Some(fluxgate_control::fleet::HALTED),
        "{}",
        harness::text(&out)
    );
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rollout JSON");
    assert_eq!(record["state"], "rolled-back", "{record}");
    let why = record["halt_reason"].as_str().unwrap_or_default();
    assert!(why.contains("canary rolled back"), "{record}");
    assert!(why.contains(&fleet.gws[0].name), "{record}");
    let first = &fleet.gws[0];
    // beta, untouched, lost nothing anywhere; acme lost packets only on the
    // first gateway, during its canary.
    for (g, c) in fleet.gws.iter().zip(&counts) {
        assert_eq!(c[1].0, c[1].1, "{}: beta lost packets", g.name);
    }
    assert!(
        counts[0][0].1 < counts[0][0].0,
        "the canary saw no loss: {counts:?}"
    );
    for (g, c) in fleet.gws.iter().zip(&counts).skip(1) {
        assert_eq!(c[0].0, c[0].1, "{}: acme lost packets", g.name);
    }
    // The first gateway applied it (generation 2) and is back on 1's tables.
    assert_eq!(
        net::udp_exchange_to(&first.link, ACME_ADDR, 7000, 10, 16),
        10,
        "the first gateway still drops acme"
    );
    assert!(first.history().contains("canary"), "{}", first.history());
    for g in &fleet.gws[1..] {
        assert_eq!(g.generation(), 1, "{} applied the bad change", g.name);
        assert_eq!(net::udp_exchange_to(&g.link, ACME_ADDR, 7000, 10, 16), 10);
    }
    let history = fleet.fleet(&["history", record["id"].as_str().expect("id")]);
    let history = harness::text(&history);
    assert!(history.contains("halted"), "{history}");
    assert!(history.contains("canary rolled back"), "{history}");
}
