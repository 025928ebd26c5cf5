//! fluxgate's kernel side: loads the embedded XDP program with aya, attaches it
//! to interfaces, pins its state in bpffs so the control process can exit or
//! restart without touching traffic, reads counters, and runs packets through the
//! program with `BPF_PROG_TEST_RUN`.
//!
//! This is the only fluxgate crate that talks to the kernel. Everything needs root
//! (or `CAP_BPF` + `CAP_NET_ADMIN`); errors say so instead of failing obscurely.
//!
//! ```no_run
//! use fluxgate_dataplane::{AttachMode, Program};
//!
//! # fn main() -> Result<(), fluxgate_dataplane::Error> {
//! let program = Program::load(&Default::default())?;
//! // Detached again when `attachment` is dropped, unless it is pinned.
//! let attachment = program.attach("veth0", AttachMode::Auto)?;
//! println!("attached in {} mode", attachment.mode());
//! let counters = attachment.program().counters()?;
//! println!("{} packets passed", counters.outcome(fluxgate_common::Outcome::Passed).packets);
//! # Ok(()) }
//! ```

// Rooms, each built only on the ones listed before it (no import cycle):
// errors, the raw bpf(2) calls aya lacks, and the layout (map specs, pin
// names); the maps read on their own (configuration, counters, cell pool,
// slot locations); the loaded program; its pinned state; then what works on
// those: tables, kept tables, classifier versions, probes, drop capture,
// attaching.
mod error;
mod layout;
mod sys;

mod config;
mod counters;
mod pool;
mod slots;

mod program;

mod pin;

mod tables;

mod kept_tables;
mod versions;

mod probe;

mod attach;
mod capture;
mod source_buckets;

pub mod frame;
pub mod netns;

pub use attach::{AttachMode, Attachment};
pub use capture::DropReader;
pub use counters::{CounterReport, Counters, CountersReport};
pub use error::Error;
pub use kept_tables::KEPT_SCOPE_BYTES;
pub use layout::DEFAULT_PIN_ROOT;
pub use pin::PinnedAttachment;
pub use probe::{Probe, ProbeResult};
pub use program::{Program, Sizes, TestRunOutput, test_run_xdp};
pub use slots::Slot;
pub use source_buckets::{SourceBuckets, source_buckets};
pub use tables::{SlotTables, StagedImage, StagedTable, TableMap, Tables};
pub use versions::VersionInfo;

/// The embedded object's bytes (for [`PinnedAttachment::stage_version_from`]).
pub const EMBEDDED_OBJECT: &[u8] = OBJECT;

/// The compiled XDP object, built from `ebpf/` by `build.rs` and embedded here so
/// it is never loaded from a path at run time.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fluxgate"));
