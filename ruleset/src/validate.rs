//! Validation: everything that must hold before a ruleset may be compiled.
//!
//! Runs in O(n log n) over prefixes and O(n · [`Config::shadow_window`]) over rules.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::Config;
use crate::error::{Diag, ErrorKind, Errors, MAX_ERRORS, Severity, SourceMap, excerpt};
use crate::model::{
    Gateway, Match, NamedSet, PortItem, PortRange, PrefixItem, Proto, Rule, Ruleset, SetElems,
    Span, Tenant,
};
use crate::parser::check_ident;
use crate::shadow::find_shadowed;

/// A ruleset that passed [`validate`]: every set reference resolved to literals, every
/// rule possible and inside its tenant's scope. The only input the compiler accepts.
#[derive(Debug, Clone)]
pub struct ValidRuleset {
    ruleset: Ruleset,
    warnings: Vec<Diag>,
    /// Destination → tenant, built on first use (see [`OwnerIndex`]).
    owners: std::sync::OnceLock<crate::owners::OwnerIndex>,
}

impl ValidRuleset {
    /// The resolved ruleset: no [`PrefixItem::Set`] / [`PortItem::Set`] remain in rules.
    /// Tenant rules with an empty `dst` mean "the tenant's prefixes".
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// The gateway part.
    pub fn gateway(&self) -> &Gateway {
        &self.ruleset.gateway
    }

    /// Tenants, sorted by name; prefixes of different tenants never overlap.
    pub fn tenants(&self) -> &[Tenant] {
        &self.ruleset.tenants
    }

    /// Warnings found (shadowed rules, host bits set).
    pub fn warnings(&self) -> &[Diag] {
        &self.warnings
    }

    /// Index of the tenant owning `dst` (longest prefix match; linear scan, for
    /// reference use — the compiler builds a real index).
    pub fn tenant_for(&self, dst: IpAddr) -> Option<usize> {
        self.owners
            .get_or_init(|| crate::owners::OwnerIndex::new(&self.ruleset.tenants))
            .owner(dst)
    }

    /// The tenant called `name` (binary search: tenants are sorted by name).
    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        let t = &self.ruleset.tenants;
        t.binary_search_by(|x| x.name.as_str().cmp(name))
            .ok()
            .map(|i| &t[i])
    }

    /// Gives back the resolved ruleset.
    pub fn into_ruleset(self) -> Ruleset {
        self.ruleset
    }
}

struct Ctx<'a> {
    map: &'a SourceMap,
    cfg: &'a Config,
    errors: Vec<Diag>,
    warnings: Vec<Diag>,
}

impl Ctx<'_> {
    fn error(&mut self, kind: ErrorKind, span: Span, msg: impl Into<String>) {
        self.errors.push(self.map.error(kind, span, msg));
    }
}

