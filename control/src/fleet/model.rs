//! The values fluxgate keeps in etcd (JSON), one type per key kind of the
//! [layout](super#key-layout).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// `rulesets/<id>`: one ruleset version, its files by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesetManifest {
    /// SHA-256 (hex) of the sorted list of (file name, file SHA-256).
    pub id: String,
    /// Where it came from (the directory uploaded), for people.
    pub label: String,
    /// When it was first uploaded (ms since the epoch).
    pub created_ms: u64,
    /// File name (`gateway.fg`, `<tenant>.fg`) → its content (in etcd:
    /// empty when `body` holds the list).
    pub files: BTreeMap<String, FileRef>,
    /// A long file list, stored as chunks (its JSON).
    #[serde(default)]
    pub body: Option<FileRef>,
}

/// One file of a [`RulesetManifest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// SHA-256 (hex) of the whole text.
    pub sha256: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// Its chunks in order, each a `files/<sha256>` key.
    pub chunks: Vec<String>,
}

/// `gateways/<gw>`: a gateway's registration, under its agent's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Gateway name.
    pub gateway: String,
    /// Labels (`site`, `cluster`, …) selectors match.
    pub labels: BTreeMap<String, String>,
    /// The interfaces the agent serves.
    pub interfaces: Vec<String>,
    /// The agent's fluxgate version.
    pub version: String,
    /// When the agent (re)connected (ms since the epoch).
    pub since_ms: u64,
}

/// `desired/<gw>`: what a gateway should run, per interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// The rollout that wrote it, if any.
    pub rollout: Option<String>,
    /// Interface → its desired state.
    pub interfaces: BTreeMap<String, IfaceDesired>,
}

/// The desired state of one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceDesired {
    /// The ruleset version (`rulesets/<id>`) whose files are wanted live.
    pub ruleset: Option<String>,
    /// Only these tenants (`gateway`: the gateway file) come from it; empty:
    /// the whole ruleset.
    pub tenants: Vec<String>,
    /// Watch the change for this long and roll back by itself when health
    /// regresses (a local canary); none: a plain apply.
    pub canary_ms: Option<u64>,
    /// Roll back to this kept generation instead of applying (the rollback
    /// of a halted rollout: a local flip to what the gateway had).
    pub rollback_to: Option<u64>,
    /// Why (recorded in the gateway's history).
    pub reason: String,
    /// A classifier program patch: stage a program and make it serve tenants.
    #[serde(default)]
    pub classifier: Option<ClassifierDesired>,
    /// The rollback of a classifier patch: each tenant back on the version
    /// that served it before (`gateway`: packets of no tenant).
    #[serde(default)]
    pub classifier_back: Option<BTreeMap<String, u32>>,
}

/// A classifier program patch ([`crate::Interface::stage_version_from`] then
/// [`crate::Interface::assign`]) as desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierDesired {
    /// The program object (`programs/<id>`).
    pub program: String,
    /// Tenants it serves (`gateway`: packets of no tenant); empty: everyone.
    pub tenants: Vec<String>,
}

/// `programs/<id>`: a classifier program patch, its object's chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramManifest {
    /// SHA-256 (hex) of the object and the program name.
    pub id: String,
    /// The XDP program's name in the object.
    pub program: String,
    /// The object file.
    pub object: FileRef,
    /// Where it came from.
    pub label: String,
}

/// What a classifier patch did on one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierRealized {
    /// The version serving the patch's tenants.
    pub version: u32,
    /// Its program tag.
    pub tag: String,
    /// The version each of them had before (what a rollback assigns back).
    pub before: BTreeMap<String, u32>,
}

/// `status/<gw>`: what a gateway runs, under its agent's lease.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Realized {
    /// Gateway name.
    pub gateway: String,
    /// The `mod_revision` of the `desired/<gw>` value handled last (0: none).
    pub desired_revision: i64,
    /// The rollout of that desired state.
    pub rollout: Option<String>,
    /// Interface → what is live there.
    pub interfaces: BTreeMap<String, IfaceRealized>,
    /// How the agent's link to etcd fared.
    pub etcd: Connectivity,
    /// When written (ms since the epoch).
    pub updated_ms: u64,
}

/// What is live on one interface, and how the last change went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IfaceRealized {
    /// Live generation (the last one made live as a whole).
    pub generation: u64,
    /// The ruleset version whose files (for the desired tenants) are live,
    /// when the agent checked them.
    pub ruleset: Option<String>,
    /// How handling the desired state went.
    pub outcome: Outcome,
    /// Generation live before the last change (what a rollback returns to).
    pub previous_generation: Option<u64>,
    /// Witness packets of the last apply's kernel preflight.
    pub preflight_packets: usize,
    /// The last error (with its exit code), if the last change failed.
    pub last_error: Option<String>,
    /// Tenant → generation of its live table (at most [`MAX_TENANTS_SHOWN`]).
    pub tenants: BTreeMap<String, u64>,
    /// Tenants live (all of them, even past [`MAX_TENANTS_SHOWN`]).
    pub tenant_count: usize,
    /// Packets passed / dropped since attach, over every counter.
    pub passed: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// The last classifier patch, if any.
    #[serde(default)]
    pub classifier: Option<ClassifierRealized>,
}

