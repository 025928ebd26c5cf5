//! fluxgate beside its peers (issue #4), in one run (root needed).
//!
//! 1. **xdp-filter, same harness.** `xdp-filter` (Debian `xdp-tools`) is loaded on a
//!    veth end in a private network namespace (native mode if the driver takes it,
//!    else skb; the summary says which), its program found by the interface's XDP
//!    program id and run with `BPF_PROG_TEST_RUN` on `xdp_baseline`'s 64-byte
//!    TCP/IPv4 frame (repeat 1,000,000, kernel-reported ns), with 0, 1,000 and 10,000
//!    entries in each of its IPv4 and port maps (its IPv4 map holds at most 10,000).
//!    Entries are written into its maps directly (BPF_MAP_UPDATE_ELEM, the values its
//!    CLI writes; the CLI needs ≈ 54 s for 10,000), none matching the frame, so it
//!    passes after every lookup. Beside it: fluxgate's bare `XDP_PASS` floor,
//!    parse-and-pass, and the classifier with ClassBench-like ACL rulesets of 1k and
//!    10k rules, on the same frame and on a 64-byte trace packet that matches a rule.
//!    The summary takes each program's median of 7 rounds, every round running every
//!    program once (interleaved, so drift on a busy machine hits all alike).
//!    xdp-filter runs in a private mount namespace with its own bpffs, so its pins
//!    never touch `/sys/fs/bpf/xdp-filter`; it is unloaded with `xdp-filter unload`.
//! 2. **nftables vs fluxgate under a bounded flood.** Two namespaces joined by a veth
//!    pair (`fluxgate_testkit::net`); the sender floods 64-byte UDP frames (one flow,
//!    `sendmmsg`) for 2 s per measurement (at most 5M datagrams) to a socket in the
//!    other namespace. Packets/s = datagrams the receiving *socket* got ÷ send time.
//!    Measured in 5 interleaved rounds (median; "x paired" is the median of each
//!    round's ratio to that round's no-filter run): no filter; an nftables netdev ingress
//!    chain on the receiving veth with the ClassBench-like ACL rules translated one to
//!    one (`ip saddr … ip daddr … tcp|udp|th sport … dport … accept`, policy drop) plus
//!    a last rule accepting the flood, loaded with one `nft -f`; fluxgate attached
//!    (native XDP on the veth if the driver takes it) with the same rules compiled. The
//!    flood matches none of the ACL rules (checked; a rule that would match it is left
//!    out of both, and counted), so both pass it only by the last rule, and nftables
//!    walks every rule. Each filter also runs with the flood's rule alone (`1 rule`):
//!    what attaching it costs before any rule is walked. On veth the whole receive
//!    path runs on the sending core, so a filter's per-packet cost shows up as a lower
//!    send rate; the "sent" column says whether anything was lost on the way.
//!    Both filters' hooks see only traffic between the bench's own namespaces.
//!
//! Run: `cargo bench --bench peers` (as root; needs `xdp-filter`, `nft`, `nsenter`,
//! `unshare`; ≈ 4 minutes). Criterion measures the kernel part; the summary tables
//! come at the end (`FLUXGATE_PEERS_NO_CRITERION=1` prints only them).

mod flood;
mod xdp_filter;

use std::{
    net::Ipv4Addr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput};
use fluxgate::{
    common::{GatewayConfig, Outcome},
    dataplane::{
        AttachMode, Attachment, Program, StagedImage, Tables,
        frame::{FrameSpec, L4},
    },
    ruleset::{
        CompileOptions, Config, PacketHeader, PortRange, classbench, classbench::Filter,
        compile_with, validate,
    },
};
use fluxgate_testkit::{
    net::{self, ADDR_A, ADDR_B, IF_B, Link},
    synth::{self, Family},
};
use xdp_filter::XdpFilter;

/// Repeats per BPF_PROG_TEST_RUN in the summary.
const REPEAT: u32 = 1_000_000;
/// Interleaved rounds in the kernel summary and in the flood.
const KERNEL_ROUNDS: usize = 7;
const FLOOD_ROUNDS: usize = 5;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

