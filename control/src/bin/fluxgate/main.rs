//! The `fluxgate` command line: a thin shell over `fluxgate-control`.
//! Conventions follow `ip`/`nft`: subcommands, `-n NETNS` to act inside a
//! named network namespace, `-j`/`--json` for scripts (one compact object
//! per line), and documented exit codes (see `fluxgate --help`).
//!
//! This file only dispatches: the flags are defined in `args`, results are
//! printed by `render`, logging and progress are set up by `progress`.

mod args;
mod fleet;
mod progress;
mod render;
mod serve;

use std::{io::Write as _, process::ExitCode};

use args::{ApplyArgs, AttachArgs, CaptureArgs, Cli, Command, Generated, UpgradeStep};
use clap::{CommandFactory, Parser};
use fluxgate_control::{
    Cancel, ControlError, Gateway, Interface, RulesetSource,
    capture::CaptureOptions,
    classify::{self, RuleSource},
    exit, host,
    stats::StatsReport,
    status::StatusReport,
};

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our output
    // goes away (`fluxgate status | head`) instead of panicking on EPIPE.
    // SAFETY: restoring the default disposition of a signal, before any thread.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    progress::init(cli.verbose, cli.json);
    // `agent` and `fleet` (etcd, async) have their own shell and errors.
    if let Some(code) = fleet::dispatch(&cli) {
        return code;
    }
    match run(&cli) {
        Ok(()) => ExitCode::from(exit::OK as u8),
        Err(err) => {
            // Scripts that asked for JSON get the error as JSON too (with
            // each ruleset problem's file, line and column), on one line so
            // that `capture --json`'s stream stays one object per line;
            // people get text. A rolled-back canary's report, and a partial
            // apply's (with its refused tenants), are already out.
            let reported = matches!(
                err,
                ControlError::CanaryRolledBack(_) | ControlError::PartiallyApplied(_)
            );
            if cli.json && !reported {
                println!("{}", err.to_json());
            }
            eprintln!("fluxgate: {err}");
            ExitCode::from(err.exit_code() as u8)
        }
    }
}

/// Prints `value` as JSON when asked, else as `text` does.
fn show<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce(&T)) {
    if json {
        render::json(value);
    } else {
        text(value);
    }
}

