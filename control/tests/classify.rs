//! `fluxgate classify`: every engine (reference, userspace tables, kernel
//! tables through BPF_PROG_TEST_RUN) names the same deciding rule for each
//! packet of a ClassBench trace, with ClassBench filters or a ruleset
//! directory, and `--json` adds each packet's verdict.

mod common;

use common::{Scratch, fluxgate, ok, write};
use fluxgate_ruleset::{Config, classbench, compile, validate};
use fluxgate_testkit::{
    net,
    synth::{self, Family},
};

/// Four ClassBench filters (action pass, default drop): TCP to port 80
/// from 10.1/16; UDP from ports 1024+ to 192.168.1/24; anything from 10/8;
/// any protocol to port 25 (which only TCP and UDP packets carry).
const FILTERS: &str = "\
@10.1.0.0/16\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF
@0.0.0.0/0\t192.168.1.0/24\t1024 : 65535\t0 : 65535\t0x11/0xFF
@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00
@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t25 : 25\t0x00/0x00
";

/// src dst sport dport proto, addresses as integers.
const TRACE: &str = "\
167838211\t16843009\t5000\t80\t6
167903233\t16843009\t5000\t23\t6
184549377\t3232235781\t2000\t53\t17
184549377\t3232235781\t53\t53\t17
184549377\t3232235781\t2000\t80\t6
184549377\t3232236037\t2000\t80\t6
184549377\t16843009\t2000\t25\t47
184549377\t16843009\t2000\t25\t6
";

/// What each packet of [`TRACE`] meets: 10.1.2.3 → 1.1.1.1:80, 10.2.0.1 →
/// 1.1.1.1:23, 11.0.0.1:2000 → 192.168.1.5:53/udp, the same from port 53,
/// 11.0.0.1 → 192.168.1.5:80, 11.0.0.1 → 192.168.2.5:80, then GRE and TCP
/// from 11.0.0.1 to 1.1.1.1 with ports 2000 → 25 in the trace: the GRE
/// packet carries no ports on the wire, so filter 4 is not its match in any
/// engine (ClassBench itself would say 4).
const BY_FILTER: [(&str, &str); 8] = [
    ("1", "pass"),
    ("3", "pass"),
    ("2", "pass"),
    ("0", "drop"),
    ("0", "drop"),
    ("0", "drop"),
    ("0", "drop"),
    ("4", "pass"),
];

/// The same packets under the ruleset of
/// `every_engine_names_the_same_rules_for_a_ruleset`: gateway default pass,
/// `proto tcp dport 23 drop`; acme owns 192.168.1.0/24, default drop,
/// `proto udp dport 53 pass`.
const BY_RULESET: [(&str, &str); 8] = [
    ("gateway default", "pass"),
    ("gateway#1", "drop"),
    ("acme#1", "pass"),
    ("acme#1", "pass"),
    ("acme default", "drop"),
    ("gateway default", "pass"),
    ("gateway default", "pass"),
    ("gateway default", "pass"),
];

const ENGINES: [&str; 3] = ["reference", "userspace", "kernel"];

fn classify(s: &Scratch, source: &[&str], engine: &str, json: bool) -> Vec<u8> {
    let trace = s.rules.join("trace").display().to_string();
    let mut args = vec!["classify", "--trace", &trace, "--engine", engine];
    args.extend_from_slice(source);
    if json {
        args.push("--json");
    }
    ok(fluxgate(s, &args)).stdout
}

/// Every engine prints `expected`'s rules one per line, and the same rules
/// with their verdicts as JSON.
fn assert_engines_agree(s: &Scratch, source: &[&str], expected: &[(&str, &str)]) {
    let lines: String = expected
        .iter()
        .map(|(rule, _)| format!("{rule}\n"))
        .collect();
    for engine in ENGINES {
        let text = classify(s, source, engine, false);
        assert_eq!(String::from_utf8_lossy(&text), lines, "{engine}");
        let json: serde_json::Value =
            serde_json::from_slice(&classify(s, source, engine, true)).expect("classify JSON");
        assert_eq!(json["engine"], engine);
        let got: Vec<(u64, &str, &str)> = json["packets"]
            .as_array()
            .expect("packets")
            .iter()
            .map(|p| {
                (
                    p["packet"].as_u64().expect("packet"),
                    p["decided_by"].as_str().expect("decided_by"),
                    p["verdict"].as_str().expect("verdict"),
                )
            })
            .collect();
        let want: Vec<(u64, &str, &str)> = (1..)
            .zip(expected)
            .map(|(i, &(rule, verdict))| (i, rule, verdict))
            .collect();
        assert_eq!(got, want, "{engine} --json");
    }
}

