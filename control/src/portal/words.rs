//! Outcomes in plain words, for a tenant (who must learn nothing about other
//! tenants) or for the operator.

use crate::outcomes::{Outcome, OutcomeKind};

/// `2026-12-03 10:42 UTC` for seconds since the epoch.
pub fn utc_minute(secs: u64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm): no libc, no time zone.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// `rule 3`, `rules 3 and 5`, `rules 2, 3 and 7`.
fn rules_words(positions: &[u32]) -> String {
    let n: Vec<String> = positions.iter().map(u32::to_string).collect();
    match n.as_slice() {
        [] => String::new(),
        [one] => format!("rule {one}"),
        [init @ .., last] => format!("rules {} and {last}", init.join(", ")),
    }
}

/// A canary's regression of the tenant itself, as it reads it
/// (`pass ratio fell …` → `your pass rate fell …`).
fn regression_words(why: &str) -> String {
    let why = why.replace("pass ratio", "your pass rate");
    match why.strip_prefix("traffic fell") {
        Some(rest) => format!("your traffic fell{rest}"),
        None => why,
    }
}

/// One outcome in plain words and its details, as `viewer` may read it
/// (`None`: the operator, who reads everything).
pub fn describe(o: &Outcome, viewer: Option<&str>) -> (String, Vec<String>) {
    match viewer {
        Some(t) => describe_for_tenant(o, t),
        None => describe_for_operator(o),
    }
}

fn describe_for_tenant(o: &Outcome, t: &str) -> (String, Vec<String>) {
    let when = utc_minute(o.at);
    let g = o.generation;
    let mine = o.tenants.iter().any(|x| x == t);
    let my_rules = o.rules.get(t).map(|p| rules_words(p)).unwrap_or_default();
    // A canary's regression is told to the tenant it was measured on; any
    // other cause (another tenant's regression, the operator's health
    // command, a cancel) only in general words.
    let own_cause = o.cause_tenant.as_deref() == Some(t);
    let why_text = || match o.why.first() {
        Some(w) if own_cause => regression_words(w),
        Some(_) if o.cause_tenant.is_some() => {
            "the same change made another part of the gateway unhealthy".to_owned()
        }
        _ => "the gateway's health checks failed after it went live".to_owned(),
    };
    let details = |o: &Outcome| -> Vec<String> {
        match o.kind {
            OutcomeKind::CanaryRolledBack if !(mine && own_cause) => Vec::new(),
            OutcomeKind::CanaryRolledBack => o.why.iter().map(|w| regression_words(w)).collect(),
            _ if mine => o.why.clone(),
            _ => Vec::new(),
        }
    };
    let text = match o.kind {
        OutcomeKind::Applied if mine => {
            let what = if my_rules.is_empty() {
                "Your rules changed".to_owned()
            } else {
                format!("Your rules changed ({my_rules} new or edited)")
            };
            let also = if o.gateway_wide {
                ", together with the gateway's own rules"
            } else {
                ""
            };
            format!("{what}{also}: generation {g} went live at {when}.")
        }
        OutcomeKind::Applied => format!(
            "The gateway's own rules changed at {when} (generation {g}); your rules stayed as they were."
        ),
        OutcomeKind::Refused => format!(
            "Your new rules were refused at {when}: nothing of yours changed, your live rules stayed as they were."
        ),
        OutcomeKind::PreflightRefused => format!(
            "Your change (generation {g}) was refused at {when} by the kernel check before it went live: nothing changed."
        ),
        OutcomeKind::CanaryPassed if mine => format!(
            "Your change (generation {g}) was watched after it went live and found healthy at {when}."
        ),
        OutcomeKind::CanaryPassed => format!(
            "A change of the gateway's own rules (generation {g}) was watched and found healthy at {when}."
        ),
        OutcomeKind::CanaryRolledBack if mine => {
            let what = if my_rules.is_empty() {
                format!("Your change (generation {g}) was")
            } else if o.rules.get(t).is_some_and(|p| p.len() == 1) {
                format!("Your {my_rules} (generation {g}) was")
            } else {
                format!("Your {my_rules} (generation {g}) were")
            };
            format!(
                "{what} rolled back at {when} because {}; your previous rules are live again.",
                why_text()
            )
        }
        OutcomeKind::CanaryRolledBack => format!(
            "A change of the gateway's own rules (generation {g}) was rolled back at {when} because {}.",
            why_text()
        ),
        OutcomeKind::RolledBack if o.gateway_wide => format!(
            "The operator rolled the whole gateway back to generation {g} at {when}{}.",
            if mine {
                "; your rules changed with it"
            } else {
                ""
            }
        ),
        OutcomeKind::RolledBack => {
            format!("The operator rolled your rules back to generation {g} at {when}.")
        }
    };
    (text, details(o))
}

