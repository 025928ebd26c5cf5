//! Classifier versions and the dispatcher, on pinned state.
//!
//! The attached dispatcher tail-calls, for each packet, the classifier version
//! its tenant is assigned to: `FG_VERSIONS[tenant]` is an index into the
//! `FG_CLASSIFIERS` program array. A new build's classifier is loaded *beside*
//! the running ones ([`PinnedAttachment::stage_version`]), sharing every pinned
//! map, then assigned tenant by tenant ([`PinnedAttachment::assign_version`]):
//! each step is one 4-byte map update, and rolling back is the same update with
//! the old index. The dispatcher itself is replaced through `BPF_LINK_UPDATE`
//! ([`PinnedAttachment::replace_dispatcher`]): atomic, no detach window.

use std::{os::fd::AsFd, time::SystemTime};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, MapError, ProgramArray},
    programs::{
        Xdp,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use fluxgate_common::{
    CLASSIFIER_PROGRAM_NAME, MAX_VERSIONS, PROBE_PROGRAM_NAME, PROGRAM_NAME, VERSION_SLOT_NONE,
    VERSION_SLOT_PROBE, maps, version_slot,
};

use crate::{
    Error, OBJECT, PinnedAttachment,
    error::os_error,
    layout::{self, LINK, PROBE, PROBE_STAGING},
    program, sys,
};

/// One loaded classifier version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Index in the classifier program array (what tenants are assigned to).
    pub version: u32,
    /// Kernel program id.
    pub program_id: u32,
    /// Kernel program tag (hash of the instructions): equal tags, same code.
    pub tag: String,
    /// When it was loaded.
    pub loaded_at: Option<SystemTime>,
    /// Tenant indices it serves (the packets of no tenant are listed as `None`).
    pub serves: Vec<Option<u32>>,
}

impl PinnedAttachment {
    /// Loads the embedded object again with every map taken from this
    /// attachment's pins (compatibility was checked when it was opened).
    pub(crate) fn adopt_object(&self, object: &[u8]) -> Result<Ebpf, Error> {
        let mut loader = EbpfLoader::new();
        for name in layout::map_names() {
            loader.map_pin_path(name, self.dir().join(name));
        }
        // The pinned maps are reused; declare the counter maps with their
        // size anyway, so the object's definitions match them.
        for (name, entries) in layout::sized_map_entries(self.slots())? {
            loader.map_max_entries(name, entries);
        }
        loader
            .load(object)
            .map_err(|e| Error::kernel("load the eBPF object onto the pinned maps", e))
    }

    /// Loads this build's classifier beside the running versions, in a free
    /// version slot, serving nobody yet. Returns its version index.
    pub fn stage_version(&self) -> Result<u32, Error> {
        self.stage_version_from(OBJECT, CLASSIFIER_PROGRAM_NAME)
    }

