//! Classifier program patches go through the same waves: a program that
//! disagrees with the reference is refused by the first gateway's preflight
//! and the rollout halts there (the others never load it); this build's
//! classifier, already serving everywhere, rolls out as a no-op.

use fluxgate_control::fleet::HALTED;

use crate::harness::{Fleet, json, text};

fn versions(g: &crate::harness::Gw) -> usize {
    let out = crate::common::ok(crate::common::fluxgate(
        &g.s,
        &[
            "-n",
            g.link.b.name(),
            "status",
            fluxgate_testkit::net::IF_B,
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    v["interfaces"][0]["versions"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn a_bad_classifier_halts_at_the_first_gateway_and_a_loaded_one_moves_nothing() {
    let fleet = Fleet::new("upgrade", 3);
    fleet.wait_registered(3);
    let object = fleet.ruleset("object", &[]).join("fluxgate.o");
    std::fs::write(&object, fluxgate_dataplane::EMBEDDED_OBJECT).expect("write the object");
    let object = object.to_str().expect("path");
    // `fluxgate_floor` passes everything: acme's default drop disagrees.
    let bad = fleet.fleet(&[
        "upgrade",
        "--object",
        object,
        "--program",
        "fluxgate_floor",
        "--tenant",
        "acme",
        "--waves",
        "1,100%",
        "--json",
    ]);
    assert_eq!(bad.status.code(), Some(HALTED), "{}", text(&bad));
    let record = json(&bad);
    let why = record["halt_reason"].as_str().unwrap_or_default();
    assert!(why.contains("gw0") && why.contains("preflight"), "{record}");
    assert_eq!(record["written"], serde_json::json!(["gw0"]), "{record}");
    for g in &fleet.gws {
        assert_eq!(versions(g), 1, "{}: a version stayed loaded", g.name);
    }
    // This build's classifier serves everyone already: done, nothing moved.
    let good = fleet.fleet(&["upgrade", "--tenant", "acme", "--waves", "1,100%", "--json"]);
    assert!(good.status.success(), "{}", text(&good));
    assert_eq!(json(&good)["state"], "done");
    let status = fleet.status();
    for g in &fleet.gws {
        assert_eq!(versions(g), 1, "{}", g.name);
        let i = &status["status"][&g.name]["interfaces"][fluxgate_testkit::net::IF_B];
        assert_eq!(i["outcome"], "unchanged", "{status}");
        assert_eq!(i["classifier"]["version"], 0, "{status}");
        assert_eq!(g.generation(), 1, "{}: the ruleset changed", g.name);
    }
}

/// acme's classifier version on `g` (from `status --json`).
fn acme_version(g: &crate::harness::Gw) -> u64 {
    let out = crate::common::ok(crate::common::fluxgate(
        &g.s,
        &[
            "-n",
            g.link.b.name(),
            "status",
            fluxgate_testkit::net::IF_B,
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    v["interfaces"][0]["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["tenant"] == "acme")
        .and_then(|t| t["classifier_version"].as_u64())
        .expect("acme's version")
}

/// A patch that moves a tenant on the first gateway and fails on the
/// second (acme is not live there) halts and moves acme back on the first.
#[test]
fn a_classifier_patch_that_fails_later_moves_the_tenants_back() {
    let fleet = Fleet::new("upgradeback", 2);
    let g0 = &fleet.gws[0];
    let on_g0 = |args: &[&str]| {
        let mut full = vec!["-n", g0.link.b.name()];
        full.extend_from_slice(args);
        crate::common::ok(crate::common::fluxgate(&g0.s, &full))
    };
    // gw0: acme on a second copy of the classifier (version 1).
    on_g0(&["upgrade", "stage", fluxgate_testkit::net::IF_B]);
    on_g0(&[
        "upgrade",
        "assign",
        "1",
        fluxgate_testkit::net::IF_B,
        "--tenant",
        "acme",
    ]);
    assert_eq!(acme_version(g0), 1);
    // gw1: no acme at all.
    let no_acme = fleet.ruleset(
        "noacme",
        &[crate::harness::rules::GATEWAY, crate::harness::rules::BETA],
    );
    let g1 = &fleet.gws[1];
    crate::common::ok(crate::common::fluxgate(
        &g1.s,
        &[
            "-n",
            g1.link.b.name(),
            "apply",
            no_acme.to_str().expect("path"),
            fluxgate_testkit::net::IF_B,
        ],
    ));
    fleet.wait_registered(2);
    let out = fleet.fleet(&["upgrade", "--tenant", "acme", "--waves", "1,100%", "--json"]);
    assert_eq!(out.status.code(), Some(HALTED), "{}", text(&out));
    let record = json(&out);
    let why = record["halt_reason"].as_str().unwrap_or_default();
    assert!(why.contains("gw1") && why.contains("acme"), "{record}");
    // gw0 had moved acme to version 0 (the copy found first), and back.
    let history = crate::common::ok(crate::common::fluxgate(
        &g0.s,
        &[
            "-n",
            g0.link.b.name(),
            "history",
            fluxgate_testkit::net::IF_B,
        ],
    ));
    let history = text(&history);
    assert!(
        history.contains("classifier version 0 now serves acme"),
        "{history}"
    );
    assert_eq!(acme_version(g0), 1, "acme not moved back: {history}");
    let status = fleet.status();
    assert_eq!(
        status["status"]["gw0"]["interfaces"][fluxgate_testkit::net::IF_B]["outcome"],
        "rolled-back",
        "{status}"
    );
}