/// Checks `ruleset` against `config`; resolves named sets.
///
/// Returns every error found (each with `file:line:col`), or the [`ValidRuleset`]
/// with its warnings.
pub fn validate(ruleset: Ruleset, config: &Config) -> Result<ValidRuleset, Errors> {
    let mut rs = ruleset;
    let map = std::mem::take(&mut rs.sources);
    let mut cx = Ctx {
        map: &map,
        cfg: config,
        errors: Vec::new(),
        warnings: Vec::new(),
    };

    limits(&mut cx, &rs);
    tenant_names(&mut cx, &rs.tenants);
    let overlaps =
        crate::tenancy::check_allocations(cx.map, &rs.gateway, &rs.tenants, &mut cx.errors);
    tenant_prefixes(&mut cx, &rs.tenants, overlaps);
    crate::tenancy::check_quota_statements(cx.map, &rs.gateway, &rs.tenants, &mut cx.errors);
    crate::limit::check_limits(cx.map, &rs.gateway, &rs.tenants, &mut cx.errors);
    guards_in_scope(&mut cx, &rs.tenants);
    // Past a limit, sets are not copied into rules nor rules checked further:
    // that copying is what the limits bound.
    let within_limits = !cx.errors.iter().any(|d| d.kind == ErrorKind::Limit);

    // Shadowing is only analysed in a scope whose rules all checked out: a rule whose
    // unknown set was dropped during resolution would look broader than it is.
    //
    // Each rule's table rules are counted from the rule as written, before
    // check_rule copies its sets' elements into it (see `admit`).
    let mut all = TableRules::default();
    let gw_sets = sets_by_name(&mut cx, &rs.gateway.sets, None);
    let before = cx.errors.len();
    let mut scope = TableRules::default();
    for r in rs.gateway.rules.iter_mut().filter(|_| within_limits) {
        if admit(&mut cx, r, (&gw_sets, None), None, &mut scope, &mut all) {
            check_rule(&mut cx, r, &gw_sets, None, None);
        }
    }
    if within_limits && cx.errors.len() == before {
        find_shadowed(cx.map, cx.cfg, &rs.gateway.rules, None, &mut cx.warnings);
    }
    for t in rs.tenants.iter_mut().filter(|_| within_limits) {
        if cx.errors.len() >= MAX_ERRORS {
            cx.error(
                ErrorKind::Limit,
                t.spans.name,
                format!("too many errors; stopped after {MAX_ERRORS}, before this tenant"),
            );
            break;
        }
        let before = cx.errors.len();
        let own = sets_by_name(&mut cx, &t.sets, Some(&gw_sets));
        let tenant = (t.name.as_str(), t.prefixes.as_slice());
        let mut scope = TableRules::default();
        let quota = rs.gateway.quota_for(&t.name).rules;
        let mut over_quota = false;
        for r in &mut t.rules {
            let sets = (&gw_sets, Some(&own));
            if admit(&mut cx, r, sets, Some(&t.name), &mut scope, &mut all) {
                check_rule(&mut cx, r, &gw_sets, Some(&own), Some(tenant));
            }
            if let Some((limit, qspan)) = quota
                && !over_quota
                && scope.count as u64 > limit
            {
                over_quota = true;
                let msg = format!(
                    "the rules of tenant `{}` expand into more than {limit} table rules,                      its quota of rules; this is the rule that crosses it",
                    t.name
                );
                let d = crate::tenancy::quota_error(cx.map, r.spans.rule, qspan, msg);
                cx.errors.push(d);
            }
        }
        if cx.errors.len() == before {
            let prefixes = Some(t.prefixes.as_slice());
            find_shadowed(cx.map, cx.cfg, &t.rules, prefixes, &mut cx.warnings);
        }
    }

    let Ctx {
        mut errors,
        warnings,
        ..
    } = cx;
    rs.sources = map;
    // Parsing sorts them already; a ruleset built by hand may not be.
    rs.tenants.sort_by(|a, b| a.name.cmp(&b.name));
    if errors.is_empty() {
        Ok(ValidRuleset {
            ruleset: rs,
            warnings,
            owners: std::sync::OnceLock::new(),
        })
    } else {
        errors.sort_by(|a, b| {
            (&a.location.file, a.location.line, a.location.col).cmp(&(
                &b.location.file,
                b.location.line,
                b.location.col,
            ))
        });
        Err(Errors { errors, warnings })
    }
}

fn limits(cx: &mut Ctx<'_>, rs: &Ruleset) {
    let cfg = cx.cfg;
    if rs.tenants.len() > cfg.max_tenants {
        // Tenants are sorted by name: the first one past the limit.
        let span = rs.tenants[cfg.max_tenants].spans.name;
        cx.error(
            ErrorKind::Limit,
            span,
            format!(
                "{} tenants exceed the limit of {} (Config::max_tenants); \
                 this is the first tenant past it",
                rs.tenants.len(),
                cfg.max_tenants
            ),
        );
    }
    let scopes = std::iter::once(&rs.gateway.rules).chain(rs.tenants.iter().map(|t| &t.rules));
    let total: usize = scopes.clone().map(Vec::len).sum();
    for t in &rs.tenants {
        if t.rules.len() > cfg.max_rules_per_tenant {
            let span = t
                .rules
                .get(cfg.max_rules_per_tenant)
                .map_or(t.spans.name, |r| r.spans.rule);
            cx.error(
                ErrorKind::Limit,
                span,
                format!(
                    "tenant `{}` has {} rules, more than the limit of {} \
                     (Config::max_rules_per_tenant); this is the first rule past it",
                    excerpt(&t.name),
                    t.rules.len(),
                    cfg.max_rules_per_tenant
                ),
            );
        }
    }
    if total > cfg.max_total_rules {
        // Gateway rules first, then tenants by name: the first rule past the limit.
        if let Some(r) = scopes.flatten().nth(cfg.max_total_rules) {
            cx.error(
                ErrorKind::Limit,
                r.spans.rule,
                format!(
                    "{total} rules in total exceed the limit of {} (Config::max_total_rules); \
                     this is the first rule past it",
                    cfg.max_total_rules
                ),
            );
        }
    }
}

