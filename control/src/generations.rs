//! Generations on one interface: apply a ruleset as generation G+1, roll any
//! tenant (or the whole gateway) back or forward to a kept generation, keep the
//! last [`RETAIN`] generations loaded, and stage / assign classifier versions.
//!
//! How a change goes live:
//! 1. parse, validate, compile with the slot plan of the kept generations
//!    (a tenant keeps its kernel slot, an unchanged rule keeps its counter);
//! 2. stage *only the tables whose content changed* beside the live ones and
//!    pin them under the interface's bpffs directory (kept for rollback);
//! 3. preflight: witness packets (one per rule, one per tenant default) run
//!    through the staged tables in the kernel (probe overlay) and through the
//!    reference classifier; any difference aborts, nothing live changed;
//! 4. publish: changed tenant slots first, then global rules, then dispatch,
//!    then empty the slots of removed tenants — each one atomic slot update; if
//!    one fails, the ones already flipped are flipped back;
//! 5. record the generation and the new live manifest (atomic file writes).
//!
//! The kernel is the truth for what is live: before every operation the live
//! manifest is reconciled with the map ids in the slots, so a crash between
//! 4 and 5 is reported and repaired, never guessed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::Hasher,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use fluxgate_common::table::{Cell, Header};
use fluxgate_dataplane::{
    PinnedAttachment, Slot, StagedTable, Tables, VersionInfo, frame::FrameSpec,
};
use fluxgate_ruleset::{
    CompileOptions, Config, Image, PacketHeader, RuleId, Ruleset, Scope, SlotPlan, ValidRuleset,
    Verdict, compile_with, reference, validate,
};
use serde::Serialize;

use crate::{
    ControlError, PinLocation,
    rules::host_interfaces,
    store::{Event, IfaceState, Manifest, Record, SlotInfo, Store, TenantRef},
};

/// Generations kept loaded (pinned) for instant rollback, besides the live one.
pub const RETAIN: usize = 8;

/// Tables placed per batch (one slot-map write each; bounds open handles).
const PLACE_CHUNK: usize = 2048;

/// Most witness packets one preflight runs (chosen evenly over the rules).
pub const MAX_WITNESSES: usize = 4096;

const DISPATCH: &str = "dispatch";
const GLOBAL: &str = "global";

fn tenant_scope(name: &str) -> String {
    format!("tenant-{name}")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An interface opened for changes: its pinned state, its store, the lock.
pub struct Gateway {
    pinned: PinnedAttachment,
    store: Store,
    state: IfaceState,
    /// `None` for a read-only view.
    lock: Option<crate::store::Lock>,
    /// An interrupted apply found to be completely published (in a read-only
    /// view its record is not rewritten).
    finished: Option<u64>,
}

/// Options of [`Gateway::apply_with`].
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Why (recorded in the history).
    pub reason: String,
    /// Only these tenants (`gateway`: the gateway file) change; every other
    /// scope keeps its live rules. Empty: the whole directory.
    pub tenants: Vec<String>,
    /// Do everything but publish, kernel preflight included (like `nft -c`).
    pub dry_run: bool,
}

/// What [`Gateway::apply`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    /// Interface.
    pub iface: String,
    /// The new generation (unchanged when nothing changed; with `dry_run`,
    /// the number it would get).
    pub generation: u64,
    /// Nothing was published.
    pub dry_run: bool,
    /// Tables staged and published, by scope (`dispatch`, `global`, `tenant-<name>`).
    pub changed: Vec<String>,
    /// Tenants removed.
    pub removed: Vec<String>,
    /// Witness packets run through the staged tables in the kernel.
    pub preflight_packets: usize,
    /// Tenants loaded.
    pub tenants: usize,
    /// Rules loaded (gateway and tenants).
    pub rules: usize,
    /// Kernel memory of the newly staged tables, bytes.
    pub table_bytes: u64,
    /// Validation warnings, rendered.
    pub warnings: Vec<String>,
}

/// What a rollback (or roll-forward) did.
#[derive(Clone, Debug, Serialize)]
pub struct RolledBack {
    /// Interface.
    pub iface: String,
    /// The generation made live.
    pub to: u64,
    /// The tenant, when only one moved.
    pub tenant: Option<String>,
    /// Slots flipped.
    pub flipped: Vec<String>,
}

/// One failing preflight packet.
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

impl Gateway {
    /// Opens `iface` (attached with `fluxgate attach`) for changes: takes its
    /// lock, adopts the pinned state and reconciles the recorded live state
    /// with the kernel.
    pub fn open(
        loc: &PinLocation,
        state_root: &Path,
        iface: &str,
    ) -> Result<Gateway, ControlError> {
        Gateway::open_with(loc, state_root, iface, true)
    }

    /// Opens `iface` read-only (no lock; the reconciled state is not written
    /// back). For status and statistics while a change may be running.
    pub fn open_read(
        loc: &PinLocation,
        state_root: &Path,
        iface: &str,
    ) -> Result<Gateway, ControlError> {
        Gateway::open_with(loc, state_root, iface, false)
    }

    fn open_with(
        loc: &PinLocation,
        state_root: &Path,
        iface: &str,
        write: bool,
    ) -> Result<Gateway, ControlError> {
        let pinned = PinnedAttachment::open(loc.root(), iface)?;
        let store = Store::new(state_root, iface);
        let lock = if write { Some(store.lock()?) } else { None };
        let state = store.state()?;
        let mut gw = Gateway {
            pinned,
            store,
            state,
            lock,
            finished: None,
        };
        gw.reconcile()?;
        Ok(gw)
    }

    /// The pinned attachment.
    pub fn pinned(&self) -> &PinnedAttachment {
        &self.pinned
    }

    /// The pinned attachment, mutable (counters, publishing by hand).
    pub fn pinned_mut(&mut self) -> &mut PinnedAttachment {
        &mut self.pinned
    }

