//! Rolling out a new classifier *program* tenant by tenant: stage this
//! build's classifier beside the running versions (preflighted against every
//! live tenant), assign tenants to it, unload versions nobody uses, replace
//! the dispatcher with an atomic `bpf_link` update.

use fluxgate_dataplane::VersionInfo;
use serde::Serialize;

use crate::{ControlError, Interface, preflight::report};

/// One loaded classifier version.
#[derive(Clone, Debug, Serialize)]
pub struct Version {
    /// Version number (0: the one loaded at attach).
    pub version: u32,
    /// Kernel program id.
    pub program_id: u32,
    /// Program tag (hash of its instructions), hex.
    pub tag: String,
    /// When it was loaded, seconds since the Unix epoch.
    pub loaded_at: Option<u64>,
    /// Whether it serves packets of no tenant (and the gateway's rules).
    pub serves_gateway: bool,
    /// How many tenant slots it serves.
    pub serves_tenant_slots: usize,
}

impl From<&VersionInfo> for Version {
    fn from(v: &VersionInfo) -> Version {
        Version {
            version: v.version,
            program_id: v.program_id,
            tag: v.tag.clone(),
            loaded_at: v
                .loaded_at
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            serves_gateway: v.serves.contains(&None),
            serves_tenant_slots: v.serves.iter().flatten().count(),
        }
    }
}

/// What [`Interface::stage_version`] did.
#[derive(Clone, Debug, Serialize)]
pub struct VersionStaged {
    /// Interface.
    pub iface: String,
    /// The new version, loaded and preflighted; it serves nobody yet.
    pub version: u32,
}

/// What [`Interface::assign`] did.
#[derive(Clone, Debug, Serialize)]
pub struct VersionAssigned {
    /// Interface.
    pub iface: String,
    /// The version that now serves them.
    pub version: u32,
    /// Tenants moved to it (`gateway`: packets of no tenant); empty: everyone.
    pub tenants: Vec<String>,
}

/// What [`Interface::unload_version`] did.
#[derive(Clone, Debug, Serialize)]
pub struct VersionUnloaded {
    /// Interface.
    pub iface: String,
    /// The version unloaded.
    pub version: u32,
}

/// What [`Interface::replace_dispatcher`] did.
#[derive(Clone, Debug, Serialize)]
pub struct DispatcherReplaced {
    /// Interface.
    pub iface: String,
    /// The new dispatcher's kernel program id.
    pub program_id: u32,
}

impl Interface {
    /// Loads this build's classifier as a new version beside the running ones
    /// and preflights it: witness packets of every live tenant run through it
    /// against the live tables and must get the reference's verdict, rule and
    /// tenant. On any difference the version is unloaded again and the
    /// mismatches are reported; it serves nobody until [`Interface::assign`].
    pub fn stage_version(&mut self) -> Result<VersionStaged, ControlError> {
        self.writable()?;
        let v = self.pinned.stage_version()?;
        self.check_version(v)
    }

    /// Like [`Interface::stage_version`] for program `program` of `object`.
    pub fn stage_version_from(
        &mut self,
        object: &[u8],
        program: &str,
    ) -> Result<VersionStaged, ControlError> {
        self.writable()?;
        let v = self.pinned.stage_version_from(object, program)?;
        self.check_version(v)
    }

    fn check_version(&mut self, v: u32) -> Result<VersionStaged, ControlError> {
        let _s = tracing::info_span!("preflight", version = v).entered();
        let mismatches = match self.live_mismatches(v) {
            Ok(m) => m,
            Err(e) => {
                let _unload_best_effort = self.pinned.unload_version(v);
                return Err(e);
            }
        };
        if !mismatches.is_empty() {
            self.pinned.unload_version(v)?;
            return Err(ControlError::Preflight(format!(
                "classifier version {v} disagrees with the reference:\n{}",
                report(&mismatches)
            )));
        }
        self.log(
            "version-staged",
            None,
            format!("classifier version {v} loaded"),
        )?;
        Ok(VersionStaged {
            iface: self.name().to_owned(),
            version: v,
        })
    }

    /// Makes classifier `version` serve `tenants` (names; `gateway` = packets of
    /// no tenant), or everything when `tenants` is empty. One map update each.
    pub fn assign(
        &mut self,
        version: u32,
        tenants: &[String],
    ) -> Result<VersionAssigned, ControlError> {
        self.writable()?;
        if tenants.is_empty() {
            self.pinned.assign_version_all(version)?;
        } else {
            let slots = tenants
                .iter()
                .map(|t| {
                    if t == "gateway" {
                        Ok(None)
                    } else {
                        self.live_tenant_slot(t).map(Some)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.pinned.assign_version(version, &slots)?;
        }
        let whom = if tenants.is_empty() {
            "everyone".to_owned()
        } else {
            tenants.join(", ")
        };
        self.log(
            "version-assigned",
            (tenants.len() == 1).then(|| tenants[0].clone()),
            format!("classifier version {version} now serves {whom}"),
        )?;
        Ok(VersionAssigned {
            iface: self.name().to_owned(),
            version,
            tenants: tenants.to_vec(),
        })
    }

    /// Loaded classifier versions.
    pub fn versions(&self) -> Result<Vec<Version>, ControlError> {
        Ok(self.pinned.versions()?.iter().map(Version::from).collect())
    }

    /// The classifier version serving `tenant_slot` (`None`: the gateway).
    pub fn version_of(&self, tenant_slot: Option<u32>) -> Result<u32, ControlError> {
        Ok(self.pinned.version_of(tenant_slot)?)
    }

    /// Unloads a version that serves nobody.
    pub fn unload_version(&mut self, version: u32) -> Result<VersionUnloaded, ControlError> {
        self.writable()?;
        self.pinned.unload_version(version)?;
        self.log(
            "version-unloaded",
            None,
            format!("classifier version {version} unloaded"),
        )?;
        Ok(VersionUnloaded {
            iface: self.name().to_owned(),
            version,
        })
    }

    /// Replaces the attached dispatcher with this build's (`BPF_LINK_UPDATE`).
    pub fn replace_dispatcher(&mut self) -> Result<DispatcherReplaced, ControlError> {
        self.writable()?;
        let id = self.pinned.replace_dispatcher()?;
        self.log(
            "dispatcher-replaced",
            None,
            format!("dispatcher is now program {id}"),
        )?;
        Ok(DispatcherReplaced {
            iface: self.name().to_owned(),
            program_id: id,
        })
    }
}
