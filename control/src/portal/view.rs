//! The typed pages: what one tenant may see of one gateway, and the
//! operator's list of every tenant. Built from the library's status,
//! counters, journal and outcomes log at each request.

use std::{os::unix::fs::MetadataExt, path::Path};

use serde::Serialize;

use super::{drops::DropSamples, words};
use crate::{
    ControlError, Gateway, Interface,
    outcomes::{Outcome, OutcomeKind},
};

/// Entries of history shown per page, newest first.
pub const HISTORY: usize = 50;
/// A rollback this recent (seconds) is the gateway's state.
const RECENT_ROLLBACK: u64 = 15 * 60;

/// The state of the gateway (one interface) as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayState {
    /// No change running, nothing rolled back lately.
    Healthy,
    /// A change (an apply, a canary's watch, a rollback) holds the lock now.
    ChangeInProgress,
    /// A change was rolled back in the last 15 minutes.
    RolledBackRecently,
    /// An apply died half-way; the operator must finish or discard it.
    Interrupted,
}

impl GatewayState {
    /// In words, a sentence.
    pub fn words(self) -> &'static str {
        match self {
            GatewayState::Healthy => "The gateway is healthy.",
            GatewayState::ChangeInProgress => "A change is in progress on the gateway.",
            GatewayState::RolledBackRecently => {
                "A change was rolled back on the gateway in the last 15 minutes."
            }
            GatewayState::Interrupted => {
                "An interrupted change is waiting for the operator; the live rules are serving."
            }
        }
    }
}

/// One line of history.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryLine {
    /// Number in the interface's outcomes log.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The generation concerned.
    pub generation: u64,
    /// What happened.
    pub outcome: OutcomeKind,
    /// Who made the change.
    pub who: String,
    /// The reason given.
    pub reason: String,
    /// In plain words.
    pub text: String,
    /// Why (diagnostics, the regression), when the reader may see it.
    pub details: Vec<String>,
}

/// One live rule (or the default action) with its counters.
#[derive(Clone, Debug, Serialize)]
pub struct RuleLine {
    /// 1-based position, 0 for the default action.
    pub position: u32,
    /// The rule (canonical form) or `default pass|drop`.
    pub text: String,
    /// Packets it decided.
    pub packets: u64,
    /// Bytes it decided.
    pub bytes: u64,
}

/// One sampled dropped packet.
#[derive(Clone, Debug, Serialize)]
pub struct DropLine {
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// Length on the wire.
    pub len: u32,
    /// The rule that dropped it: `rule 2`, `default`, or `gateway rule 1`.
    pub rule: String,
}

/// One tenant on one interface.
#[derive(Clone, Debug, Serialize)]
pub struct TenantOnInterface {
    /// Interface.
    pub iface: String,
    /// The generation of the tenant's live rules.
    pub generation: u64,
    /// When that generation was made (seconds since the epoch), if known.
    pub since: Option<u64>,
    /// The gateway's state.
    pub state: GatewayState,
    /// Packets passed.
    pub passed: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// The live rules, in order, then the default.
    pub rules: Vec<RuleLine>,
    /// The tenant's live file as written.
    pub file: Option<String>,
    /// Changes that concern the tenant, newest first.
    pub history: Vec<HistoryLine>,
    /// The last sampled drops, newest first.
    pub drops: Vec<DropLine>,
}

/// What one tenant sees: every interface it is live on.
#[derive(Clone, Debug, Serialize)]
pub struct TenantPage {
    /// The tenant.
    pub tenant: String,
    /// One entry per interface.
    pub interfaces: Vec<TenantOnInterface>,
}

impl TenantPage {
    /// Whether a change is in progress on one of its interfaces (the page
    /// refreshes itself then).
    pub fn in_progress(&self) -> bool {
        self.interfaces
            .iter()
            .any(|i| i.state == GatewayState::ChangeInProgress)
    }
}

/// A tenant in the operator's list.
#[derive(Clone, Debug, Serialize)]
pub struct TenantSummary {
    /// Name.
    pub tenant: String,
    /// Generation of its live rules.
    pub generation: u64,
    /// Packets passed.
    pub passed: u64,
    /// Packets dropped.
    pub dropped: u64,
}

