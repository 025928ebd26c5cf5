//! Finding rules that can never match because one earlier pass/drop rule of the same
//! scope matches every packet they match.
//!
//! Conservative by construction: "covers" is checked field by field, and a field only
//! counts as covered when that is certain (each range / prefix of the later rule lies
//! inside a single one of the earlier rule's). It never warns falsely; it may miss
//! shadowing spread over several rules, or by a rule more than
//! [`Config::shadow_window`] pass/drop rules back — that bound keeps validation
//! linear for 100k-rule rulesets — or by a rule whose lists would take more than
//! [`MAX_PAIRS`] element pairs to compare with the later rule's.

use std::collections::VecDeque;

use ipnet::IpNet;

use crate::config::Config;
use crate::error::{Diag, ErrorKind, Severity, SourceMap};
use crate::model::{Match, PrefixItem, Rule};
use crate::validate::ports_cover;

fn prefixes_cover(a: &[PrefixItem], b: &[PrefixItem], implicit_b: Option<&[IpNet]>) -> bool {
    if a.is_empty() {
        return true;
    }
    let covered = |n: &IpNet| Match::nets(a).any(|x| x.contains(n));
    if b.is_empty() {
        // an empty tenant `daddr` means the tenant's prefixes
        return implicit_b.is_some_and(|p| !p.is_empty() && p.iter().all(covered));
    }
    Match::nets(b).all(covered)
}

/// True if every packet `b` matches is also matched by `a`.
pub fn covers(a: &Match, b: &Match, tenant_prefixes: Option<&[IpNet]>) -> bool {
    fn opt<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
        a.is_none() || a == b
    }
    opt(&a.proto, &b.proto)
        && opt(&a.vlan, &b.vlan)
        && opt(&a.icmp_type, &b.icmp_type)
        && opt(&a.icmp_code, &b.icmp_code)
        && opt(&a.iif, &b.iif)
        && (!a.fragment || b.fragment)
        && match (a.tcp_flags, b.tcp_flags) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(fa), Some(fb)) => fb.mask & fa.mask == fa.mask && fb.value & fa.mask == fa.value,
        }
        && ports_cover(&a.dport, &b.dport)
        && ports_cover(&a.sport, &b.sport)
        && prefixes_cover(&a.src, &b.src, None)
        && prefixes_cover(&a.dst, &b.dst, tenant_prefixes)
}

/// Most element pairs (earlier rule's × later rule's, per list) compared to
/// decide whether one rule shadows another. Comparing lists is quadratic: two
/// rules of 4096 ports each took 8M steps, and a tenant's file could make
/// validation compare such rules some 3,000 times. Rules with longer lists are
/// simply not compared; the warning is advice, and missing one is allowed.
pub(crate) const MAX_PAIRS: usize = 1024;

/// Whether comparing `a` with `b` stays within [`MAX_PAIRS`] pairs per list.
fn affordable(a: &Match, b: &Match, tenant_prefixes: Option<&[IpNet]>) -> bool {
    let pairs = |x: usize, y: usize| x.saturating_mul(y) <= MAX_PAIRS;
    // An empty tenant `daddr` is compared as the tenant's prefixes.
    let b_dst = match (b.dst.len(), tenant_prefixes) {
        (0, Some(p)) => p.len(),
        (n, _) => n,
    };
    pairs(a.src.len(), b.src.len())
        && pairs(a.dst.len(), b_dst)
        && pairs(a.sport.len(), b.sport.len())
        && pairs(a.dport.len(), b.dport.len())
}

/// Bit per constrained field: `a` can only cover `b` if `a`'s bits are a subset of
/// `b`'s (a constrained field never covers an unconstrained one). One AND rejects most
/// candidates before the field-by-field check.
fn constrained(m: &Match, implicit_dst: bool) -> u16 {
    let bits = [
        m.iif.is_some(),
        m.vlan.is_some(),
        !m.src.is_empty(),
        !m.dst.is_empty() || implicit_dst,
        m.proto.is_some(),
        !m.sport.is_empty(),
        !m.dport.is_empty(),
        m.tcp_flags.is_some(),
        m.icmp_type.is_some(),
        m.icmp_code.is_some(),
        m.fragment,
    ];
    bits.iter()
        .enumerate()
        .fold(0, |acc, (i, &b)| acc | (u16::from(b) << i))
}

/// Pushes a [`ErrorKind::Shadowed`] warning for each rule of `rules` covered by one of
/// the previous `cfg.shadow_window` pass/drop rules.
pub(crate) fn find_shadowed(
    map: &SourceMap,
    cfg: &Config,
    rules: &[Rule],
    tenant_prefixes: Option<&[IpNet]>,
    out: &mut Vec<Diag>,
) {
    if cfg.shadow_window == 0 {
        return;
    }
    let mut window: VecDeque<(u16, &Rule)> = VecDeque::with_capacity(cfg.shadow_window);
    let implicit = tenant_prefixes.is_some();
    for r in rules {
        let bits = constrained(&r.matches, implicit);
        let found = window.iter().rev().find(|(abits, a)| {
            abits & !bits == 0
                && affordable(&a.matches, &r.matches, tenant_prefixes)
                && covers(&a.matches, &r.matches, tenant_prefixes)
        });
        if let Some(&(_, a)) = found {
            out.push(
                map.diag(
                    Severity::Warning,
                    ErrorKind::Shadowed,
                    r.spans.rule,
                    format!(
                        "rule #{} can never match: rule #{} ({}) decides every packet it would",
                        r.position, a.position, a.action
                    ),
                )
                .with_related(
                    map,
                    a.spans.rule,
                    format!("rule #{} matches first", a.position),
                ),
            );
            continue;
        }
        if r.action.verdict().is_some() {
            if window.len() == cfg.shadow_window {
                window.pop_front();
            }
            window.push_back((constrained(&r.matches, false), r));
        }
    }
}
