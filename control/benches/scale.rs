//! fluxgate's control plane at thousands of tenants, beside nftables (issue #25,
//! "Proof"), in one run (root needed).
//!
//! For every N in `FLUXGATE_SCALE_TENANTS` (comma-separated, default
//! `1000,10000`) it writes a ruleset of N tenants — `gateway.fg` with `default
//! pass` and `proto tcp dport 23 drop`; `t<i>.fg` owning `A.B.C.0/24` (A = 10 +
//! i>>16, B = (i>>8)&255, C = i&255) with `default pass`, three rules and a
//! guard, so 10,000 tenants are 30,001 rules — checks it with `fluxgate check`,
//! and measures, in a network namespace of its own (a veth pair, XDP on one
//! end), with a temporary bpffs directory and state directories:
//!
//! - through the library (`fluxgate_control::Gateway`, what an embedding daemon
//!   does; each change opens the interface first, as the daemon example does),
//!   and through the release CLI (process start to exit, `-n NS --state DIR`):
//!   the first `load` (attach + apply), `apply` of the whole directory with one
//!   tenant's file changed (t0's 8080 becomes 8081, and back), `apply --tenant
//!   t0`, `rollback --tenant t0`, `status`, `stats`, and a metrics scrape (the
//!   library renders it; the CLI path starts `fluxgate serve --metrics` once and
//!   times an HTTP GET of `/metrics`); the state directory's size after the
//!   first load and its growth per one-tenant generation;
//! - nftables the way a hoster writes the same rules, in the same namespace: a
//!   table with a chain per tenant behind a verdict map (`ip daddr vmap
//!   @tenants`, each /24 → `jump t<i>`), `counter` on every rule and on each
//!   tenant's default: the whole load (`nft -f`), one tenant's chain replaced
//!   (`flush chain` and its rules again, one `nft -f`), and the listings with
//!   counters (`nft list ruleset`, `nft -j list ruleset`).
//!
//! Fast operations run up to 5 times, loads up to 3, each stopping early once
//! its samples took 25 s (loads: 15 s); the tables give median and min–max.
//! A size the gateway cannot take (over `Config::max_tenants` or the kernel's
//! tenant slots) is skipped with a note naming the error, not a hard-coded
//! limit. Namespace, pins and directories are removed by `Drop` guards, also
//! on panic.
//!
//! Run: `cargo bench -p fluxgate-control --bench scale` (as root; needs `nft`,
//! `ip`, `du`; ≈ 8 minutes at 1k + 10k on a busy 2-core machine). `RUST_LOG=info`
//! logs the library's apply phases with their durations to stderr.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use fluxgate_control::{ApplyOptions, AttachOptions, ControlError, Gateway, RulesetSource};
use fluxgate_testkit::{
    net::{self, Netns},
    scratch::ScratchDir,
};

/// The CLI under test (the bench profile's build: optimised).
const FLUXGATE: &str = env!("CARGO_BIN_EXE_fluxgate");
/// The veth end fluxgate attaches to.
const IFACE: &str = "fgs-b";
/// Its peer.
const PEER: &str = "fgs-a";
/// The nftables table.
const NFT_TABLE: &str = "fgscale";
/// Repetitions of fast operations and of loads.
const FAST_REPS: usize = 5;
const LOAD_REPS: usize = 3;
/// Stop repeating once the samples took this long.
const FAST_BUDGET: Duration = Duration::from_secs(25);
const LOAD_BUDGET: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Samples.

