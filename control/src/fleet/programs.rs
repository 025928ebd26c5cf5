//! Classifier program patches through the fleet: the object file stored
//! like a ruleset file (content-addressed chunks) under `programs/<id>`, and
//! what an agent does with one (stage, preflight, assign; the rollback
//! assigns each tenant back).

use std::collections::BTreeMap;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::{
    FleetError,
    model::{ClassifierDesired, ClassifierRealized, ProgramManifest},
    store::{FleetStore, check_hex, encode, file_ref, sha_hex},
};
use crate::{ControlError, Interface};

/// Largest classifier object accepted (the embedded one is far smaller).
pub const MAX_OBJECT_BYTES: usize = 16 << 20;

impl FleetStore {
    /// Uploads program `program` of ELF `object` as a classifier patch.
    pub async fn upload_program(
        &self,
        object: &[u8],
        program: &str,
        label: &str,
    ) -> Result<ProgramManifest, FleetError> {
        if object.len() > MAX_OBJECT_BYTES {
            return Err(FleetError::Usage(format!(
                "the object is larger than {MAX_OBJECT_BYTES} bytes"
            )));
        }
        super::check_name("program", program)?;
        let mut chunks = BTreeMap::new();
        let file = file_ref(object, &mut chunks);
        let id = sha_hex(format!("{}\n{program}", file.sha256).as_bytes());
        let manifest = ProgramManifest {
            id: id.clone(),
            program: program.to_owned(),
            object: file,
            label: label.to_owned(),
        };
        self.put_chunks(&chunks).await?;
        let key = self.keys.program(&id);
        self.client
            .kv_client()
            .txn(
                Txn::new()
                    .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.as_str(), encode(&manifest), None)]),
            )
            .await?;
        Ok(manifest)
    }

    /// Classifier patch `id`: the program name and the object, every chunk
    /// checked against its hash.
    pub async fn program(&self, id: &str) -> Result<(String, Vec<u8>), FleetError> {
        check_hex(id)?;
        let key = self.keys.program(id);
        let (manifest, _): (ProgramManifest, _) = self
            .get_json(&key)
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("no classifier patch {id} in etcd")))?;
        let object = self.blob(&manifest.object, &key).await?;
        Ok((manifest.program, object))
    }
}

/// The tenants a patch names, or every live tenant and `gateway`.
fn scope(i: &Interface, tenants: &[String]) -> Vec<String> {
    if tenants.is_empty() {
        let mut all: Vec<String> = i.state().live.tenants.keys().cloned().collect();
        all.push("gateway".into());
        all
    } else {
        tenants.to_vec()
    }
}

fn slot(i: &Interface, tenant: &str) -> Result<Option<u32>, ControlError> {
    if tenant == "gateway" {
        Ok(None)
    } else {
        i.live_tenant_slot(tenant).map(Some)
    }
}

/// Stages program `name` of `object` (preflighted against every live
/// tenant; a disagreeing program is refused and unloaded) and makes it
/// serve the patch's tenants. A program already loaded (same tag) is used
/// instead of a second copy, and tenants it serves already are not moved:
/// done twice, the second time changes nothing. Returns what serves them
/// and whether anything moved; `before` holds the tenants moved.
pub fn apply_patch(
    i: &mut Interface,
    want: &ClassifierDesired,
    name: &str,
    object: &[u8],
) -> Result<(ClassifierRealized, bool), ControlError> {
    let staged = i.stage_version_from(object, name)?.version;
    let versions = i.versions()?;
    let tag = versions
        .iter()
        .find(|v| v.version == staged)
        .map(|v| v.tag.clone())
        .unwrap_or_default();
    let version = match versions
        .iter()
        .find(|v| v.tag == tag && v.version != staged)
    {
        Some(existing) => {
            i.unload_version(staged)?;
            existing.version
        }
        None => staged,
    };
    let mut before = BTreeMap::new();
    let mut moving = Vec::new();
    for t in scope(i, &want.tenants) {
        let had = i.version_of(slot(i, &t)?)?;
        if had != version {
            moving.push(t.clone());
            before.insert(t, had);
        }
    }
    if !moving.is_empty() {
        i.assign(version, &moving)?;
    }
    if version == staged && moving.is_empty() {
        // Nothing serves it: do not leave it loaded.
        i.unload_version(staged)?;
    }
    Ok((
        ClassifierRealized {
            version,
            tag,
            before,
        },
        !moving.is_empty(),
    ))
}

/// Puts each tenant of `back` on the version it names (those already on it
/// stay as they are).
pub fn undo_patch(i: &mut Interface, back: &BTreeMap<String, u32>) -> Result<(), ControlError> {
    for (t, v) in back {
        if i.version_of(slot(i, t)?)? != *v {
            i.assign(*v, std::slice::from_ref(t))?;
        }
    }
    Ok(())
}