/// How many elements a set has.
fn elems(e: &SetElems) -> usize {
    match e {
        SetElems::Ports(p) => p.len(),
        SetElems::Prefixes(p) => p.len(),
    }
}

/// Table rules counted against one of the [`Config`] limits on them.
#[derive(Default)]
struct TableRules {
    count: usize,
    /// The limit was crossed (and reported): no further rule is resolved.
    over: bool,
}

/// Counts the table rules `r` expands into (from the rule as written, before
/// its sets are copied into it) against [`Config::max_rule_expansion`], the
/// limit of its scope (`tenant`, or the gateway) and of the ruleset, reporting
/// the rule that crosses one. Whether `r` may be resolved and checked: not
/// when it is over its own limit, nor from the rule that takes its scope or
/// the ruleset over theirs on — the copying stays within the limits.
fn admit(
    cx: &mut Ctx<'_>,
    r: &Rule,
    (gw, own): (&Sets<'_>, Option<&Sets<'_>>),
    tenant: Option<&str>,
    scope: &mut TableRules,
    all: &mut TableRules,
) -> bool {
    let cfg = cx.cfg;
    let set_len = |name: &str| lookup(name, gw, own).map_or(0, |s| elems(&s.elems));
    let n = expansion_bound(&r.matches, &set_len);
    if n > cfg.max_rule_expansion {
        cx.errors.push(
            cx.map
                .error(
                    ErrorKind::Limit,
                    r.spans.rule,
                    format!(
                        "this rule expands into up to {n} table rules, more than the limit of {} \
                         (Config::max_rule_expansion): the product of its address and port \
                         lists, with every element of a set",
                        cfg.max_rule_expansion
                    ),
                )
                .with_help("split the rule, or use fewer or wider ranges and prefixes"),
        );
        // Reported as such, not again as the rule that takes its tenant or
        // the ruleset over their limits.
        return false;
    }
    let mut admitted = !scope.over && !all.over;
    scope.count = scope.count.saturating_add(n);
    all.count = all.count.saturating_add(n);
    if scope.count > cfg.max_table_rules_per_tenant && !scope.over {
        scope.over = true;
        admitted = false;
        let who = tenant.map_or_else(
            || "the gateway's rules".to_owned(),
            |t| format!("the rules of tenant `{}`", excerpt(t)),
        );
        cx.error(
            ErrorKind::Limit,
            r.spans.rule,
            format!(
                "{who} expand into more than {} table rules \
                 (Config::max_table_rules_per_tenant); this is the rule that crosses it",
                cfg.max_table_rules_per_tenant
            ),
        );
    }
    if all.count > cfg.max_table_rules && !all.over {
        all.over = true;
        admitted = false;
        cx.error(
            ErrorKind::Limit,
            r.spans.rule,
            format!(
                "the ruleset's rules expand into more than {} table rules \
                 (Config::max_table_rules); this is the rule that crosses it",
                cfg.max_table_rules
            ),
        );
    }
    admitted
}

