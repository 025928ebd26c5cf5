//! The half of preflight that needs no kernel: which packets a change is
//! checked with, and what the reference classifier says of them.
//!
//! A change is checked with its *guards* (packets a tenant or the gateway
//! declares, each with the verdict it must get) and *witnesses* (one packet
//! generated inside every rule, one per tenant default). The control plane
//! runs them through the staged tables in the kernel and compares each
//! kernel answer with [`reference::classify`]; `fluxgate check` runs the
//! guards through the reference alone.
//!
//! ```
//! use fluxgate_ruleset::{Config, Ruleset, preflight, validate};
//!
//! let rs = validate(
//!     Ruleset::parse_files(&[
//!         ("gateway.fg", "default pass\n"),
//!         (
//!             "acme.fg",
//!             "tenant acme\nprefix 203.0.113.0/24\ndefault drop\n\
//!              proto tcp dport 443 pass\n\
//!              guard \"tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S\" pass\n",
//!         ),
//!     ])
//!     .unwrap(),
//!     &Config::default(),
//! )
//! .unwrap();
//! let probes = preflight::probes(&rs);
//! assert_eq!(probes.iter().filter(|p| p.guard.is_some()).count(), 1);
//! assert!(preflight::failing_guards(&rs).is_empty());
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::{
    Decision, Image, Match, PacketHeader, PortItem, Rule, RuleId, Scope, ValidRuleset, Verdict,
    reference,
};

/// Most witness packets one preflight runs (chosen evenly over the rules).
pub const MAX_WITNESSES: usize = 4096;

/// A packet preflight runs: a declared guard (with the verdict it must get)
/// or a witness generated from a rule or a tenant default.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Whose guard or witness it is.
    pub scope: Scope,
    /// The packet.
    pub packet: PacketHeader,
    /// For a guard: the verdict it must get, and where it is written
    /// (`file:line:col`).
    pub guard: Option<(Verdict, String)>,
}

/// The guards of `rs` (the gateway's, then every tenant's), then its
/// witnesses.
pub fn probes(rs: &ValidRuleset) -> Vec<Probe> {
    probes_of(rs, |_| true)
}

/// Every guard of `rs`, then the witnesses of the scopes `changed` accepts:
/// what a change needs checked. A guard is one packet per declared line and
/// cheap in the kernel, so all of them run (a change to one table must not
/// break another tenant's guard); witnesses are generated from rules, so only
/// the rules that changed need theirs (at 10,000 tenants, a one-tenant change
/// runs its tenant's few witnesses instead of 4,096 drawn from everyone).
pub fn probes_of(rs: &ValidRuleset, changed: impl Fn(&Scope) -> bool) -> Vec<Probe> {
    let at = |span: crate::Span| -> String {
        rs.ruleset()
            .sources
            .file(span.file)
            .map_or_else(String::new, |f| f.location(span.start as usize).to_string())
    };
    let mut out: Vec<Probe> = rs
        .gateway()
        .guards
        .iter()
        .map(|g| (Scope::Gateway, g))
        .chain(rs.tenants().iter().flat_map(|t| {
            t.guards
                .iter()
                .map(move |g| (Scope::Tenant(t.name.clone()), g))
        }))
        .map(|(scope, g)| Probe {
            scope,
            packet: g.packet.clone(),
            guard: Some((g.verdict, at(g.span))),
        })
        .collect();
    out.extend(
        witnesses_of(rs, changed)
            .into_iter()
            .map(|(scope, packet)| Probe {
                scope,
                packet,
                guard: None,
            }),
    );
    out
}

/// Every guard whose packet the reference does not give its declared
/// verdict: `guard acme.fg:7:1 must pass: `tcp …` gets drop by acme#2 (`…`)`.
pub fn failing_guards(rs: &ValidRuleset) -> Vec<String> {
    probes(rs)
        .iter()
        .filter_map(|p| {
            let (must, at) = p.guard.as_ref()?;
            let got = reference::classify(rs, &p.packet);
            (got.verdict != *must).then(|| {
                format!(
                    "guard {at} must {must}: `{}` gets {}",
                    p.packet,
                    explain_decision(rs, &got)
                )
            })
        })
        .collect()
}

