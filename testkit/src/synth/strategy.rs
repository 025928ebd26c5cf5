//! Random rulesets over a small universe of boundary values (prefix edges, port
//! range edges, both families, count rules, TCP flags, ICMP, VLAN) and random
//! packets from the same universe, as proptest strategies. Shared by the
//! userspace and kernel differential tests.

use fluxgate_ruleset::PacketHeader;
use proptest::prelude::*;

const SRC4: &[&str] = &[
    "192.0.2.0/24",
    "192.0.2.128/25",
    "192.0.2.1",
    "10.0.0.0/8",
    "0.0.0.0/0",
];
const SRC6: &[&str] = &["2001:db8:ffff::/48", "2001:db8:ffff::1", "::/0"];
const ACME4: &[&str] = &[
    "203.0.113.0/24",
    "203.0.113.0/25",
    "203.0.113.128/26",
    "203.0.113.7",
];
const ACME6: &[&str] = &["2001:db8:a::/48", "2001:db8:a::7", "2001:db8:a:8000::/49"];
const BETA4: &[&str] = &["198.51.100.0/25", "198.51.100.64/26", "198.51.100.1"];
const PORTS: &[&str] = &[
    "0",
    "1",
    "22",
    "80",
    "443",
    "65535",
    "0-1023",
    "1024-65535",
    "80-443",
];
const PKT_SRC4: &[&str] = &[
    "192.0.2.1",
    "192.0.2.127",
    "192.0.2.128",
    "192.0.2.255",
    "10.1.2.3",
    "8.8.8.8",
];
const PKT_SRC6: &[&str] = &["2001:db8:ffff::1", "2001:db8:ffff::2", "2001:db8:1234::9"];
const PKT_DST4: &[&str] = &[
    "203.0.113.7",
    "203.0.113.0",
    "203.0.113.127",
    "203.0.113.128",
    "203.0.113.191",
    "203.0.113.255",
    "198.51.100.1",
    "198.51.100.127",
    "198.51.100.200",
    "192.0.2.50",
];
const PKT_DST6: &[&str] = &[
    "2001:db8:a::7",
    "2001:db8:a::8",
    "2001:db8:a:8000::1",
    "2001:db8:b::1",
    "2001:db8:c::1",
];
const PKT_PORTS: &[u16] = &[
    0, 1, 2, 21, 22, 23, 79, 80, 81, 442, 443, 444, 1023, 1024, 65534, 65535,
];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(list).prop_map(str::to_owned)
}

fn list(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(pick(list), 1..3).prop_map(|v| {
        if v.len() == 1 {
            v[0].clone()
        } else {
            format!("{{ {} }}", v.join(", "))
        }
    })
}

/// One rule line for a scope whose own destinations are `dst4` / `dst6`.
fn rule(
    dst4: &'static [&'static str],
    dst6: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let addrs = (
        any::<bool>(),
        0..3u8,
        0..3u8,
        list(SRC4),
        list(SRC6),
        list(dst4),
        list(dst6),
    );
    let l4 = (
        0..8u8,
        prop::option::weighted(0.3, list(PORTS)),
        prop::option::weighted(0.4, list(PORTS)),
        prop::sample::select(&["S/SA", "A", "F/F", "R/R"][..]),
        0..3u8,
        0..3u8,
    );
    let rest = (
        prop::option::weighted(0.1, prop::sample::select(&[0u16, 100, 4095][..])),
        0..3u8,
    );
    (addrs, l4, rest).prop_map(
        |((v6, src, dst, s4, s6, d4, d6), (proto, sport, dport, flags, ty, code), (vlan, act))| {
            let mut parts = Vec::new();
            if let Some(v) = vlan {
                parts.push(format!("vlan {v}"));
            }
            if src == 0 {
                parts.push(format!("saddr {}", if v6 { s6 } else { s4 }));
            }
            if dst == 0 {
                parts.push(format!("daddr {}", if v6 { d6 } else { d4 }));
            }
            match proto {
                0 | 1 => {
                    parts.push(format!("proto {}", if proto == 0 { "tcp" } else { "udp" }));
                    let no_ports = sport.is_none() && dport.is_none();
                    if let Some(s) = sport {
                        parts.push(format!("sport {s}"));
                    }
                    if let Some(d) = dport {
                        parts.push(format!("dport {d}"));
                    }
                    if proto == 0 && ty == 0 {
                        parts.push(format!("flags {flags}"));
                    } else if no_ports && code == 2 {
                        parts.push("fragment".into());
                    }
                }
                2 => {
                    parts.push(format!("proto {}", if v6 { "icmpv6" } else { "icmp" }));
                    if ty > 0 {
                        parts.push(format!("icmp-type {}", if v6 { 128 } else { 8 }));
                    }
                    if code == 1 {
                        parts.push("icmp-code 0".into());
                    }
                }
                3 => {
                    parts.push("proto 47".into());
                    if code == 2 {
                        parts.push("fragment".into());
                    }
                }
                4 => parts.push("fragment".into()),
                _ => {}
            }
            parts.push(["pass", "drop", "count"][usize::from(act)].into());
            parts.join(" ")
        },
    )
}

