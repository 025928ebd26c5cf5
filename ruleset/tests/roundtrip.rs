//! Canonical printing round-trips, and the parser survives arbitrary input.

use fluxgate_ruleset::{
    Action, Gateway, Match, NamedSet, PortItem, PortRange, PrefixItem, Proto, Rule, RuleId,
    RuleSpans, Ruleset, SetElems, Span, TcpFlags, Tenant, TenantSpans, Verdict,
};
use ipnet::IpNet;
use proptest::prelude::*;

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, l)| IpNet::new(
            std::net::Ipv4Addr::from(a).into(),
            l
        )
        .expect("len ok")),
        (any::<u128>(), 0u8..=128).prop_map(|(a, l)| IpNet::new(
            std::net::Ipv6Addr::from(a).into(),
            l
        )
        .expect("len ok")),
    ]
}

fn range() -> impl Strategy<Value = PortRange> {
    (any::<u16>(), any::<u16>()).prop_map(|(a, b)| PortRange {
        lo: a.min(b),
        hi: a.max(b),
    })
}

const SETS: [&str; 3] = ["web", "admins", "x-1"];

fn prefix_items() -> impl Strategy<Value = Vec<PrefixItem>> {
    prop::collection::vec(
        prop_oneof![4 => net().prop_map(PrefixItem::Net), 1 => prop::sample::select(&SETS[..]).prop_map(|s| PrefixItem::Set(s.into()))],
        0..4,
    )
}

fn port_items() -> impl Strategy<Value = Vec<PortItem>> {
    prop::collection::vec(
        prop_oneof![4 => range().prop_map(PortItem::Range), 1 => prop::sample::select(&SETS[..]).prop_map(|s| PortItem::Set(s.into()))],
        0..4,
    )
}

fn matches() -> impl Strategy<Value = Match> {
    (
        prop::option::of(prop::sample::select(vec!["eth0", "ext-1", "bond0.42"])),
        prop::option::of(0u16..=4095),
        prefix_items(),
        prefix_items(),
        prop::option::of(any::<u8>().prop_map(Proto::from_number)),
        port_items(),
        port_items(),
        prop::option::of((1u8..=255, any::<u8>()).prop_map(|(m, v)| TcpFlags {
            mask: m,
            value: v & m,
        })),
        prop::option::of(any::<u8>()),
        prop::option::of(any::<u8>()),
        any::<bool>(),
    )
        .prop_map(
            |(
                iif,
                vlan,
                src,
                dst,
                proto,
                sport,
                dport,
                tcp_flags,
                icmp_type,
                icmp_code,
                fragment,
            )| Match {
                iif: iif.map(String::from),
                vlan,
                src,
                dst,
                proto,
                sport,
                dport,
                tcp_flags,
                icmp_type,
                icmp_code,
                fragment,
            },
        )
}

fn rules() -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec(
        (
            matches(),
            prop::sample::select(vec![Action::Pass, Action::Drop, Action::Count]),
            prop::option::of(limit()),
        )
            .prop_map(|(matches, action, limit)| Rule {
                id: RuleId(0),
                position: 0,
                matches,
                action,
                limit,
                spans: RuleSpans::default(),
            }),
        0..6,
    )
}

fn sets() -> impl Strategy<Value = Vec<NamedSet>> {
    prop::collection::vec(
        prop_oneof![
            prop::collection::vec(net(), 1..4).prop_map(SetElems::Prefixes),
            prop::collection::vec(range(), 1..4).prop_map(SetElems::Ports),
        ],
        0..3,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, elems)| NamedSet {
                name: format!("s{i}"),
                elems,
                span: Span::default(),
            })
            .collect()
    })
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop::sample::select(vec![Verdict::Pass, Verdict::Drop])
}

