//! The `fluxgate` binary end to end: attach survives the process, stats reads
//! the pinned counters, detach removes everything, errors have stable exit codes.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use fluxgate_testkit::net::{self, IF_B, Link};

/// A private bpffs pin root, removed at the end of the test.
struct PinRoot(PathBuf);

impl PinRoot {
    fn new() -> PinRoot {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        PinRoot(PathBuf::from(format!(
            "/sys/fs/bpf/fgt-cli-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fluxgate(pins: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .arg("--bpffs")
        .arg(pins)
        .args(args)
        .output()
        .expect("run fluxgate")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn passed_packets(pins: &Path, ns: &str) -> u64 {
    let out = fluxgate(pins, &["-n", ns, "stats", IF_B, "--json"]);
    assert!(out.status.success(), "stats failed: {}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    json["interfaces"][0]["counters"]["outcomes"]["passed"]["packets"]
        .as_u64()
        .expect("passed.packets in JSON")
}

#[test]
fn attach_outlives_the_process_and_detach_cleans_up() {
    net::require_root();
    let link = Link::new();
    let pins = PinRoot::new();
    let ns = link.b.name();

    let out = fluxgate(&pins.0, &["-n", ns, "attach", IF_B, "--json"]);
    assert!(out.status.success(), "attach failed: {}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("attach JSON");
    assert_eq!(json["mode"], "native");
    let pin_dir = pins.0.join(ns).join(IF_B);
    assert!(
        pin_dir.join("link").exists(),
        "link pinned at {}",
        pin_dir.display()
    );

    // The CLI process has exited; the program still sees and counts traffic.
    assert_eq!(passed_packets(&pins.0, ns), 0);
    assert_eq!(net::udp_exchange(&link, 9100, 50, 32), 50);
    assert_eq!(passed_packets(&pins.0, ns), 50);

    let out = fluxgate(&pins.0, &["-n", ns, "stats"]);
    assert!(
        stdout(&out).contains("passed") && stdout(&out).contains(IF_B),
        "{}",
        stdout(&out)
    );

    let again = fluxgate(&pins.0, &["-n", ns, "attach", IF_B]);
    assert_eq!(
        again.status.code(),
        Some(6),
        "second attach: {}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("already has fluxgate attached"),
        "{}",
        stderr(&again)
    );

    let out = fluxgate(&pins.0, &["-n", ns, "detach", IF_B]);
    assert!(out.status.success(), "detach failed: {}", stderr(&out));
    assert!(!pin_dir.exists(), "pins removed");
    let shown = Command::new("ip")
        .args(["-n", ns, "link", "show", IF_B])
        .output()
        .expect("ip");
    assert!(
        !stdout(&shown).contains("xdp"),
        "XDP detached: {}",
        stdout(&shown)
    );
    // Traffic still flows once detached.
    assert_eq!(net::udp_exchange(&link, 9101, 20, 32), 20);

    let out = fluxgate(&pins.0, &["-n", ns, "detach", IF_B]);
    assert_eq!(out.status.code(), Some(4), "detach twice: {}", stderr(&out));
}

#[test]
fn errors_have_documented_exit_codes() {
    net::require_root();
    let ns = net::Netns::new();
    let pins = PinRoot::new();

    let out = fluxgate(&pins.0, &["-n", ns.name(), "attach", "nope0"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no interface named \"nope0\""),
        "{}",
        stderr(&out)
    );

    let out = fluxgate(&pins.0, &["-n", "fgt-no-such-netns", "stats"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no network namespace"),
        "{}",
        stderr(&out)
    );

    let out = fluxgate(&pins.0, &["-n", ns.name(), "stats", "lo"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));

    let out = fluxgate(&pins.0, &["-n", ns.name(), "stats", "--json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["interfaces"], serde_json::json!([]));

    let out = fluxgate(&pins.0, &["attach"]);
    assert_eq!(out.status.code(), Some(2), "usage error");

    let not_bpffs = fluxgate(
        Path::new("/tmp/fgt-not-bpffs"),
        &["-n", ns.name(), "attach", "lo"],
    );
    assert_eq!(not_bpffs.status.code(), Some(5), "{}", stderr(&not_bpffs));
    assert!(
        stderr(&not_bpffs).contains("no BPF filesystem"),
        "{}",
        stderr(&not_bpffs)
    );
    assert!(
        !stdout(
            &Command::new("ip")
                .args(["-n", ns.name(), "link", "show", "lo"])
                .output()
                .expect("ip")
        )
        .contains("xdp"),
        "failed attach leaves nothing attached"
    );
}

#[test]
fn state_pinned_by_another_build_is_refused_and_detach_removes_it() {
    net::require_root();
    let link = Link::new();
    let pins = PinRoot::new();
    let state = std::env::temp_dir().join(format!(
        "{}-state",
        pins.0
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("fgt-cli")
    ));
    let state_arg = state.display().to_string();
    let ns = link.b.name();
    let run = |args: &[&str]| {
        let mut all = vec!["--state", state_arg.as_str(), "-n", ns];
        all.extend_from_slice(args);
        fluxgate(&pins.0, &all)
    };
    let out = run(&["attach", IF_B]);
    assert!(out.status.success(), "attach: {}", stderr(&out));
    // Another build's state: FG_CONFIG with another ABI version.
    let config = pins.0.join(ns).join(IF_B).join("FG_CONFIG");
    let bpftool = Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(&config)
        .args(["key", "0", "0", "0", "0", "value", "1"])
        .args(vec!["0"; size_of::<fluxgate_common::GatewayConfig>() - 1])
        .output()
        .expect("bpftool");
    assert!(bpftool.status.success(), "{}", stderr(&bpftool));

    let out = run(&["status", IF_B]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("ABI version 1"), "{}", stderr(&out));
    // Detach does not need to adopt it: it removes it, and attach works again.
    let out = run(&["detach", IF_B]);
    assert!(out.status.success(), "detach: {}", stderr(&out));
    assert!(!pins.0.join(ns).join(IF_B).exists(), "pins left behind");
    let out = run(&["attach", IF_B]);
    assert!(out.status.success(), "attach again: {}", stderr(&out));
    let out = run(&["detach", IF_B]);
    assert!(out.status.success(), "detach: {}", stderr(&out));
    let _ = std::fs::remove_dir_all(&state);
}
