//! State handed over to bpffs: the XDP link and the maps of one attached
//! interface live under `<root>/<iface>/`, so the program keeps running and
//! counting while no fluxgate process exists, and a later process adopts it.

use std::{
    fs, io,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::Map,
    programs::{
        Xdp,
        links::{FdLink, LinkError, PinnedLink},
        xdp::XdpLink,
    },
};
use fluxgate_common::{ABI_VERSION, GatewayConfig, PROBE_PROGRAM_NAME, maps};

use crate::{
    Counters, Error, Program, config, kept_tables,
    layout::{self, KEPT, LINK, PROBE, PROBE_STAGING, TABLES_DIR},
    pool::Pool,
    sys,
};

/// bpffs magic number (`BPF_FS_MAGIC` in linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// fluxgate state pinned for one interface, adopted by this process.
#[derive(Debug)]
pub struct PinnedAttachment {
    iface: String,
    dir: PathBuf,
    /// The cell pool, once opened (see `pool.rs`).
    pool: std::sync::Mutex<Option<Pool>>,
    /// Tenant slots, chosen when the program was loaded.
    tenant_slots: u32,
    /// Counter slots, chosen when the program was loaded.
    counter_slots: u32,
    /// Entries of the per-source bucket map, chosen when the program was loaded.
    source_buckets: u32,
    /// The kept-table map, once opened (see `kept_tables.rs`).
    pub(crate) kept: std::sync::OnceLock<aya::maps::MapData>,
}

