//! What fluxgate puts in the kernel and in bpffs, by name and shape: every
//! map of the object with the shape a loader creates and an adopter checks
//! (the spec), and the pin layout of one attached interface:
//!
//! ```text
//! <root>/<iface>/            one directory per attached interface
//!     link                   the XDP bpf_link (pinned: stays attached)
//!     probe                  the verified preflight entry (`fluxgate_probe`)
//!     FG_*                   every map of MAP_SPECS
//!     FG_KEPT                kept table generations (one hash map, see `kept_tables.rs`)
//! ```
//!
//! Everything else reads these names from here, so the layout has one
//! definition.

use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData, MapType};
use fluxgate_common::{
    BPF_F_MMAPABLE, Counter, DEFAULT_COUNTER_SLOTS, DEFAULT_SOURCE_BUCKETS, DEFAULT_TENANT_SLOTS,
    GATEWAY_SLOTS, GatewayConfig, MAX_COUNTER_SLOTS, MAX_SOURCE_BUCKETS, MAX_TENANT_SLOTS,
    MAX_VERSIONS, Malformed, Outcome, SLOT_WORDS, Scratch, Trace, maps, tenant_counters_per_cpu,
    version_slots,
};

use crate::Error;

/// Where the CLI pins state unless told otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/fluxgate";

/// The pinned XDP link, in an interface's pin directory.
pub(crate) const LINK: &str = "link";
/// The probe entry, pinned verified so a preflight never waits for the verifier.
pub(crate) const PROBE: &str = "probe";
/// Where a replacement probe entry is pinned before it is renamed over [`PROBE`].
pub(crate) const PROBE_STAGING: &str = "probe_new";
/// The directory of kept table generations of ABI 11 and older (one pinned
/// map per table), removed with the rest on detach.
pub(crate) const TABLES_DIR: &str = "tables";
/// The map of kept table generations, in an interface's pin directory
/// (created by userspace at attach; no program reads it).
pub(crate) const KEPT: &str = "FG_KEPT";

/// The expected shape of each pinned map (name, type, value size, entries; keys
/// are all u32 but [`maps::SOURCE_BUCKETS`]' ([`key_size`]); entries 0: any size, chosen at load time; the maps of
/// [`slot_sized`] are listed with the default numbers of tenant and counter
/// slots and sized by the attachment's); checked before a
/// pinned map is reused. Every map of the object is here: a program loaded
/// later (a classifier version, a new dispatcher) must share all of them.
pub(crate) const MAP_SPECS: [(&str, MapType, u32, u32); 23] = [
    (
        maps::POOL,
        MapType::Array,
        size_of::<fluxgate_common::table::Cell>() as u32,
        0,
    ),
    (
        maps::OUTCOMES,
        MapType::PerCpuArray,
        size_of::<Counter>() as u32,
        Outcome::COUNT,
    ),
    (
        maps::MALFORMED,
        MapType::PerCpuArray,
        size_of::<Counter>() as u32,
        Malformed::COUNT,
    ),
    (
        maps::CONFIG,
        MapType::Array,
        size_of::<GatewayConfig>() as u32,
        1,
    ),
    (maps::TRACE, MapType::Array, size_of::<Trace>() as u32, 1),
    // Counter maps: entries per CPU (see `PER_CPU_BLOCKS`).
    (
        maps::RULE_COUNTERS,
        MapType::Array,
        size_of::<Counter>() as u32,
        DEFAULT_COUNTER_SLOTS,
    ),
    (
        maps::TENANT_COUNTERS,
        MapType::Array,
        size_of::<Counter>() as u32,
        tenant_counters_per_cpu(DEFAULT_TENANT_SLOTS),
    ),
    (maps::GATEWAY, MapType::Array, 4, GATEWAY_SLOTS * SLOT_WORDS),
    (
        maps::TENANTS,
        MapType::Array,
        4,
        DEFAULT_TENANT_SLOTS * SLOT_WORDS,
    ),
    (
        maps::CAPTURE,
        MapType::Array,
        size_of::<fluxgate_common::CaptureConfig>() as u32,
        1,
    ),
    (
        maps::CAPTURE_RATE,
        MapType::PerCpuArray,
        size_of::<fluxgate_common::CaptureRate>() as u32,
        1,
    ),
    // A ring buffer has no keys or values; its size is its max_entries.
    (
        maps::DROPS,
        MapType::RingBuf,
        0,
        fluxgate_common::DROPS_RING_BYTES,
    ),
    (
        maps::SCRATCH,
        MapType::PerCpuArray,
        size_of::<Scratch>() as u32,
        1,
    ),
    (maps::CLASSIFIERS, MapType::ProgramArray, 4, MAX_VERSIONS),
    (
        maps::VERSIONS,
        MapType::Array,
        4,
        version_slots(DEFAULT_TENANT_SLOTS),
    ),
    (maps::PROBE_GATEWAY, MapType::Array, 4, GATEWAY_SLOTS),
    (maps::PROBE_TENANTS, MapType::Array, 4, DEFAULT_TENANT_SLOTS),
    (
        maps::PROBE_TRACE,
        MapType::Array,
        size_of::<Trace>() as u32,
        1,
    ),
    (
        maps::PROBE_SINK,
        MapType::Array,
        size_of::<Counter>() as u32,
        1,
    ),
    (maps::BENCH_TAIL, MapType::ProgramArray, 4, 1),
    (
        maps::BUCKETS,
        MapType::Array,
        size_of::<fluxgate_common::limit::LimitSlot>() as u32,
        DEFAULT_COUNTER_SLOTS,
    ),
    (
        maps::SOURCE_BUCKETS,
        MapType::LruHash,
        size_of::<u64>() as u32,
        DEFAULT_SOURCE_BUCKETS,
    ),
    (
        maps::SOURCE_INSERTS,
        MapType::PerCpuArray,
        size_of::<u64>() as u32,
        1,
    ),
];

