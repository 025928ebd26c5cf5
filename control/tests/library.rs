//! fluxgate as a library, the way a gateway daemon embeds it: rulesets held
//! in memory, typed results, a gateway in another network namespace driven
//! from the caller's own thread (which never changes namespace), a tracing
//! span per apply phase, a canary cancelled from another thread, and the
//! example daemon reloading on SIGHUP. Real XDP on a veth pair.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::MetadataExt,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Scratch, fluxgate, ok, write};
use fluxgate_control::{
    ApplyOptions, AttachOptions, Cancel, ControlError, Gateway, Health, RulesetSource, TableScope,
};
use fluxgate_testkit::net::{self, IF_B};

const GATEWAY: &str = "default pass\n";
const ACME: &str = "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000 pass\n";
const ACME_2: &str =
    "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000-7001 pass\n";
const BETA: &str = "tenant beta\nprefix 10.77.2.0/24\ndefault pass\n";

fn files(acme: &str) -> RulesetSource {
    RulesetSource::files(
        "test panel",
        [
            ("gateway.fg", GATEWAY),
            ("acme.fg", acme),
            ("beta.fg", BETA),
        ],
    )
}

/// The calling thread's network namespace (device, inode).
fn my_netns() -> (u64, u64) {
    let m = std::fs::metadata("/proc/thread-self/ns/net").expect("netns");
    (m.dev(), m.ino())
}

fn gateway(s: &Scratch, ns: &str) -> Gateway {
    Gateway::new()
        .with_bpffs(&s.pins)
        .with_state(&s.state)
        .in_netns(Some(ns))
}

#[test]
fn a_daemon_drives_a_gateway_in_another_namespace_from_memory() {
    net::require_root();
    let link = net::Link::new();
    let s = Scratch::new("lib");
    let gw = gateway(&s, link.b.name());
    let here = my_netns();

    // A first load from files held in memory.
    let loaded = gw
        .load(
            IF_B,
            &files(ACME),
            AttachOptions::default(),
            &ApplyOptions::default(),
        )
        .expect("load");
    assert!(loaded.attached.is_some(), "attached by the load");
    assert_eq!(loaded.applied.generation, 1);
    assert_eq!(loaded.applied.tenants, 2);
    assert_eq!(my_netns(), here, "the caller's thread never moved");
    assert_eq!(gw.interfaces().expect("interfaces"), [IF_B]);

    // One tenant's change, from memory: only acme's table is staged.
    let mut it = gw.open(None).expect("open the only interface");
    let applied = it
        .apply(
            &files(ACME_2),
            &ApplyOptions {
                reason: "port range".into(),
                tenants: vec!["acme".into()],
                dry_run: false,
                atomic: false,
            },
        )
        .expect("apply");
    assert_eq!(applied.changed, [TableScope::Tenant("acme".into())]);
    assert_eq!(applied.generation, 2);
    // A second writer is refused while this one holds the interface.
    assert!(matches!(gw.open(None), Err(ControlError::Busy(_))));
    let back = it.rollback(Some("acme"), None).expect("rollback");
    assert_eq!((back.to, back.tenant.as_deref()), (1, Some("acme")));
    let history = it.history(Some("acme"));
    assert_eq!(
        history.iter().map(|e| e.what.as_str()).collect::<Vec<_>>(),
        ["apply", "apply", "rollback"]
    );
    assert_eq!(
        history[1].detail,
        "port range; changed: tenant-acme; removed: none"
    );
    drop(it);

    // Typed status and stats, read-only; a tenant that is not live is "not found".
    let status = gw.status(None).expect("status");
    assert_eq!(status.len(), 1);
    let acme = status[0].tenants.iter().find(|t| t.tenant == "acme");
    assert_eq!(acme.map(|t| t.generation), Some(1));
    let stats = gw.stats(Some(IF_B), Some("beta")).expect("stats");
    assert_eq!(stats[0].tenants.len(), 1);
    let err = gw
        .stats(Some(IF_B), Some("nobody"))
        .expect_err("unknown tenant");
    assert!(matches!(err, ControlError::NotFound(_)), "{err}");
    assert_eq!(err.exit_code(), fluxgate_control::exit::NOT_FOUND);

    // A bad in-memory file is refused with its position; all or nothing
    // (`atomic`), so beta's removal in the same source does not go live either.
    let bad = RulesetSource::files(
        "panel",
        [
            ("gateway.fg", GATEWAY),
            ("acme.fg", "tenant acme\nfrobnicate\n"),
        ],
    );
    let err = gw.open(None).and_then(|mut it| {
        let atomic = ApplyOptions {
            atomic: true,
            ..ApplyOptions::default()
        };
        it.apply(&bad, &atomic)
    });
    let err = err.expect_err("refused");
    assert!(err.to_string().contains("acme.fg:2:1"), "{err}");
    assert_eq!(gw.status(None).expect("status")[0].generation, 2);

    gw.detach(IF_B).expect("detach");
    assert!(gw.interfaces().expect("interfaces").is_empty());
    assert_eq!(my_netns(), here);
}

