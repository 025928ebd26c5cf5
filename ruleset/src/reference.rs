//! The reference classifier: **the definition of fluxgate's semantics.**
//!
//! Linear and obviously correct; every faster classifier (userspace tables, the XDP
//! program) is tested against it. The rules, in order:
//!
//! 1. The gateway's rules are tried in file order. A matching `count` rule is
//!    recorded and evaluation goes on; the first matching `pass` / `drop` decides.
//! 2. Otherwise the packet's tenant is the one owning the longest prefix containing its
//!    destination. If there is none, the gateway's `default` decides.
//! 3. The tenant's rules are tried in file order, the same way.
//! 4. Otherwise the tenant's `default` decides.
//!
//! A rule matches when every field it constrains matches: an address in one of its
//! prefixes, a port in one of its ranges, `(flags & mask) == value`, equal protocol,
//! ICMP type/code, interface and VLAN. A field the packet lacks (`None`) never matches
//! a constraint on it. An empty `daddr` in a tenant rule means the tenant's prefixes,
//! which the packet's destination is in by step 2.

use crate::model::{Match, PortItem, PrefixItem, Rule, Scope, Verdict};
use crate::packet::PacketHeader;
use crate::validate::ValidRuleset;

/// A rule as the decision names it: stable id plus where it is, for display.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// Stable id.
    pub id: crate::RuleId,
    /// Gateway or tenant.
    pub scope: Scope,
    /// 1-based position in its scope.
    pub position: u32,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.scope, self.position)
    }
}

/// The outcome of classifying one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Pass or drop.
    pub verdict: Verdict,
    /// Index into [`ValidRuleset::tenants`] of the tenant owning the destination
    /// (`None` if none does). Set even when a gateway rule decided, for `explain`.
    pub tenant: Option<usize>,
    /// Name of that tenant.
    pub tenant_name: Option<String>,
    /// The deciding rule; `None` when a default action decided.
    pub rule: Option<RuleRef>,
    /// `count` rules that matched before the decision, in evaluation order.
    pub counted: Vec<RuleRef>,
    /// Why, in words (for `explain`).
    pub reason: String,
}

fn prefixes(items: &[PrefixItem], a: std::net::IpAddr) -> bool {
    items.is_empty() || Match::nets(items).any(|n| n.contains(&a))
}

fn ports(items: &[PortItem], p: Option<u16>) -> bool {
    items.is_empty() || p.is_some_and(|p| Match::ranges(items).any(|r| r.contains(p)))
}

fn field<T: PartialEq>(rule: Option<T>, pkt: Option<T>) -> bool {
    rule.is_none() || (pkt.is_some() && rule == pkt)
}

/// True if `m` matches `p` (set references must be resolved, as in a [`ValidRuleset`]).
pub fn matches(m: &Match, p: &PacketHeader) -> bool {
    prefixes(&m.src, p.src)
        && prefixes(&m.dst, p.dst)
        && m.proto.is_none_or(|pr| pr.number() == p.proto)
        && ports(&m.sport, p.sport)
        && ports(&m.dport, p.dport)
        && m.tcp_flags
            .is_none_or(|f| p.tcp_flags.is_some_and(|b| b & f.mask == f.value))
        && field(m.icmp_type, p.icmp_type)
        && field(m.icmp_code, p.icmp_code)
        && field(m.iif.as_deref(), p.iif.as_deref())
        && field(m.vlan, p.vlan)
}

/// Runs one scope; `Some((verdict, rule))` if a rule decided.
fn run<'r>(
    rules: &'r [Rule],
    scope: &Scope,
    p: &PacketHeader,
    counted: &mut Vec<RuleRef>,
) -> Option<(Verdict, RuleRef, &'r Rule)> {
    for r in rules {
        if !matches(&r.matches, p) {
            continue;
        }
        let rr = RuleRef {
            id: r.id,
            scope: scope.clone(),
            position: r.position,
        };
        match r.action.verdict() {
            Some(v) => return Some((v, rr, r)),
            None => counted.push(rr),
        }
    }
    None
}

/// Classifies `p` against `rs` (see the module docs for the exact semantics).
///
/// ```
/// use fluxgate_ruleset::{Config, Ruleset, Verdict, reference, validate};
/// let rs = Ruleset::parse_files(&[
///     ("gateway.fg", "default drop\n"),
///     ("acme.fg", "tenant acme\nprefix 203.0.113.0/24\ndefault drop\nproto tcp dport 443 pass\n"),
/// ])?;
/// let rs = validate(rs, &Config::default())?;
/// let d = reference::classify(&rs, &"tcp 192.0.2.1:4000 -> 203.0.113.9:443 flags S".parse()?);
/// assert_eq!(d.verdict, Verdict::Pass);
/// assert_eq!(d.rule.map(|r| r.to_string()).as_deref(), Some("acme#1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn classify(rs: &ValidRuleset, p: &PacketHeader) -> Decision {
    let mut counted = Vec::new();
    let owner = rs.tenant_for(p.dst);
    if let Some((verdict, rule, r)) = run(&rs.gateway().rules, &Scope::Gateway, p, &mut counted) {
        let reason = format!("gateway rule #{} matched: {r}", rule.position);
        return Decision {
            verdict,
            tenant: owner,
            tenant_name: owner
                .and_then(|i| rs.tenants().get(i))
                .map(|t| t.name.clone()),
            rule: Some(rule),
            counted,
            reason,
        };
    }
    let Some((ti, t)) = owner.and_then(|i| rs.tenants().get(i).map(|t| (i, t))) else {
        let verdict = rs.gateway().default_action;
        let reason = format!(
            "no gateway rule decided and no tenant owns {}: gateway default {verdict}",
            p.dst
        );
        return Decision {
            verdict,
            tenant: None,
            tenant_name: None,
            rule: None,
            counted,
            reason,
        };
    };
    let scope = Scope::Tenant(t.name.clone());
    let (verdict, rule, reason) = match run(&t.rules, &scope, p, &mut counted) {
        Some((v, rule, r)) => {
            let reason = format!("tenant `{}` rule #{} matched: {r}", t.name, rule.position);
            (v, Some(rule), reason)
        }
        None => {
            let v = t.default_action;
            (
                v,
                None,
                format!("no rule of tenant `{}` matched: tenant default {v}", t.name),
            )
        }
    };
    Decision {
        verdict,
        tenant: Some(ti),
        tenant_name: Some(t.name.clone()),
        rule,
        counted,
        reason,
    }
}
