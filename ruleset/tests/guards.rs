//! Guard packets: parsed with their verdict, printed back, checked to be
//! addressed to their tenant, and bad ones reported with file:line:col.

use fluxgate_ruleset::{Config, Ruleset, Verdict, validate};

const GATEWAY: &str = "default pass\nguard \"udp 192.0.2.1:1 -> 192.0.2.2:53\" pass\n";
const ACME: &str = "tenant acme\nprefix 203.0.113.0/24\ndefault drop\nproto tcp dport 443 pass\n\
guard \"tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S\" pass\n\
guard \"tcp 198.51.100.7:40000 -> 203.0.113.10:22 flags S\" drop\n";

#[test]
fn guards_parse_print_and_validate() {
    let rs = Ruleset::parse_files(&[("gateway.fg", GATEWAY), ("acme.fg", ACME)]).expect("parse");
    let valid = validate(rs.clone(), &Config::default()).expect("valid");
    let acme = &valid.tenants()[0];
    assert_eq!(acme.guards.len(), 2);
    assert_eq!(acme.guards[0].verdict, Verdict::Pass);
    assert_eq!(acme.guards[1].packet.dport, Some(22));
    assert_eq!(valid.gateway().guards.len(), 1);
    // Printing and parsing again gives the same model.
    let files = rs.to_files();
    let again = Ruleset::parse_files(&files).expect("reparse");
    assert_eq!(again.tenants[0].guards, rs.tenants[0].guards);
    assert!(
        files[1]
            .1
            .contains("guard \"tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S\" pass")
    );
}

#[test]
fn a_guard_addressed_elsewhere_is_an_error_with_its_location() {
    let bad = "tenant acme\nprefix 203.0.113.0/24\ndefault drop\nguard \"tcp 198.51.100.7:1 -> 10.0.0.1:443\" pass\n";
    let rs =
        Ruleset::parse_files(&[("gateway.fg", "default pass\n"), ("acme.fg", bad)]).expect("parse");
    let errors = validate(rs, &Config::default()).expect_err("out of scope");
    let text = errors.errors[0].render();
    assert!(text.contains("acme.fg:4:1"), "{text}");
    assert!(text.contains("not addressed to tenant `acme`"), "{text}");
}

#[test]
fn a_malformed_guard_is_a_syntax_error_at_the_packet() {
    for (text, want) in [
        ("guard \"tcp 1.2.3.4:1 => 5.6.7.8:2\" pass\n", "acme.fg:4:7"),
        ("guard tcp pass\n", "acme.fg:4:7"),
        (
            "guard \"udp 198.51.100.1:1 -> 203.0.113.1:2\" maybe\n",
            "acme.fg:4:",
        ),
    ] {
        let file = format!("tenant acme\nprefix 203.0.113.0/24\ndefault drop\n{text}");
        let errors = Ruleset::parse_files(&[("gateway.fg", "default pass\n"), ("acme.fg", &file)])
            .expect_err("syntax error");
        let rendered = errors.errors[0].render();
        assert!(rendered.contains(want), "{text}: {rendered}");
    }
}
