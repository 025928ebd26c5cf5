//! Classification tables in the kernel: each table is its own ARRAY map of
//! cells, built and filled *beside* the live ones, then published by writing
//! its fd into one slot of an ARRAY_OF_MAPS — an atomic pointer swap, so a
//! packet sees the old table or the new one, never a mix, and a live table is
//! never cleared or refilled.

use std::os::fd::{AsFd, OwnedFd};

use aya::maps::{ArrayOfMaps, Map, MapData, PerCpuArray};
use fluxgate_common::{
    BPF_F_INNER_MAP, Counter, MAX_TENANTS, SLOT_DISPATCH, SLOT_GLOBAL, maps,
    table::{Cell, Header},
    tenant_counter,
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

    /// Publishes `table` into `slot`: one atomic update of one ARRAY_OF_MAPS entry.
    fn publish(&mut self, slot: Slot, table: &StagedTable) -> Result<(), Error> {
        let (name, index) = slot_location(slot, false)?;
        let mut map = self.table_map(name)?;
        let mut outer: ArrayOfMaps<&mut MapData, MapData> = ArrayOfMaps::try_from(map.get())
            .map_err(|e| Error::kernel("open a table slot map", e))?;
        outer
            .set(index, &table.map, 0)
            .map_err(|e| Error::kernel("publish a table", e))
    }

    /// Empties `slot` (packets then skip it, as if it had never been loaded).
    fn unpublish(&mut self, slot: Slot) -> Result<(), Error> {
        let (name, index) = slot_location(slot, false)?;
        let mut map = self.table_map(name)?;
        let data: &mut MapData = match map.get() {
            Map::ArrayOfMaps(data) => data,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{name} is not an array of maps"
                )));
            }
        };
        match sys::delete(data.fd().as_fd(), index) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(Error::kernel("empty a table slot", e)),
        }
    }

    /// Publishes every table of `staged`: tenants first, then the global rules,
    /// then the dispatch table, so a packet dispatched to a tenant always finds
    /// that tenant's table. Each step is one atomic slot update.
    fn publish_image(&mut self, staged: &crate::StagedImage) -> Result<(), Error> {
        for (index, table) in &staged.tenants {
            self.publish(Slot::Tenant(*index), table)?;
        }
        self.publish(Slot::Global, &staged.global)?;
        self.publish(Slot::Dispatch, &staged.dispatch)
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

/// The outer map and index of `slot`; in the probe overlay maps with `probe`.
pub(crate) fn slot_location(slot: Slot, probe: bool) -> Result<(&'static str, u32), Error> {
    let (gateway, tenants) = if probe {
        (maps::PROBE_GATEWAY, maps::PROBE_TENANTS)
    } else {
        (maps::GATEWAY, maps::TENANTS)
    };
    Ok(match slot {
        Slot::Dispatch => (gateway, SLOT_DISPATCH),
        Slot::Global => (gateway, SLOT_GLOBAL),
        Slot::Tenant(t) if t < MAX_TENANTS => (tenants, t),
        Slot::Tenant(t) => {
            return Err(Error::InvalidArgument(format!(
                "tenant index {t} is beyond the {MAX_TENANTS} tenant slots"
            )));
        }
    })
}
