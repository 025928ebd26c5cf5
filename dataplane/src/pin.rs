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
    Counters, Error, Program, config,
    layout::{self, LINK, PROBE, PROBE_STAGING, TABLES_DIR},
    pool::Pool,
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
        fs::create_dir_all(&dir).map_err(|e| Error::kernel("create the pin directory", e))?;
        let pinned = PinnedAttachment {
            iface: iface.to_owned(),
            dir,
            pool: std::sync::Mutex::new(Some(program.pool.clone())),
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
        let dir = layout::iface_dir(root, iface)?;
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
        for name in layout::map_names() {
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

    /// Replaces the gateway configuration of the running program.
    pub fn set_config(&self, config: &GatewayConfig) -> Result<(), Error> {
        config::write_config(&mut self.open_map(maps::CONFIG)?, config)
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

    /// Map `name` of this attachment, after checking its shape (see
    /// [`layout::adopt_map`]).
    pub(crate) fn open_map(&self, name: &'static str) -> Result<Map, Error> {
        layout::adopt_map(name, &self.dir.join(name))
    }

    fn remove_pins(&self) {
        for name in layout::map_names().chain([LINK, PROBE, PROBE_STAGING]) {
            let _ignored = fs::remove_file(self.dir.join(name));
        }
        // Kept table generations (see `kept_tables.rs`): unpinning frees them.
        let _ignored = fs::remove_dir_all(self.dir.join(TABLES_DIR));
        let _ignored = fs::remove_dir(&self.dir);
    }
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
