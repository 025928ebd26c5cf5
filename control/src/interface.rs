//! One interface opened for reading or changing: its pinned state, its
//! journal, its lock. The transactions that move slots live here (rollback,
//! discard, the slot transition they and `apply` share); applying a ruleset
//! is in [`crate::apply`], classifier versions in [`crate::upgrade`].
//!
//! The kernel is the truth for what is live: when an interface is opened,
//! the recorded live manifest is reconciled with the map ids in the slots,
//! so a crash between publishing and recording is reported and repaired,
//! never guessed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
    sync::Arc,
};

use fluxgate_dataplane::{PinnedAttachment, Slot, StagedTable, Tables};
use fluxgate_ruleset::{Config, Ruleset, Scope, SlotPlan, ValidRuleset, validate};
use serde::Serialize;

use crate::{
    ControlError, TableScope,
    host::{crash_point, now, who},
    store::{Event, IfaceState, Manifest, Record, SlotInfo, StateDir, Store},
};

/// Generations kept loaded (pinned) for instant rollback, besides the live one.
pub const RETAIN: usize = 8;

/// Tables placed per batch (one slot-map write each; bounds open handles).
const PLACE_CHUNK: usize = 2048;

/// An interface opened for changes (or read-only): its pinned state, its
/// store, the lock. Get one from [`crate::Gateway::open`] or
/// [`crate::Gateway::open_read`].
pub struct Interface {
    pub(crate) pinned: PinnedAttachment,
    pub(crate) store: Store,
    pub(crate) state: IfaceState,
    /// The network namespace the interface is in (`None`: the caller's).
    pub(crate) netns: Option<String>,
    /// `None` for a read-only view.
    pub(crate) lock: Option<crate::store::Lock>,
    /// An interrupted apply found to be completely published (in a read-only
    /// view its record is not rewritten).
    pub(crate) finished: Option<u64>,
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
    /// Slots flipped (`tenant-acme@3`, `global@2`, `Tenant(4) emptied`).
    pub flipped: Vec<String>,
}

/// What [`Interface::discard_interrupted`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Discarded {
    /// Interface.
    pub iface: String,
    /// The interrupted generations forgotten (empty: there was none).
    pub discarded: Vec<u64>,
}

/// The slot a table scope lives in, given the tenant's slot.
fn slot_of(scope: &TableScope, tenant_slot: u32) -> Slot {
    match scope {
        TableScope::Dispatch => Slot::Dispatch,
        TableScope::Global => Slot::Global,
        TableScope::Tenant(_) => Slot::Tenant(tenant_slot),
    }
}

impl Interface {
    /// Opens `iface` (attached already): takes its lock when `write`, adopts
    /// the pinned state and reconciles the recorded live state with the kernel.
    pub(crate) fn open(
        pins: &Path,
        state: &StateDir,
        netns: Option<&str>,
        iface: &str,
        write: bool,
    ) -> Result<Interface, ControlError> {
        let pinned = PinnedAttachment::open(pins, iface)?;
        let store = state.store(iface);
        let lock = if write { Some(store.lock()?) } else { None };
        let state = store.state()?;
        let mut it = Interface {
            pinned,
            store,
            state,
            netns: netns.map(str::to_owned),
            lock,
            finished: None,
        };
        it.reconcile()?;
        Ok(it)
    }

