//! Tenant files a customer wrote (issue 24): the loader and validation must
//! refuse what is not a readable regular file in the ruleset directory, bound
//! what they read and build, and never quote more than a short excerpt of input.

use fluxgate_testkit::scratch::ScratchDir;
use std::path::Path;

use fluxgate_ruleset::{Config, Diag, ErrorKind, Errors, MAX_FILE_BYTES, Ruleset, validate};

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
        Scratch(ScratchDir::new(&format!("hostile-{what}")))
    }

    /// A ruleset directory with gateway.fg and one valid tenant `acme`.
    fn ruleset(what: &str) -> Scratch {
        let s = Scratch::new(what);
        s.write("gateway.fg", "default drop\n");
        s.write("acme.fg", ACME);
        s
    }
}

const ACME: &str = "tenant acme\nprefix 203.0.113.0/24\ndefault drop\nproto tcp dport 443 pass\n";

/// A fake secret outside the ruleset directory; its first line looks like a
/// rule keyword would (as /etc/shadow's did in the report).
const SECRET: &str = "root:$6$s3cr3t-hash-never-shown$abcdef:20228:0:99999:7:::\n";

fn load_err(dir: &Path) -> Errors {
    match Ruleset::load_dir(dir) {
        Ok(rs) => panic!(
            "loaded {} tenant(s), but the directory should be refused",
            rs.tenants.len()
        ),
        Err(e) => e,
    }
}

/// Everything a user or a log could see of `e`.
fn shown(e: &Errors) -> String {
    let messages: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
    format!("{}\n{}", e.render(), messages.join("\n"))
}

fn only_error(e: &Errors) -> &Diag {
    assert_eq!(e.errors.len(), 1, "{}", shown(e));
    &e.errors[0]
}

fn file_name(d: &Diag) -> &str {
    Path::new(&d.location.file)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
}

#[test]
fn a_dangling_link_named_like_a_tenant_file_is_an_error_not_a_removed_tenant() {
    let s = Scratch::ruleset("dangling");
    std::os::unix::fs::symlink(s.path("nowhere.txt"), s.path("bob.fg")).expect("symlink");
    let e = load_err(s.dir());
    let d = only_error(&e);
    assert_eq!((d.kind, file_name(d)), (ErrorKind::Io, "bob.fg"), "{d}");
    assert!(d.message.contains("symbolic link"), "{d}");
}

