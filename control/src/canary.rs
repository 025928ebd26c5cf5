//! Canary applies: publish, watch the affected tenants' health for a window,
//! and roll back by itself when it regresses.
//!
//! Signals, per tenant whose tables changed, compared with a baseline window
//! measured just before publishing:
//! - pass ratio (passed / all packets of the tenant) falling by more than
//!   [`Health::max_pass_drop`];
//! - packets per second falling below [`Health::min_rate`] × baseline (only
//!   when the baseline saw at least [`Health::min_baseline_pps`]);
//! - guard probes: every guard (and witness) re-run through the *live* tables
//!   in the kernel must still agree with the reference;
//! - an optional external command (exit status 0 = healthy).
//!
//! The first regression rolls the change back (the affected tenants, or the
//! whole gateway when global rules or dispatch changed) and records why; so
//! does a [`Cancel`] (the CLI cancels on SIGINT / SIGTERM), so an interrupted
//! canary never leaves an unjudged change live.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use fluxgate_dataplane::Tables;
use serde::Serialize;

use crate::{Applied, ApplyOptions, Cancel, ControlError, Interface, RulesetSource, TableScope};

/// Health thresholds of a canary.
#[derive(Clone, Debug)]
pub struct Health {
    /// How long to watch after publishing.
    pub window: Duration,
    /// How long to measure the baseline before publishing.
    pub baseline: Duration,
    /// How often to sample.
    pub interval: Duration,
    /// Largest tolerated fall of a tenant's pass ratio (0.2 = 20 points).
    pub max_pass_drop: f64,
    /// Smallest tolerated packets/s, as a fraction of the baseline.
    pub min_rate: f64,
    /// Rates are only judged when the baseline saw at least this many packets/s.
    pub min_baseline_pps: f64,
    /// External check run every interval (through `sh -c`); non-zero = unhealthy.
    pub command: Option<String>,
    /// Longest an external check may run; one that takes longer is killed
    /// and counts as unhealthy.
    pub command_timeout: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            window: Duration::from_secs(30),
            baseline: Duration::from_secs(5),
            interval: Duration::from_millis(500),
            max_pass_drop: 0.2,
            min_rate: 0.5,
            min_baseline_pps: 10.0,
            command: None,
            command_timeout: Duration::from_secs(10),
        }
    }
}

/// How a canary ended.
#[derive(Clone, Debug, Serialize)]
pub struct CanaryOutcome {
    /// The apply.
    pub applied: Applied,
    /// True when health regressed and the change was rolled back.
    pub rolled_back: bool,
    /// Why it was rolled back.
    pub reason: Option<String>,
    /// Seconds watched.
    pub watched: f64,
}

/// (passed, dropped) packets of each tenant slot.
type Sample = BTreeMap<String, (u64, u64)>;

