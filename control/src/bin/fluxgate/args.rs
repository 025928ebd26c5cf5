//! The command line's definition: every subcommand and flag, and how they
//! become the library's option types. Nothing here does any work.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use fluxgate_control::{
    ApplyOptions, AttachMode, AttachOptions, Health, MalformedVerdict,
    canary::parse_duration,
    classify::Engine,
    gateway::{DEFAULT_BPFFS, DEFAULT_STATE},
};

/// Exit codes, as `--help` shows them.
const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failure, 2 usage, 3 permission (needs root), \
    4 not found (interface, namespace, attachment, tenant, generation), \
    5 unsupported or incompatible, \
    6 already attached or busy (another change holds the lock), \
    7 ruleset (or classify trace) rejected, 8 preflight failed (nothing changed), \
    9 canary regressed and was rolled back, \
    10 partially applied (some tenants' files were refused and keep their live rules; \
    the others went live), \
    11 fleet rollout halted (and the gateways it changed rolled back).";

#[derive(Parser)]
#[command(
    name = "fluxgate",
    version,
    about = "Packet filter dataplane for shared-hosting gateways (XDP)",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Act inside the named network namespace (like `ip -n`).
    #[arg(short = 'n', long = "netns", global = true, value_name = "NETNS")]
    pub netns: Option<String>,
    /// bpffs directory where attached state is pinned.
    #[arg(long, global = true, env = "FLUXGATE_BPFFS", default_value = DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
    /// Directory for fluxgate's state files (the journal of generations).
    #[arg(long, global = true, env = "FLUXGATE_STATE", default_value = DEFAULT_STATE)]
    pub state: PathBuf,
    /// Print results as JSON: one compact object per line (like `ip -j`).
    #[arg(short = 'j', long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v: info, -vv: debug, -vvv: trace;
    /// `RUST_LOG` overrides).
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Attach fluxgate to an interface; it stays attached after this command exits.
    Attach {
        /// Interface name.
        iface: String,
        #[command(flatten)]
        attach: AttachArgs,
    },
    /// Detach fluxgate from an interface and remove its pinned state.
    Detach {
        /// Interface name.
        iface: String,
    },
    /// After a reboot: attach every interface that has a journal but no
    /// attachment (or only IFACE) as it was attached, and apply its last
    /// live state again from the journal, as a new generation. Attached
    /// interfaces are left alone, so running it again changes nothing.
    Restore {
        /// Interface (default: every interface with a journal).
        iface: Option<String>,
    },
    /// Show counters of one or every attached interface, with per-tenant and
    /// per-rule hits where a ruleset is loaded.
    Stats {
        /// Interface name (default: all attached interfaces).
        iface: Option<String>,
        /// Only this tenant (`gateway`: the global rules and packets of no tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Apply a ruleset directory as a new generation: parse, validate,
    /// compile, stage the changed tables beside the live ones, preflight them
    /// in the kernel, publish atomically (tenant by tenant), record.
    Apply(ApplyArgs),
    /// A first load: `attach` IFACE (unless fluxgate is attached there
    /// already), then `apply` DIR to it. The ruleset is checked before the
    /// interface is touched, and an attach this command made is undone when
    /// the apply fails or is a dry run, so the interface is left as it was.
    Load {
        #[command(flatten)]
        attach: AttachArgs,
        #[command(flatten)]
        apply: ApplyArgs,
    },
    /// Parse, validate and compile a ruleset directory and check its guards
    /// against the reference classifier. No kernel, no root.
    Check {
        /// Directory with gateway.fg and one TENANT.fg per tenant.
        dir: PathBuf,
    },
    /// Show what applying a directory would change, per tenant.
    Diff {
        /// Directory with gateway.fg and one TENANT.fg per tenant.
        dir: PathBuf,
        /// Interface (default: the only attached one; none attached: against nothing).
        iface: Option<String>,
    },
    /// Roll back (or forward) to a kept generation: one slot flip per scope,
    /// nothing recompiled.
    Rollback {
        /// Interface (default: the only attached one).
        iface: Option<String>,
        /// Only this tenant (default: the whole gateway).
        #[arg(long)]
        tenant: Option<String>,
        /// Target generation (default: the one before the live one).
        #[arg(long = "to", value_name = "GEN")]
        to: Option<u64>,
    },
    /// Show live generations per tenant, kept generations and classifier versions.
    Status {
        /// Interface (default: every attached one).
        iface: Option<String>,
    },
    /// Capture dropped packets (with the rule that dropped each), filtered,
    /// sampled and rate-limited in the kernel; print them or write pcapng.
    Capture(CaptureArgs),
    /// Serve Prometheus metrics of every attached interface (of the
    /// namespace) until stopped: counters per outcome, tenant and rule,
    /// generations, change counts and durations. With `--status`, serve each
    /// tenant its status page (and webhooks) instead, or as well when
    /// `--metrics` is given too.
    Serve {
        /// Address to serve metrics on (default 127.0.0.1:9464 when
        /// `--status` is not given).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Address to serve the tenants' status pages on.
        #[arg(long, value_name = "ADDR", requires = "tokens")]
        status: Option<std::net::SocketAddr>,
        /// The operator's tokens file for `--status` (one line per tenant:
        /// `tenant NAME SHA256-OF-TOKEN [webhook=URL]`, and `operator
        /// SHA256-OF-TOKEN`).
        #[arg(long, value_name = "FILE", requires = "status")]
        tokens: Option<PathBuf>,
    },
    /// Explain why a packet gets its verdict: its tenant, every rule considered
    /// with each field checked, the deciding rule — and the kernel's answer on
    /// the same tables.
    Explain {
        /// Interface (default: the only attached one).
        iface: Option<String>,
        /// The packet, e.g. "tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S".
        #[arg(long, required_unless_present = "pcap", conflicts_with = "pcap")]
        packet: Option<String>,
        /// Explain every packet of a pcap / pcapng file instead.
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
        /// A kept generation instead of the live one.
        #[arg(long, value_name = "GEN")]
        generation: Option<u64>,
    },
    /// Forget an interrupted apply (its process died before it finished
    /// publishing): scopes it left live go back to the last whole generation.
    Discard {
        /// Interface (default: the only attached one).
        iface: Option<String>,
    },
    /// Show the history of changes.
    History {
        /// Interface (default: the only attached one).
        iface: Option<String>,
        /// Only events of this tenant (and gateway-wide ones).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Roll out a new classifier program version tenant by tenant, or replace
    /// the dispatcher.
    Upgrade {
        #[command(subcommand)]
        step: UpgradeStep,
    },
    /// Print, for each packet of a ClassBench trace, the rule that decides it:
    /// the 1-based filter number (0: none) with --classbench, `scope#N` or
    /// `scope default` with --ruleset (with --json, the verdict too). Packets
    /// are taken as the wire carries them: ports only on TCP and UDP.
    Classify {
        /// A fluxgate ruleset directory.
        #[arg(
            long,
            conflicts_with = "classbench",
            required_unless_present = "classbench"
        )]
        ruleset: Option<PathBuf>,
        /// A ClassBench filter file.
        #[arg(long)]
        classbench: Option<PathBuf>,
        /// A ClassBench trace file.
        #[arg(long)]
        trace: PathBuf,
        /// Which classifier to run.
        #[arg(long, value_enum, default_value_t = EngineArg::Userspace)]
        engine: EngineArg,
    },
    /// Run this gateway's fleet agent: register in etcd under a lease, apply
    /// the desired state as it changes, report what is live. Keeps the
    /// gateway filtering (and retries) while etcd is unreachable.
    Agent(crate::fleet::AgentArgs),
    /// Roll rulesets out to a fleet of gateways through etcd, in waves.
    Fleet(crate::fleet::FleetArgs),
    /// Write the man page or shell completions generated from this command
    /// line's definition (what `cargo xtask man` installs).
    #[command(hide = true)]
    Generate {
        /// `man` (fluxgate.1) or `completions` (bash, zsh, fish).
        #[arg(value_enum)]
        what: Generated,
        /// Directory to write into.
        dir: PathBuf,
    },
}