/// Durations of one operation's repetitions.
#[derive(Clone, Debug, Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn median(&self) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        match v.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2,
        }
    }

    fn min(&self) -> Duration {
        self.0.iter().copied().min().unwrap_or_default()
    }

    fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    /// `median (min–max, n×)`.
    fn show(&self) -> String {
        if self.0.is_empty() {
            return "–".into();
        }
        if self.0.len() == 1 {
            return format!("{} (1×)", ms(self.median()));
        }
        format!(
            "{} ({}–{}, {}×)",
            ms(self.median()),
            ms(self.min()),
            ms(self.max()),
            self.0.len()
        )
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// Runs `op(rep)` up to `max` times, stopping once the samples took `budget`
/// (at least once); each call returns the time it measured.
fn repeat(max: usize, budget: Duration, mut op: impl FnMut(usize) -> Duration) -> Samples {
    let mut samples = Samples::default();
    let mut total = Duration::ZERO;
    for rep in 0..max {
        let d = op(rep);
        samples.0.push(d);
        total += d;
        if total >= budget {
            break;
        }
    }
    samples
}

/// Times `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

// ---------------------------------------------------------------------------
// The ruleset, in both languages.

/// `A.B.C.0/24` of tenant `i`, as octets.
fn prefix(i: usize) -> [usize; 3] {
    [10 + (i >> 16), (i >> 8) & 255, i & 255]
}

fn tenant_fg(i: usize, port: u16) -> String {
    let [a, b, c] = prefix(i);
    format!(
        "tenant t{i}\nprefixes {{ {a}.{b}.{c}.0/24 }}\ndefault pass\n\
         proto tcp dport 22 drop\nproto tcp dport {port} drop\nproto udp dport 53 pass\n\
         guard \"tcp 192.0.2.1:4000 -> {a}.{b}.{c}.1:22 flags S\" drop\n"
    )
}

fn write_ruleset(dir: &Path, n: usize) {
    std::fs::write(
        dir.join("gateway.fg"),
        "default pass\nproto tcp dport 23 drop\n",
    )
    .expect("write gateway.fg");
    for i in 0..n {
        std::fs::write(dir.join(format!("t{i}.fg")), tenant_fg(i, 8080)).expect("write t<i>.fg");
    }
}

/// t0's second rule on `port`.
fn write_t0(dir: &Path, port: u16) {
    std::fs::write(dir.join("t0.fg"), tenant_fg(0, port)).expect("write t0.fg");
}

/// The port of t0's second rule in change number `rep` (8081, 8080, …),
/// given that the live rule has `live`.
fn flip(live: &mut u16) -> u16 {
    *live = if *live == 8080 { 8081 } else { 8080 };
    *live
}

fn nft_chain_rules(port: u16) -> [String; 4] {
    [
        "tcp dport 22 counter drop".into(),
        format!("tcp dport {port} counter drop"),
        "udp dport 53 counter accept".into(),
        // The tenant's default, counted as fluxgate counts it.
        "counter accept".into(),
    ]
}

fn nft_ruleset(n: usize) -> String {
    let mut s = format!("table ip {NFT_TABLE} {{\n");
    for i in 0..n {
        s += &format!("  chain t{i} {{\n");
        for r in nft_chain_rules(8080) {
            s += &format!("    {r}\n");
        }
        s += "  }\n";
    }
    s += "  map tenants {\n    type ipv4_addr : verdict\n    flags interval\n    elements = {\n";
    for i in 0..n {
        let [a, b, c] = prefix(i);
        s += &format!("      {a}.{b}.{c}.0/24 : jump t{i},\n");
    }
    s += "    }\n  }\n";
    s += "  chain forward {\n    type filter hook forward priority filter; policy accept;\n";
    s += "    tcp dport 23 counter drop\n    ip daddr vmap @tenants\n  }\n}\n";
    s
}

fn nft_chain_replace(port: u16) -> String {
    let mut s = format!("flush chain ip {NFT_TABLE} t0\n");
    for r in nft_chain_rules(port) {
        s += &format!("add rule ip {NFT_TABLE} t0 {r}\n");
    }
    s
}

// ---------------------------------------------------------------------------
// The world: namespace, pins, directories — all removed on drop.

/// A bpffs directory of this run, removed on drop (which detaches whatever
/// is still pinned there).
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop (`fluxgate serve`).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything one size runs in. Fields drop in order: pins (detaching), the
/// namespace (its veth pair and nft table with it), then the directories.
struct World {
    /// Tenants of its ruleset.
    tenants: usize,
    pins: PinDir,
    ns: Netns,
    rules: ScratchDir,
    work: ScratchDir,
}

impl World {
    fn new(n: usize) -> World {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pins = PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/fgt-scale-{}-{seq}",
            std::process::id()
        )));
        let ns = Netns::new();
        ns.ip(&["link", "add", PEER, "type", "veth", "peer", "name", IFACE]);
        ns.ip(&["link", "set", PEER, "up"]);
        ns.ip(&["link", "set", IFACE, "up"]);
        let rules = ScratchDir::new("scale-rules");
        let work = ScratchDir::new("scale-work");
        write_ruleset(rules.dir(), n);
        World {
            tenants: n,
            pins,
            ns,
            rules,
            work,
        }
    }

    fn state(&self, who: &str) -> PathBuf {
        self.work.path(&format!("state-{who}"))
    }

    fn gateway(&self) -> Gateway {
        Gateway::new()
            .with_bpffs(&self.pins.0)
            .with_state(self.state("lib"))
            .in_netns(Some(self.ns.name()))
    }

    /// `fluxgate -n NS --bpffs PINS --state DIR <args>`.
    fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(FLUXGATE);
        c.arg("-n")
            .arg(self.ns.name())
            .arg("--bpffs")
            .arg(&self.pins.0)
            .arg("--state")
            .arg(self.state("cli"))
            .args(args);
        c
    }

    /// Runs and times `fluxgate <args>` from start to exit.
    fn run_cli(&self, args: &[&str]) -> (Duration, Output) {
        let mut cmd = self.cli(args);
        timed(|| cmd.output().expect("run fluxgate"))
    }

    /// Runs and times `ip netns exec NS nft <args>`.
    fn nft(&self, args: &[&str]) -> (Duration, Output) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns.name(), "nft"])
            .args(args);
        let (d, out) = timed(|| cmd.output().expect("run nft"));
        (d, ok("nft", args, out))
    }
}

