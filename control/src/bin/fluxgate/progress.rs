//! Logging and progress for the command line: a `tracing` subscriber on
//! stderr (`-v`, `RUST_LOG`; aya's `log` records included), and, on a
//! terminal, a progress line for an apply that takes longer than a second:
//! the phase it is in and how long it has run. Never in `--json` mode.

use std::{
    io::{IsTerminal, Write as _},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tracing::{Subscriber, span};
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::Context, prelude::*, registry::LookupSpan};

/// Spans of an apply that are shown as its phases.
const PHASES: &[&str] = &[
    "read",
    "parse",
    "validate",
    "compile",
    "stage",
    "preflight",
    "publish",
    "watch",
];

/// How long an apply runs before its progress is shown.
const QUIET_FOR: Duration = Duration::from_secs(1);

/// [`QUIET_FOR`]; a test build (feature `fault-injection`) may shorten it
/// with `FLUXGATE_PROGRESS_AFTER_MS`, so its test does not depend on an apply
/// being slow.
fn quiet_for() -> Duration {
    #[cfg(feature = "fault-injection")]
    if let Some(ms) = std::env::var("FLUXGATE_PROGRESS_AFTER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Duration::from_millis(ms);
    }
    QUIET_FOR
}

/// The apply under way: when it started and the phase it is in.
#[derive(Default)]
struct Current {
    apply: Option<Instant>,
    phase: Option<(&'static str, Instant)>,
    shown: bool,
}

/// Installs the subscriber; `verbose` is the count of `-v`.
pub fn init(verbose: u8, json: bool) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let fmt_layer = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(verbose > 1)
        .with_span_events(if verbose > 0 {
            fmt::format::FmtSpan::CLOSE
        } else {
            fmt::format::FmtSpan::NONE
        })
        .with_filter(filter);
    let progress = (!json && verbose == 0 && std::io::stderr().is_terminal()).then(Progress::start);
    let registry = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(progress);
    if registry.try_init().is_err() {
        eprintln!("fluxgate: warning: a logger was installed already");
    }
}

/// The progress line: a layer that follows the apply's phase spans, and a
/// thread that redraws the line every 200 ms once the apply runs > 1 s.
struct Progress {
    current: Arc<Mutex<Current>>,
}

impl Progress {
    fn start() -> Progress {
        let current = Arc::new(Mutex::new(Current::default()));
        let shared = Arc::clone(&current);
        let spawned = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let quiet_for = quiet_for();
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    let Ok(mut c) = shared.lock() else { return };
                    let (Some(started), Some((phase, since))) = (c.apply, c.phase) else {
                        continue;
                    };
                    if started.elapsed() < quiet_for {
                        continue;
                    }
                    c.shown = true;
                    eprint!(
                        "\r\x1b[2Kfluxgate: apply: {phase} ({:.1} s, {:.1} s in all)",
                        since.elapsed().as_secs_f64(),
                        started.elapsed().as_secs_f64()
                    );
                    let _ = std::io::stderr().flush();
                }
            });
        if spawned.is_err() {
            tracing::debug!("no progress thread");
        }
        Progress { current }
    }

    fn with(&self, f: impl FnOnce(&mut Current)) {
        if let Ok(mut c) = self.current.lock() {
            f(&mut c);
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Progress {
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let name = span.name();
        self.with(|c| {
            if name == "apply" {
                c.apply = Some(Instant::now());
            } else if let Some(phase) = PHASES.iter().find(|p| **p == name) {
                c.phase = Some((phase, Instant::now()));
            }
        });
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if span.name() == "apply" {
            self.with(|c| {
                if c.shown {
                    // Clear the progress line before the result is printed.
                    eprint!("\r\x1b[2K");
                }
                *c = Current::default();
            });
        }
    }
}