/// Collects the names of the spans opened while it is the default subscriber.
#[derive(Clone, Default)]
struct SpanNames(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanNames {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Ok(mut names) = self.0.lock() {
            names.push(attrs.metadata().name().to_owned());
        }
    }
}

#[test]
fn an_apply_reports_each_phase_as_a_tracing_span() {
    use tracing_subscriber::prelude::*;
    net::require_root();
    let link = net::Link::new();
    let s = Scratch::new("spans");
    let gw = gateway(&s, link.b.name());
    gw.attach(IF_B, AttachOptions::default()).expect("attach");
    let names = SpanNames::default();
    let subscriber = tracing_subscriber::registry().with(names.clone());
    tracing::subscriber::with_default(subscriber, || {
        gw.open(None)
            .and_then(|mut it| it.apply(&files(ACME), &ApplyOptions::default()))
            .expect("apply");
    });
    let seen = names.0.lock().expect("names").clone();
    for phase in [
        "apply",
        "read",
        "parse",
        "validate",
        "compile",
        "stage",
        "preflight",
        "publish",
    ] {
        assert!(
            seen.iter().any(|n| n == phase),
            "no `{phase}` span in {seen:?}"
        );
    }
}

#[test]
fn a_cancelled_canary_rolls_back_and_says_why() {
    net::require_root();
    let link = net::Link::new();
    let s = Scratch::new("cancel");
    let gw = gateway(&s, link.b.name());
    gw.load(
        IF_B,
        &files(ACME),
        AttachOptions::default(),
        &ApplyOptions::default(),
    )
    .expect("load");
    let cancel = Cancel::new();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            cancel.cancel();
        })
    };
    let health = Health {
        window: Duration::from_secs(30),
        baseline: Duration::from_millis(100),
        ..Health::default()
    };
    let started = std::time::Instant::now();
    let outcome = gw
        .open(None)
        .and_then(|mut it| {
            it.apply_canary(&files(ACME_2), &ApplyOptions::default(), &health, &cancel)
        })
        .expect("canary");
    canceller.join().expect("canceller");
    assert!(started.elapsed() < Duration::from_secs(10), "ended early");
    assert!(outcome.rolled_back, "{outcome:?}");
    assert!(
        outcome
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("cancelled")),
        "{outcome:?}"
    );
    let status = gw.status(None).expect("status");
    let acme = status[0].tenants.iter().find(|t| t.tenant == "acme");
    assert_eq!(
        acme.map(|t| t.generation),
        Some(1),
        "acme back on generation 1"
    );
}

#[test]
fn the_example_daemon_reloads_on_sighup_and_keeps_the_live_rules_on_a_bad_file() {
    net::require_root();
    let link = net::Link::new();
    let s = Scratch::new("daemon");
    write(&s.rules, "gateway.fg", GATEWAY);
    write(&s.rules, "acme.fg", ACME);
    // `cargo test` checks examples but does not always link them: build it,
    // from the workspace root like `cargo test` (so features unify the same
    // way and nothing else is rebuilt).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let built = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--quiet", "--example", "daemon"])
        .output()
        .expect("cargo");
    assert!(
        built.status.success(),
        "cargo build --example daemon: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let examples = std::env::current_exe()
        .expect("test binary")
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("daemon"))
        .expect("target dir");
    let mut daemon = Command::new(&examples)
        .arg(IF_B)
        .arg(&s.rules)
        .arg(link.b.name())
        .env("FLUXGATE_BPFFS", &s.pins)
        .env("FLUXGATE_STATE", &s.state)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let mut lines = BufReader::new(daemon.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    let generation = |s: &Scratch| -> u64 {
        let out = ok(fluxgate(s, &["-n", link.b.name(), "status", "--json"]));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        json["interfaces"][0]["generation"]
            .as_u64()
            .expect("generation")
    };
    let first = next();
    assert!(
        first.starts_with("ready"),
        "the daemon loaded the ruleset: {first:?} {:?}",
        daemon.try_wait()
    );
    assert_eq!(generation(&s), 1);

    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -HUP");
    };
    write(&s.rules, "acme.fg", ACME_2);
    hup(daemon.id());
    assert_eq!(next(), "reload handled");
    assert_eq!(generation(&s), 2, "the changed file went live");

    write(&s.rules, "acme.fg", "tenant acme\nfrobnicate\n");
    hup(daemon.id());
    assert_eq!(next(), "reload handled");
    assert_eq!(generation(&s), 2, "a refused reload changes nothing");

    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let status = daemon.wait().expect("daemon exits");
    assert!(status.success(), "clean stop: {status}");
    // The interface keeps filtering after the daemon is gone.
    assert_eq!(generation(&s), 2);
}

