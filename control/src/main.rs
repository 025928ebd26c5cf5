//! The `fluxgate` command line. Conventions follow `ip`/`nft`: subcommands,
//! `-n NETNS` to act inside a named network namespace, `--json` for scripts,
//! and documented exit codes (see `fluxgate --help`).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use fluxgate_common::{Malformed, Outcome};
use fluxgate_control::{AttachOptions, InterfaceStats, MalformedVerdict, PinLocation, exit};
use fluxgate_dataplane::{AttachMode, DEFAULT_PIN_ROOT, Error};

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
    /// Show counters of one or every attached interface.
    Stats {
        /// Interface name (default: all attached interfaces).
        iface: Option<String>,
        /// Print counters as JSON.
        #[arg(long)]
        json: bool,
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
            ExitCode::from(exit::for_error(&err) as u8)
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    if let Some(netns) = &cli.netns {
        fluxgate_dataplane::netns::enter(netns)?;
    }
    let loc = PinLocation::new(&cli.bpffs, cli.netns.as_deref());
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
        Command::Stats { iface, json } => {
            let stats = fluxgate_control::stats(&loc, iface.as_deref())?;
            if json {
                print_json(&serde_json::json!({ "interfaces": stats }));
            } else if stats.is_empty() {
                println!("fluxgate is not attached to any interface");
            } else {
                stats.iter().for_each(print_stats);
            }
        }
    }
    Ok(())
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