fn ruleset() -> impl Strategy<Value = Ruleset> {
    let tenant = (
        verdict(),
        prop::collection::vec(net(), 1..3),
        sets(),
        rules(),
    );
    (
        verdict(),
        sets(),
        rules(),
        prop::collection::vec(tenant, 0..3),
    )
        .prop_map(|(d, gsets, grules, ts)| {
            let mut rs = Ruleset {
                gateway: Gateway {
                    default_action: d,
                    rules: grules,
                    sets: gsets,
                    ..Gateway::default()
                },
                tenants: ts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (d, prefixes, sets, rules))| Tenant {
                        name: format!("t{i}"),
                        prefixes,
                        default_action: d,
                        sets,
                        rules,
                        guards: Vec::new(),
                        ceiling: Default::default(),
                        spans: TenantSpans::default(),
                    })
                    .collect(),
                ..Ruleset::default()
            };
            rs.assign_ids();
            rs
        })
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=100000 for a longer fuzz run
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn model_print_parse_is_identity(rs in ruleset()) {
        let files = rs.to_files();
        let back = Ruleset::parse_files(&files).map_err(|e| TestCaseError::fail(e.render()))?;
        prop_assert_eq!(&back, &rs);
        // ids are recomputed by the parser from the text: equal ids = stable ids
        prop_assert_eq!(back.to_files(), files);
    }

    #[test]
    fn parser_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Ruleset::parse_files(&[("gateway.fg", text.as_ref()), ("t.fg", text.as_ref())]);
    }

    #[test]
    fn parser_survives_token_soup(words in prop::collection::vec(prop::sample::select(vec![
        "default", "pass", "drop", "count", "set", "tenant", "prefix", "prefixes", "saddr", "daddr",
        "proto", "sport", "dport", "flags", "icmp-type", "icmp-code", "iif", "vlan", "tcp", "icmpv6",
        "{", "}", ",", ";", "\n", "@web", "@", "\"", "#", "10.0.0.0/8", "10.0.0.0/99", "::/0", "80",
        "80-70", "1-65535", "70000", "S/SA", "X", "4096", "t", "-", "/", "é", "\u{0}",
    ]), 0..60)) {
        let text = words.join(" ");
        for file in ["gateway.fg", "t.fg"] {
            if let Ok(rs) = Ruleset::parse_files(&[("gateway.fg", "default drop\n"), (file, text.as_str())]) {
                let _ = fluxgate_ruleset::validate(rs, &fluxgate_ruleset::Config::default());
            }
        }
    }

    #[test]
    fn parse_print_parse_print_is_idempotent(rs in ruleset()) {
        // start from text, as a person would write it (with extra spaces and comments)
        let files: Vec<(String, String)> = rs
            .to_files()
            .into_iter()
            .map(|(n, t)| (n, format!("# header\n\n{}", t.replace(' ', "  ").replace('\n', "  # c\n"))))
            .collect();
        let once = Ruleset::parse_files(&files).map_err(|e| TestCaseError::fail(e.render()))?.to_files();
        let twice = Ruleset::parse_files(&once).map_err(|e| TestCaseError::fail(e.render()))?.to_files();
        prop_assert_eq!(once, twice);
    }
}

/// Rule ids are part of the state operators see (counters, journal, `explain`)
/// and must not change between releases for the same rule text: pinned here.
#[test]
fn rule_ids_are_stable_across_releases() {
    let text = "default pass\n\
        set web { 80, 443 }\n\
        saddr { 192.0.2.0/24, 2001:db8::/32 } daddr 198.51.100.7 proto tcp dport { 22, 8000-8080, @web } drop\n\
        iif eth0 vlan 7 proto udp sport 53 count\n\
        proto icmp pass\n";
    let rs = Ruleset::parse_files(&[("gateway.fg", text)]).expect("parse");
    let ids: Vec<String> = rs.gateway.rules.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(
        ids,
        ["9c3b1038561564e8", "7d0c8a736d4ae8d8", "4984dd6f6a7348ed"]
    );
}

/// Limits as the grammar writes them (byte amounts in whole units of their
/// printed scale, so they print back the same).
fn limit() -> impl Strategy<Value = fluxgate_ruleset::Limit> {
    use fluxgate_ruleset::{Limit, Per, PerSource, Rate};
    (
        1u64..5_000_000,
        any::<bool>(),
        prop::sample::select(vec![Per::Second, Per::Minute, Per::Hour, Per::Day]),
        prop::option::of(1u64..100_000),
        prop::option::of((1u8..=32, 1u8..=128)),
    )
        .prop_map(|(amount, bytes, per, burst, per_source)| Limit {
            rate: Rate { amount, bytes, per },
            burst,
            per_source: per_source.map(|(v4, v6)| PerSource { v4, v6 }),
        })
}
