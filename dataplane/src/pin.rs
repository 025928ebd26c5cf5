//! State handed over to bpffs: the XDP link and the maps of one attached
//! interface live under `<root>/<iface>/`, so the program keeps running and
//! counting while no fluxgate process exists, and a later process adopts it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Map, MapData, MapType},
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        xdp::XdpLink,
    },
};
use fluxgate_common::{
    ABI_VERSION, BPF_F_MMAPABLE, Counter, GATEWAY_SLOTS, GatewayConfig, MAX_COUNTERS, MAX_TENANTS,
    MAX_VERSIONS, Malformed, Outcome, SLOT_WORDS, Scratch, TENANT_COUNTERS_PER_CPU, Trace,
    VERSION_SLOTS, maps,
};

use std::os::fd::AsFd;

use crate::{Counters, Error, Program, TableMap, Tables, pool::Pool, program};

/// Where the CLI pins state unless told otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/fluxgate";

pub(crate) const LINK: &str = "link";
/// The probe entry, pinned verified so a preflight never waits for the verifier.
pub(crate) const PROBE: &str = "probe";
/// bpffs magic number (`BPF_FS_MAGIC` in linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The expected shape of each pinned map (name, type, value size, entries; keys
/// are all u32; entries 0: any size, chosen at load time); checked before a
/// pinned map is reused. Every map of the object is here: a program loaded
/// later (a classifier version, a new dispatcher) must share all of them.
pub(crate) const MAP_SPECS: [(&str, MapType, u32, u32); 20] = [
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
        MAX_COUNTERS,
    ),
    (
        maps::TENANT_COUNTERS,
        MapType::Array,
        size_of::<Counter>() as u32,
        TENANT_COUNTERS_PER_CPU,
    ),
    (maps::GATEWAY, MapType::Array, 4, GATEWAY_SLOTS * SLOT_WORDS),
    (maps::TENANTS, MapType::Array, 4, MAX_TENANTS * SLOT_WORDS),
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
    (maps::VERSIONS, MapType::Array, 4, VERSION_SLOTS),
    (maps::PROBE_GATEWAY, MapType::Array, 4, GATEWAY_SLOTS),
    (maps::PROBE_TENANTS, MapType::Array, 4, MAX_TENANTS),
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
];

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

/// The entries of each map of [`PER_CPU_BLOCKS`] on this machine, as every
/// loader must create (or find) them.
pub(crate) fn per_cpu_map_entries() -> Result<Vec<(&'static str, u32)>, Error> {
    MAP_SPECS
        .iter()
        .filter(|(name, ..)| PER_CPU_BLOCKS.contains(name))
        .map(|&(name, _, _, entries)| Ok((name, entries_here(name, entries)?)))
        .collect()
}

/// The entries map `name`, of `spec_entries` in [`MAP_SPECS`], has on this
/// machine: one block of them per possible CPU for the maps of
/// [`PER_CPU_BLOCKS`] (only those ask the kernel how many CPUs there are).
fn entries_here(name: &str, spec_entries: u32) -> Result<u32, Error> {
    if PER_CPU_BLOCKS.contains(&name) {
        Ok(spec_entries.saturating_mul(crate::tables::possible_cpus()?))
    } else {
        Ok(spec_entries)
    }
}

/// fluxgate state pinned for one interface, adopted by this process.
#[derive(Debug)]
pub struct PinnedAttachment {
    iface: String,
    dir: PathBuf,
    /// The cell pool, once opened (see `pool.rs`).
    pool: std::sync::Mutex<Option<Pool>>,
}

impl PinnedAttachment {
    pub(crate) fn create(
        root: &Path,
        iface: &str,
        program: &Program,
        link: XdpLink,
    ) -> Result<Self, Error> {
        let dir = iface_dir(root, iface)?;
        ensure_bpffs(root)?;
        if dir.exists() {
            return Err(Error::AlreadyAttached {
                iface: iface.to_owned(),
                path: dir,
            });
        }
        fs::create_dir_all(&dir).map_err(|e| Error::kernel("create the pin directory", e))?;
        let pinned = PinnedAttachment {
            iface: iface.to_owned(),
            dir,
            pool: std::sync::Mutex::new(Some(program.pool.clone())),
        };
        // On any failure below, `remove_pins` undoes what was pinned; the link
        // is dropped unpinned, which detaches the program.
        let result = (|| {
            for (name, ..) in MAP_SPECS {
                program
                    .map(name)?
                    .pin(pinned.dir.join(name))
                    .map_err(|e| Error::kernel("pin a map", e))?;
            }
            let probe = crate::program::xdp_of(&program.ebpf, fluxgate_common::PROBE_PROGRAM_NAME)?
                .fd()
                .map_err(|e| Error::kernel("get the probe program fd", e))?;
            crate::sys::obj_pin(std::os::fd::AsFd::as_fd(probe), &pinned.dir.join(PROBE))
                .map_err(|e| Error::kernel("pin the probe program", e))?;
            let link: FdLink = link.try_into().map_err(|e: LinkError| Error::Unsupported {
                feature: "bpf_link-based XDP attachment (Linux >= 5.9), needed to pin it",
                source: io::Error::other(e.to_string()),
            })?;
            link.pin(pinned.dir.join(LINK))
                .map_err(|e| Error::kernel("pin the XDP link", e))?;
            Ok(())
        })();
        match result {
            Ok(()) => Ok(pinned),
            Err(err) => {
                pinned.remove_pins();
                Err(err)
            }
        }
    }

