//! Tenant files a customer wrote (issue 24), through the `fluxgate` binary:
//! `check` and `classify --engine reference|userspace` refuse every bad input
//! with exit code 7 and its `file:line:col` (the file alone when there is no
//! position), in text and in `--json`, within bounded memory, and never print
//! the contents of a file they should not have read. No root, no kernel.

use fluxgate_testkit::scratch::ScratchDir;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Exit code of a rejected ruleset (`fluxgate_control::exit::BAD_RULESET`).
const REJECTED: i32 = 7;

/// A scratch directory (removed on drop) with this file's ruleset helpers.
struct Scratch(ScratchDir);

impl std::ops::Deref for Scratch {
    type Target = ScratchDir;

    fn deref(&self) -> &ScratchDir {
        &self.0
    }
}

impl Scratch {
    fn new(what: &str) -> Scratch {
        Scratch(ScratchDir::new(&format!("hostile-cli-{what}")))
    }

    /// A ruleset directory `rules` inside, with gateway.fg and tenant acme.
    fn with_ruleset(what: &str) -> Scratch {
        let s = Scratch::new(what);
        std::fs::create_dir(s.rules()).expect("mkdir rules");
        s.write("rules/gateway.fg", "default drop\n");
        s.write("rules/acme.fg", ACME);
        s
    }

    fn rules(&self) -> PathBuf {
        self.path("rules")
    }
}

const ACME: &str = "tenant acme\nprefix 203.0.113.0/24\ndefault drop\nproto tcp dport 443 pass\n";

/// A fake secret outside the ruleset directory, its first line shaped like
/// the /etc/shadow line of the report.
const SECRET: &str = "root:$6$s3cr3t-hash-never-shown$abcdef:20228:0:99999:7:::\n";

/// Address space the binary may use in the tests that feed it expensive input.
const ADDRESS_SPACE: u64 = 1 << 30;

/// Runs `fluxgate` with `args`, its address space limited to [`ADDRESS_SPACE`].
fn fluxgate(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fluxgate"));
    cmd.args(args);
    // SAFETY: between fork and exec the closure only calls setrlimit, which is
    // async-signal-safe, on a struct it owns.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd.output().expect("run fluxgate")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `args` + `--json`, expects exit 7 and the JSON error on stdout;
/// returns it with the text output of the same command without `--json`.
fn rejected(args: &[&str]) -> (serde_json::Value, String) {
    let plain = fluxgate(args);
    assert_eq!(plain.status.code(), Some(REJECTED), "{}", text(&plain));
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let out = fluxgate(&with_json);
    assert_eq!(out.status.code(), Some(REJECTED), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}): {}", text(&out)));
    assert_eq!(json["error"]["exit_code"], REJECTED);
    (
        json["error"].clone(),
        format!("{}{}", text(&plain), text(&out)),
    )
}

/// `(kind, file name, line, col)` of each diagnostic (line and col 0 when
/// the diagnostic is about a whole file).
fn diagnostics(error: &serde_json::Value) -> Vec<(String, String, u64, u64)> {
    let name = |f: &serde_json::Value| {
        Path::new(f.as_str().unwrap_or_default())
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned()
    };
    error["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .map(|d| {
            let kind = d["kind"].as_str().expect("kind").to_owned();
            match d.get("at") {
                Some(at) => (
                    kind,
                    name(&at["file"]),
                    at["line"].as_u64().expect("line"),
                    at["col"].as_u64().expect("col"),
                ),
                None => (kind, name(&d["file"]), 0, 0),
            }
        })
        .collect()
}

fn check(s: &Scratch) -> (serde_json::Value, String) {
    let dir = s.rules().display().to_string();
    rejected(&["check", &dir])
}

fn io(file: &str) -> (String, String, u64, u64) {
    ("Io".to_owned(), file.to_owned(), 0, 0)
}

