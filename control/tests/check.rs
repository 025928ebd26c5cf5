//! `fluxgate check --json` on rulesets that are refused: the error is JSON on
//! stdout as well (exit code, message, each problem with its file, line and
//! column), the text for people stays on stderr. No kernel, no root.

mod common;

use common::{Scratch, fluxgate, write};

/// Runs `check --json` on `dir`, expects exit 7, returns the JSON error.
fn refused(s: &Scratch, dir: &str) -> serde_json::Value {
    let out = fluxgate(s, &["check", dir, "--json"]);
    assert_eq!(out.status.code(), Some(7), "ruleset rejected exit code");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ruleset rejected"),
        "text on stderr"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["error"]["exit_code"], 7);
    json["error"].clone()
}

/// `(kind, file, line, col)` of each diagnostic.
fn positions(error: &serde_json::Value) -> Vec<(String, String, u64, u64)> {
    error["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().expect("kind").to_owned(),
                d["at"]["file"].as_str().unwrap_or_default().to_owned(),
                d["at"]["line"].as_u64().unwrap_or(0),
                d["at"]["col"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn every_parse_error_comes_with_its_position() {
    let s = Scratch::new("check-syntax");
    write(
        &s.rules,
        "gateway.fg",
        "default pass\nproto tcp dport 22 pas\nproto tcp dport 99999 drop\n",
    );
    let dir = s.rules.display().to_string();
    let error = refused(&s, &dir);
    assert_eq!(error["message"], "ruleset rejected: 2 errors");
    let file = s.rules.join("gateway.fg").display().to_string();
    assert_eq!(
        positions(&error),
        [
            ("Syntax".to_owned(), file.clone(), 2, 20),
            ("NumberOutOfRange".to_owned(), file, 3, 17),
        ]
    );
}

#[test]
fn a_compile_error_comes_with_its_rule_s_position() {
    let s = Scratch::new("check-compile");
    // Seventeen count rules on the same traffic, then a drop: no cut separates them.
    let rules = "proto tcp dport 80 count\n".repeat(17);
    write(
        &s.rules,
        "gateway.fg",
        &format!("default pass\n{rules}proto tcp dport 80 drop\n"),
    );
    let dir = s.rules.display().to_string();
    let error = refused(&s, &dir);
    let file = s.rules.join("gateway.fg").display().to_string();
    assert_eq!(positions(&error), [("Compile".to_owned(), file, 2, 1)]);
    let message = error["diagnostics"][0]["message"]
        .as_str()
        .expect("message");
    assert!(
        message.starts_with("gateway rules #1, #2, #3, #4, #5, #6, #7, #8, … overlap"),
        "the position is in `at`, not repeated: {message}"
    );
}

#[test]
fn an_unreadable_directory_is_named_without_a_position() {
    let s = Scratch::new("check-missing");
    let dir = s.rules.join("missing").display().to_string();
    let error = refused(&s, &dir);
    let diagnostics = error["diagnostics"].as_array().expect("diagnostics");
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0]["kind"], "Io");
    assert_eq!(diagnostics[0]["file"], dir.as_str());
    assert!(diagnostics[0].get("at").is_none(), "{error}");
}

#[test]
fn an_interface_this_host_lacks_is_checked_with_a_warning() {
    // A ruleset is often checked away from its gateway (in CI): `check` takes
    // an interface it cannot see as some interface and says so; `apply` on
    // the gateway still needs it.
    let s = Scratch::new("check-iif");
    write(
        &s.rules,
        "gateway.fg",
        "default pass\niif fgt-absent0 proto tcp dport 22 drop\n",
    );
    let dir = s.rules.display().to_string();
    let out = common::ok(fluxgate(&s, &["check", &dir, "--json"]));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["rules"], 1);
    let warnings = json["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("`fgt-absent0`"))),
        "{warnings:?}"
    );
}