// ---------------------------------------------------------------------------
// Rules and frames.

fn acl_filters(n: usize) -> Vec<Filter> {
    synth::classbench_like(Family::Acl, n, 42)
}

fn frame_of(spec: &mut FrameSpec) -> Vec<u8> {
    spec.payload = vec![0; 64 - (14 + 20 + 20)];
    let f = spec.build();
    assert_eq!(f.len(), 64);
    f
}

/// `xdp_baseline`'s 64-byte TCP/IPv4 reference frame and its header.
fn reference() -> (Vec<u8>, PacketHeader) {
    let header: PacketHeader = "tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags A"
        .parse()
        .expect("packet");
    let mut spec = FrameSpec::new(
        Ipv4Addr::new(198, 51, 100, 7).into(),
        Ipv4Addr::new(203, 0, 113, 10).into(),
        L4::Tcp {
            sport: 40000,
            dport: 443,
            flags: 0x10,
        },
    );
    (frame_of(&mut spec), header)
}

/// A 64-byte TCP frame of the ACL trace that matches one of `filters`, and its header.
fn matching(filters: &[Filter]) -> (Vec<u8>, PacketHeader) {
    let entry = synth::trace(filters, 1_000, 7)
        .into_iter()
        .find(|e| e.header.proto == 6 && e.expected.is_some())
        .expect("a TCP trace packet matching a rule");
    let mut spec = FrameSpec::from_header(&entry.header).expect("frame");
    (frame_of(&mut spec), entry.header)
}

/// The first filter (1-based) matching `p`, as the summary shows it.
fn decided_by(filters: &[Filter], p: &PacketHeader) -> String {
    match filters.iter().position(|f| f.matches(p)) {
        Some(i) => format!("rule {}", i + 1),
        None => "default".into(),
    }
}

/// The ACL rules the flood matches none of, then one rule passing the flood; also how
/// many ACL rules had to be left out.
fn flood_rules(n: usize) -> (Vec<Filter>, usize) {
    let flood = classbench::header(
        u32::from(ADDR_A),
        u32::from(ADDR_B),
        flood::SPORT,
        flood::DPORT,
        17,
    );
    let all = acl_filters(n);
    let mut kept: Vec<Filter> = all.iter().copied().filter(|f| !f.matches(&flood)).collect();
    let left_out = all.len() - kept.len();
    let host = |a: Ipv4Addr| format!("{a}/32").parse().expect("net");
    let port = |p| PortRange { lo: p, hi: p };
    kept.push(Filter {
        src: host(ADDR_A),
        dst: host(ADDR_B),
        sport: port(flood::SPORT),
        dport: port(flood::DPORT),
        proto: Some(17),
        flags: None,
    });
    (kept, left_out)
}

/// fluxgate loaded with `filters` compiled and published (the staged tables kept).
fn load_fluxgate(filters: &[Filter]) -> (Program, StagedImage) {
    let rs = validate(classbench::to_ruleset(filters), &Config::classbench()).expect("valid");
    let image = compile_with(&rs, &CompileOptions::default()).expect("compile");
    let pool = (image.cells() as u32 + 2).max(fluxgate::common::DEFAULT_POOL_CELLS);
    let mut program =
        Program::load_sized(&GatewayConfig::default(), pool).expect("load (needs root)");
    let staged = StagedImage::new(&mut program, &image).expect("stage");
    program.publish_image(&staged).expect("publish");
    (program, staged)
}

// ---------------------------------------------------------------------------
// Kernel ns/packet, side by side.

enum Runner<'a> {
    Floor(&'a Program),
    Fluxgate(&'a Program),
    XdpFilter(&'a XdpFilter),
}

impl Runner<'_> {
    /// `(verdict, kernel ns per run)`.
    fn run(&self, frame: &[u8], repeat: u32) -> (u32, u32) {
        let out = match self {
            Runner::Floor(p) => p.test_run_floor(frame, repeat),
            Runner::Fluxgate(p) => p.test_run(frame, repeat),
            Runner::XdpFilter(x) => return x.test_run(frame, repeat),
        };
        let out = out.expect("BPF_PROG_TEST_RUN");
        (out.verdict, out.duration.as_nanos() as u32)
    }
}

struct Case<'a> {
    name: String,
    runner: Runner<'a>,
    frame: Vec<u8>,
    decided: String,
}

