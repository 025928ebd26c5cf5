//! The reference classifier: **the definition of fluxgate's semantics.**
//!
//! Linear and obviously correct; every faster classifier (userspace tables, the XDP
//! program) is tested against it. The rules, in order:
//!
//! 0. An IPv6 neighbour discovery message (ICMPv6 type 133–137, code 0, hop limit
//!    255: [`PacketHeader::is_neighbor_discovery`]) passes, before any rule and any
//!    tenant, as ARP does: neighbour entries must not fail for a tenant's
//!    `default drop`. Any other ICMPv6 packet is classified like the rest.
//! 1. The gateway's rules are tried in file order. A matching `count` rule is
//!    recorded and evaluation goes on; the first matching `pass` / `drop` decides.
//! 2. Otherwise the packet's tenant is the one owning the longest prefix containing its
//!    destination. If there is none, the gateway's `default` decides.
//! 3. The tenant's rules are tried in file order, the same way.
//! 4. Otherwise the tenant's `default` decides.
//!
//! ### Rate limits
//!
//! A rule with `limit rate over R` ([`crate::limit`]) applies only to packets
//! over its rate: a matching packet takes from the rule's token bucket (one
//! bucket per source prefix with `per saddr/N`); if the bucket had the tokens
//! the packet goes on to the next rule as if the rule were not there (it is
//! not counted), else the rule decides with its verdict and the packet is
//! *limited* ([`Decision::limited`]). A tenant's ceiling
//! ([`ValidRuleset::ceiling`]) is taken after the gateway's rules leave the
//! packet undecided and before the tenant's rules: its packet rate first, then
//! its byte rate; a packet over either is dropped, limited, with no rule. The
//! buckets live in a [`Meter`] and time is the packet's [`Arrival`]:
//! [`classify_at`] is deterministic for a timed trace. [`classify`] is
//! [`classify_at`] with a fresh meter (every bucket full), as for the first
//! packet after a swap.
//!
//! A rule matches when every field it constrains matches: an address in one of its
//! prefixes, a port in one of its ranges, `(flags & mask) == value`, equal protocol,
//! ICMP type/code, interface and VLAN, and `fragment` only for a non-first fragment.
//! A field the packet lacks (`None`: the ports, flags and ICMP type/code of a
//! non-first fragment) never matches a constraint on it. An empty `daddr` in a tenant rule means the tenant's prefixes,
//! which the packet's destination is in by step 2.

use crate::meter::{Arrival, BucketKey, Meter, source_key};
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
    /// IPv6 neighbour discovery ([`PacketHeader::is_neighbor_discovery`]):
    /// passed before any rule and any tenant, as ARP is.
    pub neighbor_discovery: bool,
    /// Over a limit: the deciding rule's `limit` (with [`Decision::rule`]),
    /// or the tenant's ceiling (no rule; the verdict is drop).
    pub limited: bool,
}

impl Decision {
    /// Same verdict, tenant, deciding rule and counted rules — the outcome;
    /// the tenant's name and the reason text are explanations, not compared.
    /// How every engine is checked against the reference.
    pub fn same_outcome(&self, other: &Decision) -> bool {
        self.verdict == other.verdict
            && self.tenant == other.tenant
            && self.rule == other.rule
            && self.counted == other.counted
            && self.neighbor_discovery == other.neighbor_discovery
            && self.limited == other.limited
    }
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
        && (!m.fragment || p.is_later_fragment())
}

