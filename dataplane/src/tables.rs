//! Classification tables in the kernel: each table is its own ARRAY map of
//! cells, built and filled *beside* the live ones. Every table slot (dispatch,
//! global, each tenant) has two buffers in its ARRAY_OF_MAPS and a selector in
//! `FG_SELECT`: a new table is placed in the standby buffer (slow: the kernel
//! waits for an RCU grace period on each map-in-map update), then the selector
//! flips (a 4-byte array update: microseconds). A packet reads the selector and
//! then that buffer, so it sees the old table or the new one, never a mix; a
//! live table is never cleared or refilled; and the previous table stays in the
//! other buffer, so flipping back is an instant rollback.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use aya::maps::{Array, ArrayOfMaps, Map, MapData, PerCpuArray};
use fluxgate_common::{
    BPF_F_INNER_MAP, Counter, MAX_TENANTS, SLOT_DISPATCH, SLOT_GLOBAL, TABLE_BUFFERS, maps,
    select_index,
    table::{Cell, Header},
    table_index, tenant_counter,
};

use crate::{Error, Program, sys};

/// A filled table map that no packet sees yet. Publishing it does not consume
/// it: keep it to roll back to later (the kernel holds its own reference while
/// it is published).
pub struct StagedTable {
    pub(crate) map: MapData,
    cells: u32,
    id: u32,
}

impl std::fmt::Debug for StagedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedTable")
            .field("id", &self.id)
            .field("cells", &self.cells)
            .finish()
    }
}

impl StagedTable {
    /// Creates a map for `cells` and fills it. `cells[0]` must be a table header.
    pub fn new(name: &str, cells: &[Cell]) -> Result<StagedTable, Error> {
        let header = cells.first().map(Cell::header);
        if header.is_none_or(|h| h.magic != Header::MAGIC || h.cells as usize != cells.len()) {
            return Err(Error::InvalidArgument(format!(
                "table {name:?} has no valid header (magic/ABI mismatch or wrong cell count)"
            )));
        }
        let n = u32::try_from(cells.len())
            .map_err(|_| Error::InvalidArgument(format!("table {name:?} is too large")))?;
        let fd: OwnedFd = sys::create_array(name, size_of::<Cell>() as u32, n, BPF_F_INNER_MAP)
            .map_err(|e| {
                Error::kernel(
                    "create a table map (is the memlock/memcg limit too low?)",
                    e,
                )
            })?;
        sys::update_all(fd.as_fd(), cells).map_err(|e| Error::kernel("fill a table map", e))?;
        let map = MapData::from_fd(fd).map_err(|e| Error::kernel("adopt a table map", e))?;
        StagedTable::from_map(map)
    }

    pub(crate) fn from_map(map: MapData) -> Result<StagedTable, Error> {
        let info = map
            .info()
            .map_err(|e| Error::kernel("read a table's info", e))?;
        if info.value_size() != size_of::<Cell>() as u32 {
            return Err(Error::Incompatible {
                path: "<table>".into(),
                reason: format!(
                    "table cells are {} bytes, this build's are {}",
                    info.value_size(),
                    size_of::<Cell>()
                ),
            });
        }
        Ok(StagedTable {
            cells: info.max_entries(),
            id: info.id(),
            map,
        })
    }

