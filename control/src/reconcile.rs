//! Reconciling an opened interface's journal with the kernel: the pinned
//! slots are the truth for what is live, so a crash between publishing and
//! recording is reported and repaired, a lost journal is refused before any
//! slot could be reused, and records whose tables are gone are forgotten.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use fluxgate_dataplane::{Slot, Tables};

use crate::{
    ControlError, Interface, TableScope,
    interface::list_or_none,
    store::{IfaceState, Manifest, Record},
};

impl Interface {
    /// Makes the recorded live manifest agree with the kernel's slots: a slot
    /// whose table is another kept generation than recorded (a crash between
    /// publish and record) is taken as the truth and logged as `recovered`.
    pub(crate) fn reconcile(&mut self) -> Result<(), ControlError> {
        // One read of the kept-table map for every kept table.
        let kept_ids = self.pinned.kept_table_ids()?;
        let mut notes = Vec::new();
        let mut live = self.state.live.clone();
        let records = self.records()?;
        // A lost `state.json` must not hand out generation numbers again:
        // pins of a number an apply is about to use are taken for orphans.
        if let Some(newest) = records.keys().next_back()
            && *newest > self.state.generation
        {
            notes.push(format!(
                "state.json knew generations up to {}, the journal has records up to {newest}",
                self.state.generation
            ));
            self.state.generation = *newest;
        }
        // Every tenant slot any kept record names, plus the recorded live ones
        // (names borrowed: 10,000 of them per record).
        let mut candidates: BTreeMap<&str, u32> = self
            .state
            .live
            .tenants
            .iter()
            .map(|(n, t)| (n.as_str(), t.slot))
            .collect();
        for r in records.values() {
            for (n, t) in &r.manifest.tenants {
                candidates.entry(n.as_str()).or_insert(t.slot);
            }
        }
        // The live table of every slot concerned, in one read per slot map.
        let slots: Vec<Slot> = [Slot::Dispatch, Slot::Global]
            .into_iter()
            .chain(candidates.values().map(|s| Slot::Tenant(*s)))
            .collect();
        let live_ids: HashMap<Slot, Option<u32>> = slots
            .iter()
            .copied()
            .zip(self.pinned.slot_tables(&slots)?.into_iter().map(|t| t.live))
            .collect();
        // Which kept table each live one is (only those: not every kept one).
        let wanted: std::collections::HashSet<u32> = live_ids.values().flatten().copied().collect();
        let ids: HashMap<u32, (TableScope, u64)> = kept_ids
            .iter()
            .filter(|(_, _, id)| wanted.contains(id))
            .filter_map(|(scope, g, id)| Some((*id, (scope.parse::<TableScope>().ok()?, *g))))
            .collect();
        let kept: Vec<(String, u64)> = kept_ids.into_iter().map(|(s, g, _)| (s, g)).collect();
        let mut check = |slot: Slot,
                         scope: &TableScope,
                         recorded: Option<u64>|
         -> Result<Option<u64>, ControlError> {
            let id = live_ids.get(&slot).copied().flatten();
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
        live.dispatch = check(Slot::Dispatch, &TableScope::Dispatch, live.dispatch)?;
        live.global = check(Slot::Global, &TableScope::Global, live.global)?;
        let mut tenants = BTreeMap::new();
        for (name, slot) in candidates {
            let recorded = live.tenants.get(name).map(|t| t.table);
            let scope = TableScope::Tenant(name.to_owned());
            if let Some(g) = check(Slot::Tenant(slot), &scope, recorded)? {
                tenants.insert(name.to_owned(), crate::store::TenantRef { slot, table: g });
            }
        }
        live.tenants = tenants;
        // Dispatch leads each destination to a tenant slot. If the journal
        // knows no manifest with the live dispatch table, it cannot know
        // which slots are in use, and the next apply could give a new tenant
        // a slot dispatch still leads another tenant's packets to: refuse.
        if let Some(d) = live.dispatch {
            let knows = |state: &IfaceState, records: &BTreeMap<u64, Arc<Record>>| {
                state.live.dispatch == Some(d)
                    || records.values().any(|r| r.manifest.dispatch == Some(d))
            };
            // Read again before refusing: a read-only view may have read the
            // journal just before an apply recorded and published `d`.
            if !knows(&self.state, &records) && !knows(&self.store.state()?, &self.records()?) {
                return Err(self.state_lost(&kept, d));
            }
        }
        // A restore under way still needs the records it restores from.
        if self.lock.is_some() && self.store.restore_point()?.is_none() {
            let forgotten = self.forget_unloaded_records(&kept, &live)?;
            if !forgotten.is_empty() {
                notes.push(format!(
                    "generation(s) {} forgotten: their tables are no longer loaded (a reboot?), \
                     so they cannot be rolled back to",
                    list_or_none(&forgotten.iter().map(u64::to_string).collect::<Vec<_>>())
                ));
            }
        }
        // An apply that died after its last flip published everything: finish it.
        let mut finished = None;
        for r in records.into_values().rev() {
            if !r.published && r.manifest == live {
                let mut r = (*r).clone();
                r.published = true;
                if self.lock.is_some() {
                    self.store.write_record(&r)?;
                }
                finished = Some(r.generation);
                notes.push(format!(
                    "generation {} had been published completely",
                    r.generation
                ));
                break;
            }
        }
        self.finished = finished;
        if !notes.is_empty() {
            if let Some(g) = finished {
                self.state.live_generation = g;
            }
            self.state.live = live;
            let generation = self.state.generation;
            self.push_event(
                generation,
                "recovered",
                None,
                format!(
                    "an interrupted change was found; state follows the kernel: {}",
                    notes.join("; ")
                ),
                None,
            );
            tracing::warn!(iface = self.name(), "{}", notes.join("; "));
            if self.lock.is_some() {
                self.store.write_state(&mut self.state)?;
            }
        }
        Ok(())
    }

    /// The error for a journal that does not know the pinned state.
    pub(crate) fn state_lost(&self, kept: &[(String, u64)], dispatch: u64) -> ControlError {
        let mut tenants: Vec<&str> = kept
            .iter()
            .filter_map(|(scope, _)| scope.strip_prefix("tenant-"))
            .collect();
        tenants.dedup();
        let iface = self.name();
        ControlError::State(format!(
            "the journal in {} does not match what is loaded on {iface}: the kernel filters \
             with dispatch table generation {dispatch} and keeps tables of tenant(s) {}, which \
             the journal does not record (it was deleted, damaged or replaced). Changing \
             anything now could give a tenant a slot that dispatch still leads another \
             tenant's packets to, so nothing was changed. Put the journal back, or start \
             afresh: `fluxgate detach {iface}` then `fluxgate load DIR {iface}`",
            self.store.dir().display(),
            list_or_none(&tenants.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>()),
        ))
    }

    /// Forgets the records of generations whose tables are not all loaded
    /// any more (after a reboot: every one): a rollback to them could only
    /// fail, and `status` would list them as kept. A record that `live` or a
    /// complete record still takes a table from stays: its files and hashes
    /// describe that table. Returns the numbers forgotten.
    pub(crate) fn forget_unloaded_records(
        &mut self,
        kept: &[(String, u64)],
        live: &Manifest,
    ) -> Result<Vec<u64>, ControlError> {
        // Loaded generations per table scope name, looked up without
        // building a name per manifest entry (10,000 per record).
        let mut loaded: HashMap<&str, BTreeSet<u64>> = HashMap::new();
        let mut loaded_tenants: HashMap<&str, BTreeSet<u64>> = HashMap::new();
        for (scope, g) in kept {
            match scope.strip_prefix("tenant-") {
                Some(t) => loaded_tenants.entry(t).or_default().insert(*g),
                None => loaded.entry(scope.as_str()).or_default().insert(*g),
            };
        }
        let has = |name: &str, g: u64| loaded.get(name).is_some_and(|s| s.contains(&g));
        let has_tenant =
            |name: &str, g: u64| loaded_tenants.get(name).is_some_and(|s| s.contains(&g));
        let records = self.records()?;
        let complete = |r: &Record| {
            let m = &r.manifest;
            m.dispatch.is_none_or(|g| has("dispatch", g))
                && m.global.is_none_or(|g| has("global", g))
                && m.tenants
                    .iter()
                    .all(|(n, t)| has_tenant(n.as_str(), t.table))
        };
        let complete: BTreeMap<u64, bool> =
            records.iter().map(|(g, r)| (*g, complete(r))).collect();
        let mut used: BTreeSet<u64> = BTreeSet::new();
        for m in std::iter::once(live).chain(
            records
                .iter()
                .filter(|(g, _)| complete[*g])
                .map(|(_, r)| &r.manifest),
        ) {
            used.extend(m.dispatch);
            used.extend(m.global);
            used.extend(m.tenants.values().map(|t| t.table));
        }
        let mut forgotten = Vec::new();
        for g in records.keys() {
            if !complete[g] && !used.contains(g) {
                self.store.forget_record(*g)?;
                forgotten.push(*g);
            }
        }
        if !forgotten.is_empty() {
            let mut sources = std::collections::HashSet::new();
            for g in self.records()?.keys() {
                let contents = self.store.contents(*g)?;
                sources.extend(contents.sources.iter().map(|(_, h)| h.clone()));
            }
            self.store.prune_sources(&sources)?;
        }
        Ok(forgotten)
    }
}

fn gen_text(g: Option<u64>) -> String {
    g.map_or("nothing".into(), |g| format!("generation {g}"))
}