struct KernelRow {
    name: String,
    ns: u32,
    verdict: u32,
    decided: String,
}

fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_DROP => "drop",
        XDP_PASS => "pass",
        _ => "other",
    }
}

fn kernel(criterion: Option<&mut Criterion>) -> (Vec<KernelRow>, Vec<String>) {
    let (frame, header) = reference();
    let floor = Program::load(&GatewayConfig::default())
        .expect("load the XDP program (benchmarks need root)");
    let parse = Program::load(&GatewayConfig::default()).expect("load");
    let acl: Vec<_> = [1_000, 10_000]
        .into_iter()
        .map(|n| {
            let filters = acl_filters(n);
            let (hit, hit_header) = matching(&filters);
            let (program, staged) = load_fluxgate(&filters);
            (n, filters, program, staged, hit, hit_header)
        })
        .collect();
    let mut notes = Vec::new();
    let entry_rules = acl_filters(10_000);
    let xdp_filters: Vec<(usize, XdpFilter)> = [0, 1_000, 10_000]
        .into_iter()
        .map(|n| {
            let mut x = XdpFilter::load();
            let (addrs, ports) = xdp_filter::entries(
                n,
                &entry_rules,
                &[Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(203, 0, 113, 10)],
                &[40000, 443],
            );
            let started = Instant::now();
            x.fill(&addrs, &ports);
            if n > 0 {
                // The entries are live: the last address as source, the last port as
                // destination, each gets the frame dropped (and the reference passes).
                let tcp = |dport| L4::Tcp {
                    sport: 40000,
                    dport,
                    flags: 0x10,
                };
                let by_addr = frame_of(&mut FrameSpec::new(
                    addrs[n - 1].into(),
                    Ipv4Addr::new(203, 0, 113, 10).into(),
                    tcp(443),
                ));
                let by_port = frame_of(&mut FrameSpec::new(
                    Ipv4Addr::new(198, 51, 100, 7).into(),
                    Ipv4Addr::new(203, 0, 113, 10).into(),
                    tcp(ports[n - 1]),
                ));
                assert_eq!(x.test_run(&by_addr, 1).0, XDP_DROP, "xdp-filter address entry");
                assert_eq!(x.test_run(&by_port, 1).0, XDP_DROP, "xdp-filter port entry");
                notes.push(format!(
                    "xdp_filter_{n}: {n} IPv4 + {n} port entries written in {:.1} ms; attached in {} mode",
                    started.elapsed().as_secs_f64() * 1e3,
                    x.mode
                ));
            }
            (n, x)
        })
        .collect();

    let mut cases = vec![
        Case {
            name: "xdp_pass_floor".into(),
            runner: Runner::Floor(&floor),
            frame: frame.clone(),
            decided: String::new(),
        },
        Case {
            name: "parse_and_pass".into(),
            runner: Runner::Fluxgate(&parse),
            frame: frame.clone(),
            decided: String::new(),
        },
    ];
    for (n, filters, program, _, hit, hit_header) in &acl {
        cases.push(Case {
            name: format!("fluxgate_acl_{}k", n / 1000),
            runner: Runner::Fluxgate(program),
            frame: frame.clone(),
            decided: decided_by(filters, &header),
        });
        cases.push(Case {
            name: format!("fluxgate_acl_{}k_match", n / 1000),
            runner: Runner::Fluxgate(program),
            frame: hit.clone(),
            decided: decided_by(filters, hit_header),
        });
    }
    for (n, x) in &xdp_filters {
        cases.push(Case {
            name: format!("xdp_filter_{n}"),
            runner: Runner::XdpFilter(x),
            frame: frame.clone(),
            decided: "no entry".into(),
        });
    }

    if let Some(c) = criterion {
        let mut group = c.benchmark_group("peers_kernel_hot");
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(2));
        group.warm_up_time(Duration::from_millis(500));
        for case in &cases {
            group.bench_with_input(
                BenchmarkId::new(case.name.as_str(), ""),
                &case.frame,
                |b, f| {
                    // The kernel times `iters` runs and reports the mean per run.
                    b.iter_custom(|iters| {
                        let repeat = iters.clamp(1, u64::from(u32::MAX)) as u32;
                        let (_, ns) = case.runner.run(f, repeat);
                        Duration::from_nanos(u64::from(ns)) * repeat
                    })
                },
            );
        }
        group.finish();
    }

    let mut samples: Vec<Vec<(u32, u32)>> = vec![Vec::new(); cases.len()];
    for _ in 0..KERNEL_ROUNDS {
        for (case, s) in cases.iter().zip(&mut samples) {
            s.push(case.runner.run(&case.frame, REPEAT));
        }
    }
    let rows = cases
        .iter()
        .zip(samples)
        .map(|(case, mut s)| {
            s.sort_by_key(|&(_, ns)| ns);
            let (verdict, ns) = s[s.len() / 2];
            KernelRow {
                name: case.name.clone(),
                ns,
                verdict,
                decided: case.decided.clone(),
            }
        })
        .collect();
    (rows, notes)
}