#[test]
fn a_dangling_link_or_a_directory_named_like_a_tenant_file_is_refused() {
    let s = Scratch::with_ruleset("dangling");
    std::os::unix::fs::symlink(s.path("nowhere"), s.rules().join("bob.fg")).expect("symlink");
    let (error, out) = check(&s);
    assert_eq!(diagnostics(&error), [io("bob.fg")], "{out}");
    assert!(out.contains("bob.fg"), "{out}");

    let s = Scratch::with_ruleset("directory");
    std::fs::create_dir(s.rules().join("bob.fg")).expect("mkdir");
    let (error, out) = check(&s);
    assert_eq!(diagnostics(&error), [io("bob.fg")], "{out}");

    // classify --ruleset reads the directory the same way.
    let trace = s.write("trace", "1\t2\t3\t4\t6\n").display().to_string();
    let dir = s.rules().display().to_string();
    let (error, _) = rejected(&[
        "classify",
        "--ruleset",
        &dir,
        "--trace",
        &trace,
        "--engine",
        "reference",
    ]);
    assert_eq!(diagnostics(&error), [io("bob.fg")]);
}

#[test]
fn a_link_out_of_the_ruleset_directory_is_refused_and_its_target_never_shown() {
    let s = Scratch::with_ruleset("secret");
    let secret = s.write("shadow", SECRET);
    std::os::unix::fs::symlink(&secret, s.rules().join("x.fg")).expect("symlink");
    let (error, out) = check(&s);
    assert_eq!(diagnostics(&error), [io("x.fg")], "{out}");
    for leaked in ["s3cr3t", "root:", "20228"] {
        assert!(!out.contains(leaked), "`{leaked}` leaked:\n{out}");
        assert!(
            !error.to_string().contains(leaked),
            "`{leaked}` leaked: {error}"
        );
    }
}

#[test]
fn unknown_input_is_quoted_only_as_a_short_printable_excerpt() {
    let s = Scratch::with_ruleset("excerpt");
    // A customer's file that is not rules at all: one long line with a
    // terminal escape sequence in it.
    let junk = format!("\u{1b}[2J\u{7}pwned{}", "K".repeat(100_000));
    s.write(
        "rules/bob.fg",
        format!("tenant bob\nprefix 198.51.100.0/24\ndefault drop\n{junk} drop\n"),
    );
    let (error, out) = check(&s);
    let found = diagnostics(&error);
    assert_eq!(
        found,
        [("Syntax".to_owned(), "bob.fg".to_owned(), 4, 1)],
        "{out}"
    );
    assert!(out.len() < 5_000, "{} bytes of output", out.len());
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out}");
    assert!(!out.contains(&"K".repeat(40)), "{out}");
    let message = error["diagnostics"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("`\\u{1b}[2J\\u{7}pwnedKKKKKKKKKKKKKKKKKKKKKK…`"),
        "the excerpt, escaped: {message}"
    );
}

/// The report's gateway.fg (≈ 200 KB): 32,768 odd ports in a set, used as
/// both source and destination ports of one rule — 2^30 table rules.
fn odd_ports_gateway() -> String {
    let odd: Vec<String> = (1..=65535u32).step_by(2).map(|p| p.to_string()).collect();
    format!(
        "default drop\nset p {{ {} }}\nproto tcp sport @p dport @p drop\n",
        odd.join(", ")
    )
}

#[test]
fn one_rule_that_would_expand_into_2_pow_30_table_rules_is_refused_quickly_in_1_gib() {
    let s = Scratch::new("expansion");
    std::fs::create_dir(s.rules()).expect("mkdir");
    s.write("rules/gateway.fg", odd_ports_gateway());
    let started = Instant::now();
    let (error, out) = check(&s);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let found = diagnostics(&error);
    let at_rule = ("Limit".to_owned(), "gateway.fg".to_owned(), 3, 1);
    assert!(found.contains(&at_rule), "{found:?}\n{out}");
    assert!(out.contains("gateway.fg:3:1"), "{out}");
    assert!(out.contains("max_rule_expansion"), "{out}");
}

