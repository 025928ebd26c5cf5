//! The parts of a change that need no kernel: `check` (parse, validate,
//! compile, guards against the reference) and `diff` (what would change,
//! per tenant).

use fluxgate_ruleset::{
    CompileOptions, Config, Rule, Ruleset, compile_with,
    diff::{ScopeDiff, diff},
    preflight, validate,
};
use serde::Serialize;

use crate::{ControlError, RulesetSource, host};

/// What [`check`] found.
#[derive(Clone, Debug, Serialize)]
pub struct Checked {
    /// Tenants.
    pub tenants: usize,
    /// Rules (gateway and tenants).
    pub rules: usize,
    /// Guard packets, all of which get their declared verdict.
    pub guards: usize,
    /// Kernel memory the tables would take, bytes.
    pub table_bytes: u64,
    /// Validation warnings and unguarded tenants, rendered.
    pub warnings: Vec<String>,
}

/// Parses, validates and compiles `source`, then runs every guard through
/// the reference classifier. No kernel, no root. A guard that does not get
/// its declared verdict is an error ([`ControlError::Preflight`]) naming the
/// guard and the rule that decided it.
pub fn check(source: &RulesetSource) -> Result<Checked, ControlError> {
    let _span = tracing::info_span!("check", source = %source.label().display()).entered();
    let files = source.read()?;
    let rs = validate(Ruleset::parse_files(&files)?, &Config::default())?;
    // A ruleset is often checked away from its gateway, in CI: guards are
    // judged by the reference, which compares names, and the tables come out
    // the same size with a stand-in for an interface this host lacks.
    // `apply` still refuses a name the gateway lacks.
    let (interfaces, absent) = host::with_stand_ins(&rs, host::interfaces());
    let image = compile_with(
        &rs,
        &CompileOptions {
            interfaces,
            ..Default::default()
        },
    )?;
    // Table bytes per tenant are only known once compiled.
    fluxgate_ruleset::check_table_quotas(&rs, &image)?;
    let guards = preflight::probes(&rs)
        .iter()
        .filter(|p| p.guard.is_some())
        .count();
    let failing = preflight::failing_guards(&rs);
    if !failing.is_empty() {
        let lines: Vec<String> = failing.iter().map(|f| format!("  {f}")).collect();
        return Err(ControlError::Preflight(lines.join("\n")));
    }
    let mut warnings: Vec<String> = rs.warnings().iter().map(|d| d.render()).collect();
    warnings.extend(preflight::unguarded_warning(&rs));
    warnings.extend(absent.iter().map(|name| {
        format!(
            "warning: no interface named `{name}` on this host: checked as some interface; \
             `apply` needs it where the ruleset goes live"
        )
    }));
    Ok(Checked {
        tenants: rs.tenants().len(),
        rules: rs.gateway().rules.len() + rs.tenants().iter().map(|t| t.rules.len()).sum::<usize>(),
        guards,
        table_bytes: image.cells() as u64 * 128,
        warnings,
    })
}

/// One rule in a diff.
#[derive(Clone, Debug, Serialize)]
pub struct DiffRule {
    /// Position (new position for added / changed / moved rules, old for removed).
    pub position: u32,
    /// Old position, for moved rules.
    pub from: Option<u32>,
    /// The rule.
    pub rule: String,
}

/// What changes in one scope.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScopeChanges {
    /// `gateway` or the tenant name.
    pub scope: String,
    /// `added`, `removed` or `changed`.
    pub status: String,
    /// Default verdict change, `old -> new`.
    pub default: Option<String>,
    /// Prefixes changed (tenants).
    pub prefixes_changed: bool,
    /// Named sets changed.
    pub sets_changed: bool,
    /// Rules added.
    pub added: Vec<DiffRule>,
    /// Rules removed.
    pub removed: Vec<DiffRule>,
    /// Rules whose match or action changed at the same position.
    pub changed: Vec<DiffRule>,
    /// Rules that moved.
    pub moved: Vec<DiffRule>,
}

/// What applying a directory would change, per scope.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffReport {
    /// Scopes that change.
    pub changes: Vec<ScopeChanges>,
    /// Tenants that stay as they are.
    pub untouched: Vec<String>,
}

