//! fluxgate: a packet-filter dataplane for shared-hosting gateways.
//!
//! An XDP program classifies every packet in the kernel; rulesets are compiled
//! in userspace and swapped in atomically, per tenant. This facade re-exports
//! the crates a gateway embeds:
//!
//! - [`common`]: the kernel/userspace ABI (counters, outcomes, configuration);
//! - [`dataplane`]: load, attach, pin, counters, `BPF_PROG_TEST_RUN`;
//! - [`ruleset`]: rule model, format, validation, compiler, classifiers;
//! - [`control`]: the operations behind the `fluxgate` CLI.

pub use fluxgate_common as common;
pub use fluxgate_control as control;
pub use fluxgate_dataplane as dataplane;
pub use fluxgate_ruleset as ruleset;
