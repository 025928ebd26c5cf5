//! Fleet rollout through etcd beside the same applies done one gateway after
//! another with the CLI (issue #26, "Numbers"), in one run (root needed).
//!
//! For every N in `FLUXGATE_FLEET_GATEWAYS` (comma-separated, default `6,24`)
//! it starts a real etcd (127.0.0.1, free ports, scratch data) and N gateways
//! — each a veth pair between two fresh namespaces, fluxgate loaded on one end
//! with its own bpffs and state directories, and a `fluxgate agent` process
//! (the bench profile's build) — then times, with the canary off:
//!
//! - `fluxgate fleet rollout DIR --waves 1,25%,100%`, process start to exit
//!   (it exits once every gateway reported the change realized);
//! - the same with one wave (`--waves 100%`);
//! - `fluxgate -n NS apply DIR IFACE` on each gateway, one after another (what
//!   a loop over hosts does), the whole loop;
//!
//! each change flipping one tenant's file between two versions, so every
//! run really applies. etcd round trips per gateway per rollout are read from
//! etcd's own counters (`grpc_server_msg_received_total` on its `/metrics`,
//! every request and stream message it received, agents' lease keep-alives
//! included) around one three-wave rollout.
//!
//! Then the agent's memory at `FLUXGATE_FLEET_TENANTS` tenants (default
//! 10000): one gateway loaded with that many tenants (the ruleset of the
//! `scale` bench), a rollout of a one-tenant change through etcd, and the
//! agent's peak and current resident size (`VmHWM`, `VmRSS`).
//!
//! Each timing runs `FLUXGATE_FLEET_REPS` times (default 5): median and
//! min–max. Run: `cargo bench -p fluxgate-control --bench fleet` (as root;
//! ≈ 3 minutes on a busy 2-core machine).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use fluxgate_testkit::{
    etcd::Etcd,
    net::{self, IF_B, Link},
    scratch::ScratchDir,
};

