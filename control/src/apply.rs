//! Applying a ruleset to an interface as a new generation.
//!
//! How a change goes live (each phase is a `tracing` span, with its sizes):
//! 1. `parse`, `validate`, `compile` with the slot plan of the kept
//!    generations (a tenant keeps its kernel slot, an unchanged rule keeps
//!    its counter), and the tenants' quotas; a tenant whose file fails is
//!    refused alone and keeps its live file, unless the apply is atomic
//!    (the `admit` module; gateway.fg errors refuse everything). A tenant
//!    whose build key (SHA-256 of its file, slot and context) is its live
//!    table's is not compiled at all: its live table stays;
//! 2. `stage` *only the tables whose content changed* beside the live ones
//!    and keep them in the attachment's kept-table map (for rollback);
//! 3. `preflight`: every guard, and the witnesses of the changed scopes, run
//!    through the staged tables in the kernel (probe overlay) and through the
//!    reference classifier; any difference aborts, nothing live changed;
//! 4. record the generation: what it staged (`Contents`: texts, hashes,
//!    build keys, counter slots of its own tables only) and its manifest;
//! 5. `publish`: changed tenant slots first, then global rules, then
//!    dispatch, then empty the slots of removed tenants — each one atomic
//!    slot update, in one batch per slot map; if one fails, the ones already
//!    flipped are flipped back; then the live manifest (atomic file writes).

use std::{
    collections::{BTreeMap, BTreeSet},
    hash::Hasher,
    path::Path,
};

use fluxgate_common::table::{Cell, Header};
use fluxgate_dataplane::{Slot, StagedTable, Tables};
use fluxgate_ruleset::{CompileOptions, compile_with, preflight};
use serde::Serialize;

use crate::{
    ControlError, Interface, RefusedTenant, RulesetSource, TableScope,
    admit::{Admitted, admit},
    host::{self, crash_point, now, who},
    interface::{list_or_none, manifest_tables},
    store::{Contents, Manifest, Record, Store, TenantRef},
};

/// Options of [`Interface::apply`].
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Why (recorded in the history).
    pub reason: String,
    /// Only these tenants (`gateway`: the gateway file) change; every other
    /// scope keeps its live rules. Empty: the whole ruleset.
    pub tenants: Vec<String>,
    /// Do everything but publish, kernel preflight included (like `nft -c`).
    pub dry_run: bool,
    /// All or nothing: any error refuses the whole apply. Otherwise a tenant
    /// whose file is invalid (or over its quota) is refused alone and keeps
    /// its live rules while the others apply ([`Applied::refused`]); an error
    /// in gateway.fg refuses everything either way.
    pub atomic: bool,
}

/// What [`Interface::apply`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    /// Interface.
    pub iface: String,
    /// The new generation (unchanged when nothing changed; with `dry_run`,
    /// the number it would get).
    pub generation: u64,
    /// Nothing was published.
    pub dry_run: bool,
    /// Tables staged and published (`dispatch`, `global`, `tenant-<name>`).
    pub changed: Vec<TableScope>,
    /// Tenants removed.
    pub removed: Vec<String>,
    /// Witness packets run through the staged tables in the kernel.
    pub preflight_packets: usize,
    /// Tenants loaded.
    pub tenants: usize,
    /// Tenant tables compiled. A tenant whose file, slot and gateway file
    /// are those its live table was built from is not compiled, staged or
    /// witnessed again (its guards still run): a one-tenant change compiles
    /// one tenant.
    pub compiled: usize,
    /// Rules loaded (gateway and tenants).
    pub rules: usize,
    /// Kernel memory of the newly staged tables, bytes.
    pub table_bytes: u64,
    /// Validation warnings, rendered.
    pub warnings: Vec<String>,
    /// Tenants whose new files were refused (invalid, or over a quota): they
    /// keep their live rules while the others applied. Never with
    /// [`ApplyOptions::atomic`], which refuses everything instead.
    pub refused: Vec<RefusedTenant>,
}

