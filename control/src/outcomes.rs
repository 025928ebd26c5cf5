//! The outcome of every change, per tenant: an append-only, bounded log
//! beside the journal (`<state dir>/<netns|init>/<iface>/outcomes.jsonl`),
//! one JSON object a line, numbered.
//!
//! The journal's records keep what went live; this log also keeps what did
//! *not*: a tenant's file refused by an apply, an apply the kernel preflight
//! refused, a canary rolled back, and manual rollbacks — each with the
//! tenants it concerns and why, in words a tenant can read. The status pages
//! ([`crate::portal`]) and their webhooks read it.
//!
//! Writing an outcome never fails or slows the change it describes: it is
//! one `write(2)` of one line with `O_APPEND` (no fsync; the journal stays
//! the truth for what is live), under the interface's change lock (so lines
//! never interleave and numbers never repeat); an error is logged and
//! dropped. Readers skip a last line still being written. The log is bounded
//! ([`MAX_BYTES`]): when an append would pass it, the newest half is kept
//! (an atomic rewrite).

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    Applied, ApplyOptions, ControlError, Interface, RulesetSource, TableScope,
    host::{now, who},
    store::{Store, TenantRef},
};

/// Largest size of an outcomes log; past it the newest half is kept.
pub const MAX_BYTES: u64 = 4 << 20;
/// Rule positions are recorded per tenant only when a change concerns at
/// most this many tenants (a first load of 10,000 would otherwise write
/// megabytes per line).
pub const MAX_RULE_DIFFS: usize = 64;
/// Lines of diagnostics kept per outcome.
const MAX_WHY: usize = 20;
/// Live manifests up to this many tenants are snapshotted before an apply to
/// tell which rules it changed (a clone of a few microseconds per tenant).
const SNAPSHOT_TENANTS: usize = 1024;

/// What happened to a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeKind {
    /// It went live.
    Applied,
    /// A tenant's new file was refused (invalid or over quota); the tenant
    /// kept its live rules.
    Refused,
    /// The kernel preflight disagreed with the reference: nothing changed.
    PreflightRefused,
    /// A canary watched it and found it healthy.
    CanaryPassed,
    /// A canary watched it, health regressed, and it was rolled back.
    CanaryRolledBack,
    /// An operator rolled back (the whole gateway or one tenant).
    RolledBack,
}

impl OutcomeKind {
    /// `applied`, `preflight refused`, … (as people read it).
    pub fn label(self) -> &'static str {
        match self {
            OutcomeKind::Applied => "applied",
            OutcomeKind::Refused => "refused",
            OutcomeKind::PreflightRefused => "preflight refused",
            OutcomeKind::CanaryPassed => "canary passed",
            OutcomeKind::CanaryRolledBack => "canary rolled back",
            OutcomeKind::RolledBack => "manual rollback",
        }
    }

    /// Whether this outcome changed (or refused to change) what a tenant
    /// has: what webhooks are sent for.
    pub fn notifies(self) -> bool {
        !matches!(self, OutcomeKind::CanaryPassed)
    }
}

/// One line of the outcomes log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Number in this interface's log, from 1, never reused.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The generation concerned (made, refused, rolled back, or rolled back to).
    pub generation: u64,
    /// What happened.
    pub kind: OutcomeKind,
    /// Tenants whose rules this concerns. One refused tenant per outcome:
    /// a tenant never reads another's diagnostics.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// The gateway's own rules (which every tenant's packets meet) changed,
    /// or the whole gateway was rolled back.
    #[serde(default)]
    pub gateway_wide: bool,
    /// Who made the change.
    #[serde(default)]
    pub who: String,
    /// The reason given for the change.
    #[serde(default)]
    pub reason: String,
    /// Why it was refused or rolled back: diagnostics (`file:line:col:
    /// message`), the regression, the packets that disagreed.
    #[serde(default)]
    pub why: Vec<String>,
    /// The tenant whose health regression rolled a canary back (the
    /// regression in [`Outcome::why`] is about that tenant alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause_tenant: Option<String>,
    /// Per tenant, the 1-based positions of its rules this change added or
    /// edited (only when it concerns at most [`MAX_RULE_DIFFS`] tenants).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, Vec<u32>>,
}