fn ok(what: &str, args: &[&str], out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

/// `du` of `dir`: (disk usage, apparent size), bytes.
fn du(dir: &Path) -> (u64, u64) {
    let one = |flag: &str| -> u64 {
        let out = Command::new("du")
            .arg(flag)
            .arg(dir)
            .output()
            .expect("run du");
        let out = ok("du", &[flag], out);
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.split_whitespace().next().unwrap_or("0");
        first.parse().expect("du prints a number")
    };
    (one("-sk") * 1024, one("-sb"))
}

fn bytes(b: u64) -> String {
    if b >= 10 << 20 {
        format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
    } else if b >= 10 << 10 {
        format!("{:.1} KiB", b as f64 / 1024.0)
    } else {
        format!("{b} B")
    }
}

/// Table pool cells for `n` tenants: the default (262,144 cells, 32 MiB)
/// holds about 10,000 tenants of this ruleset with room for generations; a
/// hoster with more sizes the pool at attach, as the bench does (8 cells a
/// tenant: the first load's 6.3 and one-tenant generations).
fn pool_cells(n: usize) -> u32 {
    u32::try_from(n * 8).unwrap_or(u32::MAX).max(262_144)
}

/// Whether `message` says the gateway cannot take this many tenants (the
/// validator's `Config::max_tenants`, the kernel's tenant slots, …).
fn is_capacity(message: &str) -> bool {
    message.to_lowercase().contains("tenant")
}

/// The line of `message` about tenants (and its continuation), for a note.
fn gist(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).collect();
    let Some(i) = lines
        .iter()
        .position(|l| l.to_lowercase().contains("tenant"))
    else {
        return message.trim().to_owned();
    };
    let mut out = lines[i].trim_start_matches(['x', ' ']).to_owned();
    if let Some(next) = lines.get(i + 1).and_then(|l| l.strip_prefix('|')) {
        out.push(' ');
        out.push_str(next.trim());
    }
    out
}

// ---------------------------------------------------------------------------
// Measurements.

