//! Helpers shared by the CLI integration tests: a scratch bpffs / state /
//! ruleset area removed on drop (which also detaches whatever it pinned), and
//! running the `fluxgate` binary against it.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// Pins, state and rules of one test; removed (and detached) on drop.
pub struct Scratch {
    pub pins: PathBuf,
    pub state: PathBuf,
    pub rules: PathBuf,
}

impl Scratch {
    pub fn new(prefix: &str) -> Scratch {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("fgt-{prefix}-{}-{n}", std::process::id());
        let s = Scratch {
            pins: PathBuf::from("/sys/fs/bpf").join(&tag),
            state: std::env::temp_dir().join(format!("{tag}-state")),
            rules: std::env::temp_dir().join(format!("{tag}-rules")),
        };
        std::fs::create_dir_all(&s.rules).expect("rules dir");
        s
    }

    /// A second ruleset directory beside `rules`.
    pub fn rules_dir(&self, name: &str) -> PathBuf {
        let dir = self.rules.with_file_name(format!(
            "{}-{name}",
            self.rules
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("rules")
        ));
        std::fs::create_dir_all(&dir).expect("rules dir");
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Removing the pinned link detaches the program.
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_dir_all(&self.rules);
        if let Some(parent) = self.rules.parent()
            && let Some(stem) = self.rules.file_name().and_then(|n| n.to_str())
            && let Ok(entries) = std::fs::read_dir(parent)
        {
            for e in entries.filter_map(Result::ok) {
                if e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&format!("{stem}-")))
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// The `fluxgate` binary with `--bpffs` / `--state` of `s`.
pub fn fluxgate_cmd(s: &Scratch) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fluxgate"));
    c.arg("--bpffs").arg(&s.pins).arg("--state").arg(&s.state);
    c
}

/// Runs `fluxgate` with `args`.
pub fn fluxgate(s: &Scratch, args: &[&str]) -> Output {
    fluxgate_cmd(s).args(args).output().expect("run fluxgate")
}

/// Asserts success, returns the output.
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "fluxgate failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes `dir/name`.
pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write rule file");
}

/// `fluxgate -n ns stats IFACE --json`.
pub fn stats_json(s: &Scratch, ns: &str, iface: &str) -> serde_json::Value {
    let out = ok(fluxgate(s, &["-n", ns, "stats", iface, "--json"]));
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

/// Packets counted for `scope` rule `position` (0: default) in `stats --json`.
pub fn hits(json: &serde_json::Value, scope: &str, position: u64) -> u64 {
    json["interfaces"][0]["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .filter(|t| t["tenant"] == scope)
        .flat_map(|t| t["rules"].as_array().cloned().unwrap_or_default())
        .find(|r| r["position"] == position)
        .and_then(|r| r["packets"].as_u64())
        .unwrap_or_else(|| panic!("no rule {scope}#{position} in {json}"))
}
