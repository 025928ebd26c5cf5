//! Validation of rate limits against what the operator grants: every limit
//! within bounds, the `limits` quota (rules with a `limit`), and a tenant's
//! `ceiling` no higher than the operator's `quota … ceiling`.

use crate::error::{Diag, ErrorKind, SourceMap};
use crate::limit::{Ceiling, MAX_LIMITS_PER_SCOPE};
use crate::model::{Action, Gateway, Rule, Tenant};
use crate::tenancy::quota_error;
use crate::validate::ValidRuleset;

/// Checks the limits of `rules` (bounds, not on `count`, at most
/// [`MAX_LIMITS_PER_SCOPE`]).
fn check_rules(map: &SourceMap, rules: &[Rule], errors: &mut Vec<Diag>) {
    for (n, r) in rules.iter().filter(|r| r.limit.is_some()).enumerate() {
        let Some(l) = &r.limit else { continue };
        let span = r.spans.limit.unwrap_or(r.spans.rule);
        if n == MAX_LIMITS_PER_SCOPE {
            errors.push(
                map.error(
                    ErrorKind::RateLimit,
                    span,
                    format!(
                        "more than {MAX_LIMITS_PER_SCOPE} rules with a limit in one file: \
                         the kernel goes on past each by a tail call, and has 33 per packet"
                    ),
                )
                .with_help("merge limits, or limit per tenant with `ceiling`"),
            );
        }
        if let Err(m) = l.check() {
            errors.push(map.error(ErrorKind::RateLimit, span, m));
        } else if r.action == Action::Count {
            errors.push(
                map.error(
                    ErrorKind::RateLimit,
                    span,
                    "a `limit` needs `pass` or `drop`: packets over the rate get the rule's verdict",
                )
                .with_help("count limited packets with the `limited` counter of a drop rule"),
            );
        }
    }
}

/// Every limit check of a parsed ruleset, before rules are expanded.
pub(crate) fn check_limits(
    map: &SourceMap,
    gw: &Gateway,
    tenants: &[Tenant],
    errors: &mut Vec<Diag>,
) {
    check_rules(map, &gw.rules, errors);
    for t in tenants {
        check_rules(map, &t.rules, errors);
        for l in t.ceiling.limits() {
            if let Err(m) = l.check() {
                let span = t.spans.ceiling.unwrap_or(t.spans.name);
                errors.push(map.error(ErrorKind::RateLimit, span, m));
            }
        }
        let quota = gw.quota_for(&t.name);
        if let Some((most, qspan)) = quota.limits {
            let mut n = 0u64;
            if let Some(r) = t.rules.iter().find(|r| {
                n += u64::from(r.limit.is_some());
                n > most
            }) {
                let total = t.rules.iter().filter(|r| r.limit.is_some()).count();
                errors.push(quota_error(
                    map,
                    r.spans.limit.unwrap_or(r.spans.rule),
                    qspan,
                    format!(
                        "tenant `{}` has {total} rules with a `limit`, more than its quota of \
                         {most}; this is the first past it",
                        t.name
                    ),
                ));
            }
        }
        if let Some((cap, qspan)) = quota.ceiling {
            let own = [
                (t.ceiling.packets, cap.packets),
                (t.ceiling.bytes, cap.bytes),
            ];
            for (mine, theirs) in own {
                if let (Some(m), Some(c)) = (mine, theirs)
                    && !m.rate.at_most(&c.rate)
                {
                    let span = t.spans.ceiling.unwrap_or(t.spans.name);
                    errors.push(
                        map.error(
                            ErrorKind::RateLimit,
                            span,
                            format!(
                                "tenant `{}` sets a ceiling of {}, above the {} its operator \
                                 allows",
                                t.name, m.rate, c.rate
                            ),
                        )
                        .with_related(map, qspan, "the operator's ceiling")
                        .with_help("a tenant may only lower its ceiling"),
                    );
                }
            }
        }
    }
}

impl ValidRuleset {
    /// The ceiling that applies to tenant `t`: its own `ceiling`, rate by
    /// rate, else the operator's `quota … ceiling` (validation refused a
    /// tenant's rate above the operator's). Empty: none.
    pub fn ceiling(&self, t: &Tenant) -> Ceiling {
        match self.gateway().quota_for(&t.name).ceiling {
            Some((cap, _)) => t.ceiling.min(&cap),
            None => t.ceiling,
        }
    }

    /// Entries of the per-source bucket map: gateway.fg's `meter-size`, or
    /// [`crate::limit::DEFAULT_METER_SIZE`].
    pub fn meter_size(&self) -> u64 {
        self.gateway()
            .meter_size
            .map_or(crate::limit::DEFAULT_METER_SIZE, |(n, _)| n)
    }
}
