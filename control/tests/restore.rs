//! After a reboot (bpffs emptied, journal kept) `fluxgate restore` makes the
//! gateway filter again exactly as before, per-tenant rollbacks included;
//! after the journal is lost (pins kept) no change may reuse a tenant slot
//! that dispatch still leads to. Real XDP on a veth pair.

mod common;

use std::net::Ipv4Addr;

use common::{Scratch, fluxgate, ok, write};
use fluxgate_control::Gateway;
use fluxgate_testkit::net::{self, IF_B, Link};

const ACME: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
const BETA: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 2);
const GAMMA: Ipv4Addr = Ipv4Addr::new(10, 77, 3, 2);

const GATEWAY: &str = "default pass\n";
const ACME_1: &str = "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000 pass\n";
const ACME_2: &str =
    "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000-7001 pass\n";
const BETA_1: &str = "tenant beta\nprefix 10.77.2.0/24\ndefault pass\nproto udp dport 7000 drop\n";
const BETA_2: &str =
    "tenant beta\nprefix 10.77.2.0/24\ndefault pass\nproto udp dport { 7000, 7002 } drop\n";
const GAMMA_1: &str = "tenant gamma\nprefix 10.77.3.0/24\ndefault drop\n";

const N: usize = 20;

/// (destination, port) pairs whose verdicts tell the rulesets apart.
const PROBES: [(Ipv4Addr, u16); 6] = [
    (ACME, 7000),
    (ACME, 7001),
    (ACME, 7002),
    (BETA, 7000),
    (BETA, 7001),
    (BETA, 7002),
];

/// Packets of `N` that get through, per probe.
fn verdicts(link: &Link) -> Vec<usize> {
    PROBES
        .iter()
        .map(|(dst, port)| net::udp_exchange_to(link, *dst, *port, N, 16))
        .collect()
}

/// What a reboot does to fluxgate: the pins (and with them the attachment)
/// are gone, the journal stays. The kernel releases an unpinned link a
/// moment after the unlink: wait until XDP is really off the interface.
fn reboot(s: &Scratch, ns: &str) {
    std::fs::remove_dir_all(s.pins.join(ns).join(IF_B)).expect("remove the pins");
    let detached = net::eventually(std::time::Duration::from_secs(10), || {
        std::process::Command::new("ip")
            .args(["-n", ns, "link", "show", IF_B])
            .output()
            .is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).contains("xdp"))
    });
    assert!(detached, "XDP left {IF_B}");
}

fn json(out: std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&ok(out).stdout).expect("JSON")
}

/// `(tenant, generation)` of every live tenant, and the kept generations.
fn live(s: &Scratch, ns: &str) -> (Vec<(String, u64)>, serde_json::Value) {
    let status = json(fluxgate(s, &["-n", ns, "status", IF_B, "--json"]));
    let st = &status["interfaces"][0];
    let tenants = st["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().expect("name").to_owned(),
                t["generation"].as_u64().expect("generation"),
            )
        })
        .collect();
    (tenants, st["kept_generations"].clone())
}

