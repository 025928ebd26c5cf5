//! A fleet of gateways for the tests: a real etcd, and per gateway a veth
//! pair between two fresh namespaces, fluxgate loaded on its `b` end (own
//! bpffs and state directories) and a `fluxgate agent` process; everything
//! is stopped and removed on drop.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use fluxgate_testkit::{
    etcd::Etcd,
    net::{self, IF_B, Link},
};

use crate::common::{Scratch, fluxgate, fluxgate_cmd, ok, write};

/// acme's address on every gateway.
pub const ACME_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 10);
/// beta's address on every gateway.
pub const BETA_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 2, 10);

/// The rulesets of the tests, as (file, text) lists.
pub mod rules {
    pub const GATEWAY: (&str, &str) = ("gateway.fg", "default pass\n");
    pub const ACME: (&str, &str) = (
        "acme.fg",
        "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000 pass\n",
    );
    pub const BETA: (&str, &str) = (
        "beta.fg",
        "tenant beta\nprefix 10.77.2.0/24\ndefault drop\nproto udp dport 7100 pass\n",
    );
    /// The first ruleset every gateway loads.
    pub const V1: [(&str, &str); 3] = [GATEWAY, ACME, BETA];
    /// A good change: acme also opens 7001.
    pub const ACME_7001: [(&str, &str); 3] = [
        GATEWAY,
        (
            "acme.fg",
            "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto udp dport 7000-7001 pass\n",
        ),
        BETA,
    ];
    /// A bad change: acme drops everything (its canary regresses).
    pub const ACME_CLOSED: [(&str, &str); 3] = [
        GATEWAY,
        (
            "acme.fg",
            "tenant acme\nprefix 10.77.1.0/24\ndefault drop\n",
        ),
        BETA,
    ];
}

/// One gateway: namespaces, fluxgate loaded, its agent.
pub struct Gw {
    pub name: String,
    pub link: Link,
    pub s: Scratch,
    agent: Option<Child>,
    endpoint: String,
    fleet: String,
    env: Vec<(String, String)>,
}

impl Gw {
    /// Starts (again) its agent.
    pub fn start_agent(&mut self) {
        self.start_agent_with(&[]);
    }

    /// Starts (again) its agent with extra environment variables.
    pub fn start_agent_with(&mut self, env: &[(&str, &str)]) {
        self.kill_agent();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.s.state.join("agent.log"))
            .expect("agent log");
        let child = fluxgate_cmd(&self.s)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .args(["-n", self.link.b.name(), "-v", "agent"])
            .args(["--etcd", &self.endpoint, "--fleet", &self.fleet])
            .args([
                "--name",
                &self.name,
                "--label",
                &format!("cluster={}", self.cluster()),
            ])
            .args(["--lease-ttl", "2s"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("agent log"))
            .stderr(log)
            .spawn()
            .expect("start the agent");
        self.agent = Some(child);
    }

    /// Waits for its agent to exit by itself (up to `timeout`); whether it did.
    pub fn agent_exited(&mut self, timeout: Duration) -> bool {
        let Some(c) = self.agent.as_mut() else {
            return true;
        };
        net::eventually(timeout, || matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Its `cluster` label: `c1` for gateways 0, 2, 4…, `c2` for the others.
    pub fn cluster(&self) -> &'static str {
        let n: usize = self.name.trim_start_matches("gw").parse().unwrap_or(0);
        if n.is_multiple_of(2) { "c1" } else { "c2" }
    }

    /// Kills its agent with SIGKILL.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its agent's log.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.s.state.join("agent.log")).unwrap_or_default()
    }

    /// The live generation of its interface.
    pub fn generation(&self) -> u64 {
        let out = ok(fluxgate(
            &self.s,
            &["-n", self.link.b.name(), "status", IF_B, "--json"],
        ));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        json["interfaces"][0]["live_generation"]
            .as_u64()
            .expect("live_generation")
    }

    /// Its metrics, as `fluxgate serve` renders them.
    pub fn metrics(&self) -> String {
        let gw = fluxgate_control::Gateway::new()
            .with_bpffs(&self.s.pins)
            .with_state(&self.s.state)
            .in_netns(Some(self.link.b.name().to_owned()));
        fluxgate_control::metrics::render(&gw).expect("metrics")
    }

