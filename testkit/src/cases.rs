//! The shared table of semantic test cases (`ruleset/tests/cases.txt`), so the
//! reference, the userspace classifier and the kernel program run the same table.
//!
//! Format (lines starting with `#` outside file sections are comments):
//!
//! ```text
//! === name of the case
//! --- gateway.fg
//! default drop
//! --- acme.fg
//! tenant acme
//! prefix 203.0.113.0/24
//! default drop
//! proto tcp dport 443 pass
//! --- config
//! max_rules_per_tenant 10
//! --- packets
//! tcp 192.0.2.1:4000 -> 203.0.113.9:443 => pass acme#1
//! tcp 192.0.2.1:4000 -> 203.0.113.9:80 => drop acme default
//! udp 192.0.2.1:53 -> 198.51.100.1:53 => drop gateway default
//! icmpv6 fe80::1 -> ff02::1:ff00:9 type 135 hlim 255 => pass neighbor-discovery
//! tcp 192.0.2.1:4000 -> 203.0.113.9:443 => pass acme#1 counted gateway#2
//! --- errors
//! OutOfScope acme.fg:4:1
//! --- warnings
//! Shadowed acme.fg:5:1
//! ```
//!
//! A case with `--- errors` expects parsing or validation to fail with exactly those
//! errors (kind and `file:line:col`, any order); `--- warnings` lists exactly the
//! warnings expected (none if absent and validation succeeds).

use std::fmt::Write as _;

use fluxgate_ruleset::config::Config;
use fluxgate_ruleset::error::{Diag, Errors};
use fluxgate_ruleset::model::{Ruleset, Verdict};
use fluxgate_ruleset::packet::PacketHeader;
use fluxgate_ruleset::reference::{Decision, RuleRef, classify};
use fluxgate_ruleset::validate::{ValidRuleset, validate};

/// What decided a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// Rule at 1-based `position` of `scope` (`gateway` or a tenant name).
    Rule {
        /// `gateway` or tenant name.
        scope: String,
        /// 1-based position.
        position: u32,
    },
    /// The default action of `scope`.
    Default {
        /// `gateway` or tenant name.
        scope: String,
    },
    /// IPv6 neighbour discovery, passed before any rule (written
    /// `neighbor-discovery`).
    NeighborDiscovery,
}

/// One packet line of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketCase {
    /// Line in the table file.
    pub line: usize,
    /// The packet.
    pub packet: PacketHeader,
    /// Expected verdict.
    pub verdict: Verdict,
    /// Expected deciding rule or default.
    pub decided_by: DecidedBy,
    /// Expected `count` rules matched before, as `(scope, position)`, in order.
    pub counted: Vec<(String, u32)>,
}

/// An expected diagnostic: kind name and position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExpectedDiag {
    /// [`fluxgate_ruleset::ErrorKind`] name, e.g. `OutOfScope`.
    pub kind: String,
    /// `file:line:col`.
    pub at: String,
}

/// One case of the table.
#[derive(Debug, Clone, Default)]
pub struct Case {
    /// Name after `===`.
    pub name: String,
    /// Line of the `===`.
    pub line: usize,
    /// `(file name, text)` of the ruleset.
    pub files: Vec<(String, String)>,
    /// Validation config.
    pub config: Config,
    /// Packets and expectations.
    pub packets: Vec<PacketCase>,
    /// Expected errors; `None` if the ruleset must be valid.
    pub errors: Option<Vec<ExpectedDiag>>,
    /// Expected warnings.
    pub warnings: Vec<ExpectedDiag>,
}

fn parse_who(scope_pos: &str, next: Option<&str>) -> Result<(DecidedBy, bool), String> {
    if scope_pos == "neighbor-discovery" {
        return Ok((DecidedBy::NeighborDiscovery, false));
    }
    if let Some((s, p)) = scope_pos.split_once('#') {
        let position = p.parse().map_err(|_| format!("bad rule position `{p}`"))?;
        return Ok((
            DecidedBy::Rule {
                scope: s.to_owned(),
                position,
            },
            false,
        ));
    }
    if next == Some("default") {
        return Ok((
            DecidedBy::Default {
                scope: scope_pos.to_owned(),
            },
            true,
        ));
    }
    Err(format!(
        "expected `SCOPE#N` or `SCOPE default`, found `{scope_pos}`"
    ))
}