/// Compares `live` (files of the live ruleset; empty: nothing loaded) with
/// `source`.
pub fn diff_files(
    live: &[(String, String)],
    source: &RulesetSource,
) -> Result<DiffReport, ControlError> {
    let new = Ruleset::parse_files(&source.read()?)?;
    let old = if live.is_empty() {
        Ruleset::default()
    } else {
        Ruleset::parse_files(live)?
    };
    let d = diff(&old, &new);
    let rules = |scope: Option<&str>, rs: &Ruleset| -> Vec<Rule> {
        match scope {
            None => rs.gateway.rules.clone(),
            Some(t) => rs
                .tenants
                .iter()
                .find(|x| x.name == t)
                .map(|t| t.rules.clone())
                .unwrap_or_default(),
        }
    };
    let scope_changes = |name: &str, scope: Option<&str>, sd: &ScopeDiff| -> ScopeChanges {
        let (o, n) = (rules(scope, &old), rules(scope, &new));
        let text = |rs: &[Rule], p: u32| {
            rs.get(p.saturating_sub(1) as usize)
                .map(|r| r.to_string())
                .unwrap_or_default()
        };
        let at = |rs: &[Rule], position: u32, from: Option<u32>| DiffRule {
            position,
            from,
            rule: text(rs, position),
        };
        ScopeChanges {
            scope: name.to_owned(),
            status: "changed".into(),
            added: sd.added.iter().map(|r| at(&n, r.position, None)).collect(),
            removed: sd
                .removed
                .iter()
                .map(|r| at(&o, r.position, None))
                .collect(),
            changed: sd
                .changed
                .iter()
                .map(|m| at(&n, m.new, Some(m.old)))
                .collect(),
            moved: sd
                .reordered
                .iter()
                .map(|m| at(&n, m.new, Some(m.old)))
                .collect(),
            ..ScopeChanges::default()
        }
    };
    let mut report = DiffReport {
        untouched: d.tenants_untouched.clone(),
        ..DiffReport::default()
    };
    let gw_changed = d.gateway_default_changed.is_some()
        || d.gateway_sets_changed
        || !d.gateway_rules.is_empty();
    if gw_changed {
        let mut c = scope_changes("gateway", None, &d.gateway_rules);
        c.default = d
            .gateway_default_changed
            .map(|(a, b)| format!("{a} -> {b}"));
        c.sets_changed = d.gateway_sets_changed;
        report.changes.push(c);
    }
    for t in &d.tenants_added {
        report.changes.push(ScopeChanges {
            scope: t.clone(),
            status: "added".into(),
            ..ScopeChanges::default()
        });
    }
    for t in &d.tenants_removed {
        report.changes.push(ScopeChanges {
            scope: t.clone(),
            status: "removed".into(),
            ..ScopeChanges::default()
        });
    }
    for td in &d.tenants_changed {
        let mut c = scope_changes(&td.name, Some(&td.name), &td.rules);
        c.default = td.default_changed.map(|(a, b)| format!("{a} -> {b}"));
        c.prefixes_changed = td.prefixes_changed;
        c.sets_changed = td.sets_changed;
        report.changes.push(c);
    }
    Ok(report)
}

impl std::fmt::Display for DiffReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.changes.is_empty() {
            writeln!(f, "no changes")?;
        }
        for c in &self.changes {
            writeln!(f, "{} ({}):", c.scope, c.status)?;
            if let Some(d) = &c.default {
                writeln!(f, "  default {d}")?;
            }
            if c.prefixes_changed {
                writeln!(f, "  prefixes changed")?;
            }
            if c.sets_changed {
                writeln!(f, "  sets changed")?;
            }
            for r in &c.removed {
                writeln!(f, "  - #{:<4} {}", r.position, r.rule)?;
            }
            for r in &c.added {
                writeln!(f, "  + #{:<4} {}", r.position, r.rule)?;
            }
            for r in &c.changed {
                writeln!(f, "  ~ #{:<4} {}", r.position, r.rule)?;
            }
            for r in &c.moved {
                writeln!(
                    f,
                    "  ↕ #{:<4} {} (was #{})",
                    r.position,
                    r.rule,
                    r.from.unwrap_or(0)
                )?;
            }
        }
        if !self.untouched.is_empty() {
            writeln!(f, "unchanged: {}", self.untouched.join(", "))?;
        }
        Ok(())
    }
}
