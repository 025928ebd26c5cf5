//! What the operator grants each tenant in gateway.fg: the address space it
//! may claim (`allocate`) and what it may consume (`quota`).
//!
//! Tenant files may be written by customers; these checks make isolation
//! rest on the operator's file, not on the tenant's own `prefixes` line.
//! Every error is at the tenant's file (the prefix or rule that crosses the
//! line), naming the allocation or quota, which is the related position.

use ipnet::IpNet;

use crate::compile::Image;
use crate::error::{Diag, ErrorKind, Errors, SourceMap, excerpt};
use crate::model::{Gateway, Span, Tenant};
use crate::validate::ValidRuleset;

/// Bytes of one table cell in the kernel's pool.
const CELL_BYTES: u64 = core::mem::size_of::<fluxgate_common::table::Cell>() as u64;

/// Allocations must not overlap, and every tenant's prefixes must lie in its
/// allocation (when gateway.fg declares any). Returns whether the tenants'
/// own overlap check is still needed: not when allocations are declared and
/// sound, since prefixes inside disjoint allocations cannot overlap, and an
/// overlap error would then point at whichever tenant sorts second rather
/// than at the one claiming outside its allocation.
pub(crate) fn check_allocations(
    map: &SourceMap,
    gw: &Gateway,
    tenants: &[Tenant],
    errors: &mut Vec<Diag>,
) -> bool {
    if gw.allocations.is_empty() {
        return true;
    }
    let before = errors.len();
    // Duplicates and overlaps between allocations, each at the later one.
    let mut all: Vec<(IpNet, usize, Span)> = Vec::new();
    for (ai, a) in gw.allocations.iter().enumerate() {
        if let Some(first) = gw.allocations[..ai].iter().find(|b| b.tenant == a.tenant) {
            errors.push(
                map.error(
                    ErrorKind::Allocation,
                    a.span,
                    format!("tenant `{}` is allocated twice", excerpt(&a.tenant)),
                )
                .with_related(map, first.span, "first allocated here"),
            );
            continue;
        }
        for (pi, p) in a.prefixes.iter().enumerate() {
            let span = a.prefix_spans.get(pi).copied().unwrap_or(a.span);
            all.push((p.trunc(), ai, span));
        }
    }
    all.sort_by_key(|a| (a.0.network(), a.0.prefix_len()));
    let mut cover: Option<(IpNet, usize, Span)> = None;
    for &(p, ai, span) in &all {
        match cover {
            Some((c, ci, cspan)) if c.contains(&p) => {
                if ci != ai {
                    // Report at the allocation written second.
                    let ((lp, la, ls), (rp, ra, rs)) = if span.start > cspan.start || ai > ci {
                        ((p, ai, span), (c, ci, cspan))
                    } else {
                        ((c, ci, cspan), (p, ai, span))
                    };
                    let (a, b) = (&gw.allocations[la].tenant, &gw.allocations[ra].tenant);
                    errors.push(
                        map.error(
                            ErrorKind::Allocation,
                            ls,
                            format!(
                                "allocation {lp} of tenant `{a}` overlaps allocation {rp} of tenant `{b}`"
                            ),
                        )
                        .with_related(map, rs, format!("{rp} allocated to tenant `{b}`")),
                    );
                }
            }
            _ => cover = Some((p, ai, span)),
        }
    }
    for t in tenants {
        let Some(a) = gw.allocation(&t.name) else {
            errors.push(
                map.error(
                    ErrorKind::Allocation,
                    t.spans.name,
                    format!(
                        "gateway.fg allocates address space to tenants, but none to `{}`",
                        excerpt(&t.name)
                    ),
                )
                .with_help(format!(
                    "the operator adds `allocate {} {{ … }}` to gateway.fg",
                    excerpt(&t.name)
                )),
            );
            continue;
        };
        let shown: Vec<String> = a.prefixes.iter().map(ToString::to_string).collect();
        for (pi, p) in t.prefixes.iter().enumerate() {
            if a.prefixes.iter().any(|q| q.contains(&p.trunc())) {
                continue;
            }
            let span = t.spans.prefixes.get(pi).copied().unwrap_or(t.spans.name);
            errors.push(
                map.error(
                    ErrorKind::Allocation,
                    span,
                    format!(
                        "prefix {p} of tenant `{}` is outside its allocation \
                         `allocate {} {{ {} }}` in gateway.fg",
                        t.name,
                        t.name,
                        shown.join(", ")
                    ),
                )
                .with_related(
                    map,
                    a.span,
                    format!("allocation of tenant `{}`", t.name),
                ),
            );
        }
    }
    errors.len() == before
}