#[test]
fn restore_after_a_reboot_filters_exactly_as_before_and_twice_changes_nothing() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    link.add_b_address(BETA);
    let s = Scratch::new("restore");
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    write(&s.rules, "gateway.fg", GATEWAY);
    write(&s.rules, "acme.fg", ACME_1);
    write(&s.rules, "beta.fg", BETA_1);
    ok(fluxgate(
        &s,
        &[
            "-n",
            ns,
            "load",
            &rules,
            IF_B,
            "--malformed",
            "pass",
            "--pool-cells",
            "8192",
            "--tenant-slots",
            "70000",
            "--counter-slots",
            "4096",
            "--source-buckets",
            "3000",
        ],
    ));
    write(&s.rules, "acme.fg", ACME_2);
    write(&s.rules, "beta.fg", BETA_2);
    ok(fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]));
    // acme back to generation 1, beta stays at 2: live is a mix.
    ok(fluxgate(
        &s,
        &["-n", ns, "rollback", IF_B, "--tenant", "acme"],
    ));
    let (tenants, _) = live(&s, ns);
    assert_eq!(tenants, [("acme".into(), 1), ("beta".into(), 2)]);
    let before = verdicts(&link);
    // acme 7000 pass, 7001 drop (generation 1, not 2), 7002 drop;
    // beta 7000 drop, 7001 pass, 7002 drop (generation 2).
    assert_eq!(before, [N, 0, 0, 0, N, 0], "the mix is live");

    // A reboot: bpffs is emptied (removing the pinned link detaches the
    // program), the journal stays.
    reboot(&s, ns);
    assert_eq!(verdicts(&link), [N; 6], "unfiltered after the reboot");
    let status = json(fluxgate(&s, &["-n", ns, "status", "--json"]));
    assert_eq!(status["interfaces"], serde_json::json!([]), "{status}");

    let started = std::time::Instant::now();
    let restored = json(fluxgate(&s, &["-n", ns, "restore", "--json"]));
    let took = started.elapsed();
    let r = &restored["interfaces"][0];
    assert_eq!(r["iface"], IF_B, "{restored}");
    assert_eq!(r["outcome"], "restored", "{restored}");
    assert_eq!(r["generation"], 3, "a new generation: {restored}");
    assert_eq!(
        r["restored_from"],
        serde_json::json!(["gateway@1", "acme@1", "beta@2"])
    );
    assert_eq!(r["forgotten"], serde_json::json!([1, 2]), "{restored}");
    assert!(took.as_secs() < 10, "restore took {took:?}");

    assert_eq!(
        verdicts(&link),
        before,
        "filtering exactly as before the reboot"
    );
    let (tenants, kept) = live(&s, ns);
    assert_eq!(tenants, [("acme".into(), 3), ("beta".into(), 3)]);
    assert_eq!(kept, serde_json::json!([3]), "gone tables are not kept");
    // Each tenant's live content is the file of the generation it was at.
    let gw = Gateway::new()
        .with_bpffs(&s.pins)
        .with_state(&s.state)
        .in_netns(Some(ns));
    let it = gw.open_read(Some(IF_B)).expect("open");
    let files: Vec<(String, String)> = it
        .live_files()
        .expect("live files")
        .into_iter()
        .map(|(p, t)| (p.rsplit('/').next().unwrap_or(&p).to_owned(), t))
        .collect();
    assert_eq!(
        files,
        [
            ("gateway.fg".to_owned(), GATEWAY.to_owned()),
            ("acme.fg".to_owned(), ACME_1.to_owned()),
            ("beta.fg".to_owned(), BETA_2.to_owned()),
        ]
    );
    // Attached as it was: the pool size, the tenant and counter slots, the
    // per-source bucket map and the malformed verdict.
    assert_eq!(it.pinned().pool_cells().expect("pool"), 8192);
    assert_eq!(it.pinned().tenant_slots(), 70_000);
    assert_eq!(it.pinned().counter_slots(), 4096);
    assert_eq!(it.pinned().source_buckets(), 3000);
    assert_eq!(it.pinned().config().expect("config").counter_slots, 4096);
    assert_eq!(
        it.pinned().config().expect("config").malformed_action,
        fluxgate_common::xdp::PASS
    );
    let history = it.history(None);
    let last: Vec<&str> = history
        .iter()
        .rev()
        .take(2)
        .map(|e| e.what.as_str())
        .collect();
    assert_eq!(last, ["restored", "apply"]);
    assert!(
        history
            .iter()
            .rev()
            .nth(1)
            .is_some_and(|e| e.detail.starts_with("restore;"))
    );
    drop(it);
    // Nothing to roll back to: the journal says so rather than failing in the kernel.
    let out = fluxgate(&s, &["-n", ns, "rollback", IF_B]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A second restore leaves the attached interface alone.
    let again = json(fluxgate(&s, &["-n", ns, "restore", "--json"]));
    assert_eq!(
        again["interfaces"][0]["outcome"], "already_attached",
        "{again}"
    );
    let (tenants, kept) = live(&s, ns);
    assert_eq!(tenants, [("acme".into(), 3), ("beta".into(), 3)]);
    assert_eq!(kept, serde_json::json!([3]));
    assert_eq!(verdicts(&link), before);
    // Naming an interface without a journal is "not found".
    let out = fluxgate(&s, &["-n", ns, "restore", "nosuch0"]);
    assert_eq!(out.status.code(), Some(4));
}