/// The key size of map `name` of type `map_type` in [`MAP_SPECS`].
fn key_size(name: &str, map_type: MapType) -> u32 {
    if name == maps::SOURCE_BUCKETS {
        size_of::<fluxgate_common::limit::SourceKey>() as u32
    } else if map_type == MapType::RingBuf {
        0
    } else {
        4
    }
}

/// Maps created `BPF_F_MMAPABLE`: the slot maps of region bases (read by the
/// pool allocator), the cell pool (tables are copied into it) and the
/// counter maps (read without a syscall per counter).
const MMAPABLE_MAPS: [&str; 7] = [
    maps::POOL,
    maps::GATEWAY,
    maps::TENANTS,
    maps::PROBE_GATEWAY,
    maps::PROBE_TENANTS,
    maps::RULE_COUNTERS,
    maps::TENANT_COUNTERS,
];

/// Maps of one block of their [`MAP_SPECS`] entries per possible CPU
/// ([`fluxgate_common::per_cpu`]).
const PER_CPU_BLOCKS: [&str; 2] = [maps::RULE_COUNTERS, maps::TENANT_COUNTERS];

/// The names of every map of the object, in [`MAP_SPECS`] order.
pub(crate) fn map_names() -> impl Iterator<Item = &'static str> {
    MAP_SPECS.iter().map(|(name, ..)| *name)
}

/// The numbers of slots an attachment's maps are sized by, chosen at load
/// time (see `Sizes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slots {
    /// Tenant slots: tenant indexes `0..tenant`.
    pub(crate) tenant: u32,
    /// Counter slots: rule counter slots `0..counter` (per CPU).
    pub(crate) counter: u32,
    /// Entries of the per-source bucket map.
    pub(crate) source: u32,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            tenant: DEFAULT_TENANT_SLOTS,
            counter: DEFAULT_COUNTER_SLOTS,
            source: DEFAULT_SOURCE_BUCKETS,
        }
    }
}

/// Entries (per CPU block, for [`PER_CPU_BLOCKS`]) of the maps whose size
/// follows the number of tenant or counter slots; `None` for the others.
fn slot_sized(name: &str, slots: Slots) -> Option<u32> {
    match name {
        maps::TENANTS => Some(slots.tenant * SLOT_WORDS),
        maps::PROBE_TENANTS => Some(slots.tenant),
        maps::VERSIONS => Some(version_slots(slots.tenant)),
        maps::TENANT_COUNTERS => Some(tenant_counters_per_cpu(slots.tenant)),
        maps::RULE_COUNTERS | maps::BUCKETS => Some(slots.counter),
        maps::SOURCE_BUCKETS => Some(slots.source),
        _ => None,
    }
}