    /// The recorded state (reconciled with the kernel when opened).
    pub fn state(&self) -> &IfaceState {
        &self.state
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Makes the recorded live manifest agree with the kernel's slots: a slot
    /// whose table is another kept generation than recorded (a crash between
    /// publish and record) is taken as the truth and logged as `recovered`.
    fn reconcile(&mut self) -> Result<(), ControlError> {
        let kept = self.pinned.kept_tables()?;
        let mut ids: HashMap<u32, (String, u64)> = HashMap::new();
        for (scope, g) in &kept {
            let table = self.pinned.kept_table(scope, *g)?;
            ids.insert(table.id(), (scope.clone(), *g));
        }
        let mut live = self.state.live.clone();
        let mut notes = Vec::new();
        let mut check = |slot: Slot,
                         scope: &str,
                         recorded: Option<u64>|
         -> Result<Option<u64>, ControlError> {
            let id = self.pinned.live_table_id(slot)?;
            let actual = match id {
                None => None,
                Some(id) => match ids.get(&id) {
                    Some((s, g)) if s == scope => Some(*g),
                    _ => {
                        return Err(ControlError::State(format!(
                            "the {scope} slot holds a table fluxgate did not keep (map id {id}); \
                             detach and attach again"
                        )));
                    }
                },
            };
            if actual != recorded {
                notes.push(format!(
                    "{scope}: recorded {}, kernel has {}",
                    gen_text(recorded),
                    gen_text(actual)
                ));
            }
            Ok(actual)
        };
        live.dispatch = check(Slot::Dispatch, DISPATCH, live.dispatch)?;
        live.global = check(Slot::Global, GLOBAL, live.global)?;
        let mut tenants = BTreeMap::new();
        // Every tenant slot any kept record names, plus the recorded live ones.
        let mut candidates: BTreeMap<String, u32> = live
            .tenants
            .iter()
            .map(|(n, t)| (n.clone(), t.slot))
            .collect();
        for g in self.store.recorded()? {
            if let Some(r) = self.store.record(g)? {
                for (n, t) in r.manifest.tenants {
                    candidates.entry(n).or_insert(t.slot);
                }
            }
        }
        for (name, slot) in candidates {
            let recorded = live.tenants.get(&name).map(|t| t.table);
            if let Some(g) = check(Slot::Tenant(slot), &tenant_scope(&name), recorded)? {
                tenants.insert(name, TenantRef { slot, table: g });
            }
        }
        live.tenants = tenants;
        // An apply that died after its last flip published everything: finish it.
        let mut finished = None;
        for g in self.store.recorded()?.into_iter().rev() {
            if let Some(mut r) = self.store.record(g)?
                && !r.published
                && r.manifest == live
            {
                r.published = true;
                if self.lock.is_some() {
                    self.store.write_record(&r)?;
                }
                finished = Some(g);
                notes.push(format!("generation {g} had been published completely"));
                break;
            }
        }
        self.finished = finished;
        if !notes.is_empty() {
            if let Some(g) = finished {
                self.state.live_generation = g;
            }
            self.state.live = live;
            self.state.events.push(Event {
                who: who(),
                duration_ms: None,
                at: now(),
                generation: self.state.generation,
                what: "recovered".into(),
                tenant: None,
                detail: format!(
                    "an interrupted change was found; state follows the kernel: {}",
                    notes.join("; ")
                ),
            });
            if self.lock.is_some() {
                self.store.write_state(&mut self.state)?;
            }
        }
        Ok(())
    }

    fn writable(&self) -> Result<(), ControlError> {
        if self.lock.is_none() {
            return Err(ControlError::Usage(
                "this interface was opened read-only".into(),
            ));
        }
        Ok(())
    }

    /// Generations kept (recorded and loaded), ascending.
    pub fn kept(&self) -> Result<Vec<u64>, ControlError> {
        self.store.recorded()
    }

    fn records(&self) -> Result<BTreeMap<u64, Record>, ControlError> {
        let mut out = BTreeMap::new();
        for g in self.store.recorded()? {
            if let Some(r) = self.store.record(g)? {
                out.insert(g, r);
            }
        }
        Ok(out)
    }

    /// The slot plan that keeps tenants in their slots and unchanged rules on
    /// their counters, and holds every slot a kept generation uses.
    fn plan(&self, records: &BTreeMap<u64, Record>) -> SlotPlan {
        let mut plan = SlotPlan::default();
        for (name, t) in &self.state.live.tenants {
            plan.tenants.insert(name.clone(), t.slot);
        }
        // Newest records first: their assignment wins (they agree anyway, as
        // slots are never reused while a kept generation holds them).
        for r in records.values().rev() {
            for (name, t) in &r.manifest.tenants {
                plan.tenants.entry(name.clone()).or_insert(t.slot);
                plan.reserved_tenants.insert(t.slot);
            }
            for c in &r.counters {
                plan.reserved_counters.insert(c.slot);
                let scope = if c.scope == "gateway" {
                    Scope::Gateway
                } else {
                    Scope::Tenant(c.scope.clone())
                };
                let rule = c
                    .rule
                    .as_deref()
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .map(RuleId);
                plan.counters.entry((scope, rule)).or_insert(c.slot);
            }
        }
        plan
    }

    /// Applies the ruleset in `dir` as a new generation (see the module docs).
    /// Any failure before publishing leaves the interface exactly as it was.
    pub fn apply(&mut self, dir: &Path, reason: &str) -> Result<Applied, ControlError> {
        self.apply_with(
            dir,
            &ApplyOptions {
                reason: reason.to_owned(),
                ..ApplyOptions::default()
            },
        )
    }

    /// [`Gateway::apply`] with options: only some tenants, or a dry run.
    pub fn apply_with(&mut self, dir: &Path, opts: &ApplyOptions) -> Result<Applied, ControlError> {
        self.writable()?;
        let started = std::time::Instant::now();
        let reason = opts.reason.as_str();
        let files = self.files_to_apply(dir, &opts.tenants)?;
        let rs = validate(Ruleset::parse_files(&files)?, &Config::default())?;
        let records = self.records()?;
        let generation = self.state.generation + 1;
        let image = compile_with(
            &rs,
            &CompileOptions {
                interfaces: host_interfaces(),
                generation,
                plan: self.plan(&records),
                ..Default::default()
            },
        )?;
        let live = &self.state.live;
        let live_hashes = live_hashes(live, &records);
        let mut manifest = Manifest::default();
        let mut hashes = BTreeMap::new();
        let mut pending: Vec<(String, Slot)> = Vec::new();
        let mut stage = |scope: String,
                         slot: Slot,
                         cells: &[Cell],
                         live_gen: Option<u64>|
         -> Result<u64, ControlError> {
            let h = content_hash(cells);
            hashes.insert(scope.clone(), h);
            if let Some(g) = live_gen
                && live_hashes.get(&scope) == Some(&h)
            {
                return Ok(g);
            }
            pending.push((scope, slot));
            Ok(generation)
        };
        manifest.dispatch = Some(stage(
            DISPATCH.into(),
            Slot::Dispatch,
            &image.dispatch.cells,
            live.dispatch,
        )?);
        manifest.global = Some(stage(
            GLOBAL.into(),
            Slot::Global,
            &image.global.cells,
            live.global,
        )?);
        for t in &image.tenants {
            let live_t = live.tenants.get(&t.name).filter(|l| l.slot == t.index);
            let g = stage(
                tenant_scope(&t.name),
                Slot::Tenant(t.index),
                &t.table.cells,
                live_t.map(|l| l.table),
            )?;
            manifest.tenants.insert(
                t.name.clone(),
                TenantRef {
                    slot: t.index,
                    table: g,
                },
            );
        }
        // Every changed table into the cell pool at once (one copy syscall;
        // `PoolFull` before anything live changed when it does not fit).
        let cells_of = |slot: Slot| -> &[Cell] {
            match slot {
                Slot::Dispatch => &image.dispatch.cells,
                Slot::Global => &image.global.cells,
                Slot::Tenant(i) => image
                    .tenants
                    .iter()
                    .find(|t| t.index == i)
                    .map_or(&[][..], |t| &t.table.cells),
            }
        };
        let tables: Vec<(&str, &[Cell])> = pending
            .iter()
            .map(|(scope, slot)| (scope.as_str(), cells_of(*slot)))
            .collect();
        let made = self.pinned.stage_all(&tables)?;
        let staged: Vec<(String, Slot, StagedTable)> = pending
            .into_iter()
            .zip(made)
            .map(|((scope, slot), table)| (scope, slot, table))
            .collect();
        let removed: Vec<String> = live
            .tenants
            .keys()
            .filter(|n| !manifest.tenants.contains_key(*n))
            .cloned()
            .collect();
        let changed: Vec<String> = staged.iter().map(|(s, ..)| s.clone()).collect();
        let table_bytes = staged.iter().map(|(_, _, t)| t.bytes()).sum();
        let counters = describe(&rs, &image);
        let rules =
            rs.gateway().rules.len() + rs.tenants().iter().map(|t| t.rules.len()).sum::<usize>();
        let mut warnings: Vec<String> = rs.warnings().iter().map(|d| d.render()).collect();
        warnings.extend(unguarded_warning(&rs));
        let mut applied = Applied {
            iface: self.pinned.iface().to_owned(),
            generation: self.state.generation,
            dry_run: opts.dry_run,
            changed: changed.clone(),
            removed: removed.clone(),
            preflight_packets: 0,
            tenants: image.tenants.len(),
            rules,
            table_bytes: 0,
            warnings,
        };
        if changed.is_empty() && removed.is_empty() {
            return Ok(applied);
        }

        crash_point("staged");
        // Preflight against the staged tables, through the version serving
        // packets of no tenant (tenants may be new: they get that one too).
        let version = self.pinned.version_of(None)?;
        let preflight_packets = {
            let mut probe = self.pinned.probe(version)?;
            let overlays: Vec<(Slot, &StagedTable)> = staged
                .iter()
                .map(|(_, slot, table)| (*slot, table))
                .collect();
            probe.overlay_all(&overlays)?;
            let (n, mismatches) = preflight(&probe, &rs, &image)?;
            drop(probe);
            if !mismatches.is_empty() {
                let text = report(&mismatches);
                if !opts.dry_run {
                    self.log(
                        "aborted",
                        None,
                        format!(
                            "{reason}{}preflight failed: {} packet(s) disagreed",
                            if reason.is_empty() { "" } else { "; " },
                            mismatches.len()
                        ),
                    )?;
                }
                return Err(ControlError::Preflight(text));
            }
            n
        };
        crash_point("preflighted");
        applied.generation = generation;
        applied.preflight_packets = preflight_packets;
        applied.table_bytes = table_bytes;
        if opts.dry_run {
            return Ok(applied);
        }

        // Keep the staged tables (pinned), record the generation, then publish.
        // Pins of this generation number can only be orphans of an apply that
        // died before recording it (never live): drop them first.
        for (scope, g) in self.pinned.kept_tables()? {
            if g == generation {
                self.pinned.forget_table(&scope, g)?;
            }
        }
        for (scope, _, table) in &staged {
            self.pinned.keep_table(scope, generation, table)?;
        }
        // The pins hold them now; don't hold a descriptor per table too.
        drop(staged);
        crash_point("kept");
        let sources = files
            .iter()
            .map(|(p, text)| Ok((p.clone(), self.store.put_source(text)?)))
            .collect::<Result<Vec<_>, ControlError>>()?;
        let mut record = Record {
            generation,
            created: now(),
            who: who(),
            reason: reason.to_owned(),
            source: dir.to_path_buf(),
            sources,
            changed: changed.clone(),
            removed: removed.clone(),
            manifest: manifest.clone(),
            hashes,
            counters,
            preflight_packets,
            published: false,
        };
        self.store.write_record(&record)?;
        self.state.generation = generation;
        self.store.write_state(&mut self.state)?;
        crash_point("recorded");
        // Slots new in this generation may hold counts of a rule long gone.
        let fresh: Vec<u32> = {
            let held = self.plan(&records).reserved_counters;
            record
                .counters
                .iter()
                .map(|c| c.slot)
                .filter(|s| !held.contains(s))
                .collect()
        };
        self.pinned.reset_counters(&fresh)?;
        self.transition(&manifest)?;
        crash_point("flipped");
        self.state.live = manifest;
        self.state.live_generation = generation;
        self.state.events.push(Event {
            who: who(),
            duration_ms: Some(started.elapsed().as_millis() as u64),
            at: now(),
            generation,
            what: "apply".into(),
            tenant: None,
            detail: format!(
                "{reason}{}changed: {}; removed: {}",
                if reason.is_empty() { "" } else { "; " },
                list_or_none(&changed),
                list_or_none(&removed)
            ),
        });
        self.store.write_state(&mut self.state)?;
        record.published = true;
        self.store.write_record(&record)?;
        self.prune()?;
        Ok(applied)
    }

    /// Flips slots from the live manifest to `to`: tenants first, then the
    /// global rules, then dispatch, then removed tenants' slots are emptied.
    /// If a flip fails, the flips already done are undone (in reverse).
    fn transition(&mut self, to: &Manifest) -> Result<Vec<String>, ControlError> {
        let from = self.state.live.clone();
        let by_slot = |m: &Manifest| -> BTreeMap<u32, (String, u64)> {
            m.tenants
                .iter()
                .map(|(n, t)| (t.slot, (tenant_scope(n), t.table)))
                .collect()
        };
        let (old_t, new_t) = (by_slot(&from), by_slot(to));
        // (slot, scope and generation of the new table, of the old one)
        type Step = (Slot, Option<(String, u64)>, Option<(String, u64)>);
        let mut steps: Vec<Step> = Vec::new();
        for (slot, new) in &new_t {
            if old_t.get(slot) != Some(new) {
                steps.push((
                    Slot::Tenant(*slot),
                    Some(new.clone()),
                    old_t.get(slot).cloned(),
                ));
            }
        }
        let gw = |g: Option<u64>, s: &str| g.map(|g| (s.to_owned(), g));
        if from.global != to.global {
            steps.push((Slot::Global, gw(to.global, GLOBAL), gw(from.global, GLOBAL)));
        }
        if from.dispatch != to.dispatch {
            steps.push((
                Slot::Dispatch,
                gw(to.dispatch, DISPATCH),
                gw(from.dispatch, DISPATCH),
            ));
        }
        for (slot, old) in &old_t {
            if !new_t.contains_key(slot) {
                steps.push((Slot::Tenant(*slot), None, Some(old.clone())));
            }
        }
        // 1. Place each new table in its slot's standby buffer, unless it is
        //    already there (the previous generation: rollback is then a pure
        //    flip). One array write per chunk (a region base); nothing live
        //    changes. In chunks, so a 10k-tenant apply never holds 10k handles.
        let mut flips: Vec<Slot> = Vec::new();
        let mut to_place: Vec<(Slot, StagedTable)> = Vec::new();
        for (slot, new, _) in &steps {
            let Some((scope, g)) = new else { continue };
            let table = self.pinned.kept_table(scope, *g)?;
            if self.pinned.live_table_id(*slot)? == Some(table.id()) {
                continue;
            }
            if self.pinned.standby_table_id(*slot)? != Some(table.id()) {
                to_place.push((*slot, table));
                if to_place.len() == PLACE_CHUNK {
                    self.place_chunk(&mut to_place)?;
                }
            }
            flips.push(*slot);
        }
        self.place_chunk(&mut to_place)?;
        crash_point("placed");
        // 2. Flip, in order: microseconds each. If one fails, flip back the
        //    ones already flipped — their previous tables are in standby.
        for (i, slot) in flips.iter().enumerate() {
            if i == 1 {
                crash_point("flipping");
            }
            if let Err(e) = self.pinned.flip(*slot) {
                for done in flips[..i].iter().rev() {
                    let _best_effort = self.pinned.flip(*done);
                }
                return Err(e.into());
            }
        }
        // 3. Empty the slots of tenants that are gone (dispatch no longer
        //    leads there).
        let gone: Vec<Slot> = steps
            .iter()
            .filter(|(_, new, _)| new.is_none())
            .map(|(slot, ..)| *slot)
            .collect();
        self.pinned.unpublish_all(&gone)?;
        Ok(steps
            .iter()
            .map(|(slot, new, _)| match new {
                Some((scope, g)) => format!("{scope}@{g}"),
                None => format!("{slot:?} emptied"),
            })
            .collect())
    }

    fn place_chunk(&mut self, tables: &mut Vec<(Slot, StagedTable)>) -> Result<(), ControlError> {
        let refs: Vec<(Slot, &StagedTable)> = tables.iter().map(|(s, t)| (*s, t)).collect();
        self.pinned.place_all(&refs)?;
        tables.clear();
        Ok(())
    }

    /// Rolls the whole gateway, or only `tenant`, back (or forward) to kept
    /// generation `to` — by default the generation before the live one. One
    /// slot flip per changed scope, nothing recompiled.
    pub fn rollback(
        &mut self,
        tenant: Option<&str>,
        to: Option<u64>,
    ) -> Result<RolledBack, ControlError> {
        self.writable()?;
        let started = std::time::Instant::now();
        let kept = self.kept()?;
        let current = match tenant {
            Some(t) => self
                .state
                .live
                .tenants
                .get(t)
                .map(|r| r.table)
                .ok_or_else(|| ControlError::Usage(format!("no tenant named {t:?} is live")))?,
            None => self.state.live_generation,
        };
        let target = match to {
            Some(g) => g,
            None => *kept.iter().rev().find(|g| **g < current).ok_or_else(|| {
                ControlError::Usage(format!(
                    "no kept generation before {current} to roll back to (kept: {})",
                    list_or_none(&kept.iter().map(u64::to_string).collect::<Vec<_>>())
                ))
            })?,
        };
        let record = self.store.record(target)?.ok_or_else(|| {
            ControlError::Usage(format!(
                "generation {target} is not kept (kept: {})",
                list_or_none(&kept.iter().map(u64::to_string).collect::<Vec<_>>())
            ))
        })?;
        let mut manifest = self.state.live.clone();
        match tenant {
            Some(t) => {
                let r = record.manifest.tenants.get(t).ok_or_else(|| {
                    ControlError::Usage(format!(
                        "tenant {t:?} did not exist in generation {target}"
                    ))
                })?;
                let live_slot = self.state.live.tenants[t].slot;
                if r.slot != live_slot {
                    return Err(ControlError::Usage(format!(
                        "tenant {t:?} had another slot in generation {target}; roll the whole gateway back instead"
                    )));
                }
                manifest.tenants.insert(t.to_owned(), *r);
            }
            None => manifest = record.manifest.clone(),
        }
        let flipped = self.transition(&manifest)?;
        self.state.live = manifest;
        if tenant.is_none() {
            self.state.live_generation = target;
        }
        self.state.events.push(Event {
            who: who(),
            duration_ms: Some(started.elapsed().as_millis() as u64),
            at: now(),
            generation: target,
            what: "rollback".into(),
            tenant: tenant.map(str::to_owned),
            detail: format!("from {current} to {target}: {}", list_or_none(&flipped)),
        });
        self.store.write_state(&mut self.state)?;
        Ok(RolledBack {
            iface: self.pinned.iface().to_owned(),
            to: target,
            tenant: tenant.map(str::to_owned),
            flipped,
        })
    }

    /// Forgets generations beyond the newest [`RETAIN`], except those the live
    /// manifest (or a kept generation) still uses; unpins unused tables.
    fn prune(&mut self) -> Result<(), ControlError> {
        let records = self.records()?;
        let newest: BTreeSet<u64> = records.keys().rev().take(RETAIN).copied().collect();
        let mut keep: BTreeSet<u64> = newest.clone();
        let mut tables: BTreeSet<(String, u64)> = BTreeSet::new();
        for m in std::iter::once(&self.state.live).chain(
            newest
                .iter()
                .filter_map(|g| records.get(g))
                .map(|r| &r.manifest),
        ) {
            for (scope, g) in manifest_tables(m) {
                keep.insert(g);
                tables.insert((scope, g));
            }
        }
        let mut sources = std::collections::HashSet::new();
        for (g, r) in &records {
            if keep.contains(g) {
                sources.extend(r.sources.iter().map(|(_, h)| h.clone()));
            } else {
                self.store.forget_record(*g)?;
            }
        }
        self.store.prune_sources(&sources)?;
        for (scope, g) in self.pinned.kept_tables()? {
            if !tables.contains(&(scope.clone(), g)) {
                self.pinned.forget_table(&scope, g)?;
            }
        }
        Ok(())
    }

    /// Generations an interrupted apply recorded but never finished publishing
    /// (the process died): resume by applying again, or [`Gateway::discard_interrupted`].
    pub fn interrupted(&self) -> Result<Vec<u64>, ControlError> {
        Ok(self
            .records()?
            .into_values()
            .filter(|r| !r.published && Some(r.generation) != self.finished)
            .map(|r| r.generation)
            .collect())
    }

    /// Discards interrupted applies: if one left some scopes live, the whole
    /// gateway goes back to the last generation that was published as a
    /// whole; then their records and tables are forgotten.
    pub fn discard_interrupted(&mut self) -> Result<Vec<u64>, ControlError> {
        self.writable()?;
        let gens = self.interrupted()?;
        if gens.is_empty() {
            return Ok(gens);
        }
        let live_uses = manifest_tables(&self.state.live)
            .iter()
            .any(|(_, g)| gens.contains(g));
        if live_uses {
            let target = self.state.live_generation;
            if target == 0 {
                return Err(ControlError::Usage(
                    "the interrupted apply was the first one; apply again to finish it".into(),
                ));
            }
            self.rollback(None, Some(target))?;
        }
        for g in &gens {
            self.store.forget_record(*g)?;
        }
        self.prune()?;
        self.log(
            "discarded",
            None,
            format!(
                "interrupted generation(s) {} discarded",
                gens.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )?;
        Ok(gens)
    }

    /// What each live counter slot counts.
    pub fn live_counters(&self) -> Result<Vec<SlotInfo>, ControlError> {
        let mut out = Vec::new();
        let mut wanted: Vec<(String, u64)> = Vec::new();
        if let Some(g) = self.state.live.global {
            wanted.push(("gateway".into(), g));
        }
        for (n, t) in &self.state.live.tenants {
            wanted.push((n.clone(), t.table));
        }
        let mut cache: HashMap<u64, Record> = HashMap::new();
        for (scope, g) in wanted {
            let record = match cache.entry(g) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.store.record(g)?.ok_or_else(|| {
                        ControlError::State(format!("the record of live generation {g} is missing"))
                    })?)
                }
            };
            out.extend(record.counters.iter().filter(|c| c.scope == scope).cloned());
        }
        out.sort_by_key(|c| c.slot);
        Ok(out)
    }

    /// The files of the live ruleset (each scope from the generation it is at).
    pub fn live_files(&self) -> Result<Vec<(String, String)>, ControlError> {
        let Some(g) = self.state.live.global else {
            return Ok(Vec::new());
        };
        let mut records: HashMap<u64, HashMap<String, (String, String)>> = HashMap::new();
        let mut file = |g: u64, name: &str| -> Result<(String, String), ControlError> {
            let by_name = match records.entry(g) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let r = self.store.record(g)?.ok_or_else(|| {
                        ControlError::State(format!("the record of live generation {g} is missing"))
                    })?;
                    e.insert(
                        r.sources
                            .into_iter()
                            .filter_map(|(p, h)| {
                                let n = Path::new(&p).file_name()?.to_str()?.to_owned();
                                Some((n, (p, h)))
                            })
                            .collect(),
                    )
                }
            };
            let (path, hash) = by_name
                .get(name)
                .cloned()
                .ok_or_else(|| ControlError::State(format!("generation {g} has no file {name}")))?;
            Ok((path, self.store.source(&hash)?))
        };
        let mut files = vec![file(g, "gateway.fg")?];
        for (n, t) in &self.state.live.tenants {
            files.push(file(t.table, &format!("{n}.fg"))?);
        }
        Ok(files)
    }

    /// The files to apply: all of `dir`, or — with `tenants` — the live files
    /// with those scopes taken from `dir` (a listed tenant missing from `dir`
    /// is removed).
    fn files_to_apply(
        &self,
        dir: &Path,
        tenants: &[String],
    ) -> Result<Vec<(String, String)>, ControlError> {
        let new = read_files(dir)?;
        if tenants.is_empty() {
            return Ok(new);
        }
        let name_of = |path: &str| -> String {
            Path::new(path)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_owned()
        };
        let live = self.live_files()?;
        for t in tenants {
            let scope = if t == "gateway" {
                "gateway"
            } else {
                t.as_str()
            };
            let known = new.iter().chain(&live).any(|(p, _)| name_of(p) == scope);
            if !known {
                return Err(ControlError::Usage(format!(
                    "unknown tenant {t:?}: neither live nor in {}",
                    dir.display()
                )));
            }
        }
        let listed = |path: &str| tenants.iter().any(|t| *t == name_of(path));
        let mut files: Vec<(String, String)> =
            live.into_iter().filter(|(p, _)| !listed(p)).collect();
        files.extend(new.into_iter().filter(|(p, _)| listed(p)));
        files.sort();
        Ok(files)
    }

    /// The live ruleset (each scope from the generation it is at) and its
    /// counter slots, rebuilt from the recorded files.
    pub fn live_ruleset(&self) -> Result<Option<(ValidRuleset, Vec<SlotInfo>)>, ControlError> {
        let files = self.live_files()?;
        if files.is_empty() {
            return Ok(None);
        }
        let rs = validate(Ruleset::parse_files(&files)?, &Config::default())?;
        Ok(Some((rs, self.live_counters()?)))
    }

    /// Loads this build's classifier as a new version beside the running ones
    /// and preflights it: witness packets of every live tenant run through it
    /// against the live tables and must get the reference's verdict, rule and
    /// tenant. On any difference the version is unloaded again and the
    /// mismatches are reported; it serves nobody until [`Gateway::assign`].
    pub fn stage_version(&mut self) -> Result<u32, ControlError> {
        self.writable()?;
        let v = self.pinned.stage_version()?;
        self.check_version(v)
    }

    /// Like [`Gateway::stage_version`] for program `program` of `object`.
    pub fn stage_version_from(
        &mut self,
        object: &[u8],
        program: &str,
    ) -> Result<u32, ControlError> {
        self.writable()?;
        let v = self.pinned.stage_version_from(object, program)?;
        self.check_version(v)
    }

    /// Every guard and witness of the live ruleset through classifier
    /// `version` and the live tables in the kernel; the ones that disagree.
    fn live_mismatches(&self, version: u32) -> Result<Vec<Mismatch>, ControlError> {
        let Some((rs, slots)) = self.live_ruleset()? else {
            return Ok(Vec::new());
        };
        let mut index = slots_image(&slots);
        index.tenants = self
            .state
            .live
            .tenants
            .iter()
            .map(|(n, t)| (n.clone(), t.slot))
            .collect();
        let probe = self.pinned.probe(version)?;
        Ok(preflight(&probe, &rs, &index)?.1)
    }

    /// Re-runs the live ruleset's guards and witnesses through the live
    /// tables (the version serving packets of no tenant): the canary's probe.
    pub fn live_preflight(&self) -> Result<Vec<Mismatch>, ControlError> {
        self.live_mismatches(self.pinned.version_of(None)?)
    }

    /// Adds a line to the history.
    pub fn note(&mut self, what: &str, detail: String) -> Result<(), ControlError> {
        self.writable()?;
        self.log(what, None, detail)
    }

    fn check_version(&mut self, v: u32) -> Result<u32, ControlError> {
        let mismatches = match self.live_mismatches(v) {
            Ok(m) => m,
            Err(e) => {
                let _unload_best_effort = self.pinned.unload_version(v);
                return Err(e);
            }
        };
        let result = if mismatches.is_empty() {
            Ok(())
        } else {
            Err(ControlError::Preflight(format!(
                "classifier version {v} disagrees with the reference:\n{}",
                report(&mismatches)
            )))
        };
        match result {
            Ok(()) => {
                self.log(
                    "version-staged",
                    None,
                    format!("classifier version {v} loaded"),
                )?;
                Ok(v)
            }
            Err(e) => {
                self.pinned.unload_version(v)?;
                Err(e)
            }
        }
    }

    /// Makes classifier `version` serve `tenants` (names; `gateway` = packets of
    /// no tenant), or everything when `tenants` is empty. One map update each.
    pub fn assign(&mut self, version: u32, tenants: &[String]) -> Result<(), ControlError> {
        self.writable()?;
        if tenants.is_empty() {
            self.pinned.assign_version_all(version)?;
        } else {
            let slots = tenants
                .iter()
                .map(|t| {
                    if t == "gateway" {
                        Ok(None)
                    } else {
                        self.state
                            .live
                            .tenants
                            .get(t)
                            .map(|r| Some(r.slot))
                            .ok_or_else(|| {
                                ControlError::Usage(format!("no tenant named {t:?} is live"))
                            })
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.pinned.assign_version(version, &slots)?;
        }
        let whom = if tenants.is_empty() {
            "everyone".to_owned()
        } else {
            tenants.join(", ")
        };
        self.log(
            "version-assigned",
            (tenants.len() == 1).then(|| tenants[0].clone()),
            format!("classifier version {version} now serves {whom}"),
        )
    }

    /// Loaded classifier versions.
    pub fn versions(&self) -> Result<Vec<VersionInfo>, ControlError> {
        Ok(self.pinned.versions()?)
    }

    /// Unloads a version that serves nobody.
    pub fn unload_version(&mut self, version: u32) -> Result<(), ControlError> {
        self.writable()?;
        self.pinned.unload_version(version)?;
        self.log(
            "version-unloaded",
            None,
            format!("classifier version {version} unloaded"),
        )
    }

    /// Replaces the attached dispatcher with this build's (`BPF_LINK_UPDATE`).
    pub fn replace_dispatcher(&mut self) -> Result<u32, ControlError> {
        self.writable()?;
        let id = self.pinned.replace_dispatcher()?;
        self.log(
            "dispatcher-replaced",
            None,
            format!("dispatcher is now program {id}"),
        )?;
        Ok(id)
    }

    fn log(
        &mut self,
        what: &str,
        tenant: Option<String>,
        detail: String,
    ) -> Result<(), ControlError> {
        self.state.events.push(Event {
            who: who(),
            duration_ms: None,
            at: now(),
            generation: self.state.generation,
            what: what.into(),
            tenant,
            detail,
        });
        self.store.write_state(&mut self.state)
    }
}

/// The tables a manifest uses, as `(scope, generation)`.
fn manifest_tables(m: &Manifest) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    out.extend(m.dispatch.map(|g| (DISPATCH.to_owned(), g)));
    out.extend(m.global.map(|g| (GLOBAL.to_owned(), g)));
    out.extend(m.tenants.iter().map(|(n, t)| (tenant_scope(n), t.table)));
    out
}

/// Content hash of each live table, from the records that created them.
fn live_hashes(live: &Manifest, records: &BTreeMap<u64, Record>) -> HashMap<String, u64> {
    manifest_tables(live)
        .into_iter()
        .filter_map(|(scope, g)| {
            let h = records.get(&g)?.hashes.get(&scope)?;
            Some((scope, *h))
        })
        .collect()
}

/// FNV-1a over a table's cells, with the header's generation number left out
/// (it differs in every generation; the content is what matters).
fn content_hash(cells: &[Cell]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    let skip = std::mem::offset_of!(Header, generation) / 8;
    for (i, c) in cells.iter().enumerate() {
        for (w, v) in c.raw.iter().enumerate() {
            h.write_u64(if i == 0 && w == skip { 0 } else { *v });
        }
    }
    h.finish()
}

/// Fault injection for tests: when `FLUXGATE_CRASH_AT` names this step of a
/// change, the process kills itself right here with SIGKILL (`kill -9`). The
/// steps: `staged`, `preflighted`, `kept`, `recorded`, `placed`, `flipping`,
/// `flipped`.
fn crash_point(step: &str) {
    if std::env::var_os("FLUXGATE_CRASH_AT").is_some_and(|s| s == step) {
        eprintln!("fluxgate: FLUXGATE_CRASH_AT={step}: killing myself (SIGKILL)");
        // SAFETY: signalling our own process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        std::process::abort();
    }
}

/// Who is making a change: the invoking user behind sudo, else the user.
fn who() -> String {
    if let Ok(user) = std::env::var("SUDO_USER") {
        return user;
    }
    // SAFETY: getuid cannot fail; getpwuid returns NULL or a pointer to a
    // static record whose name is a NUL-terminated string, read at once.
    unsafe {
        let uid = libc::getuid();
        let pw = libc::getpwuid(uid);
        if pw.is_null() || (*pw).pw_name.is_null() {
            format!("uid {uid}")
        } else {
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned()
        }
    }
}

fn gen_text(g: Option<u64>) -> String {
    g.map_or("nothing".into(), |g| format!("generation {g}"))
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// The `.fg` files of `dir`, sorted, as (path, text).
pub(crate) fn read_files(dir: &Path) -> Result<Vec<(String, String)>, ControlError> {
    Ok(fluxgate_ruleset::read_dir_files(dir)?)
}

/// What each counter slot of `image` counts, with the rule text.
pub(crate) fn describe(rs: &ValidRuleset, image: &Image) -> Vec<SlotInfo> {
    let rules_of = |scope: &Scope| match scope {
        Scope::Gateway => Some((&rs.gateway().rules, rs.gateway().default_action)),
        Scope::Tenant(t) => rs
            .tenants()
            .iter()
            .find(|x| &x.name == t)
            .map(|t| (&t.rules, t.default_action)),
    };
    image
        .counters
        .iter()
        .map(|c| {
            let text = match (rules_of(&c.scope), c.rule) {
                (Some((rules, _)), Some(_)) => rules
                    .get(c.position.saturating_sub(1) as usize)
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
                (Some((_, default)), None) => format!("default {}", verdict_name(default)),
                (None, _) => String::new(),
            };
            SlotInfo {
                slot: c.slot,
                scope: c.scope.to_string(),
                rule: c.rule.map(|id| id.to_string()),
                position: c.position,
                text,
            }
        })
        .collect()
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Drop => "drop",
    }
}

/// Identity → slot and tenant name → slot, for comparing reference decisions
/// with kernel ones.
pub(crate) struct SlotIndex {
    counters: HashMap<(String, Option<String>), u32>,
    tenants: HashMap<String, u32>,
}

impl SlotIndex {
    fn slot(&self, scope: &Scope, rule: Option<RuleId>) -> Option<u32> {
        self.counters
            .get(&(scope.to_string(), rule.map(|r| r.to_string())))
            .copied()
    }
}

fn slots_image(slots: &[SlotInfo]) -> SlotIndex {
    SlotIndex {
        counters: slots
            .iter()
            .map(|s| ((s.scope.clone(), s.rule.clone()), s.slot))
            .collect(),
        tenants: HashMap::new(),
    }
}

impl From<&Image> for SlotIndex {
    fn from(image: &Image) -> SlotIndex {
        SlotIndex {
            counters: image
                .counters
                .iter()
                .map(|c| ((c.scope.to_string(), c.rule.map(|r| r.to_string())), c.slot))
                .collect(),
            tenants: image
                .tenants
                .iter()
                .map(|t| (t.name.clone(), t.index))
                .collect(),
        }
    }
}

/// Anything [`preflight`] can take its slots from.
pub(crate) trait SlotSource {
    fn index(&self) -> SlotIndex;
}

impl SlotSource for Image {
    fn index(&self) -> SlotIndex {
        SlotIndex::from(self)
    }
}

impl SlotSource for SlotIndex {
    fn index(&self) -> SlotIndex {
        SlotIndex {
            counters: self.counters.clone(),
            tenants: self.tenants.clone(),
        }
    }
}

/// A packet preflight runs: a declared guard (with the verdict it must get)
/// or a witness generated from a rule.
#[derive(Clone, Debug)]
pub struct Check {
    /// Tenant name or `gateway`.
    pub scope: String,
    /// The packet.
    pub packet: PacketHeader,
    /// For a guard: the verdict it must get, and where it is written.
    pub guard: Option<(Verdict, String)>,
}

/// The guards of `rs` (every tenant's and the gateway's), then its witnesses.
pub fn checks(rs: &ValidRuleset) -> Vec<Check> {
    let at = |span: fluxgate_ruleset::Span| -> String {
        rs.ruleset()
            .sources
            .file(span.file)
            .map_or_else(String::new, |f| f.location(span.start as usize).to_string())
    };
    let mut out: Vec<Check> = rs
        .gateway()
        .guards
        .iter()
        .map(|g| ("gateway", g))
        .chain(
            rs.tenants()
                .iter()
                .flat_map(|t| t.guards.iter().map(move |g| (t.name.as_str(), g))),
        )
        .map(|(scope, g)| Check {
            scope: scope.to_owned(),
            packet: g.packet.clone(),
            guard: Some((g.verdict, at(g.span))),
        })
        .collect();
    out.extend(witnesses(rs).into_iter().map(|(scope, packet)| Check {
        scope,
        packet,
        guard: None,
    }));
    out
}

/// One warning naming the tenants without guards (the first few, and a count).
pub(crate) fn unguarded_warning(rs: &ValidRuleset) -> Option<String> {
    const SHOWN: usize = 5;
    let names = unguarded(rs);
    match names.len() {
        0 => None,
        1 => Some(format!(
            "warning: tenant `{}` declares no guard packets; only generated witnesses check it",
            names[0]
        )),
        n => Some(format!(
            "warning: {n} tenants declare no guard packets ({}{}); only generated witnesses check them",
            names[..n.min(SHOWN)].join(", "),
            if n > SHOWN { ", …" } else { "" }
        )),
    }
}

/// Tenants that declare no guard (the gateway file counts as `gateway`).
pub fn unguarded(rs: &ValidRuleset) -> Vec<String> {
    rs.tenants()
        .iter()
        .filter(|t| t.guards.is_empty())
        .map(|t| t.name.clone())
        .collect()
}

/// Runs every guard and witness of `rs` through `probe` and the reference;
/// returns how many ran and the ones that failed: a guard fails when the
/// reference does not give it its declared verdict, and any packet fails when
/// the kernel's verdict, deciding counter slot or tenant differ from the
/// reference's. The tenant is compared by slot when `slots` knows tenant
/// slots, else by whether one was found.
pub(crate) fn preflight(
    probe: &fluxgate_dataplane::Probe<'_>,
    rs: &ValidRuleset,
    slots: &impl SlotSource,
) -> Result<(usize, Vec<Mismatch>), ControlError> {
    let index = slots.index();
    let checks = checks(rs);
    let mut mismatches = Vec::new();
    for c in &checks {
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
        let want_slot = index.slot(&want_scope, want.rule.as_ref().map(|r| r.id));
        let xdp = |v: Verdict| match v {
            Verdict::Pass => fluxgate_common::xdp::PASS,
            Verdict::Drop => fluxgate_common::xdp::DROP,
        };
        let tenant_ok = match (&want.tenant_name, index.tenants.is_empty()) {
            (Some(name), false) => got.tenant == index.tenants.get(name).copied(),
            (name, _) => got.tenant.is_some() == name.is_some(),
        };
        let kernel_ok = got.verdict == xdp(want.verdict) && got.decided == want_slot && tenant_ok;
        let guard_ok = c.guard.as_ref().is_none_or(|(v, _)| *v == want.verdict);
        if kernel_ok && guard_ok {
            continue;
        }
        let got_text = format!(
            "{} by counter slot {} (tenant slot {})",
            if got.verdict == fluxgate_common::xdp::DROP {
                "drop"
            } else {
                "pass"
            },
            got.decided.map_or("none".into(), |s| s.to_string()),
            got.tenant.map_or("none".into(), |s| s.to_string())
        );
        mismatches.push(Mismatch {
            packet: p.to_string(),
            scope: c.scope.clone(),
            guard: c
                .guard
                .as_ref()
                .map(|(v, at)| format!("{at} must {}", verdict_name(*v))),
            expected: crate::pipeline::decided_by(rs, &want),
            got: got_text,
        });
    }
    Ok((checks.len(), mismatches))
}

fn report(mismatches: &[Mismatch]) -> String {
    let mut out: Vec<String> = mismatches
        .iter()
        .take(20)
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
    if mismatches.len() > 20 {
        out.push(format!("  … and {} more", mismatches.len() - 20));
    }
    out.join("\n")
}

/// Witness packets: for every rule one packet inside it (the low corner of
/// its first prefix / range of each field), and for every tenant one packet
/// to its first prefix on a port no rule is likely to name. At most
/// [`MAX_WITNESSES`], spread evenly.
pub fn witnesses(rs: &ValidRuleset) -> Vec<(String, PacketHeader)> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let fallback = |v6: bool, last: u8| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0xffff,
                0,
                0,
                0,
                0,
                u16::from(last),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
        }
    };
    let tenant_dst = |prefixes: &[ipnet::IpNet], v6: Option<bool>| -> Option<IpAddr> {
        prefixes
            .iter()
            .find(|p| v6.is_none_or(|v6| matches!(p, ipnet::IpNet::V6(_)) == v6))
            .map(|p| p.network())
    };
    let mut push = |scope: &str, rule: &fluxgate_ruleset::Rule, prefixes: &[ipnet::IpNet]| {
        let m = &rule.matches;
        let src = fluxgate_ruleset::Match::nets(&m.src)
            .next()
            .map(|n| n.network());
        let dst = fluxgate_ruleset::Match::nets(&m.dst)
            .next()
            .map(|n| n.network());
        let v6 = src.or(dst).map(|a| a.is_ipv6());
        let dst = dst
            .or_else(|| tenant_dst(prefixes, v6))
            .unwrap_or_else(|| fallback(v6.unwrap_or(false), 1));
        let src = src.unwrap_or_else(|| fallback(dst.is_ipv6(), 7));
        let proto = m.proto.map_or(6, |p| p.number());
        let has_ports = proto == 6 || proto == 17;
        let icmp = proto == 1 || proto == 58;
        let port = |items: &[fluxgate_ruleset::PortItem], default: u16| {
            fluxgate_ruleset::Match::ranges(items)
                .next()
                .map_or(default, |r| r.lo)
        };
        out.push((
            scope.to_owned(),
            PacketHeader {
                src,
                dst,
                proto,
                sport: has_ports.then(|| port(&m.sport, 40000)),
                dport: has_ports.then(|| port(&m.dport, 80)),
                tcp_flags: (proto == 6).then(|| m.tcp_flags.map_or(0x02, |f| f.value)),
                icmp_type: icmp.then(|| m.icmp_type.unwrap_or(8)),
                icmp_code: icmp.then(|| m.icmp_code.unwrap_or(0)),
                iif: None,
                vlan: m.vlan,
            },
        ));
    };
    for r in &rs.gateway().rules {
        push("gateway", r, &[]);
    }
    for t in rs.tenants() {
        for r in &t.rules {
            push(&t.name, r, &t.prefixes);
        }
    }
    for t in rs.tenants() {
        if let Some(dst) = tenant_dst(&t.prefixes, None) {
            out.push((
                t.name.clone(),
                PacketHeader {
                    src: fallback(dst.is_ipv6(), 9),
                    dst,
                    proto: 17,
                    sport: Some(1),
                    dport: Some(9),
                    tcp_flags: None,
                    icmp_type: None,
                    icmp_code: None,
                    iif: None,
                    vlan: None,
                },
            ));
        }
    }
    if out.len() > MAX_WITNESSES {
        let step = out.len() as f64 / MAX_WITNESSES as f64;
        out = (0..MAX_WITNESSES)
            .map(|i| out[(i as f64 * step) as usize].clone())
            .collect();
    }
    out
}
