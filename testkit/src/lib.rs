//! fluxgate's shared test support. **Not published**: a dev-dependency of the
//! workspace's crates, so no test scaffolding leaks into their public APIs and
//! no test file is included by `#[path]` (regex-test's shape).
//!
//! - [`cases`]: the shared table of semantic cases (`ruleset/tests/cases.txt`)
//!   and the runner every engine uses on it: the reference classifier, the
//!   userspace classifier and the kernel program.
//! - [`synth`]: deterministic synthetic rulesets and packets, all drawn from one
//!   seeded [`synth::Rng`]: ClassBench-like filter sets and traces (benches,
//!   differential tests), the same shape directly as table rules and keys
//!   ([`synth::flat`], for the table compiler), and proptest strategies for
//!   rulesets and packets over boundary values ([`synth::strategy`]).
//! - [`etcd`]: a real etcd server on 127.0.0.1 (free ports, scratch data
//!   directory, optional TLS with client certificates), killed on drop.
//! - [`scratch`]: a uniquely named temporary directory removed on drop.
//! - `net` (feature `net`): network namespaces, veth pairs and bounded traffic
//!   between them, for the tests, benches and the demo that attach real XDP.
//!   Behind a feature because it needs `fluxgate-dataplane` (and so the eBPF
//!   build), which the ruleset's own tests must not wait for.
//!
//! It depends on `fluxgate-ruleset`, so `fluxgate-ruleset` can use it from its
//! integration tests and benches only: its unit tests would see a second copy
//! of the crate's types.

pub mod cases;
pub mod etcd;
#[cfg(feature = "net")]
pub mod net;
pub mod scratch;
pub mod synth;
