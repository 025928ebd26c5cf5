//! The gateway a daemon embeds fluxgate in: where state is pinned (bpffs)
//! and recorded (the journal), in which network namespace — and the
//! operations on its interfaces.

use std::path::{Path, PathBuf};

use fluxgate_common::{GatewayConfig, xdp};
use fluxgate_dataplane::{AttachMode, PinnedAttachment, Program, Sizes};
use serde::Serialize;

use crate::{
    Applied, ApplyOptions, ControlError, Interface, RulesetSource,
    check::{DiffReport, diff_files},
    host,
    stats::InterfaceStats,
    status::Status,
    store::{AttachRecord, StateDir},
};

/// Default bpffs directory for pinned state.
pub const DEFAULT_BPFFS: &str = fluxgate_dataplane::DEFAULT_PIN_ROOT;
/// Default directory of the journal.
pub const DEFAULT_STATE: &str = "/var/lib/fluxgate";

/// What to do with packets the parser rejects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MalformedVerdict {
    /// Drop them (default: the kernel would discard most of them anyway).
    #[default]
    Drop,
    /// Pass them on to the stack.
    Pass,
}

/// Options of [`Gateway::attach`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// Native, generic, or native with generic fallback.
    pub mode: AttachMode,
    /// Verdict for malformed packets.
    pub malformed: MalformedVerdict,
    /// Cells (128 bytes each) of the table pool every generation's tables
    /// share; `None`: `fluxgate_common::DEFAULT_POOL_CELLS`.
    pub pool_cells: Option<u32>,
    /// Tenant slots (tenant indexes `0..n`, at most
    /// `fluxgate_common::MAX_TENANT_SLOTS`); `None`:
    /// `fluxgate_common::DEFAULT_TENANT_SLOTS` (65,536). What they cost is
    /// documented there.
    pub tenant_slots: Option<u32>,
    /// Counter slots (rule counter slots `0..n`, one per rule and per table
    /// default of every live and kept generation; at most
    /// `fluxgate_common::MAX_COUNTER_SLOTS`); `None`:
    /// `fluxgate_common::DEFAULT_COUNTER_SLOTS` (524,288). Each costs 16
    /// bytes per possible CPU (documented there).
    pub counter_slots: Option<u32>,
    /// Entries of the LRU map of per-source limit buckets (one per rule with
    /// `per saddr` and source prefix seen lately; at most
    /// `fluxgate_common::MAX_SOURCE_BUCKETS`); `None`:
    /// `fluxgate_common::DEFAULT_SOURCE_BUCKETS` (65,536, about 6 MiB; the
    /// cost is documented there).
    pub source_buckets: Option<u32>,
}

/// What [`Gateway::attach`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Attached {
    /// Interface name.
    pub iface: String,
    /// `native` or `generic`.
    pub mode: String,
    /// Why native mode was not used, if it was not.
    pub fallback_reason: Option<String>,
    /// The bpffs directory holding the state.
    pub pinned_at: PathBuf,
}

/// What [`Gateway::detach`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Detached {
    /// Interface name.
    pub iface: String,
}

/// What [`Gateway::load`] did.
#[derive(Clone, Debug, Serialize)]
pub struct Loaded<T> {
    /// The attach this load made (`None`: fluxgate was attached already,
    /// and the load was an apply).
    pub attached: Option<Attached>,
    /// Whether an attach made here was undone again (a dry run).
    pub detached_again: bool,
    /// The apply.
    pub applied: T,
}

/// A gateway: its bpffs and state locations and its network namespace.
/// Cheap to create and clone; every operation opens what it needs.
///
/// Nothing here moves the calling thread into another network namespace:
/// work that must happen inside one (attaching, resolving `iif` names) runs
/// on a thread of its own (see [`crate::host::in_netns`]), so a `Gateway`
/// can be used from an async runtime's worker threads.
#[derive(Clone, Debug)]
pub struct Gateway {
    bpffs: PathBuf,
    state: PathBuf,
    netns: Option<String>,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway::new()
    }
}

impl Gateway {
    /// The gateway in the caller's network namespace, with the default
    /// locations ([`DEFAULT_BPFFS`], [`DEFAULT_STATE`]).
    pub fn new() -> Gateway {
        Gateway {
            bpffs: DEFAULT_BPFFS.into(),
            state: DEFAULT_STATE.into(),
            netns: None,
        }
    }

    /// Pins state under `dir` (a directory on bpffs).
    pub fn with_bpffs(mut self, dir: impl Into<PathBuf>) -> Gateway {
        self.bpffs = dir.into();
        self
    }

    /// Keeps the journal under `dir`.
    pub fn with_state(mut self, dir: impl Into<PathBuf>) -> Gateway {
        self.state = dir.into();
        self
    }

