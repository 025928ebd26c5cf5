//! fluxgate's control plane: the operations behind the `fluxgate` CLI, usable
//! from a gateway's own code as a library.
//!
//! Attach the dataplane to an interface and hand it to bpffs (so it keeps
//! running with no fluxgate process alive), detach it, read its counters; apply
//! rulesets to it as generations, roll them back or forward
//! ([`generations::Gateway`]), read per-tenant and per-rule hits, and classify
//! ClassBench traces with any engine ([`rules::classify`]).

use std::path::{Path, PathBuf};

use fluxgate_common::{GatewayConfig, xdp};
use fluxgate_dataplane::{AttachMode, CountersReport, Error, PinnedAttachment, Program};
use serde::Serialize;

pub mod canary;
pub mod capture;
mod error;
pub mod exit;
pub mod explain;
pub mod generations;
pub mod metrics;
pub mod pipeline;
pub mod rules;
pub mod store;

pub use error::ControlError;

/// Where state is pinned: `<bpffs root>/<network namespace>/<interface>`.
#[derive(Clone, Debug)]
pub struct PinLocation {
    root: PathBuf,
}

impl PinLocation {
    /// State of interfaces in network namespace `netns` (`None`: the namespace the
    /// process started in) under the bpffs directory `bpffs`.
    pub fn new(bpffs: &Path, netns: Option<&str>) -> PinLocation {
        PinLocation {
            root: bpffs.join(netns.unwrap_or("init")),
        }
    }

    /// The directory holding one subdirectory per attached interface.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// What to do with packets the parser rejects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MalformedVerdict {
    /// Drop them (default: the kernel would discard most of them anyway).
    #[default]
    Drop,
    /// Pass them on to the stack.
    Pass,
}

/// Options for [`attach`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AttachOptions {
    /// Native, generic, or native with generic fallback.
    pub mode: AttachMode,
    /// Verdict for malformed packets.
    pub malformed: MalformedVerdict,
    /// Cells (128 bytes each) of the table pool every generation's tables
    /// share; `None`: `fluxgate_common::DEFAULT_POOL_CELLS`.
    pub pool_cells: Option<u32>,
}

/// Result of [`attach`].
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

/// Loads the program, attaches it to `iface` and pins it, so it stays attached
/// after this process exits.
pub fn attach(loc: &PinLocation, iface: &str, opts: AttachOptions) -> Result<Attached, Error> {
    let config = GatewayConfig {
        malformed_action: match opts.malformed {
            MalformedVerdict::Drop => xdp::DROP,
            MalformedVerdict::Pass => xdp::PASS,
        },
        ..GatewayConfig::default()
    };
    if PinnedAttachment::exists(loc.root(), iface)? {
        return Err(Error::AlreadyAttached {
            iface: iface.to_owned(),
            path: loc.root().join(iface),
        });
    }
    let program = match opts.pool_cells {
        Some(cells) => Program::load_sized(&config, cells)?,
        None => Program::load(&config)?,
    };
    let attachment = program.attach(iface, opts.mode)?;
    let mode = attachment.mode().to_string();
    let fallback_reason = attachment.fallback_reason().map(str::to_owned);
    let pinned = attachment.pin(loc.root())?;
    Ok(Attached {
        iface: iface.to_owned(),
        mode,
        fallback_reason,
        pinned_at: pinned.dir().into(),
    })
}

/// Detaches fluxgate from `iface` and removes its pinned state.
pub fn detach(loc: &PinLocation, iface: &str) -> Result<(), Error> {
    PinnedAttachment::open(loc.root(), iface)?.detach()
}

/// Counters of one attached interface.
#[derive(Clone, Debug, Serialize)]
pub struct InterfaceStats {
    /// Interface name.
    pub iface: String,
    /// Its counters.
    pub counters: CountersReport,
}

/// Counters of `iface`, or of every attached interface when `None`.
pub fn stats(loc: &PinLocation, iface: Option<&str>) -> Result<Vec<InterfaceStats>, Error> {
    let names = match iface {
        Some(name) => vec![name.to_owned()],
        None => PinnedAttachment::list(loc.root())?,
    };
    names
        .into_iter()
        .map(|name| {
            let counters = PinnedAttachment::open(loc.root(), &name)?
                .counters()?
                .report();
            Ok(InterfaceStats {
                iface: name,
                counters,
            })
        })
        .collect()
}