fn parse_packet_line(line: usize, text: &str) -> Result<PacketCase, String> {
    let (pkt, exp) = text
        .split_once("=>")
        .ok_or("a packet line needs `=> VERDICT WHO`")?;
    let packet: PacketHeader = pkt.trim().parse().map_err(|e| format!("{e}"))?;
    let mut w = exp.split_whitespace();
    let verdict = match w.next() {
        Some("pass") => Verdict::Pass,
        Some("drop") => Verdict::Drop,
        other => return Err(format!("expected `pass` or `drop`, found {other:?}")),
    };
    let who = w.next().ok_or("missing `SCOPE#N` or `SCOPE default`")?;
    let rest: Vec<&str> = w.collect();
    let (decided_by, used_default) = parse_who(who, rest.first().copied())?;
    let rest = if used_default { &rest[1..] } else { &rest[..] };
    let mut counted = Vec::new();
    match rest {
        [] => {}
        ["counted", list] => {
            for item in list.split(',') {
                match parse_who(item, None)? {
                    (DecidedBy::Rule { scope, position }, _) => counted.push((scope, position)),
                    _ => return Err(format!("bad counted rule `{item}`")),
                }
            }
        }
        _ => return Err(format!("unexpected `{}`", rest.join(" "))),
    }
    Ok(PacketCase {
        line,
        packet,
        verdict,
        decided_by,
        counted,
    })
}

fn parse_diag_line(text: &str) -> Result<ExpectedDiag, String> {
    let mut w = text.split_whitespace();
    match (w.next(), w.next(), w.next()) {
        (Some(kind), Some(at), None) => Ok(ExpectedDiag {
            kind: kind.to_owned(),
            at: at.to_owned(),
        }),
        _ => Err(format!("expected `Kind file:line:col`, found `{text}`")),
    }
}

fn set_config(c: &mut Config, text: &str) -> Result<(), String> {
    let mut w = text.split_whitespace();
    let (Some(k), Some(v)) = (w.next(), w.next()) else {
        return Err(format!("bad config line `{text}`"));
    };
    let n: usize = v.parse().map_err(|_| format!("bad number `{v}`"))?;
    match k {
        "max_rules_per_tenant" => c.max_rules_per_tenant = n,
        "max_tenants" => c.max_tenants = n,
        "max_total_rules" => c.max_total_rules = n,
        "shadow_window" => c.shadow_window = n,
        "allow_ports_without_proto" => c.allow_ports_without_proto = n != 0,
        _ => return Err(format!("unknown config key `{k}`")),
    }
    Ok(())
}

/// Parses a case table. Errors are `line N: message`.
pub fn load(text: &str) -> Result<Vec<Case>, String> {
    let mut cases: Vec<Case> = Vec::new();
    let mut section: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let ln = i + 1;
        let fail = |m: String| format!("line {ln}: {m}");
        if let Some(name) = raw.strip_prefix("===") {
            cases.push(Case {
                name: name.trim().to_owned(),
                line: ln,
                ..Case::default()
            });
            section = None;
            continue;
        }
        let Some(case) = cases.last_mut() else {
            if raw.trim().is_empty() || raw.starts_with('#') {
                continue;
            }
            return Err(fail("text before the first `=== case`".into()));
        };
        if let Some(sec) = raw.strip_prefix("---") {
            let sec = sec.trim().to_owned();
            match sec.as_str() {
                "packets" | "warnings" | "config" => {}
                "errors" => case.errors = Some(Vec::new()),
                f if f.ends_with(".fg") => case.files.push((f.to_owned(), String::new())),
                _ => return Err(fail(format!("unknown section `{sec}`"))),
            }
            section = Some(sec);
            continue;
        }
        let body = raw.trim();
        let skip = body.is_empty() || body.starts_with('#');
        match section.as_deref() {
            Some(f) if f.ends_with(".fg") => {
                if let Some((_, t)) = case.files.last_mut() {
                    t.push_str(raw);
                    t.push('\n');
                }
            }
            _ if skip => {}
            Some("packets") => case
                .packets
                .push(parse_packet_line(ln, body).map_err(fail)?),
            Some("errors") => {
                if let Some(e) = case.errors.as_mut() {
                    e.push(parse_diag_line(body).map_err(fail)?);
                }
            }
            Some("warnings") => case.warnings.push(parse_diag_line(body).map_err(fail)?),
            Some("config") => set_config(&mut case.config, body).map_err(fail)?,
            _ => return Err(fail("text outside a section".into())),
        }
    }
    Ok(cases)
}

fn diags(d: &[Diag]) -> Vec<ExpectedDiag> {
    let mut v: Vec<ExpectedDiag> = d
        .iter()
        .map(|d| ExpectedDiag {
            kind: d.kind.to_string(),
            at: d.location.to_string(),
        })
        .collect();
    v.sort();
    v
}