/// An upper bound of the table rules the compiler makes of `m`, with
/// `set_len(name)` elements for `@name` (0 for an unknown set, reported later).
/// Every list element counts, duplicates and nested prefixes too, so the
/// compiler (which merges them first) never makes more.
pub(crate) fn expansion_bound(m: &Match, set_len: &dyn Fn(&str) -> usize) -> usize {
    let prefixes = |items: &[PrefixItem]| -> usize {
        items.iter().fold(0usize, |n, i| {
            n.saturating_add(match i {
                PrefixItem::Net(_) => 1,
                PrefixItem::Set(name) => set_len(name),
            })
        })
    };
    let ports = |items: &[PortItem]| -> usize {
        items.iter().fold(0usize, |n, i| {
            n.saturating_add(match i {
                PortItem::Range(_) => 1,
                PortItem::Set(name) => set_len(name),
            })
        })
    };
    let (src, dst) = (prefixes(&m.src), prefixes(&m.dst));
    let (sport, dport) = (ports(&m.sport), ports(&m.dport));
    // Ports without a protocol: TCP and UDP. ICMP fields without addresses:
    // one rule per family.
    let protos = if m.proto.is_none() && sport + dport > 0 {
        2
    } else {
        1
    };
    let families = if src + dst == 0 && (m.icmp_type.is_some() || m.icmp_code.is_some()) {
        2
    } else {
        1
    };
    [src, dst, sport, dport, protos, families]
        .into_iter()
        .fold(1usize, |n, k| n.saturating_mul(k.max(1)))
}

fn tenant_names(cx: &mut Ctx<'_>, tenants: &[Tenant]) {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for t in tenants {
        if let Err(m) = check_ident(&t.name) {
            cx.error(ErrorKind::TenantName, t.spans.name, m);
        }
        if let Some(first) = seen.insert(&t.name, t.spans.name) {
            let d = cx
                .map
                .error(
                    ErrorKind::DuplicateTenant,
                    t.spans.name,
                    format!("tenant `{}` is declared twice", excerpt(&t.name)),
                )
                .with_related(cx.map, first, "first declared here");
            cx.errors.push(d);
        }
        if t.prefixes.is_empty() {
            cx.error(
                ErrorKind::NoPrefixes,
                t.spans.name,
                format!(
                    "tenant `{}` owns no prefix, so no packet can reach its rules",
                    t.name
                ),
            );
        }
    }
}

/// Tenants' prefixes must not overlap (checked when `overlaps`; see
/// [`crate::tenancy::check_allocations`]). Prefixes are nested or disjoint, so after
/// sorting by first address an overlap shows up as a start inside the widest
/// preceding prefix.
fn tenant_prefixes(cx: &mut Ctx<'_>, tenants: &[Tenant], overlaps: bool) {
    let mut all: Vec<(IpNet, usize, Span)> = Vec::new();
    for (ti, t) in tenants.iter().enumerate() {
        for (pi, p) in t.prefixes.iter().enumerate() {
            let span = t.spans.prefixes.get(pi).copied().unwrap_or(t.spans.name);
            if p.addr() != p.network() {
                cx.warnings.push(host_bits(cx.map, p, span));
            }
            all.push((p.trunc(), ti, span));
        }
    }
    all.sort_by_key(|a| (a.0.network(), a.0.prefix_len()));
    let mut cover: Option<(IpNet, usize, Span)> = None;
    for &(p, ti, span) in &all {
        match cover {
            Some((c, cti, cspan)) if c.contains(&p) => {
                if cti != ti && overlaps {
                    let (a, b) = (&tenants[cti].name, &tenants[ti].name);
                    let d = cx
                        .map
                        .error(
                            ErrorKind::TenantOverlap,
                            span,
                            format!(
                                "prefix {p} of tenant `{b}` overlaps prefix {c} of tenant `{a}`"
                            ),
                        )
                        .with_related(cx.map, cspan, format!("{c} of tenant `{a}`"));
                    cx.errors.push(d);
                }
            }
            _ => cover = Some((p, ti, span)),
        }
    }
}

fn host_bits(map: &SourceMap, p: &IpNet, span: Span) -> Diag {
    map.diag(
        Severity::Warning,
        ErrorKind::HostBits,
        span,
        format!(
            "{p} has bits set after its prefix length; it means {}",
            p.trunc()
        ),
    )
}