/// What `generate` writes.
#[derive(Clone, Copy, ValueEnum)]
pub enum Generated {
    /// The man page, `fluxgate.1`.
    Man,
    /// Completions for bash, zsh and fish.
    Completions,
}

/// What `attach` (and a first `load`) attaches with.
#[derive(Args)]
pub struct AttachArgs {
    /// XDP mode: native with generic fallback (auto), native only, or generic.
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,
    /// Verdict for malformed packets.
    #[arg(long, value_enum, default_value_t = MalformedArg::Drop)]
    pub malformed: MalformedArg,
    /// Cells (128 bytes each, allocated up front) of the pool that holds
    /// every table of every kept generation (default 262144: 32 MiB).
    #[arg(long)]
    pub pool_cells: Option<u32>,
    /// Tenant slots (default 65536, at most 1048576): tenant counters cost
    /// 32 bytes a slot per CPU, the slot maps about 24 bytes a slot.
    #[arg(long)]
    pub tenant_slots: Option<u32>,
    /// Rule counter slots (default 524288, at most 8388608): one per rule and
    /// per default of every live and kept generation; 16 bytes a slot per
    /// CPU (the default: 8 MiB per CPU).
    #[arg(long)]
    pub counter_slots: Option<u32>,
    /// Entries of the LRU map of per-source limit buckets (default 65536,
    /// about 6 MiB; at most 4194304): one per `per saddr` rule and source
    /// prefix seen lately; the least recently seen are evicted.
    #[arg(long)]
    pub source_buckets: Option<u32>,
}