/// A ruleset as `(file name, text)` pairs: `gateway.fg` and two tenants, `acme`
/// (`203.0.113.0/24`, `2001:db8:a::/48`) and `beta` (`198.51.100.0/25`,
/// `2001:db8:b::/48`), each with a random default and up to 6 / 14 / 8 rules
/// over its own destinations: what
/// [`Ruleset::parse_files`](fluxgate_ruleset::Ruleset::parse_files) takes. Not
/// every draw validates; tests skip those that do not.
pub fn ruleset() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        prop::collection::vec(rule(&["192.0.2.0/24", "203.0.113.0/24", "198.51.100.0/25"], &["2001:db8:a::/48", "2001:db8:b::/48"]), 0..6),
        prop::collection::vec(rule(ACME4, ACME6), 0..14),
        prop::collection::vec(rule(BETA4, &["2001:db8:b::/48", "2001:db8:b::1"]), 0..8),
        any::<[bool; 3]>(),
    )
        .prop_map(|(g, a, b, d)| {
            let def = |x: bool| if x { "pass" } else { "drop" };
            vec![
                ("gateway.fg".into(), format!("default {}\n{}\n", def(d[0]), g.join("\n"))),
                ("acme.fg".into(), format!("tenant acme\nprefixes {{ 203.0.113.0/24, 2001:db8:a::/48 }}\ndefault {}\n{}\n", def(d[1]), a.join("\n"))),
                ("beta.fg".into(), format!("tenant beta\nprefixes {{ 198.51.100.0/25, 2001:db8:b::/48 }}\ndefault {}\n{}\n", def(d[2]), b.join("\n"))),
            ]
        })
}

/// A packet over the same boundary values: TCP (with random flags), UDP, ICMP or
/// ICMPv6, a non-first TCP, UDP or GRE fragment (no ports) or GRE, IPv4 or IPv6, sometimes
/// VLAN-tagged, addressed to either tenant, the gateway's own space or nobody.
pub fn packet() -> impl Strategy<Value = PacketHeader> {
    (
        any::<bool>(),
        0..7u8,
        prop::sample::select(PKT_PORTS),
        prop::sample::select(PKT_PORTS),
        any::<u8>(),
        prop::option::weighted(0.15, prop::sample::select(&[0u16, 100, 101, 4095][..])),
        0..12usize,
        0..12usize,
    )
        .prop_map(|(v6, kind, sp, dp, flags, vlan, si, di)| {
            let (s, d) = if v6 {
                (PKT_SRC6[si % PKT_SRC6.len()], PKT_DST6[di % PKT_DST6.len()])
            } else {
                (PKT_SRC4[si % PKT_SRC4.len()], PKT_DST4[di % PKT_DST4.len()])
            };
            let addr = |a: &str, p: u16| {
                if v6 {
                    format!("[{a}]:{p}")
                } else {
                    format!("{a}:{p}")
                }
            };
            let letters: String = "FSRPAUEC"
                .chars()
                .enumerate()
                .filter(|(i, _)| flags & (1 << i) != 0)
                .map(|(_, c)| c)
                .collect();
            let mut text = match kind {
                0 => format!(
                    "tcp {} -> {}{}",
                    addr(s, sp),
                    addr(d, dp),
                    if letters.is_empty() {
                        String::new()
                    } else {
                        format!(" flags {letters}")
                    }
                ),
                1 => format!("udp {} -> {}", addr(s, sp), addr(d, dp)),
                2 => format!(
                    "{} {s} -> {d} type {} code {}",
                    if v6 { "icmpv6" } else { "icmp" },
                    if sp % 2 == 0 {
                        if v6 { 128 } else { 8 }
                    } else {
                        3
                    },
                    dp % 2
                ),
                3 => format!("tcp {s} -> {d}"), // non-first fragment: no ports
                4 => format!("udp {s} -> {d} frag"),
                5 => format!("47 {s} -> {d} frag"),
                _ => format!("47 {s} -> {d}"),
            };
            if let Some(v) = vlan {
                text.push_str(&format!(" vlan {v}"));
            }
            text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxgate_ruleset::{Config, Ruleset, validate};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

        /// Every drawn ruleset parses (and so exercises the engines, not only
        /// the parser's errors); the point of the universe is that most validate.
        #[test]
        fn rulesets_parse(files in ruleset()) {
            let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
            prop_assert_eq!(names, ["gateway.fg", "acme.fg", "beta.fg"]);
            let parsed = Ruleset::parse_files(&files);
            prop_assert!(parsed.is_ok(), "{:?}", files);
        }

        /// A drawn packet prints as text that parses back to itself (it was
        /// built from text; `packet()` panics on text that does not parse).
        #[test]
        fn packets_round_trip_through_text(p in packet()) {
            let again: PacketHeader = p.to_string().parse().expect("parses");
            prop_assert_eq!(again, p);
        }
    }

    #[test]
    fn most_drawn_rulesets_validate() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let valid = (0..200)
            .filter(|_| {
                let files = ruleset().new_tree(&mut runner).expect("tree").current();
                Ruleset::parse_files(&files)
                    .and_then(|rs| validate(rs, &Config::default()))
                    .is_ok()
            })
            .count();
        assert!(valid > 100, "only {valid} of 200 validate");
    }
}