impl Outcome {
    fn new(kind: OutcomeKind, generation: u64) -> Outcome {
        Outcome {
            seq: 0,
            at: now(),
            generation,
            kind,
            tenants: Vec::new(),
            gateway_wide: false,
            who: who(),
            reason: String::new(),
            why: Vec::new(),
            cause_tenant: None,
            rules: BTreeMap::new(),
        }
    }

    /// Whether this outcome concerns `tenant`: it is named, or the change
    /// was gateway-wide.
    pub fn concerns(&self, tenant: &str) -> bool {
        self.gateway_wide || self.tenants.iter().any(|t| t == tenant)
    }
}

/// The outcomes log of one interface's store directory.
#[derive(Clone, Debug)]
pub struct OutcomeLog {
    path: PathBuf,
}

impl OutcomeLog {
    /// The log in the store directory `dir`.
    pub fn in_dir(dir: &Path) -> OutcomeLog {
        OutcomeLog {
            path: dir.join("outcomes.jsonl"),
        }
    }

    /// The log of `store`.
    pub fn of(store: &Store) -> OutcomeLog {
        OutcomeLog::in_dir(store.dir())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every outcome, oldest first (empty when none was ever written).
    /// Lines that do not parse (a last line being written) are skipped.
    pub fn read(&self) -> Result<Vec<Outcome>, ControlError> {
        self.read_after(0)
    }

    /// Outcomes numbered after `seq`, oldest first.
    pub fn read_after(&self, seq: u64) -> Result<Vec<Outcome>, ControlError> {
        let text = match fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ControlError::State(format!(
                    "cannot read {}: {e}",
                    self.path.display()
                )));
            }
        };
        Ok(complete_lines(&text)
            .filter_map(|l| serde_json::from_slice::<Outcome>(l).ok())
            .filter(|o| o.seq > seq)
            .collect())
    }

    /// The number of the newest outcome (0: none), read from the end of the
    /// file only.
    pub fn last_seq(&self) -> Result<u64, ControlError> {
        let fail = |e: std::io::Error| {
            ControlError::State(format!("cannot read {}: {e}", self.path.display()))
        };
        let mut f = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(fail(e)),
        };
        let len = f.metadata().map_err(fail)?.len();
        // Lines start `{"seq":N,`: the start of the last complete line is
        // enough. Read backwards until one is found.
        let mut tail: Vec<u8> = Vec::new();
        let mut pos = len;
        while pos > 0 {
            let step = pos.min(64 << 10);
            pos -= step;
            let mut chunk = vec![0u8; step as usize];
            f.seek(SeekFrom::Start(pos)).map_err(fail)?;
            f.read_exact(&mut chunk).map_err(fail)?;
            chunk.extend_from_slice(&tail);
            tail = chunk;
            if let Some(seq) = last_line_seq(&tail, pos == 0) {
                return Ok(seq);
            }
        }
        Ok(0)
    }

    /// Appends `outcome`, numbered after the newest; returns its number.
    pub fn append(&self, outcome: &mut Outcome) -> Result<u64, ControlError> {
        let fail = |e: std::io::Error| {
            ControlError::State(format!("cannot write {}: {e}", self.path.display()))
        };
        outcome.seq = self.last_seq()? + 1;
        outcome.why.truncate(MAX_WHY);
        let mut line =
            serde_json::to_vec(outcome).map_err(|e| ControlError::State(e.to_string()))?;
        line.push(b'\n');
        let size = fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size + line.len() as u64 > MAX_BYTES {
            self.keep_newest_half()?;
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(fail)?;
        f.write_all(&line).map_err(fail)?;
        Ok(outcome.seq)
    }

    /// Rewrites the log with its newest half (by bytes), atomically.
    fn keep_newest_half(&self) -> Result<(), ControlError> {
        let text = fs::read(&self.path).map_err(|e| {
            ControlError::State(format!("cannot read {}: {e}", self.path.display()))
        })?;
        let lines: Vec<&[u8]> = complete_lines(&text).collect();
        let mut kept = 0usize;
        let mut from = lines.len();
        while from > 0 && kept + lines[from - 1].len() < (MAX_BYTES / 2) as usize {
            from -= 1;
            kept += lines[from].len() + 1;
        }
        let mut out = Vec::with_capacity(kept);
        for l in &lines[from..] {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        crate::store::write_bytes(&self.path, &out)
    }
}

/// The complete (newline-ended) lines of `text`.
fn complete_lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    text[..end].split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

/// The `seq` of the last complete line in `tail` (the end of the file), if
/// its start is in `tail` (`at_start`: `tail` is the whole file).
fn last_line_seq(tail: &[u8], at_start: bool) -> Option<u64> {
    let end = tail.iter().rposition(|b| *b == b'\n')?;
    let body = &tail[..end];
    let start = match body.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None if at_start => 0,
        None => return None,
    };
    let line = &body[start..];
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// A ruleset file's name without its directory (the operator's paths are
/// not a tenant's business).
fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

/// The tenant a ruleset file belongs to (`None`: the gateway file).
fn tenant_of_file(path: &str) -> Option<String> {
    if !path.ends_with(".fg") {
        return None;
    }
    TableScope::of_file(path)
        .tenant()
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

impl Interface {
    /// Applies `source` as a new generation (see [`crate::apply`]), and
    /// records its outcome for the tenants it concerns in the outcomes log:
    /// applied, a tenant's file refused, the whole apply refused. Recording
    /// never changes the result.
    pub fn apply(
        &mut self,
        source: &RulesetSource,
        opts: &ApplyOptions,
    ) -> Result<Applied, ControlError> {
        if opts.dry_run {
            return self.apply_unrecorded(source, opts);
        }
        let before = (self.state.live.tenants.len() <= SNAPSHOT_TENANTS)
            .then(|| self.state.live.tenants.clone());
        let result = self.apply_unrecorded(source, opts);
        self.record_apply(before.as_ref(), opts, &result);
        result
    }

    /// The outcomes of this interface, oldest first; with `tenant`, only
    /// those that concern it.
    pub fn outcomes(&self, tenant: Option<&str>) -> Result<Vec<Outcome>, ControlError> {
        let mut all = OutcomeLog::of(&self.store).read()?;
        if let Some(t) = tenant {
            all.retain(|o| o.concerns(t));
        }
        Ok(all)
    }

    /// Appends `outcome` to the log; a failure is logged, never raised.
    pub(crate) fn record_outcome(&self, mut outcome: Outcome) {
        if let Err(e) = OutcomeLog::of(&self.store).append(&mut outcome) {
            tracing::warn!(iface = self.name(), "cannot record a change's outcome: {e}");
        }
    }

    fn record_apply(
        &self,
        before: Option<&BTreeMap<String, TenantRef>>,
        opts: &ApplyOptions,
        result: &Result<Applied, ControlError>,
    ) {
        let generation = self.state.generation + 1;
        let with_reason = |mut o: Outcome| {
            o.reason = opts.reason.clone();
            o
        };
        match result {
            Ok(applied) => {
                if applied.changes_anything() {
                    let mut o = with_reason(Outcome::new(OutcomeKind::Applied, applied.generation));
                    o.tenants = applied
                        .changed
                        .iter()
                        .filter_map(|s| s.tenant().map(str::to_owned))
                        .chain(applied.removed.iter().cloned())
                        .collect();
                    o.gateway_wide = applied.changed.contains(&TableScope::Global);
                    if let Some(before) = before {
                        o.rules = self.changed_rules(before, applied.generation, &o.tenants);
                    }
                    self.record_outcome(o);
                }
                // Refused from the generation that went live without them.
                for r in &applied.refused {
                    let mut o = with_reason(Outcome::new(OutcomeKind::Refused, applied.generation));
                    o.tenants = vec![r.tenant.clone()];
                    o.why = r
                        .diagnostics
                        .iter()
                        .map(|d| match &d.at {
                            Some(p) => {
                                format!(
                                    "{}:{}:{}: {}",
                                    file_name(&p.file),
                                    p.line,
                                    p.col,
                                    d.message
                                )
                            }
                            None => d.message.clone(),
                        })
                        .collect();
                    self.record_outcome(o);
                }
            }
            Err(ControlError::Ruleset(errors)) => {
                // One outcome per tenant blamed; the rest (gateway.fg, no
                // file) gateway-wide, seen by the operator.
                let mut by_tenant: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
                for d in &errors.errors {
                    let line = match d.location.position() {
                        Some((l, c)) => {
                            format!("{}:{l}:{c}: {}", file_name(&d.location.file), d.message)
                        }
                        None => d.message.clone(),
                    };
                    by_tenant
                        .entry(tenant_of_file(&d.location.file))
                        .or_default()
                        .push(line);
                }
                for (tenant, why) in by_tenant {
                    let mut o = with_reason(Outcome::new(OutcomeKind::Refused, generation));
                    o.tenants.extend(tenant);
                    o.why = why;
                    self.record_outcome(o);
                }
            }
            Err(ControlError::Compile(e)) => {
                let mut o = with_reason(Outcome::new(OutcomeKind::Refused, generation));
                o.tenants
                    .extend(e.location().and_then(|l| tenant_of_file(&l.file)));
                o.why = vec![e.to_string()];
                self.record_outcome(o);
            }
            // Preflight refusals are recorded where the mismatches are
            // known (`record_preflight`); the rest (busy, kernel or state
            // failures) are not outcomes of a change: nothing was decided.
            Err(_) => {}
        }
    }

    /// Records a preflight refusal of `generation`: one outcome per tenant
    /// whose packets disagreed, one gateway-wide for the gateway's.
    pub(crate) fn record_preflight(
        &self,
        generation: u64,
        reason: &str,
        mismatches: &[crate::Mismatch],
    ) {
        let mut by_scope: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for m in mismatches {
            by_scope.entry(&m.scope).or_default().push(format!(
                "packet `{}`: expected {}, the kernel said {}",
                m.packet, m.expected, m.got
            ));
        }
        for (scope, why) in by_scope {
            let mut o = Outcome::new(OutcomeKind::PreflightRefused, generation);
            o.reason = reason.to_owned();
            // The gateway's own packets: an outcome of no tenant (the
            // operator's pages show it).
            if scope != "gateway" {
                o.tenants = vec![scope.to_owned()];
            }
            o.why = why;
            self.record_outcome(o);
        }
    }

    /// Records a canary's end: passed, or rolled back because of `why`.
    pub(crate) fn record_canary(
        &self,
        applied: &Applied,
        affected: &[String],
        gateway_wide: bool,
        why: Option<&str>,
    ) {
        let kind = match why {
            Some(_) => OutcomeKind::CanaryRolledBack,
            None => OutcomeKind::CanaryPassed,
        };
        let mut o = Outcome::new(kind, applied.generation);
        o.tenants = affected.to_vec();
        o.gateway_wide = gateway_wide;
        // The positions the apply recorded.
        if let Ok(log) = OutcomeLog::of(&self.store).read()
            && let Some(a) = log
                .iter()
                .rev()
                .find(|a| a.kind == OutcomeKind::Applied && a.generation == applied.generation)
        {
            o.rules = a.rules.clone();
            o.reason = a.reason.clone();
        }
        if let Some(why) = why {
            // `tenant acme: pass ratio fell …` (see `canary::regression`).
            let (cause, text) = match why.strip_prefix("tenant ").and_then(|r| r.split_once(": ")) {
                Some((t, rest)) if affected.iter().any(|a| a == t) => {
                    (Some(t.to_owned()), rest.to_owned())
                }
                _ => (None, why.to_owned()),
            };
            o.cause_tenant = cause;
            o.why = vec![text];
        }
        self.record_outcome(o);
    }

    /// Records a manual rollback to `to` (of `tenant`, or the whole
    /// gateway), given the slots it flipped (`tenant-acme@3`, …).
    pub(crate) fn record_rollback(&self, tenant: Option<&str>, to: u64, flipped: &[String]) {
        let mut o = Outcome::new(OutcomeKind::RolledBack, to);
        match tenant {
            Some(t) => o.tenants = vec![t.to_owned()],
            None => {
                o.gateway_wide = true;
                o.tenants = flipped
                    .iter()
                    .filter_map(|f| f.strip_prefix("tenant-")?.rsplit_once('@'))
                    .map(|(t, _)| t.to_owned())
                    .collect();
            }
        }
        self.record_outcome(o);
    }

    /// Per tenant of `tenants`, the positions of its rules in `generation`
    /// that its table in `before` did not have (new or edited rules).
    fn changed_rules(
        &self,
        before: &BTreeMap<String, TenantRef>,
        generation: u64,
        tenants: &[String],
    ) -> BTreeMap<String, Vec<u32>> {
        let mut out = BTreeMap::new();
        if tenants.len() > MAX_RULE_DIFFS {
            return out;
        }
        let Ok(new) = self.store.contents(generation) else {
            return out;
        };
        for t in tenants {
            let scope = fluxgate_ruleset::Scope::Tenant(t.clone());
            let old_ids: std::collections::HashSet<String> = before
                .get(t)
                .and_then(|r| self.store.contents(r.table).ok())
                .map(|c| {
                    c.counters
                        .iter()
                        .filter(|s| s.scope == scope)
                        .filter_map(|s| s.rule.clone())
                        .collect()
                })
                .unwrap_or_default();
            let positions: Vec<u32> = new
                .counters
                .iter()
                .filter(|s| s.scope == scope && s.position > 0)
                .filter(|s| s.rule.as_ref().is_some_and(|r| !old_ids.contains(r)))
                .map(|s| s.position)
                .collect();
            if !positions.is_empty() {
                let mut positions = positions;
                positions.sort_unstable();
                out.insert(t.clone(), positions);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fg-outcomes-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn outcomes_are_numbered_in_order_and_a_partial_last_line_is_skipped() {
        let dir = scratch();
        let log = OutcomeLog::in_dir(&dir);
        assert_eq!(log.last_seq().expect("empty"), 0);
        for g in 1..=3 {
            let mut o = Outcome::new(OutcomeKind::Applied, g);
            o.tenants = vec!["acme".into()];
            assert_eq!(log.append(&mut o).expect("append"), g);
        }
        // A writer caught mid-line.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .expect("open");
        f.write_all(b"{\"seq\":4,\"at\":1").expect("write");
        let all = log.read().expect("read");
        assert_eq!(all.iter().map(|o| o.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(log.last_seq().expect("seq"), 3);
        assert_eq!(log.read_after(2).expect("after").len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_log_stays_bounded_and_keeps_numbering() {
        let dir = scratch();
        let log = OutcomeLog::in_dir(&dir);
        let mut o = Outcome::new(OutcomeKind::Refused, 1);
        o.why = vec!["x".repeat(200 << 10)];
        let mut last = 0;
        for _ in 0..40 {
            last = log.append(&mut o.clone()).expect("append");
        }
        let size = fs::metadata(log.path()).expect("meta").len();
        assert!(size <= MAX_BYTES, "{size}");
        let kept = log.read().expect("read");
        assert!(kept.len() < 40 && !kept.is_empty());
        assert_eq!(kept.last().map(|o| o.seq), Some(last));
        assert_eq!(last, 40);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn diagnostics_are_blamed_on_the_tenant_whose_file_they_are_in() {
        assert_eq!(
            tenant_of_file("/etc/fluxgate/acme.fg").as_deref(),
            Some("acme")
        );
        assert_eq!(tenant_of_file("gateway.fg"), None);
        assert_eq!(tenant_of_file(""), None);
        assert_eq!(tenant_of_file("notes.txt"), None);
    }

    #[test]
    fn an_outcome_concerns_its_tenants_and_gateway_wide_ones_everyone() {
        let mut o = Outcome::new(OutcomeKind::Applied, 1);
        o.tenants = vec!["acme".into()];
        assert!(o.concerns("acme"));
        assert!(!o.concerns("globex"));
        o.gateway_wide = true;
        assert!(o.concerns("globex"));
    }
}
