//! A small gateway daemon that embeds fluxgate, the way a hosting provider's
//! own daemon (or fluxgate's fleet agent) does: no CLI in between.
//!
//! ```sh
//! cargo run --example daemon -- IFACE RULESET_DIR [NETNS]
//! kill -HUP <pid>     # re-read RULESET_DIR and apply what changed
//! kill -TERM <pid>    # stop; the interface keeps filtering (state is pinned)
//! ```
//!
//! `FLUXGATE_BPFFS` and `FLUXGATE_STATE` move the pins and the journal, as
//! they do for the `fluxgate` CLI.
//!
//! At start it loads RULESET_DIR onto IFACE (attaching first if needed; a
//! failed first load leaves the interface as it was). On SIGHUP it applies
//! the directory again: only the tenants whose tables changed are staged,
//! preflighted and flipped, and a refused change leaves the live rules as
//! they were. Every step is reported through `tracing` (`RUST_LOG=debug`
//! shows each apply phase with its duration).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use fluxgate_control::{ApplyOptions, AttachOptions, Gateway, RulesetSource};
use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};
use tracing_subscriber::{EnvFilter, fmt::format::FmtSpan};

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_span_events(FmtSpan::CLOSE)
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(iface), Some(dir)) = (args.next(), args.next().map(PathBuf::from)) else {
        bail!("usage: daemon IFACE RULESET_DIR [NETNS]");
    };
    // Where state lives: the CLI's variables, so `fluxgate status` sees it.
    let mut gateway = Gateway::new().in_netns(args.next());
    if let Some(dir) = std::env::var_os("FLUXGATE_BPFFS") {
        gateway = gateway.with_bpffs(dir);
    }
    if let Some(dir) = std::env::var_os("FLUXGATE_STATE") {
        gateway = gateway.with_state(dir);
    }
    let source = RulesetSource::dir(&dir);
    // Signals first, so a HUP sent right after start is not lost.
    let mut signals = Signals::new([SIGHUP, SIGINT, SIGTERM]).context("signals")?;

    let loaded = gateway
        .load(&iface, &source, AttachOptions::default(), &reason("start"))
        .with_context(|| format!("loading {} onto {iface}", dir.display()))?;
    tracing::info!(
        iface,
        generation = loaded.applied.generation,
        attached = loaded.attached.is_some(),
        tenants = loaded.applied.tenants,
        "ruleset live"
    );
    println!("ready: pid {}", std::process::id());

    for signal in signals.forever() {
        if signal != SIGHUP {
            tracing::info!(
                iface,
                "stopping; {iface} keeps filtering with its pinned state"
            );
            break;
        }
        // Open per change: the lock is held only while changing.
        let result = gateway
            .open(Some(&iface))
            .and_then(|mut it| it.apply(&source, &reason("SIGHUP reload")));
        if let Ok(applied) = &result {
            // A customer's bad file is refused alone; the others went live.
            for r in &applied.refused {
                tracing::warn!(
                    iface,
                    tenant = r.tenant,
                    kept_live = r.kept_live,
                    "tenant refused: {:?}",
                    r.diagnostics
                );
            }
        }
        match result {
            Ok(applied) if applied.changes_anything() => tracing::info!(
                iface,
                generation = applied.generation,
                changed = ?applied.changed,
                removed = ?applied.removed,
                "reloaded"
            ),
            Ok(applied) => {
                tracing::info!(
                    iface,
                    generation = applied.generation,
                    "reload: nothing changed"
                );
            }
            // The live rules are as they were: report, keep serving.
            Err(err) => {
                tracing::error!(iface, exit_code = err.exit_code(), "reload refused: {err}")
            }
        }
        println!("reload handled");
    }
    Ok(())
}

fn reason(why: &str) -> ApplyOptions {
    ApplyOptions {
        reason: format!("daemon: {why}"),
        ..ApplyOptions::default()
    }
}