/// Two quotas for the same tenant (or two defaults) are an error at the second;
/// a tenant with more counters (rules + 1) than its quota is an error at the
/// first rule past it.
pub(crate) fn check_quota_statements(
    map: &SourceMap,
    gw: &Gateway,
    tenants: &[Tenant],
    errors: &mut Vec<Diag>,
) {
    for (i, q) in gw.quotas.iter().enumerate() {
        if let Some(first) = gw.quotas[..i].iter().find(|p| p.tenant == q.tenant) {
            let who = q.tenant.as_deref().map_or_else(
                || "the default quota".to_owned(),
                |t| format!("the quota of tenant `{}`", excerpt(t)),
            );
            errors.push(
                map.error(ErrorKind::Quota, q.span, format!("{who} is given twice"))
                    .with_related(map, first.span, "first given here"),
            );
        }
    }
    if gw.quotas.is_empty() {
        return;
    }
    for t in tenants {
        let Some((limit, qspan)) = gw.quota_for(&t.name).counters else {
            continue;
        };
        let counters = t.rules.len() as u64 + 1;
        if counters > limit {
            // Rule number `limit` is the one whose counter, with the default's,
            // makes limit + 1.
            let span = usize::try_from(limit)
                .ok()
                .and_then(|l| l.checked_sub(1))
                .and_then(|i| t.rules.get(i))
                .map_or(t.spans.name, |r| r.spans.rule);
            errors.push(quota_error(
                map,
                span,
                qspan,
                format!(
                    "tenant `{}` needs {counters} counters (its {} rules and its default), \
                     more than its quota of {limit} counters; this is the first rule past it",
                    t.name,
                    t.rules.len()
                ),
            ));
        }
    }
}

/// The error of a tenant over its quota, at `span`, naming the quota at `quota`.
pub(crate) fn quota_error(map: &SourceMap, span: Span, quota: Span, message: String) -> Diag {
    map.error(ErrorKind::Quota, span, message)
        .with_related(map, quota, "quota set here")
        .with_help("the operator sets quotas in gateway.fg (`quota NAME …`)")
}

/// Checks each tenant's compiled table against its `table-bytes` quota;
/// call it after [`crate::compile_with`] and before anything is staged.
/// Each error is at the tenant's `tenant NAME` line, naming the quota.
pub fn check_table_quotas(rs: &ValidRuleset, image: &Image) -> Result<(), Errors> {
    let gw = rs.gateway();
    let map = &rs.ruleset().sources;
    let mut errors = Vec::new();
    for ti in &image.tenants {
        let Some(t) = rs.tenant(&ti.name) else {
            continue;
        };
        let Some((limit, qspan)) = gw.quota_for(&t.name).table_bytes else {
            continue;
        };
        let bytes = ti.table.cells.len() as u64 * CELL_BYTES;
        if bytes > limit {
            errors.push(quota_error(
                map,
                t.spans.name,
                qspan,
                format!(
                    "the table of tenant `{}` takes {bytes} bytes, more than its quota of \
                     {limit} table bytes",
                    t.name
                ),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Errors {
            errors,
            warnings: Vec::new(),
        })
    }
}