/// One path's (library or CLI) results at one size.
#[derive(Default)]
struct Measured {
    check: Samples,
    load: Samples,
    apply_dir: Samples,
    apply_tenant: Samples,
    rollback: Samples,
    status: Samples,
    stats: Samples,
    scrape: Samples,
    /// State dir after the first load: (disk, apparent).
    state_loaded: (u64, u64),
    /// Growth of the state dir per one-tenant generation: (disk, apparent).
    state_per_gen: (i64, i64),
    /// Bytes and lines of one scrape; bytes of one `stats` output.
    scrape_bytes: usize,
    scrape_lines: usize,
    stats_bytes: usize,
}

#[derive(Default)]
struct Nft {
    load: Samples,
    chain: Samples,
    list: Samples,
    list_json: Samples,
    list_bytes: usize,
    list_json_bytes: usize,
}

struct Size {
    n: usize,
    lib: Measured,
    cli: Measured,
    nft: Nft,
}

/// The growth per generation from `before` to `after` over `gens`.
fn growth(before: (u64, u64), after: (u64, u64), gens: usize) -> (i64, i64) {
    let g = gens.max(1) as i64;
    (
        (after.0 as i64 - before.0 as i64) / g,
        (after.1 as i64 - before.1 as i64) / g,
    )
}

/// The library path. `Err`: the first load was refused for capacity.
fn library(w: &World) -> Result<Measured, String> {
    let gw = w.gateway();
    let source = RulesetSource::dir(w.rules.dir());
    let opts = ApplyOptions {
        reason: "scale bench".into(),
        ..ApplyOptions::default()
    };
    let check = repeat(LOAD_REPS, LOAD_BUDGET, |_| {
        let (d, res) = timed(|| fluxgate_control::check(&source));
        match res {
            Ok(_) => d,
            // The load below says why, and skips this size.
            Err(_) => Duration::from_secs(3600),
        }
    });
    let mut r = Measured {
        check,
        ..Measured::default()
    };
    let mut refused = None;
    r.load = repeat(LOAD_REPS, LOAD_BUDGET, |rep| {
        if rep > 0 {
            gw.detach(IFACE).expect("detach between loads");
        }
        let attach = AttachOptions {
            pool_cells: Some(pool_cells(w.tenants)),
            ..AttachOptions::default()
        };
        let (d, res) = timed(|| gw.load(IFACE, &source, attach, &opts));
        match res {
            Ok(_) => d,
            Err(e) if rep == 0 && is_capacity(&e.to_string()) => {
                refused = Some(gist(&e.to_string()));
                // Stop here: a budget of zero ends the repetition.
                Duration::from_secs(3600)
            }
            Err(e) => panic!("library load failed: {e}"),
        }
    });
    if let Some(e) = refused {
        return Err(e);
    }
    r.state_loaded = du(&w.state("lib"));

    // A change: open (under the lock), apply, as a daemon does per change.
    let change = |o: &ApplyOptions| -> Duration {
        let (d, res) = timed(|| -> Result<_, ControlError> {
            let mut it = gw.open(Some(IFACE))?;
            it.apply(&source, o)
        });
        let applied = res.expect("library apply");
        assert!(
            applied.changes_anything() && applied.refused.is_empty(),
            "the one-tenant change changed nothing or was refused: {applied:?}"
        );
        d
    };
    let mut port = 8080;
    r.apply_dir = repeat(FAST_REPS, FAST_BUDGET, |_| {
        write_t0(w.rules.dir(), flip(&mut port));
        change(&opts)
    });
    r.state_per_gen = growth(r.state_loaded, du(&w.state("lib")), r.apply_dir.0.len());
    let t0 = ApplyOptions {
        tenants: vec!["t0".into()],
        ..opts.clone()
    };
    r.apply_tenant = repeat(FAST_REPS, FAST_BUDGET, |_| {
        write_t0(w.rules.dir(), flip(&mut port));
        change(&t0)
    });
    r.rollback = repeat(FAST_REPS, FAST_BUDGET, |_| {
        let (d, res) = timed(|| -> Result<_, ControlError> {
            gw.open(Some(IFACE))?.rollback(Some("t0"), None)
        });
        res.expect("library rollback --tenant t0");
        d
    });
    r.status = repeat(FAST_REPS, FAST_BUDGET, |_| {
        let (d, res) = timed(|| gw.status(Some(IFACE)));
        res.expect("library status");
        d
    });
    r.stats = repeat(FAST_REPS, FAST_BUDGET, |_| {
        let (d, res) = timed(|| gw.stats(Some(IFACE), None));
        res.expect("library stats");
        d
    });
    r.scrape = repeat(FAST_REPS, FAST_BUDGET, |_| {
        let (d, res) = timed(|| gw.metrics());
        let text = res.expect("library metrics");
        r.scrape_bytes = text.len();
        r.scrape_lines = text.lines().count();
        d
    });
    gw.detach(IFACE).expect("detach after the library run");
    // Back to the ruleset as written, for the CLI.
    write_t0(w.rules.dir(), 8080);
    Ok(r)
}