/// The CLI under test (the bench profile's build: optimised).
const FLUXGATE: &str = env!("CARGO_BIN_EXE_fluxgate");

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn ok(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One gateway: its namespaces, directories and agent.
struct Gw {
    link: Link,
    pins: PathBuf,
    state: ScratchDir,
    agent: Option<Child>,
}

impl Gw {
    fn cli(&self) -> Command {
        let mut c = Command::new(FLUXGATE);
        c.arg("--bpffs")
            .arg(&self.pins)
            .arg("--state")
            .arg(self.state.dir())
            .args(["-n", self.link.b.name()]);
        c
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// `n` gateways loaded with `dir` (pool sized by `pool`), agents started on
/// `etcd` in fleet `fleet`.
fn gateways(n: usize, dir: &Path, pool: Option<u32>, etcd: &Etcd, fleet: &str) -> Vec<Gw> {
    (0..n)
        .map(|i| {
            let gw = Gw {
                link: Link::new(),
                pins: PathBuf::from(format!(
                    "/sys/fs/bpf/fgb-fleet-{}-{fleet}-{i}",
                    std::process::id()
                )),
                state: ScratchDir::new("fleet-bench"),
                agent: None,
            };
            let mut load = gw.cli();
            load.arg("load").arg(dir).arg(IF_B);
            if let Some(cells) = pool {
                load.args(["--pool-cells", &cells.to_string()]);
            }
            ok("load", load.output().expect("fluxgate load"));
            gw
        })
        .enumerate()
        .map(|(i, mut gw)| {
            let agent = gw
                .cli()
                .args(["agent", "--etcd", &etcd.endpoint(), "--fleet", fleet])
                .args(["--name", &format!("gw{i}"), "--lease-ttl", "5s"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the agent");
            gw.agent = Some(agent);
            gw
        })
        .collect()
}

fn fleet_cli(etcd: &Etcd, fleet: &str, args: &[&str]) -> Output {
    Command::new(FLUXGATE)
        .args(["fleet", "--etcd", &etcd.endpoint(), "--fleet", fleet])
        .args(args)
        .output()
        .expect("fluxgate fleet")
}

fn wait_registered(etcd: &Etcd, fleet: &str, n: usize) {
    let done = net::eventually(Duration::from_secs(60), || {
        let out = fleet_cli(etcd, fleet, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["status"].as_object().map_or(0, |o| o.len()) == n
    });
    assert!(done, "{n} agents did not register");
}

/// Every message etcd has received (requests and stream messages).
fn etcd_messages(etcd: &Etcd) -> f64 {
    let addr = etcd.endpoint().trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(addr).expect("etcd metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("metrics request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("metrics");
    text.lines()
        .filter(|l| l.starts_with("grpc_server_msg_received_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn stats(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

fn show(d: (Duration, Duration, Duration)) -> String {
    format!(
        "{:>7.2} s ({:.2}–{:.2})",
        d.0.as_secs_f64(),
        d.1.as_secs_f64(),
        d.2.as_secs_f64()
    )
}

const GATEWAY: &str = "default pass\n";
const BETA: &str = "tenant beta\nprefix 10.77.2.0/24\ndefault drop\nproto udp dport 7100 pass\n";

fn acme(port: u16) -> String {
    format!("tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport {port} pass\n")
}

fn small_ruleset(dir: &Path, port: u16) {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("gateway.fg"), GATEWAY).expect("write");
    std::fs::write(dir.join("acme.fg"), acme(port)).expect("write");
    std::fs::write(dir.join("beta.fg"), BETA).expect("write");
}

fn timings(n: usize, reps: usize) {
    let scratch = ScratchDir::new("fleet-bench-rules");
    let dirs = [scratch.path("v1"), scratch.path("v2")];
    small_ruleset(&dirs[0], 7000);
    small_ruleset(&dirs[1], 7001);
    let etcd = Etcd::new();
    let fleet = format!("bench{n}");
    let gws = gateways(n, &dirs[0], None, &etcd, &fleet);
    wait_registered(&etcd, &fleet, n);
    let mut version = 0usize;
    let mut next = || {
        version = 1 - version;
        dirs[version].display().to_string()
    };
    let mut waves3 = Vec::new();
    let mut waves1 = Vec::new();
    let mut round_trips = 0.0;
    for rep in 0..reps {
        let dir = next();
        let before = etcd_messages(&etcd);
        let start = Instant::now();
        ok(
            "rollout",
            fleet_cli(&etcd, &fleet, &["rollout", &dir, "--waves", "1,25%,100%"]),
        );
        waves3.push(start.elapsed());
        if rep == 0 {
            round_trips = (etcd_messages(&etcd) - before) / n as f64;
        }
        let dir = next();
        let start = Instant::now();
        ok(
            "rollout",
            fleet_cli(&etcd, &fleet, &["rollout", &dir, "--waves", "100%"]),
        );
        waves1.push(start.elapsed());
    }
    let mut sequential = Vec::new();
    for _ in 0..reps {
        let dir = next();
        let start = Instant::now();
        for gw in &gws {
            ok(
                "apply",
                gw.cli()
                    .arg("apply")
                    .arg(&dir)
                    .arg(IF_B)
                    .output()
                    .expect("fluxgate apply"),
            );
        }
        sequential.push(start.elapsed());
    }
    let (w3, w1, seq) = (
        stats(&mut waves3),
        stats(&mut waves1),
        stats(&mut sequential),
    );
    println!("\n{n} gateways ({reps} runs each; median, min–max)");
    println!("  fleet rollout, waves 1,25%,100%  {}", show(w3));
    println!("  fleet rollout, one wave          {}", show(w1));
    println!("  CLI apply, one gateway after another {}", show(seq));
    println!(
        "  ratio CLI loop / rollout: {:.2} (3 waves), {:.2} (1 wave)",
        seq.0.as_secs_f64() / w3.0.as_secs_f64(),
        seq.0.as_secs_f64() / w1.0.as_secs_f64()
    );
    println!("  etcd messages per gateway per 3-wave rollout: {round_trips:.1}");
}

/// `scale`'s ruleset of `n` tenants (t0's second rule on `port`).
fn tenant_ruleset(dir: &Path, n: usize, port: u16) {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("gateway.fg"),
        "default pass\nproto tcp dport 23 drop\n",
    )
    .expect("write");
    for i in 0..n {
        let (a, b, c) = (10 + (i >> 16), (i >> 8) & 255, i & 255);
        let p = if i == 0 { port } else { 8080 };
        std::fs::write(
            dir.join(format!("t{i}.fg")),
            format!(
                "tenant t{i}\nprefixes {{ {a}.{b}.{c}.0/24 }}\ndefault pass\n\
                 proto tcp dport 22 drop\nproto tcp dport {p} drop\nproto udp dport 53 pass\n"
            ),
        )
        .expect("write");
    }
}

fn agent_memory(tenants: usize) {
    let scratch = ScratchDir::new("fleet-bench-big");
    let v1 = scratch.path("v1");
    tenant_ruleset(&v1, tenants, 8080);
    let etcd = Etcd::new();
    let fleet = "benchmem";
    let pool = u32::try_from(tenants * 8).unwrap_or(u32::MAX).max(262_144);
    let mut gws = gateways(1, &v1, Some(pool), &etcd, fleet);
    wait_registered(&etcd, fleet, 1);
    let v2 = scratch.path("v2");
    tenant_ruleset(&v2, tenants, 8081);
    let start = Instant::now();
    ok(
        "rollout",
        fleet_cli(
            &etcd,
            fleet,
            &[
                "rollout",
                &v2.display().to_string(),
                "--waves",
                "100%",
                "--deadline",
                "600s",
            ],
        ),
    );
    let took = start.elapsed();
    let pid = gws[0].agent.as_mut().map(|a| a.id()).expect("agent");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map_or("?".to_owned(), |l| l[name.len()..].trim().to_owned())
    };
    println!(
        "\nagent at {tenants} tenants: a one-tenant rollout through etcd took {:.2} s; \
         agent VmHWM {}, VmRSS {}",
        took.as_secs_f64(),
        field("VmHWM:"),
        field("VmRSS:")
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    net::require_root();
    let reps = env_list("FLUXGATE_FLEET_REPS", "5")
        .first()
        .copied()
        .unwrap_or(5)
        .max(1);
    for n in env_list("FLUXGATE_FLEET_GATEWAYS", "6,24") {
        timings(n, reps);
    }
    for t in env_list("FLUXGATE_FLEET_TENANTS", "10000") {
        agent_memory(t);
    }
}