impl PinnedAttachment {
    pub(crate) fn create(
        root: &Path,
        iface: &str,
        program: &mut Program,
        link: XdpLink,
    ) -> Result<Self, Error> {
        let dir = layout::iface_dir(root, iface)?;
        ensure_bpffs(root)?;
        if dir.exists() {
            return Err(Error::AlreadyAttached {
                iface: iface.to_owned(),
                path: dir,
            });
        }
        secure_dirs(root, &dir)?;
        let pinned = PinnedAttachment {
            iface: iface.to_owned(),
            dir,
            pool: std::sync::Mutex::new(Some(program.pool.clone())),
            tenant_slots: program.tenant_slots,
            counter_slots: program.counter_slots,
            source_buckets: program.source_buckets,
            kept: std::sync::OnceLock::new(),
        };
        // On any failure below, `remove_pins` undoes what was pinned; the link
        // is dropped unpinned, which detaches the program.
        let result = (|| {
            for name in layout::map_names() {
                program
                    .map(name)?
                    .pin(pinned.dir.join(name))
                    .map_err(|e| Error::kernel("pin a map", e))?;
            }
            let kept = kept_tables::create_kept_map(program.tenant_slots)?;
            kept.pin(pinned.dir.join(KEPT))
                .map_err(|e| Error::kernel("pin the kept-table map", e))?;
            let _first = pinned.kept.set(kept);
            let probe: &mut Xdp = program
                .ebpf
                .program_mut(PROBE_PROGRAM_NAME)
                .ok_or_else(|| Error::Incompatible {
                    path: "<object>".into(),
                    reason: format!("no program named {PROBE_PROGRAM_NAME}"),
                })?
                .try_into()
                .map_err(|e| Error::kernel("find the XDP program in the object", e))?;
            probe
                .pin(pinned.dir.join(PROBE))
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
        let dir = attached_dir(root, iface)?;
        // The configuration first: an older build's state is reported by
        // its ABI version, before any map of another shape is (the
        // configuration's own size changed with ABI 13).
        let abi_version = pinned_abi_version(&dir)?;
        if abi_version != ABI_VERSION {
            return Err(Error::Incompatible {
                path: dir.join(maps::CONFIG),
                reason: format!(
                    "pinned state has ABI version {abi_version}, this build speaks {ABI_VERSION}; \
                     detach and attach again to replace it"
                ),
            });
        }
        let config = config::read_config(&layout::adopt_map(
            maps::CONFIG,
            &dir.join(maps::CONFIG),
            layout::Slots::default(),
        )?)?;
        let tenant_slots = pinned_tenant_slots(&dir)?;
        if config.tenant_slots != tenant_slots {
            return Err(Error::Incompatible {
                path: dir.join(maps::CONFIG),
                reason: format!(
                    "the configuration says {} tenant slots, {} has {tenant_slots}",
                    config.tenant_slots,
                    maps::PROBE_TENANTS
                ),
            });
        }
        let counter_slots = pinned_counter_slots(&dir)?;
        if config.counter_slots != counter_slots {
            return Err(Error::Incompatible {
                path: dir.join(maps::CONFIG),
                reason: format!(
                    "the configuration says {} counter slots, {} has {counter_slots} per CPU",
                    config.counter_slots,
                    maps::RULE_COUNTERS
                ),
            });
        }
        let source_buckets = pinned_source_buckets(&dir)?;
        let pinned = PinnedAttachment {
            iface: iface.to_owned(),
            dir,
            pool: std::sync::Mutex::new(None),
            tenant_slots,
            counter_slots,
            source_buckets,
            kept: std::sync::OnceLock::new(),
        };
        for name in layout::map_names() {
            pinned.open_map(name)?;
        }
        let kept = kept_tables::adopt_kept_map(&pinned.dir.join(KEPT), tenant_slots)?;
        let _first = pinned.kept.set(kept);
        Ok(pinned)
    }

    /// Whether state is pinned for `iface` under `root`.
    pub fn exists(root: &Path, iface: &str) -> Result<bool, Error> {
        Ok(layout::iface_dir(root, iface)?.exists())
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
        Counters::read(
            &self.open_map(maps::OUTCOMES)?,
            &self.open_map(maps::MALFORMED)?,
        )
    }

    /// The gateway configuration of the running program.
    pub fn config(&self) -> Result<GatewayConfig, Error> {
        config::read_config(&self.open_map(maps::CONFIG)?)
    }

    /// Replaces the gateway configuration of the running program (its
    /// [`GatewayConfig::tenant_slots`] and [`GatewayConfig::counter_slots`]
    /// stay the attachment's).
    pub fn set_config(&self, config: &GatewayConfig) -> Result<(), Error> {
        let config = GatewayConfig {
            tenant_slots: self.tenant_slots,
            counter_slots: self.counter_slots,
            ..*config
        };
        config::write_config(&mut self.open_map(maps::CONFIG)?, &config)
    }

    /// Tenant slots of the attachment (chosen when it was attached: tenant
    /// indexes `0..tenant_slots`), as the kernel sized its maps.
    pub fn tenant_slots(&self) -> u32 {
        self.tenant_slots
    }

    /// Counter slots of the attachment (chosen when it was attached: rule
    /// counter slots `0..counter_slots`), as the kernel sized its counter
    /// map: its entries over the possible CPUs, checked against the
    /// configuration when the attachment was opened.
    pub fn counter_slots(&self) -> u32 {
        self.counter_slots
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

    /// Detaches whatever is pinned for `iface` under `root` without adopting
    /// it: the way out of state that [`PinnedAttachment::open`] reports as
    /// [`Error::Incompatible`] (pinned by another build: an older ABI, other
    /// map sizes). The link is unpinned (the program detaches) and the
    /// interface's pin directory removed, after the same ownership checks as
    /// `open`.
    pub fn detach_incompatible(root: &Path, iface: &str) -> Result<(), Error> {
        let dir = attached_dir(root, iface)?;
        let link = PinnedLink::from_pin(dir.join(LINK))
            .map_err(|e| Error::kernel("open the pinned XDP link", e))?;
        drop(
            link.unpin()
                .map_err(|e| Error::kernel("unpin the XDP link", e))?,
        );
        fs::remove_dir_all(&dir).map_err(|e| Error::kernel("remove the pinned state", e))
    }

    /// Map `name` of this attachment, after checking its shape (see
    /// [`layout::adopt_map`]).
    pub(crate) fn open_map(&self, name: &'static str) -> Result<Map, Error> {
        layout::adopt_map(name, &self.dir.join(name), self.slots())
    }

    /// The slots the attachment's maps are sized by.
    pub(crate) fn slots(&self) -> layout::Slots {
        layout::Slots {
            tenant: self.tenant_slots,
            counter: self.counter_slots,
            source: self.source_buckets,
        }
    }

    /// Entries of the attachment's LRU map of per-source limit buckets
    /// (chosen when it was attached).
    pub fn source_buckets(&self) -> u32 {
        self.source_buckets
    }

    fn remove_pins(&self) {
        for name in layout::map_names().chain([KEPT, LINK, PROBE, PROBE_STAGING]) {
            let _ignored = fs::remove_file(self.dir.join(name));
        }
        // Kept table generations of ABI 11 and older, one pin each.
        let _ignored = fs::remove_dir_all(self.dir.join(TABLES_DIR));
        let _ignored = fs::remove_dir(&self.dir);
    }
}

/// The tenant slots of the attachment pinned in `dir`: the entries of its
/// probe overlay map ([`maps::PROBE_TENANTS`], one per tenant slot), from
/// the map's info. Its shape is checked with every other map's afterwards.
fn pinned_tenant_slots(dir: &Path) -> Result<u32, Error> {
    let path = dir.join(maps::PROBE_TENANTS);
    let entries = layout::map_info(&layout::pinned_map(&path)?)?.max_entries();
    layout::check_tenant_slots(entries).map_err(|e| Error::Incompatible {
        path,
        reason: e.to_string(),
    })
}

/// The ABI version pinned state in `dir` was written with: the first word
/// of its configuration ([`GatewayConfig::abi_version`], first in every
/// version of the struct), whatever the configuration's size.
fn pinned_abi_version(dir: &Path) -> Result<u32, Error> {
    let path = dir.join(maps::CONFIG);
    let data = layout::pinned_map(&path)?;
    let value_size = layout::map_info(&data)?.value_size();
    // Large enough for any configuration so far (16 and 24 bytes).
    type Words = [u32; 16];
    if !(4..=size_of::<Words>() as u32).contains(&value_size) {
        return Err(Error::Incompatible {
            path,
            reason: format!("a configuration of {value_size} bytes"),
        });
    }
    let words: Option<Words> = sys::lookup_elem(data.fd().as_fd(), &0u32)
        .map_err(|e| Error::kernel("read the config map", e))?;
    Ok(words.map_or(0, |w| w[0]))
}

/// The counter slots of the attachment pinned in `dir`: the entries of its
/// rule counter map ([`maps::RULE_COUNTERS`], one block of them per possible
/// CPU) over the possible CPUs, from the map's info. Its shape is checked
/// with every other map's afterwards.
fn pinned_counter_slots(dir: &Path) -> Result<u32, Error> {
    let path = dir.join(maps::RULE_COUNTERS);
    let entries = layout::map_info(&layout::pinned_map(&path)?)?.max_entries();
    let Some(per_cpu) = layout::per_cpu_block(entries)? else {
        return Err(Error::Incompatible {
            path,
            reason: format!(
                "{entries} entries are not one block per possible CPU ({} CPUs)",
                layout::possible_cpus()?
            ),
        });
    };
    layout::check_counter_slots(per_cpu).map_err(|e| Error::Incompatible {
        path,
        reason: e.to_string(),
    })
}

/// The entries of the per-source bucket map pinned in `dir`, from the
/// map's info (its shape is checked with every other map's afterwards).
fn pinned_source_buckets(dir: &Path) -> Result<u32, Error> {
    let path = dir.join(maps::SOURCE_BUCKETS);
    let entries = layout::map_info(&layout::pinned_map(&path)?)?.max_entries();
    layout::check_source_buckets(entries).map_err(|e| Error::Incompatible {
        path,
        reason: e.to_string(),
    })
}

/// Fails unless `root` (or its nearest existing ancestor) is on a bpffs.
/// The directories pinned state sits in, outermost first: fluxgate's bpffs
/// directory (`root`'s parent), the namespace's (`root`), the interface's.
/// A mount point among them (a `root` right under the bpffs mount, as tests
/// use) is the mount's business, not checked: setup mounts bpffs 0700, and a
/// sticky shared mount lets no one replace the entries fluxgate owns there.
fn pin_dirs<'a>(root: &'a Path, dir: &'a Path) -> impl Iterator<Item = &'a Path> {
    root.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .into_iter()
        .chain([root, dir])
}

/// Creates the pin directories that are missing, mode 0700 (whatever the
/// umask), and checks every one of them ([`check_dir`]), outermost first,
/// before anything is pinned.
fn secure_dirs(root: &Path, dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    let mut dirs = pin_dirs(root, dir).peekable();
    if let Some(outer) = dirs.peek().and_then(|d| d.parent()) {
        // Above fluxgate's own directories (normally the bpffs mount itself).
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(outer)
            .map_err(|e| Error::kernel("create the pin directory", e))?;
    }
    for d in dirs {
        match fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::kernel("create the pin directory", e)),
        }
        check_dir(d)?;
    }
    Ok(())
}

/// Refuses a pin directory that is not a directory (a symbolic link is not
/// followed), is owned by neither root nor this process's user, or is
/// writable by group or others: whoever can write in it can replace a pinned
/// map or link that fluxgate then adopts. A mount point passes ([`pin_dirs`]).
fn check_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        fs::symlink_metadata(dir).map_err(|e| Error::kernel("inspect the pin directory", e))?;
    let above = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    if meta.file_type().is_dir()
        && fs::metadata(above).is_ok_and(|m| m.dev() != meta.dev() || m.ino() == meta.ino())
    {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let reason = if !meta.file_type().is_dir() {
        "it is not a directory (symbolic links are not followed)".to_owned()
    } else if meta.uid() != 0 && meta.uid() != euid {
        format!("it is owned by uid {}", meta.uid())
    } else if meta.mode() & 0o022 != 0 {
        format!(
            "its mode {:04o} lets group or others write in it",
            meta.mode() & 0o7777
        )
    } else {
        return Ok(());
    };
    Err(Error::UnsafePinDirectory {
        path: dir.to_path_buf(),
        reason,
    })
}

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
        let fd = layout::map_data(&map, maps::POOL)?
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

/// The pin directory of `iface` under `root`, if fluxgate is attached there
/// (its link is pinned), after checking that it and its parents are root's
/// and not writable by others.
fn attached_dir(root: &Path, iface: &str) -> Result<std::path::PathBuf, Error> {
    let dir = layout::iface_dir(root, iface)?;
    if !dir.join(LINK).exists() {
        return Err(Error::NotAttached {
            iface: iface.to_owned(),
            path: dir,
        });
    }
    for d in pin_dirs(root, &dir) {
        check_dir(d)?;
    }
    Ok(dir)
}