/// An HTTP GET of `/metrics` from `addr`: (time, body).
fn scrape(addr: SocketAddr) -> (Duration, String) {
    timed(|| {
        let mut s = TcpStream::connect(addr).expect("connect to fluxgate serve");
        s.set_read_timeout(Some(Duration::from_secs(300)))
            .expect("read timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("send the request");
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).expect("read the response");
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(
            head.lines().next().is_some_and(|l| l.contains(" 200 ")),
            "scrape failed: {head}"
        );
        body.to_owned()
    })
}

/// The CLI path. `Err`: check or the first load was refused for capacity.
fn cli(w: &World) -> Result<Measured, String> {
    let rules = w.rules.dir().to_str().expect("UTF-8 temp path").to_owned();
    let mut r = Measured::default();
    let refused = |what: &str, out: &Output| -> Option<String> {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if out.status.success() {
            None
        } else if is_capacity(&err) {
            Some(gist(&err))
        } else {
            panic!("fluxgate {what} failed ({}): {err}", out.status)
        }
    };
    let mut refusal = None;
    r.check = repeat(LOAD_REPS, LOAD_BUDGET, |_| {
        let mut cmd = Command::new(FLUXGATE);
        cmd.args(["check", &rules]);
        let (d, out) = timed(|| cmd.output().expect("run fluxgate check"));
        refusal = refused("check", &out);
        if refusal.is_some() {
            Duration::from_secs(3600)
        } else {
            d
        }
    });
    if let Some(e) = refusal {
        return Err(e);
    }
    r.load = repeat(LOAD_REPS, LOAD_BUDGET, |rep| {
        if rep > 0 {
            ok("fluxgate", &["detach"], w.run_cli(&["detach", IFACE]).1);
        }
        let cells = pool_cells(w.tenants).to_string();
        let (d, out) = w.run_cli(&["load", &rules, IFACE, "--pool-cells", &cells]);
        refusal = refused("load", &out);
        if refusal.is_some() {
            Duration::from_secs(3600)
        } else {
            d
        }
    });
    if let Some(e) = refusal {
        return Err(e);
    }
    r.state_loaded = du(&w.state("cli"));
    let mut port = 8080;
    let run = |args: &[&str]| -> (Duration, Output) {
        let (d, out) = w.run_cli(args);
        (d, ok("fluxgate", args, out))
    };
    r.apply_dir = repeat(FAST_REPS, FAST_BUDGET, |_| {
        write_t0(w.rules.dir(), flip(&mut port));
        run(&["apply", &rules, IFACE]).0
    });
    r.state_per_gen = growth(r.state_loaded, du(&w.state("cli")), r.apply_dir.0.len());
    r.apply_tenant = repeat(FAST_REPS, FAST_BUDGET, |_| {
        write_t0(w.rules.dir(), flip(&mut port));
        run(&["apply", &rules, IFACE, "--tenant", "t0"]).0
    });
    r.rollback = repeat(FAST_REPS, FAST_BUDGET, |_| {
        run(&["rollback", IFACE, "--tenant", "t0"]).0
    });
    r.status = repeat(FAST_REPS, FAST_BUDGET, |_| run(&["status", IFACE]).0);
    r.stats = repeat(FAST_REPS, FAST_BUDGET, |_| {
        let (d, out) = run(&["stats", IFACE]);
        r.stats_bytes = out.stdout.len();
        d
    });

    // `serve` once; then GETs.
    let mut child = w.cli(&["serve", "--metrics", "127.0.0.1:0"]);
    let child = child
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fluxgate serve");
    let mut server = Killed(child);
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().expect("serve's stdout"))
        .read_line(&mut line)
        .expect("read serve's address");
    let addr: SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in serve's first line: {line:?}"));
    r.scrape = repeat(FAST_REPS, FAST_BUDGET, |_| {
        let (d, body) = scrape(addr);
        r.scrape_bytes = body.len();
        r.scrape_lines = body.lines().count();
        d
    });
    drop(server);
    ok("fluxgate", &["detach"], w.run_cli(&["detach", IFACE]).1);
    Ok(r)
}