impl Applied {
    /// Whether anything changed (or, in a dry run, would change).
    pub fn changes_anything(&self) -> bool {
        !(self.changed.is_empty() && self.removed.is_empty())
    }

    /// Whether some tenants were refused while the rest applied.
    pub fn partial(&self) -> bool {
        !self.refused.is_empty()
    }
}

impl Interface {
    /// Applies `source` as a new generation (see the module docs). Any
    /// failure before publishing leaves the interface exactly as it was.
    /// [`Interface::apply`] is this, with its outcome recorded.
    pub(crate) fn apply_unrecorded(
        &mut self,
        source: &RulesetSource,
        opts: &ApplyOptions,
    ) -> Result<Applied, ControlError> {
        self.writable()?;
        let span = tracing::info_span!(
            "apply",
            iface = self.name(),
            source = %source.label().display(),
            generation = self.state.generation + 1
        );
        let _entered = span.enter();
        host::raise_open_file_limit();
        let started = std::time::Instant::now();
        let reason = opts.reason.as_str();
        let files =
            tracing::info_span!("read").in_scope(|| self.files_to_apply(source, &opts.tenants))?;
        let records = self.records()?;
        let generation = self.state.generation + 1;
        let interfaces = host::in_netns(self.netns.as_deref(), || Ok(host::interfaces()))?;
        let plan = self.plan(&records)?;
        // More tenants or counters than the attachment has slots: refused
        // at compile.
        let tenant_slots = self.pinned.tenant_slots();
        let counter_slots = self.pinned.counter_slots();
        // Tenants whose file, slot and context are those of their live
        // table: not compiled, staged or checked again (their table stays).
        let live = &self.state.live;
        let context = build_context(&files, &interfaces);
        let (recorded_keys, live_hashes) = live_tables(live, &self.store)?;
        // The key of a file's table, in the tenant slot `slots` gives it.
        let key_of = |path: &str, text: &str, slots: &dyn Fn(&str) -> Option<u32>| {
            let scope = TableScope::of_file(path);
            let slot = scope.tenant().and_then(slots);
            let key = table_key(&context, slot, text);
            (scope, key)
        };
        let planned = |t: &str| plan.tenants.get(t).copied();
        let reuse: BTreeSet<String> = files
            .iter()
            .filter_map(|(p, text)| {
                let (scope, key) = key_of(p, text, &planned);
                let tenant = scope.tenant()?;
                let l = live.tenants.get(tenant)?;
                (plan.tenants.get(tenant) == Some(&l.slot)
                    && recorded_keys.get(&scope) == Some(&key))
                .then(|| tenant.to_owned())
            })
            .collect();
        tracing::debug!(
            reused = reuse.len(),
            keyed = recorded_keys.len(),
            "tables kept without compiling"
        );
        let Admitted {
            files,
            rs,
            image,
            refused,
            refused_errors,
        } = admit(
            files,
            opts.atomic,
            self.pinned.source_buckets(),
            || self.live_files(),
            |rs| {
                compile_with(
                    rs,
                    &CompileOptions {
                        interfaces: interfaces.clone(),
                        generation,
                        plan: plan.clone(),
                        reuse: reuse.clone(),
                        tenant_slots,
                        counter_slots,
                        ..Default::default()
                    },
                )
            },
        )?;
        let mut manifest = Manifest::default();
        let mut hashes = BTreeMap::new();
        let mut pending: Vec<(TableScope, Slot)> = Vec::new();
        let mut stage = |scope: TableScope, slot: Slot, cells: &[Cell], live_gen: Option<u64>| {
            let h = content_hash(cells);
            hashes.insert(scope.clone(), h);
            if let Some(g) = live_gen
                && live_hashes.get(&scope) == Some(&h)
            {
                return g;
            }
            pending.push((scope, slot));
            generation
        };
        manifest.dispatch = Some(stage(
            TableScope::Dispatch,
            Slot::Dispatch,
            &image.dispatch.cells,
            live.dispatch,
        ));
        manifest.global = Some(stage(
            TableScope::Global,
            Slot::Global,
            &image.global.cells,
            live.global,
        ));
        for t in &image.tenants {
            let live_t = live.tenants.get(&t.name).filter(|l| l.slot == t.index);
            let g = stage(
                TableScope::Tenant(t.name.clone()),
                Slot::Tenant(t.index),
                &t.table.cells,
                live_t.map(|l| l.table),
            );
            manifest.tenants.insert(
                t.name.clone(),
                TenantRef {
                    slot: t.index,
                    table: g,
                },
            );
        }
        for (name, index) in &image.reused {
            if let Some(l) = live.tenants.get(name) {
                manifest.tenants.insert(
                    name.clone(),
                    TenantRef {
                        slot: *index,
                        table: l.table,
                    },
                );
            }
        }
        let removed: Vec<String> = live
            .tenants
            .keys()
            .filter(|n| !manifest.tenants.contains_key(*n))
            .cloned()
            .collect();
        let changed: Vec<TableScope> = pending.iter().map(|(s, _)| s.clone()).collect();
        let rules =
            rs.gateway().rules.len() + rs.tenants().iter().map(|t| t.rules.len()).sum::<usize>();
        let mut warnings: Vec<String> = rs.warnings().iter().map(|d| d.render()).collect();
        warnings.extend(preflight::unguarded_warning(&rs));
        let mut applied = Applied {
            iface: self.name().to_owned(),
            generation: self.state.generation,
            dry_run: opts.dry_run,
            changed: changed.clone(),
            removed: removed.clone(),
            preflight_packets: 0,
            tenants: image.tenants.len() + image.reused.len(),
            compiled: image.tenants.len(),
            rules,
            table_bytes: 0,
            warnings,
            refused,
        };
        if !applied.changes_anything() {
            if applied.partial() {
                // Only refused tenants had changes: that is a rejected ruleset,
                // as it was before tenants could be refused alone.
                return Err(ControlError::Ruleset(refused_errors));
            }
            tracing::info!("nothing changed");
            return Ok(applied);
        }

        // Every changed table into the cell pool at once (one copy syscall;
        // `PoolFull` before anything live changed when it does not fit).
        let staged: Vec<(TableScope, Slot, StagedTable)> = {
            let _s = tracing::info_span!("stage", tables = pending.len()).entered();
            let by_index: std::collections::HashMap<u32, &[Cell]> = image
                .tenants
                .iter()
                .map(|t| (t.index, &t.table.cells[..]))
                .collect();
            let cells_of = |slot: Slot| -> &[Cell] {
                match slot {
                    Slot::Dispatch => &image.dispatch.cells,
                    Slot::Global => &image.global.cells,
                    Slot::Tenant(i) => by_index.get(&i).copied().unwrap_or(&[]),
                }
            };
            let names: Vec<String> = pending.iter().map(|(s, _)| s.to_string()).collect();
            let tables: Vec<(&str, &[Cell])> = pending
                .iter()
                .zip(&names)
                .map(|((_, slot), name)| (name.as_str(), cells_of(*slot)))
                .collect();
            let made = self.pinned.stage_all(&tables)?;
            pending
                .into_iter()
                .zip(made)
                .map(|((scope, slot), table)| (scope, slot, table))
                .collect()
        };
        let table_bytes = staged.iter().map(|(_, _, t)| t.bytes()).sum();
        let counters = preflight::describe(&rs, &image);

        crash_point("staged");
        // Preflight against the staged tables, through the version serving
        // packets of no tenant (tenants may be new: they get that one too).
        let preflight_packets = {
            let _s = tracing::info_span!("preflight").entered();
            let version = self.pinned.version_of(None)?;
            let mut probe = self.pinned.probe(version)?;
            let overlays: Vec<(Slot, &StagedTable)> = staged
                .iter()
                .map(|(_, slot, table)| (*slot, table))
                .collect();
            probe.overlay_all(&overlays)?;
            let index = crate::preflight::SlotIndex::of(&image, &plan);
            // Every guard; the witnesses of what changed (all of them when
            // the global rules or the dispatch changed: those touch everyone).
            let everyone = changed
                .iter()
                .any(|s| matches!(s, TableScope::Global | TableScope::Dispatch));
            let probes = preflight::probes_of(&rs, |scope| {
                everyone
                    || match scope {
                        fluxgate_ruleset::Scope::Gateway => false,
                        fluxgate_ruleset::Scope::Tenant(t) => {
                            changed.contains(&TableScope::Tenant(t.clone()))
                        }
                    }
            });
            let (n, mismatches) = crate::preflight::run(&probe, &rs, &index, &probes)?;
            drop(probe);
            tracing::info!(packets = n, mismatches = mismatches.len(), "preflight done");
            if !mismatches.is_empty() {
                let text = crate::preflight::report(&mismatches);
                if !opts.dry_run {
                    self.record_preflight(generation, reason, &mismatches);
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

        let publish = tracing::info_span!("publish", generation).entered();
        // Keep the staged tables (pinned), record the generation, then publish.
        // Pins of this generation number can only be orphans of an apply that
        // died before recording it (never live): drop them first.
        let orphans: Vec<(String, u64)> = self
            .pinned
            .kept_tables()?
            .into_iter()
            .filter(|(_, g)| *g == generation)
            .collect();
        let orphans: Vec<(&str, u64)> = orphans.iter().map(|(s, g)| (s.as_str(), *g)).collect();
        self.pinned.forget_tables(&orphans)?;
        let scopes: Vec<String> = staged.iter().map(|(s, ..)| s.to_string()).collect();
        let keep: Vec<(&str, u64, &StagedTable)> = scopes
            .iter()
            .zip(&staged)
            .map(|(scope, (_, _, table))| (scope.as_str(), generation, table))
            .collect();
        self.pinned.keep_tables(&keep)?;
        // The pins hold them now; don't hold a descriptor per table too.
        drop(staged);
        crash_point("kept");
        // A record holds what this generation changed: the files, counter
        // slots and content hashes of the scopes whose table it staged.
        // Every other scope's table comes from an older generation, whose
        // record (kept while a kept manifest uses its tables) holds them: a
        // one-tenant change records one tenant, not ten thousand.
        let changed_set: BTreeSet<&TableScope> = changed.iter().collect();
        let own = |scope: &TableScope| changed_set.contains(scope);
        let own_files: Vec<&(String, String)> = files
            .iter()
            .filter(|(p, _)| own(&TableScope::of_file(p)))
            .collect();
        let hashes: BTreeMap<TableScope, u64> =
            hashes.into_iter().filter(|(s, _)| own(s)).collect();
        let keys: BTreeMap<TableScope, String> = own_files
            .iter()
            .map(|(p, text)| key_of(p, text, &|t| manifest.tenants.get(t).map(|r| r.slot)))
            .collect();
        let counters: Vec<crate::store::SlotInfo> = counters
            .into_iter()
            .filter(|c| own(&TableScope::of_rule_scope(&c.scope)))
            .map(Into::into)
            .collect();
        let contents = Contents {
            files: own_files.iter().map(|f| (*f).clone()).collect(),
            hashes,
            keys,
            counters,
            ..Contents::default()
        };
        let mut record = Record {
            generation,
            created: now(),
            who: who(),
            reason: reason.to_owned(),
            source: source.label(),
            changed: changed.clone(),
            removed: removed.clone(),
            manifest: manifest.clone(),
            preflight_packets,
            published: false,
            ..Record::default()
        };
        self.store.write_generation(&record, &contents)?;
        self.state.generation = generation;
        self.store.write_state(&mut self.state)?;
        crash_point("recorded");
        // Slots new in this generation may hold counts of a rule long gone.
        let fresh: Vec<u32> = {
            let held = &plan.reserved_counters;
            contents
                .counters
                .iter()
                .map(|c| c.slot)
                .filter(|s| !held.contains(s))
                .collect()
        };
        self.pinned.reset_counters(&fresh)?;
        // ... and a full bucket for a new rule with a limit (an unchanged
        // rule keeps its slot, so its bucket: no burst of extra packets).
        let buckets =
            crate::ratelimit::fresh_buckets(&image, &plan.reserved_counters, generation as u32);
        self.pinned.write_buckets(&buckets)?;
        self.transition(&manifest)?;
        crash_point("flipped");
        self.state.live = manifest;
        self.state.live_generation = generation;
        let changed_text: Vec<String> = changed.iter().map(ToString::to_string).collect();
        self.push_event(
            generation,
            "apply",
            None,
            format!(
                "{reason}{}changed: {}; removed: {}",
                if reason.is_empty() { "" } else { "; " },
                list_or_none(&changed_text),
                list_or_none(&removed)
            ),
            Some(started.elapsed().as_millis() as u64),
        );
        self.store.write_state(&mut self.state)?;
        record.published = true;
        self.store.write_record(&record)?;
        self.prune()?;
        drop(publish);
        Ok(applied)
    }

    /// The files to apply: all of `source`, or — with `tenants` — the live
    /// files with those scopes taken from `source` (a listed tenant missing
    /// from `source` is removed).
    fn files_to_apply(
        &self,
        source: &RulesetSource,
        tenants: &[String],
    ) -> Result<Vec<(String, String)>, ControlError> {
        if tenants.is_empty() {
            return source.read();
        }
        let wanted: Vec<String> = tenants.iter().map(|t| format!("{t}.fg")).collect();
        let new = source.read_named(&wanted.iter().map(String::as_str).collect::<Vec<_>>())?;
        let name_of = |path: &str| -> String {
            Path::new(path)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_owned()
        };
        let live = self.live_files()?;
        for t in tenants {
            let known = new.iter().chain(&live).any(|(p, _)| name_of(p) == *t);
            if !known {
                return Err(ControlError::NotFound(format!(
                    "unknown tenant {t:?}: neither live nor in {}",
                    source.label().display()
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
}

/// Build key and content hash per live table.
type LiveTables = (BTreeMap<TableScope, String>, BTreeMap<TableScope, u64>);

/// The build key and content hash of each live table, from what the
/// generation that built it recorded: one pass over the live manifest.
fn live_tables(live: &Manifest, store: &Store) -> Result<LiveTables, ControlError> {
    let (mut keys, mut hashes) = (BTreeMap::new(), BTreeMap::new());
    for (scope, g) in manifest_tables(live) {
        let contents = store.contents(g)?;
        if let Some(k) = contents.keys.get(&scope) {
            keys.insert(scope.clone(), k.clone());
        }
        if let Some(h) = contents.hashes.get(&scope) {
            hashes.insert(scope, *h);
        }
    }
    Ok((keys, hashes))
}

/// What every table of a ruleset is built from besides its own file: the
/// gateway file (its sets, quotas and allocations reach into tenants), the
/// host's interface indexes (`iif`), and the compiler and table format.
fn build_context(files: &[(String, String)], interfaces: &BTreeMap<String, u32>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(&fluxgate_common::ABI_VERSION.to_le_bytes());
    for (p, text) in files {
        if TableScope::of_file(p) == TableScope::Global {
            out.extend_from_slice(&(text.len() as u64).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    for (name, index) in interfaces {
        out.extend_from_slice(&(name.len() as u64).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&index.to_le_bytes());
    }
    out
}

/// SHA-256 of a table's inputs: the context, the tenant slot and the file.
/// Equal keys mean the compiler would build the same table, so the live one
/// is kept (a collision would keep a stale table: hence a cryptographic hash).
fn table_key(context: &[u8], slot: Option<u32>, text: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update((context.len() as u64).to_le_bytes());
    h.update(context);
    h.update(slot.map_or(u64::MAX, u64::from).to_le_bytes());
    h.update(text.as_bytes());
    crate::host::hex(&h.finalize())
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