impl AttachArgs {
    /// The library's options.
    pub fn options(&self) -> AttachOptions {
        AttachOptions {
            mode: match self.mode {
                ModeArg::Auto => AttachMode::Auto,
                ModeArg::Native => AttachMode::Native,
                ModeArg::Generic => AttachMode::Generic,
            },
            malformed: match self.malformed {
                MalformedArg::Drop => MalformedVerdict::Drop,
                MalformedArg::Pass => MalformedVerdict::Pass,
            },
            pool_cells: self.pool_cells,
            tenant_slots: self.tenant_slots,
            counter_slots: self.counter_slots,
            source_buckets: self.source_buckets,
        }
    }

    /// Whether any option differs from its default (what a `load` onto an
    /// interface attached already cannot honour).
    pub fn any_given(&self) -> bool {
        self.options() != AttachOptions::default()
    }
}

/// What `apply` (and `load`) applies.
#[derive(Args)]
pub struct ApplyArgs {
    /// Directory with gateway.fg and one TENANT.fg per tenant.
    pub dir: PathBuf,
    /// Interface (default: the only attached one).
    pub iface: Option<String>,
    /// Why (recorded in the history).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Only this tenant changes (repeatable; `gateway`: the gateway file);
    /// every other scope keeps its live rules.
    #[arg(long)]
    pub tenant: Vec<String>,
    /// Do everything but publish, kernel preflight included (like `nft -c`).
    #[arg(long)]
    pub dry_run: bool,
    /// All or nothing: refuse the whole apply when any file is invalid.
    /// Without it, a tenant whose file is invalid or over its quota is
    /// refused alone (it keeps its live rules, exit code 10) while the others
    /// apply; an error in gateway.fg refuses everything either way.
    #[arg(long)]
    pub atomic: bool,
    /// Watch the changed tenants' health for this long after publishing
    /// (e.g. 30s) and roll back by itself when it regresses (exit code 9).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub canary: Option<Duration>,
    /// Baseline window measured before publishing (canary).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub baseline: Duration,
    /// Largest tolerated fall of a tenant's pass ratio, 0..1 (canary).
    #[arg(long, default_value_t = 0.2)]
    pub max_pass_drop: f64,
    /// Smallest tolerated packets/s as a fraction of the baseline (canary).
    #[arg(long, default_value_t = 0.5)]
    pub min_rate: f64,
    /// Command run every interval during the canary; non-zero exit = unhealthy.
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Longest the health command may run before it is killed and counts
    /// as unhealthy (canary).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub health_timeout: Duration,
}

