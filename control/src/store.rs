//! What the control plane remembers about one interface, on disk:
//! `<state dir>/<netns|init>/<iface>/state.json` (the live manifest and the
//! generation counter), `gen/<G>.json` (one record per kept generation: who,
//! why, its manifest), `gen/<G>.tables.json` (what it staged: hashes,
//! build keys, counter slots — see [`Contents`]) and `gen/<G>.files.json`
//! (the texts of the files those tables were built from). Every write is atomic (write,
//! fsync, rename), the directory is root-only, and a lock file serializes
//! changes. The kernel stays the truth for what is live: [`crate::Interface`]
//! reconciles this state with the pinned slots before every operation.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::Write,
    os::{fd::AsRawFd, unix::fs::PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{ControlError, TableScope};

/// Where fluxgate keeps state files: `<dir>/<netns|init>/<iface>/`.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// State for network namespace `netns` under `dir`.
    pub fn new(dir: &Path, netns: Option<&str>) -> StateDir {
        StateDir {
            root: dir.join(netns.unwrap_or("init")),
        }
    }

    /// `<dir>/<netns|init>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store of `iface`.
    pub fn store(&self, iface: &str) -> Store {
        Store::new(&self.root, iface)
    }

    /// Interfaces with a journal here (a `state.json`, or an `attach.json`
    /// for one attached but never applied to), sorted.
    pub fn interfaces(&self) -> Result<Vec<String>, ControlError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ControlError::State(format!(
                    "cannot list {}: {e}",
                    self.root.display()
                )));
            }
        };
        let mut out: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| {
                let dir = e.path();
                dir.join("state.json").is_file() || dir.join("attach.json").is_file()
            })
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Forgets everything recorded about `iface` (after a detach).
    pub fn remove(&self, iface: &str) {
        self.store(iface).remove();
    }
}

/// Which table generation each scope has: one gateway generation's content,
/// or the live state (which per-tenant rollbacks can make a mix).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Table generation of the destination → tenant dispatch table.
    pub dispatch: Option<u64>,
    /// Table generation of the global rules.
    pub global: Option<u64>,
    /// Tenant name → its slot and table generation.
    pub tenants: BTreeMap<String, TenantRef>,
}

/// A tenant in a [`Manifest`]. Stored as `[slot, table]`: every record holds
/// one per tenant (10,000 of them), and the pair is half the bytes of an
/// object with field names to write and to parse; journals that wrote
/// `{"slot": …, "table": …}` still read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantRef {
    /// Tenant slot (kernel index; stable across generations).
    pub slot: u32,
    /// Generation whose table this is.
    pub table: u64,
}

impl Serialize for TenantRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.slot, self.table).serialize(s)
    }
}