type Sets<'a> = HashMap<&'a str, &'a NamedSet>;

fn sets_by_name<'a>(cx: &mut Ctx<'_>, sets: &'a [NamedSet], outer: Option<&Sets<'a>>) -> Sets<'a> {
    let mut out: Sets<'a> = HashMap::new();
    for s in sets {
        if let Err(m) = check_ident(&s.name) {
            cx.error(ErrorKind::Syntax, s.span, m);
        }
        let prev = out
            .get(s.name.as_str())
            .or_else(|| outer.and_then(|o| o.get(s.name.as_str())));
        if let Some(prev) = prev {
            let d = cx
                .map
                .error(
                    ErrorKind::DuplicateSet,
                    s.span,
                    format!("set `{}` is already defined", excerpt(&s.name)),
                )
                .with_related(cx.map, prev.span, "first defined here");
            cx.errors.push(d);
            continue;
        }
        if elems(&s.elems) > cx.cfg.max_set_elems {
            cx.error(
                ErrorKind::Limit,
                s.span,
                format!(
                    "set `{}` has {} elements, more than the limit of {} (Config::max_set_elems)",
                    excerpt(&s.name),
                    elems(&s.elems),
                    cx.cfg.max_set_elems
                ),
            );
        }
        match &s.elems {
            SetElems::Ports(p) => {
                for r in p.iter().filter(|r| r.lo > r.hi) {
                    cx.error(
                        ErrorKind::PortRangeReversed,
                        s.span,
                        format!("set `{}` holds the empty range {}-{}", s.name, r.lo, r.hi),
                    );
                }
            }
            SetElems::Prefixes(p) => {
                for n in p.iter().filter(|n| n.addr() != n.network()) {
                    cx.warnings.push(host_bits(cx.map, n, s.span));
                }
            }
        }
        out.insert(&s.name, s);
    }
    out
}

fn lookup<'a>(name: &str, gw: &Sets<'a>, own: Option<&Sets<'a>>) -> Option<&'a NamedSet> {
    own.and_then(|o| o.get(name))
        .or_else(|| gw.get(name))
        .copied()
}

/// Replaces set references in `items` by their elements.
fn resolve_prefixes(
    cx: &mut Ctx<'_>,
    items: &mut Vec<PrefixItem>,
    span: Span,
    gw: &Sets<'_>,
    own: Option<&Sets<'_>>,
) {
    if !items.iter().any(|i| matches!(i, PrefixItem::Set(_))) {
        for n in Match::nets(items).filter(|n| n.addr() != n.network()) {
            cx.warnings.push(host_bits(cx.map, n, span));
        }
        return;
    }
    let mut out = Vec::with_capacity(items.len());
    for it in items.drain(..) {
        match it {
            PrefixItem::Net(n) => out.push(PrefixItem::Net(n)),
            PrefixItem::Set(name) => match lookup(&name, gw, own).map(|s| &s.elems) {
                Some(SetElems::Prefixes(p)) => out.extend(p.iter().map(|n| PrefixItem::Net(*n))),
                Some(SetElems::Ports(_)) => cx.error(
                    ErrorKind::SetTypeMismatch,
                    span,
                    format!(
                        "set `@{}` holds ports, but an address list needs prefixes",
                        excerpt(&name)
                    ),
                ),
                None => cx.error(
                    ErrorKind::UnknownSet,
                    span,
                    format!("no set named `@{}`", excerpt(&name)),
                ),
            },
        }
    }
    *items = out;
}