fn run(cli: &Cli) -> Result<(), ControlError> {
    // The metrics endpoint listens in the caller's namespace (where the
    // scraper is), whatever namespace's interfaces it reports.
    if let Command::Serve {
        metrics,
        status,
        tokens,
    } = &cli.command
    {
        return serve::serve(
            cli.json,
            &gateway(cli)?,
            *metrics,
            status.zip(tokens.as_deref()),
        );
    }
    let gw = gateway(cli)?;
    let json = cli.json;
    match &cli.command {
        Command::Attach { iface, attach } => {
            show(json, &gw.attach(iface, attach.options())?, render::attached);
        }
        Command::Detach { iface } => show(json, &gw.detach(iface)?, |d| {
            println!("detached from {}", d.iface);
        }),
        Command::Restore { iface } => {
            let restored = gw.restore(iface.as_deref())?;
            show(
                json,
                &serde_json::json!({ "interfaces": &restored }),
                |_| {
                    if restored.is_empty() {
                        println!("no journal to restore from");
                    }
                    restored.iter().for_each(render::restored);
                },
            );
            // Every interface was tried; the first failure is the exit code.
            if let Some(failed) = restored.iter().find(|r| r.error.is_some()) {
                std::process::exit(failed.exit_code.unwrap_or(fluxgate_control::exit::FAILURE));
            }
        }
        Command::Stats { iface, tenant } => {
            let interfaces = gw.stats(iface.as_deref(), tenant.as_deref())?;
            if json {
                render::json(&StatsReport { interfaces });
            } else if interfaces.is_empty() {
                println!("fluxgate is not attached to any interface");
            } else {
                interfaces.iter().for_each(render::stats);
            }
        }
        Command::Apply(args) => {
            let mut it = gw.open(args.iface.as_deref())?;
            apply(&mut it, args, json)?;
        }
        Command::Load {
            attach,
            apply: args,
        } => load(&gw, attach, args, json)?,
        Command::Check { dir } => {
            let checked = fluxgate_control::check(&RulesetSource::dir(dir))?;
            show(json, &checked, |c| render::checked(dir, c));
        }
        Command::Diff { dir, iface } => {
            let report = gw.diff(&RulesetSource::dir(dir), iface.as_deref())?;
            show(json, &report, |r| print!("{r}"));
        }
        Command::Rollback { iface, tenant, to } => {
            let done = gw
                .open(iface.as_deref())?
                .rollback(tenant.as_deref(), *to)?;
            show(json, &done, render::rolled_back);
        }
        Command::Status { iface } => {
            let interfaces = gw.status(iface.as_deref())?;
            if json {
                render::json(&StatusReport { interfaces });
            } else if interfaces.is_empty() {
                println!("fluxgate is not attached to any interface");
            } else {
                interfaces.iter().for_each(render::status);
            }
        }
        Command::History { iface, tenant } => {
            let events = gw.open_read(iface.as_deref())?.history(tenant.as_deref());
            show(json, &events, |e| e.iter().for_each(render::event));
        }
        Command::Upgrade { step } => upgrade(&gw, step, json)?,
        Command::Capture(args) => capture(&gw, args, json)?,
        Command::Explain {
            iface,
            packet,
            pcap,
            generation,
        } => {
            let it = gw.open_read(iface.as_deref())?;
            let all = match (packet, pcap) {
                (Some(text), _) => {
                    let p = text
                        .parse()
                        .map_err(|e: fluxgate_ruleset::PacketParseError| {
                            ControlError::Usage(e.to_string())
                        })?;
                    vec![fluxgate_control::explain::Explained::Report(Box::new(
                        it.explain(&p, *generation)?,
                    ))]
                }
                (None, Some(file)) => it.explain_pcap(file, *generation)?,
                (None, None) => {
                    return Err(ControlError::Usage("--packet or --pcap is required".into()));
                }
            };
            match (json, all.len()) {
                (true, 1) => render::json(&all[0]),
                (true, _) => render::json(&all),
                (false, _) => render::explained(&all),
            }
        }
        Command::Discard { iface } => {
            let done = gw.open(iface.as_deref())?.discard_interrupted()?;
            show(json, &done, render::discarded);
        }
        Command::Classify {
            ruleset,
            classbench,
            trace,
            engine,
        } => {
            let source = match (ruleset, classbench) {
                (Some(dir), _) => RuleSource::Dir(dir),
                (None, Some(file)) => RuleSource::ClassBench(file),
                (None, None) => {
                    return Err(ControlError::Usage(
                        "--ruleset or --classbench is required".into(),
                    ));
                }
            };
            let classified = classify::classify(source, trace, (*engine).into())?;
            show(json, &classified, |c| {
                c.packets.iter().for_each(|d| println!("{}", d.decided_by));
            });
        }
        Command::Generate { what, dir } => generate(*what, dir)?,
        Command::Serve { .. } => unreachable!("handled above"),
        Command::Agent(_) | Command::Fleet(_) => unreachable!("handled by fleet::dispatch"),
    }
    Ok(())
}

/// The gateway the global options name. A named namespace must exist
/// (exit 4 otherwise), whatever the command.
fn gateway(cli: &Cli) -> Result<Gateway, ControlError> {
    if let Some(ns) = &cli.netns {
        host::in_netns(Some(ns), || Ok(()))?;
    }
    Ok(Gateway::new()
        .with_bpffs(&cli.bpffs)
        .with_state(&cli.state)
        .in_netns(cli.netns.clone()))
}

/// Cancels `cancel` on SIGINT and SIGTERM (a canary then rolls back and a
/// capture switches off before the process ends).
fn cancel_on_signals() -> Cancel {
    let cancel = Cancel::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, cancel.flag()) {
            tracing::warn!("cannot watch signal {sig}: {e}");
        }
    }
    cancel
}

/// `apply` on an opened interface, with a canary when asked.
fn apply(it: &mut Interface, args: &ApplyArgs, json: bool) -> Result<(), ControlError> {
    let source = RulesetSource::dir(&args.dir);
    let opts = args.options();
    let Some(health) = args.health() else {
        let applied = it.apply(&source, &opts)?;
        show(json, &applied, render::applied);
        return partial(&applied);
    };
    if !json {
        println!(
            "{}: measuring a {:.1} s baseline, then watching for {:.1} s",
            it.name(),
            health.baseline.as_secs_f64(),
            health.window.as_secs_f64()
        );
    }
    let outcome = it.apply_canary(&source, &opts, &health, &cancel_on_signals())?;
    show(json, &outcome, render::canary);
    if outcome.rolled_back {
        return Err(ControlError::CanaryRolledBack(
            outcome.reason.unwrap_or_default(),
        ));
    }
    partial(&outcome.applied)
}

/// Exit code 10 when some tenants were refused while the others applied.
fn partial(applied: &fluxgate_control::Applied) -> Result<(), ControlError> {
    if !applied.partial() {
        return Ok(());
    }
    let names: Vec<&str> = applied.refused.iter().map(|r| r.tenant.as_str()).collect();
    Err(ControlError::PartiallyApplied(format!(
        "refused tenant(s) {}: they keep their live rules",
        names.join(", ")
    )))
}