impl<'de> Deserialize<'de> for TenantRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TenantRef;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("[slot, table] or {\"slot\", \"table\"}")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<TenantRef, A::Error> {
                let missing = |i| serde::de::Error::invalid_length(i, &self);
                let slot = a.next_element()?.ok_or_else(|| missing(0))?;
                let table = a.next_element()?.ok_or_else(|| missing(1))?;
                Ok(TenantRef { slot, table })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<TenantRef, A::Error> {
                let (mut slot, mut table) = (None, None);
                while let Some(k) = a.next_key::<String>()? {
                    match k.as_str() {
                        "slot" => slot = Some(a.next_value()?),
                        "table" => table = Some(a.next_value()?),
                        _ => {
                            a.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(TenantRef {
                    slot: slot.ok_or_else(|| serde::de::Error::missing_field("slot"))?,
                    table: table.ok_or_else(|| serde::de::Error::missing_field("table"))?,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One counter slot of a generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    /// Kernel counter index.
    pub slot: u32,
    /// The gateway or a tenant (`gateway` or the tenant name in JSON).
    #[serde(with = "crate::scope::rule_scope")]
    pub scope: fluxgate_ruleset::Scope,
    /// Rule id (hex), absent for a default action.
    pub rule: Option<String>,
    /// 1-based position (0: the default action).
    pub position: u32,
    /// The rule as written (canonical form), or `default pass|drop`.
    pub text: String,
}

/// One generation as recorded.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Record {
    /// Gateway-wide generation number.
    pub generation: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Who made it.
    #[serde(default)]
    pub who: String,
    /// Why (`--reason`, or what created it).
    pub reason: String,
    /// Where the ruleset came from: the directory it was read from, or the
    /// label an embedder gave a ruleset held in memory.
    pub source: PathBuf,
    /// Tables staged and published by this generation.
    #[serde(default)]
    pub changed: Vec<TableScope>,
    /// Tenants removed by this generation.
    #[serde(default)]
    pub removed: Vec<String>,
    /// Table generation per scope.
    pub manifest: Manifest,
    /// What journals written before [`Contents`] had its own file kept
    /// inline (read, never written).
    #[serde(default, rename = "sources", skip_serializing)]
    pub(crate) legacy_sources: Vec<(String, String)>,
    #[serde(default, rename = "hashes", skip_serializing)]
    pub(crate) legacy_hashes: BTreeMap<TableScope, u64>,
    #[serde(default, rename = "keys", skip_serializing)]
    pub(crate) legacy_keys: BTreeMap<TableScope, String>,
    #[serde(default, rename = "counters", skip_serializing)]
    pub(crate) legacy_counters: Vec<SlotInfo>,
    /// Guard and witness packets that agreed in the kernel preflight.
    #[serde(default)]
    pub preflight_packets: usize,
    /// Published as a whole; false while an apply runs, and forever after if
    /// it was interrupted (see `Gateway::interrupted`).
    #[serde(default)]
    pub published: bool,
}

/// What a generation staged, per scope whose table it built: the file,
/// the table's content hash and build key, and its counter slots. Kept in
/// `gen/<G>.tables.json` beside the record, and shared: a later generation
/// that keeps a table refers to it by the table's generation in its manifest
/// instead of copying it, so a one-tenant generation stores one tenant. Only
/// what needs it reads it (an apply, stats, explain, metrics); status,
/// rollback and reconciling read manifests alone.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Contents {
    /// The files as (path, text), so the generation can be re-checked,
    /// explained and restored after the directory changed. Written beside
    /// the tables (`gen/<G>.files.json`, read with [`Store::files`]) rather
    /// than one file per text: a first load of 10,000 tenants spent two
    /// thirds of its time creating 10,000 files. Empty in what
    /// [`Store::contents`] returns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<(String, String)>,
    /// Journals written before [`Contents::files`]: (path, SHA-256 of the
    /// text), the texts content-addressed in `sources/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<(String, String)>,
    /// Content hash per table.
    #[serde(default)]
    pub hashes: BTreeMap<TableScope, u64>,
    /// SHA-256 of everything each table was built from (its file, tenant
    /// slot, the gateway file, interface indexes, compiler version): a later
    /// apply with the same key keeps the table without compiling it.
    #[serde(default)]
    pub keys: BTreeMap<TableScope, String>,
    /// The counter slots of these tables, sorted by slot.
    #[serde(default)]
    pub counters: Vec<SlotInfo>,
}

/// One line of the interface's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// Gateway generation concerned.
    pub generation: u64,
    /// `apply`, `rollback`, `recovered`, …
    pub what: String,
    /// Tenant concerned, when only one was.
    pub tenant: Option<String>,
    /// Free text.
    pub detail: String,
    /// Who made the change (the user behind sudo, else the user).
    #[serde(default)]
    pub who: String,
    /// How long the change took (applies and rollbacks), milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// `state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IfaceState {
    /// Highest generation number handed out.
    pub generation: u64,
    /// Generation whose manifest was last made live as a whole (apply or
    /// gateway-wide rollback); tenants may since have moved on their own.
    pub live_generation: u64,
    /// What is live, per scope.
    pub live: Manifest,
    /// Every change, oldest first (bounded: the newest 1,000).
    pub events: Vec<Event>,
}

/// `attach.json`: how the interface was attached, so `restore` can attach
/// it the same way after a reboot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRecord {
    /// `auto`, `native` or `generic` (as asked, not as it fell back).
    pub mode: String,
    /// Verdict for malformed packets.
    pub malformed: crate::MalformedVerdict,
    /// Cells of the table pool (`None`: the default).
    pub pool_cells: Option<u32>,
    /// Tenant slots (`None`: the default; absent from older `attach.json`).
    #[serde(default)]
    pub tenant_slots: Option<u32>,
    /// Counter slots (`None`: the default; absent from older `attach.json`).
    #[serde(default)]
    pub counter_slots: Option<u32>,
    /// Entries of the per-source bucket map (`None`: the default; absent
    /// from older `attach.json`).
    #[serde(default)]
    pub source_buckets: Option<u32>,
}

/// `restore.json`: the live manifest a `restore` is making live again. Written
/// before the restore touches anything and removed when it has finished, so
/// a restore interrupted half-way (power lost again) still knows what to
/// restore, although the apply it runs rewrites `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    /// The live manifest recorded before the reboot.
    pub live: Manifest,
}

/// The state directory of one interface.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
    /// Contents read so far, by generation.
    contents: Arc<Mutex<HashMap<u64, Arc<Contents>>>>,
    /// Records read so far, by generation.
    records: Arc<Mutex<HashMap<u64, Arc<Record>>>>,
}

