//! Rate limits in the kernel. A rule's `limit rate over …` and a tenant's
//! `ceiling` (compiled into rules before the tenant's own) are enforced by
//! the XDP program: a token bucket per counter slot, `FG_BUCKETS`, written
//! here when a new rule takes a slot. A per-source limit (`per saddr/N[/M]`)
//! keeps one bucket per (rule, source prefix) in `FG_SOURCE_BUCKETS`, an LRU
//! map of as many entries as the attachment was given (`source_buckets`):
//! sources not seen lately are forgotten (their bucket starts full again;
//! `stats` counts them as evicted).

use fluxgate_ruleset::{Diag, ErrorKind, Errors, ValidRuleset};

/// The errors of a ruleset the kernel cannot enforce with an LRU map of
/// `source_buckets` per-source buckets (none: `Ok`): more per-source limits
/// than the map has entries, so some limit could not keep even one source's
/// bucket (each limit past the map's size is an error at its `limit`), or a
/// gateway.fg `meter-size N` (the entries the ruleset asks for) over the
/// map's entries (an error at it: the map's size is fixed when it is
/// attached). A limit whose prefix length allows more sources than the map
/// holds is not an error: the LRU keeps the sources seen lately.
pub(crate) fn kernel_supports(rs: &ValidRuleset, source_buckets: u32) -> Result<(), Errors> {
    let map = &rs.ruleset().sources;
    let mut errors: Vec<Diag> = Vec::new();
    if let Some((n, span)) = rs.gateway().meter_size
        && n > u64::from(source_buckets)
    {
        errors.push(map.error(
            ErrorKind::RateLimit,
            span,
            format!(
                "`meter-size {n}` asks for more per-source buckets than the attachment's \
                 map holds ({source_buckets}; its size is fixed at attach: attach with \
                 `--source-buckets {n}`)"
            ),
        ));
    }
    let rules = rs
        .gateway()
        .rules
        .iter()
        .chain(rs.tenants().iter().flat_map(|t| t.rules.iter()));
    let per_source: Vec<_> = rules
        .filter(|r| r.limit.is_some_and(|l| l.per_source.is_some()))
        .collect();
    let n = per_source.len();
    errors.extend(per_source.iter().skip(source_buckets as usize).map(|r| {
        let span = r.spans.limit.unwrap_or(r.spans.rule);
        map.error(
            ErrorKind::RateLimit,
            span,
            format!(
                "{n} per-source limits (`per saddr`) but the attachment's map holds \
                     {source_buckets} source buckets: not one each (attach with a larger \
                     `--source-buckets`)"
            ),
        )
    }));
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
/// kept generation holds (`held`): a full bucket for each rule with a limit,
/// `epoch` (the generation, never a slot's earlier one) keying its source
/// buckets, so a changed rule — a new slot, or a slot an old rule left —
/// starts with every source bucket full; the old entries age out of the LRU.
/// (A slot without a limit keeps whatever an earlier rule left: the kernel
/// reads a bucket only for a rule with a limit.)
pub(crate) fn fresh_buckets(
    image: &fluxgate_ruleset::Image,
    held: &std::collections::BTreeSet<u32>,
    epoch: u32,
) -> Vec<(u32, fluxgate_common::limit::LimitSlot)> {
    image
        .counters
        .iter()
        .filter(|c| !held.contains(&c.slot))
        .filter_map(|c| Some((c.slot, c.limit?.slot(epoch)?)))
        .collect()
}