// ---------------------------------------------------------------------------
// nftables vs fluxgate under the flood.

enum Setup {
    NoFilter,
    Nft(String),
    Fluxgate(Vec<Filter>),
}

struct FloodRow {
    name: String,
    runs: Vec<flood::Run>,
    notes: Vec<String>,
}

impl FloodRow {
    fn median(&self) -> flood::Run {
        let mut runs = self.runs.clone();
        runs.sort_by(|a, b| a.pps().total_cmp(&b.pps()));
        runs[runs.len() / 2]
    }
}

fn measure(link: &Link, setup: &Setup) -> (flood::Run, String) {
    match setup {
        Setup::NoFilter => (flood::once(link), String::new()),
        Setup::Nft(text) => {
            let load = flood::nft_load(link, text);
            let run = flood::once(link);
            flood::nft_unload(link);
            (run, format!("nft -f {:.0} ms", load.as_secs_f64() * 1e3))
        }
        Setup::Fluxgate(rules) => {
            let (program, staged) = load_fluxgate(rules);
            // Auto: native XDP on the veth, generic only if the driver refuses.
            let attached: Attachment = link.b.run(move || {
                program
                    .attach(IF_B, AttachMode::Auto)
                    .expect("attach fluxgate")
            });
            let mode = match attached.fallback_reason() {
                Some(why) => format!("{} XDP (fallback: {why})", attached.mode()),
                None => format!("{} XDP", attached.mode()),
            };
            let before = attached.program().counters().expect("counters");
            let run = flood::once(link);
            let after = attached.program().counters().expect("counters");
            let delta = |o| after.outcome(o).packets - before.outcome(o).packets;
            let note = format!(
                "{mode}, its counters: {} passed, {} dropped",
                delta(Outcome::Passed),
                delta(Outcome::Dropped)
            );
            drop(attached);
            drop(staged);
            (run, note)
        }
    }
}

/// `1k`, `10k`; `0` is the flood's rule alone (what attaching costs).
fn size_name(n: usize) -> String {
    if n == 0 {
        "1 rule".into()
    } else {
        format!("{}k", n / 1000)
    }
}