    /// Like [`stage_version`](Self::stage_version) with program `program` of an
    /// arbitrary fluxgate object `object` — which must use this build's maps
    /// (name and shape). Tests use it to stage a deliberately wrong classifier.
    pub fn stage_version_from(&self, object: &[u8], program: &str) -> Result<u32, Error> {
        let mut ebpf = self.adopt_object(object)?;
        program::load_xdp(&mut ebpf, program)?;
        let fd = program::xdp_of(&ebpf, program)?
            .fd()
            .map_err(|e| Error::kernel("get a program fd", e))?
            .try_clone()
            .map_err(|e| Error::kernel("duplicate a program fd", e))?;
        let loaded = self.loaded_versions()?;
        let free = (0..MAX_VERSIONS)
            .find(|v| !loaded.iter().any(|(l, _)| l == v))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "all {MAX_VERSIONS} classifier version slots are in use; unload one first"
                ))
            })?;
        let mut map = self.open_map(maps::CLASSIFIERS)?;
        let mut array: ProgramArray<&mut MapData> = ProgramArray::try_from(&mut map)
            .map_err(|e| Error::kernel("open the classifier array", e))?;
        array
            .set(free, &fd, 0)
            .map_err(|e| Error::kernel("install a classifier version", e))?;
        Ok(free)
    }

    /// `(version, program id)` of every loaded classifier version.
    fn loaded_versions(&self) -> Result<Vec<(u32, u32)>, Error> {
        let map = self.open_map(maps::CLASSIFIERS)?;
        let fd = layout::map_data(&map, maps::CLASSIFIERS)?.fd().as_fd();
        let mut out = Vec::new();
        for v in 0..MAX_VERSIONS {
            if let Some(id) = sys::program_array_id(fd, v)
                .map_err(|e| Error::kernel("read the classifier array", e))?
            {
                out.push((v, id));
            }
        }
        Ok(out)
    }

    /// Every loaded classifier version and whom it serves.
    pub fn versions(&self) -> Result<Vec<VersionInfo>, Error> {
        let assigned = self.assignments()?;
        let programs: Vec<aya::programs::ProgramInfo> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .collect();
        Ok(self
            .loaded_versions()?
            .into_iter()
            .map(|(version, id)| {
                let info = programs.iter().find(|p| p.id() == id);
                VersionInfo {
                    version,
                    program_id: id,
                    tag: info
                        .map(|i| format!("{:016x}", i.tag()))
                        .unwrap_or_default(),
                    loaded_at: info.and_then(|i| i.loaded_at()),
                    serves: assigned
                        .iter()
                        .filter(|(_, v)| *v == version)
                        .map(|(t, _)| *t)
                        .collect(),
                }
            })
            .collect())
    }

    /// The version serving `tenant` (`None`: packets of no tenant).
    pub fn version_of(&self, tenant: Option<u32>) -> Result<u32, Error> {
        self.check_tenant(tenant)?;
        let map = self.open_map(maps::VERSIONS)?;
        let array: Array<&MapData, u32> =
            Array::try_from(&map).map_err(|e| Error::kernel("open the version map", e))?;
        array
            .get(&version_slot(tenant), 0)
            .map_err(|e| Error::kernel("read the version map", e))
    }

    /// Every `(tenant, version)` assignment (`None`: packets of no tenant):
    /// one `BPF_MAP_LOOKUP_BATCH` of the version map.
    fn assignments(&self) -> Result<Vec<(Option<u32>, u32)>, Error> {
        let map = self.open_map(maps::VERSIONS)?;
        let fd = layout::map_data(&map, maps::VERSIONS)?.fd().as_fd();
        let entries: Vec<(u32, u32)> =
            sys::lookup_batch(fd, 1 << 16).map_err(|e| Error::kernel("read the version map", e))?;
        Ok(entries
            .into_iter()
            .filter_map(|(slot, v)| match slot {
                VERSION_SLOT_NONE => Some((None, v)),
                VERSION_SLOT_PROBE => None,
                t => Some((Some(t - 2), v)),
            })
            .collect())
    }

    /// Makes `version` serve each of `tenants` (`None`: packets of no tenant),
    /// in order, one atomic 4-byte update each. `version` must be loaded.
    pub fn assign_version(&self, version: u32, tenants: &[Option<u32>]) -> Result<(), Error> {
        if !self.loaded_versions()?.iter().any(|(v, _)| *v == version) {
            return Err(Error::InvalidArgument(format!(
                "classifier version {version} is not loaded"
            )));
        }
        for t in tenants {
            self.check_tenant(*t)?;
        }
        self.write_versions(version, tenants.iter().map(|t| version_slot(*t)))
    }

    /// Makes `version` serve every tenant and the packets of no tenant.
    pub fn assign_version_all(&self, version: u32) -> Result<(), Error> {
        let all: Vec<Option<u32>> = (0..self.tenant_slots()).map(Some).chain([None]).collect();
        self.assign_version(version, &all)
    }

    pub(crate) fn write_versions(
        &self,
        version: u32,
        slots: impl IntoIterator<Item = u32>,
    ) -> Result<(), Error> {
        let map = self.open_map(maps::VERSIONS)?;
        let fd = layout::map_data(&map, maps::VERSIONS)?.fd().as_fd();
        let slots: Vec<u32> = slots.into_iter().collect();
        let versions = vec![version; slots.len()];
        // One BPF_MAP_UPDATE_BATCH: in order, each element an atomic update.
        sys::update_batch(fd, &slots, &versions)
            .map_err(|e| Error::kernel("assign a classifier version", e))
    }

    /// Unloads `version`. Refused while it serves any tenant (or the packets
    /// of no tenant): a tenant never loses its classifier.
    pub fn unload_version(&self, version: u32) -> Result<(), Error> {
        let serving: Vec<Option<u32>> = self
            .assignments()?
            .into_iter()
            .filter(|(_, v)| *v == version)
            .map(|(t, _)| t)
            .collect();
        if !serving.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "classifier version {version} still serves {} tenant slot(s); assign them another version first",
                serving.len()
            )));
        }
        let mut map = self.open_map(maps::CLASSIFIERS)?;
        let mut array: ProgramArray<&mut MapData> = ProgramArray::try_from(&mut map)
            .map_err(|e| Error::kernel("open the classifier array", e))?;
        match array.clear_index(&version) {
            Ok(()) => Ok(()),
            // Already empty: nothing to unload.
            Err(e) if os_error(&e) == Some(libc::ENOENT) => Ok(()),
            Err(e @ MapError::OutOfBounds { .. }) => Err(Error::InvalidArgument(format!(
                "there is no classifier version {version}: {e}"
            ))),
            Err(e) => Err(Error::kernel("unload a classifier version", e)),
        }
    }

    /// Replaces the attached dispatcher with this build's, through
    /// `BPF_LINK_UPDATE` on the pinned link: atomic, the interface is never
    /// without a program. The pinned probe entry is replaced by this build's
    /// too. Returns the new dispatcher's program id.
    pub fn replace_dispatcher(&self) -> Result<u32, Error> {
        let id = self.replace_dispatcher_from(OBJECT, PROGRAM_NAME)?;
        let mut ebpf = self.adopt_object(OBJECT)?;
        program::load_xdp(&mut ebpf, PROBE_PROGRAM_NAME)?;
        let xdp: &mut Xdp = ebpf
            .program_mut(PROBE_PROGRAM_NAME)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| Error::InvalidArgument("no probe program in the object".into()))?;
        // Pin beside, then rename over the old pin: never a moment without one.
        let path = self.dir().join(PROBE);
        let fresh = self.dir().join(PROBE_STAGING);
        let _stale = std::fs::remove_file(&fresh);
        xdp.pin(&fresh)
            .map_err(|e| Error::kernel("pin the probe program", e))?;
        std::fs::rename(&fresh, &path).map_err(|e| Error::kernel("replace the probe pin", e))?;
        Ok(id)
    }

    /// Like [`replace_dispatcher`](Self::replace_dispatcher) with program
    /// `program` of `object` (same maps required).
    pub fn replace_dispatcher_from(&self, object: &[u8], program: &str) -> Result<u32, Error> {
        let mut ebpf = self.adopt_object(object)?;
        program::load_xdp(&mut ebpf, program)?;
        let xdp: &mut Xdp = ebpf
            .program_mut(program)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| {
                Error::InvalidArgument(format!("no XDP program {program} in the object"))
            })?;
        let link = PinnedLink::from_pin(self.dir().join(LINK))
            .map_err(|e| Error::kernel("open the pinned XDP link", e))?;
        // The pin stays: `link` is only this process's handle on it, which
        // the adopted object owns (and closes) from here on.
        let link = XdpLink::try_from(FdLink::from(link))
            .map_err(|e| Error::kernel("open the pinned XDP link", e))?;
        // BPF_LINK_UPDATE: atomic, the interface is never without a program.
        xdp.attach_to_link(link)
            .map_err(|e| Error::kernel("replace the dispatcher (BPF_LINK_UPDATE)", e))?;
        let info = xdp
            .info()
            .map_err(|e| Error::kernel("read the dispatcher's info", e))?;
        Ok(info.id())
    }

    /// Sets the version probe runs use.
    pub(crate) fn set_probe_version(&self, version: u32) -> Result<(), Error> {
        if !self.loaded_versions()?.iter().any(|(v, _)| *v == version) {
            return Err(Error::InvalidArgument(format!(
                "classifier version {version} is not loaded"
            )));
        }
        self.write_versions(version, [VERSION_SLOT_PROBE])
    }
}

impl PinnedAttachment {
    fn check_tenant(&self, tenant: Option<u32>) -> Result<(), Error> {
        match tenant {
            Some(t) if t >= self.tenant_slots() => Err(Error::InvalidArgument(format!(
                "tenant index {t} is beyond the {} tenant slots of this attachment",
                self.tenant_slots()
            ))),
            _ => Ok(()),
        }
    }
}
