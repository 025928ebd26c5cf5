//! Results for people (text) and for scripts (one compact JSON object per
//! line). The library returns values; only this module prints them.

use std::fmt::Write as _;

use fluxgate_common::{Malformed, Outcome};
use fluxgate_control::{
    Applied, Attached, CanaryOutcome, Checked, Discarded, InterfaceStats, RestoreOutcome, Restored,
    RolledBack, Status,
    capture::Captured,
    explain::{ExplainReport, Explained},
    store::Event,
    upgrade::{Version, VersionAssigned, VersionStaged},
};

/// Prints `value` as one line of JSON.
pub fn json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => println!("{text}"),
        Err(err) => eprintln!("fluxgate: cannot encode JSON: {err}"),
    }
}

/// `1 rule`, `2 rules`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `bytes` for people: `768 B`, `40 KiB`, `23.7 MiB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{} KiB", bytes / 1024),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// A list, or its first items and a count when it is long (`--json` has all).
pub fn summarize<T: ToString>(items: &[T]) -> String {
    const SHOWN: usize = 8;
    let text: Vec<String> = items.iter().take(SHOWN).map(ToString::to_string).collect();
    if items.len() <= SHOWN {
        text.join(", ")
    } else {
        format!(
            "{} … and {} more ({} in all)",
            text.join(", "),
            items.len() - SHOWN,
            items.len()
        )
    }
}

/// `2026-11-25T16:30:00Z` for seconds since the epoch.
pub fn utc(secs: u64) -> String {
    fluxgate_control::host::Utc::of(secs).rfc3339()
}

/// What `attach` did.
pub fn attached(a: &Attached) {
    if let Some(reason) = &a.fallback_reason {
        eprintln!("fluxgate: warning: {reason}; using generic mode");
    }
    println!(
        "attached to {} in {} mode (pinned at {})",
        a.iface,
        a.mode,
        a.pinned_at.display()
    );
}

/// What `restore` did for one interface.
pub fn restored(r: &Restored) {
    for w in &r.warnings {
        eprintln!("fluxgate: warning: {w}");
    }
    match r.outcome {
        RestoreOutcome::AlreadyAttached => {
            println!("{}: attached already, left alone", r.iface);
        }
        RestoreOutcome::Failed => {
            eprintln!(
                "fluxgate: {}: restore failed: {}",
                r.iface,
                r.error.as_deref().unwrap_or("?")
            );
        }
        RestoreOutcome::Restored => {
            let mode = r
                .mode
                .as_deref()
                .map_or(String::new(), |m| format!(" in {m} mode"));
            match r.generation {
                Some(g) => println!(
                    "{}: attached again{mode}; restored {} as generation {g} ({})",
                    r.iface,
                    plural(r.tenants.len(), "tenant"),
                    r.restored_from.join(", ")
                ),
                None => println!("{}: attached again{mode}; nothing was live before", r.iface),
            }
            if !r.forgotten.is_empty() {
                println!(
                    "  forgot generation(s) {:?}: their tables did not survive the reboot",
                    r.forgotten
                );
            }
        }
    }
}

/// What `check` found.
pub fn checked(dir: &std::path::Path, c: &Checked) {
    for w in &c.warnings {
        eprintln!("{w}");
    }
    println!(
        "{}: ok: {} for {}, {} {}, {} of tables",
        dir.display(),
        plural(c.rules, "rule"),
        plural(c.tenants, "tenant"),
        plural(c.guards, "guard packet"),
        if c.guards == 1 { "agrees" } else { "agree" },
        size(c.table_bytes)
    );
}

/// What `apply` did.
pub fn applied(a: &Applied) {
    for w in &a.warnings {
        eprintln!("{w}");
    }
    for r in &a.refused {
        let kept = if r.kept_live {
            "keeps its live rules"
        } else {
            "stays out (it was not live)"
        };
        eprintln!("refused tenant {}: {kept}", r.tenant);
        for d in &r.diagnostics {
            eprintln!("{}", d.rendered);
        }
    }
    let removed = |sep: &str| {
        if a.removed.is_empty() {
            String::new()
        } else {
            format!("{sep}{}", summarize(&a.removed))
        }
    };
    if a.dry_run && a.changes_anything() {
        println!(
            "{}: dry run: generation {} would change {}{}; {} preflight packets agreed; nothing published",
            a.iface,
            a.generation,
            summarize(&a.changed),
            removed(" and remove "),
            a.preflight_packets
        );
    } else if !a.changes_anything() {
        println!(
            "{}: nothing changed, generation {} stays live",
            a.iface, a.generation
        );
    } else {
        println!(
            "{}: generation {} live: {} for {}; changed {}{}; \
             {} preflight packets agreed; {} of new tables",
            a.iface,
            a.generation,
            plural(a.rules, "rule"),
            plural(a.tenants, "tenant"),
            summarize(&a.changed),
            removed("; removed "),
            a.preflight_packets,
            size(a.table_bytes)
        );
    }
}

/// How a canary ended.
pub fn canary(c: &CanaryOutcome) {
    match &c.reason {
        Some(why) => println!(
            "{}: canary: generation {} ROLLED BACK after {:.1} s: {why}",
            c.applied.iface, c.applied.generation, c.watched
        ),
        None => println!(
            "{}: canary: generation {} healthy after {:.1} s",
            c.applied.iface, c.applied.generation, c.watched
        ),
    }
}