/// Most tenants listed one by one in a status value (it must stay far below
/// etcd's 1.5 MiB request limit).
pub const MAX_TENANTS_SHOWN: usize = 20_000;

/// How an agent handled its desired state on one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Not handled yet.
    #[default]
    Pending,
    /// Applied as a new generation (canary passed, if any).
    Applied,
    /// Already live: nothing applied, nothing flipped.
    Unchanged,
    /// Rolled back to the desired generation (or already there).
    RolledBack,
    /// The canary saw health regress and rolled the change back.
    CanaryRolledBack,
    /// Refused (ruleset, preflight, a kernel error): nothing changed.
    Failed,
}

impl Outcome {
    /// Whether the desired state is realized.
    pub fn ok(&self) -> bool {
        matches!(
            self,
            Outcome::Applied | Outcome::Unchanged | Outcome::RolledBack
        )
    }
}

/// The agent's link to etcd (fail static: it filters on without it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Connectivity {
    /// Times the agent lost etcd and reconnected.
    pub reconnects: u64,
    /// The last error seen talking to etcd.
    pub last_error: Option<String>,
    /// How long the last outage lasted (ms).
    pub last_outage_ms: Option<u64>,
}

/// `rollouts/<id>`: a rollout, as the controller drives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// `r<ms since the epoch>` (sortable).
    pub id: String,
    /// The ruleset version rolled out (a classifier patch: the ruleset is
    /// left as each gateway has it).
    pub ruleset: String,
    /// A classifier patch instead (`programs/<id>`).
    #[serde(default)]
    pub program: Option<String>,
    /// Where it came from (the directory).
    pub label: String,
    /// Why.
    pub reason: String,
    /// Tenants in scope (empty: the whole ruleset).
    pub tenants: Vec<String>,
    /// Canary window per gateway (ms), if any.
    pub canary_ms: Option<u64>,
    /// How long a wave may take (ms) before it counts as failed.
    pub wave_deadline_ms: u64,
    /// The selector the gateways were picked with (`k=v`, all must match).
    pub selector: BTreeMap<String, String>,
    /// The gateways of each wave, in order.
    pub waves: Vec<Vec<String>>,
    /// The wave being driven (index into `waves`).
    pub wave: usize,
    /// Where the rollout is.
    pub state: RolloutState,
    /// A request from `fleet pause` / `fleet abort` for the driver.
    pub request: Option<Request>,
    /// Per changed gateway: what it had before (to roll back to).
    pub before: BTreeMap<String, Before>,
    /// Gateways whose desired state this rollout wrote (each its agent must
    /// report having handled, `Realized::desired_revision`).
    pub written: BTreeSet<String>,
    /// When the current wave's desired state was written (ms since the epoch).
    pub wave_started_ms: u64,
    /// Whether the rollback desired state is written (state `rolling-back`).
    pub rollback_written: bool,
    /// When the rollback started (ms since the epoch).
    pub rollback_started_ms: u64,
    /// Why it halted, if it did.
    pub halt_reason: Option<String>,
    /// Every step, oldest first.
    pub history: Vec<Step>,
}

/// What a gateway had before a rollout changed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Before {
    /// Its desired state then (none: it had none).
    pub desired: Option<Desired>,
    /// Interface → its live generation then.
    pub generations: BTreeMap<String, u64>,
}

/// Where a rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    /// Waves being driven.
    Running,
    /// Stopped between waves by `fleet pause`; `fleet resume` goes on.
    Paused,
    /// Halted: the changed gateways are being rolled back.
    RollingBack,
    /// Every wave realized.
    Done,
    /// Halted and every changed gateway rolled back.
    RolledBack,
}

impl RolloutState {
    /// Whether it is over.
    pub fn finished(self) -> bool {
        matches!(self, RolloutState::Done | RolloutState::RolledBack)
    }
}

/// A request to the driving controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Request {
    /// Stop after the current wave.
    Pause,
    /// Halt now and roll back (with the reason).
    Abort(String),
}

/// One line of a rollout's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Which controller.
    pub by: String,
    /// What (`started`, `wave`, `realized`, `halted`, `rolled-back`, …).
    pub what: String,
    /// Details, such as why a wave failed.
    pub detail: String,
}