    /// Kernel map id (what [`crate::PinnedAttachment::live_table_id`] reports
    /// when this table is live).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The map's descriptor as a batch-update value.
    pub(crate) fn raw_fd(&self) -> u32 {
        self.map.fd().as_fd().as_raw_fd() as u32
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

/// Which table slot to publish into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// Destination → tenant dispatch.
    Dispatch,
    /// Global (provider) rules and the gateway default.
    Global,
    /// One tenant's rules and default, by tenant index.
    Tenant(u32),
}

/// Where tables are published and counters read: a freshly loaded [`Program`]
/// or state adopted from bpffs ([`crate::PinnedAttachment`]).
pub trait Tables {
    /// The map called `name`, opened for writing.
    fn table_map(&mut self, name: &'static str) -> Result<TableMap<'_>, Error>;

    /// Which buffer of `slot` is live (0 or 1; see `fluxgate_common::TABLE_BUFFERS`).
    fn live_buffer(&mut self, slot: Slot) -> Result<u32, Error> {
        let loc = slot_location(slot, false)?;
        let mut map = self.table_map(maps::SELECT)?;
        let array: Array<&MapData, u32> =
            Array::try_from(&*map.get()).map_err(|e| Error::kernel("open the selector map", e))?;
        let select = loc.select.unwrap_or(0);
        Ok(array
            .get(&select, 0)
            .map_err(|e| Error::kernel("read a table selector", e))?
            & 1)
    }

    /// Places `table` in the standby buffer of `slot`, where no packet looks
    /// yet. This is the slow half of publishing (the kernel waits for an RCU
    /// grace period on every map-in-map update); [`Tables::flip`] is the fast one.
    fn place(&mut self, slot: Slot, table: &StagedTable) -> Result<(), Error> {
        let standby = 1 - self.live_buffer(slot)?;
        let loc = slot_location(slot, false)?;
        let mut map = self.table_map(loc.map)?;
        let mut outer: ArrayOfMaps<&mut MapData, MapData> = ArrayOfMaps::try_from(map.get())
            .map_err(|e| Error::kernel("open a table slot map", e))?;
        outer
            .set(loc.index + standby, &table.map, 0)
            .map_err(|e| Error::kernel("place a table in its standby buffer", e))
    }

    /// [`Tables::place`] for many slots at once: one `BPF_MAP_UPDATE_BATCH` per
    /// outer map, so the kernel waits for one RCU grace period, not one per table.
    fn place_all(&mut self, tables: &[(Slot, &StagedTable)]) -> Result<(), Error> {
        let mut writes = Vec::with_capacity(tables.len());
        for (slot, table) in tables {
            let standby = 1 - self.live_buffer(*slot)?;
            let loc = slot_location(*slot, false)?;
            writes.push((loc.map, loc.index + standby, table.raw_fd()));
        }
        for (name, keys, fds) in batches(writes) {
            let mut map = self.table_map(name)?;
            let data: &MapData = match map.get() {
                Map::ArrayOfMaps(data) => data,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{name} is not an array of maps"
                    )));
                }
            };
            sys::update_batch(data.fd().as_fd(), &keys, &fds)
                .map_err(|e| Error::kernel("place tables in their standby buffers", e))?;
        }
        Ok(())
    }

    /// Makes the standby buffer of `slot` live: one 4-byte array update, so a
    /// packet sees the old table or the new one, never a mix. Flipping again
    /// brings the previous table back.
    fn flip(&mut self, slot: Slot) -> Result<(), Error> {
        let select = slot_location(slot, false)?.select.unwrap_or(0);
        let mut map = self.table_map(maps::SELECT)?;
        let mut array: Array<&mut MapData, u32> =
            Array::try_from(map.get()).map_err(|e| Error::kernel("open the selector map", e))?;
        let live = array
            .get(&select, 0)
            .map_err(|e| Error::kernel("read a table selector", e))?
            & 1;
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
        let loc = slot_location(slot, false)?;
        let mut map = self.table_map(loc.map)?;
        let data: &mut MapData = match map.get() {
            Map::ArrayOfMaps(data) => data,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{} is not an array of maps",
                    loc.map
                )));
            }
        };
        for buffer in 0..TABLE_BUFFERS {
            match sys::delete(data.fd().as_fd(), loc.index + buffer) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(Error::kernel("empty a table slot", e)),
            }
        }
        Ok(())
    }

    /// Publishes every table of `staged`: tenants first, then the global rules,
    /// then the dispatch table, so a packet dispatched to a tenant always finds
    /// that tenant's table. Each step is one atomic slot update.
    fn publish_image(&mut self, staged: &crate::StagedImage) -> Result<(), Error> {
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
        let mut map = self.table_map(maps::RULE_COUNTERS)?;
        (first..first.saturating_add(n))
            .map(|i| per_cpu_sum(map.get(), i))
            .collect()
    }

    /// Zeroes the rule counters `slots` on every CPU (before a slot that counted
    /// for a rule long gone is handed to a new rule).
    fn reset_counters(&mut self, slots: &[u32]) -> Result<(), Error> {
        if slots.is_empty() {
            return Ok(());
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::kernel("count CPUs", e))?;
        let mut map = self.table_map(maps::RULE_COUNTERS)?;
        let mut array: PerCpuArray<&mut MapData, Counter> = PerCpuArray::try_from(map.get())
            .map_err(|e| Error::kernel("open the rule counters", e))?;
        for &slot in slots {
            let zeros = aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus])
                .map_err(|e| Error::kernel("build per-CPU zeros", e))?;
            array
                .set(slot, zeros, 0)
                .map_err(|e| Error::kernel("reset a rule counter", e))?;
        }
        Ok(())
    }

    /// Passed and dropped counters of `tenant` (`None`: packets of no tenant).
    fn tenant_counters(&mut self, tenant: Option<u32>) -> Result<(Counter, Counter), Error> {
        let mut map = self.table_map(maps::TENANT_COUNTERS)?;
        Ok((
            per_cpu_sum(map.get(), tenant_counter(tenant, false))?,
            per_cpu_sum(map.get(), tenant_counter(tenant, true))?,
        ))
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
    fn get(&mut self) -> &mut Map {
        match self {
            TableMap::Borrowed(m) => m,
            TableMap::Owned(m) => m,
        }
    }
}