/// Tenants that declare no guard.
pub fn unguarded(rs: &ValidRuleset) -> Vec<String> {
    rs.tenants()
        .iter()
        .filter(|t| t.guards.is_empty())
        .map(|t| t.name.clone())
        .collect()
}

/// One warning naming the tenants without guards (the first few, and a count).
pub fn unguarded_warning(rs: &ValidRuleset) -> Option<String> {
    const SHOWN: usize = 5;
    let names = unguarded(rs);
    match names.len() {
        0 => None,
        1 => Some(format!(
            "warning: tenant `{}` declares no guard packets; only generated witnesses check it",
            names[0]
        )),
        n => Some(format!(
            "warning: {n} tenants declare no guard packets ({}{}); only generated witnesses check them",
            names[..n.min(SHOWN)].join(", "),
            if n > SHOWN { ", …" } else { "" }
        )),
    }
}

/// The rule or default that made `decision`: `acme#2`, `acme default`,
/// `gateway default`, or `neighbor discovery`.
pub fn decider(decision: &Decision) -> String {
    if decision.neighbor_discovery {
        return "neighbor discovery".to_owned();
    }
    match &decision.rule {
        Some(r) => r.to_string(),
        None => format!(
            "{} default",
            decision.tenant_name.as_deref().unwrap_or("gateway")
        ),
    }
}

/// `drop by acme#2 (`proto tcp dport 22 drop`)` or `drop by the acme default`.
pub fn explain_decision(rs: &ValidRuleset, d: &Decision) -> String {
    match &d.rule {
        Some(r) => {
            let text = rule_at(rs, &r.scope, r.position)
                .map(|rule| format!(" (`{rule}`)"))
                .unwrap_or_default();
            format!("{} by {r}{text}", d.verdict)
        }
        None => format!("{} by the {}", d.verdict, decider(d)),
    }
}

/// The rule at 1-based `position` of `scope`.
pub fn rule_at<'a>(rs: &'a ValidRuleset, scope: &Scope, position: u32) -> Option<&'a Rule> {
    let rules = match scope {
        Scope::Gateway => &rs.gateway().rules,
        Scope::Tenant(t) => &rs.tenant(t)?.rules,
    };
    rules.get(position.checked_sub(1)? as usize)
}

/// What one counter slot of a compiled image counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterText {
    /// The kernel counter index.
    pub slot: u32,
    /// Gateway or tenant.
    pub scope: Scope,
    /// The rule, `None` for the scope's default action.
    pub rule: Option<RuleId>,
    /// 1-based position (0: the default action).
    pub position: u32,
    /// The rule as written (canonical form), or `default pass|drop`.
    pub text: String,
}

/// What each counter slot of `image` (compiled from `rs`) counts, with the
/// rule text.
pub fn describe(rs: &ValidRuleset, image: &Image) -> Vec<CounterText> {
    let default_of = |scope: &Scope| match scope {
        Scope::Gateway => Some(rs.gateway().default_action),
        Scope::Tenant(t) => rs.tenant(t).map(|t| t.default_action),
    };
    image
        .counters
        .iter()
        .map(|c| {
            let text = match c.rule {
                Some(_) if c.is_ceiling() => crate::Ceiling {
                    packets: c.limit.filter(|l| !l.rate.bytes),
                    bytes: c.limit.filter(|l| l.rate.bytes),
                }
                .to_string(),
                Some(_) => rule_at(rs, &c.scope, c.position)
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                None => default_of(&c.scope)
                    .map(|v| format!("default {v}"))
                    .unwrap_or_default(),
            };
            CounterText {
                slot: c.slot,
                scope: c.scope.clone(),
                rule: c.rule,
                position: c.position,
                text,
            }
        })
        .collect()
}

/// Witness packets: for every rule one packet inside it (the low corner of
/// its first prefix / range of each field), and for every tenant one packet
/// to its first prefix on a port no rule is likely to name. At most
/// [`MAX_WITNESSES`], spread evenly.
pub fn witnesses(rs: &ValidRuleset) -> Vec<(Scope, PacketHeader)> {
    witnesses_of(rs, |_| true)
}