fn describe_for_operator(o: &Outcome) -> (String, Vec<String>) {
    let when = utc_minute(o.at);
    let g = o.generation;
    let who: String = match o.tenants.as_slice() {
        [] if o.gateway_wide => "the gateway's rules".into(),
        [] => "the gateway file".into(),
        ts => {
            let names: Vec<&str> = ts.iter().take(8).map(String::as_str).collect();
            let more = ts.len().saturating_sub(8);
            let mut s = format!(
                "tenant{} {}",
                if ts.len() == 1 { "" } else { "s" },
                names.join(", ")
            );
            if more > 0 {
                s.push_str(&format!(" and {more} more"));
            }
            if o.gateway_wide {
                s.push_str(" and the gateway's rules");
            }
            s
        }
    };
    let text = match o.kind {
        OutcomeKind::Applied => format!("Generation {g} went live at {when}: {who}."),
        OutcomeKind::Refused => format!("Refused at {when}: {who} kept the live rules."),
        OutcomeKind::PreflightRefused => {
            format!("Generation {g} refused by the kernel preflight at {when}: {who}.")
        }
        OutcomeKind::CanaryPassed => format!("Canary of generation {g} passed at {when}: {who}."),
        OutcomeKind::CanaryRolledBack => format!(
            "Canary of generation {g} rolled back at {when}: {who}{}.",
            o.cause_tenant
                .as_deref()
                .map(|c| format!(" (regression of tenant {c})"))
                .unwrap_or_default()
        ),
        OutcomeKind::RolledBack => format!("Rolled back to generation {g} at {when}: {who}."),
    };
    (text, o.why.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(kind: OutcomeKind, tenants: &[&str]) -> Outcome {
        Outcome {
            seq: 1,
            at: 1_764_758_520, // 2025-12-03 10:42 UTC
            generation: 5,
            kind,
            tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
            gateway_wide: false,
            who: "alice".into(),
            reason: String::new(),
            why: Vec::new(),
            cause_tenant: None,
            rules: Default::default(),
        }
    }

    #[test]
    fn minutes_are_utc() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(1_764_758_520), "2025-12-03 10:42 UTC");
    }

    #[test]
    fn a_canary_rollback_names_the_rule_time_and_cause() {
        let mut o = outcome(OutcomeKind::CanaryRolledBack, &["acme"]);
        o.rules.insert("acme".into(), vec![3]);
        o.cause_tenant = Some("acme".into());
        o.why = vec!["pass ratio fell from 99% to 39%".into()];
        let (text, details) = describe(&o, Some("acme"));
        assert_eq!(
            text,
            "Your rule 3 (generation 5) was rolled back at 2025-12-03 10:42 UTC because your pass \
             rate fell from 99% to 39%; your previous rules are live again."
        );
        assert_eq!(details, ["your pass rate fell from 99% to 39%"]);
    }

    #[test]
    fn another_tenants_regression_is_not_told() {
        let mut o = outcome(OutcomeKind::CanaryRolledBack, &["acme", "globex"]);
        o.cause_tenant = Some("globex".into());
        o.why = vec!["pass ratio fell from 99% to 1%".into()];
        let (text, details) = describe(&o, Some("acme"));
        assert!(!text.contains("globex") && !text.contains("99%"), "{text}");
        assert!(details.is_empty());
        let (op, _) = describe(&o, None);
        assert!(op.contains("globex"), "{op}");
        // The operator's health command is the operator's business.
        o.cause_tenant = None;
        o.why = vec!["health command `/etc/secret-check` failed".into()];
        let (text, details) = describe(&o, Some("acme"));
        assert!(!text.contains("secret") && details.is_empty(), "{text}");
    }

    #[test]
    fn rules_are_listed_in_words() {
        assert_eq!(rules_words(&[3]), "rule 3");
        assert_eq!(rules_words(&[3, 5]), "rules 3 and 5");
        assert_eq!(rules_words(&[2, 3, 7]), "rules 2, 3 and 7");
    }

    #[test]
    fn every_outcome_has_words_for_its_tenant() {
        for kind in [
            OutcomeKind::Applied,
            OutcomeKind::Refused,
            OutcomeKind::PreflightRefused,
            OutcomeKind::CanaryPassed,
            OutcomeKind::CanaryRolledBack,
            OutcomeKind::RolledBack,
        ] {
            let (text, _) = describe(&outcome(kind, &["acme"]), Some("acme"));
            assert!(text.contains("2025-12-03 10:42 UTC"), "{kind:?}: {text}");
        }
    }
}