/// Checks a number of tenant slots asked for: at least 1, at most
/// [`MAX_TENANT_SLOTS`].
pub(crate) fn check_tenant_slots(tenant_slots: u32) -> Result<u32, Error> {
    if tenant_slots == 0 || tenant_slots > MAX_TENANT_SLOTS {
        return Err(Error::InvalidArgument(format!(
            "{tenant_slots} tenant slots asked for; an attachment has 1 to {MAX_TENANT_SLOTS}"
        )));
    }
    Ok(tenant_slots)
}

/// Checks a number of per-source buckets asked for: at least 1, at most
/// [`MAX_SOURCE_BUCKETS`].
pub(crate) fn check_source_buckets(source_buckets: u32) -> Result<u32, Error> {
    if source_buckets == 0 || source_buckets > MAX_SOURCE_BUCKETS {
        return Err(Error::InvalidArgument(format!(
            "{source_buckets} per-source buckets asked for; an attachment has 1 to \
             {MAX_SOURCE_BUCKETS}"
        )));
    }
    Ok(source_buckets)
}

/// Checks a number of counter slots asked for: at least 1, at most
/// [`MAX_COUNTER_SLOTS`], and one block of them per possible CPU within a
/// map's 2³² entries.
pub(crate) fn check_counter_slots(counter_slots: u32) -> Result<u32, Error> {
    if counter_slots == 0 || counter_slots > MAX_COUNTER_SLOTS {
        return Err(Error::InvalidArgument(format!(
            "{counter_slots} counter slots asked for; an attachment has 1 to {MAX_COUNTER_SLOTS}"
        )));
    }
    let cpus = possible_cpus()?;
    if counter_slots.checked_mul(cpus).is_none() {
        return Err(Error::InvalidArgument(format!(
            "{counter_slots} counter slots on each of {cpus} possible CPUs are more than a \
             map holds; ask for at most {}",
            u32::MAX / cpus.max(1)
        )));
    }
    Ok(counter_slots)
}

/// The entries of each map whose size is chosen at load time (the maps of
/// [`PER_CPU_BLOCKS`] and those sized by the number of tenant or counter
/// slots), on this machine, as every loader must create (or find) them.
pub(crate) fn sized_map_entries(slots: Slots) -> Result<Vec<(&'static str, u32)>, Error> {
    MAP_SPECS
        .iter()
        .filter(|(name, ..)| PER_CPU_BLOCKS.contains(name) || slot_sized(name, slots).is_some())
        .map(|&(name, _, _, entries)| Ok((name, entries_here(name, entries, slots)?)))
        .collect()
}

/// The entries map `name`, of `spec_entries` in [`MAP_SPECS`], has on this
/// machine with `slots`: one block of them per possible CPU for the maps of
/// [`PER_CPU_BLOCKS`] (only those ask the kernel how many CPUs there are).
fn entries_here(name: &str, spec_entries: u32, slots: Slots) -> Result<u32, Error> {
    let entries = slot_sized(name, slots).unwrap_or(spec_entries);
    if PER_CPU_BLOCKS.contains(&name) {
        let cpus = possible_cpus()?;
        entries.checked_mul(cpus).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{name}: {entries} entries on each of {cpus} possible CPUs are more than a map holds"
            ))
        })
    } else {
        Ok(entries)
    }
}

/// The entries of each CPU's block of a counter map (one of
/// [`PER_CPU_BLOCKS`]) of `max_entries` entries: `None` unless they divide
/// evenly among the possible CPUs.
pub(crate) fn per_cpu_block(max_entries: u32) -> Result<Option<u32>, Error> {
    let cpus = possible_cpus()?;
    Ok((cpus > 0 && max_entries.is_multiple_of(cpus)).then(|| max_entries / cpus))
}