fn floods() -> (Vec<FloodRow>, Vec<String>) {
    let mut notes = Vec::new();
    let mut setups = vec![("no filter".to_owned(), Setup::NoFilter)];
    let sets: Vec<(usize, Vec<Filter>)> = [0, 1_000, 10_000]
        .into_iter()
        .map(|n| {
            let (rules, left_out) = flood_rules(n);
            if n == 0 {
                return (n, rules);
            }
            notes.push(format!(
                "{}k: {} rules ({} ACL rules, {left_out} left out because they would match the flood, + the flood's rule)",
                n / 1000,
                rules.len(),
                n - left_out
            ));
            (n, rules)
        })
        .collect();
    for (n, rules) in &sets {
        setups.push((
            format!("nftables {}", size_name(*n)),
            Setup::Nft(flood::nft_ruleset(rules)),
        ));
    }
    for (n, rules) in sets {
        setups.push((format!("fluxgate {}", size_name(n)), Setup::Fluxgate(rules)));
    }
    let link = Link::new();
    let mut rows: Vec<FloodRow> = setups
        .iter()
        .map(|(name, _)| FloodRow {
            name: name.clone(),
            runs: Vec::new(),
            notes: Vec::new(),
        })
        .collect();
    for _ in 0..FLOOD_ROUNDS {
        for ((_, setup), row) in setups.iter().zip(&mut rows) {
            let (run, note) = measure(&link, setup);
            row.runs.push(run);
            row.notes.push(note);
        }
    }
    drop(link);
    (rows, notes)
}

// ---------------------------------------------------------------------------

fn require_tools() {
    for tool in ["xdp-filter", "nft", "nsenter", "unshare", "ip"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} not found: the peers bench needs xdp-tools, nftables, util-linux, iproute2 (cargo xtask setup)"
        );
    }
}

fn main() {
    net::require_root();
    require_tools();
    let mut criterion = std::env::var_os("FLUXGATE_PEERS_NO_CRITERION")
        .is_none()
        .then(|| Criterion::default().configure_from_args());
    let (kernel_rows, kernel_notes) = kernel(criterion.as_mut());
    if let Some(c) = criterion {
        c.final_summary();
    }
    let (flood_rows, flood_notes) = floods();

    let floor = kernel_rows[0].ns.max(1);
    eprintln!(
        "\npeers summary 1: kernel ns/packet, BPF_PROG_TEST_RUN × {REPEAT}, 64-byte TCP/IPv4, \
         median of {KERNEL_ROUNDS} interleaved rounds (same run)"
    );
    eprintln!(
        "  {:<24} {:>6} {:>8} {:>8}  decided by",
        "program", "ns", "x floor", "verdict"
    );
    for r in &kernel_rows {
        eprintln!(
            "  {:<24} {:>6} {:>8.2} {:>8}  {}",
            r.name,
            r.ns,
            f64::from(r.ns) / f64::from(floor),
            verdict_name(r.verdict),
            r.decided
        );
    }
    for n in kernel_notes {
        eprintln!("  note: {n}");
    }

    let base = flood_rows[0].median().pps();
    eprintln!(
        "\npeers summary 2: UDP flood a → b over veth, 64-byte frames, one flow, {} s per run, \
         median of {FLOOD_ROUNDS} interleaved rounds; pps = datagrams the socket in b received",
        flood::TIME.as_secs()
    );
    eprintln!(
        "  {:<16} {:>10} {:>10} {:>12} {:>10}  {:<34} notes (per round)",
        "filter", "sent pps", "recv pps", "x no filter", "x paired", "recv pps per round"
    );
    for r in &flood_rows {
        let m = r.median();
        let per_round = r
            .runs
            .iter()
            .map(|run| format!("{:.0}", run.pps()))
            .collect::<Vec<_>>()
            .join(" ");
        // The ratio to the no-filter run of the same round, median over rounds: less
        // exposed to load that comes and goes on a shared machine.
        let mut paired: Vec<f64> = r
            .runs
            .iter()
            .zip(&flood_rows[0].runs)
            .map(|(run, none)| run.pps() / none.pps())
            .collect();
        paired.sort_by(f64::total_cmp);
        let paired = paired[paired.len() / 2];
        let notes: Vec<&str> = r
            .notes
            .iter()
            .map(String::as_str)
            .filter(|n| !n.is_empty())
            .collect();
        eprintln!(
            "  {:<16} {:>10.0} {:>10.0} {:>12.3} {:>10.3}  {:<34} {}",
            r.name,
            m.sent as f64 / m.secs,
            m.pps(),
            m.pps() / base,
            paired,
            per_round,
            notes.join("; ")
        );
    }
    for n in flood_notes {
        eprintln!("  note: {n}");
    }
}