/// Most events kept in `state.json`.
const MAX_EVENTS: usize = 1000;

impl Store {
    /// The store of `iface` under `root` (`<state dir>/<netns|init>`).
    pub fn new(root: &Path, iface: &str) -> Store {
        Store {
            dir: root.join(iface),
            contents: Arc::default(),
            records: Arc::default(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn record_path(&self, generation: u64) -> PathBuf {
        self.dir.join("gen").join(format!("{generation}.json"))
    }

    /// The state, or the empty state when nothing was ever applied.
    pub fn state(&self) -> Result<IfaceState, ControlError> {
        Ok(read_json(&self.state_path())?.unwrap_or_default())
    }

    /// Writes the state atomically.
    pub fn write_state(&self, state: &mut IfaceState) -> Result<(), ControlError> {
        let excess = state.events.len().saturating_sub(MAX_EVENTS);
        state.events.drain(..excess);
        write_json(&self.state_path(), state)
    }

    /// How the interface was attached (`None`: attached by a build that did
    /// not record it).
    pub fn attach_options(&self) -> Result<Option<AttachRecord>, ControlError> {
        read_json(&self.dir.join("attach.json"))
    }

    /// Records how the interface was attached.
    pub fn write_attach_options(&self, options: &AttachRecord) -> Result<(), ControlError> {
        write_json(&self.dir.join("attach.json"), options)
    }

    /// The restore under way, if one was interrupted.
    pub fn restore_point(&self) -> Result<Option<RestorePoint>, ControlError> {
        read_json(&self.dir.join("restore.json"))
    }

    /// Records the restore about to run.
    pub fn write_restore_point(&self, point: &RestorePoint) -> Result<(), ControlError> {
        write_json(&self.dir.join("restore.json"), point)
    }

    /// Forgets a finished (or obsolete) restore.
    pub fn clear_restore_point(&self) -> Result<(), ControlError> {
        remove_if_present(&self.dir.join("restore.json"))
    }

    /// Record of `generation`, if kept.
    pub fn record(&self, generation: u64) -> Result<Option<Record>, ControlError> {
        Ok(self.record_shared(generation)?.map(|r| (*r).clone()))
    }

    /// [`Store::record`], shared: read once per store (a record of 10,000
    /// tenants is a 10,000-entry manifest; opening, applying and pruning
    /// each read every kept record).
    pub fn record_shared(&self, generation: u64) -> Result<Option<Arc<Record>>, ControlError> {
        if let Some(r) = self
            .records
            .lock()
            .ok()
            .and_then(|c| c.get(&generation).cloned())
        {
            return Ok(Some(r));
        }
        let Some(record) = read_json::<Record>(&self.record_path(generation))? else {
            return Ok(None);
        };
        let record = Arc::new(record);
        if let Ok(mut cache) = self.records.lock() {
            cache.insert(generation, record.clone());
        }
        Ok(Some(record))
    }

    /// Writes a record atomically.
    pub fn write_record(&self, record: &Record) -> Result<(), ControlError> {
        if let Ok(mut cache) = self.records.lock() {
            cache.remove(&record.generation);
        }
        write_json(&self.record_path(record.generation), record)
    }

    /// Writes what a new generation staged, then its record (the record
    /// is what makes the generation exist: the contents are on disk first).
    pub fn write_generation(
        &self,
        record: &Record,
        contents: &Contents,
    ) -> Result<(), ControlError> {
        // The texts apart: counters and keys are read by every apply, the
        // texts only to rebuild a ruleset (restore, explain, `--tenant`).
        write_json(&self.files_path(record.generation), &contents.files)?;
        let tables = Contents {
            files: Vec::new(),
            ..contents.clone()
        };
        write_json(&self.contents_path(record.generation), &tables)?;
        self.cache_contents(record.generation, None);
        self.write_record(record)
    }

    fn files_path(&self, generation: u64) -> PathBuf {
        self.dir
            .join("gen")
            .join(format!("{generation}.files.json"))
    }

    /// The files' texts of what generation `generation` staged, as (path,
    /// text) ([`Contents::files`]; empty for a journal that kept them in
    /// `sources/`).
    pub fn files(&self, generation: u64) -> Result<Vec<(String, String)>, ControlError> {
        Ok(read_json(&self.files_path(generation))?.unwrap_or_default())
    }

    fn contents_path(&self, generation: u64) -> PathBuf {
        self.dir
            .join("gen")
            .join(format!("{generation}.tables.json"))
    }

    fn cache_contents(&self, generation: u64, contents: Option<Arc<Contents>>) {
        if let Ok(mut cache) = self.contents.lock() {
            match contents {
                Some(c) => {
                    cache.insert(generation, c);
                }
                None => {
                    cache.remove(&generation);
                }
            }
        }
    }

    /// What generation `generation` staged (an error when it has no record).
    /// Read once per store: a generation's contents never change.
    pub fn contents(&self, generation: u64) -> Result<Arc<Contents>, ControlError> {
        if let Some(c) = self
            .contents
            .lock()
            .ok()
            .and_then(|c| c.get(&generation).cloned())
        {
            return Ok(c);
        }
        let contents = match read_json::<Contents>(&self.contents_path(generation))? {
            Some(c) => c,
            None => self
                .record(generation)?
                .map(|r| Contents {
                    files: Vec::new(),
                    sources: r.legacy_sources,
                    hashes: r.legacy_hashes,
                    keys: r.legacy_keys,
                    counters: r.legacy_counters,
                })
                .ok_or_else(|| {
                    ControlError::State(format!("the record of generation {generation} is missing"))
                })?,
        };
        let contents = Arc::new(contents);
        self.cache_contents(generation, Some(contents.clone()));
        Ok(contents)
    }

    /// Deletes the record of `generation` and what it staged.
    pub fn forget_record(&self, generation: u64) -> Result<(), ControlError> {
        self.cache_contents(generation, None);
        if let Ok(mut cache) = self.records.lock() {
            cache.remove(&generation);
        }
        remove_if_present(&self.files_path(generation))?;
        remove_if_present(&self.contents_path(generation))?;
        remove_if_present(&self.record_path(generation))
    }

    /// The text stored under `hash` (by journals written before
    /// [`Contents::files`]).
    pub fn source(&self, hash: &str) -> Result<String, ControlError> {
        let valid = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(ControlError::State(format!("bad source hash {hash:?}")));
        }
        let path = self.dir.join("sources").join(hash);
        fs::read_to_string(&path)
            .map_err(|e| ControlError::State(format!("cannot read {}: {e}", path.display())))
    }

    /// Deletes stored sources no hash of `keep` names.
    pub fn prune_sources(
        &self,
        keep: &std::collections::HashSet<String>,
    ) -> Result<(), ControlError> {
        let dir = self.dir.join("sources");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ControlError::State(format!(
                    "cannot list {}: {e}",
                    dir.display()
                )));
            }
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// Generations with a record, ascending.
    pub fn recorded(&self) -> Result<Vec<u64>, ControlError> {
        let mut out: Vec<u64> = match fs::read_dir(self.dir.join("gen")) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(ControlError::State(format!(
                    "cannot list {}: {e}",
                    self.dir.display()
                )));
            }
        };
        out.sort_unstable();
        Ok(out)
    }

    /// Removes everything (after a detach).
    pub fn remove(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// Takes the interface's change lock; a second holder gets a clear error.
    pub fn lock(&self) -> Result<Lock, ControlError> {
        create_private_dir(&self.dir)?;
        let path = self.dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ControlError::State(format!("cannot open {}: {e}", path.display())))?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(ControlError::Busy(format!(
                "another fluxgate change is in progress on this interface (lock {} is held); \
                 try again when it has finished",
                path.display()
            )));
        }
        Ok(Lock { _file: file })
    }
}

