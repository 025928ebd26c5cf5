//! The demo's fleet act: a real etcd on 127.0.0.1, three gateways (each a
//! veth pair between two namespaces, its own bpffs and state directories and
//! a `fluxgate agent`), a good change rolled out in waves, then a bad one
//! that the first gateway's preflight refuses: the rollout halts there and
//! the other two never see it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Result, bail};
use fluxgate_testkit::{
    etcd::Etcd,
    net::{self, IF_B, Link},
};

use crate::{ACME, BETA, Scratch, acme_file, write_ruleset};

/// One gateway of the act.
struct Gw {
    link: Link,
    pins: Scratch,
    state: Scratch,
    agent: Option<Child>,
}

impl Gw {
    fn cmd(&self, bin: &Path) -> Command {
        let mut c = Command::new(bin);
        c.arg("--bpffs")
            .arg(&self.pins.0)
            .arg("--state")
            .arg(&self.state.0)
            .args(["-n", self.link.b.name()]);
        c
    }

    fn generation(&self, bin: &Path) -> Result<u64> {
        let out = self.cmd(bin).args(["status", IF_B, "--json"]).output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["interfaces"][0]["live_generation"].as_u64().unwrap_or(0))
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

fn fleet(bin: &Path, etcd: &Etcd, args: &[&str]) -> Result<i32> {
    println!("$ fluxgate fleet {}", args.join(" "));
    let status = Command::new(bin)
        .args(["fleet", "--etcd", &etcd.endpoint(), "--fleet", "demo"])
        .args(args)
        .status()?;
    Ok(status.code().unwrap_or(-1))
}

/// The act; `scratch` is the demo's scratch directory.
pub fn act(bin: &PathBuf, scratch: &Path) -> Result<()> {
    println!("\n--- fleet act: three gateways, rollout through etcd ---\n");
    let etcd = Etcd::new();
    println!("etcd on {} (scratch data directory)", etcd.endpoint());
    let v1 = scratch.join("fleet-v1");
    write_ruleset(&v1)?;
    let mut gws = Vec::new();
    for i in 0..3 {
        let tag = format!("{}-gw{i}", std::process::id());
        let gw = Gw {
            link: Link::new(),
            pins: Scratch(PathBuf::from(format!("/sys/fs/bpf/fluxgate-demo-{tag}"))),
            state: Scratch(std::env::temp_dir().join(format!("fluxgate-demo-state-{tag}"))),
            agent: None,
        };
        gw.link.add_b_address(ACME);
        gw.link.add_b_address(BETA);
        let out = gw.cmd(bin).arg("load").arg(&v1).arg(IF_B).output()?;
        if !out.status.success() {
            bail!("load: {}", String::from_utf8_lossy(&out.stderr));
        }
        gws.push(gw);
    }
    for (i, gw) in gws.iter_mut().enumerate() {
        let agent = gw
            .cmd(bin)
            .args(["agent", "--etcd", &etcd.endpoint(), "--fleet", "demo"])
            .args(["--name", &format!("gw{i}"), "--label", "site=demo"])
            .args(["--lease-ttl", "3s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        gw.agent = Some(agent);
    }
    let registered = net::eventually(Duration::from_secs(30), || {
        Command::new(bin)
            .args(["fleet", "--etcd", &etcd.endpoint(), "--fleet", "demo"])
            .args(["status", "--json"])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .is_some_and(|v| v["status"].as_object().is_some_and(|s| s.len() == 3))
    });
    if !registered {
        bail!("the three agents did not register");
    }
    println!("three gateways loaded and their agents registered:");
    fleet(bin, &etcd, &["status"])?;

    println!("\na good change (acme also serves 8443), gateway 1 first, then the others:");
    let good = scratch.join("fleet-good");
    write_ruleset(&good)?;
    std::fs::write(
        good.join("acme.fg"),
        acme_file("proto tcp dport { 80, 443, 8443 } pass"),
    )?;
    let code = fleet(
        bin,
        &etcd,
        &[
            "rollout",
            &good.display().to_string(),
            "--waves",
            "1,100%",
            "--tenant",
            "acme",
            "--reason",
            "acme opens 8443",
        ],
    )?;
    let opened: Vec<usize> = gws
        .iter()
        .map(|g| net::tcp_exchange_to(&g.link, ACME, 8443, 2, b"x"))
        .collect();
    println!("  acme:8443 on the three gateways: {opened:?} of 2 connections completed");

    println!(
        "\na bad change (acme's web closed; its guard says 443 must pass): the first gateway's"
    );
    println!("preflight refuses it, the rollout halts, the other two never see it:");
    let before: Vec<u64> = gws
        .iter()
        .map(|g| g.generation(bin))
        .collect::<Result<_>>()?;
    let bad = scratch.join("fleet-bad");
    write_ruleset(&bad)?;
    std::fs::write(
        bad.join("acme.fg"),
        acme_file("proto tcp dport { 80, 443, 8443 } drop"),
    )?;
    let halted = fleet(
        bin,
        &etcd,
        &[
            "rollout",
            &bad.display().to_string(),
            "--waves",
            "1,100%",
            "--reason",
            "tighten acme",
        ],
    )?;
    fleet(bin, &etcd, &["history"])?;
    let after: Vec<u64> = gws
        .iter()
        .map(|g| g.generation(bin))
        .collect::<Result<_>>()?;
    let web: Vec<usize> = gws
        .iter()
        .map(|g| net::tcp_exchange_to(&g.link, ACME, 443, 2, b"x"))
        .collect();
    println!("  generations before {before:?}, after {after:?}; acme:443 still {web:?} of 2");
    if code != 0 || opened != [2, 2, 2] {
        bail!("the good change did not reach every gateway: exit {code}, {opened:?}");
    }
    if halted != fluxgate_control::fleet::HALTED || before != after || web != [2, 2, 2] {
        bail!("the bad change was not stopped: exit {halted}, {before:?} -> {after:?}, {web:?}");
    }
    Ok(())
}
