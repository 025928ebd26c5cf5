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