impl ApplyArgs {
    /// The library's apply options.
    pub fn options(&self) -> ApplyOptions {
        ApplyOptions {
            reason: self.reason.clone(),
            tenants: self.tenant.clone(),
            dry_run: self.dry_run,
            atomic: self.atomic,
        }
    }

    /// The canary's thresholds, when `--canary` was given.
    pub fn health(&self) -> Option<Health> {
        self.canary.map(|window| Health {
            window,
            baseline: self.baseline,
            max_pass_drop: self.max_pass_drop,
            min_rate: self.min_rate,
            command: self.health_cmd.clone(),
            command_timeout: self.health_timeout,
            ..Health::default()
        })
    }
}

/// What `capture` captures.
#[derive(Args)]
pub struct CaptureArgs {
    /// Interface (default: the only attached one).
    pub iface: Option<String>,
    /// Capture dropped packets (the only kind there is; for `tcpdump`-like clarity).
    #[arg(long, required = true)]
    pub drops: bool,
    /// Write pcapng here (the deciding rule is each packet's comment).
    #[arg(short = 'w', value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Stop after this many packets.
    #[arg(short = 'c', long)]
    pub count: Option<u64>,
    /// Stop after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Only this tenant's drops (`gateway`: packets of no tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only drops by this rule: `acme#2`, `gateway#1`, `acme default`.
    #[arg(long)]
    pub rule: Option<String>,
    /// Keep one dropped packet in N.
    #[arg(long, default_value_t = 1)]
    pub sample: u32,
    /// At most N packets per second per CPU (1 to 1000000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// Bytes kept per packet (at most 256).
    #[arg(long, default_value_t = 256)]
    pub snaplen: u32,
}

#[derive(Subcommand)]
pub enum UpgradeStep {
    /// Load this build's classifier beside the running versions and preflight
    /// it against every live tenant; it serves nobody yet. Prints its version.
    Stage {
        /// Interface (default: the only attached one).
        iface: Option<String>,
    },
    /// Make a version serve some tenants (`--tenant`, repeatable; `gateway` =
    /// packets of no tenant) or, without `--tenant`, everyone.
    Assign {
        /// Version number (see `upgrade list`).
        version: u32,
        /// Interface (default: the only attached one).
        iface: Option<String>,
        /// Tenant to move to this version.
        #[arg(long)]
        tenant: Vec<String>,
    },
    /// List loaded classifier versions.
    List {
        /// Interface (default: the only attached one).
        iface: Option<String>,
    },
    /// Unload a version that serves nobody.
    Unload {
        /// Version number.
        version: u32,
        /// Interface (default: the only attached one).
        iface: Option<String>,
    },
    /// Replace the attached dispatcher with this build's (atomic bpf_link update).
    Dispatcher {
        /// Interface (default: the only attached one).
        iface: Option<String>,
    },
}

/// `--mode`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Native with generic fallback.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// `--malformed`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MalformedArg {
    /// Drop malformed packets.
    Drop,
    /// Pass them to the stack.
    Pass,
}

/// `--engine`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// The linear reference (definition of semantics).
    Reference,
    /// The compiled tables walked in userspace.
    Userspace,
    /// The compiled tables in the XDP program (needs root).
    Kernel,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Engine {
        match e {
            EngineArg::Reference => Engine::Reference,
            EngineArg::Userspace => Engine::Userspace,
            EngineArg::Kernel => Engine::Kernel,
        }
    }
}
