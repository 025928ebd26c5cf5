//! Rate limits (`limit rate over …`, tenant `ceiling`) are defined in the
//! ruleset crate and enforced by the reference and userspace classifiers;
//! the XDP program of this build does not enforce them yet. Loading a rule
//! with a limit would make the kernel skip it (it does not know the table
//! actions `LIMIT_PASS` / `LIMIT_DROP`), so a ruleset that uses them is
//! refused before anything changes, with an error at each limit.

use fluxgate_ruleset::{Diag, ErrorKind, Errors, ValidRuleset};

const WHY: &str = "rate limits are not enforced by this build's XDP program yet; \
                   refusing rather than loading a rule the kernel would skip";

/// The errors of a ruleset the kernel cannot enforce (none: `Ok`).
pub(crate) fn kernel_supports(rs: &ValidRuleset) -> Result<(), Errors> {
    let map = &rs.ruleset().sources;
    let mut errors: Vec<Diag> = Vec::new();
    let rules = rs
        .gateway()
        .rules
        .iter()
        .chain(rs.tenants().iter().flat_map(|t| t.rules.iter()));
    for r in rules.filter(|r| r.limit.is_some()) {
        let span = r.spans.limit.unwrap_or(r.spans.rule);
        errors.push(map.error(ErrorKind::RateLimit, span, WHY));
    }
    for t in rs.tenants() {
        if !rs.ceiling(t).is_empty() {
            let span = t.spans.ceiling.unwrap_or(t.spans.name);
            errors.push(map.error(ErrorKind::RateLimit, span, WHY));
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
