//! Rulesets, desired and realized state in etcd.
//!
//! A ruleset is uploaded through [`RulesetSource`] (so a directory gets the
//! limits and checks of any apply): each file is cut into chunks of at most
//! [`CHUNK_BYTES`], each chunk stored once under `files/<its sha256>`, then
//! the [`RulesetManifest`] under `rulesets/<id>`, where `id` hashes the file
//! list: the same files give the same id, and uploading again writes
//! nothing new.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::{
    FleetError, Keys, check_name,
    model::{Desired, FileRef, Realized, Registration, Rollout, RulesetManifest},
    now_ms,
};
use crate::RulesetSource;

/// Largest chunk of a file in one etcd value (etcd refuses requests over
/// 1.5 MiB by default).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Rollouts kept (with the rulesets they name) by [`FleetStore::gc`].
pub const KEEP_ROLLOUTS: usize = 10;

/// A fleet's keys in one etcd client.
#[derive(Clone)]
pub struct FleetStore {
    /// The etcd client (cheap to clone).
    pub client: Client,
    /// The fleet's keys.
    pub keys: Keys,
}

fn sha_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a JSON value fluxgate wrote under `key`.
pub fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, FleetError> {
    serde_json::from_slice(value).map_err(|e| FleetError::Corrupt {
        key: key.to_owned(),
        error: e.to_string(),
    })
}

/// Encodes a value as JSON.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("fleet values always serialize")
}

impl FleetStore {
    /// The store of fleet `fleet` over `client`.
    pub fn new(client: Client, fleet: &str) -> Result<FleetStore, FleetError> {
        Ok(FleetStore {
            client,
            keys: Keys::new(fleet)?,
        })
    }

    /// A value and its `mod_revision`, if the key exists.
    pub async fn get_raw(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, FleetError> {
        let mut resp = self.client.kv_client().get(key, None).await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// A JSON value and its `mod_revision`, if the key exists.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, i64)>, FleetError> {
        match self.get_raw(key).await? {
            Some((v, rev)) => Ok(Some((decode(key, &v)?, rev))),
            None => Ok(None),
        }
    }

    /// Every JSON value under `prefix`, by the rest of its key.
    pub async fn list_json<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<BTreeMap<String, (T, i64)>, FleetError> {
        let mut resp = self
            .client
            .kv_client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        let mut out = BTreeMap::new();
        for kv in resp.take_kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let name = key.strip_prefix(prefix).unwrap_or(&key).to_owned();
            out.insert(name, (decode(&key, kv.value())?, kv.mod_revision()));
        }
        Ok(out)
    }