    /// Works on the interfaces of network namespace `name` (as `ip -n`).
    pub fn in_netns(mut self, name: Option<impl Into<String>>) -> Gateway {
        self.netns = name.map(Into::into);
        self
    }

    /// The network namespace (`None`: the caller's).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// `<bpffs>/<netns|init>`: one directory per attached interface.
    pub fn pin_root(&self) -> PathBuf {
        self.bpffs.join(self.netns.as_deref().unwrap_or("init"))
    }

    /// The journal of this namespace's interfaces.
    pub fn state_dir(&self) -> StateDir {
        StateDir::new(&self.state, self.netns.as_deref())
    }

    /// Interfaces fluxgate is attached to, sorted.
    pub fn interfaces(&self) -> Result<Vec<String>, ControlError> {
        Ok(PinnedAttachment::list(&self.pin_root())?)
    }

    /// `iface`, or the only attached interface.
    pub fn one_interface(&self, iface: Option<&str>) -> Result<String, ControlError> {
        if let Some(i) = iface {
            return Ok(i.to_owned());
        }
        let mut all = self.interfaces()?;
        match all.len() {
            1 => Ok(all.remove(0)),
            0 => Err(ControlError::NotFound(
                "fluxgate is not attached to any interface; `fluxgate attach IFACE` first".into(),
            )),
            _ => Err(ControlError::Usage(format!(
                "several interfaces are attached ({}); name one",
                all.join(", ")
            ))),
        }
    }

    /// `iface`, or every attached interface.
    fn some_interfaces(&self, iface: Option<&str>) -> Result<Vec<String>, ControlError> {
        match iface {
            Some(i) => Ok(vec![i.to_owned()]),
            None => self.interfaces(),
        }
    }

    /// Loads the program, attaches it to `iface` and pins it, so it stays
    /// attached after this process exits; records `opts` in the journal
    /// (`attach.json`), so [`Gateway::restore`] attaches the same way.
    pub fn attach(&self, iface: &str, opts: AttachOptions) -> Result<Attached, ControlError> {
        let root = self.pin_root();
        let store = self.state_dir().store(iface);
        host::in_netns(self.netns(), || {
            let config = GatewayConfig {
                malformed_action: match opts.malformed {
                    MalformedVerdict::Drop => xdp::DROP,
                    MalformedVerdict::Pass => xdp::PASS,
                },
                ..GatewayConfig::default()
            };
            if PinnedAttachment::exists(&root, iface)? {
                return Err(fluxgate_dataplane::Error::AlreadyAttached {
                    iface: iface.to_owned(),
                    path: root.join(iface),
                }
                .into());
            }
            let defaults = Sizes::default();
            let program = Program::load_with(
                &config,
                Sizes {
                    pool_cells: opts.pool_cells.unwrap_or(defaults.pool_cells),
                    tenant_slots: opts.tenant_slots.unwrap_or(defaults.tenant_slots),
                    counter_slots: opts.counter_slots.unwrap_or(defaults.counter_slots),
                    source_buckets: opts.source_buckets.unwrap_or(defaults.source_buckets),
                },
            )?;
            let attachment = program.attach(iface, opts.mode)?;
            let mode = attachment.mode().to_string();
            let fallback_reason = attachment.fallback_reason().map(str::to_owned);
            let pinned = attachment.pin(&root)?;
            tracing::info!(iface, mode, "attached");
            // How it was attached, for `restore` after a reboot. Not fatal:
            // the attachment is made, and a restore without it attaches
            // with the defaults (and says so).
            let record = AttachRecord {
                mode: opts.mode.to_string(),
                malformed: opts.malformed,
                pool_cells: opts.pool_cells,
                tenant_slots: opts.tenant_slots,
                counter_slots: opts.counter_slots,
                source_buckets: opts.source_buckets,
            };
            if let Err(e) = store.write_attach_options(&record) {
                tracing::warn!(iface, "cannot record the attach options: {e}");
            }
            Ok(Attached {
                iface: iface.to_owned(),
                mode,
                fallback_reason,
                pinned_at: pinned.dir().into(),
            })
        })
    }

    /// Detaches fluxgate from `iface` and removes its pinned state and its
    /// journal. Takes the interface's lock first, so a detach never pulls
    /// the state from under a running apply or canary.
    pub fn detach(&self, iface: &str) -> Result<Detached, ControlError> {
        let store = self.state_dir().store(iface);
        match PinnedAttachment::open(&self.pin_root(), iface) {
            Ok(pinned) => {
                let lock = store.lock()?;
                pinned.detach()?;
                drop(lock);
            }
            // Pinned by another build (after an upgrade): detach it without
            // adopting it, so attaching again replaces it.
            Err(fluxgate_dataplane::Error::Incompatible { reason, .. }) => {
                let lock = store.lock()?;
                tracing::warn!(iface, "detaching incompatible pinned state: {reason}");
                PinnedAttachment::detach_incompatible(&self.pin_root(), iface)?;
                drop(lock);
            }
            Err(e) => return Err(e.into()),
        }
        store.remove();
        tracing::info!(iface, "detached");
        Ok(Detached {
            iface: iface.to_owned(),
        })
    }