    /// Adopts the state pinned for `iface` under `root`, after checking that
    /// every pinned map has the shape this build expects.
    pub fn open(root: &Path, iface: &str) -> Result<Self, Error> {
        let dir = iface_dir(root, iface)?;
        if !dir.join(LINK).exists() {
            return Err(Error::NotAttached {
                iface: iface.to_owned(),
                path: dir,
            });
        }
        let pinned = PinnedAttachment {
            iface: iface.to_owned(),
            dir,
            pool: std::sync::Mutex::new(None),
        };
        for (name, ..) in MAP_SPECS {
            pinned.open_map(name)?;
        }
        let config = pinned.config()?;
        if config.abi_version != ABI_VERSION {
            return Err(Error::Incompatible {
                path: pinned.dir.join(maps::CONFIG),
                reason: format!(
                    "pinned state has ABI version {}, this build speaks {ABI_VERSION}; \
                     detach and attach again to replace it",
                    config.abi_version
                ),
            });
        }
        Ok(pinned)
    }

    /// Whether state is pinned for `iface` under `root`.
    pub fn exists(root: &Path, iface: &str) -> Result<bool, Error> {
        Ok(iface_dir(root, iface)?.exists())
    }

    /// Interfaces with state pinned under `root`, sorted by name.
    pub fn list(root: &Path) -> Result<Vec<String>, Error> {
        let entries = match fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::kernel("list the pin directory", e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join(LINK).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The pin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        program::read_counters(
            &self.open_map(maps::OUTCOMES)?,
            &self.open_map(maps::MALFORMED)?,
        )
    }

    /// The gateway configuration of the running program.
    pub fn config(&self) -> Result<GatewayConfig, Error> {
        program::read_config(&self.open_map(maps::CONFIG)?)
    }

    /// Replaces the gateway configuration of the running program.
    pub fn set_config(&self, config: &GatewayConfig) -> Result<(), Error> {
        program::write_config(&mut self.open_map(maps::CONFIG)?, config)
    }

    /// Detaches the program and removes the pinned state.
    pub fn detach(self) -> Result<(), Error> {
        let link = PinnedLink::from_pin(self.dir.join(LINK))
            .map_err(|e| Error::kernel("open the pinned XDP link", e))?;
        // Unpinning drops the last reference to the link: the program detaches.
        let link = link
            .unpin()
            .map_err(|e| Error::kernel("unpin the XDP link", e))?;
        drop(link);
        self.remove_pins();
        Ok(())
    }

    pub(crate) fn open_map(&self, name: &'static str) -> Result<Map, Error> {
        let path = self.dir.join(name);
        let data = MapData::from_pin(&path).map_err(|e| Error::Incompatible {
            path: path.clone(),
            reason: format!("cannot open pinned map: {e}"),
        })?;
        let (_, map_type, value_size, max_entries) = MAP_SPECS
            .iter()
            .copied()
            .find(|(n, ..)| *n == name)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown map {name}")))?;
        let info = data
            .info()
            .map_err(|e| Error::kernel("read pinned map info", e))?;
        let found = (
            info.map_type().ok(),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
            info.map_flags(),
        );
        let key_size = if map_type == MapType::RingBuf { 0 } else { 4 };
        // The pool's size is chosen at load time: any size that holds a table.
        let max_entries = if max_entries == 0 && info.max_entries() >= 2 {
            info.max_entries()
        } else {
            entries_here(name, max_entries)?
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
                path,
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
            _ => Map::Array(data),
        })
    }

    fn remove_pins(&self) {
        for name in MAP_SPECS.iter().map(|(n, ..)| *n).chain([LINK, PROBE]) {
            let _ignored = fs::remove_file(self.dir.join(name));
        }
        // Kept table generations (see `generations.rs`): unpinning frees them.
        let _ignored = fs::remove_dir_all(self.dir.join(crate::generations::TABLES_DIR));
        let _ignored = fs::remove_dir(&self.dir);
    }
}

/// `root/<iface>`, refusing names that could escape `root`.
fn iface_dir(root: &Path, iface: &str) -> Result<PathBuf, Error> {
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

/// Fails unless `root` (or its nearest existing ancestor) is on a bpffs.
fn ensure_bpffs(root: &Path) -> Result<(), Error> {
    let mut probe = root;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let path = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::InvalidArgument(format!("bad path {}", root.display())))?;
    // SAFETY: statfs writes into `buf`, a properly sized out-parameter.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `buf` is valid for writes.
    if unsafe { libc::statfs(path.as_ptr(), &mut buf) } != 0 {
        return Err(Error::kernel(
            "statfs the pin root",
            io::Error::last_os_error(),
        ));
    }
    if buf.f_type as i64 != BPF_FS_MAGIC {
        return Err(Error::NoBpffs(probe.to_path_buf()));
    }
    Ok(())
}

impl PinnedAttachment {
    /// The attachment's cell pool (opened on first use).
    pub(crate) fn cell_pool(&self) -> Result<Pool, Error> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = &*pool {
            return Ok(p.clone());
        }
        let map = self.open_map(maps::POOL)?;
        let fd = crate::tables::map_data(&map, maps::POOL)?
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::kernel("duplicate a map fd", e))?;
        let p = Pool::open(fd, false)?;
        *pool = Some(p.clone());
        Ok(p)
    }

    /// Cells in the attachment's table pool.
    pub fn pool_cells(&self) -> Result<u32, Error> {
        Ok(self.cell_pool()?.size())
    }
}

impl Tables for PinnedAttachment {
    fn table_map(&mut self, name: &'static str) -> Result<TableMap<'_>, Error> {
        Ok(TableMap::Owned(self.open_map(name)?))
    }

    fn pool(&mut self) -> Result<Pool, Error> {
        self.cell_pool()
    }

    fn kept_regions(&mut self) -> Result<Vec<(u32, u32)>, Error> {
        self.kept_tokens()
    }
}