/// Held while an interface is being changed; released on drop (or when the
/// process dies — the kernel drops flock locks with the last descriptor).
pub struct Lock {
    _file: fs::File,
}

/// Deletes `path`; one that is not there is already what was wanted.
fn remove_if_present(path: &Path) -> Result<(), ControlError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ControlError::State(format!(
            "cannot delete {}: {e}",
            path.display()
        ))),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ControlError> {
    fs::create_dir_all(dir)
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
        .map_err(|e| ControlError::State(format!("cannot create {}: {e}", dir.display())))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ControlError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ControlError::State(format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ControlError::State(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Compact JSON: records of 10,000 tenants are megabytes, and people read
/// them through `status`, `history` and `--json`, not in the file.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ControlError> {
    let text = serde_json::to_vec(value).map_err(|e| ControlError::State(e.to_string()))?;
    write_bytes(path, &text)
}

/// Write to a temporary file, fsync, rename over `path`, fsync the directory.
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), ControlError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail =
        |e: std::io::Error| ControlError::State(format!("cannot write {}: {e}", path.display()));
    create_private_dir(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp).map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    fs::rename(&tmp, path).map_err(fail)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)
}

impl From<fluxgate_ruleset::preflight::CounterText> for SlotInfo {
    fn from(c: fluxgate_ruleset::preflight::CounterText) -> SlotInfo {
        SlotInfo {
            slot: c.slot,
            scope: c.scope,
            rule: c.rule.map(|id| id.to_string()),
            position: c.position,
            text: c.text,
        }
    }
}

impl SlotInfo {
    /// The rule id, `None` for a default action (or an unreadable id).
    pub fn rule_id(&self) -> Option<fluxgate_ruleset::RuleId> {
        self.rule
            .as_deref()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .map(fluxgate_ruleset::RuleId)
    }

    /// `acme#2` or `acme default`.
    pub fn name(&self) -> String {
        if self.rule.is_some() {
            format!("{}#{}", self.scope, self.position)
        } else {
            format!("{} default", self.scope)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_ref_is_a_pair_and_the_old_object_still_reads() {
        let t = TenantRef { slot: 7, table: 3 };
        assert_eq!(serde_json::to_string(&t).expect("json"), "[7,3]");
        let back: TenantRef = serde_json::from_str("[7,3]").expect("pair");
        assert_eq!(back, t);
        let old: TenantRef = serde_json::from_str(r#"{"slot":7,"table":3}"#).expect("object");
        assert_eq!(old, t);
        assert!(serde_json::from_str::<TenantRef>("[7]").is_err());
    }
}