    /// Its interface's history, as text.
    pub fn history(&self) -> String {
        text(&fluxgate(
            &self.s,
            &["-n", self.link.b.name(), "history", IF_B],
        ))
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

/// A fleet: etcd and its gateways.
pub struct Fleet {
    pub etcd: Etcd,
    pub gws: Vec<Gw>,
    pub name: String,
    rules: Scratch,
    env: Vec<(String, String)>,
}

impl Fleet {
    /// `n` gateways loaded with [`rules::V1`], their agents started.
    pub fn new(tag: &str, n: usize) -> Fleet {
        net::require_root();
        Fleet::with_etcd(
            &Fleet::name_for(tag),
            n,
            Etcd::new(),
            |_| Vec::new(),
            Vec::new(),
        )
    }

    /// The fleet name of a test tagged `tag`.
    pub fn name_for(tag: &str) -> String {
        format!("{tag}-{}", std::process::id())
    }

    /// Like [`Fleet::new`], on `etcd`, with environment variables for each
    /// gateway's agent (by gateway name) and for the controller.
    pub fn with_etcd(
        fleet: &str,
        n: usize,
        etcd: Etcd,
        agent_env: impl Fn(&str) -> Vec<(String, String)>,
        controller_env: Vec<(String, String)>,
    ) -> Fleet {
        net::require_root();
        let tag = fleet;
        let rules = Scratch::new(&format!("{tag}-fleet"));
        for (name, text) in rules::V1 {
            write(&rules.rules, name, text);
        }
        let v1 = rules.rules.display().to_string();
        let fleet = fleet.to_owned();
        let mut gws = Vec::new();
        for i in 0..n {
            let link = Link::new();
            link.add_b_address(ACME_ADDR);
            link.add_b_address(BETA_ADDR);
            let s = Scratch::new(&format!("{tag}{i}"));
            ok(fluxgate(&s, &["-n", link.b.name(), "load", &v1, IF_B]));
            let name = format!("gw{i}");
            let mut gw = Gw {
                env: agent_env(&name),
                name,
                link,
                s,
                agent: None,
                endpoint: etcd.endpoint(),
                fleet: fleet.clone(),
            };
            gw.start_agent();
            gws.push(gw);
        }
        Fleet {
            etcd,
            gws,
            name: fleet,
            rules,
            env: controller_env,
        }
    }

    /// A ruleset directory named `name` with `files`.
    pub fn ruleset(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.rules.rules_dir(name);
        for (f, text) in files {
            write(&dir, f, text);
        }
        dir
    }

    /// A `fluxgate fleet …` command for this fleet (lock TTL 2 s).
    pub fn fleet_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fluxgate"));
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("fleet")
            .args(["--etcd", &self.etcd.endpoint(), "--fleet", &self.name])
            .args(["--lock-ttl", "2s"])
            .args(args);
        c
    }

    /// Runs `fluxgate fleet …` (bounded: the commands have deadlines).
    pub fn fleet(&self, args: &[&str]) -> Output {
        self.fleet_cmd(args).output().expect("run fluxgate fleet")
    }

    /// The unfinished rollout in `fleet status --json` (null if none).
    pub fn active(&self) -> serde_json::Value {
        self.status()["rollout"].clone()
    }

    /// `fleet status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = ok(self.fleet(&["status", "--json"]));
        serde_json::from_slice(&out.stdout).expect("fleet status JSON")
    }

    /// Waits until `n` gateways are registered and have reported a status.
    pub fn wait_registered(&self, n: usize) {
        let done = net::eventually(Duration::from_secs(30), || {
            let s = self.status();
            s["gateways"].as_object().map_or(0, |o| o.len()) == n
                && s["status"].as_object().map_or(0, |o| o.len()) == n
        });
        assert!(
            done,
            "agents did not register: {}\n{}",
            self.status(),
            self.gws
                .iter()
                .map(Gw::agent_log)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// A spawned `fluxgate fleet …`, killed on drop.
pub struct Running(Option<Child>);

impl Running {
    /// Waits (bounded) for it to exit; its output.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let mut child = self.0.take().expect("running");
        let exited = net::eventually(timeout, || matches!(child.try_wait(), Ok(Some(_))));
        if !exited {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("wait");
        assert!(
            exited,
            "fluxgate fleet did not finish in time: {}",
            text(&out)
        );
        out
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Fleet {
    /// Spawns `fluxgate fleet …` (stdout and stderr captured).
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running(Some(
            self.fleet_cmd(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn fluxgate fleet"),
        ))
    }
}

/// The JSON object `out` printed.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// stdout and stderr of a command, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
