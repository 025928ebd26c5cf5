//! The `fluxgate` command line. Conventions follow `ip`/`nft`: subcommands,
//! `-n NETNS` to act inside a named network namespace, `--json` for scripts,
//! and documented exit codes (see `fluxgate --help`).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use fluxgate_common::{Malformed, Outcome};
use fluxgate_control::{
    AttachOptions, ControlError, InterfaceStats, MalformedVerdict, PinLocation, exit,
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
                  6 already attached."
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
        /// XDP mode: native with generic fallback (auto), native only, or generic.
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
        /// Verdict for malformed packets.
        #[arg(long, value_enum, default_value_t = MalformedVerdict::Drop)]
        malformed: MalformedVerdict,
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
    /// First load of a ruleset directory onto an attached interface.
    Load {
        /// Directory with gateway.fg and one <tenant>.fg per tenant.
        dir: PathBuf,
        /// Interface (attached with `fluxgate attach`).
        iface: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print, for each packet of a ClassBench trace, the rule that decides it:
    /// the 1-based filter number (0: none) with --classbench, `scope#N` or
    /// `scope default` with --ruleset.
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
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Auto,
    Native,
    Generic,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::OK as u8),
        Err(err) => {
            eprintln!("fluxgate: {err}");
            ExitCode::from(err.exit_code() as u8)
        }
    }
}

fn run(cli: Cli) -> Result<(), ControlError> {
    if let Some(netns) = &cli.netns {
        fluxgate_dataplane::netns::enter(netns)?;
    }
    let loc = PinLocation::new(&cli.bpffs, cli.netns.as_deref());
    let state = StateDir::new(&cli.state, cli.netns.as_deref());
    match cli.command {
        Command::Attach {
            iface,
            mode,
            malformed,
            json,
        } => {
            let mode = match mode {
                Mode::Auto => AttachMode::Auto,
                Mode::Native => AttachMode::Native,
                Mode::Generic => AttachMode::Generic,
            };
            let attached =
                fluxgate_control::attach(&loc, &iface, AttachOptions { mode, malformed })?;
            if json {
                print_json(&attached);
            } else {
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
        }
        Command::Detach { iface } => {
            fluxgate_control::detach(&loc, &iface)?;
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
        Command::Load { dir, iface, json } => {
            let loaded = rules::load(&loc, &state, &dir, &iface)?;
            if json {
                print_json(&loaded);
            } else {
                for w in &loaded.warnings {
                    eprintln!("{w}");
                }
                println!(
                    "loaded {} rules for {} tenants onto {} ({} KiB of tables)",
                    loaded.rules,
                    loaded.tenants,
                    loaded.iface,
                    loaded.table_bytes / 1024
                );
            }
        }
        Command::Classify {
            ruleset,
            classbench,
            trace,
            engine,
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
            for line in rules::classify(source, &trace, engine)? {
                println!("{line}");
            }
        }
    }
    Ok(())
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
