//! `cargo xtask demo`: two network namespaces joined by a veth pair, fluxgate
//! attached to the receiving end with the `fluxgate` CLI, bounded UDP / TCP /
//! ICMP traffic plus one malformed and one non-IP frame, then a two-tenant
//! ruleset and its per-rule counters; then a patch that breaks one tenant,
//! rolled back in one command while the other tenant's traffic never stops.
//! Everything it creates is removed at the end, also on failure.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};
use fluxgate_dataplane::frame::{FrameSpec, L4};
use support::{ADDR_A, ADDR_B, IF_B, Link};

/// The `fluxgate` binary built next to this example (target/<profile>/fluxgate).
fn fluxgate_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("fluxgate"))
        .context("locating the target directory")?;
    if !bin.exists() {
        bail!(
            "{} is missing: build it with `cargo build -p fluxgate-control --bins`",
            bin.display()
        );
    }
    Ok(bin)
}

fn fluxgate(bin: &PathBuf, pins: &PathBuf, args: &[&str]) -> Result<()> {
    println!("$ fluxgate {}", args.join(" "));
    let status = Command::new(bin)
        .arg("--bpffs")
        .arg(pins)
        .arg("--state")
        .arg(pins.with_extension("state"))
        .args(args)
        .status()?;
    if !status.success() {
        bail!("fluxgate {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// A scratch directory (bpffs pins, state, ruleset) removed at the end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const ACME: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 77, 1, 2);
const BETA: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 77, 2, 2);

/// A two-tenant ruleset: acme serves web only, beta blocks SSH from outside.
fn write_ruleset(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("gateway.fg"),
        "default pass\nproto udp dport 11211 drop   # memcached amplification\n",
    )?;
    std::fs::write(
        dir.join("acme.fg"),
        "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto tcp dport { 80, 443 } pass\nproto udp dport 5000 count\n",
    )?;
    std::fs::write(
        dir.join("beta.fg"),
        "tenant beta\nprefix 10.77.2.0/24\ndefault pass\nproto tcp dport 22 drop\n",
    )?;
    Ok(())
}

fn main() -> Result<()> {
    support::require_root();
    let bin = fluxgate_bin()?;
    let pins = PathBuf::from(format!("/sys/fs/bpf/fluxgate-demo-{}", std::process::id()));
    let _pins_guard = Scratch(pins.clone());
    let _state_guard = Scratch(pins.with_extension("state"));
    let scratch =
        Scratch(std::env::temp_dir().join(format!("fluxgate-demo-{}", std::process::id())));
    let rules = scratch.0.join("rules");
    write_ruleset(&rules)?;
    let link = Link::new();
    let ns = link.b.name().to_owned();
    println!(
        "namespaces {} ({ADDR_A}) and {ns} ({ADDR_B}, XDP on {IF_B}) joined by a veth pair\n",
        link.a.name()
    );

    fluxgate(&bin, &pins, &["-n", &ns, "attach", IF_B])?;
    println!("\nsending traffic {} -> {ns}:", link.a.name());
    let udp = support::udp_exchange(&link, 5000, 1000, 64);
    println!("  UDP: 1000 datagrams sent, {udp} received");
    let tcp = support::tcp_exchange(&link, 5001, 20, b"GET / HTTP/1.0\r\n\r\n");
    println!("  TCP: 20 connections, {tcp} round trips completed");
    let icmp = support::ping(&link, 10);
    println!("  ICMP: 10 echo requests, {icmp} replies");
    let mut malformed = FrameSpec::new(
        ADDR_A.into(),
        ADDR_B.into(),
        L4::Udp {
            sport: 1,
            dport: 5002,
        },
    )
    .build();
    malformed[14] = 0x43; // IPv4 header length 12 bytes: impossible
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0x77, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    support::send_raw(&link, vec![malformed, arp]);
    println!("  raw: 1 malformed IPv4 frame (IHL 3), 1 ARP frame\n");
    std::thread::sleep(std::time::Duration::from_millis(200));

    println!(
        "loading a two-tenant ruleset (acme 10.77.1.0/24: web only; beta 10.77.2.0/24: no SSH):"
    );
    link.add_b_address(ACME);
    link.add_b_address(BETA);
    fluxgate(
        &bin,
        &pins,
        &["-n", &ns, "apply", &rules.display().to_string(), IF_B],
    )?;
    let web = support::tcp_exchange_to(&link, ACME, 443, 5, b"GET / HTTP/1.0\r\n\r\n");
    println!("  acme:443  5 connections, {web} completed (rule acme#1 passes)");
    let mysql = support::tcp_exchange_to(&link, ACME, 3306, 3, b"x");
    println!("  acme:3306 3 connections, {mysql} completed (acme default drop)");
    let counted = support::udp_exchange_to(&link, ACME, 5000, 10, 16);
    println!("  acme:5000 10 datagrams, {counted} received (counted by acme#2, then default drop)");
    let ssh = support::tcp_exchange_to(&link, BETA, 22, 3, b"SSH-2.0-x");
    println!("  beta:22   3 connections, {ssh} completed (beta#1 drops)");
    let dns = support::udp_exchange_to(&link, BETA, 53, 10, 32);
    println!("  beta:53   10 datagrams, {dns} received (beta default pass)\n");
    fluxgate(&bin, &pins, &["-n", &ns, "stats", IF_B])?;
    println!();

    println!("a patch to acme that (by mistake) closes its web ports goes live:");
    let patched = scratch.0.join("patched");
    write_ruleset(&patched)?;
    std::fs::write(
        patched.join("acme.fg"),
        "tenant acme\nprefix 10.77.1.0/24\ndefault drop\nproto tcp dport { 80, 443 } drop\nproto udp dport 5000 count\n",
    )?;
    let patched = patched.display().to_string();
    fluxgate(
        &bin,
        &pins,
        &[
            "-n",
            &ns,
            "apply",
            &patched,
            IF_B,
            "--reason",
            "tighten acme",
        ],
    )?;
    let broken = support::tcp_exchange_to(&link, ACME, 443, 3, b"GET / HTTP/1.0\r\n\r\n");
    let beta_during = support::udp_exchange_to(&link, BETA, 53, 10, 32);
    println!(
        "  acme:443 3 connections, {broken} completed; beta:53 10 datagrams, {beta_during} received"
    );
    println!("rolling acme back, one slot flip, nothing recompiled:");
    fluxgate(
        &bin,
        &pins,
        &["-n", &ns, "rollback", IF_B, "--tenant", "acme"],
    )?;
    let restored = support::tcp_exchange_to(&link, ACME, 443, 5, b"GET / HTTP/1.0\r\n\r\n");
    let beta_after = support::udp_exchange_to(&link, BETA, 53, 10, 32);
    println!(
        "  acme:443 5 connections, {restored} completed; beta:53 10 datagrams, {beta_after} received\n"
    );
    fluxgate(&bin, &pins, &["-n", &ns, "status", IF_B])?;
    fluxgate(&bin, &pins, &["-n", &ns, "history", IF_B])?;
    fluxgate(&bin, &pins, &["-n", &ns, "stats", IF_B, "--tenant", "acme"])?;
    println!();

    fluxgate(&bin, &pins, &["-n", &ns, "detach", IF_B])?;
    if udp != 1000 || tcp != 20 || icmp != 10 {
        bail!("traffic was lost while fluxgate passed everything");
    }
    if (web, mysql, counted, ssh, dns) != (5, 0, 0, 0, 10) {
        bail!("the ruleset did not decide as written: {web} {mysql} {counted} {ssh} {dns}");
    }
    if (broken, beta_during, restored, beta_after) != (0, 10, 5, 10) {
        bail!(
            "the patch / rollback did not behave: {broken} {beta_during} {restored} {beta_after}"
        );
    }
    println!("\ndemo done; namespaces removed");
    Ok(())
}