impl Interface {
    /// Applies `source` as [`Interface::apply`] does, then watches the health
    /// of the tenants it changed for `health.window`, rolling back on the
    /// first regression or when `cancel` is cancelled.
    pub fn apply_canary(
        &mut self,
        source: &RulesetSource,
        opts: &ApplyOptions,
        health: &Health,
        cancel: &Cancel,
    ) -> Result<CanaryOutcome, ControlError> {
        let watched: Vec<String> = self.state.live.tenants.keys().cloned().collect();
        let before = self.sample(&watched)?;
        sleep_unless_cancelled(health.baseline, cancel);
        let baseline = rates(&before, &self.sample(&watched)?, health.baseline);
        let previous = self.state.live.clone();
        let previous_generation = self.state.live_generation;
        if cancel.is_cancelled() {
            return Err(ControlError::Refused(
                "cancelled before anything was published".into(),
            ));
        }
        let applied = self.apply(source, opts)?;
        if opts.dry_run || (applied.changed.is_empty() && applied.removed.is_empty()) {
            return Ok(CanaryOutcome {
                applied,
                rolled_back: false,
                reason: None,
                watched: 0.0,
            });
        }
        let affected: Vec<String> = applied
            .changed
            .iter()
            .filter_map(|s| s.tenant().map(str::to_owned))
            .collect();
        let gateway_wide =
            applied.changed.iter().any(TableScope::is_gateway_wide) || !applied.removed.is_empty();
        let watch = tracing::info_span!("watch", tenants = affected.len()).entered();
        let started = Instant::now();
        // An error while watching is a verdict too: the change was never
        // judged healthy, so it goes back like a regression.
        let reason = match self.watch(&watched, &affected, &baseline, health, cancel) {
            Ok(reason) => reason,
            Err(e) => Some(format!("the canary could not watch: {e}")),
        };
        drop(watch);
        let watched_secs = started.elapsed().as_secs_f64();
        let Some(why) = reason else {
            self.record_canary(&applied, &affected, gateway_wide, None);
            self.note(
                "canary-passed",
                format!(
                    "generation {} healthy for {watched_secs:.1} s",
                    applied.generation
                ),
            )?;
            return Ok(CanaryOutcome {
                applied,
                rolled_back: false,
                reason: None,
                watched: watched_secs,
            });
        };
        // Back to exactly what was live before: the whole mix captured then
        // (tenants rolled back one by one earlier stay where they were), or
        // only the affected tenants when nothing gateway-wide changed and
        // none of them is new. Before the first apply that is nothing at all.
        let new_tenant = affected.iter().any(|t| !previous.tenants.contains_key(t));
        let target = if gateway_wide || new_tenant {
            previous
        } else {
            let mut m = self.state.live.clone();
            for t in &affected {
                if let Some(r) = previous.tenants.get(t) {
                    m.tenants.insert(t.clone(), *r);
                }
            }
            m
        };
        let live_generation = if gateway_wide || new_tenant {
            previous_generation
        } else {
            self.state.live_generation
        };
        self.restore(
            &target,
            live_generation,
            "canary-rollback",
            format!(
                "generation {} rolled back after {watched_secs:.1} s: {why}",
                applied.generation
            ),
        )?;
        self.record_canary(&applied, &affected, gateway_wide || new_tenant, Some(&why));
        Ok(CanaryOutcome {
            applied,
            rolled_back: true,
            reason: Some(why),
            watched: watched_secs,
        })
    }

    /// Watches `affected` for `health.window`; the first regression, or
    /// `None` when healthy throughout.
    fn watch(
        &mut self,
        watched: &[String],
        affected: &[String],
        baseline: &BTreeMap<String, (f64, Option<f64>)>,
        health: &Health,
        cancel: &Cancel,
    ) -> Result<Option<String>, ControlError> {
        let started = Instant::now();
        let mut last = self.sample(watched)?;
        let mut last_at = Instant::now();
        while started.elapsed() < health.window {
            sleep_unless_cancelled(
                health
                    .interval
                    .min(health.window.saturating_sub(started.elapsed())),
                cancel,
            );
            if cancel.is_cancelled() {
                return Ok(Some("cancelled while watching (interrupted)".into()));
            }
            let now = self.sample(watched)?;
            let now_at = Instant::now();
            let current = rates(&last, &now, now_at - last_at);
            (last, last_at) = (now, now_at);
            if let Some(why) = regression(baseline, &current, affected, health) {
                return Ok(Some(why));
            }
            if let Some(m) = self.live_preflight()?.first() {
                return Ok(Some(format!(
                    "guard probe failed on the live tables: `{}` ({}) expected {}, kernel {}",
                    m.packet, m.scope, m.expected, m.got
                )));
            }
            if let Some(cmd) = &health.command
                && let Some(why) = run_health_command(cmd, health.command_timeout, cancel)
            {
                return Ok(Some(why));
            }
        }
        Ok(None)
    }

    /// Passed / dropped packets of each of `tenants` (one counter read).
    fn sample(&mut self, tenants: &[String]) -> Result<Sample, ControlError> {
        let slots: Vec<(String, u32)> = tenants
            .iter()
            .filter_map(|t| Some((t.clone(), self.state.live.tenants.get(t)?.slot)))
            .collect();
        let indices: Vec<Option<u32>> = slots.iter().map(|(_, s)| Some(*s)).collect();
        let counts = self.pinned.tenant_counters_of(&indices)?;
        Ok(slots
            .into_iter()
            .zip(counts)
            .map(|((t, _), (p, d))| (t, (p.packets, d.packets)))
            .collect())
    }
}