/// Runs one scope; `Some((verdict, rule))` if a rule decided. A rule with a
/// limit decides only when `meter` finds the packet over it.
fn run<'r>(
    rules: &'r [Rule],
    scope: &Scope,
    p: &PacketHeader,
    counted: &mut Vec<RuleRef>,
    meter: &mut Meter,
    at: Arrival,
) -> Option<(Verdict, RuleRef, &'r Rule)> {
    for r in rules {
        if !matches(&r.matches, p) {
            continue;
        }
        if let Some(l) = &r.limit {
            let key = BucketKey::Rule {
                scope: scope.clone(),
                rule: r.id,
                source: l.per_source.map(|per| source_key(per, p.src)),
            };
            // validation refused limits without a bucket
            if l.bucket().is_none_or(|b| meter.take(key, &b, at)) {
                continue;
            }
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
    classify_at(rs, &mut Meter::new(), p, Arrival::default())
}

/// Classifies `p`, arriving at `at`, with the rate-limit state `meter`
/// (updated): see the module docs. A trace run through one meter in time
/// order gets the decisions the kernel makes for the same packets at the
/// same times.
///
/// ```
/// use fluxgate_ruleset::{Arrival, Config, Meter, Ruleset, Verdict, reference, validate};
/// let rs = validate(Ruleset::parse_files(&[
///     ("gateway.fg", "default drop\n"),
///     ("acme.fg", "tenant acme\nprefix 203.0.113.0/24\ndefault pass\n\
///                  proto udp dport 53 limit rate over 2/second burst 2 packets drop\n"),
/// ])?, &Config::default())?;
/// let p = "udp 192.0.2.1:4000 -> 203.0.113.9:53".parse()?;
/// let mut meter = Meter::new();
/// let at = |ms: u64| Arrival { at_ns: ms * 1_000_000, len: 64 };
/// let verdicts: Vec<_> = [0, 1, 2, 500, 501]
///     .map(|ms| reference::classify_at(&rs, &mut meter, &p, at(ms)).verdict)
///     .into();
/// assert_eq!(verdicts, [Verdict::Pass, Verdict::Pass, Verdict::Drop, Verdict::Pass, Verdict::Drop]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn classify_at(
    rs: &ValidRuleset,
    meter: &mut Meter,
    p: &PacketHeader,
    at: Arrival,
) -> Decision {
    if p.is_neighbor_discovery() {
        return Decision {
            verdict: Verdict::Pass,
            tenant: None,
            tenant_name: None,
            rule: None,
            counted: Vec::new(),
            reason: format!(
                "IPv6 neighbour discovery (ICMPv6 type {}, hop limit 255): passed before any rule",
                p.icmp_type.unwrap_or(0)
            ),
            neighbor_discovery: true,
            limited: false,
        };
    }
    let mut counted = Vec::new();
    let owner = rs.tenant_for(p.dst);
    let gw = run(
        &rs.gateway().rules,
        &Scope::Gateway,
        p,
        &mut counted,
        meter,
        at,
    );
    if let Some((verdict, rule, r)) = gw {
        let limited = r.limit.is_some();
        let reason = format!(
            "gateway rule #{} matched{}: {r}",
            rule.position,
            over(limited)
        );
        return Decision {
            verdict,
            tenant: owner,
            tenant_name: owner
                .and_then(|i| rs.tenants().get(i))
                .map(|t| t.name.clone()),
            rule: Some(rule),
            counted,
            reason,
            neighbor_discovery: false,
            limited,
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
            neighbor_discovery: false,
            limited: false,
        };
    };
    let ceiling = rs.ceiling(t);
    for l in ceiling.limits() {
        let key = BucketKey::Ceiling {
            tenant: t.name.clone(),
            bytes: l.rate.bytes,
        };
        if l.bucket().is_some_and(|b| !meter.take(key, &b, at)) {
            return Decision {
                verdict: Verdict::Drop,
                tenant: Some(ti),
                tenant_name: Some(t.name.clone()),
                rule: None,
                counted,
                reason: format!("over the ceiling of tenant `{}` ({}): drop", t.name, l.rate),
                neighbor_discovery: false,
                limited: true,
            };
        }
    }
    let scope = Scope::Tenant(t.name.clone());
    let mut limited = false;
    let (verdict, rule, reason) = match run(&t.rules, &scope, p, &mut counted, meter, at) {
        Some((v, rule, r)) => {
            limited = r.limit.is_some();
            let reason = format!(
                "tenant `{}` rule #{} matched{}: {r}",
                t.name,
                rule.position,
                over(limited)
            );
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
        neighbor_discovery: false,
        limited,
    }
}

fn over(limited: bool) -> &'static str {
    if limited { " over its limit" } else { "" }
}

/// One field of a rule checked against a packet, for [`explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCheck {
    /// `saddr`, `dport`, `flags`, …
    pub field: &'static str,
    /// Whether the packet satisfies it.
    pub ok: bool,
    /// `10.0.0.1 in 10.0.0.0/8`, `port 22 not in { 80, 443 }`, …
    pub detail: String,
}

/// One rule considered for a packet, for [`explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Considered {
    /// Gateway or tenant.
    pub scope: Scope,
    /// 1-based position.
    pub position: u32,
    /// The rule as written (canonical form).
    pub rule: String,
    /// Whether it matched (every field ok).
    pub matched: bool,
    /// Each constrained field, checked.
    pub fields: Vec<FieldCheck>,
}

/// Why a packet gets its verdict: every rule considered, in evaluation order,
/// with each field checked, and the [`Decision`] ([`classify`]'s, exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The rules considered: the gateway's, then (unless a gateway rule
    /// decided) the owning tenant's, up to and including the deciding one.
    pub considered: Vec<Considered>,
    /// The decision.
    pub decision: Decision,
}

