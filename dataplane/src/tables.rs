//! Classification tables in the kernel: each table is a region of the
//! attachment's cell pool (`FG_POOL`, see `pool.rs`), copied in *beside* the
//! live ones through a mapping of the (mmapable) pool. Every table slot
//! (dispatch, global, each tenant) has a 16-byte record in `FG_GATEWAY` /
//! `FG_TENANTS`: two buffers holding region bases and a selector. A new
//! table's base is written to the standby buffer (a plain array write), then
//! the selector flips (a 4-byte array update). A
//! packet reads the selector and then that buffer, so it sees the old table
//! or the new one, never a mix; a live table is never cleared or refilled;
//! and the previous table stays in the other buffer, so flipping back is an
//! instant rollback. No step waits for an RCU grace period, except reusing
//! the space of a table nothing points at any more (`pool.rs`). Measured
//! (`cargo bench --bench swap`, alternating with the map-per-table build):
//! place 8.0 ms → 14 µs, rollback to an older kept generation 8.0 ms → 27 µs,
//! flip 7 µs either way, at 10 and 10k rules.
//!
//! A compiled [`Image`] is staged as one [`StagedImage`] (every table in one
//! pool scan) and published slot by slot in an order that never lets a
//! packet reach a tenant slot that is not there yet.

use std::os::fd::AsFd;

use aya::maps::{Array, Map, MapData};
use fluxgate_common::{
    Counter, SLOT_WORDS, TABLE_BUFFERS,
    limit::LimitSlot,
    maps,
    table::{Cell, Header},
    tenant_counter, tenant_counters_per_cpu,
};
use fluxgate_ruleset::Image;

use crate::{Error, Program, Slot, layout, pool::Pool, slots, sys};

/// A table copied into an attachment's cell pool (region `[base, base +
/// cells)`) that no packet need see yet. Publishing it does not consume it:
/// keep it to roll back to later. While any `StagedTable` for a region
/// exists, or a slot, probe overlay or kept generation points at it, its
/// cells are never reused.
pub struct StagedTable {
    pool: Pool,
    base: u32,
    cells: u32,
}

impl std::fmt::Debug for StagedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedTable")
            .field("base", &self.base)
            .field("cells", &self.cells)
            .finish()
    }
}

impl Clone for StagedTable {
    fn clone(&self) -> Self {
        StagedTable::held(&self.pool, self.base, self.cells)
    }
}

impl Drop for StagedTable {
    fn drop(&mut self) {
        self.pool.release(self.base);
    }
}

impl StagedTable {
    /// One more handle on region `base` of `pool`.
    pub(crate) fn held(pool: &Pool, base: u32, cells: u32) -> StagedTable {
        pool.hold(base, cells);
        StagedTable {
            pool: pool.clone(),
            base,
            cells,
        }
    }

    /// A handle on a region `Pool::allocate` already counted.
    fn allocated(pool: &Pool, base: u32, cells: u32) -> StagedTable {
        StagedTable {
            pool: pool.clone(),
            base,
            cells,
        }
    }

    /// The table's identity while it exists: its region base in the cell
    /// pool (what [`crate::PinnedAttachment::live_table_id`] reports when
    /// this table is live). Two live handles with the same id are the same table.
    pub fn id(&self) -> u32 {
        self.base
    }

    pub(crate) fn base(&self) -> u32 {
        self.base
    }

    /// Kernel map id of the pool the table lives in.
    pub(crate) fn pool_id(&self) -> u32 {
        self.pool.id()
    }

    /// Number of cells.
    pub fn cells(&self) -> u32 {
        self.cells
    }

    /// Kernel memory of the table's values, in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(self.cells) * size_of::<Cell>() as u64
    }
}

/// What a table slot holds: the region base (table id, see
/// [`StagedTable::id`]) in its live and standby buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotTables {
    /// Which buffer packets read (0 or 1).
    pub live_buffer: u32,
    /// The live table, if any.
    pub live: Option<u32>,
    /// The table in the standby buffer (the previous one after a publish).
    pub standby: Option<u32>,
}