fn nftables(w: &World, n: usize) -> Nft {
    let full = w.work.write("ruleset.nft", nft_ruleset(n));
    let full = full.to_str().expect("UTF-8 temp path").to_owned();
    let load = repeat(LOAD_REPS, LOAD_BUDGET, |_| {
        w.nft(&["flush", "ruleset"]);
        w.nft(&["-f", &full]).0
    });
    let mut r = Nft {
        load,
        ..Nft::default()
    };
    let mut port = 8080;
    r.chain = repeat(FAST_REPS, FAST_BUDGET, |_| {
        let file = w
            .work
            .write("chain.nft", nft_chain_replace(flip(&mut port)));
        w.nft(&["-f", file.to_str().expect("UTF-8 temp path")]).0
    });
    r.list = repeat(FAST_REPS, FAST_BUDGET, |_| {
        let (d, out) = w.nft(&["list", "ruleset"]);
        r.list_bytes = out.stdout.len();
        d
    });
    r.list_json = repeat(FAST_REPS, FAST_BUDGET, |_| {
        let (d, out) = w.nft(&["-j", "list", "ruleset"]);
        r.list_json_bytes = out.stdout.len();
        d
    });
    // The change went in: the listing shows t0's new port, and every tenant.
    let (_, out) = w.nft(&["list", "chain", "ip", NFT_TABLE, "t0"]);
    let t0 = String::from_utf8_lossy(&out.stdout);
    assert!(t0.contains(&format!("dport {port} counter")), "{t0}");
    w.nft(&["flush", "ruleset"]);
    r
}

fn measure(n: usize) -> Option<Size> {
    let w = World::new(n);
    eprintln!("scale: {n} tenants: library…");
    let lib = match library(&w) {
        Ok(r) => r,
        Err(e) => {
            println!("scale: skipping {n} tenants: the library's first load was refused: {e}");
            return None;
        }
    };
    eprintln!("scale: {n} tenants: CLI…");
    let cli = match cli(&w) {
        Ok(r) => r,
        Err(e) => {
            println!("scale: skipping {n} tenants: the CLI refused them: {e}");
            return None;
        }
    };
    eprintln!("scale: {n} tenants: nftables…");
    let nft = nftables(&w, n);
    Some(Size { n, lib, cli, nft })
}

// ---------------------------------------------------------------------------
// The summary.

fn ratio(a: &Samples, b: &Samples) -> f64 {
    a.median().as_secs_f64() / b.median().as_secs_f64()
}

/// One operation's samples in a path's results.
type Field = fn(&Measured) -> &Samples;