#[test]
fn a_directory_or_fifo_named_like_a_tenant_file_is_an_error() {
    let s = Scratch::ruleset("dir");
    std::fs::create_dir(s.path("bob.fg")).expect("mkdir");
    let e = load_err(s.dir());
    let d = only_error(&e);
    assert_eq!(file_name(d), "bob.fg", "{d}");
    assert!(d.message.contains("a directory"), "{d}");

    // A FIFO: refused without opening it (an open would wait for a writer).
    let s = Scratch::ruleset("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(s.path("carol.fg"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let d = only_error(&load_err(s.dir())).clone();
    assert_eq!(file_name(&d), "carol.fg", "{d}");
    assert!(d.message.contains("FIFO"), "{d}");
}

#[test]
fn links_are_refused_and_their_targets_never_read() {
    let outside = Scratch::new("outside");
    let secret = outside.write("shadow", SECRET);
    let s = Scratch::ruleset("links");
    std::os::unix::fs::symlink(&secret, s.path("x.fg")).expect("symlink");
    // A link to a file inside the directory is refused too (see read_dir_files).
    std::os::unix::fs::symlink(s.path("acme.fg"), s.path("y.fg")).expect("symlink");
    std::os::unix::fs::symlink("/proc/self/environ", s.path("z.fg")).expect("symlink");
    let e = load_err(s.dir());
    let names: Vec<&str> = e.errors.iter().map(file_name).collect();
    assert_eq!(names, ["x.fg", "y.fg", "z.fg"], "{}", shown(&e));
    let text = shown(&e);
    for leaked in ["s3cr3t", "root:", "20228"] {
        assert!(!text.contains(leaked), "`{leaked}` leaked:\n{text}");
    }
}

#[test]
fn a_file_over_the_size_limit_is_refused_without_reading_it() {
    let s = Scratch::ruleset("huge");
    // Sparse: the size is reported, nothing is written.
    let f = std::fs::File::create(s.path("bob.fg")).expect("create");
    f.set_len(MAX_FILE_BYTES + 1).expect("set_len");
    let e = load_err(s.dir());
    let d = only_error(&e);
    assert_eq!(file_name(d), "bob.fg", "{d}");
    assert!(d.message.contains("larger than"), "{d}");
    // At the limit it is read (and then fails to parse: all zero bytes).
    f.set_len(MAX_FILE_BYTES).expect("set_len");
    let e = load_err(s.dir());
    assert!(e.errors.iter().all(|d| file_name(d) == "bob.fg"));
    assert!(!e.errors.iter().any(|d| d.message.contains("larger than")));
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let s = Scratch::ruleset("bom");
    s.write(
        "bob.fg",
        "\u{feff}tenant bob\nprefix 198.51.100.0/24\ndefault drop\n",
    );
    let rs = Ruleset::load_dir(s.dir()).expect("a file starting with a BOM loads");
    let rs = validate(rs, &Config::default()).expect("valid");
    assert_eq!(rs.tenants().len(), 2);
    // Columns on the first line count from after the mark.
    let e = Ruleset::parse_files(&[("gateway.fg", "\u{feff}default dorp\n")]).unwrap_err();
    assert_eq!(e.errors[0].location.to_string(), "gateway.fg:1:9");
}

#[test]
fn text_that_is_not_utf8_is_an_error_at_the_first_bad_byte() {
    let s = Scratch::ruleset("latin1");
    s.write(
        "bob.fg",
        b"tenant bob\nprefix 198.51.100.0/24\ndefault drop\nproto tcp dport 80 pass # caf\xe9\n",
    );
    let e = load_err(s.dir());
    let d = only_error(&e);
    assert_eq!(file_name(d), "bob.fg");
    // `proto tcp dport 80 pass # caf` is 29 characters.
    assert_eq!(d.location.position(), Some((4, 30)), "{d}");
    assert!(d.message.contains("0xe9"), "{d}");
}

#[test]
fn errors_quote_at_most_a_short_printable_excerpt_of_unknown_input() {
    let long = "Q".repeat(5000);
    let cases = [
        format!("default drop\n{long} drop\n"), // unknown keyword
        format!("default {long}\n"),            // found `…`
        format!("default drop\nproto {long} drop\n"), // unknown protocol
        format!("default drop\nsaddr {long} drop\n"), // not an address
        format!("default drop\nproto tcp dport {long} drop\n"),
        format!("default drop\nvlan {long} drop\n"),
        format!("default drop\nproto tcp flags {long} drop\n"),
        format!("default drop\nguard \"tcp {long}\" pass\n"),
        format!("default drop\nsaddr @{} drop\n", "a".repeat(5000)),
        format!("default drop\nset {long} {{ 80 }}\n"),
    ];
    for text in &cases {
        let e = match Ruleset::parse_files(&[("gateway.fg", text.as_str())]) {
            Ok(rs) => match validate(rs, &Config::default()) {
                Ok(_) => panic!("accepted: {}", &text[..60]),
                Err(e) => e,
            },
            Err(e) => e,
        };
        for d in &e.errors {
            assert!(d.message.len() < 400, "{}", d.message);
            assert!(!d.message.contains(&"Q".repeat(40)), "{}", d.message);
            assert!(!d.message.contains(&"a".repeat(40)), "{}", d.message);
            // The long line itself is not shown under the caret either.
            assert!(d.render().len() < 1000, "{}", d.render());
        }
    }
    // Control characters (a terminal escape) are escaped, in the message and the render.
    let e =
        Ruleset::parse_files(&[("gateway.fg", "default drop\n\u{1b}[2Jroot drop\n")]).unwrap_err();
    let d = &e.errors[0];
    assert!(d.message.contains("`\\u{1b}[2Jroot`"), "{}", d.message);
    assert!(!d.render().contains('\u{1b}'), "{}", d.render());
    assert_eq!(d.location.to_string(), "gateway.fg:2:1");
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

fn errors_of(files: &[(&str, &str)], cfg: &Config) -> Errors {
    match Ruleset::parse_files(files).map(|rs| validate(rs, cfg)) {
        Err(e) | Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("accepted"),
    }
}

fn limit_errors(e: &Errors) -> Vec<(String, String)> {
    e.errors
        .iter()
        .filter(|d| d.kind == ErrorKind::Limit)
        .map(|d| (d.location.to_string(), d.message.clone()))
        .collect()
}

#[test]
fn one_rule_multiplying_two_big_sets_is_refused_before_anything_is_expanded() {
    let gw = odd_ports_gateway();
    assert!(gw.len() > 190_000);
    let started = std::time::Instant::now();
    let e = errors_of(&[("gateway.fg", gw.as_str())], &Config::default());
    let found = limit_errors(&e);
    // The set is over Config::max_set_elems, the rule over max_rule_expansion.
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, "gateway.fg:2:5", "{found:?}");
    assert!(found[0].1.contains("32768 elements"), "{found:?}");
    assert_eq!(found[1].0, "gateway.fg:3:1", "{found:?}");
    assert!(found[1].1.contains("1073741824 table rules"), "{found:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_compiler_counts_a_rule_s_expansion_before_making_it() {
    use fluxgate_ruleset::{CompileError, CompileOptions, compile_with};
    // Validated with every limit lifted, the compiler still refuses the rule
    // (and returns at once, without 2^30 table rules in memory).
    let lifted = Config {
        max_set_elems: usize::MAX,
        max_rule_expansion: usize::MAX,
        max_table_rules_per_tenant: usize::MAX,
        max_table_rules: usize::MAX,
        ..Config::default()
    };
    let gw = odd_ports_gateway();
    let rs = validate(
        Ruleset::parse_files(&[("gateway.fg", gw.as_str())]).expect("parses"),
        &lifted,
    )
    .expect("valid with the limits lifted");
    let started = std::time::Instant::now();
    let e = compile_with(&rs, &CompileOptions::default()).expect_err("refused");
    assert!(
        matches!(
            &e,
            CompileError::TooManyExpansions {
                count: 1_073_741_824,
                limit: 4096,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.location().map(ToString::to_string).as_deref(),
        Some("gateway.fg:3:1")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn table_rule_limits_per_tenant_and_ruleset_name_the_rule_that_crosses_them() {
    let acme = format!(
        "tenant acme\nprefix 203.0.113.0/24\ndefault drop\n{}",
        "proto tcp dport { 1, 2, 3 } pass\n".repeat(4)
    );
    let cfg = Config {
        max_table_rules_per_tenant: 7,
        ..Config::default()
    };
    let found = limit_errors(&errors_of(
        &[("gateway.fg", "default drop\n"), ("acme.fg", &acme)],
        &cfg,
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "acme.fg:6:1", "{found:?}"); // 3 + 3 + 3 > 7
    assert!(found[0].1.contains("tenant `acme`"), "{found:?}");

    let cfg = Config {
        max_table_rules: 10,
        ..Config::default()
    };
    let gw = "default drop\nproto tcp dport { 1, 2 } drop\n"; // 2
    let found = limit_errors(&errors_of(&[("gateway.fg", gw), ("acme.fg", &acme)], &cfg));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "acme.fg:6:1", "{found:?}"); // 2 + 3 + 3 + 3 > 10
    // Ports without `proto` mean TCP and UDP: twice the table rules.
    let cfg = Config {
        max_rule_expansion: 5,
        ..Config::classbench()
    };
    let found = limit_errors(&errors_of(
        &[("gateway.fg", "default drop\ndport { 1, 2, 3 } drop\n")],
        &cfg,
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].1.contains("up to 6 table rules"), "{found:?}");
}

#[test]
fn tenant_and_total_rule_limits_point_at_the_tenant_or_rule_past_them() {
    let t = |name: &str, net: &str, rules: &str| {
        format!("tenant {name}\nprefix {net}\ndefault drop\n{rules}")
    };
    let (a, b) = (
        t("alpha", "192.0.2.0/24", "proto tcp pass\n"),
        t(
            "beta",
            "198.51.100.0/24",
            "proto udp pass\nproto tcp pass\n",
        ),
    );
    let files = [
        ("gateway.fg", "default drop\nproto icmp drop\n"),
        ("beta.fg", b.as_str()),
        ("alpha.fg", a.as_str()),
    ];
    let cfg = Config {
        max_tenants: 1,
        max_total_rules: 3,
        ..Config::default()
    };
    let found = limit_errors(&errors_of(&files, &cfg));
    let at: Vec<&str> = found.iter().map(|(at, _)| at.as_str()).collect();
    // Tenants by name: beta is the second; rules gateway, alpha, beta: beta's second.
    assert_eq!(at, ["beta.fg:1:8", "beta.fg:5:1"], "{found:?}");
}

#[test]
fn a_100k_rule_tenant_is_within_the_default_limits() {
    let mut acme = String::from("tenant acme\nprefix 10.0.0.0/8\ndefault drop\n");
    for i in 0..100_000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        acme.push_str(&format!(
            "saddr 100.{a}.{b}.{c} daddr 10.{a}.{b}.{c} proto tcp dport {{ 80, 443 }} pass\n"
        ));
    }
    let Ok(rs) =
        Ruleset::parse_files(&[("gateway.fg", "default drop\n"), ("acme.fg", acme.as_str())])
    else {
        panic!("does not parse");
    };
    let config = Config {
        shadow_window: 0, // not what this test is about; slow in a debug build
        ..Config::default()
    };
    let v = match validate(rs, &config) {
        Ok(v) => v,
        Err(e) => panic!("a 100k-rule tenant is refused: {}", e.errors[0]),
    };
    assert_eq!(v.tenants()[0].rules.len(), 100_000);
}

#[test]
fn a_file_of_garbage_reports_a_bounded_number_of_errors() {
    let garbage = "x\n".repeat(1_000_000);
    let e = Ruleset::parse_files(&[("gateway.fg", garbage.as_str())]).unwrap_err();
    assert_eq!(e.errors.len(), 101);
    let last = &e.errors[100];
    assert!(last.message.contains("too many errors"), "{last}");
    assert_eq!(last.location.to_string(), "gateway.fg:101:1");
}

/// Filters as ClassBench's firewall seeds write them: ICMP (and GRE) with
/// port ranges, next to the usual TCP / UDP / any-protocol ones.
const FW_FILTERS: &str = "\
@10.0.0.0/8\t192.0.2.0/24\t0 : 65535\t1024 : 65535\t0x01/0xFF\t0x0000/0x0000
@10.0.0.0/8\t192.0.2.0/24\t0 : 65535\t0 : 65535\t0x01/0xFF\t0x0000/0x0000
@0.0.0.0/0\t192.0.2.0/24\t53 : 53\t0 : 65535\t0x2F/0xFF\t0x0000/0x0000
@0.0.0.0/0\t192.0.2.0/24\t0 : 65535\t80 : 80\t0x00/0x00\t0x0000/0x0000
@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000
";

#[test]
fn classbench_filters_with_ports_on_icmp_import_and_never_match_icmp_by_port() {
    use fluxgate_ruleset::classbench::{header, parse_ruleset};
    use fluxgate_ruleset::{Classifier, CompileOptions, compile_with, reference};
    let rs = parse_ruleset("fw1", FW_FILTERS).expect("parses");
    let rs = match validate(rs, &Config::classbench()) {
        Ok(rs) => rs,
        Err(e) => panic!("refused: {}", e.render()),
    };
    let tables = Classifier::new(
        compile_with(&rs, &CompileOptions::default()).expect("compiles"),
        [],
    );
    // (packet as a ClassBench trace writes it, the filter that decides on the wire)
    let cases = [
        // ICMP "ports" 2000/3000 are in filter 1's range, but ICMP carries no ports:
        // filter 2 (ICMP, ports 0:65535 = any) decides.
        (header(0x0a00_0001, 0xc000_0201, 2000, 3000, 1), 2),
        // GRE from "port" 53: filter 3 never matches, the any-protocol filters
        // 4 (dport 80: TCP/UDP only) neither; 5 does.
        (header(0x0a00_0001, 0xc000_0201, 53, 80, 47), 5),
        (header(0x0a00_0001, 0xc000_0201, 53, 80, 6), 4),
        (header(0x0a00_0001, 0xc000_0201, 53, 80, 17), 4),
    ];
    for (p, want) in cases {
        let p = p.on_the_wire();
        let d = reference::classify(&rs, &p);
        assert_eq!(
            d.rule.as_ref().map(|r| r.position),
            Some(want),
            "{p}: {}",
            d.reason
        );
        assert!(tables.decide(&p).same_outcome(&d), "{p}");
    }
}

#[test]
fn classbench_validation_errors_point_at_the_filter_and_field() {
    use fluxgate_ruleset::classbench::parse_ruleset;
    // Under the default Config (not classbench), ports on ICMP are refused, at the field.
    let rs = parse_ruleset("fw1", FW_FILTERS).expect("parses");
    let e = validate(rs, &Config::default()).expect_err("refused");
    let at: Vec<String> = e.errors.iter().map(|d| d.location.to_string()).collect();
    // `1024 : 65535` on ICMP; `53 : 53` on GRE; `80 : 80` without a protocol
    assert_eq!(at, ["fw1:1:36", "fw1:3:25", "fw1:4:35"]);
    // A limit names the filter past it.
    let cfg = Config {
        max_total_rules: 3,
        ..Config::classbench()
    };
    let rs = parse_ruleset("fw1", FW_FILTERS).expect("parses");
    let e = validate(rs, &cfg).expect_err("refused");
    assert_eq!(e.errors[0].location.to_string(), "fw1:4:1");
}

#[test]
fn every_synthetic_classbench_family_imports_from_its_text() {
    use fluxgate_ruleset::classbench::parse_ruleset;
    use fluxgate_testkit::synth::{Family, classbench_like};
    for family in [Family::Acl, Family::Fw, Family::Ipc] {
        let text: String = classbench_like(family, 2000, 7)
            .iter()
            .map(|f| format!("{f}\n"))
            .collect();
        let rs = parse_ruleset("synth", &text).expect("parses");
        if let Err(e) = validate(rs, &Config::classbench()) {
            panic!("{family:?}: {}", e.errors[0]);
        }
    }
}

#[test]
fn shadow_analysis_does_not_compare_long_lists_pair_by_pair() {
    // Rules of 4096 ports each, all but the last shared: each comparison of
    // two of them took 8M steps, and each rule is compared with the 32
    // before it (2.5e10 steps here). Within every limit, so validation runs.
    let shared: Vec<String> = (1..=4095u32).map(|p| p.to_string()).collect();
    let mut acme = format!(
        "tenant acme\nprefix 203.0.113.0/24\ndefault drop\nset s {{ {} }}\n",
        shared.join(", ")
    );
    for i in 0..90u32 {
        acme.push_str(&format!("proto tcp dport {{ @s, {} }} pass\n", 10_000 + i));
    }
    let started = std::time::Instant::now();
    let rs = Ruleset::parse_files(&[("gateway.fg", "default drop\n"), ("acme.fg", acme.as_str())])
        .map_err(|e| e.errors[0].to_string())
        .expect("parses");
    let v = validate(rs, &Config::default())
        .map_err(|e| e.errors[0].to_string())
        .expect("valid");
    assert_eq!(v.tenants()[0].rules.len(), 90);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_file_name_that_is_not_printable_is_refused_and_shown_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::ruleset("names");
    s.write("\u{1b}[2J.fg", "tenant x\n");
    std::fs::write(
        s.dir().join(std::ffi::OsStr::from_bytes(b"caf\xe9.fg")),
        "tenant x\n",
    )
    .expect("write");
    let e = load_err(s.dir());
    let names: Vec<&str> = e.errors.iter().map(file_name).collect();
    assert_eq!(names, ["\\u{1b}[2J.fg", "caf\u{fffd}.fg"], "{}", shown(&e));
    assert!(!shown(&e).contains('\u{1b}'));
}

#[test]
fn reading_named_files_only_keeps_the_rules_of_the_whole_directory() {
    let s = Scratch::ruleset("named");
    std::os::unix::fs::symlink(s.path("acme.fg"), s.path("bob.fg")).expect("symlink");
    // A listed file that is a link is refused, as when the whole directory is read.
    let e = fluxgate_ruleset::read_dir_files_named(s.dir(), &["bob.fg"]).expect_err("a link");
    assert!(
        only_error(&e).message.contains("symbolic link"),
        "{}",
        shown(&e)
    );
    // A listed file that is not there is left out (its tenant is being removed),
    // an unlisted one is not read at all, and a name with a path is refused.
    let files =
        fluxgate_ruleset::read_dir_files_named(s.dir(), &["gone.fg", "acme.fg"]).expect("read");
    let names: Vec<&str> = files
        .iter()
        .map(|(p, _)| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
        })
        .collect();
    assert_eq!(names, ["acme.fg"]);
    assert!(fluxgate_ruleset::read_dir_files_named(s.dir(), &["../acme.fg"]).is_err());
}