/// Compares a decision with a packet line; `Err` describes the difference.
pub fn check_decision(p: &PacketCase, d: &Decision) -> Result<(), String> {
    let scope_of = |r: &RuleRef| r.scope.as_str().to_owned();
    let got_by = match &d.rule {
        _ if d.neighbor_discovery => DecidedBy::NeighborDiscovery,
        Some(r) => DecidedBy::Rule {
            scope: scope_of(r),
            position: r.position,
        },
        None => DecidedBy::Default {
            scope: d
                .tenant_name
                .clone()
                .unwrap_or_else(|| "gateway".to_owned()),
        },
    };
    let got_counted: Vec<(String, u32)> = d
        .counted
        .iter()
        .map(|r| (scope_of(r), r.position))
        .collect();
    if d.verdict != p.verdict || got_by != p.decided_by || got_counted != p.counted {
        return Err(format!(
            "line {}: `{}`: expected {} {:?} counted {:?}, got {} {:?} counted {:?} ({})",
            p.line,
            p.packet,
            p.verdict,
            p.decided_by,
            p.counted,
            d.verdict,
            got_by,
            got_counted,
            d.reason
        ));
    }
    Ok(())
}

/// The end of an engine's run over the case table: more than `min` packets
/// checked, and no `failures` (one line each).
///
/// # Panics
/// Otherwise, listing the failures.
pub fn assert_agreed(checked: usize, min: usize, failures: &[String]) {
    assert!(checked > min, "only {checked} packets checked");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The cases of `cases` that expect no errors, each with its ruleset parsed
/// and validated (for engines that classify the case's packets).
///
/// # Panics
/// If such a case's ruleset does not parse or validate: the table is wrong.
pub fn valid(cases: &[Case]) -> impl Iterator<Item = (&Case, ValidRuleset)> {
    cases.iter().filter(|c| c.errors.is_none()).map(|case| {
        let rs = Ruleset::parse_files(&case.files)
            .and_then(|rs| validate(rs, &case.config))
            .unwrap_or_else(|e| panic!("case `{}`: {}", case.name, e.render()));
        (case, rs)
    })
}

/// Checks another engine's decision for packet line `p` of a case whose
/// ruleset is `rs`: against the line's expectation ([`check_decision`]) and
/// against the reference classifier. `Err` says what differs.
pub fn check_engine(rs: &ValidRuleset, p: &PacketCase, d: &Decision) -> Result<(), String> {
    let mut problems = Vec::new();
    if let Err(e) = check_decision(p, d) {
        problems.push(e);
    }
    let r = classify(rs, &p.packet);
    if !d.same_outcome(&r) {
        problems.push(format!("engine {d:?} != reference {r:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Runs one case against the reference classifier; returns the failures (empty = pass).
/// Other engines follow the same steps with their own `classify`.
pub fn run_reference(case: &Case) -> Vec<String> {
    let mut out = Vec::new();
    let res = Ruleset::parse_files(&case.files).and_then(|rs| validate(rs, &case.config));
    let (errs, warns) = match &res {
        Ok(v) => (Vec::new(), diags(v.warnings())),
        Err(Errors { errors, warnings }) => (diags(errors), diags(warnings)),
    };
    let mut want_errs = case.errors.clone().unwrap_or_default();
    want_errs.sort();
    let mut want_warns = case.warnings.clone();
    want_warns.sort();
    let mut msg = String::new();
    if errs != want_errs {
        let _ = write!(msg, "errors: expected {want_errs:?}, got {errs:?}; ");
    }
    if warns != want_warns && (res.is_ok() || !case.warnings.is_empty()) {
        let _ = write!(msg, "warnings: expected {want_warns:?}, got {warns:?}; ");
    }
    if !msg.is_empty() {
        if let Err(e) = &res {
            msg.push_str(&e.render());
        }
        out.push(format!("case `{}` (line {}): {msg}", case.name, case.line));
    }
    if let Ok(v) = &res {
        for p in &case.packets {
            if let Err(e) = check_decision(p, &classify(v, &p.packet)) {
                out.push(format!("case `{}`: {e}", case.name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
# a comment before the first case
=== one tenant
--- gateway.fg
default pass
--- acme.fg
tenant acme
prefix 203.0.113.0/24
default drop
proto udp count
proto tcp dport 443 pass
--- config
max_rules_per_tenant 10
--- packets
# a comment inside a section
tcp 192.0.2.1:4000 -> 203.0.113.9:443 => pass acme#2
tcp 192.0.2.1:4000 -> 203.0.113.9:80 => drop acme default
udp 192.0.2.1:53 -> 203.0.113.9:53 => drop acme default counted acme#1
udp 192.0.2.1:53 -> 198.51.100.1:53 => pass gateway default

=== out of scope
--- gateway.fg
default pass
--- acme.fg
tenant acme
prefix 203.0.113.0/24
default drop
daddr 198.51.100.1 pass
--- errors
OutOfScope acme.fg:4:1
";

    #[test]
    fn load_reads_files_config_packets_and_expected_errors() {
        let cases = load(TABLE).expect("table");
        assert_eq!(cases.len(), 2);
        let c = &cases[0];
        assert_eq!((c.name.as_str(), c.line), ("one tenant", 2));
        let names: Vec<&str> = c.files.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["gateway.fg", "acme.fg"]);
        assert!(c.files[1].1.ends_with("proto tcp dport 443 pass\n"));
        assert_eq!(c.config.max_rules_per_tenant, 10);
        assert_eq!(c.packets.len(), 4);
        assert_eq!(c.packets[0].line, 15);
        assert_eq!(c.packets[0].verdict, Verdict::Pass);
        assert_eq!(
            c.packets[0].decided_by,
            DecidedBy::Rule {
                scope: "acme".into(),
                position: 2
            }
        );
        assert_eq!(
            c.packets[2].decided_by,
            DecidedBy::Default {
                scope: "acme".into()
            }
        );
        assert_eq!(c.packets[2].counted, [("acme".to_owned(), 1)]);
        assert_eq!(c.errors, None);
        assert_eq!(
            cases[1].errors,
            Some(vec![ExpectedDiag {
                kind: "OutOfScope".into(),
                at: "acme.fg:4:1".into()
            }])
        );
    }

    #[test]
    fn load_names_the_line_of_a_malformed_table() {
        for (text, want) in [
            ("default drop\n", "line 1: text before the first `=== case`"),
            (
                "=== c\n--- nonsense\n",
                "line 2: unknown section `nonsense`",
            ),
            (
                "=== c\n--- packets\ntcp 1.2.3.4:1 -> 5.6.7.8:2\n",
                "line 3: ",
            ),
            (
                "=== c\n--- packets\ntcp 1.2.3.4:1 -> 5.6.7.8:2 => maybe gateway default\n",
                "line 3: expected `pass` or `drop`",
            ),
            (
                "=== c\n--- packets\ntcp 1.2.3.4:1 -> 5.6.7.8:2 => pass gateway\n",
                "line 3: expected `SCOPE#N` or `SCOPE default`",
            ),
            (
                "=== c\n--- config\nmax_cheese 3\n",
                "line 3: unknown config key",
            ),
            ("=== c\nstray\n", "line 2: text outside a section"),
        ] {
            let err = load(text).expect_err(text);
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_reference_passes_a_right_table_and_names_what_a_wrong_one_gets_wrong() {
        let cases = load(TABLE).expect("table");
        for case in &cases {
            assert_eq!(run_reference(case), Vec::<String>::new(), "{}", case.name);
        }
        let wrong = TABLE
            .replace("=> pass acme#2", "=> pass acme#1")
            .replace("OutOfScope acme.fg:4:1", "OutOfScope acme.fg:4:2");
        let cases = load(&wrong).expect("table");
        let first = run_reference(&cases[0]);
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(first[0].contains("line 15"), "{}", first[0]);
        let second = run_reference(&cases[1]);
        assert!(second[0].starts_with("case `out of scope` (line 20): errors"));
    }

    #[test]
    fn check_engine_compares_with_the_line_and_with_the_reference() {
        let cases = load(TABLE).expect("table");
        let (case, rs) = valid(&cases).next().expect("a valid case");
        assert_eq!(case.name, "one tenant");
        assert_eq!(
            valid(&cases).count(),
            1,
            "cases expecting errors are skipped"
        );
        let p = &case.packets[0];
        let right = classify(&rs, &p.packet);
        assert_eq!(check_engine(&rs, p, &right), Ok(()));
        // Another packet's decision: wrong for this line and for the reference.
        let other = classify(&rs, &case.packets[1].packet);
        let err = check_engine(&rs, p, &other).expect_err("differs");
        assert!(
            err.contains("line 15") && err.contains("!= reference"),
            "{err}"
        );
    }

    #[test]
    #[should_panic(expected = "1 failures")]
    fn assert_agreed_fails_on_any_failure() {
        assert_agreed(100, 60, &["one".into()]);
    }

    #[test]
    #[should_panic(expected = "only 10 packets checked")]
    fn assert_agreed_fails_when_too_little_was_checked() {
        assert_agreed(10, 60, &[]);
    }
}
