//! Counters of an interface: outcomes and malformed reasons, and per tenant
//! and per rule hits of the live ruleset.

use fluxgate_dataplane::{CountersReport, SourceBuckets, Tables};
use fluxgate_ruleset::Scope;
use serde::Serialize;

use crate::{ControlError, Interface};

/// Hits of one rule or default.
#[derive(Clone, Debug, Serialize)]
pub struct RuleHits {
    /// `gateway` or tenant.
    pub scope: String,
    /// 1-based position, 0 for the default action.
    pub position: u32,
    /// Rule id (hex) for rules.
    pub rule: Option<String>,
    /// The rule text.
    pub text: String,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
    /// For a rule with a `limit`: the packets over it (the rule decides only
    /// for those, so this is [`RuleHits::packets`]); absent for other rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited: Option<u64>,
}

/// Whether a rule's canonical text has a `limit` (it decides only for the
/// packets over it).
pub fn is_limited(text: &str) -> bool {
    text.contains(" limit rate over ")
        || text.starts_with("limit rate over ")
        || text.starts_with("ceiling ")
}

/// Per-tenant totals and per-rule hits of a loaded interface.
#[derive(Clone, Debug, Serialize)]
pub struct TenantStats {
    /// Tenant name, or `gateway` for packets of no tenant.
    pub tenant: String,
    /// Packets passed.
    pub passed: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Bytes passed.
    pub passed_bytes: u64,
    /// Bytes dropped.
    pub dropped_bytes: u64,
    /// Rules of this scope (and its default), in order.
    pub rules: Vec<RuleHits>,
}

/// Counters of one attached interface.
#[derive(Clone, Debug, Serialize)]
pub struct InterfaceStats {
    /// Interface name.
    pub iface: String,
    /// Outcome and malformed-reason counters.
    pub counters: CountersReport,
    /// Per tenant (and `gateway`) and per rule hits of the live ruleset.
    pub tenants: Vec<TenantStats>,
    /// The LRU map of per-source limit buckets: capacity, buckets present,
    /// inserted and evicted (inserted − present: sources forgotten to make
    /// room, whose next packet finds a full bucket).
    pub source_buckets: SourceBuckets,
}

/// `stats` of every interface asked for.
#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    /// One entry per interface.
    pub interfaces: Vec<InterfaceStats>,
}

impl Interface {
    /// Outcome counters, and per-tenant and per-rule hits (only `tenant`'s
    /// when given; `gateway`: the global rules and packets of no tenant).
    pub fn stats(&mut self, tenant: Option<&str>) -> Result<InterfaceStats, ControlError> {
        let counters = self.pinned.counters()?.report();
        Ok(InterfaceStats {
            iface: self.name().to_owned(),
            counters,
            tenants: self.tenant_stats(tenant)?,
            source_buckets: self.source_buckets()?,
        })
    }

    /// The LRU map of per-source limit buckets, read now (one pass over its
    /// keys: at most its capacity).
    pub fn source_buckets(&mut self) -> Result<SourceBuckets, ControlError> {
        Ok(fluxgate_dataplane::source_buckets(&mut self.pinned)?)
    }

    /// Per-tenant and per-rule counters (only `tenant` when given).
    pub fn tenant_stats(&mut self, tenant: Option<&str>) -> Result<Vec<TenantStats>, ControlError> {
        let live = self.state.live.clone();
        if live.global.is_none() {
            return Ok(Vec::new());
        }
        if let Some(t) = tenant
            && t != "gateway"
        {
            self.live_tenant_slot(t)?;
        }
        let slots = self.live_counters()?;
        let scopes: Vec<(Scope, Option<u32>)> = std::iter::once((Scope::Gateway, None))
            .chain(
                live.tenants
                    .iter()
                    .map(|(name, t)| (Scope::Tenant(name.clone()), Some(t.slot))),
            )
            .filter(|(scope, _)| tenant.is_none_or(|t| t == scope.as_str()))
            .collect();
        // Two reads in all, whatever the number of tenants and rules: every
        // rule counter at once, every tenant's totals at once.
        let span = slots.iter().map(|s| s.slot + 1).max().unwrap_or(0);
        let rule_counts = self.pinned.rule_counters(0, span)?;
        let indices: Vec<Option<u32>> = scopes.iter().map(|(_, i)| *i).collect();
        let totals = self.pinned.tenant_counters_of(&indices)?;
        let mut rules_of: std::collections::HashMap<&Scope, Vec<RuleHits>> =
            std::collections::HashMap::new();
        for s in &slots {
            let c = rule_counts
                .get(s.slot as usize)
                .copied()
                .unwrap_or_default();
            rules_of.entry(&s.scope).or_default().push(RuleHits {
                scope: s.scope.to_string(),
                position: s.position,
                rule: s.rule.clone(),
                text: s.text.clone(),
                packets: c.packets,
                bytes: c.bytes,
                limited: is_limited(&s.text).then_some(c.packets),
            });
        }
        let mut out = Vec::with_capacity(scopes.len());
        for ((scope, _), (passed, dropped)) in scopes.iter().zip(totals) {
            let mut rules = rules_of.remove(scope).unwrap_or_default();
            rules.sort_by_key(|r| r.position);
            out.push(TenantStats {
                tenant: scope.to_string(),
                passed: passed.packets,
                dropped: dropped.packets,
                passed_bytes: passed.bytes,
                dropped_bytes: dropped.bytes,
                rules,
            });
        }
        Ok(out)
    }
}
