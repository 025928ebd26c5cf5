//! The kernel half of preflight: guards and witnesses (chosen by
//! [`fluxgate_ruleset::preflight`]) run through tables in the kernel with
//! `BPF_PROG_TEST_RUN`, each answer compared with the reference classifier's
//! verdict, deciding counter slot and tenant.

use std::collections::HashMap;

use fluxgate_dataplane::{Probe, frame::FrameSpec};
use fluxgate_ruleset::{
    Image, RuleId, Scope, ValidRuleset, Verdict, preflight::explain_decision, reference,
};
use serde::Serialize;

use crate::{ControlError, Interface, store::SlotInfo};

/// Most mismatches a report lists (the count says how many more).
const REPORTED: usize = 20;

/// One packet the kernel and the reference disagree on (or a guard the
/// reference does not give its declared verdict).
#[derive(Clone, Debug, Serialize)]
pub struct Mismatch {
    /// The packet.
    pub packet: String,
    /// Tenant (or `gateway`) whose guard or witness it is.
    pub scope: String,
    /// For a guard: `file:line:col must pass|drop`.
    pub guard: Option<String>,
    /// What the reference decides, and by which rule.
    pub expected: String,
    /// What the kernel decided.
    pub got: String,
}

/// Rule → counter slot and tenant name → tenant slot, for comparing
/// reference decisions with kernel ones.
pub(crate) struct SlotIndex {
    counters: HashMap<(Scope, Option<RuleId>), u32>,
    tenants: HashMap<String, u32>,
}

impl SlotIndex {
    fn slot(&self, scope: &Scope, rule: Option<RuleId>) -> Option<u32> {
        self.counters.get(&(scope.clone(), rule)).copied()
    }

    /// The slots recorded for a generation, and the live tenants' slots.
    pub(crate) fn recorded(slots: &[SlotInfo], tenants: HashMap<String, u32>) -> SlotIndex {
        SlotIndex {
            counters: slots
                .iter()
                .map(|s| ((s.scope.clone(), s.rule_id()), s.slot))
                .collect(),
            tenants,
        }
    }
}

impl SlotIndex {
    /// The slots of a compiled image, and those of the tenants it reused
    /// (their live tables' counters, from the plan).
    pub(crate) fn of(image: &Image, plan: &fluxgate_ruleset::SlotPlan) -> SlotIndex {
        let reused: std::collections::HashSet<&str> =
            image.reused.iter().map(|(n, _)| n.as_str()).collect();
        let mut counters: HashMap<(Scope, Option<RuleId>), u32> = plan
            .counters
            .iter()
            .filter(|((scope, _), _)| match scope {
                Scope::Tenant(t) => reused.contains(t.as_str()),
                Scope::Gateway => false,
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        counters.extend(
            image
                .counters
                .iter()
                .map(|c| ((c.scope.clone(), c.rule), c.slot)),
        );
        SlotIndex {
            counters,
            tenants: image
                .tenants
                .iter()
                .map(|t| (t.name.clone(), t.index))
                .chain(image.reused.iter().cloned())
                .collect(),
        }
    }
}

/// Runs every guard and witness of `rs` through `probe` and the reference;
/// returns how many ran and the ones that failed: a guard fails when the
/// reference does not give it its declared verdict, and any packet fails when
/// the kernel's verdict, deciding counter slot or tenant differ from the
/// reference's. The tenant is compared by slot when `index` knows tenant
/// slots, else by whether one was found.
pub(crate) fn run(
    probe: &Probe<'_>,
    rs: &ValidRuleset,
    index: &SlotIndex,
    probes: &[fluxgate_ruleset::preflight::Probe],
) -> Result<(usize, Vec<Mismatch>), ControlError> {
    let mut mismatches = Vec::new();
    for c in probes {
        let p = &c.packet;
        let Some(frame) = FrameSpec::from_header(p) else {
            continue;
        };
        let want = reference::classify(rs, p);
        let got = probe.run(&frame.build())?;
        let want_scope = match &want.rule {
            Some(r) => r.scope.clone(),
            None => want
                .tenant_name
                .clone()
                .map_or(Scope::Gateway, Scope::Tenant),
        };
        // Neighbour discovery passes in the dispatcher: no table decides it.
        let want_slot = if want.neighbor_discovery {
            None
        } else {
            index.slot(&want_scope, want.rule.as_ref().map(|r| r.id))
        };
        let tenant_ok = match (&want.tenant_name, index.tenants.is_empty()) {
            (Some(name), false) => got.tenant == index.tenants.get(name).copied(),
            (name, _) => got.tenant.is_some() == name.is_some(),
        };
        let kernel_ok =
            got.verdict == xdp_action(want.verdict) && got.decided == want_slot && tenant_ok;
        let guard_ok = c.guard.as_ref().is_none_or(|(v, _)| *v == want.verdict);
        if kernel_ok && guard_ok {
            continue;
        }
        let got_verdict = if got.verdict == fluxgate_common::xdp::DROP {
            Verdict::Drop
        } else {
            Verdict::Pass
        };
        mismatches.push(Mismatch {
            packet: p.to_string(),
            scope: c.scope.to_string(),
            guard: c.guard.as_ref().map(|(v, at)| format!("{at} must {v}")),
            expected: explain_decision(rs, &want),
            got: format!(
                "{got_verdict} by counter slot {} (tenant slot {})",
                got.decided.map_or("none".into(), |s| s.to_string()),
                got.tenant.map_or("none".into(), |s| s.to_string())
            ),
        });
    }
    Ok((probes.len(), mismatches))
}

/// The XDP action of a verdict.
pub(crate) fn xdp_action(v: Verdict) -> u32 {
    match v {
        Verdict::Pass => fluxgate_common::xdp::PASS,
        Verdict::Drop => fluxgate_common::xdp::DROP,
    }
}

/// The mismatches for people: the first [`REPORTED`], then a count.
pub(crate) fn report(mismatches: &[Mismatch]) -> String {
    let mut out: Vec<String> = mismatches
        .iter()
        .take(REPORTED)
        .map(|m| match &m.guard {
            Some(g) => format!(
                "  guard {g}: `{}` gets {}; kernel: {}",
                m.packet, m.expected, m.got
            ),
            None => format!(
                "  witness of {}: `{}`: reference {}, kernel {}",
                m.scope, m.packet, m.expected, m.got
            ),
        })
        .collect();
    if mismatches.len() > REPORTED {
        out.push(format!("  … and {} more", mismatches.len() - REPORTED));
    }
    out.join("\n")
}

impl Interface {
    /// Every guard and witness of the live ruleset through classifier
    /// `version` and the live tables in the kernel; the ones that disagree.
    pub(crate) fn live_mismatches(&self, version: u32) -> Result<Vec<Mismatch>, ControlError> {
        let Some((rs, slots)) = self.live_ruleset()? else {
            return Ok(Vec::new());
        };
        let tenants = self
            .state
            .live
            .tenants
            .iter()
            .map(|(n, t)| (n.clone(), t.slot))
            .collect();
        let index = SlotIndex::recorded(&slots, tenants);
        let probe = self.pinned.probe(version)?;
        let probes = fluxgate_ruleset::preflight::probes(&rs);
        Ok(run(&probe, &rs, &index, &probes)?.1)
    }

    /// Re-runs the live ruleset's guards and witnesses through the live
    /// tables (the version serving packets of no tenant): the canary's probe.
    pub fn live_preflight(&self) -> Result<Vec<Mismatch>, ControlError> {
        self.live_mismatches(self.pinned.version_of(None)?)
    }
}
