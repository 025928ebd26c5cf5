//! fluxgate's control plane, as a library a gateway daemon embeds: every
//! operation of the `fluxgate` CLI is a typed function here, and the CLI is a
//! thin shell over them (as is the demo daemon in `examples/daemon.rs`).
//!
//! - [`Gateway`]: where state is pinned and journalled, in which network
//!   namespace; [`Gateway::attach`], [`Gateway::detach`], [`Gateway::load`]
//!   (a first load that leaves the interface as it was when it fails),
//!   [`Gateway::status`], [`Gateway::stats`], [`Gateway::diff`],
//!   [`Gateway::metrics`], [`Gateway::restore`] (filtering again after a
//!   reboot, from the journal alone).
//! - [`Interface`]: one interface opened for changes (under its lock) or
//!   read-only: [`Interface::apply`] from a directory or from files held in
//!   memory ([`RulesetSource`]), [`Interface::apply_canary`] with a
//!   [`Cancel`] handle, [`Interface::rollback`], [`Interface::history`],
//!   [`Interface::explain`], [`Interface::capture`] (the drop stream), the
//!   classifier [`upgrade`](crate::upgrade) steps.
//! - [`check()`] and [`classify::classify`] need no kernel and no root.
//! - [`outcomes`]: what each change did for each tenant (applied, refused,
//!   preflight refused, canary rolled back, rolled back), appended by the
//!   changes themselves; [`portal`]: the tenants' status pages and webhooks
//!   built on it (`fluxgate serve --status`).
//!
//! Every result is a documented struct that implements `serde::Serialize`
//! (the CLI's `--json` prints exactly these); every failure is a
//! [`ControlError`] with a stable [`exit`] code.
//!
//! # Embedding
//!
//! ```no_run
//! use fluxgate_control::{ApplyOptions, AttachOptions, Gateway, RulesetSource};
//!
//! let gateway = Gateway::new()
//!     .with_bpffs("/sys/fs/bpf/fluxgate")
//!     .with_state("/var/lib/fluxgate")
//!     .in_netns(None::<String>);
//! let source = RulesetSource::files(
//!     "provider panel",
//!     [
//!         ("gateway.fg", "default pass\n"),
//!         ("acme.fg", "tenant acme\nprefix 203.0.113.0/24\ndefault drop\nproto tcp dport 443 pass\n"),
//!     ],
//! );
//! // First load: attach, then apply (undone if the apply fails).
//! let loaded = gateway.load("eth1", &source, AttachOptions::default(), &ApplyOptions::default())?;
//! println!("generation {} live", loaded.applied.generation);
//! // Later: one tenant's change, then a rollback of that tenant.
//! let mut eth1 = gateway.open(Some("eth1"))?;
//! let opts = ApplyOptions { tenants: vec!["acme".into()], ..ApplyOptions::default() };
//! eth1.apply(&source, &opts)?;
//! eth1.rollback(Some("acme"), None)?;
//! # Ok::<(), fluxgate_control::ControlError>(())
//! ```
//!
//! # What the library takes care of
//!
//! - **Network namespaces**: a [`Gateway`] made with [`Gateway::in_netns`]
//!   does its namespace-bound work on a thread of its own; the caller's
//!   threads never change namespace (see [`host`]).
//! - **Open files**: staging thousands of tables holds a descriptor each
//!   until they are pinned; [`Interface::apply`] raises the soft
//!   `RLIMIT_NOFILE` to the hard limit itself.
//! - **Locking**: one change at a time per interface (a lock file in the
//!   journal); a second gets [`ControlError::Busy`].
//! - **Logging**: operations emit `tracing` spans (one per apply phase:
//!   `read`, `parse`, `validate`, `compile`, `stage`, `preflight`, `publish`,
//!   and `watch` for a canary) and events; install any subscriber to see them.
//!
//! Needs root (or `CAP_BPF` + `CAP_NET_ADMIN`) for everything that touches
//! the kernel.

mod admit;
pub mod apply;
pub mod canary;
pub mod cancel;
pub mod capture;
pub mod check;
pub mod classify;
mod error;
pub mod exit;
pub mod explain;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod gateway;
pub mod host;
pub mod interface;
pub mod metrics;
pub mod outcomes;
pub mod portal;
mod preflight;
mod ratelimit;
mod reconcile;
pub mod restore;
pub mod scope;
pub mod source;
pub mod stats;
pub mod status;
pub mod store;
pub mod upgrade;

pub use admit::{Diagnostic, Position, RefusedTenant};
pub use apply::{Applied, ApplyOptions};
pub use canary::{CanaryOutcome, Health};
pub use cancel::Cancel;
pub use check::{Checked, DiffReport, check};
pub use error::ControlError;
pub use fluxgate_dataplane::AttachMode;
pub use gateway::{AttachOptions, Attached, Detached, Gateway, Loaded, MalformedVerdict};
pub use interface::{Discarded, Interface, RETAIN, RolledBack};
pub use outcomes::{Outcome, OutcomeKind};
pub use preflight::Mismatch;
pub use restore::{RestoreOutcome, Restored};
pub use scope::TableScope;
pub use source::RulesetSource;
pub use stats::{InterfaceStats, StatsReport};
pub use status::Status;