/// `load`: `attach` IFACE unless fluxgate is attached there, then `apply`.
fn load(
    gw: &Gateway,
    attach: &AttachArgs,
    args: &ApplyArgs,
    json: bool,
) -> Result<(), ControlError> {
    let iface = match &args.iface {
        Some(i) => i.clone(),
        None if gw.interfaces()?.is_empty() => {
            return Err(ControlError::Usage(
                "fluxgate is attached nowhere yet: name the interface to load onto".into(),
            ));
        }
        None => gw.one_interface(None)?,
    };
    let source = RulesetSource::dir(&args.dir);
    let was_attached = gw.interfaces()?.contains(&iface);
    if was_attached && attach.any_given() {
        eprintln!(
            "fluxgate: warning: {iface} is attached already, so --mode, --malformed, \
             --pool-cells, --tenant-slots and --counter-slots are not applied (they take \
             effect on `attach`; detach first to change them)"
        );
    }
    // What was done, as it is done; with --json, the apply's result as
    // `apply --json` prints it.
    let result = gw.load_with(
        &iface,
        &source,
        attach.options(),
        args.dry_run,
        |it, done| {
            if let Some(done) = done
                && !json
            {
                render::attached(done);
            }
            apply(it, args, json)
        },
    );
    match &result {
        Err(_) if !was_attached && !gw.interfaces()?.contains(&iface) => {
            eprintln!("fluxgate: {iface}: the load failed; detached again, as before");
        }
        Ok(loaded) if loaded.detached_again && !json => {
            println!("detached from {iface} again (dry run)");
        }
        _ => {}
    }
    result.map(|_| ())
}

fn upgrade(gw: &Gateway, step: &UpgradeStep, json: bool) -> Result<(), ControlError> {
    match step {
        UpgradeStep::Stage { iface } => {
            let done = gw.open(iface.as_deref())?.stage_version()?;
            show(json, &done, render::staged);
        }
        UpgradeStep::Assign {
            version,
            iface,
            tenant,
        } => {
            let done = gw.open(iface.as_deref())?.assign(*version, tenant)?;
            show(json, &done, render::assigned);
        }
        UpgradeStep::List { iface } => {
            let versions = gw.open_read(iface.as_deref())?.versions()?;
            show(json, &versions, |v| render::versions(v));
        }
        UpgradeStep::Unload { version, iface } => {
            let done = gw.open(iface.as_deref())?.unload_version(*version)?;
            show(json, &done, |d| {
                println!("{}: classifier version {} unloaded", d.iface, d.version);
            });
        }
        UpgradeStep::Dispatcher { iface } => {
            let done = gw.open(iface.as_deref())?.replace_dispatcher()?;
            show(json, &done, |d| {
                println!(
                    "{}: dispatcher replaced (program {})",
                    d.iface, d.program_id
                );
            });
        }
    }
    Ok(())
}

fn capture(gw: &Gateway, args: &CaptureArgs, json: bool) -> Result<(), ControlError> {
    let it = gw.open_read(args.iface.as_deref())?;
    let opts = CaptureOptions {
        tenant: args.tenant.clone(),
        rule: args.rule.clone(),
        sample: args.sample,
        rate: args.rate,
        snaplen: args.snaplen,
        count: args.count,
        duration: args.duration,
    };
    if !json {
        println!(
            "{}: capturing dropped packets for up to {:.0} s{}",
            it.name(),
            args.duration.as_secs_f64(),
            args.count
                .map(|c| format!(" or {c} packets"))
                .unwrap_or_default()
        );
        let _ = std::io::stdout().flush();
    }
    let n = it.capture(&opts, args.write.as_deref(), &cancel_on_signals(), |p| {
        show(json, p, render::captured);
        std::ops::ControlFlow::Continue(())
    })?;
    if !json {
        println!(
            "{}: {n} packet(s) captured{}",
            it.name(),
            args.write
                .as_ref()
                .map(|w| format!(", written to {}", w.display()))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `generate man|completions DIR`.
fn generate(what: Generated, dir: &std::path::Path) -> Result<(), ControlError> {
    let io = |e: std::io::Error| ControlError::Io(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut cmd = Cli::command();
    match what {
        Generated::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page).map_err(io)?;
            std::fs::write(dir.join("fluxgate.1"), page).map_err(io)?;
        }
        Generated::Completions => {
            use clap_complete::Shell;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut cmd, "fluxgate", dir).map_err(io)?;
            }
        }
    }
    Ok(())
}