fn resolve_ports(
    cx: &mut Ctx<'_>,
    items: &mut Vec<PortItem>,
    span: Span,
    gw: &Sets<'_>,
    own: Option<&Sets<'_>>,
) {
    if items.iter().any(|i| matches!(i, PortItem::Set(_))) {
        let mut out = Vec::with_capacity(items.len());
        for it in items.drain(..) {
            match it {
                PortItem::Range(r) => out.push(PortItem::Range(r)),
                PortItem::Set(name) => match lookup(&name, gw, own).map(|s| &s.elems) {
                    Some(SetElems::Ports(p)) => out.extend(p.iter().map(|r| PortItem::Range(*r))),
                    Some(SetElems::Prefixes(_)) => cx.error(
                        ErrorKind::SetTypeMismatch,
                        span,
                        format!(
                            "set `@{}` holds prefixes, but a port list needs ports",
                            excerpt(&name)
                        ),
                    ),
                    None => cx.error(
                        ErrorKind::UnknownSet,
                        span,
                        format!("no set named `@{}`", excerpt(&name)),
                    ),
                },
            }
        }
        *items = out;
    }
    for r in Match::ranges(items).filter(|r| r.lo > r.hi) {
        cx.error(
            ErrorKind::PortRangeReversed,
            span,
            format!(
                "port range {}-{} is empty: the first port must not exceed the last",
                r.lo, r.hi
            ),
        );
    }
}

/// `Some(true)` if every prefix is IPv4, `Some(false)` if every one is IPv6, `None` if
/// the list is empty or mixed.
fn family(items: &[PrefixItem]) -> Option<bool> {
    let mut nets = Match::nets(items);
    let first = nets.next()?.addr().is_ipv4();
    nets.all(|n| n.addr().is_ipv4() == first).then_some(first)
}