#[test]
fn a_byte_order_mark_is_accepted_and_text_that_is_not_utf8_refused_at_its_first_bad_byte() {
    let s = Scratch::with_ruleset("bom");
    s.write(
        "rules/bob.fg",
        "\u{feff}tenant bob\nprefix 198.51.100.0/24\ndefault drop\nproto tcp dport 80 pass\n",
    );
    let dir = s.rules().display().to_string();
    let out = fluxgate(&["check", &dir, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["tenants"], 2, "{json}");

    s.write(
        "rules/bob.fg",
        b"tenant bob\nprefix 198.51.100.0/24\ndefault drop # \xff\xfe\n".as_slice(),
    );
    let (error, out) = check(&s);
    // `default drop # ` is 15 characters.
    assert_eq!(
        diagnostics(&error),
        [("Syntax".to_owned(), "bob.fg".to_owned(), 3, 16)],
        "{out}"
    );
    assert!(out.contains("bob.fg:3:16"), "{out}");
}

/// ClassBench firewall-style filters: ICMP and GRE with port ranges, an
/// any-protocol filter on a port, a catch-all.
const FW_FILTERS: &str = "\
@10.0.0.0/8\t192.0.2.0/24\t0 : 65535\t1024 : 65535\t0x01/0xFF\t0x0000/0x0000
@10.0.0.0/8\t192.0.2.0/24\t0 : 65535\t0 : 65535\t0x01/0xFF\t0x0000/0x0000
@0.0.0.0/0\t192.0.2.0/24\t53 : 53\t0 : 65535\t0x2F/0xFF\t0x0000/0x0000
@0.0.0.0/0\t192.0.2.0/24\t0 : 65535\t80 : 80\t0x00/0x00\t0x0000/0x0000
@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000
";

/// 10.0.0.1 → 192.0.2.1: ICMP with "ports" 2000 → 3000 (in filter 1's range,
/// but ICMP carries none: filter 2), GRE from 53 to 80 (filters 3 and 4 want
/// ports: 5), TCP and UDP from 53 to 80 (4).
const FW_TRACE: &str = "\
167772161\t3221225985\t2000\t3000\t1
167772161\t3221225985\t53\t80\t47
167772161\t3221225985\t53\t80\t6
167772161\t3221225985\t53\t80\t17
";

#[test]
fn classbench_firewall_filters_with_ports_on_icmp_import_and_every_engine_agrees() {
    let s = Scratch::new("fw");
    let filters = s.write("fw1", FW_FILTERS).display().to_string();
    let trace = s.write("fw1_trace", FW_TRACE).display().to_string();
    for engine in ["reference", "userspace"] {
        let out = fluxgate(&[
            "classify",
            "--classbench",
            &filters,
            "--trace",
            &trace,
            "--engine",
            engine,
        ]);
        assert_eq!(out.status.code(), Some(0), "{engine}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "2\n5\n4\n4\n",
            "{engine}"
        );
    }
}

#[test]
fn errors_in_a_filter_file_carry_file_line_col() {
    let s = Scratch::new("fw-bad");
    let trace = s.write("trace", FW_TRACE).display().to_string();
    let mut bad = FW_FILTERS.as_bytes().to_vec();
    // Filter 3's protocol field: `0x2F/0xFF` becomes `0x2F/0x\xffF`.
    let at = FW_FILTERS.find("0x2F/0xFF").expect("field") + 7;
    bad[at] = 0xff;
    let filters = s.write("fw1", &bad).display().to_string();
    for engine in ["reference", "userspace"] {
        let (error, out) = rejected(&[
            "classify",
            "--classbench",
            &filters,
            "--trace",
            &trace,
            "--engine",
            engine,
        ]);
        // `@0.0.0.0/0<TAB>192.0.2.0/24<TAB>53 : 53<TAB>0 : 65535<TAB>0x2F/0x` is 49 characters.
        assert_eq!(
            diagnostics(&error),
            [("Syntax".to_owned(), "fw1".to_owned(), 3, 50)],
            "{out}"
        );
    }
}

#[test]
fn a_trace_that_is_not_utf8_is_refused_at_its_first_bad_byte() {
    let s = Scratch::new("trace-bad");
    let filters = s.write("fw1", FW_FILTERS).display().to_string();
    let trace = s
        .write(
            "trace",
            b"167772161\t3221225985\t53\t80\t6\n1\t2\t3\t4\t\xc3(\n".as_slice(),
        )
        .display()
        .to_string();
    let (error, out) = rejected(&[
        "classify",
        "--classbench",
        &filters,
        "--trace",
        &trace,
        "--engine",
        "reference",
    ]);
    assert_eq!(error["message"], "trace rejected: 1 error", "{out}");
    assert_eq!(
        diagnostics(&error),
        [("Syntax".to_owned(), "trace".to_owned(), 2, 9)],
        "{out}"
    );
}
