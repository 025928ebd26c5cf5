//! What changed between two generations of a ruleset, by stable [`RuleId`].
//!
//! Pass [`crate::ValidRuleset::ruleset`] of both generations to see edits of named sets
//! as changed rules (a rule's id hashes the set's *name*, its resolved match the
//! contents); raw parsed rulesets show only what was written differently.

use std::collections::HashMap;

use crate::model::{Rule, RuleId, Ruleset, Tenant, Verdict};

/// A rule present in one generation: its id and 1-based position there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleAt {
    /// Stable id.
    pub id: RuleId,
    /// 1-based position.
    pub position: u32,
}

/// A rule present in both generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMove {
    /// Stable id.
    pub id: RuleId,
    /// Position in the old generation.
    pub old: u32,
    /// Position in the new generation.
    pub new: u32,
}

/// Rule changes within one scope (the gateway or one tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeDiff {
    /// Rules only in the new generation (positions in the new one).
    pub added: Vec<RuleAt>,
    /// Rules only in the old generation (positions in the old one).
    pub removed: Vec<RuleAt>,
    /// Same id, different resolved match (a named set they use changed).
    pub changed: Vec<RuleMove>,
    /// Rules kept whose order relative to the other kept rules changed (this changes
    /// which rule wins). Shifts caused only by insertions/removals are not listed.
    pub reordered: Vec<RuleMove>,
}

impl ScopeDiff {
    /// True if nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.reordered.is_empty()
    }
}

/// Changes of one tenant present in both generations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDiff {
    /// Tenant name.
    pub name: String,
    /// The owned prefixes differ.
    pub prefixes_changed: bool,
    /// `(old, new)` default actions, if they differ.
    pub default_changed: Option<(Verdict, Verdict)>,
    /// The tenant's own named sets differ.
    pub sets_changed: bool,
    /// Rule changes.
    pub rules: ScopeDiff,
}

/// Everything that differs between two generations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesetDiff {
    /// `(old, new)` gateway default, if it differs.
    pub gateway_default_changed: Option<(Verdict, Verdict)>,
    /// The gateway's named sets differ.
    pub gateway_sets_changed: bool,
    /// Global rule changes.
    pub gateway_rules: ScopeDiff,
    /// Tenants only in the new generation.
    pub tenants_added: Vec<String>,
    /// Tenants only in the old generation.
    pub tenants_removed: Vec<String>,
    /// Tenants in both that differ.
    pub tenants_changed: Vec<TenantDiff>,
    /// Tenants in both that are identical (their slots need no update).
    pub tenants_untouched: Vec<String>,
}

impl RulesetDiff {
    /// True if the generations are equivalent.
    pub fn is_empty(&self) -> bool {
        self.gateway_default_changed.is_none()
            && !self.gateway_sets_changed
            && self.gateway_rules.is_empty()
            && self.tenants_added.is_empty()
            && self.tenants_removed.is_empty()
            && self.tenants_changed.is_empty()
    }
}

fn scope_diff(old: &[Rule], new: &[Rule]) -> ScopeDiff {
    let old_by: HashMap<RuleId, &Rule> = old.iter().map(|r| (r.id, r)).collect();
    let new_by: HashMap<RuleId, &Rule> = new.iter().map(|r| (r.id, r)).collect();
    let mut d = ScopeDiff::default();
    let at = |r: &Rule| RuleAt {
        id: r.id,
        position: r.position,
    };
    d.removed = old
        .iter()
        .filter(|r| !new_by.contains_key(&r.id))
        .map(at)
        .collect();
    d.added = new
        .iter()
        .filter(|r| !old_by.contains_key(&r.id))
        .map(at)
        .collect();
    let kept_old: Vec<&Rule> = old.iter().filter(|r| new_by.contains_key(&r.id)).collect();
    let kept_new: Vec<&Rule> = new.iter().filter(|r| old_by.contains_key(&r.id)).collect();
    for (a, b) in kept_old.iter().zip(&kept_new) {
        let (Some(o), Some(n)) = (old_by.get(&b.id), new_by.get(&b.id)) else {
            continue;
        };
        if o.matches != n.matches || o.action != n.action {
            d.changed.push(RuleMove {
                id: b.id,
                old: o.position,
                new: n.position,
            });
        }
        if a.id != b.id {
            d.reordered.push(RuleMove {
                id: b.id,
                old: o.position,
                new: n.position,
            });
        }
    }
    d
}

fn tenant_diff(o: &Tenant, n: &Tenant) -> Option<TenantDiff> {
    let d = TenantDiff {
        name: n.name.clone(),
        prefixes_changed: o.prefixes != n.prefixes,
        default_changed: (o.default_action != n.default_action)
            .then_some((o.default_action, n.default_action)),
        sets_changed: o.sets != n.sets,
        rules: scope_diff(&o.rules, &n.rules),
    };
    let same =
        !d.prefixes_changed && d.default_changed.is_none() && !d.sets_changed && d.rules.is_empty();
    (!same).then_some(d)
}

/// Compares two generations.
///
/// ```
/// use fluxgate_ruleset::{Ruleset, diff::diff};
/// let gw = ("gateway.fg", "default drop\n");
/// let old = Ruleset::parse_files(&[gw, ("a.fg", "tenant a\nprefix 10.0.0.0/24\ndefault drop\nproto tcp dport 22 pass\n")])?;
/// let new = Ruleset::parse_files(&[gw, ("a.fg", "tenant a\nprefix 10.0.0.0/24\ndefault drop\nproto tcp dport 443 pass\nproto tcp dport 22 pass\n")])?;
/// let d = diff(&old, &new);
/// assert_eq!(d.tenants_changed[0].rules.added.len(), 1);
/// assert!(d.tenants_changed[0].rules.removed.is_empty());
/// # Ok::<(), fluxgate_ruleset::Errors>(())
/// ```
pub fn diff(old: &Ruleset, new: &Ruleset) -> RulesetDiff {
    let (og, ng) = (&old.gateway, &new.gateway);
    let mut d = RulesetDiff {
        gateway_default_changed: (og.default_action != ng.default_action)
            .then_some((og.default_action, ng.default_action)),
        gateway_sets_changed: og.sets != ng.sets,
        gateway_rules: scope_diff(&og.rules, &ng.rules),
        ..RulesetDiff::default()
    };
    let old_t: HashMap<&str, &Tenant> = old.tenants.iter().map(|t| (t.name.as_str(), t)).collect();
    let new_t: HashMap<&str, &Tenant> = new.tenants.iter().map(|t| (t.name.as_str(), t)).collect();
    for t in &old.tenants {
        if !new_t.contains_key(t.name.as_str()) {
            d.tenants_removed.push(t.name.clone());
        }
    }
    for t in &new.tenants {
        match old_t.get(t.name.as_str()) {
            None => d.tenants_added.push(t.name.clone()),
            Some(o) => match tenant_diff(o, t) {
                Some(td) => d.tenants_changed.push(td),
                None => d.tenants_untouched.push(t.name.clone()),
            },
        }
    }
    d
}