/// A restore cut short after it attached (power lost again) is finished by
/// the next one; a journal without attach options gets the defaults, with a
/// warning.
#[test]
fn an_interrupted_restore_is_finished_by_the_next() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    let s = Scratch::new("restore-cut");
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    write(&s.rules, "gateway.fg", GATEWAY);
    write(&s.rules, "acme.fg", ACME_1);
    ok(fluxgate(&s, &["-n", ns, "load", &rules, IF_B]));
    assert_eq!(net::udp_exchange_to(&link, ACME, 7002, N, 16), 0);
    reboot(&s, ns);
    std::fs::remove_file(s.state.join(ns).join(IF_B).join("attach.json")).expect("attach.json");
    // What an interrupted restore leaves: attached, nothing applied.
    ok(fluxgate(&s, &["-n", ns, "attach", IF_B]));
    assert_eq!(net::udp_exchange_to(&link, ACME, 7002, N, 16), N);
    let out = ok(fluxgate(&s, &["-n", ns, "restore", IF_B]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("restored 1 tenant as generation 2"), "{said}");
    assert_eq!(net::udp_exchange_to(&link, ACME, 7002, N, 16), 0);
    assert_eq!(net::udp_exchange_to(&link, ACME, 7000, N, 16), N);

    // Without attach.json: the defaults, and a warning.
    reboot(&s, ns);
    std::fs::remove_file(s.state.join(ns).join(IF_B).join("attach.json")).expect("attach.json");
    let out = ok(fluxgate(&s, &["-n", ns, "restore"]));
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("attached with the defaults"), "{warned}");
    assert_eq!(net::udp_exchange_to(&link, ACME, 7002, N, 16), 0);
}

/// After a reboot, an operator who attaches and applies by hand (no
/// `restore`) gets a journal that tells the truth: the generations whose
/// tables are gone are no longer listed as kept, and `rollback` says there is
/// nothing to roll back to instead of failing in the kernel.
#[test]
fn after_a_reboot_a_plain_apply_forgets_generations_whose_tables_are_gone() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    let s = Scratch::new("reboot-apply");
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    write(&s.rules, "gateway.fg", GATEWAY);
    write(&s.rules, "acme.fg", ACME_1);
    ok(fluxgate(&s, &["-n", ns, "load", &rules, IF_B]));
    write(&s.rules, "acme.fg", ACME_2);
    ok(fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]));
    reboot(&s, ns);
    ok(fluxgate(&s, &["-n", ns, "attach", IF_B]));
    ok(fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]));
    assert_eq!(net::udp_exchange_to(&link, ACME, 7001, N, 16), N);
    let (tenants, kept) = live(&s, ns);
    assert_eq!(tenants, [("acme".into(), 3)]);
    assert_eq!(kept, serde_json::json!([3]));
    let out = fluxgate(&s, &["-n", ns, "rollback", IF_B]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("no kept generation before 3"), "{err}");
}