/// Sleeps for `d`, waking early (within 50 ms) when `cancel` is cancelled.
fn sleep_unless_cancelled(d: Duration, cancel: &Cancel) {
    let until = Instant::now() + d;
    while !cancel.is_cancelled() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Runs the health command; `Some(why)` when it fails, times out (it is
/// killed then, with everything it started) or cannot start.
fn run_health_command(cmd: &str, timeout: Duration, cancel: &Cancel) -> Option<String> {
    use std::os::unix::process::CommandExt as _;
    // Its own process group, so a timeout kills what the shell started too
    // (a `sleep` left behind would hold our stdout open).
    let mut child = match Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Some(format!("health command `{cmd}` cannot start: {e}")),
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return None,
            Ok(Some(status)) => return Some(format!("health command `{cmd}` failed ({status})")),
            Ok(None) if started.elapsed() >= timeout || cancel.is_cancelled() => {
                if let Ok(pgid) = i32::try_from(child.id()) {
                    // SAFETY: signalling the process group we created.
                    let _best_effort = unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
                let _best_effort = child.kill();
                let _reap = child.wait();
                return Some(format!(
                    "health command `{cmd}` did not finish within {:.1} s",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Some(format!("health command `{cmd}`: {e}")),
        }
    }
}

/// Per tenant: (packets/s, pass ratio) between two samples.
fn rates(a: &Sample, b: &Sample, over: Duration) -> BTreeMap<String, (f64, Option<f64>)> {
    let secs = over.as_secs_f64().max(1e-3);
    b.iter()
        .map(|(t, &(p1, d1))| {
            let (p0, d0) = a.get(t).copied().unwrap_or((p1, d1));
            let (p, d) = (p1.saturating_sub(p0), d1.saturating_sub(d0));
            let n = p + d;
            let ratio = (n > 0).then(|| p as f64 / n as f64);
            (t.clone(), (n as f64 / secs, ratio))
        })
        .collect()
}

/// The first regression of an affected tenant, described.
fn regression(
    baseline: &BTreeMap<String, (f64, Option<f64>)>,
    current: &BTreeMap<String, (f64, Option<f64>)>,
    affected: &[String],
    health: &Health,
) -> Option<String> {
    for t in affected {
        let (Some(&(base_pps, base_ratio)), Some(&(pps, ratio))) =
            (baseline.get(t), current.get(t))
        else {
            continue;
        };
        if let (Some(b), Some(r)) = (base_ratio, ratio)
            && b - r > health.max_pass_drop
        {
            return Some(format!(
                "tenant {t}: pass ratio fell from {:.0}% to {:.0}%",
                b * 100.0,
                r * 100.0
            ));
        }
        if base_pps >= health.min_baseline_pps && pps < base_pps * health.min_rate {
            return Some(format!(
                "tenant {t}: traffic fell from {base_pps:.0} to {pps:.0} packets/s"
            ));
        }
    }
    None
}

/// Parses `500ms`, `10s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((t, "s"), |i| t.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {text:?} (like 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn a_pass_ratio_collapse_is_a_regression_and_noise_is_not() {
        let health = Health::default();
        let base: BTreeMap<_, _> = [("acme".to_owned(), (100.0, Some(0.99)))].into();
        let fine: BTreeMap<_, _> = [("acme".to_owned(), (95.0, Some(0.97)))].into();
        let bad: BTreeMap<_, _> = [("acme".to_owned(), (100.0, Some(0.10)))].into();
        let quiet: BTreeMap<_, _> = [("acme".to_owned(), (20.0, Some(0.99)))].into();
        let affected = ["acme".to_owned()];
        assert_eq!(regression(&base, &fine, &affected, &health), None);
        assert!(regression(&base, &bad, &affected, &health).is_some());
        assert!(regression(&base, &quiet, &affected, &health).is_some());
        assert_eq!(
            regression(&base, &bad, &[], &health),
            None,
            "unaffected tenants"
        );
    }
}