fn print(s: &Size) {
    let n = s.n;
    println!("\n### {n} tenants ({} rules)\n", 3 * n + 1);
    println!("| operation | library | CLI (process start to exit) |");
    println!("|---|---|---|");
    let rows: [(&str, Field); 8] = [
        ("check", |p| &p.check),
        ("first load (attach + apply)", |p| &p.load),
        ("apply DIR (t0 changed)", |p| &p.apply_dir),
        ("apply --tenant t0", |p| &p.apply_tenant),
        ("rollback --tenant t0", |p| &p.rollback),
        ("status", |p| &p.status),
        ("stats", |p| &p.stats),
        ("metrics scrape", |p| &p.scrape),
    ];
    for (name, get) in rows {
        println!(
            "| {name} | {} | {} |",
            get(&s.lib).show(),
            get(&s.cli).show()
        );
    }
    let state = |p: &Measured| {
        format!(
            "{} on disk ({} apparent)",
            bytes(p.state_loaded.0),
            bytes(p.state_loaded.1)
        )
    };
    let per_gen = |p: &Measured| {
        format!(
            "{} on disk ({} apparent)",
            signed(p.state_per_gen.0),
            signed(p.state_per_gen.1)
        )
    };
    println!(
        "| state dir after first load | {} | {} |",
        state(&s.lib),
        state(&s.cli)
    );
    println!(
        "| state dir growth per one-tenant generation | {} | {} |",
        per_gen(&s.lib),
        per_gen(&s.cli)
    );
    println!(
        "| metrics scrape size | {}, {} lines | {}, {} lines |",
        bytes(s.lib.scrape_bytes as u64),
        s.lib.scrape_lines,
        bytes(s.cli.scrape_bytes as u64),
        s.cli.scrape_lines
    );
    println!(
        "| `stats` output | – | {} |",
        bytes(s.cli.stats_bytes as u64)
    );

    println!("\n| nftables (same namespace) | time |");
    println!("|---|---|");
    println!("| `nft -f` whole ruleset | {} |", s.nft.load.show());
    println!(
        "| one chain replaced (`flush chain` + rules, `nft -f`) | {} |",
        s.nft.chain.show()
    );
    println!(
        "| `nft list ruleset` ({}) | {} |",
        bytes(s.nft.list_bytes as u64),
        s.nft.list.show()
    );
    println!(
        "| `nft -j list ruleset` ({}) | {} |",
        bytes(s.nft.list_json_bytes as u64),
        s.nft.list_json.show()
    );

    println!("\n| ratio (medians) | goal | library | CLI |");
    println!("|---|---|---|---|");
    let nft = &s.nft;
    let ratios: [(&str, f64, Field, &Samples); 6] = [
        (
            "apply DIR (one tenant changed) / nft chain replacement",
            1.0,
            |p| &p.apply_dir,
            &nft.chain,
        ),
        (
            "apply --tenant t0 / nft chain replacement",
            1.0,
            |p| &p.apply_tenant,
            &nft.chain,
        ),
        ("stats / nft list ruleset", 0.1, |p| &p.stats, &nft.list),
        (
            "stats / nft -j list ruleset",
            0.1,
            |p| &p.stats,
            &nft.list_json,
        ),
        ("scrape / nft list ruleset", 0.3, |p| &p.scrape, &nft.list),
        ("first load / nft -f", 0.2, |p| &p.load, &nft.load),
    ];
    for (name, goal, get, base) in ratios {
        let show = |p: &Measured| {
            let r = ratio(get(p), base);
            let mark = if r <= goal { "met" } else { "not met" };
            format!("{r:.2} ({mark})")
        };
        println!(
            "| {name} | ≤ {goal} | {} | {} |",
            show(&s.lib),
            show(&s.cli)
        );
    }
}

fn signed(b: i64) -> String {
    if b < 0 {
        format!("−{}", bytes(b.unsigned_abs()))
    } else {
        format!("+{}", bytes(b as u64))
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    net::require_root();
    // `RUST_LOG=info` shows where the library's time goes: one line per
    // apply phase with its duration (the CLI's own logs are not shown).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .init();
    }
    let sizes: Vec<usize> = std::env::var("FLUXGATE_SCALE_TENANTS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("FLUXGATE_SCALE_TENANTS: {s:?} is not a number"))
        })
        .collect();
    let started = Instant::now();
    let mut done = Vec::new();
    for n in sizes {
        if let Some(s) = measure(n) {
            print(&s);
            done.push(s);
        }
    }
    println!(
        "\nscale: {} size(s) measured in {:.0} s",
        done.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(!done.is_empty(), "no size could be measured");
}