/// One interface in the operator's page.
#[derive(Clone, Debug, Serialize)]
pub struct OperatorInterface {
    /// Interface.
    pub iface: String,
    /// Generation last made live as a whole.
    pub live_generation: u64,
    /// The gateway's state.
    pub state: GatewayState,
    /// Every live tenant.
    pub tenants: Vec<TenantSummary>,
    /// Every outcome, newest first.
    pub history: Vec<HistoryLine>,
}

/// The operator's page.
#[derive(Clone, Debug, Serialize)]
pub struct OperatorPage {
    /// One entry per attached interface.
    pub interfaces: Vec<OperatorInterface>,
}

impl OperatorPage {
    /// Whether a change is in progress somewhere.
    pub fn in_progress(&self) -> bool {
        self.interfaces
            .iter()
            .any(|i| i.state == GatewayState::ChangeInProgress)
    }
}

/// Whether a tenant name is one the ruleset accepts (anything else is never
/// looked up).
pub fn valid_tenant_name(name: &str) -> bool {
    fluxgate_ruleset::check_ident(name).is_ok() && name != "gateway"
}

/// The page of `tenant`, or `None` when it is live on no interface (or its
/// name is not a valid one).
pub fn tenant_page(
    gateway: &Gateway,
    tenant: &str,
    drops: Option<&DropSamples>,
) -> Result<Option<TenantPage>, ControlError> {
    if !valid_tenant_name(tenant) {
        return Ok(None);
    }
    let mut interfaces = Vec::new();
    for iface in gateway.interfaces()? {
        let mut it = gateway.open_read(Some(&iface))?;
        let Some(live) = it.state().live.tenants.get(tenant).copied() else {
            continue;
        };
        let all = it.outcomes(None)?;
        let state = gateway_state(&it, &all)?;
        let outcomes: Vec<Outcome> = all.into_iter().filter(|o| o.concerns(tenant)).collect();
        let stats = it.tenant_stats(Some(tenant))?;
        let (passed, dropped, rules) = stats
            .into_iter()
            .find(|s| s.tenant == tenant)
            .map(|mut s| {
                // Rules in order, the default action last.
                s.rules.sort_by_key(|r| (r.position == 0, r.position));
                let rules = s
                    .rules
                    .into_iter()
                    .map(|r| RuleLine {
                        position: r.position,
                        text: r.text,
                        packets: r.packets,
                        bytes: r.bytes,
                    })
                    .collect();
                (s.passed, s.dropped, rules)
            })
            .unwrap_or_default();
        let file_name = format!("{tenant}.fg");
        let file = it
            .store()
            .files(live.table)?
            .into_iter()
            .find(|(p, _)| Path::new(p).file_name().and_then(|n| n.to_str()) == Some(&file_name))
            .map(|(_, text)| text);
        // When the tenant's rules last changed (applied, rolled back), else
        // when the generation of its table was made.
        let last_change = outcomes
            .iter()
            .rev()
            .find(|o| {
                o.tenants.iter().any(|t| t == tenant)
                    && matches!(
                        o.kind,
                        OutcomeKind::Applied
                            | OutcomeKind::RolledBack
                            | OutcomeKind::CanaryRolledBack
                    )
            })
            .map(|o| o.at);
        let since = match last_change {
            Some(at) => Some(at),
            None => it.store().record(live.table)?.map(|r| r.created),
        };
        let drops = drops
            .map(|d| d.recent(&iface, tenant))
            .unwrap_or_default()
            .into_iter()
            .rev()
            .map(|c| DropLine {
                time: c.time,
                len: c.len,
                rule: rule_words(&c.dropped_by, tenant),
            })
            .collect();
        interfaces.push(TenantOnInterface {
            iface,
            generation: live.table,
            since,
            state,
            passed,
            dropped,
            rules,
            file,
            history: history(&outcomes, Some(tenant)),
            drops,
        });
    }
    Ok((!interfaces.is_empty()).then(|| TenantPage {
        tenant: tenant.to_owned(),
        interfaces,
    }))
}

