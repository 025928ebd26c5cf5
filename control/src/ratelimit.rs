//! Rate limits in the kernel. A rule's `limit rate over …` and a tenant's
//! `ceiling` (compiled into rules before the tenant's own) are enforced by
//! the XDP program: a token bucket per counter slot, `FG_BUCKETS`, written
//! here when a new rule takes a slot. Per-source limits (`per saddr/N`) are
//! defined in the ruleset crate and enforced by the reference and userspace
//! classifiers, but not yet by the XDP program: a ruleset that uses them is
//! refused before anything changes, with an error at each, rather than
//! loaded with a limit the kernel would apply to all sources together.

use fluxgate_ruleset::{Diag, ErrorKind, Errors, ValidRuleset};

const WHY_PER_SOURCE: &str = "per-source limits (`per saddr/N`) are not enforced by this \
                              build's XDP program yet; refusing rather than loading a limit \
                              the kernel would apply to all sources together";

/// The errors of a ruleset the kernel cannot enforce (none: `Ok`).
pub(crate) fn kernel_supports(rs: &ValidRuleset) -> Result<(), Errors> {
    let map = &rs.ruleset().sources;
    let mut errors: Vec<Diag> = Vec::new();
    let rules = rs
        .gateway()
        .rules
        .iter()
        .chain(rs.tenants().iter().flat_map(|t| t.rules.iter()));
    for r in rules.filter(|r| r.limit.is_some_and(|l| l.per_source.is_some())) {
        let span = r.spans.limit.unwrap_or(r.spans.rule);
        errors.push(map.error(ErrorKind::RateLimit, span, WHY_PER_SOURCE));
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

/// The bucket entries to write for the counter slots of `image` that no
/// kept generation holds (`held`): a full bucket for each rule with a limit.
/// (A slot without a limit keeps whatever an earlier rule left: the kernel
/// reads a bucket only for a rule with a limit.)
pub(crate) fn fresh_buckets(
    image: &fluxgate_ruleset::Image,
    held: &std::collections::BTreeSet<u32>,
) -> Vec<(u32, fluxgate_common::limit::LimitSlot)> {
    image
        .counters
        .iter()
        .filter(|c| !held.contains(&c.slot))
        .filter_map(|c| {
            let bucket = c.limit?.bucket()?;
            Some((c.slot, fluxgate_common::limit::LimitSlot { bucket, tat: 0 }))
        })
        .collect()
}