/// The journal is deleted while the pins stay: an apply with a new tenant
/// must not give it a slot dispatch still leads an old tenant's packets to.
/// It is refused, clearly, and changes nothing; the advice given works.
#[test]
fn a_lost_journal_is_refused_before_any_slot_is_reused() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    link.add_b_address(BETA);
    link.add_b_address(GAMMA);
    let s = Scratch::new("lost");
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    write(&s.rules, "gateway.fg", GATEWAY);
    write(&s.rules, "acme.fg", ACME_1);
    write(&s.rules, "beta.fg", BETA_1);
    ok(fluxgate(&s, &["-n", ns, "load", &rules, IF_B]));
    let before = verdicts(&link);
    assert_eq!(before, [N, 0, 0, 0, N, N]);

    std::fs::remove_dir_all(&s.state).expect("lose the journal");
    let next = s.rules_dir("next");
    write(&next, "gateway.fg", GATEWAY);
    write(&next, "acme.fg", ACME_1);
    write(&next, "gamma.fg", GAMMA_1);
    let out = fluxgate(&s, &["-n", ns, "apply", &next.display().to_string(), IF_B]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "refused: {err}");
    assert!(
        err.contains("does not match what is loaded")
            && err.contains("acme, beta")
            && err.contains(&format!("fluxgate detach {IF_B}")),
        "{err}"
    );
    // Nothing changed: beta is still judged by beta's rules, gamma is no tenant.
    assert_eq!(verdicts(&link), before);
    assert_eq!(net::udp_exchange_to(&link, GAMMA, 7000, N, 16), N);
    // status says the same rather than showing a partial picture.
    let out = fluxgate(&s, &["-n", ns, "status", IF_B]);
    assert_eq!(out.status.code(), Some(1));

    // The advice: detach, load again.
    ok(fluxgate(&s, &["-n", ns, "detach", IF_B]));
    ok(fluxgate(
        &s,
        &["-n", ns, "load", &next.display().to_string(), IF_B],
    ));
    assert_eq!(verdicts(&link), [N, 0, 0, N, N, N], "beta is no tenant now");
    assert_eq!(net::udp_exchange_to(&link, GAMMA, 7000, N, 16), 0);
}

/// A damaged `state.json` is an error naming the file, never taken as "no
/// state"; records without `state.json` are enough to rebuild it.
#[test]
fn a_damaged_state_file_is_a_clear_error_and_a_missing_one_is_rebuilt_from_records() {
    net::require_root();
    let link = Link::new();
    link.add_b_address(ACME);
    let s = Scratch::new("corrupt");
    let ns = link.b.name();
    let rules = s.rules.display().to_string();
    write(&s.rules, "gateway.fg", GATEWAY);
    write(&s.rules, "acme.fg", ACME_1);
    ok(fluxgate(&s, &["-n", ns, "load", &rules, IF_B]));
    let state = s.state.join(ns).join(IF_B).join("state.json");
    let good = std::fs::read(&state).expect("state.json");
    std::fs::write(&state, b"{\"generation\": 1, \"live\": ").expect("damage");
    for args in [vec!["status", IF_B], vec!["apply", &rules, IF_B]] {
        let out = fluxgate(&s, &[&["-n", ns][..], &args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("state.json is corrupt"), "{args:?}: {err}");
    }
    std::fs::write(&state, &good).expect("repair");

    // state.json gone, records kept: the kernel and the records agree, and the
    // next apply does not hand out generation 1 again.
    std::fs::remove_file(&state).expect("lose state.json");
    write(&s.rules, "acme.fg", ACME_2);
    let out = ok(fluxgate(&s, &["-n", ns, "apply", &rules, IF_B]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("generation 2 live"), "{said}");
    assert_eq!(net::udp_exchange_to(&link, ACME, 7001, N, 16), N);
    ok(fluxgate(&s, &["-n", ns, "rollback", IF_B]));
    assert_eq!(net::udp_exchange_to(&link, ACME, 7001, N, 16), 0);
}

/// The shipped systemd units are accepted by `systemd-analyze verify`
/// (with `ExecStart` pointed at this build, which it checks exists).
#[test]
fn the_systemd_units_verify() {
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        println!("note: systemd-analyze is not installed here; the unit files were not verified");
        return;
    };
    assert!(version.status.success());
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd");
    let tmp = std::env::temp_dir().join(format!("fgt-units-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(tmp.clone());
    let mut units = Vec::new();
    for name in ["fluxgate-restore.service", "fluxgate-metrics.service"] {
        let text = std::fs::read_to_string(dist.join(name)).expect("unit file");
        assert!(
            text.contains("ExecStart=/usr/local/bin/fluxgate "),
            "{name}"
        );
        let unit = tmp.join(name);
        std::fs::write(
            &unit,
            text.replace("/usr/local/bin/fluxgate", env!("CARGO_BIN_EXE_fluxgate")),
        )
        .expect("write unit");
        units.push(unit);
    }
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze verify");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // It only warns (exit 0) about unknown keys or bad values: none allowed.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("fluxgate-")).collect();
    assert!(ours.is_empty(), "{err}");
}