    /// Opens `iface` (default: the only attached one) for changes: takes its
    /// lock, adopts the pinned state and reconciles the journal with the kernel.
    pub fn open(&self, iface: Option<&str>) -> Result<Interface, ControlError> {
        self.open_with(iface, true)
    }

    /// Opens `iface` read-only (no lock; the reconciled state is not written
    /// back): for status and statistics while a change may be running.
    pub fn open_read(&self, iface: Option<&str>) -> Result<Interface, ControlError> {
        self.open_with(iface, false)
    }

    fn open_with(&self, iface: Option<&str>, write: bool) -> Result<Interface, ControlError> {
        let iface = self.one_interface(iface)?;
        let (pins, state) = (self.pin_root(), self.state_dir());
        Interface::open(&pins, &state, self.netns(), &iface, write)
    }

    /// A first load: checks `source` (parse, validate, compile, guards;
    /// every tenant must pass, no tenant is refused alone) before touching
    /// the interface, attaches to `iface` unless fluxgate is
    /// attached there already, then applies. An attach made here is undone
    /// when the apply fails or is a dry run, so a failed first load leaves
    /// the interface as it was. On an attached interface this is
    /// [`Interface::apply`], and `attach` options are not used.
    pub fn load(
        &self,
        iface: &str,
        source: &RulesetSource,
        attach: AttachOptions,
        opts: &ApplyOptions,
    ) -> Result<Loaded<Applied>, ControlError> {
        self.load_with(iface, source, attach, opts.dry_run, |it, _| {
            it.apply(source, opts)
        })
    }

    /// [`Gateway::load`] with an apply step of the caller's (a canary, say):
    /// `apply` gets the opened interface and the attach made here (`None`:
    /// attached already); `dry_run` says whether an attach made here is
    /// undone after a successful apply.
    pub fn load_with<T>(
        &self,
        iface: &str,
        source: &RulesetSource,
        attach: AttachOptions,
        dry_run: bool,
        apply: impl FnOnce(&mut Interface, Option<&Attached>) -> Result<T, ControlError>,
    ) -> Result<Loaded<T>, ControlError> {
        if self.interfaces()?.iter().any(|i| i == iface) {
            let applied = apply(&mut self.open(Some(iface))?, None)?;
            return Ok(Loaded {
                attached: None,
                detached_again: false,
                applied,
            });
        }
        crate::check(source)?;
        // A journal without an attachment (after a reboot): undoing this
        // load must not delete it, or `restore` has nothing to restore.
        let had_journal = self.state_dir().interfaces()?.iter().any(|i| i == iface);
        let attached = self.attach(iface, attach)?;
        let result = self
            .open(Some(iface))
            .and_then(|mut it| apply(&mut it, Some(&attached)));
        let undo = result.is_err() || dry_run;
        if undo {
            if had_journal {
                let store = self.state_dir().store(iface);
                let _lock = store.lock()?;
                PinnedAttachment::open(&self.pin_root(), iface)?.detach()?;
            } else {
                self.detach(iface)?;
            }
            if result.is_err() {
                tracing::warn!(iface, "the load failed; detached again, as before");
            }
        }
        Ok(Loaded {
            attached: Some(attached),
            detached_again: undo,
            applied: result?,
        })
    }

    /// What applying `source` to `iface` (default: the only attached
    /// interface; none attached: against nothing) would change, per tenant.
    pub fn diff(
        &self,
        source: &RulesetSource,
        iface: Option<&str>,
    ) -> Result<DiffReport, ControlError> {
        let live = match (iface, self.interfaces()?.len()) {
            (None, 0) => Vec::new(),
            (iface, _) => self.open_read(iface)?.live_files()?,
        };
        diff_files(&live, source)
    }

    /// What is live on `iface`, or on every attached interface.
    pub fn status(&self, iface: Option<&str>) -> Result<Vec<Status>, ControlError> {
        self.some_interfaces(iface)?
            .iter()
            .map(|name| self.open_read(Some(name))?.status())
            .collect()
    }

    /// Counters of `iface`, or of every attached interface; per tenant and
    /// rule only `tenant`'s when given.
    pub fn stats(
        &self,
        iface: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Vec<InterfaceStats>, ControlError> {
        self.some_interfaces(iface)?
            .iter()
            .map(|name| self.open_read(Some(name))?.stats(tenant))
            .collect()
    }

    /// Every metric of every attached interface, in the OpenMetrics text
    /// format (what `serve --metrics` answers).
    pub fn metrics(&self) -> Result<String, ControlError> {
        crate::metrics::render(self)
    }

    /// The bpffs directory given (without the namespace part).
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }
}