/// Checks that `cells` is a table: a valid header whose cell count matches.
fn check_table(name: &str, cells: &[Cell]) -> Result<u32, Error> {
    let header = cells.first().map(Cell::header);
    if header.is_none_or(|h| h.magic != Header::MAGIC || h.cells as usize != cells.len()) {
        return Err(Error::InvalidArgument(format!(
            "table {name:?} has no valid header (magic/ABI mismatch or wrong cell count)"
        )));
    }
    u32::try_from(cells.len())
        .map_err(|_| Error::InvalidArgument(format!("table {name:?} is too large")))
}

/// Where tables are staged, published and counters read: a freshly loaded
/// [`Program`] or state adopted from bpffs ([`crate::PinnedAttachment`]).
pub trait Tables {
    /// The map called `name`, opened for writing.
    fn table_map(&mut self, name: &'static str) -> Result<TableMap<'_>, Error>;

    /// The cell pool tables are staged in.
    #[doc(hidden)]
    fn pool(&mut self) -> Result<Pool, Error>;

    /// Tenant slots of the maps (tenant indexes `0..tenant_slots`).
    fn tenant_slots(&self) -> u32;

    /// Counter slots of the maps (rule counter slots `0..counter_slots`).
    fn counter_slots(&self) -> u32;

    /// Regions held by kept generations: `(base, cells)` (none for a bare [`Program`]).
    #[doc(hidden)]
    fn kept_regions(&mut self) -> Result<Vec<(u32, u32)>, Error> {
        Ok(Vec::new())
    }

    /// Copies a table into the cell pool, beside everything live; no packet
    /// sees it until it is published. `cells[0]` must be a table header.
    fn stage(&mut self, name: &str, cells: &[Cell]) -> Result<StagedTable, Error> {
        let mut staged = self.stage_all(&[(name, cells)])?;
        Ok(staged.remove(0))
    }

    /// [`Tables::stage`] for many tables: one pool scan, then each copied
    /// straight into its region. When the pool has no room, fails with
    /// [`Error::PoolFull`] having written nothing.
    fn stage_all(&mut self, tables: &[(&str, &[Cell])]) -> Result<Vec<StagedTable>, Error> {
        let sizes = tables
            .iter()
            .map(|(name, cells)| check_table(name, cells))
            .collect::<Result<Vec<u32>, Error>>()?;
        let pool = self.pool()?;
        let referenced = self.referenced_regions()?;
        let kept = self.kept_regions()?;
        let bases = pool.allocate(&sizes, &referenced, &kept)?;
        // The handles first: on failure below, dropping them frees the regions.
        let staged: Vec<StagedTable> = bases
            .iter()
            .zip(&sizes)
            .map(|(&base, &cells)| StagedTable::allocated(&pool, base, cells))
            .collect();
        // Straight into the (mmapable) pool: ≈ 6× faster than
        // BPF_MAP_UPDATE_BATCH, which copies cell by cell (100k ACL rules,
        // 17 MB: 30 → 5 ms).
        let regions: Vec<(u32, &[Cell])> = bases
            .iter()
            .zip(tables)
            .map(|(&base, (_, cells))| (base, *cells))
            .collect();
        sys::write_mmapable(pool.fd(), &regions)
            .map_err(|e| Error::kernel("copy tables into the cell pool", e))?;
        Ok(staged)
    }

    /// Every region base a slot buffer or probe overlay points at.
    #[doc(hidden)]
    fn referenced_regions(&mut self) -> Result<Vec<u32>, Error> {
        let mut out = Vec::new();
        // (map, entries, words per slot record): a record's first
        // TABLE_BUFFERS words are region bases, the rest its selector.
        for (name, entries, record) in [
            (
                maps::GATEWAY,
                fluxgate_common::GATEWAY_SLOTS * SLOT_WORDS,
                SLOT_WORDS,
            ),
            (maps::TENANTS, self.tenant_slots() * SLOT_WORDS, SLOT_WORDS),
            (maps::PROBE_GATEWAY, fluxgate_common::GATEWAY_SLOTS, 1),
            (maps::PROBE_TENANTS, self.tenant_slots(), 1),
        ] {
            let mut map = self.table_map(name)?;
            let fd = layout::map_data(map.get(), name)?.fd().as_fd();
            let words = sys::read_mmapable_u32(fd, entries)
                .map_err(|e| Error::kernel("read table slots", e))?;
            out.extend(
                words
                    .chunks(record as usize)
                    .flat_map(|r| &r[..r.len().min(TABLE_BUFFERS as usize)])
                    .filter(|b| **b != 0),
            );
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Which buffer of `slot` is live (0 or 1; see `fluxgate_common::TABLE_BUFFERS`).
    fn live_buffer(&mut self, slot: Slot) -> Result<u32, Error> {
        let loc = slots::slot_location(slot, false, self.tenant_slots())?;
        let mut map = self.table_map(loc.map)?;
        let array: Array<&MapData, u32> =
            Array::try_from(&*map.get()).map_err(|e| Error::kernel("open a slot map", e))?;
        slots::live_bit(&array, loc.select.unwrap_or(0))
    }

    /// Words `indices` of slot map `name`, read through one mapping (a slot
    /// map is a `BPF_F_MMAPABLE` array of u32, each element padded to 8 bytes).
    #[doc(hidden)]
    fn slot_words(&mut self, name: &'static str, indices: &[u32]) -> Result<Vec<u32>, Error> {
        let mut map = self.table_map(name)?;
        let fd = layout::map_data(map.get(), name)?.fd().as_fd();
        let words: Vec<u64> =
            sys::read_mmapable(fd, indices).map_err(|e| Error::kernel("read table slots", e))?;
        // Little-endian: the u32 value is the element's low half.
        Ok(words.into_iter().map(|w| w as u32).collect())
    }

    /// The tables in `slots`' buffers: one read per slot map whatever the
    /// number of slots (a gateway of 10,000 tenants reads them all at once
    /// instead of three syscalls each).
    fn slot_tables(&mut self, slots: &[Slot]) -> Result<Vec<SlotTables>, Error> {
        let mut out = vec![SlotTables::default(); slots.len()];
        let capacity = self.tenant_slots();
        let locs = slots
            .iter()
            .map(|s| slots::slot_location(*s, false, capacity))
            .collect::<Result<Vec<_>, Error>>()?;
        for name in [maps::GATEWAY, maps::TENANTS] {
            let at: Vec<usize> = (0..slots.len()).filter(|&i| locs[i].map == name).collect();
            if at.is_empty() {
                continue;
            }
            let mut indices = Vec::with_capacity(at.len() * 3);
            for &i in &at {
                let loc = &locs[i];
                indices.extend([loc.index, loc.index + 1, loc.select.unwrap_or(0)]);
            }
            let words = self.slot_words(name, &indices)?;
            for (&i, w) in at.iter().zip(words.chunks(3)) {
                let live = w[2] & 1;
                let id = |b: u32| Some(w[b as usize]).filter(|v| *v != 0);
                out[i] = SlotTables {
                    live_buffer: live,
                    live: id(live),
                    standby: id(1 - live),
                };
            }
        }
        Ok(out)
    }

    /// [`Tables::flip`] for many slots, in the order given: one
    /// `BPF_MAP_UPDATE_BATCH` per run of slots in the same slot map (the
    /// kernel updates a batch element by element, so each slot still flips
    /// atomically and in order). If a batch fails, every slot already
    /// flipped is flipped back before the error is returned.
    fn flip_all(&mut self, slots: &[Slot]) -> Result<(), Error> {
        let before = self.slot_tables(slots)?;
        let capacity = self.tenant_slots();
        let locs = slots
            .iter()
            .map(|s| slots::slot_location(*s, false, capacity))
            .collect::<Result<Vec<_>, Error>>()?;
        let mut start = 0;
        while start < slots.len() {
            let name = locs[start].map;
            let end = (start..slots.len())
                .find(|&i| locs[i].map != name)
                .unwrap_or(slots.len());
            let keys: Vec<u32> = locs[start..end]
                .iter()
                .map(|l| l.select.unwrap_or(0))
                .collect();
            let values: Vec<u32> = before[start..end]
                .iter()
                .map(|b| 1 - b.live_buffer)
                .collect();
            let written = {
                let mut map = self.table_map(name)?;
                let fd = layout::map_data(map.get(), name)?.fd().as_fd();
                sys::update_batch(fd, &keys, &values)
            };
            if let Err(e) = written {
                // Put back whatever moved (this batch may have been partly done).
                let now = self.slot_tables(&slots[..end])?;
                for (i, (was, is)) in before.iter().zip(&now).enumerate().rev() {
                    if was.live_buffer != is.live_buffer {
                        let _best_effort = self.flip(slots[i]);
                    }
                }
                return Err(Error::kernel("flip table selectors", e));
            }
            start = end;
        }
        Ok(())
    }

    /// Places `table` in the standby buffer of `slot`, where no packet looks
    /// yet: one 4-byte array write. [`Tables::flip`] makes it live.
    fn place(&mut self, slot: Slot, table: &StagedTable) -> Result<(), Error> {
        self.place_all(&[(slot, table)])
    }

    /// [`Tables::place`] for many slots at once: one `BPF_MAP_UPDATE_BATCH`
    /// per slot map.
    fn place_all(&mut self, tables: &[(Slot, &StagedTable)]) -> Result<(), Error> {
        let pool = self.pool()?;
        let mut writes = Vec::with_capacity(tables.len());
        let now = self.slot_tables(&tables.iter().map(|(s, _)| *s).collect::<Vec<_>>())?;
        for ((slot, table), now) in tables.iter().zip(now) {
            if table.pool_id() != pool.id() {
                return Err(Error::InvalidArgument(format!(
                    "a table staged in another attachment's cell pool cannot be placed in {slot:?}"
                )));
            }
            let standby = 1 - now.live_buffer;
            let loc = slots::slot_location(*slot, false, self.tenant_slots())?;
            writes.push((loc.map, loc.index + standby, table.base()));
        }
        self.write_slots(&pool, writes, "place tables in their standby buffers")
    }

    /// Writes region bases into slot maps, one batch per map, and quarantines
    /// the regions they replace (a packet may still be walking them).
    #[doc(hidden)]
    fn write_slots(
        &mut self,
        pool: &Pool,
        writes: Vec<(&'static str, u32, u32)>,
        op: &'static str,
    ) -> Result<(), Error> {
        for (name, keys, bases) in slots::batches(writes) {
            let old = self.slot_words(name, &keys)?;
            let mut map = self.table_map(name)?;
            let map = map.get();
            let fd = layout::map_data(map, name)?.fd().as_fd();
            // Quarantined before the write: a crash in between leaves the old
            // region referenced (nothing lost), never reusable too early.
            pool.quarantine(old);
            sys::update_batch(fd, &keys, &bases).map_err(|e| Error::kernel(op, e))?;
        }
        Ok(())
    }

    /// Makes the standby buffer of `slot` live: one 4-byte array update, so a
    /// packet sees the old table or the new one, never a mix. Flipping again
    /// brings the previous table back.
    fn flip(&mut self, slot: Slot) -> Result<(), Error> {
        let loc = slots::slot_location(slot, false, self.tenant_slots())?;
        let select = loc.select.unwrap_or(0);
        let mut map = self.table_map(loc.map)?;
        let mut array: Array<&mut MapData, u32> =
            Array::try_from(map.get()).map_err(|e| Error::kernel("open a slot map", e))?;
        let live = slots::live_bit(&array, select)?;
        array
            .set(select, 1 - live, 0)
            .map_err(|e| Error::kernel("flip a table selector", e))
    }

    /// Publishes `table` into `slot`: [`Tables::place`], then [`Tables::flip`].
    fn publish(&mut self, slot: Slot, table: &StagedTable) -> Result<(), Error> {
        self.place(slot, table)?;
        self.flip(slot)
    }

    /// Empties `slot`, both buffers (packets then skip it, as if it had never
    /// been loaded).
    fn unpublish(&mut self, slot: Slot) -> Result<(), Error> {
        self.unpublish_all(&[slot])
    }

    /// [`Tables::unpublish`] for many slots: one batch per slot map.
    fn unpublish_all(&mut self, slots: &[Slot]) -> Result<(), Error> {
        let pool = self.pool()?;
        let mut writes = Vec::new();
        for slot in slots {
            let loc = slots::slot_location(*slot, false, self.tenant_slots())?;
            writes.extend((0..TABLE_BUFFERS).map(|b| (loc.map, loc.index + b, 0)));
        }
        self.write_slots(&pool, writes, "empty table slots")
    }

    /// Publishes every table of `staged`: tenants first, then the global rules,
    /// then the dispatch table, so a packet dispatched to a tenant always finds
    /// that tenant's table. Each step is one atomic slot update.
    fn publish_image(&mut self, staged: &StagedImage) -> Result<(), Error> {
        let mut all: Vec<(Slot, &StagedTable)> = staged
            .tenants
            .iter()
            .map(|(index, table)| (Slot::Tenant(*index), table))
            .collect();
        all.push((Slot::Global, &staged.global));
        all.push((Slot::Dispatch, &staged.dispatch));
        self.place_all(&all)?;
        for (slot, _) in &all {
            self.flip(*slot)?;
        }
        Ok(())
    }

    /// Per-CPU sums of the rule counters `first .. first + n`.
    fn rule_counters(&mut self, first: u32, n: u32) -> Result<Vec<Counter>, Error> {
        let end = first.saturating_add(n);
        let per_cpu = self.counter_slots();
        if end > per_cpu {
            return Err(out_of_range(first, end, per_cpu));
        }
        let slots: Vec<u32> = (first..end).collect();
        let mut map = self.table_map(maps::RULE_COUNTERS)?;
        per_cpu_sums(map.get(), maps::RULE_COUNTERS, per_cpu, &slots)
    }

    /// Zeroes the rule counters `slots` on every CPU (before a slot that counted
    /// for a rule long gone is handed to a new rule).
    fn reset_counters(&mut self, slots: &[u32]) -> Result<(), Error> {
        if slots.is_empty() {
            return Ok(());
        }
        let per_cpu = self.counter_slots();
        if let Some(&bad) = slots.iter().find(|&&s| s >= per_cpu) {
            return Err(out_of_range(bad, bad + 1, per_cpu));
        }
        let zero = [Counter::default()];
        let regions: Vec<(u32, &[Counter])> = per_cpu_indices(per_cpu, slots)?
            .into_iter()
            .map(|i| (i, &zero[..]))
            .collect();
        let mut map = self.table_map(maps::RULE_COUNTERS)?;
        let fd = layout::map_data(map.get(), maps::RULE_COUNTERS)?
            .fd()
            .as_fd();
        sys::write_mmapable(fd, &regions).map_err(|e| Error::kernel("reset the rule counters", e))
    }

    /// Writes the token buckets of counter slots (`maps::BUCKETS`): a full
    /// bucket with the rule's parameters for a slot a new rule with a limit
    /// takes, zeros for any other new slot. Only slots no live or kept table
    /// uses may be written (the bucket of an unchanged rule stays as it is).
    fn write_buckets(&mut self, entries: &[(u32, LimitSlot)]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let per_cpu = self.counter_slots();
        if let Some(&(bad, _)) = entries.iter().find(|(s, _)| *s >= per_cpu) {
            return Err(out_of_range(bad, bad + 1, per_cpu));
        }
        let mut map = self.table_map(maps::BUCKETS)?;
        let mut array: Array<&mut MapData, LimitSlot> =
            Array::try_from(map.get()).map_err(|e| Error::kernel("open the bucket map", e))?;
        for (slot, value) in entries {
            array
                .set(*slot, value, 0)
                .map_err(|e| Error::kernel("write a token bucket", e))?;
        }
        Ok(())
    }

    /// Passed and dropped counters of `tenant` (`None`: packets of no tenant).
    fn tenant_counters(&mut self, tenant: Option<u32>) -> Result<(Counter, Counter), Error> {
        let per_cpu = tenant_counters_per_cpu(self.tenant_slots());
        let mut map = self.table_map(maps::TENANT_COUNTERS)?;
        let slots = [tenant_counter(tenant, false), tenant_counter(tenant, true)];
        let sums = per_cpu_sums(map.get(), maps::TENANT_COUNTERS, per_cpu, &slots)?;
        Ok((sums[0], sums[1]))
    }

    /// [`Tables::tenant_counters`] of many tenants at once: one read of the
    /// counter map (one mapping of it) whatever their number, in the order
    /// asked.
    fn tenant_counters_of(
        &mut self,
        tenants: &[Option<u32>],
    ) -> Result<Vec<(Counter, Counter)>, Error> {
        let per_cpu = tenant_counters_per_cpu(self.tenant_slots());
        let mut map = self.table_map(maps::TENANT_COUNTERS)?;
        let slots: Vec<u32> = tenants
            .iter()
            .flat_map(|t| [tenant_counter(*t, false), tenant_counter(*t, true)])
            .collect();
        let sums = per_cpu_sums(map.get(), maps::TENANT_COUNTERS, per_cpu, &slots)?;
        Ok(sums
            .chunks_exact(2)
            .map(|pair| (pair[0], pair[1]))
            .collect())
    }
}

/// A map borrowed from a [`Program`] or opened from a pin.
pub enum TableMap<'a> {
    /// Borrowed from a loaded program.
    Borrowed(&'a mut Map),
    /// Opened from bpffs.
    Owned(Map),
}

impl TableMap<'_> {
    pub(crate) fn get(&mut self) -> &mut Map {
        match self {
            TableMap::Borrowed(m) => m,
            TableMap::Owned(m) => m,
        }
    }
}

/// Counter slots `first..end` do not all exist (there are `slots`).
fn out_of_range(first: u32, end: u32, slots: u32) -> Error {
    Error::InvalidArgument(format!(
        "counter slots {first}..{end} reach past the {slots} counter slots of this attachment"
    ))
}

/// The entries of `slots` in every CPU's block of `per_cpu` entries, CPU by
/// CPU ([`fluxgate_common::per_cpu`]).
fn per_cpu_indices(per_cpu: u32, slots: &[u32]) -> Result<Vec<u32>, Error> {
    let cpus = layout::possible_cpus()?;
    Ok((0..cpus)
        .flat_map(|cpu| {
            slots
                .iter()
                .map(move |&s| fluxgate_common::per_cpu(cpu, per_cpu, s))
        })
        .collect())
}

/// For each of `slots` (each below `per_cpu`), its counters summed over the
/// blocks of every CPU of a counter map ([`fluxgate_common::per_cpu`]).
fn per_cpu_sums(map: &Map, name: &str, per_cpu: u32, slots: &[u32]) -> Result<Vec<Counter>, Error> {
    let indices = per_cpu_indices(per_cpu, slots)?;
    let fd = layout::map_data(map, name)?.fd().as_fd();
    let values: Vec<Counter> =
        sys::read_mmapable(fd, &indices).map_err(|e| Error::kernel("read the counters", e))?;
    let mut sums = vec![Counter::default(); slots.len()];
    for block in values.chunks(slots.len().max(1)) {
        sums.iter_mut().zip(block).for_each(|(sum, v)| sum.add(v));
    }
    Ok(sums)
}

impl Tables for Program {
    fn table_map(&mut self, name: &'static str) -> Result<TableMap<'_>, Error> {
        Ok(TableMap::Borrowed(self.map_mut_named(name)?))
    }

    fn pool(&mut self) -> Result<Pool, Error> {
        Ok(self.pool.clone())
    }

    fn tenant_slots(&self) -> u32 {
        self.tenant_slots
    }

    fn counter_slots(&self) -> u32 {
        self.counter_slots
    }
}

/// All tables of one image, created and filled in the kernel, not yet live.
#[derive(Debug)]
pub struct StagedImage {
    /// Destination → tenant.
    pub dispatch: StagedTable,
    /// Global rules and gateway default.
    pub global: StagedTable,
    /// Per tenant: tenant slot and table, sorted by slot.
    pub tenants: Vec<(u32, StagedTable)>,
}

impl StagedImage {
    /// Copies every table of `image` into the cell pool of `tables` (one
    /// batch for all; [`Error::PoolFull`] and nothing written when it does not fit).
    pub fn new(tables: &mut impl Tables, image: &Image) -> Result<StagedImage, Error> {
        let names: Vec<String> = image
            .tenants
            .iter()
            .map(|t| format!("tenant {}", t.name))
            .collect();
        let mut all: Vec<(&str, &[fluxgate_common::table::Cell])> = vec![
            ("dispatch", &image.dispatch.cells),
            ("global", &image.global.cells),
        ];
        for (t, name) in image.tenants.iter().zip(&names) {
            all.push((name, &t.table.cells));
        }
        let mut staged = tables.stage_all(&all)?.into_iter();
        let mut next = || {
            staged
                .next()
                .ok_or_else(|| Error::InvalidArgument("a table was not staged".into()))
        };
        Ok(StagedImage {
            dispatch: next()?,
            global: next()?,
            tenants: image
                .tenants
                .iter()
                .map(|t| next().map(|table| (t.index, table)))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Kernel memory of all tables' values, in bytes.
    pub fn bytes(&self) -> u64 {
        self.dispatch.bytes()
            + self.global.bytes()
            + self.tenants.iter().map(|(_, t)| t.bytes()).sum::<u64>()
    }
}