/// The CPUs the kernel may run a program on (every one has a block in the
/// counter maps).
pub(crate) fn possible_cpus() -> Result<u32, Error> {
    let cpus =
        aya::util::nr_cpus().map_err(|(_, e)| Error::kernel("count the possible CPUs", e))?;
    Ok(cpus as u32)
}

/// The map pinned at `path` (not there, or not a map: incompatible state).
pub(crate) fn pinned_map(path: &Path) -> Result<MapData, Error> {
    MapData::from_pin(path).map_err(|e| Error::Incompatible {
        path: path.to_path_buf(),
        reason: format!("cannot open pinned map: {e}"),
    })
}

/// The kernel's information about a pinned map.
pub(crate) fn map_info(data: &MapData) -> Result<aya::maps::MapInfo, Error> {
    data.info()
        .map_err(|e| Error::kernel("read pinned map info", e))
}

/// A map's shape as adoption checks it: (type, key size, value size,
/// entries, flags).
pub(crate) type Shape = (Option<MapType>, u32, u32, u32, u32);

/// The shape of a map from its information.
pub(crate) fn shape(info: &aya::maps::MapInfo) -> Shape {
    (
        info.map_type().ok(),
        info.key_size(),
        info.value_size(),
        info.max_entries(),
        info.map_flags(),
    )
}

/// Opens the map pinned at `path` as map `name` of [`MAP_SPECS`], after
/// checking that its type, key and value sizes, entries and flags are what
/// this build creates ([`Error::Incompatible`] otherwise: a stale pin from an
/// older build is never reused silently). The maps sized by the number of
/// tenant or counter slots must have `slots`.
pub(crate) fn adopt_map(name: &'static str, path: &Path, slots: Slots) -> Result<Map, Error> {
    let data = pinned_map(path)?;
    let (_, map_type, value_size, max_entries) = MAP_SPECS
        .iter()
        .copied()
        .find(|(n, ..)| *n == name)
        .ok_or_else(|| Error::InvalidArgument(format!("unknown map {name}")))?;
    let info = map_info(&data)?;
    let found = shape(&info);
    let key_size = key_size(name, map_type);
    // The pool's size is chosen at load time: any size that holds a table.
    let max_entries = if max_entries == 0 && info.max_entries() >= 2 {
        info.max_entries()
    } else {
        entries_here(name, max_entries, slots)?
    };
    // The slot maps, the pool and the counter maps are mmapable; the
    // others have no flags.
    let flags = if MMAPABLE_MAPS.contains(&name) {
        BPF_F_MMAPABLE
    } else {
        0
    };
    if found != (Some(map_type), key_size, value_size, max_entries, flags) {
        return Err(Error::Incompatible {
            path: path.to_path_buf(),
            reason: format!(
                "expected {map_type:?} key {key_size} value {value_size} entries {max_entries} flags {flags:#x}, \
                 found {:?} key {} value {} entries {} flags {:#x}",
                found.0, found.1, found.2, found.3, found.4
            ),
        });
    }
    Ok(match map_type {
        MapType::PerCpuArray => Map::PerCpuArray(data),
        MapType::ArrayOfMaps => Map::ArrayOfMaps(data),
        MapType::ProgramArray => Map::ProgramArray(data),
        MapType::RingBuf => Map::RingBuf(data),
        MapType::LruHash => Map::LruHashMap(data),
        _ => Map::Array(data),
    })
}

/// The map data of array map `map` (of any array kind) called `name`.
pub(crate) fn map_data<'m>(map: &'m Map, name: &str) -> Result<&'m MapData, Error> {
    match map {
        Map::Array(d) | Map::PerCpuArray(d) | Map::ProgramArray(d) | Map::ArrayOfMaps(d) => Ok(d),
        _ => Err(Error::InvalidArgument(format!("{name} is not an array"))),
    }
}

/// `root/<iface>`, refusing names that could escape `root`.
pub(crate) fn iface_dir(root: &Path, iface: &str) -> Result<PathBuf, Error> {
    let valid = !iface.is_empty()
        && iface.len() < libc::IFNAMSIZ
        && !iface.starts_with('.')
        && iface.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "{iface:?} is not a valid interface name"
        )));
    }
    Ok(root.join(iface))
}
