//! The `fluxgate` command line. Conventions follow `ip`/`nft`: subcommands,
//! `-n NETNS` to act inside a named network namespace, `--json` for scripts,
//! and documented exit codes (see `fluxgate --help`).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use fluxgate_common::{Malformed, Outcome};
use fluxgate_control::{
    AttachOptions, ControlError, InterfaceStats, MalformedVerdict, PinLocation,
    canary::Health,
    exit,
    generations::{ApplyOptions, Gateway},
    rules::{self, Engine, RuleSource, StateDir, TenantStats},
};
use fluxgate_dataplane::{AttachMode, DEFAULT_PIN_ROOT};

#[derive(Parser)]
#[command(
    name = "fluxgate",
    version,
    about = "Packet filter dataplane for shared-hosting gateways (XDP)",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 permission (needs root), \
                  4 not found (interface/namespace/attachment), 5 unsupported or incompatible, \
                  6 already attached or busy (another change holds the lock), \
                  7 ruleset (or classify trace) rejected, 8 preflight failed (nothing changed), \
                  9 canary regressed and was rolled back."
)]
struct Cli {
    /// Act inside the named network namespace (like `ip -n`).
    #[arg(short = 'n', long = "netns", global = true, value_name = "NETNS")]
    netns: Option<String>,
    /// bpffs directory where attached state is pinned.
    #[arg(long, global = true, env = "FLUXGATE_BPFFS", default_value = DEFAULT_PIN_ROOT)]
    bpffs: PathBuf,
    /// Directory for fluxgate's state files (what each counter slot counts).
    #[arg(
        long,
        global = true,
        env = "FLUXGATE_STATE",
        default_value = "/var/lib/fluxgate"
    )]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach fluxgate to an interface; it stays attached after this command exits.
    Attach {
        /// Interface name.
        iface: String,
        #[command(flatten)]
        attach: AttachArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Detach fluxgate from an interface and remove its pinned state.
    Detach {
        /// Interface name.
        iface: String,
    },
    /// Show counters of one or every attached interface, with per-tenant and
    /// per-rule hits where a ruleset is loaded.
    Stats {
        /// Interface name (default: all attached interfaces).
        iface: Option<String>,
        /// Only this tenant (`gateway`: the global rules and packets of no tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Print counters as JSON.
        #[arg(long)]
        json: bool,
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
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what applying a directory would change, per tenant.
    Diff {
        /// Directory with gateway.fg and one TENANT.fg per tenant.
        dir: PathBuf,
        /// Interface (default: the only attached one; none attached: against nothing).
        iface: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
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
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show live generations per tenant, kept generations and classifier versions.
    Status {
        /// Interface (default: every attached one).
        iface: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Capture dropped packets (with the rule that dropped each), filtered,
    /// sampled and rate-limited in the kernel; print them or write pcapng.
    Capture {
        /// Interface (default: the only attached one).
        iface: Option<String>,
        /// Capture dropped packets (the only kind there is; for `tcpdump`-like clarity).
        #[arg(long, required = true)]
        drops: bool,
        /// Write pcapng here (the deciding rule is each packet's comment).
        #[arg(short = 'w', value_name = "FILE")]
        write: Option<PathBuf>,
        /// Stop after this many packets.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Stop after this long.
        #[arg(long, default_value = "60s", value_parser = fluxgate_control::canary::parse_duration)]
        duration: std::time::Duration,
        /// Only this tenant's drops (`gateway`: packets of no tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Only drops by this rule: `acme#2`, `gateway#1`, `acme default`.
        #[arg(long)]
        rule: Option<String>,
        /// Keep one dropped packet in N.
        #[arg(long, default_value_t = 1)]
        sample: u32,
        /// At most N packets per second per CPU (0: unlimited).
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Bytes kept per packet (at most 256).
        #[arg(long, default_value_t = 256)]
        snaplen: u32,
        /// One JSON object per packet instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Serve Prometheus metrics of every attached interface (of the
    /// namespace) until stopped: counters per outcome, tenant and rule,
    /// generations, change counts and durations.
    Serve {
        /// Address to listen on (loopback by default).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
        metrics: std::net::SocketAddr,
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
        /// Print as JSON.
        #[arg(long)]
        json: bool,
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
        /// Print as JSON.
        #[arg(long)]
        json: bool,
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
        #[arg(long, value_enum, default_value_t = Engine::Userspace)]
        engine: Engine,
        /// Print as JSON, with each packet's verdict.
        #[arg(long)]
        json: bool,
    },
}

/// What `attach` (and a first `load`) attaches with.
#[derive(clap::Args)]
struct AttachArgs {
    /// XDP mode: native with generic fallback (auto), native only, or generic.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    mode: Mode,
    /// Verdict for malformed packets.
    #[arg(long, value_enum, default_value_t = MalformedVerdict::Drop)]
    malformed: MalformedVerdict,
    /// Cells (128 bytes each, allocated up front) of the pool that holds
    /// every table of every kept generation (default 262144: 32 MiB).
    #[arg(long)]
    pool_cells: Option<u32>,
}

impl AttachArgs {
    /// Whether any option differs from its default (what a `load` onto an
    /// interface attached already cannot honour).
    fn any_given(&self) -> bool {
        self.mode != Mode::Auto
            || self.malformed != MalformedVerdict::Drop
            || self.pool_cells.is_some()
    }

    fn options(&self) -> AttachOptions {
        AttachOptions {
            mode: match self.mode {
                Mode::Auto => AttachMode::Auto,
                Mode::Native => AttachMode::Native,
                Mode::Generic => AttachMode::Generic,
            },
            malformed: self.malformed,
            pool_cells: self.pool_cells,
        }
    }
}

/// What `apply` (and `load`) applies.
#[derive(clap::Args)]
struct ApplyArgs {
    /// Directory with gateway.fg and one TENANT.fg per tenant.
    dir: PathBuf,
    /// Interface (default: the only attached one).
    iface: Option<String>,
    /// Why (recorded in the history).
    #[arg(long, default_value = "")]
    reason: String,
    /// Only this tenant changes (repeatable; `gateway`: the gateway file);
    /// every other scope keeps its live rules.
    #[arg(long)]
    tenant: Vec<String>,
    /// Do everything but publish, kernel preflight included (like `nft -c`).
    #[arg(long)]
    dry_run: bool,
    /// Watch the changed tenants' health for this long after publishing
    /// (e.g. 30s) and roll back by itself when it regresses (exit code 9).
    #[arg(long, value_name = "DURATION", value_parser = fluxgate_control::canary::parse_duration)]
    canary: Option<std::time::Duration>,
    /// Baseline window measured before publishing (canary).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = fluxgate_control::canary::parse_duration)]
    baseline: std::time::Duration,
    /// Largest tolerated fall of a tenant's pass ratio, 0..1 (canary).
    #[arg(long, default_value_t = 0.2)]
    max_pass_drop: f64,
    /// Smallest tolerated packets/s as a fraction of the baseline (canary).
    #[arg(long, default_value_t = 0.5)]
    min_rate: f64,
    /// Command run every interval during the canary; non-zero exit = unhealthy.
    #[arg(long, value_name = "CMD")]
    health_cmd: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum UpgradeStep {
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
        /// Print as JSON.
        #[arg(long)]
        json: bool,
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

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Auto,
    Native,
    Generic,
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our output
    // goes away (`fluxgate status | head`) instead of panicking on EPIPE.
    // SAFETY: restoring the default disposition of a signal, before any thread.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    raise_open_file_limit();
    let json = cli.command.json();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK as u8),
        Err(err) => {
            // Scripts that asked for JSON get the error as JSON too (with
            // each ruleset problem's file, line and column), on one line so
            // that `capture --json`'s stream stays one object per line;
            // people get text. A rolled-back canary's report is already out.
            if json && !matches!(err, ControlError::CanaryRolledBack(_)) {
                println!("{}", err.to_json());
            }
            eprintln!("fluxgate: {err}");
            ExitCode::from(err.exit_code() as u8)
        }
    }
}

impl Command {
    /// Whether `--json` was given.
    fn json(&self) -> bool {
        match self {
            Command::Attach { json, .. }
            | Command::Stats { json, .. }
            | Command::Apply(ApplyArgs { json, .. })
            | Command::Load {
                apply: ApplyArgs { json, .. },
                ..
            }
            | Command::Check { json, .. }
            | Command::Diff { json, .. }
            | Command::Rollback { json, .. }
            | Command::Status { json, .. }
            | Command::Capture { json, .. }
            | Command::Explain { json, .. }
            | Command::History { json, .. }
            | Command::Classify { json, .. }
            | Command::Upgrade {
                step: UpgradeStep::List { json, .. },
            } => *json,
            Command::Detach { .. }
            | Command::Serve { .. }
            | Command::Discard { .. }
            | Command::Upgrade { .. } => false,
        }
    }
}

fn run(cli: Cli) -> Result<(), ControlError> {
    // The metrics endpoint listens in the caller's namespace (where the
    // scraper is), whatever namespace's interfaces it reports.
    let listener = match &cli.command {
        Command::Serve { metrics } => Some(
            std::net::TcpListener::bind(metrics)
                .map_err(|e| ControlError::Usage(format!("cannot listen on {metrics}: {e}")))?,
        ),
        _ => None,
    };
    if let Some(netns) = &cli.netns {
        fluxgate_dataplane::netns::enter(netns)?;
    }
    let loc = PinLocation::new(&cli.bpffs, cli.netns.as_deref());
    let state = StateDir::new(&cli.state, cli.netns.as_deref());
    match cli.command {
        Command::Attach {
            iface,
            attach,
            json,
        } => {
            let attached = fluxgate_control::attach(&loc, &iface, attach.options())?;
            if json {
                print_json(&attached);
            } else {
                print_attached(&attached);
            }
        }
        Command::Detach { iface } => {
            fluxgate_control::detach(&loc, &iface)?;
            state.remove(&iface);
            println!("detached from {iface}");
        }
        Command::Stats {
            iface,
            tenant,
            json,
        } => {
            let stats = fluxgate_control::stats(&loc, iface.as_deref())?;
            let mut out = Vec::new();
            for s in &stats {
                let tenants = rules::rule_stats(&loc, &state, &s.iface, tenant.as_deref())?;
                out.push((s, tenants));
            }
            if json {
                let interfaces: Vec<_> = out
                    .iter()
                    .map(|(s, t)| serde_json::json!({"iface": s.iface, "counters": s.counters, "tenants": t}))
                    .collect();
                print_json(&serde_json::json!({ "interfaces": interfaces }));
            } else if stats.is_empty() {
                println!("fluxgate is not attached to any interface");
            } else {
                for (s, tenants) in &out {
                    print_stats(s);
                    tenants.iter().for_each(print_tenant);
                }
            }
        }
        Command::Apply(args) => apply(&loc, &state, args)?,
        Command::Load {
            attach,
            apply: args,
        } => load(&loc, &state, &attach, args)?,
        Command::Check { dir, json } => {
            let checked = fluxgate_control::pipeline::check(&dir)?;
            if json {
                print_json(&checked);
            } else {
                for w in &checked.warnings {
                    eprintln!("{w}");
                }
                println!(
                    "{}: ok: {} for {}, {} {}, {} of tables",
                    dir.display(),
                    plural(checked.rules, "rule"),
                    plural(checked.tenants, "tenant"),
                    plural(checked.guards, "guard packet"),
                    if checked.guards == 1 {
                        "agrees"
                    } else {
                        "agree"
                    },
                    size(checked.table_bytes)
                );
            }
        }
        Command::Diff { dir, iface, json } => {
            let attached = fluxgate_dataplane::PinnedAttachment::list(loc.root())?;
            let live = match iface {
                Some(i) => Gateway::open_read(&loc, state.root(), &i)?.live_files()?,
                None if attached.len() == 1 => {
                    Gateway::open_read(&loc, state.root(), &attached[0])?.live_files()?
                }
                None if attached.is_empty() => Vec::new(),
                None => {
                    return Err(ControlError::Usage(format!(
                        "several interfaces are attached ({}); name one",
                        attached.join(", ")
                    )));
                }
            };
            let report = fluxgate_control::pipeline::diff_files(&live, &dir)?;
            if json {
                print_json(&report);
            } else {
                print!("{report}");
            }
        }
        Command::Rollback {
            iface,
            tenant,
            to,
            json,
        } => {
            let iface = one_iface(&loc, iface)?;
            let done =
                Gateway::open(&loc, state.root(), &iface)?.rollback(tenant.as_deref(), to)?;
            if json {
                print_json(&done);
            } else {
                println!(
                    "{}: {} now at generation {} ({})",
                    done.iface,
                    done.tenant.as_deref().unwrap_or("gateway"),
                    done.to,
                    if done.flipped.is_empty() {
                        "already live".to_owned()
                    } else {
                        format!("flipped {}", summarize(&done.flipped))
                    }
                );
            }
        }
        Command::Status { iface, json } => {
            let names = match iface {
                Some(i) => vec![i],
                None => fluxgate_dataplane::PinnedAttachment::list(loc.root())?,
            };
            let mut all = Vec::new();
            for name in names {
                all.push(status_of(&loc, &state, &name)?);
            }
            if json {
                print_json(&serde_json::json!({ "interfaces": all }));
            } else if all.is_empty() {
                println!("fluxgate is not attached to any interface");
            } else {
                all.iter().for_each(print_status);
            }
        }
        Command::History {
            iface,
            tenant,
            json,
        } => {
            let iface = one_iface(&loc, iface)?;
            let gw = Gateway::open_read(&loc, state.root(), &iface)?;
            let events: Vec<_> = gw
                .state()
                .events
                .iter()
                .filter(|e| tenant.is_none() || e.tenant.is_none() || e.tenant == tenant)
                .cloned()
                .collect();
            if json {
                print_json(&events);
            } else {
                for e in &events {
                    println!(
                        "{} gen {:<5} {:<20} {:<10} {}{}",
                        utc(e.at),
                        e.generation,
                        e.what,
                        e.who,
                        e.tenant
                            .as_deref()
                            .map(|t| format!("[{t}] "))
                            .unwrap_or_default(),
                        e.detail
                    );
                }
            }
        }
        Command::Upgrade { step } => upgrade(&loc, &state, step)?,
        Command::Serve { .. } => {
            let Some(listener) = listener else {
                return Err(ControlError::State("no listener".into()));
            };
            let addr = listener
                .local_addr()
                .map_err(|e| ControlError::State(e.to_string()))?;
            println!("serving metrics on http://{addr}/metrics");
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            return Err(fluxgate_control::metrics::serve(&listener, &loc, &state));
        }
        Command::Capture {
            iface,
            drops: _,
            write,
            count,
            duration,
            tenant,
            rule,
            sample,
            rate,
            snaplen,
            json,
        } => {
            let iface = one_iface(&loc, iface)?;
            let gw = Gateway::open_read(&loc, state.root(), &iface)?;
            let opts = fluxgate_control::capture::CaptureOptions {
                tenant,
                rule,
                sample,
                rate,
                snaplen,
                count,
                duration,
            };
            if !json {
                println!(
                    "{iface}: capturing dropped packets for up to {:.0} s{}",
                    duration.as_secs_f64(),
                    count
                        .map(|c| format!(" or {c} packets"))
                        .unwrap_or_default()
                );
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            }
            let n = gw.capture(&opts, write.as_deref(), |p| {
                if json {
                    if let Ok(line) = serde_json::to_string(p) {
                        println!("{line}");
                    }
                } else {
                    println!(
                        "{} {} bytes{} dropped by {}",
                        utc(p.time as u64),
                        p.len,
                        p.tenant
                            .as_deref()
                            .map(|t| format!(" to {t}"))
                            .unwrap_or_default(),
                        p.dropped_by
                    );
                }
            })?;
            if !json {
                println!(
                    "{iface}: {n} packet(s) captured{}",
                    write
                        .map(|w| format!(", written to {}", w.display()))
                        .unwrap_or_default()
                );
            }
        }
        Command::Explain {
            iface,
            packet,
            pcap,
            generation,
            json,
        } => {
            let iface = one_iface(&loc, iface)?;
            let gw = Gateway::open_read(&loc, state.root(), &iface)?;
            let packets: Vec<Result<fluxgate_ruleset::PacketHeader, String>> = match (packet, pcap)
            {
                (Some(text), _) => vec![Ok(text.parse().map_err(
                    |e: fluxgate_ruleset::PacketParseError| ControlError::Usage(e.to_string()),
                )?)],
                (None, Some(file)) => fluxgate_control::explain::read_pcap(&file)?
                    .iter()
                    .map(|frame| match fluxgate_dataplane::frame::header_of(frame) {
                        Ok(Some(p)) => Ok(p),
                        Ok(None) => Err("not IP: always passed".to_owned()),
                        Err(reason) => Err(format!(
                            "malformed ({}): gets the malformed verdict",
                            reason.name()
                        )),
                    })
                    .collect(),
                (None, None) => {
                    return Err(ControlError::Usage("--packet or --pcap is required".into()));
                }
            };
            let several = packets.len() > 1;
            let mut reports = Vec::new();
            for (i, p) in packets.iter().enumerate() {
                if several && !json {
                    println!("--- packet {}", i + 1);
                }
                match p {
                    Ok(p) => {
                        let report = gw.explain(p, generation)?;
                        if !json {
                            print!("{report}");
                        }
                        reports.push(serde_json::to_value(&report).unwrap_or_default());
                    }
                    Err(why) => {
                        if !json {
                            println!("{why}");
                        }
                        reports.push(serde_json::json!({ "skipped": why }));
                    }
                }
            }
            if json {
                if several {
                    print_json(&reports);
                } else if let Some(r) = reports.pop() {
                    print_json(&r);
                }
            }
        }
        Command::Discard { iface } => {
            let iface = one_iface(&loc, iface)?;
            let gens = Gateway::open(&loc, state.root(), &iface)?.discard_interrupted()?;
            if gens.is_empty() {
                println!("{iface}: no interrupted apply to discard");
            } else {
                println!("{iface}: discarded interrupted generation(s) {gens:?}");
            }
        }
        Command::Classify {
            ruleset,
            classbench,
            trace,
            engine,
            json,
        } => {
            let source = match (&ruleset, &classbench) {
                (Some(dir), _) => RuleSource::Dir(dir),
                (None, Some(file)) => RuleSource::ClassBench(file),
                (None, None) => {
                    return Err(ControlError::Usage(
                        "--ruleset or --classbench is required".into(),
                    ));
                }
            };
            let decided = rules::classify(source, &trace, engine)?;
            if json {
                print_json(&serde_json::json!({ "engine": engine, "packets": decided }));
            } else {
                for d in decided {
                    println!("{}", d.decided_by);
                }
            }
        }
    }
    Ok(())
}

/// Every staged table is a file descriptor until it is pinned: a change to
/// thousands of tenants needs more than the usual soft limit of 1024.
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _best_effort = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `apply`: a new generation of `args.dir` on an attached interface.
fn apply(loc: &PinLocation, state: &StateDir, args: ApplyArgs) -> Result<(), ControlError> {
    let ApplyArgs {
        dir,
        iface,
        reason,
        tenant,
        dry_run,
        canary,
        baseline,
        max_pass_drop,
        min_rate,
        health_cmd,
        json,
    } = args;
    let iface = one_iface(loc, iface)?;
    let opts = ApplyOptions {
        reason,
        tenants: tenant,
        dry_run,
    };
    let mut gw = Gateway::open(loc, state.root(), &iface)?;
    if let Some(window) = canary {
        let health = Health {
            window,
            baseline,
            max_pass_drop,
            min_rate,
            command: health_cmd,
            ..Health::default()
        };
        if !json {
            println!(
                "{iface}: measuring a {:.1} s baseline, then watching for {:.1} s",
                baseline.as_secs_f64(),
                window.as_secs_f64()
            );
        }
        let outcome = gw.apply_canary(&dir, &opts, &health)?;
        if json {
            print_json(&outcome);
        } else if let Some(why) = &outcome.reason {
            println!(
                "{iface}: canary: generation {} ROLLED BACK after {:.1} s: {why}",
                outcome.applied.generation, outcome.watched
            );
        } else {
            println!(
                "{iface}: canary: generation {} healthy after {:.1} s",
                outcome.applied.generation, outcome.watched
            );
        }
        if outcome.rolled_back {
            return Err(ControlError::CanaryRolledBack(
                outcome.reason.unwrap_or_default(),
            ));
        }
        return Ok(());
    }
    let applied = gw.apply_with(&dir, &opts)?;
    if json {
        print_json(&applied);
    } else {
        for w in &applied.warnings {
            eprintln!("{w}");
        }
        if applied.dry_run && !(applied.changed.is_empty() && applied.removed.is_empty()) {
            println!(
                "{}: dry run: generation {} would change {}{}; {} preflight packets agreed; nothing published",
                applied.iface,
                applied.generation,
                summarize(&applied.changed),
                if applied.removed.is_empty() {
                    String::new()
                } else {
                    format!(" and remove {}", summarize(&applied.removed))
                },
                applied.preflight_packets
            );
        } else if applied.changed.is_empty() && applied.removed.is_empty() {
            println!(
                "{}: nothing changed, generation {} stays live",
                applied.iface, applied.generation
            );
        } else {
            println!(
                "{}: generation {} live: {} for {}; changed {}{}; \
                     {} preflight packets agreed; {} of new tables",
                applied.iface,
                applied.generation,
                plural(applied.rules, "rule"),
                plural(applied.tenants, "tenant"),
                summarize(&applied.changed),
                if applied.removed.is_empty() {
                    String::new()
                } else {
                    format!("; removed {}", summarize(&applied.removed))
                },
                applied.preflight_packets,
                size(applied.table_bytes)
            );
        }
    }
    Ok(())
}

/// `load`: `attach` IFACE unless fluxgate is attached there, then `apply`.
/// The ruleset is checked (parse, validate, compile, guards) before the
/// interface is touched; an attach made here is undone when the apply fails
/// or only dry-runs, so a failed first load leaves the interface as it was.
fn load(
    loc: &PinLocation,
    state: &StateDir,
    attach: &AttachArgs,
    args: ApplyArgs,
) -> Result<(), ControlError> {
    let attached = fluxgate_dataplane::PinnedAttachment::list(loc.root())?;
    let iface = match &args.iface {
        Some(iface) => iface.clone(),
        None if attached.is_empty() => {
            return Err(ControlError::Usage(
                "fluxgate is attached nowhere yet: name the interface to load onto".into(),
            ));
        }
        None => one_iface(loc, None)?,
    };
    if attached.contains(&iface) {
        if attach.any_given() {
            eprintln!(
                "fluxgate: warning: {iface} is attached already, so --mode, --malformed and \
                 --pool-cells are not applied (they take effect on `attach`; detach first to change them)"
            );
        }
        return apply(
            loc,
            state,
            ApplyArgs {
                iface: Some(iface),
                ..args
            },
        );
    }
    fluxgate_control::pipeline::check(&args.dir)?;
    let done = fluxgate_control::attach(loc, &iface, attach.options())?;
    if !args.json {
        print_attached(&done);
    }
    let (dry_run, json) = (args.dry_run, args.json);
    let result = apply(
        loc,
        state,
        ApplyArgs {
            iface: Some(iface.clone()),
            ..args
        },
    );
    if result.is_err() || dry_run {
        fluxgate_control::detach(loc, &iface)?;
        state.remove(&iface);
        match &result {
            Ok(()) if !json => println!("detached from {iface} again (dry run)"),
            Ok(()) => {}
            Err(_) => eprintln!("fluxgate: {iface}: the load failed; detached again, as before"),
        }
    }
    result
}

/// Prints what `attach` did, for people.
fn print_attached(attached: &fluxgate_control::Attached) {
    if let Some(reason) = &attached.fallback_reason {
        eprintln!("fluxgate: warning: {reason}; using generic mode");
    }
    println!(
        "attached to {} in {} mode (pinned at {})",
        attached.iface,
        attached.mode,
        attached.pinned_at.display()
    );
}

/// `iface`, or the only attached interface.
fn one_iface(loc: &PinLocation, iface: Option<String>) -> Result<String, ControlError> {
    if let Some(i) = iface {
        return Ok(i);
    }
    let mut all = fluxgate_dataplane::PinnedAttachment::list(loc.root())?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(ControlError::Usage(
            "fluxgate is not attached to any interface; `fluxgate attach IFACE` first".into(),
        )),
        _ => Err(ControlError::Usage(format!(
            "several interfaces are attached ({}); name one",
            all.join(", ")
        ))),
    }
}

fn upgrade(loc: &PinLocation, state: &StateDir, step: UpgradeStep) -> Result<(), ControlError> {
    match step {
        UpgradeStep::Stage { iface } => {
            let iface = one_iface(loc, iface)?;
            let v = Gateway::open(loc, state.root(), &iface)?.stage_version()?;
            println!(
                "{iface}: classifier version {v} loaded and preflighted; it serves nobody yet"
            );
        }
        UpgradeStep::Assign {
            version,
            iface,
            tenant,
        } => {
            let iface = one_iface(loc, iface)?;
            Gateway::open(loc, state.root(), &iface)?.assign(version, &tenant)?;
            let whom = if tenant.is_empty() {
                "every tenant".to_owned()
            } else {
                tenant.join(", ")
            };
            println!("{iface}: classifier version {version} now serves {whom}");
        }
        UpgradeStep::List { iface, json } => {
            let iface = one_iface(loc, iface)?;
            let versions = Gateway::open_read(loc, state.root(), &iface)?.versions()?;
            if json {
                let v: Vec<_> = versions.iter().map(version_json).collect();
                print_json(&v);
            } else {
                for v in &versions {
                    println!(
                        "version {:<2} program {:<6} tag {}  serves {} tenant slot(s)",
                        v.version,
                        v.program_id,
                        v.tag,
                        v.serves.len()
                    );
                }
            }
        }
        UpgradeStep::Unload { version, iface } => {
            let iface = one_iface(loc, iface)?;
            Gateway::open(loc, state.root(), &iface)?.unload_version(version)?;
            println!("{iface}: classifier version {version} unloaded");
        }
        UpgradeStep::Dispatcher { iface } => {
            let iface = one_iface(loc, iface)?;
            let id = Gateway::open(loc, state.root(), &iface)?.replace_dispatcher()?;
            println!("{iface}: dispatcher replaced (program {id})");
        }
    }
    Ok(())
}

fn version_json(v: &fluxgate_dataplane::VersionInfo) -> serde_json::Value {
    serde_json::json!({
        "version": v.version,
        "program_id": v.program_id,
        "tag": v.tag,
        "loaded_at": v.loaded_at.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()),
        "serves_gateway": v.serves.contains(&None),
        "serves_tenant_slots": v.serves.iter().flatten().count(),
    })
}

fn status_of(
    loc: &PinLocation,
    state: &StateDir,
    iface: &str,
) -> Result<serde_json::Value, ControlError> {
    let gw = Gateway::open_read(loc, state.root(), iface)?;
    let st = gw.state();
    let versions = gw.versions()?;
    let version_of = |slot: Option<u32>| {
        versions
            .iter()
            .find(|v| v.serves.contains(&slot))
            .map(|v| v.version)
    };
    let tenants: Vec<_> = st
        .live
        .tenants
        .iter()
        .map(|(name, t)| {
            serde_json::json!({
                "tenant": name,
                "slot": t.slot,
                "generation": t.table,
                "classifier_version": version_of(Some(t.slot)),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "iface": iface,
        "generation": st.generation,
        "live_generation": st.live_generation,
        "global_generation": st.live.global,
        "dispatch_generation": st.live.dispatch,
        "gateway_classifier_version": version_of(None),
        "tenants": tenants,
        "kept_generations": gw.kept()?,
        "interrupted": gw.interrupted()?,
        "retention": fluxgate_control::generations::RETAIN,
        "versions": versions.iter().map(version_json).collect::<Vec<_>>(),
    }))
}

fn print_status(s: &serde_json::Value) {
    println!(
        "{}: generation {} live (newest {}), kept {} (retention {}), gateway classifier version {}",
        s["iface"].as_str().unwrap_or(""),
        s["live_generation"],
        s["generation"],
        s["kept_generations"],
        s["retention"],
        s["gateway_classifier_version"]
    );
    if let Some(gens) = s["interrupted"].as_array()
        && !gens.is_empty()
    {
        println!(
            "  interrupted apply: generation(s) {} recorded but never fully published; \
             `fluxgate apply` again to resume, or `fluxgate discard` to drop it",
            s["interrupted"]
        );
    }
    if let Some(tenants) = s["tenants"].as_array() {
        for t in tenants {
            println!(
                "  {:<20} generation {:<6} slot {:<6} classifier version {}",
                t["tenant"].as_str().unwrap_or(""),
                t["generation"],
                t["slot"],
                t["classifier_version"]
            );
        }
    }
}

/// `2026-11-25T16:30:00Z` for seconds since the epoch.
fn utc(secs: u64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: gmtime_r writes into `tm`, a properly sized out-parameter.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to a time_t and a tm.
    if unsafe { libc::gmtime_r(&t, &mut tm) }.is_null() {
        return secs.to_string();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// A list, or its first items and a count when it is long (`--json` has all).
fn summarize(items: &[String]) -> String {
    const SHOWN: usize = 8;
    if items.len() <= SHOWN {
        items.join(", ")
    } else {
        format!(
            "{} … and {} more ({} in all)",
            items[..SHOWN].join(", "),
            items.len() - SHOWN,
            items.len()
        )
    }
}

fn print_tenant(t: &TenantStats) {
    println!("  {}: {} passed, {} dropped", t.tenant, t.passed, t.dropped);
    for r in &t.rules {
        let at = if r.position == 0 {
            "default".to_owned()
        } else {
            format!("#{}", r.position)
        };
        println!("    {:<8} {:>10} packets  {}", at, r.packets, r.text);
    }
}

/// `1 rule`, `2 rules`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `bytes` for people: `768 B`, `40 KiB`, `23.7 MiB`.
fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{} KiB", bytes / 1024),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(err) => eprintln!("fluxgate: cannot encode JSON: {err}"),
    }
}

fn print_stats(stats: &InterfaceStats) {
    println!("{}:", stats.iface);
    for outcome in Outcome::ALL {
        if let Some(c) = stats.counters.outcomes.get(outcome.name()) {
            println!(
                "  {:<22} {:>12} packets {:>14} bytes",
                outcome.name(),
                c.packets,
                c.bytes
            );
        }
    }
    for reason in Malformed::ALL {
        match stats.counters.malformed.get(reason.name()) {
            Some(c) if c.packets > 0 => {
                println!(
                    "    malformed {:<22} {:>10} packets",
                    reason.name(),
                    c.packets
                )
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{plural, size};

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(768), "768 B");
        assert_eq!(size(40 * 1024 + 5), "40 KiB");
        assert_eq!(size(24_850_000), "23.7 MiB");
        assert_eq!(plural(1, "rule"), "1 rule");
        assert_eq!(plural(0, "guard packet"), "0 guard packets");
    }
}