/// What a rollback did.
pub fn rolled_back(r: &RolledBack) {
    println!(
        "{}: {} now at generation {} ({})",
        r.iface,
        r.tenant.as_deref().unwrap_or("gateway"),
        r.to,
        if r.flipped.is_empty() {
            "already live".to_owned()
        } else {
            format!("flipped {}", summarize(&r.flipped))
        }
    );
}

/// What `discard` did.
pub fn discarded(d: &Discarded) {
    if d.discarded.is_empty() {
        println!("{}: no interrupted apply to discard", d.iface);
    } else {
        println!(
            "{}: discarded interrupted generation(s) {:?}",
            d.iface, d.discarded
        );
    }
}

/// One interface's status.
pub fn status(s: &Status) {
    let opt = |v: Option<u32>| v.map_or("none".to_owned(), |v| v.to_string());
    println!(
        "{}: generation {} live (newest {}), kept {:?} (retention {}), gateway classifier version {}",
        s.iface,
        s.live_generation,
        s.generation,
        s.kept_generations,
        s.retention,
        opt(s.gateway_classifier_version)
    );
    if !s.interrupted.is_empty() {
        println!(
            "  interrupted apply: generation(s) {:?} recorded but never fully published; \
             `fluxgate apply` again to resume, or `fluxgate discard` to drop it",
            s.interrupted
        );
    }
    // One write for thousands of tenants, not one per line.
    let mut lines = String::new();
    for t in &s.tenants {
        let _ = writeln!(
            lines,
            "  {:<20} generation {:<6} slot {:<6} classifier version {}",
            t.tenant,
            t.generation,
            t.slot,
            opt(t.classifier_version)
        );
    }
    print!("{lines}");
}

/// One interface's counters.
pub fn stats(s: &InterfaceStats) {
    println!("{}:", s.iface);
    for outcome in Outcome::ALL {
        if let Some(c) = s.counters.outcomes.get(outcome.name()) {
            println!(
                "  {:<22} {:>12} packets {:>14} bytes",
                outcome.name(),
                c.packets,
                c.bytes
            );
        }
    }
    for reason in Malformed::ALL {
        match s.counters.malformed.get(reason.name()) {
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
    let b = &s.source_buckets;
    println!(
        "  per-source buckets     {:>12} of {} present, {} inserted, {} evicted",
        b.present, b.capacity, b.inserted, b.evicted
    );
    // One write for thousands of tenants and rules, not one per line.
    let mut lines = String::new();
    for t in &s.tenants {
        let _ = writeln!(
            lines,
            "  {}: {} passed, {} dropped",
            t.tenant, t.passed, t.dropped
        );
        for r in &t.rules {
            let at = if r.position == 0 {
                "default".to_owned()
            } else {
                format!("#{}", r.position)
            };
            let what = if r.limited.is_some() {
                "limited"
            } else {
                "packets"
            };
            let _ = writeln!(
                lines,
                "    {:<8} {:>10} {what:<7}  {}",
                at, r.packets, r.text
            );
        }
    }
    print!("{lines}");
}

/// One history line.
pub fn event(e: &Event) {
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

/// One captured packet.
pub fn captured(p: &Captured) {
    println!(
        "{} {} bytes{}{} dropped by {}",
        utc(p.time as u64),
        p.len,
        p.packet
            .as_deref()
            .map(|t| format!(" {t}"))
            .unwrap_or_default(),
        p.tenant
            .as_deref()
            .map(|t| format!(" to {t}"))
            .unwrap_or_default(),
        p.dropped_by
    );
}

/// Explanations of one or more packets.
pub fn explained(all: &[Explained]) {
    let several = all.len() > 1;
    for (i, e) in all.iter().enumerate() {
        if several {
            println!("--- packet {}", i + 1);
        }
        match e {
            Explained::Report(r) => report(r),
            Explained::Skipped { skipped } => println!("{skipped}"),
        }
    }
}

fn report(r: &ExplainReport) {
    print!("{r}");
}

/// Loaded classifier versions.
pub fn versions(all: &[Version]) {
    for v in all {
        println!(
            "version {:<2} program {:<6} tag {}  serves {} tenant slot(s){}",
            v.version,
            v.program_id,
            v.tag,
            v.serves_tenant_slots,
            if v.serves_gateway {
                " and the gateway"
            } else {
                ""
            }
        );
    }
}

/// What `upgrade stage` did.
pub fn staged(s: &VersionStaged) {
    println!(
        "{}: classifier version {} loaded and preflighted; it serves nobody yet",
        s.iface, s.version
    );
}

/// What `upgrade assign` did.
pub fn assigned(a: &VersionAssigned) {
    println!(
        "{}: classifier version {} now serves {}",
        a.iface,
        a.version,
        if a.tenants.is_empty() {
            "every tenant".to_owned()
        } else {
            a.tenants.join(", ")
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(768), "768 B");
        assert_eq!(size(40 * 1024 + 5), "40 KiB");
        assert_eq!(size(24_850_000), "23.7 MiB");
        assert_eq!(plural(1, "rule"), "1 rule");
        assert_eq!(plural(0, "guard packet"), "0 guard packets");
    }

    #[test]
    fn utc_is_iso_8601() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_764_088_200), "2025-11-25T16:30:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