    /// Opens `iface`, just attached again by a restore, under `lock`, as a
    /// journal whose live manifest is not loaded: nothing is live in the
    /// kernel (the restore applies it again). No reconcile, nothing written:
    /// the recorded live manifest stays on disk until the restore's apply
    /// replaces it.
    pub(crate) fn open_restoring(
        pins: &Path,
        store: Store,
        netns: Option<&str>,
        iface: &str,
        lock: crate::store::Lock,
    ) -> Result<Interface, ControlError> {
        let pinned = PinnedAttachment::open(pins, iface)?;
        let mut state = store.state()?;
        state.live = Manifest::default();
        Ok(Interface {
            pinned,
            store,
            state,
            netns: netns.map(str::to_owned),
            lock: Some(lock),
            finished: None,
        })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        self.pinned.iface()
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

    /// The journal.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The history, oldest first; with `tenant`, only its events and the
    /// gateway-wide ones.
    pub fn history(&self, tenant: Option<&str>) -> Vec<Event> {
        self.state
            .events
            .iter()
            .filter(|e| tenant.is_none() || e.tenant.is_none() || e.tenant.as_deref() == tenant)
            .cloned()
            .collect()
    }

    pub(crate) fn writable(&self) -> Result<(), ControlError> {
        if self.lock.is_none() {
            return Err(ControlError::Refused(
                "this interface was opened read-only".into(),
            ));
        }
        Ok(())
    }

    /// Generations kept (recorded and loaded), ascending.
    pub fn kept(&self) -> Result<Vec<u64>, ControlError> {
        self.store.recorded()
    }

    pub(crate) fn records(&self) -> Result<BTreeMap<u64, Arc<Record>>, ControlError> {
        let mut out = BTreeMap::new();
        for g in self.store.recorded()? {
            if let Some(r) = self.store.record_shared(g)? {
                out.insert(g, r);
            }
        }
        Ok(out)
    }

    /// The record of kept generation `g`, or a clear "not kept" error.
    pub(crate) fn kept_record(&self, g: u64) -> Result<Record, ControlError> {
        self.store.record(g)?.ok_or_else(|| {
            ControlError::NotFound(format!(
                "generation {g} is not kept (kept: {})",
                list_or_none(
                    &self
                        .kept()
                        .unwrap_or_default()
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                )
            ))
        })
    }

    /// The live slot of tenant `name`, or a clear "not live" error.
    pub(crate) fn live_tenant_slot(&self, name: &str) -> Result<u32, ControlError> {
        self.state
            .live
            .tenants
            .get(name)
            .map(|t| t.slot)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "no tenant named {name:?} is live on {}",
                    self.name()
                ))
            })
    }

    /// The slot plan that keeps tenants in their slots and unchanged rules on
    /// their counters, and holds every slot a kept generation uses.
    pub(crate) fn plan(
        &self,
        records: &BTreeMap<u64, Arc<Record>>,
    ) -> Result<SlotPlan, ControlError> {
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
            for c in &self.store.contents(r.generation)?.counters {
                plan.reserved_counters.insert(c.slot);
                plan.counters
                    .entry((c.scope.clone(), c.rule_id()))
                    .or_insert(c.slot);
            }
        }
        Ok(plan)
    }

    /// Flips slots from the live manifest to `to`: tenants first, then the
    /// global rules, then dispatch, then removed tenants' slots are emptied.
    /// If a flip fails, the flips already done are undone (in reverse).
    pub(crate) fn transition(&mut self, to: &Manifest) -> Result<Vec<String>, ControlError> {
        let from = self.state.live.clone();
        // Names borrowed: a manifest has one entry per tenant (10,000s).
        fn by_slot(m: &Manifest) -> BTreeMap<u32, (&str, u64)> {
            m.tenants
                .iter()
                .map(|(n, t)| (t.slot, (n.as_str(), t.table)))
                .collect()
        }
        let (old_t, new_t) = (by_slot(&from), by_slot(to));
        let owned = |e: &(&str, u64)| (TableScope::Tenant(e.0.to_owned()), e.1);
        // (slot, scope and generation of the new table, of the old one)
        type Step = (Slot, Option<(TableScope, u64)>, Option<(TableScope, u64)>);
        let mut steps: Vec<Step> = Vec::new();
        for (slot, new) in &new_t {
            if old_t.get(slot) != Some(new) {
                steps.push((
                    Slot::Tenant(*slot),
                    Some(owned(new)),
                    old_t.get(slot).map(owned),
                ));
            }
        }
        let gw = |g: Option<u64>, s: TableScope| g.map(|g| (s, g));
        if from.global != to.global {
            steps.push((
                Slot::Global,
                gw(to.global, TableScope::Global),
                gw(from.global, TableScope::Global),
            ));
        }
        if from.dispatch != to.dispatch {
            steps.push((
                Slot::Dispatch,
                gw(to.dispatch, TableScope::Dispatch),
                gw(from.dispatch, TableScope::Dispatch),
            ));
        }
        for (slot, old) in &old_t {
            if !new_t.contains_key(slot) {
                steps.push((Slot::Tenant(*slot), None, Some(owned(old))));
            }
        }
        // 1. Place each new table in its slot's standby buffer, unless it is
        //    already there (the previous generation: rollback is then a pure
        //    flip). One array write per chunk (a region base); nothing live
        //    changes. In chunks, so a 10k-tenant apply never holds 10k handles.
        let mut flips: Vec<Slot> = Vec::new();
        let mut to_place: Vec<(Slot, StagedTable)> = Vec::new();
        let placing: Vec<(Slot, &TableScope, u64)> = steps
            .iter()
            .filter_map(|(slot, new, _)| new.as_ref().map(|(scope, g)| (*slot, scope, *g)))
            .collect();
        let now = self
            .pinned
            .slot_tables(&placing.iter().map(|(s, ..)| *s).collect::<Vec<_>>())?;
        // Many tables (a first load): every kept handle in one read.
        let mut handles: HashMap<(String, u64), StagedTable> = if placing.len() > 64 {
            self.pinned
                .kept_table_handles()?
                .into_iter()
                .map(|(scope, g, t)| ((scope, g), t))
                .collect()
        } else {
            HashMap::new()
        };
        for ((slot, scope, g), now) in placing.iter().zip(now) {
            let (slot, g) = (*slot, *g);
            let name = scope.to_string();
            let table = match handles.remove(&(name, g)) {
                Some(t) => t,
                None => self.pinned.kept_table(&scope.to_string(), g)?,
            };
            if now.live == Some(table.id()) {
                continue;
            }
            if now.standby != Some(table.id()) {
                to_place.push((slot, table));
                if to_place.len() == PLACE_CHUNK {
                    self.place_chunk(&mut to_place)?;
                }
            }
            flips.push(slot);
        }
        self.place_chunk(&mut to_place)?;
        crash_point("placed");
        // 2. Flip, in order: microseconds each. If one fails, flip back the
        //    ones already flipped — their previous tables are in standby.
        //    One batch per slot map (in order, each slot atomically).
        if let Some((first, rest)) = flips.split_first() {
            self.pinned.flip(*first)?;
            crash_point("flipping");
            if let Err(e) = self.pinned.flip_all(rest) {
                let _best_effort = self.pinned.flip(*first);
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
        let span = tracing::info_span!("rollback", iface = self.name(), tenant, to).entered();
        let started = std::time::Instant::now();
        let kept = self.kept()?;
        let current = match tenant {
            Some(t) => self
                .state
                .live
                .tenants
                .get(t)
                .map(|r| r.table)
                .ok_or_else(|| ControlError::NotFound(format!("no tenant named {t:?} is live")))?,
            None => self.state.live_generation,
        };
        let target = match to {
            Some(g) => g,
            None => *kept.iter().rev().find(|g| **g < current).ok_or_else(|| {
                ControlError::NotFound(format!(
                    "no kept generation before {current} to roll back to (kept: {})",
                    list_or_none(&kept.iter().map(u64::to_string).collect::<Vec<_>>())
                ))
            })?,
        };
        let record = self.kept_record(target)?;
        let mut manifest = self.state.live.clone();
        match tenant {
            Some(t) => {
                let r = record.manifest.tenants.get(t).ok_or_else(|| {
                    ControlError::NotFound(format!(
                        "tenant {t:?} did not exist in generation {target}"
                    ))
                })?;
                let live_slot = self.live_tenant_slot(t)?;
                if r.slot != live_slot {
                    return Err(ControlError::Refused(format!(
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
        self.push_event(
            target,
            "rollback",
            tenant.map(str::to_owned),
            format!("from {current} to {target}: {}", list_or_none(&flipped)),
            Some(started.elapsed().as_millis() as u64),
        );
        self.store.write_state(&mut self.state)?;
        self.record_rollback(tenant, target, &flipped);
        drop(span);
        Ok(RolledBack {
            iface: self.name().to_owned(),
            to: target,
            tenant: tenant.map(str::to_owned),
            flipped,
        })
    }

    /// Makes `to` live (one flip per scope that differs; an empty manifest
    /// empties every slot, as before the first apply), records it as
    /// `live_generation`, and logs `what` with `detail`.
    pub(crate) fn restore(
        &mut self,
        to: &Manifest,
        live_generation: u64,
        what: &str,
        detail: String,
    ) -> Result<Vec<String>, ControlError> {
        let started = std::time::Instant::now();
        let flipped = self.transition(to)?;
        self.state.live = to.clone();
        self.state.live_generation = live_generation;
        self.push_event(
            live_generation,
            what,
            None,
            format!("{detail}; flipped {}", list_or_none(&flipped)),
            Some(started.elapsed().as_millis() as u64),
        );
        self.store.write_state(&mut self.state)?;
        Ok(flipped)
    }

    /// Forgets generations beyond the newest [`RETAIN`], except those the live
    /// manifest (or a kept generation) still uses; unpins unused tables.
    pub(crate) fn prune(&mut self) -> Result<(), ControlError> {
        let records = self.records()?;
        let newest: BTreeSet<u64> = records.keys().rev().take(RETAIN).copied().collect();
        let mut keep: BTreeSet<u64> = newest.clone();
        let manifests: Vec<&Manifest> = std::iter::once(&self.state.live)
            .chain(
                newest
                    .iter()
                    .filter_map(|g| records.get(g))
                    .map(|r| &r.manifest),
            )
            .collect();
        for m in &manifests {
            keep.extend(m.dispatch);
            keep.extend(m.global);
            keep.extend(m.tenants.values().map(|t| t.table));
        }
        // Whether a kept table (`scope`, `g`) is used by one of them (looked
        // up by name: no name built per manifest entry).
        let used = |scope: &str, g: u64| {
            manifests.iter().any(|m| match scope {
                "dispatch" => m.dispatch == Some(g),
                "global" => m.global == Some(g),
                s => s
                    .strip_prefix("tenant-")
                    .and_then(|n| m.tenants.get(n))
                    .is_some_and(|t| t.table == g),
            })
        };
        let forget: Vec<u64> = records
            .keys()
            .filter(|g| !keep.contains(g))
            .copied()
            .collect();
        // Sources become unreferenced only when a record goes (listing
        // 10,000 of them after every apply would cost more than the apply).
        if !forget.is_empty() {
            let mut sources = std::collections::HashSet::new();
            for g in &keep {
                if records.contains_key(g) {
                    let contents = self.store.contents(*g)?;
                    sources.extend(contents.sources.iter().map(|(_, h)| h.clone()));
                }
            }
            for g in &forget {
                self.store.forget_record(*g)?;
            }
            self.store.prune_sources(&sources)?;
        }
        let unused: Vec<(String, u64)> = self
            .pinned
            .kept_tables()?
            .into_iter()
            .filter(|(scope, g)| !used(scope, *g))
            .collect();
        let unused: Vec<(&str, u64)> = unused.iter().map(|(s, g)| (s.as_str(), *g)).collect();
        self.pinned.forget_tables(&unused)?;
        Ok(())
    }

    /// Generations an interrupted apply recorded but never finished publishing
    /// (the process died): resume by applying again, or
    /// [`Interface::discard_interrupted`].
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
    pub fn discard_interrupted(&mut self) -> Result<Discarded, ControlError> {
        self.writable()?;
        let gens = self.interrupted()?;
        let iface = self.name().to_owned();
        if gens.is_empty() {
            return Ok(Discarded {
                iface,
                discarded: gens,
            });
        }
        let live_uses = manifest_tables(&self.state.live)
            .iter()
            .any(|(_, g)| gens.contains(g));
        if live_uses {
            let target = self.state.live_generation;
            if target == 0 {
                return Err(ControlError::Refused(
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
        Ok(Discarded {
            iface,
            discarded: gens,
        })
    }

    /// What each live counter slot counts.
    pub fn live_counters(&self) -> Result<Vec<SlotInfo>, ControlError> {
        manifest_counters(&self.store, &self.state.live)
    }

    /// The files of the live ruleset (each scope from the generation it is at).
    pub fn live_files(&self) -> Result<Vec<(String, String)>, ControlError> {
        manifest_files(&self.store, &self.state.live)
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

    /// Adds a line to the history.
    pub fn note(&mut self, what: &str, detail: String) -> Result<(), ControlError> {
        self.writable()?;
        self.log(what, None, detail)
    }

    pub(crate) fn log(
        &mut self,
        what: &str,
        tenant: Option<String>,
        detail: String,
    ) -> Result<(), ControlError> {
        let generation = self.state.generation;
        self.push_event(generation, what, tenant, detail, None);
        self.store.write_state(&mut self.state)
    }

    pub(crate) fn push_event(
        &mut self,
        generation: u64,
        what: &str,
        tenant: Option<String>,
        detail: String,
        duration_ms: Option<u64>,
    ) {
        tracing::info!(iface = self.name(), generation, what, tenant, "{detail}");
        self.state.events.push(Event {
            who: who(),
            duration_ms,
            at: now(),
            generation,
            what: what.into(),
            tenant,
            detail,
        });
    }
}

/// The files of manifest `m` as the journal recorded them: each scope's file
/// from the record of the generation its table comes from (a live manifest
/// can be a mix after per-tenant rollbacks). Empty for an empty manifest.
pub(crate) fn manifest_files(
    store: &Store,
    m: &Manifest,
) -> Result<Vec<(String, String)>, ControlError> {
    let Some(g) = m.global else {
        return Ok(Vec::new());
    };
    // Per generation: file name → (path, text, or the hash of a text kept
    // in `sources/` by an older journal).
    type ByName = HashMap<String, (String, Result<String, String>)>;
    let mut records: HashMap<u64, ByName> = HashMap::new();
    let name_of = |p: &str| Some(Path::new(p).file_name()?.to_str()?.to_owned());
    let mut file = |g: u64, name: &str| -> Result<(String, String), ControlError> {
        let by_name = match records.entry(g) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let contents = store.contents(g)?;
                let texts = store
                    .files(g)?
                    .into_iter()
                    .filter_map(|(p, t)| Some((name_of(&p)?, (p, Ok(t)))));
                let hashes = contents
                    .sources
                    .iter()
                    .filter_map(|(p, h)| Some((name_of(p)?, (p.clone(), Err(h.clone())))));
                e.insert(hashes.chain(texts).collect())
            }
        };
        let (path, text) = by_name
            .get(name)
            .cloned()
            .ok_or_else(|| ControlError::State(format!("generation {g} has no file {name}")))?;
        match text {
            Ok(text) => Ok((path, text)),
            Err(hash) => Ok((path, store.source(&hash)?)),
        }
    };
    let mut files = vec![file(g, fluxgate_ruleset::GATEWAY_FILE)?];
    for (n, t) in &m.tenants {
        files.push(file(t.table, &format!("{n}.fg"))?);
    }
    Ok(files)
}

/// What each counter slot of manifest `m` counts: each scope's slots from
/// the record of the generation its table comes from (records hold only the
/// scopes they changed). Sorted by slot.
pub(crate) fn manifest_counters(
    store: &Store,
    m: &Manifest,
) -> Result<Vec<SlotInfo>, ControlError> {
    let mut by_gen: BTreeMap<u64, BTreeSet<Scope>> = BTreeMap::new();
    if let Some(g) = m.global {
        by_gen.entry(g).or_default().insert(Scope::Gateway);
    }
    for (n, t) in &m.tenants {
        by_gen
            .entry(t.table)
            .or_default()
            .insert(Scope::Tenant(n.clone()));
    }
    let mut out = Vec::new();
    for (g, scopes) in by_gen {
        out.extend(
            store
                .contents(g)?
                .counters
                .iter()
                .filter(|c| scopes.contains(&c.scope))
                .cloned(),
        );
    }
    out.sort_by_key(|c| c.slot);
    Ok(out)
}

/// The tables a manifest uses, as `(scope, generation)`.
pub(crate) fn manifest_tables(m: &Manifest) -> Vec<(TableScope, u64)> {
    let mut out = Vec::new();
    out.extend(m.dispatch.map(|g| (TableScope::Dispatch, g)));
    out.extend(m.global.map(|g| (TableScope::Global, g)));
    out.extend(
        m.tenants
            .iter()
            .map(|(n, t)| (TableScope::Tenant(n.clone()), t.table)),
    );
    out
}

/// The slot each table of a manifest lives in.
pub(crate) fn manifest_slots(m: &Manifest) -> Vec<(TableScope, Slot, u64)> {
    manifest_tables(m)
        .into_iter()
        .map(|(scope, g)| {
            let tenant_slot = scope
                .tenant()
                .and_then(|t| m.tenants.get(t))
                .map_or(0, |t| t.slot);
            let slot = slot_of(&scope, tenant_slot);
            (scope, slot, g)
        })
        .collect()
}

pub(crate) fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