#[test]
fn every_engine_names_the_same_rules_for_classbench_filters() {
    net::require_root();
    let s = Scratch::new("cls-cb");
    write(&s.rules, "filters", FILTERS);
    write(&s.rules, "trace", TRACE);
    let filters = s.rules.join("filters").display().to_string();
    assert_engines_agree(&s, &["--classbench", &filters], &BY_FILTER);
}

#[test]
fn every_engine_names_the_same_rules_for_a_ruleset() {
    net::require_root();
    let s = Scratch::new("cls-rs");
    write(&s.rules, "trace", TRACE);
    let dir = s.rules_dir("rs");
    write(
        &dir,
        "gateway.fg",
        "default pass\nproto tcp dport 23 drop\n",
    );
    write(
        &dir,
        "acme.fg",
        "tenant acme\nprefix 192.168.1.0/24\ndefault drop\nproto udp dport 53 pass\n",
    );
    let dir = dir.display().to_string();
    assert_engines_agree(&s, &["--ruleset", &dir], &BY_RULESET);
}

#[test]
fn a_bad_or_unreadable_trace_is_rejected_with_its_location() {
    let s = Scratch::new("cls-bad");
    write(&s.rules, "filters", FILTERS);
    write(&s.rules, "trace", "167838211\t16843009\t5000\n");
    let filters = s.rules.join("filters").display().to_string();
    let trace = s.rules.join("trace").display().to_string();
    let out = fluxgate(
        &s,
        &["classify", "--classbench", &filters, "--trace", &trace],
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "ruleset/trace rejected exit code"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{trace}:1:1")), "{err}");
    assert!(
        err.contains("trace rejected"),
        "the trace is named, not the ruleset: {err}"
    );
    assert!(out.stdout.is_empty(), "nothing printed on error");
    // An unreadable trace is refused the same way, naming the file.
    let missing = s.rules.join("missing").display().to_string();
    let out = fluxgate(
        &s,
        &["classify", "--classbench", &filters, "--trace", &missing],
    );
    assert_eq!(out.status.code(), Some(7), "unreadable trace exit code");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{missing}: ")), "{err}");
    assert!(err.contains("trace rejected"), "{err}");
    // Scripts get the same with --json: the message and the file.
    let out = fluxgate(
        &s,
        &[
            "classify",
            "--classbench",
            &filters,
            "--trace",
            &missing,
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(7));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(
        json["error"]["message"], "trace rejected: 1 error",
        "{json}"
    );
    assert_eq!(
        json["error"]["diagnostics"][0]["file"],
        missing.as_str(),
        "{json}"
    );
}

#[test]
fn the_kernel_engine_takes_rulesets_larger_than_an_attachment_s_default_pool() {
    net::require_root();
    let s = Scratch::new("cls-big");
    let filters = synth::classbench_like(Family::Fw, 160_000, 42);
    let rs = validate(classbench::to_ruleset(&filters), &Config::classbench()).expect("valid");
    let cells = compile(&rs, &Config::classbench())
        .expect("compile")
        .cells();
    assert!(
        cells > fluxgate_common::DEFAULT_POOL_CELLS as usize,
        "the premise: {cells} cells, more than an attachment's default pool"
    );
    let text: String = filters.iter().map(|f| format!("{f}\n")).collect();
    write(&s.rules, "filters", &text);
    let v4 = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(a) => u32::from(a),
        std::net::IpAddr::V6(_) => unreachable!("ClassBench is IPv4"),
    };
    let trace: String = synth::packets(&filters, 200, 7)
        .iter()
        .map(|p| {
            format!(
                "{}\t{}\t{}\t{}\t{}\n",
                v4(p.src),
                v4(p.dst),
                p.sport.unwrap_or(0),
                p.dport.unwrap_or(0),
                p.proto
            )
        })
        .collect();
    write(&s.rules, "trace", &trace);
    let source = s.rules.join("filters").display().to_string();
    let source = ["--classbench", source.as_str()];
    let kernel = classify(&s, &source, "kernel", false);
    assert_eq!(kernel, classify(&s, &source, "userspace", false));
    assert_eq!(String::from_utf8_lossy(&kernel).lines().count(), 200);
}

#[test]
fn rules_on_interfaces_match_no_trace_packet_in_any_engine() {
    // Trace packets come from no interface. The kernel's test runs say they
    // arrive on `lo`, so `iif lo` must not match there either; an interface
    // this host lacks is no reason to refuse the ruleset.
    net::require_root();
    let s = Scratch::new("cls-iif");
    write(&s.rules, "trace", TRACE);
    let dir = s.rules_dir("rs");
    write(
        &dir,
        "gateway.fg",
        "default pass\niif lo drop\niif fgt-nowhere0 drop\n",
    );
    let dir = dir.display().to_string();
    let expected = [("gateway default", "pass"); BY_RULESET.len()];
    assert_engines_agree(&s, &["--ruleset", &dir], &expected);
}
