//! What is live on an interface: the generation of every scope, kept
//! generations, an interrupted apply, classifier versions.

use serde::Serialize;

use crate::{ControlError, Interface, interface::RETAIN, upgrade::Version};

/// One tenant in a [`Status`].
#[derive(Clone, Debug, Serialize)]
pub struct TenantStatus {
    /// Tenant name.
    pub tenant: String,
    /// Its kernel slot.
    pub slot: u32,
    /// The generation its live table comes from.
    pub generation: u64,
    /// The classifier version serving it.
    pub classifier_version: Option<u32>,
}

/// The status of one interface.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Interface.
    pub iface: String,
    /// Newest generation number handed out.
    pub generation: u64,
    /// Generation last made live as a whole (tenants may have moved since).
    pub live_generation: u64,
    /// Generation of the live global rules.
    pub global_generation: Option<u64>,
    /// Generation of the live dispatch table.
    pub dispatch_generation: Option<u64>,
    /// Classifier version serving packets of no tenant.
    pub gateway_classifier_version: Option<u32>,
    /// Live tenants, by name.
    pub tenants: Vec<TenantStatus>,
    /// Generations kept for rollback, ascending.
    pub kept_generations: Vec<u64>,
    /// Generations an interrupted apply recorded but never finished.
    pub interrupted: Vec<u64>,
    /// How many generations are kept besides the live one.
    pub retention: usize,
    /// Loaded classifier versions.
    pub versions: Vec<Version>,
}

/// `status` of every interface asked for.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// One entry per interface.
    pub interfaces: Vec<Status>,
}

impl Interface {
    /// What is live on this interface.
    pub fn status(&self) -> Result<Status, ControlError> {
        let infos = self.pinned.versions()?;
        // Slot → version once: every version serves every slot it lists
        // (65,536 by default), and a lookup per tenant must not scan them.
        let serving: std::collections::HashMap<Option<u32>, u32> = infos
            .iter()
            .rev()
            .flat_map(|v| v.serves.iter().map(move |s| (*s, v.version)))
            .collect();
        let version_of = |slot: Option<u32>| serving.get(&slot).copied();
        let st = &self.state;
        Ok(Status {
            iface: self.name().to_owned(),
            generation: st.generation,
            live_generation: st.live_generation,
            global_generation: st.live.global,
            dispatch_generation: st.live.dispatch,
            gateway_classifier_version: version_of(None),
            tenants: st
                .live
                .tenants
                .iter()
                .map(|(name, t)| TenantStatus {
                    tenant: name.clone(),
                    slot: t.slot,
                    generation: t.table,
                    classifier_version: version_of(Some(t.slot)),
                })
                .collect(),
            kept_generations: self.kept()?,
            interrupted: self.interrupted()?,
            retention: RETAIN,
            versions: infos.iter().map(Version::from).collect(),
        })
    }
}