fn check_rule(
    cx: &mut Ctx<'_>,
    r: &mut Rule,
    gw: &Sets<'_>,
    own: Option<&Sets<'_>>,
    tenant: Option<(&str, &[IpNet])>,
) {
    let sp = r.spans;
    let at = |s: Option<Span>| s.unwrap_or(sp.rule);
    let m = &mut r.matches;
    resolve_prefixes(cx, &mut m.src, at(sp.src), gw, own);
    resolve_prefixes(cx, &mut m.dst, at(sp.dst), gw, own);
    resolve_ports(cx, &mut m.sport, at(sp.sport), gw, own);
    resolve_ports(cx, &mut m.dport, at(sp.dport), gw, own);

    if let Some(i) = &m.iif {
        let ok = !i.is_empty()
            && i.len() <= crate::parser::MAX_IFNAME
            && i.bytes().all(|c| c.is_ascii_graphic() && c != b'"');
        if !ok {
            cx.error(
                ErrorKind::Syntax,
                at(sp.iif),
                format!(
                    "interface name `{}` must be 1 to 15 printable characters without `\"`",
                    excerpt(i)
                ),
            );
        }
    }
    if let Some(v) = m.vlan.filter(|&v| v > 4095) {
        cx.error(
            ErrorKind::VlanOutOfRange,
            at(sp.vlan),
            format!("VLAN id {v} is above 4095"),
        );
    }
    let proto = m.proto;
    let l4_ok = match proto {
        Some(p) => p.has_ports() || cx.cfg.allow_ports_on_any_proto,
        None => cx.cfg.allow_ports_without_proto,
    };
    let what = || proto.map_or_else(|| "no `proto`".to_owned(), |p| format!("`proto {p}`"));
    for (present, s, name) in [
        (!m.sport.is_empty(), sp.sport, "sport"),
        (!m.dport.is_empty(), sp.dport, "dport"),
    ] {
        if present && !l4_ok {
            cx.errors.push(
                cx.map
                    .error(
                        ErrorKind::PortsWithoutTcpUdp,
                        at(s),
                        format!(
                            "`{name}` on a rule with {}: only TCP and UDP have ports",
                            what()
                        ),
                    )
                    .with_help("add `proto tcp` or `proto udp` before the ports"),
            );
        }
    }
    let flags_ok = proto.map_or(cx.cfg.allow_ports_without_proto, |p| p == Proto::Tcp);
    if m.tcp_flags.is_some() && !flags_ok {
        cx.error(
            ErrorKind::FlagsWithoutTcp,
            at(sp.tcp_flags),
            format!("`flags` on a rule with {}: only TCP has flags", what()),
        );
    }
    let icmp_ok = proto.is_some_and(Proto::is_icmp);
    for (present, s, name) in [
        (m.icmp_type.is_some(), sp.icmp_type, "icmp-type"),
        (m.icmp_code.is_some(), sp.icmp_code, "icmp-code"),
    ] {
        if present && !icmp_ok {
            cx.errors.push(
                cx.map
                    .error(
                        ErrorKind::IcmpWithoutIcmp,
                        at(s),
                        format!("`{name}` on a rule with {}", what()),
                    )
                    .with_help("add `proto icmp` (IPv4) or `proto icmpv6` (IPv6)"),
            );
        }
    }
    if m.fragment {
        for (present, s, name) in [
            (!m.sport.is_empty(), sp.sport, "sport"),
            (!m.dport.is_empty(), sp.dport, "dport"),
            (m.tcp_flags.is_some(), sp.tcp_flags, "flags"),
            (m.icmp_type.is_some(), sp.icmp_type, "icmp-type"),
            (m.icmp_code.is_some(), sp.icmp_code, "icmp-code"),
        ] {
            if present {
                cx.errors.push(
                    cx.map
                        .error(
                            ErrorKind::FragmentWithL4,
                            at(s),
                            format!(
                                "`{name}` with `fragment`: a non-first fragment has no L4 \
                                 header, so this rule could never match"
                            ),
                        )
                        .with_help(
                            "match the first fragment by its ports and the others with \
                             `fragment` alone (with `proto`, addresses, iif, vlan)",
                        ),
                );
            }
        }
    }
    let (fs, fd) = (family(&m.src), family(&m.dst));
    if let (Some(a), Some(b)) = (fs, fd)
        && a != b
    {
        let (s, d) = if a {
            ("IPv4", "IPv6")
        } else {
            ("IPv6", "IPv4")
        };
        cx.errors.push(
            cx.map
                .error(
                    ErrorKind::FamilyMismatch,
                    at(sp.dst),
                    format!("{s} sources with {d} destinations can never match"),
                )
                .with_related(cx.map, at(sp.src), "sources here"),
        );
    }
    let fam = fs.or(fd);
    match (proto, fam) {
        (Some(Proto::Icmp), Some(false)) => {
            cx.error(
                ErrorKind::FamilyMismatch,
                at(sp.proto),
                "`proto icmp` is IPv4 only, but the addresses are IPv6 (use `proto icmpv6`)",
            );
        }
        (Some(Proto::Icmpv6), Some(true)) => {
            cx.error(
                ErrorKind::FamilyMismatch,
                at(sp.proto),
                "`proto icmpv6` is IPv6 only, but the addresses are IPv4 (use `proto icmp`)",
            );
        }
        _ => {}
    }
    if let Some((name, owned)) = tenant {
        for n in Match::nets(&m.dst) {
            if !owned.iter().any(|o| o.contains(n)) {
                cx.errors.push(
                    cx.map
                        .error(
                            ErrorKind::OutOfScope,
                            at(sp.dst),
                            format!("destination {n} is outside the prefixes of tenant `{name}`"),
                        )
                        .with_help("a tenant's rules may only match its own destinations; leave `daddr` out to mean all of them"),
                );
            }
        }
    }
}

/// A tenant's guard packets must be addressed to that tenant.
fn guards_in_scope(cx: &mut Ctx<'_>, tenants: &[Tenant]) {
    for t in tenants {
        for g in &t.guards {
            if !t.prefixes.iter().any(|p| p.contains(&g.packet.dst)) {
                cx.errors.push(
                    cx.map
                        .error(
                            ErrorKind::OutOfScope,
                            g.span,
                            format!(
                                "guard packet to {} is not addressed to tenant `{}`",
                                g.packet.dst, t.name
                            ),
                        )
                        .with_help("a tenant's guards check that tenant's traffic: use one of its prefixes, or put the guard in gateway.fg"),
                );
            }
        }
    }
}

/// True if `a` covers every range of `b` with one of its own.
pub(crate) fn ports_cover(a: &[PortItem], b: &[PortItem]) -> bool {
    a.is_empty()
        || (!b.is_empty()
            && Match::ranges(b).all(|rb| Match::ranges(a).any(|ra: PortRange| ra.covers(rb))))
}
