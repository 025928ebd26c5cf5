//! Regressions for what the fuzz targets (`fuzz/`, `cargo xtask fuzz`) found.

use fluxgate_ruleset::{
    Classifier, CompileOptions, Config, PacketHeader, Ruleset, compile_with, preflight, reference,
    validate,
};

/// Found by the `ruleset` target: a gateway rule `proto icmpv6 icmp-type 135`
/// (no addresses) got an IPv4 witness carrying an ICMPv6 type, a packet no
/// frame carries. The reference matched it, the compiled tables (ICMPv6 only
/// over IPv6) did not, so a valid ruleset would fail its own preflight.
/// Witnesses of ICMP rules now take the family of their ICMP.
#[test]
fn icmp_witnesses_take_the_family_of_their_icmp() {
    let gateway = "default drop\n\
                   proto icmp icmp-type 3 icmp-code 4 pass\n\
                   proto icmp icmp-type 8 pass\n\
                   proto icmpv6 icmp-type 135 pass\n";
    let rs = validate(
        Ruleset::parse_files(&[("gateway.fg", gateway)]).expect("parses"),
        &Config::default(),
    )
    .expect("valid");
    let image = compile_with(&rs, &CompileOptions::default()).expect("compiles");
    let classifier = Classifier::new(image, []);
    let probes = preflight::probes(&rs);
    assert_eq!(probes.len(), 3);
    for probe in &probes {
        let p = &probe.packet;
        assert_eq!(p.dst.is_ipv6(), p.proto == 58, "{p}");
        let want = reference::classify(&rs, p);
        let got = classifier.decide(p);
        assert!(got.same_outcome(&want), "{p}: {got:?} vs {want:?}");
        assert!(want.rule.is_some(), "{p}: each witness hits its rule");
    }
}

/// The text form refuses the packets no frame carries: an ICMP type or code
/// on ICMPv6 over IPv4 or ICMP over IPv6 (as it refuses ports on ICMP).
#[test]
fn icmp_fields_need_the_familys_icmp() {
    for text in [
        "icmpv6 192.0.2.7 -> 192.0.2.1 type 135 code 0",
        "icmp 2001:db8::1 -> 2001:db8::2 type 8",
        "icmpv6 192.0.2.7 -> 192.0.2.1 code 0",
    ] {
        let err = text.parse::<PacketHeader>().expect_err(text);
        assert!(err.reason.contains("does not travel over"), "{text}: {err}");
    }
    for text in [
        "icmp 192.0.2.7 -> 192.0.2.1 type 8 code 0",
        "icmpv6 2001:db8::1 -> 2001:db8::2 type 135 code 0",
        // without type and code: a non-first fragment, on either family
        "icmpv6 192.0.2.7 -> 192.0.2.1",
    ] {
        let p: PacketHeader = text.parse().expect(text);
        assert_eq!(p.to_string(), text);
    }
}