#[test]
fn the_man_page_and_completions_come_from_the_cli_definition() {
    let s = Scratch::new("man");
    let dir = s.rules.join("dist");
    let dir_text = dir.display().to_string();
    ok(fluxgate(&s, &["generate", "man", &dir_text]));
    ok(fluxgate(&s, &["generate", "completions", &dir_text]));
    let page = std::fs::read_to_string(dir.join("fluxgate.1")).expect("man page");
    for word in ["apply", "rollback", "capture", "netns", "json"] {
        assert!(page.contains(word), "man page mentions {word}");
    }
    let bash = std::fs::read_to_string(dir.join("fluxgate.bash")).expect("bash completions");
    assert!(bash.contains("rollback") && bash.contains("--tenant"));
    assert!(dir.join("_fluxgate").exists() && dir.join("fluxgate.fish").exists());
}

#[test]
fn stats_read_in_one_pass_equal_the_counters_read_one_by_one() {
    use fluxgate_dataplane::Tables;
    net::require_root();
    let link = net::Link::new();
    let s = Scratch::new("batch-stats");
    let gw = gateway(&s, link.b.name());
    // 600 tenants of two rules each; traffic to three of them.
    let mut files = vec![("gateway.fg".to_owned(), GATEWAY.to_owned())];
    for i in 0..600u32 {
        files.push((
            format!("t{i}.fg"),
            format!(
                "tenant t{i}\nprefix 10.{}.{}.0/24\ndefault drop\n\
                 proto udp dport 7000 pass\nproto udp dport 7001 count\n",
                80 + i / 256,
                i % 256
            ),
        ));
    }
    let source = RulesetSource::files("many", files);
    gw.load(
        IF_B,
        &source,
        AttachOptions::default(),
        &ApplyOptions::default(),
    )
    .expect("load");
    for (i, port, n) in [(0u32, 7000, 5), (1, 7001, 7), (599, 7000, 9)] {
        let dst = std::net::Ipv4Addr::new(10, (80 + i / 256) as u8, (i % 256) as u8, 2);
        link.add_b_address(dst);
        net::udp_exchange_to(&link, dst, port, n, 16);
    }
    let mut it = gw.open_read(None).expect("open");
    let batch = it.tenant_stats(None).expect("stats");
    assert_eq!(batch.len(), 601, "gateway and every tenant");
    let slots = it.live_counters().expect("slots");
    let status = it.status().expect("status");
    for t in &batch {
        let index = status
            .tenants
            .iter()
            .find(|x| x.tenant == t.tenant)
            .map(|x| x.slot);
        let (p, d) = it.pinned_mut().tenant_counters(index).expect("one tenant");
        assert_eq!(
            (t.passed, t.dropped),
            (p.packets, d.packets),
            "{}",
            t.tenant
        );
        for r in &t.rules {
            let slot = slots
                .iter()
                .find(|s| s.scope.as_str() == t.tenant && s.position == r.position)
                .expect("slot")
                .slot;
            let one = it.pinned_mut().rule_counters(slot, 1).expect("one rule")[0];
            assert_eq!(
                (r.packets, r.bytes),
                (one.packets, one.bytes),
                "{}#{}",
                t.tenant,
                r.position
            );
        }
    }
    let hits = |name: &str, position: u32| {
        batch
            .iter()
            .find(|t| t.tenant == name)
            .and_then(|t| t.rules.iter().find(|r| r.position == position))
            .map(|r| r.packets)
    };
    assert_eq!(hits("t0", 1), Some(5));
    assert_eq!(hits("t1", 2), Some(7), "count rule");
    assert_eq!(hits("t599", 1), Some(9));
}