/// [`witnesses`] of the scopes `wanted` accepts.
fn witnesses_of(rs: &ValidRuleset, wanted: impl Fn(&Scope) -> bool) -> Vec<(Scope, PacketHeader)> {
    let mut out = Vec::new();
    if wanted(&Scope::Gateway) {
        for r in &rs.gateway().rules {
            out.push((Scope::Gateway, rule_witness(r, &[])));
        }
    }
    let tenants: Vec<&crate::Tenant> = rs
        .tenants()
        .iter()
        .filter(|t| wanted(&Scope::Tenant(t.name.clone())))
        .collect();
    for t in &tenants {
        for r in &t.rules {
            out.push((Scope::Tenant(t.name.clone()), rule_witness(r, &t.prefixes)));
        }
    }
    for t in &tenants {
        if let Some(dst) = first_address(&t.prefixes, None) {
            out.push((
                Scope::Tenant(t.name.clone()),
                PacketHeader {
                    src: documentation_address(dst.is_ipv6(), 9),
                    dst,
                    proto: 17,
                    sport: Some(1),
                    dport: Some(9),
                    tcp_flags: None,
                    icmp_type: None,
                    icmp_code: None,
                    iif: None,
                    vlan: None,
                    fragment: false,
                    hop_limit_255: false,
                },
            ));
        }
    }
    if out.len() > MAX_WITNESSES {
        let step = out.len() as f64 / MAX_WITNESSES as f64;
        out = (0..MAX_WITNESSES)
            .map(|i| out[(i as f64 * step) as usize].clone())
            .collect();
    }
    out
}

/// An address of the documentation ranges (192.0.2.0/24, 2001:db8:ffff::/48).
fn documentation_address(v6: bool, last: u8) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xffff,
            0,
            0,
            0,
            0,
            u16::from(last),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }
}

/// The network address of the first of `prefixes` of the family asked for.
fn first_address(prefixes: &[IpNet], v6: Option<bool>) -> Option<IpAddr> {
    prefixes
        .iter()
        .find(|p| v6.is_none_or(|v6| matches!(p, IpNet::V6(_)) == v6))
        .map(|p| p.network())
}

/// A packet inside `rule` (to one of `prefixes` when the rule names no
/// destination).
fn rule_witness(rule: &Rule, prefixes: &[IpNet]) -> PacketHeader {
    let m = &rule.matches;
    let src = Match::nets(&m.src).next().map(|n| n.network());
    let dst = Match::nets(&m.dst).next().map(|n| n.network());
    // The family: the rule's addresses', else its ICMP's (ICMPv6 exists only
    // over IPv6, ICMP only over IPv4: no frame carries the other).
    let v6 = src.or(dst).map(|a| a.is_ipv6()).or(match m.proto {
        Some(crate::Proto::Icmpv6) => Some(true),
        Some(crate::Proto::Icmp) => Some(false),
        _ => None,
    });
    let dst = dst
        .or_else(|| first_address(prefixes, v6))
        .unwrap_or_else(|| documentation_address(v6.unwrap_or(false), 1));
    let src = src.unwrap_or_else(|| documentation_address(dst.is_ipv6(), 7));
    let proto = m.proto.unwrap_or(crate::Proto::Tcp);
    let number = proto.number();
    // A `fragment` rule's witness is a non-first fragment: no L4 fields.
    let has_ports = proto.has_ports() && !m.fragment;
    let icmp = (number == 1 || number == 58) && !m.fragment;
    let port =
        |items: &[PortItem], default: u16| Match::ranges(items).next().map_or(default, |r| r.lo);
    PacketHeader {
        src,
        dst,
        proto: number,
        sport: has_ports.then(|| port(&m.sport, 40000)),
        dport: has_ports.then(|| port(&m.dport, 80)),
        tcp_flags: (has_ports && number == 6).then(|| m.tcp_flags.map_or(0x02, |f| f.value)),
        icmp_type: icmp.then(|| m.icmp_type.unwrap_or(8)),
        icmp_code: icmp.then(|| m.icmp_code.unwrap_or(0)),
        iif: None,
        vlan: m.vlan,
        fragment: m.fragment,
        hop_limit_255: false,
    }
}