    /// The keys under `prefix` (without the prefix).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, FleetError> {
        let mut resp = self
            .client
            .kv_client()
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                key.strip_prefix(prefix).unwrap_or(&key).to_owned()
            })
            .collect())
    }

    /// Uploads the ruleset `source` (content-addressed; see the module docs)
    /// and returns its manifest. Chunks already stored are not sent again.
    pub async fn upload(&self, source: &RulesetSource) -> Result<RulesetManifest, FleetError> {
        let files = source.read()?;
        let mut refs = BTreeMap::new();
        let mut chunks: BTreeMap<String, &[u8]> = BTreeMap::new();
        for (path, text) in &files {
            let name = std::path::Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(path)
                .to_owned();
            let bytes = text.as_bytes();
            let mut shas = Vec::new();
            // Chunks cut on byte boundaries; joined back before decoding.
            for chunk in bytes.chunks(CHUNK_BYTES) {
                let sha = sha_hex(chunk);
                chunks.insert(sha.clone(), chunk);
                shas.push(sha);
            }
            if bytes.is_empty() {
                let sha = sha_hex(b"");
                chunks.insert(sha.clone(), b"");
                shas.push(sha);
            }
            refs.insert(
                name,
                FileRef {
                    sha256: sha_hex(bytes),
                    bytes: bytes.len() as u64,
                    chunks: shas,
                },
            );
        }
        let listing: Vec<(&String, &String)> = refs.iter().map(|(n, f)| (n, &f.sha256)).collect();
        let id = sha_hex(&encode(&listing));
        if let Some((manifest, _)) = self
            .get_json::<RulesetManifest>(&self.keys.ruleset(&id))
            .await?
        {
            return Ok(manifest);
        }
        let have: BTreeSet<String> = self
            .list_keys(&self.keys.files())
            .await?
            .into_iter()
            .collect();
        let mut kv = self.client.kv_client();
        for (sha, chunk) in &chunks {
            if !have.contains(sha) {
                // Create-only: a chunk is never rewritten.
                let key = self.keys.file(sha);
                kv.txn(
                    Txn::new()
                        .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key.as_str(), chunk.to_vec(), None)]),
                )
                .await?;
            }
        }
        let manifest = RulesetManifest {
            id: id.clone(),
            label: source.label().display().to_string(),
            created_ms: now_ms(),
            files: refs,
        };
        let key = self.keys.ruleset(&id);
        kv.txn(
            Txn::new()
                .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), encode(&manifest), None)]),
        )
        .await?;
        Ok(manifest)
    }

    /// Ruleset version `id`'s manifest.
    pub async fn manifest(&self, id: &str) -> Result<RulesetManifest, FleetError> {
        check_hex(id)?;
        self.get_json(&self.keys.ruleset(id))
            .await?
            .map(|(m, _)| m)
            .ok_or_else(|| FleetError::NotFound(format!("no ruleset {id} in etcd")))
    }

    /// Ruleset version `id` as files in memory, every chunk checked against
    /// its hash (a value changed in etcd is refused, not applied).
    pub async fn source(&self, id: &str) -> Result<RulesetSource, FleetError> {
        let manifest = self.manifest(id).await?;
        let mut files = Vec::new();
        for (name, file) in &manifest.files {
            let mut bytes = Vec::with_capacity(file.bytes.min(1 << 26) as usize);
            for sha in &file.chunks {
                check_hex(sha)?;
                let key = self.keys.file(sha);
                let (chunk, _) = self.get_raw(&key).await?.ok_or_else(|| {
                    FleetError::NotFound(format!("{key} (of {name} in ruleset {id}) is missing"))
                })?;
                if sha_hex(&chunk) != *sha {
                    return Err(FleetError::Corrupt {
                        key,
                        error: "its content does not hash to its name".into(),
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            if sha_hex(&bytes) != file.sha256 {
                return Err(FleetError::Corrupt {
                    key: self.keys.ruleset(id),
                    error: format!("{name}: the chunks do not make the file's hash"),
                });
            }
            let text = String::from_utf8(bytes).map_err(|_| FleetError::Corrupt {
                key: self.keys.ruleset(id),
                error: format!("{name}: not UTF-8"),
            })?;
            files.push((name.clone(), text));
        }
        Ok(RulesetSource::files(format!("etcd ruleset {id}"), files))
    }

    /// Gateway `gw`'s desired state and its revision.
    pub async fn desired(&self, gw: &str) -> Result<Option<(Desired, i64)>, FleetError> {
        self.get_json(&self.keys.desired(gw)).await
    }

    /// Every registered gateway (alive: under a lease).
    pub async fn registrations(&self) -> Result<BTreeMap<String, Registration>, FleetError> {
        Ok(self
            .list_json(&self.keys.gateways())
            .await?
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect())
    }

    /// Every gateway's realized state.
    pub async fn statuses(&self) -> Result<BTreeMap<String, Realized>, FleetError> {
        Ok(self
            .list_json(&self.keys.statuses())
            .await?
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect())
    }

    /// Every rollout, oldest first.
    pub async fn rollouts(&self) -> Result<Vec<(Rollout, i64)>, FleetError> {
        Ok(self
            .list_json(&self.keys.rollouts())
            .await?
            .into_values()
            .collect())
    }

    /// Deletes ruleset versions that no desired state, realized state or
    /// kept rollout (the newest [`KEEP_ROLLOUTS`], and any unfinished) names,
    /// then the chunks no remaining version uses, and the rollouts beyond
    /// those kept. Run it under the controller lock (a rollout uploads under
    /// it too, so no upload races the sweep). Returns the deleted ruleset ids.
    pub async fn gc(&self) -> Result<Vec<String>, FleetError> {
        let mut used: BTreeSet<String> = BTreeSet::new();
        for (desired, _) in self
            .list_json::<Desired>(&self.keys.desireds())
            .await?
            .values()
        {
            used.extend(
                desired
                    .interfaces
                    .values()
                    .filter_map(|i| i.ruleset.clone()),
            );
        }
        for realized in self.statuses().await?.values() {
            used.extend(
                realized
                    .interfaces
                    .values()
                    .filter_map(|i| i.ruleset.clone()),
            );
        }
        let rollouts = self.rollouts().await?;
        let keep_from = rollouts.len().saturating_sub(KEEP_ROLLOUTS);
        let mut kv = self.client.kv_client();
        for (i, (rollout, _)) in rollouts.iter().enumerate() {
            if i >= keep_from || !rollout.state.finished() {
                used.insert(rollout.ruleset.clone());
                for before in rollout.before.values() {
                    if let Some(d) = &before.desired {
                        used.extend(d.interfaces.values().filter_map(|i| i.ruleset.clone()));
                    }
                }
            } else {
                kv.delete(self.keys.rollout(&rollout.id), None).await?;
            }
        }
        let manifests = self
            .list_json::<RulesetManifest>(&self.keys.rulesets())
            .await?;
        let mut deleted = Vec::new();
        let mut chunks_used = BTreeSet::new();
        for (id, (manifest, rev)) in &manifests {
            if used.contains(id) {
                chunks_used.extend(manifest.files.values().flat_map(|f| f.chunks.clone()));
            } else {
                let key = self.keys.ruleset(id);
                kv.txn(
                    Txn::new()
                        .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, *rev)])
                        .and_then([TxnOp::delete(key.as_str(), None)]),
                )
                .await?;
                deleted.push(id.clone());
            }
        }
        for sha in self.list_keys(&self.keys.files()).await? {
            if !chunks_used.contains(&sha) {
                kv.delete(self.keys.file(&sha), None::<DeleteOptions>)
                    .await?;
            }
        }
        Ok(deleted)
    }
}

/// A ruleset id or chunk name: 64 lower-case hex digits.
fn check_hex(id: &str) -> Result<(), FleetError> {
    if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        let shown: String = id.chars().flat_map(char::escape_default).take(80).collect();
        Err(FleetError::Usage(format!(
            "{shown:?} is not a ruleset id (64 hex digits)"
        )))
    }
}

/// Gateway names the [`Registration`]s hold that `selector` (every `k=v`)
/// matches, sorted.
pub fn select(
    registrations: &BTreeMap<String, Registration>,
    selector: &BTreeMap<String, String>,
) -> Vec<String> {
    registrations
        .iter()
        .filter(|(_, r)| selector.iter().all(|(k, v)| r.labels.get(k) == Some(v)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Checks a gateway name for keys.
pub fn check_gateway(gw: &str) -> Result<(), FleetError> {
    check_name("gateway", gw)
}