/// The operator's page: every interface, every tenant, every outcome.
pub fn operator_page(gateway: &Gateway) -> Result<OperatorPage, ControlError> {
    let mut interfaces = Vec::new();
    for iface in gateway.interfaces()? {
        let mut it = gateway.open_read(Some(&iface))?;
        let outcomes = it.outcomes(None)?;
        let state = gateway_state(&it, &outcomes)?;
        let live = it.state().live.clone();
        let tenants = it
            .tenant_stats(None)?
            .into_iter()
            .filter_map(|s| {
                let g = live.tenants.get(&s.tenant)?.table;
                Some(TenantSummary {
                    tenant: s.tenant,
                    generation: g,
                    passed: s.passed,
                    dropped: s.dropped,
                })
            })
            .collect();
        interfaces.push(OperatorInterface {
            iface,
            live_generation: it.state().live_generation,
            state,
            tenants,
            history: history(&outcomes, None),
        });
    }
    Ok(OperatorPage { interfaces })
}

/// `acme#2` → `rule 2`, `acme default` → `default`, `gateway#1` → `gateway
/// rule 1` (for `tenant`'s drops).
fn rule_words(dropped_by: &str, tenant: &str) -> String {
    if let Some(n) = dropped_by
        .strip_prefix(tenant)
        .and_then(|r| r.strip_prefix('#'))
    {
        return format!("rule {n}");
    }
    if dropped_by.strip_prefix(tenant) == Some(" default") {
        return "default".into();
    }
    if let Some(n) = dropped_by.strip_prefix("gateway#") {
        return format!("gateway rule {n}");
    }
    if dropped_by.starts_with("counter slot ") {
        // A rule newer than the sampler's view of the interface.
        return "a rule of a newer generation".into();
    }
    "the gateway's rules".into()
}

/// The newest [`HISTORY`] outcomes, newest first, in words for `viewer`.
fn history(outcomes: &[Outcome], viewer: Option<&str>) -> Vec<HistoryLine> {
    outcomes
        .iter()
        .rev()
        .take(HISTORY)
        .map(|o| {
            let (text, details) = words::describe(o, viewer);
            HistoryLine {
                seq: o.seq,
                at: o.at,
                generation: o.generation,
                outcome: o.kind,
                who: o.who.clone(),
                reason: o.reason.clone(),
                text,
                details,
            }
        })
        .collect()
}

/// The state of `it`'s gateway, given its `outcomes`: a change holds the
/// lock, an apply was interrupted, a rollback was recent, or healthy.
pub fn gateway_state(it: &Interface, outcomes: &[Outcome]) -> Result<GatewayState, ControlError> {
    if lock_held(&it.store().dir().join("lock")) {
        return Ok(GatewayState::ChangeInProgress);
    }
    if !it.interrupted()?.is_empty() {
        return Ok(GatewayState::Interrupted);
    }
    let last = outcomes.iter().rev().find(|o| {
        matches!(
            o.kind,
            OutcomeKind::Applied | OutcomeKind::RolledBack | OutcomeKind::CanaryRolledBack
        )
    });
    let now = crate::host::now();
    Ok(match last {
        Some(o) if o.kind != OutcomeKind::Applied && now.saturating_sub(o.at) < RECENT_ROLLBACK => {
            GatewayState::RolledBackRecently
        }
        _ => GatewayState::Healthy,
    })
}

/// Whether someone holds a `flock` on `path`, read from `/proc/locks`
/// (taking the lock to find out would make a change starting meanwhile
/// fail as busy).
fn lock_held(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return false;
    };
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    locks.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.nth(1) == Some("FLOCK") && l.split_whitespace().any(|w| w == want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_name_the_tenants_rule_in_words() {
        assert_eq!(rule_words("acme#2", "acme"), "rule 2");
        assert_eq!(rule_words("acme default", "acme"), "default");
        assert_eq!(rule_words("gateway#1", "acme"), "gateway rule 1");
        assert_eq!(rule_words("acme2#4", "acme"), "the gateway's rules");
    }

    #[test]
    fn only_ruleset_names_are_tenant_names() {
        assert!(valid_tenant_name("acme"));
        assert!(valid_tenant_name("a-1_b"));
        for bad in [
            "",
            "..",
            "ACME",
            "acme/x",
            "acme%2f",
            "ac\u{0430}me",
            "gateway",
            "acme.json",
        ] {
            assert!(!valid_tenant_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_held_flock_is_seen_and_a_released_one_is_not() {
        let path = std::env::temp_dir().join(format!("fg-lock-{}", std::process::id()));
        let f = std::fs::File::create(&path).expect("create");
        assert!(!lock_held(&path));
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        assert_eq!(rc, 0);
        assert!(lock_held(&path));
        drop(f);
        assert!(!lock_held(&path));
        let _ = std::fs::remove_file(&path);
    }
}