/// Explains [`classify`]: the same walk, with every field of every rule
/// considered checked and described.
pub fn explain(rs: &ValidRuleset, p: &PacketHeader) -> Explanation {
    let decision = classify(rs, p);
    let mut considered = Vec::new();
    if decision.neighbor_discovery {
        // Passed before any rule: none was considered.
        return Explanation {
            considered,
            decision,
        };
    }
    let mut walk = |scope: Scope, rules: &[Rule]| -> bool {
        for r in rules {
            let mut fields = check_fields(&r.matches, p);
            let matched = matches(&r.matches, p);
            debug_assert_eq!(matched, fields.iter().all(|f| f.ok));
            if let Some(l) = &r.limit {
                // Not a match condition: whether a packet is over the limit
                // depends on the traffic before it (`classify_at`).
                let limited =
                    decision.limited && decision.rule.as_ref().is_some_and(|d| d.id == r.id);
                fields.push(FieldCheck {
                    field: "limit",
                    ok: true,
                    detail: if limited {
                        format!("over its {l}: the rule decides, counted as limited")
                    } else {
                        format!(
                            "{l}: within it (a full bucket, as a first packet) the rule does not \
                             decide and the next one is tried; packets over it get `{}` and \
                             are counted as limited",
                            r.action
                        )
                    },
                });
            }
            considered.push(Considered {
                scope: scope.clone(),
                position: r.position,
                rule: r.to_string(),
                matched,
                fields,
            });
            // A limited rule decided only if the decision names it.
            let decides = r.limit.is_none()
                || decision
                    .rule
                    .as_ref()
                    .is_some_and(|d| d.id == r.id && d.scope == scope);
            if matched && r.action.verdict().is_some() && decides {
                return true;
            }
        }
        false
    };
    let decided = walk(Scope::Gateway, &rs.gateway().rules);
    // Over the tenant's ceiling: dropped before its rules.
    let ceiling = decision.limited && decision.rule.is_none();
    if !decided
        && !ceiling
        && let Some(t) = decision.tenant.and_then(|i| rs.tenants().get(i))
    {
        walk(Scope::Tenant(t.name.clone()), &t.rules);
    }
    Explanation {
        considered,
        decision,
    }
}

/// Every constrained field of `m` checked against `p` (what [`matches`] tests).
fn check_fields(m: &Match, p: &PacketHeader) -> Vec<FieldCheck> {
    let mut out = Vec::new();
    let list = |items: Vec<String>| {
        if items.len() == 1 {
            items[0].clone()
        } else {
            format!("{{ {} }}", items.join(", "))
        }
    };
    let mut addr = |field: &'static str, items: &[PrefixItem], a: std::net::IpAddr| {
        if !items.is_empty() {
            let ok = prefixes(items, a);
            let nets = list(Match::nets(items).map(ToString::to_string).collect());
            let verb = if ok { "in" } else { "not in" };
            out.push(FieldCheck {
                field,
                ok,
                detail: format!("{a} {verb} {nets}"),
            });
        }
    };
    addr("saddr", &m.src, p.src);
    addr("daddr", &m.dst, p.dst);
    if let Some(pr) = m.proto {
        let ok = pr.number() == p.proto;
        out.push(FieldCheck {
            field: "proto",
            ok,
            detail: format!(
                "protocol {} {} {pr}",
                p.proto,
                if ok { "is" } else { "is not" }
            ),
        });
    }
    for (field, items, port) in [("sport", &m.sport, p.sport), ("dport", &m.dport, p.dport)] {
        if !items.is_empty() {
            let ok = ports(items, port);
            let ranges = list(
                Match::ranges(items)
                    .map(|r| {
                        if r.lo == r.hi {
                            r.lo.to_string()
                        } else {
                            format!("{}-{}", r.lo, r.hi)
                        }
                    })
                    .collect(),
            );
            let detail = match port {
                Some(pt) => format!("port {pt} {} {ranges}", if ok { "in" } else { "not in" }),
                None => format!(
                    "no port in the packet (not TCP/UDP, or a later fragment); rule wants {ranges}"
                ),
            };
            out.push(FieldCheck { field, ok, detail });
        }
    }
    if let Some(f) = m.tcp_flags {
        let ok = p.tcp_flags.is_some_and(|b| b & f.mask == f.value);
        let detail = match p.tcp_flags {
            Some(b) => format!(
                "flags {b:#04x} & mask {:#04x} = {:#04x}, rule wants {:#04x}",
                f.mask,
                b & f.mask,
                f.value
            ),
            None => "no TCP flags in the packet".to_owned(),
        };
        out.push(FieldCheck {
            field: "flags",
            ok,
            detail,
        });
    }
    if m.fragment {
        let later = p.is_later_fragment();
        out.push(FieldCheck {
            field: "fragment",
            ok: later,
            detail: if later {
                "a non-first fragment".to_owned()
            } else {
                "not a non-first fragment".to_owned()
            },
        });
    }
    let mut exact = |field: &'static str, want: Option<String>, got: Option<String>| {
        if let Some(w) = want {
            let ok = got.as_ref() == Some(&w);
            out.push(FieldCheck {
                field,
                ok,
                detail: format!(
                    "packet has {}, rule wants {w}",
                    got.unwrap_or_else(|| "none".into())
                ),
            });
        }
    };
    exact(
        "icmp-type",
        m.icmp_type.map(|v| v.to_string()),
        p.icmp_type.map(|v| v.to_string()),
    );
    exact(
        "icmp-code",
        m.icmp_code.map(|v| v.to_string()),
        p.icmp_code.map(|v| v.to_string()),
    );
    exact("iif", m.iif.clone(), p.iif.clone());
    exact(
        "vlan",
        m.vlan.map(|v| v.to_string()),
        p.vlan.map(|v| v.to_string()),
    );
    out
}
