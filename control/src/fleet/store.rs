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

/// A manifest whose file list encodes to more than this stores the list
/// as chunks (10,000 tenants make about 2 MB of list).
pub const INLINE_FILES_BYTES: usize = 256 << 10;

/// Operations in one etcd transaction when chunks are written or read in
/// bulk (etcd's default limit is 128).
pub const BATCH: usize = 100;

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

pub(super) fn sha_hex(bytes: &[u8]) -> String {
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
            refs.insert(name, file_ref(text.as_bytes(), &mut chunks));
        }
        let listing: Vec<(&String, &String)> = refs.iter().map(|(n, f)| (n, &f.sha256)).collect();
        let id = sha_hex(&encode(&listing));
        match self.manifest(&id).await {
            Ok(manifest) => return Ok(manifest),
            Err(FleetError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        // A long file list (thousands of tenants) is itself stored as
        // chunks, so the manifest stays far below etcd's request limit.
        let listing = encode(&refs);
        let body = (listing.len() > INLINE_FILES_BYTES).then(|| file_ref(&listing, &mut chunks));
        self.put_chunks(&chunks).await?;
        let mut kv = self.client.kv_client();
        let mut manifest = RulesetManifest {
            id: id.clone(),
            label: source.label().display().to_string(),
            created_ms: now_ms(),
            files: if body.is_some() {
                BTreeMap::new()
            } else {
                refs.clone()
            },
            body,
        };
        let key = self.keys.ruleset(&id);
        kv.txn(
            Txn::new()
                .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), encode(&manifest), None)]),
        )
        .await?;
        manifest.files = refs;
        Ok(manifest)
    }

    /// Writes the chunks etcd does not have yet, [`BATCH`] to a transaction
    /// (a chunk's key is its hash: writing one that appeared meanwhile writes
    /// the same bytes), each transaction under etcd's request limit.
    pub(super) async fn put_chunks(
        &self,
        chunks: &BTreeMap<String, &[u8]>,
    ) -> Result<(), FleetError> {
        let mut kv = self.client.kv_client();
        let have: BTreeSet<String> = self
            .list_keys(&self.keys.files())
            .await?
            .into_iter()
            .collect();
        // The missing chunks, [`BATCH`] to a transaction (a chunk's key is
        // its hash: writing one that appeared meanwhile writes the same bytes),
        // each batch under etcd's request limit.
        let missing: Vec<(&String, &&[u8])> = chunks
            .iter()
            .filter(|(sha, _)| !have.contains(*sha))
            .collect();
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for (i, (sha, chunk)) in missing.iter().enumerate() {
            batch.push(TxnOp::put(self.keys.file(sha), chunk.to_vec(), None));
            bytes += chunk.len();
            let last = i + 1 == missing.len();
            let next = missing.get(i + 1).map_or(0, |(_, c)| c.len());
            if last || batch.len() == BATCH || bytes + next > CHUNK_BYTES {
                kv.txn(Txn::new().and_then(std::mem::take(&mut batch)))
                    .await?;
                bytes = 0;
            }
        }
        Ok(())
    }

    /// Ruleset version `id`'s manifest.
    pub async fn manifest(&self, id: &str) -> Result<RulesetManifest, FleetError> {
        check_hex(id)?;
        let key = self.keys.ruleset(id);
        let mut manifest: RulesetManifest = self
            .get_json(&key)
            .await?
            .map(|(m, _)| m)
            .ok_or_else(|| FleetError::NotFound(format!("no ruleset {id} in etcd")))?;
        if let Some(body) = &manifest.body {
            let listing = self.blob(body, &key).await?;
            manifest.files = decode(&key, &listing)?;
        }
        Ok(manifest)
    }

    /// The bytes `file` names, every chunk checked against its hash.
    pub(super) async fn blob(&self, file: &FileRef, owner: &str) -> Result<Vec<u8>, FleetError> {
        let fetched = self.chunks(std::iter::once(file)).await?;
        let mut bytes = Vec::new();
        for sha in &file.chunks {
            let chunk = fetched
                .get(sha)
                .ok_or_else(|| FleetError::NotFound(format!("a chunk of {owner} is missing")))?;
            if sha_hex(chunk) != *sha {
                return Err(FleetError::Corrupt {
                    key: self.keys.file(sha),
                    error: "its content does not hash to its name".into(),
                });
            }
            bytes.extend_from_slice(chunk);
        }
        if sha_hex(&bytes) != file.sha256 {
            return Err(FleetError::Corrupt {
                key: owner.to_owned(),
                error: "the chunks do not make the whole's hash".into(),
            });
        }
        Ok(bytes)
    }

    /// Ruleset version `id` as files in memory, every chunk checked against
    /// its hash (a value changed in etcd is refused, not applied).
    pub async fn source(&self, id: &str) -> Result<RulesetSource, FleetError> {
        let manifest = self.manifest(id).await?;
        let fetched = self.chunks(manifest.files.values()).await?;
        let mut files = Vec::new();
        for (name, file) in &manifest.files {
            let mut bytes = Vec::with_capacity(file.bytes.min(1 << 26) as usize);
            for sha in &file.chunks {
                let key = self.keys.file(sha);
                let chunk = fetched.get(sha).ok_or_else(|| {
                    FleetError::NotFound(format!("{key} (of {name} in ruleset {id}) is missing"))
                })?;
                if sha_hex(chunk) != *sha {
                    return Err(FleetError::Corrupt {
                        key,
                        error: "its content does not hash to its name".into(),
                    });
                }
                bytes.extend_from_slice(chunk);
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

    /// The chunks of `files`, read [`BATCH`] to a transaction (at most
    /// [`CHUNK_BYTES`] of replies each), by hash; missing ones are left out.
    pub(super) async fn chunks(
        &self,
        files: impl Iterator<Item = &FileRef>,
    ) -> Result<BTreeMap<String, Vec<u8>>, FleetError> {
        let mut wanted: Vec<(&String, u64)> = Vec::new();
        for file in files {
            for sha in &file.chunks {
                check_hex(sha)?;
                // Sizes are known only for whole files: a big file's chunk
                // goes in a transaction of its own.
                let size = if file.chunks.len() == 1 {
                    file.bytes
                } else {
                    CHUNK_BYTES as u64
                };
                wanted.push((sha, size));
            }
        }
        wanted.sort();
        wanted.dedup();
        let mut out = BTreeMap::new();
        let mut kv = self.client.kv_client();
        let mut i = 0;
        while i < wanted.len() {
            let mut ops = Vec::new();
            let mut bytes = 0u64;
            while i < wanted.len()
                && ops.len() < BATCH
                && (ops.is_empty() || bytes + wanted[i].1 <= CHUNK_BYTES as u64)
            {
                ops.push(TxnOp::get(self.keys.file(wanted[i].0), None));
                bytes += wanted[i].1;
                i += 1;
            }
            let resp = kv.txn(Txn::new().and_then(ops)).await?;
            for op in resp.op_responses() {
                if let etcd_client::TxnOpResponse::Get(get) = op {
                    for kvp in get.kvs() {
                        let key = String::from_utf8_lossy(kvp.key()).into_owned();
                        if let Some(sha) = key.strip_prefix(self.keys.files().as_str()) {
                            out.insert(sha.to_owned(), kvp.value().to_vec());
                        }
                    }
                }
            }
        }
        Ok(out)
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

    /// Registrations, realized states and desired states (with their
    /// revisions) of every gateway, read at one revision in one round trip.
    pub async fn snapshot(&self) -> Result<Snapshot, FleetError> {
        let prefixes = [
            self.keys.gateways(),
            self.keys.statuses(),
            self.keys.desireds(),
        ];
        let resp = self
            .client
            .kv_client()
            .txn(
                Txn::new().and_then(
                    prefixes
                        .iter()
                        .map(|p| TxnOp::get(p.as_str(), Some(GetOptions::new().with_prefix())))
                        .collect::<Vec<_>>(),
                ),
            )
            .await?;
        let mut lists = Vec::new();
        for (prefix, op) in prefixes.iter().zip(resp.op_responses()) {
            let etcd_client::TxnOpResponse::Get(get) = op else {
                return Err(FleetError::Corrupt {
                    key: prefix.clone(),
                    error: "etcd answered a range with something else".into(),
                });
            };
            let mut out = BTreeMap::new();
            for kv in get.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let name = key.strip_prefix(prefix.as_str()).unwrap_or(&key).to_owned();
                out.insert(name, (kv.value().to_vec(), kv.mod_revision(), key));
            }
            lists.push(out);
        }
        let mut snap = Snapshot::default();
        for (name, (v, _, key)) in std::mem::take(&mut lists[0]) {
            snap.registrations.insert(name, decode(&key, &v)?);
        }
        for (name, (v, _, key)) in std::mem::take(&mut lists[1]) {
            snap.statuses.insert(name, decode(&key, &v)?);
        }
        for (name, (v, rev, key)) in std::mem::take(&mut lists[2]) {
            snap.desired.insert(name, (decode(&key, &v)?, rev));
        }
        Ok(snap)
    }

    /// Every rollout, oldest first.
    pub async fn rollouts(&self) -> Result<Vec<(Rollout, i64)>, FleetError> {
        Ok(self
            .list_json(&self.keys.rollouts())
            .await?
            .into_values()
            .collect())
    }

    /// Deletes ruleset versions (and classifier patches) that no desired
    /// state, realized state or kept rollout (the newest [`KEEP_ROLLOUTS`],
    /// and any unfinished) names, then the chunks no remaining version or
    /// patch uses, and the rollouts beyond those kept. Run it under the controller lock (a rollout uploads under
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
            used.extend(
                desired
                    .interfaces
                    .values()
                    .filter_map(|i| Some(i.classifier.as_ref()?.program.clone())),
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
                used.extend(rollout.program.clone());
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
                if let Some(body) = &manifest.body {
                    chunks_used.extend(body.chunks.clone());
                    let full = self.manifest(id).await?;
                    chunks_used.extend(full.files.values().flat_map(|f| f.chunks.clone()));
                }
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
        // Classifier patches: kept while a desired state or kept rollout
        // names them (`used` has their ids too).
        let programs = self
            .list_json::<super::model::ProgramManifest>(&self.keys.programs())
            .await?;
        for (id, (manifest, _)) in &programs {
            if used.contains(id) {
                chunks_used.extend(manifest.object.chunks.clone());
            } else {
                kv.delete(self.keys.program(id), None).await?;
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

/// `bytes` as a [`FileRef`], its chunks added to `chunks` (by hash).
pub(super) fn file_ref<'a>(bytes: &'a [u8], chunks: &mut BTreeMap<String, &'a [u8]>) -> FileRef {
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
    FileRef {
        sha256: sha_hex(bytes),
        bytes: bytes.len() as u64,
        chunks: shas,
    }
}

/// A ruleset id or chunk name: 64 lower-case hex digits.
pub(super) fn check_hex(id: &str) -> Result<(), FleetError> {
    if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        let shown: String = id.chars().flat_map(char::escape_default).take(80).collect();
        Err(FleetError::Usage(format!(
            "{shown:?} is not a ruleset id (64 hex digits)"
        )))
    }
}

/// The gateways' keys at one revision ([`FleetStore::snapshot`]).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Registered gateways.
    pub registrations: BTreeMap<String, Registration>,
    /// Their realized states.
    pub statuses: BTreeMap<String, Realized>,
    /// Their desired states and those keys' `mod_revision`.
    pub desired: BTreeMap<String, (Desired, i64)>,
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