fn per_cpu_sum(map: &Map, index: u32) -> Result<Counter, Error> {
    let array: PerCpuArray<&MapData, Counter> =
        PerCpuArray::try_from(map).map_err(|e| Error::kernel("open a counter map", e))?;
    let mut sum = Counter::default();
    array
        .get(&index, 0)
        .map_err(|e| Error::kernel("read a counter", e))?
        .iter()
        .for_each(|v| sum.add(v));
    Ok(sum)
}

impl Tables for Program {
    fn table_map(&mut self, name: &'static str) -> Result<TableMap<'_>, Error> {
        Ok(TableMap::Borrowed(self.map_mut_named(name)?))
    }
}

/// Map-in-map writes grouped per outer map, for one `BPF_MAP_UPDATE_BATCH`
/// (one RCU grace period) each: `(map, key, inner map fd)` in, `(map, keys,
/// fds)` out, in first-seen map order.
pub(crate) fn batches(
    writes: impl IntoIterator<Item = (&'static str, u32, u32)>,
) -> Vec<(&'static str, Vec<u32>, Vec<u32>)> {
    let mut by_map: Vec<(&'static str, Vec<u32>, Vec<u32>)> = Vec::new();
    for (map, key, fd) in writes {
        match by_map.iter_mut().find(|(m, ..)| *m == map) {
            Some((_, keys, fds)) => {
                keys.push(key);
                fds.push(fd);
            }
            None => by_map.push((map, vec![key], vec![fd])),
        }
    }
    by_map
}

/// Where a table slot lives.
pub(crate) struct SlotLoc {
    /// The outer ARRAY_OF_MAPS.
    pub map: &'static str,
    /// Index of buffer 0 (live slots) or of the slot itself (probe overlay).
    pub index: u32,
    /// Index of its selector in `FG_SELECT` (live slots only).
    pub select: Option<u32>,
}

/// Where `slot` lives; in the (single-buffered) probe overlay maps with `probe`.
pub(crate) fn slot_location(slot: Slot, probe: bool) -> Result<SlotLoc, Error> {
    let (n, gateway) = match slot {
        Slot::Dispatch => (SLOT_DISPATCH, true),
        Slot::Global => (SLOT_GLOBAL, true),
        Slot::Tenant(t) if t < MAX_TENANTS => (t, false),
        Slot::Tenant(t) => {
            return Err(Error::InvalidArgument(format!(
                "tenant index {t} is beyond the {MAX_TENANTS} tenant slots"
            )));
        }
    };
    Ok(match (probe, gateway) {
        (true, true) => SlotLoc {
            map: maps::PROBE_GATEWAY,
            index: n,
            select: None,
        },
        (true, false) => SlotLoc {
            map: maps::PROBE_TENANTS,
            index: n,
            select: None,
        },
        (false, true) => SlotLoc {
            map: maps::GATEWAY,
            index: table_index(n, 0),
            select: Some(select_index(0, Some(n))),
        },
        (false, false) => SlotLoc {
            map: maps::TENANTS,
            index: table_index(n, 0),
            select: Some(select_index(n, None)),
        },
    })
}
