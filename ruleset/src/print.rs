//! Canonical text: what the parser reads back to an equal model.
//!
//! Canonical form: one statement per line; rule clauses in the fixed order
//! `iif vlan saddr daddr proto sport dport flags icmp-type icmp-code ACTION`; a list of
//! one element printed bare, longer lists as `{ a, b }` in the written order; flags as
//! `VALUE/MASK` letters in `FSRPAUEC` order; protocols 1, 6, 17, 58 by name.

use std::fmt::{self, Write as _};

use crate::model::{
    Action, Gateway, Match, NamedSet, PortItem, PortRange, PrefixItem, Proto, Rule, Ruleset,
    SetElems, TcpFlags, Tenant, Verdict,
};
use crate::parser::FLAG_LETTERS;

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Count => "count",
        })
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Proto::from_number(self.number()) {
            Proto::Tcp => f.write_str("tcp"),
            Proto::Udp => f.write_str("udp"),
            Proto::Icmp => f.write_str("icmp"),
            Proto::Icmpv6 => f.write_str("icmpv6"),
            Proto::Other(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Writes flag letters for the bits of `bits`.
pub(crate) fn flag_letters(f: &mut impl fmt::Write, bits: u8) -> fmt::Result {
    for (i, c) in FLAG_LETTERS.iter().enumerate() {
        if bits & (1 << i) != 0 {
            f.write_char(char::from(*c))?;
        }
    }
    Ok(())
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        flag_letters(f, self.value)?;
        f.write_char('/')?;
        flag_letters(f, self.mask)
    }
}

impl fmt::Display for PrefixItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrefixItem::Net(n) => write!(f, "{n}"),
            PrefixItem::Set(s) => write!(f, "@{s}"),
        }
    }
}

impl fmt::Display for PortItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortItem::Range(r) => write!(f, "{r}"),
            PortItem::Set(s) => write!(f, "@{s}"),
        }
    }
}

fn list<T: fmt::Display>(f: &mut impl fmt::Write, key: &str, items: &[T]) -> fmt::Result {
    match items {
        [] => Ok(()),
        [one] => write!(f, "{key} {one} "),
        many => {
            write!(f, "{key} {{ ")?;
            for (i, it) in many.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{it}")?;
            }
            f.write_str(" } ")
        }
    }
}

/// Writes the match clauses, each followed by a space.
fn write_match(f: &mut impl fmt::Write, m: &Match) -> fmt::Result {
    if let Some(i) = &m.iif {
        write!(f, "iif \"{i}\" ")?;
    }
    if let Some(v) = m.vlan {
        write!(f, "vlan {v} ")?;
    }
    list(f, "saddr", &m.src)?;
    list(f, "daddr", &m.dst)?;
    if let Some(p) = m.proto {
        write!(f, "proto {p} ")?;
    }
    if m.fragment {
        f.write_str("fragment ")?;
    }
    list(f, "sport", &m.sport)?;
    list(f, "dport", &m.dport)?;
    if let Some(fl) = m.tcp_flags {
        write!(f, "flags {fl} ")?;
    }
    if let Some(t) = m.icmp_type {
        write!(f, "icmp-type {t} ")?;
    }
    if let Some(c) = m.icmp_code {
        write!(f, "icmp-code {c} ")?;
    }
    Ok(())
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        write_match(&mut s, self)?;
        f.write_str(s.trim_end())
    }
}

/// The canonical one-line text of a rule (what [`crate::RuleId`] hashes).
pub fn rule_text(m: &Match, action: Action) -> String {
    let mut s = String::with_capacity(64);
    write_rule(&mut s, m, action);
    s
}

/// Appends [`rule_text`] to `s`.
pub(crate) fn write_rule(s: &mut String, m: &Match, action: Action) {
    // writing to a String cannot fail
    let _ = write_match(s, m);
    let _ = write!(s, "{action}");
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.limit {
            None => f.write_str(&rule_text(&self.matches, self.action)),
            Some(l) => {
                let mut s = String::with_capacity(96);
                let _ = write_match(&mut s, &self.matches);
                write!(f, "{s}{l} {}", self.action)
            }
        }
    }
}

impl fmt::Display for NamedSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "set {} {{ ", self.name)?;
        let items: Vec<String> = match &self.elems {
            SetElems::Prefixes(p) => p.iter().map(ToString::to_string).collect(),
            SetElems::Ports(p) => p.iter().map(ToString::to_string).collect(),
        };
        write!(f, "{} }}", items.join(", "))
    }
}

/// Prints `gateway.fg`.
impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.allocations {
            let nets: Vec<String> = a.prefixes.iter().map(ToString::to_string).collect();
            writeln!(f, "allocate {} {{ {} }}", a.tenant, nets.join(", "))?;
        }
        for q in &self.quotas {
            f.write_str("quota")?;
            if let Some(t) = &q.tenant {
                write!(f, " {t}")?;
            }
            for (key, v) in [
                ("rules", q.rules),
                ("table-bytes", q.table_bytes),
                ("counters", q.counters),
                ("limits", q.limits),
            ] {
                if let Some(v) = v {
                    write!(f, " {key} {v}")?;
                }
            }
            if !q.ceiling.is_empty() {
                write!(f, " {}", q.ceiling)?;
            }
            writeln!(f)?;
        }
        if let Some((n, _)) = self.meter_size {
            writeln!(f, "meter-size {n}")?;
        }
        body(
            f,
            self.default_action,
            &self.sets,
            &self.rules,
            &self.guards,
        )
    }
}

/// What gateway and tenant files share: the default, sets, rules, guards.
fn body(
    f: &mut fmt::Formatter<'_>,
    default: crate::Verdict,
    sets: &[crate::NamedSet],
    rules: &[crate::Rule],
    guards: &[crate::Guard],
) -> fmt::Result {
    writeln!(f, "default {default}")?;
    for s in sets {
        writeln!(f, "{s}")?;
    }
    for r in rules {
        writeln!(f, "{r}")?;
    }
    for g in guards {
        writeln!(f, "{g}")?;
    }
    Ok(())
}

/// Prints `guard "PACKET" pass|drop`.
impl fmt::Display for crate::Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guard \"{}\" {}", self.packet, self.verdict)
    }
}

/// Prints `<tenant>.fg`.
impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tenant {}", self.name)?;
        let mut s = String::new();
        list(&mut s, "prefixes", &self.prefixes)?;
        if !s.is_empty() {
            writeln!(f, "{}", s.trim_end())?;
        }
        if !self.ceiling.is_empty() {
            writeln!(f, "{}", self.ceiling)?;
        }
        body(
            f,
            self.default_action,
            &self.sets,
            &self.rules,
            &self.guards,
        )
    }
}

impl Ruleset {
    /// The ruleset as files: `("gateway.fg", text)` then `("<tenant>.fg", text)` for
    /// each tenant. [`Ruleset::parse_files`] reads them back to an equal model.
    pub fn to_files(&self) -> Vec<(String, String)> {
        let mut out = vec![("gateway.fg".to_owned(), self.gateway.to_string())];
        out.extend(
            self.tenants
                .iter()
                .map(|t| (format!("{}.fg", t.name), t.to_string())),
        );
        out
    }
}

/// All files concatenated with `# == file ==` headers (for humans; not re-parsable as one).
impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, text) in self.to_files() {
            writeln!(f, "# == {name} ==")?;
            f.write_str(&text)?;
        }
        Ok(())
    }
}
