//! `cargo xtask demo`: two network namespaces joined by a veth pair, fluxgate
//! attached to the receiving end with the `fluxgate` CLI, bounded UDP / TCP /
//! ICMP traffic plus one malformed and one non-IP frame, then a two-tenant
//! ruleset and its per-rule counters; then the 2001 story replayed: a bad
//! patch to one tenant is caught by preflight (its guards), a patch that passes
//! the guards but hurts real traffic is rolled back in one command, and the
//! other tenant's traffic never stops; counters and history at the end.
//! Then a fleet act (`demo/fleet.rs`): three gateways and a real etcd, a
//! good change rolled out in waves, a bad one halted at the first gateway.
//! Everything it creates is removed at the end, also on failure.

#[path = "demo/fleet.rs"]
mod fleet_act;

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};
use fluxgate_dataplane::frame::{FrameSpec, L4};
use fluxgate_testkit::net::{self, ADDR_A, ADDR_B, IF_B, Link};

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
    fluxgate_exits(bin, pins, args, 0)
}

/// Runs fluxgate, which must exit with `code`.
fn fluxgate_exits(bin: &PathBuf, pins: &PathBuf, args: &[&str], code: i32) -> Result<()> {
    println!("$ fluxgate {}", args.join(" "));
    let status = Command::new(bin)
        .arg("--bpffs")
        .arg(pins)
        .arg("--state")
        .arg(state_dir())
        .args(args)
        .status()?;
    if status.code() != Some(code) {
        bail!(
            "fluxgate {} should have exited with {code} ({status})",
            args.join(" ")
        );
    }
    Ok(())
}

/// fluxgate's state files for this demo (removed at the end).
fn state_dir() -> PathBuf {
    std::env::temp_dir().join(format!("fluxgate-demo-state-{}", std::process::id()))
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
        acme_file("proto tcp dport { 80, 443 } pass"),
    )?;
    std::fs::write(
        dir.join("beta.fg"),
        "tenant beta\nprefix 10.77.2.0/24\ndefault pass\nproto tcp dport 22 drop\n\
         guard \"tcp 198.51.100.7:40000 -> 10.77.2.2:22 flags S\" drop\n\
         guard \"udp 198.51.100.7:40000 -> 10.77.2.2:53\" pass\n",
    )?;
    Ok(())
}

/// acme's file with `web` as its web rule, and the guards acme's operators wrote:
/// HTTPS from a customer must pass, MySQL from outside must not.
fn acme_file(web: &str) -> String {
    format!(
        "tenant acme\nprefix 10.77.1.0/24\ndefault drop\n{web}\nproto udp dport 5000 count\n\
         guard \"tcp 198.51.100.7:40000 -> 10.77.1.2:443 flags S\" pass\n\
         guard \"tcp 198.51.100.7:40000 -> 10.77.1.2:3306 flags S\" drop\n"
    )
}

fn main() -> Result<()> {
    net::require_root();
    let bin = fluxgate_bin()?;
    let pins = PathBuf::from(format!("/sys/fs/bpf/fluxgate-demo-{}", std::process::id()));
    let _pins_guard = Scratch(pins.clone());
    let _state_guard = Scratch(state_dir());
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
    let udp = net::udp_exchange(&link, 5000, 1000, 64);
    println!("  UDP: 1000 datagrams sent, {udp} received");
    let tcp = net::tcp_exchange(&link, 5001, 20, b"GET / HTTP/1.0\r\n\r\n");
    println!("  TCP: 20 connections, {tcp} round trips completed");
    let icmp = net::ping(&link, 10);
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
    net::send_raw(&link, vec![malformed, arp]);
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
    let web = net::tcp_exchange_to(&link, ACME, 443, 5, b"GET / HTTP/1.0\r\n\r\n");
    println!("  acme:443  5 connections, {web} completed (rule acme#1 passes)");
    let mysql = net::tcp_exchange_to(&link, ACME, 3306, 3, b"x");
    println!("  acme:3306 3 connections, {mysql} completed (acme default drop)");
    let counted = net::udp_exchange_to(&link, ACME, 5000, 10, 16);
    println!("  acme:5000 10 datagrams, {counted} received (counted by acme#2, then default drop)");
    let ssh = net::tcp_exchange_to(&link, BETA, 22, 3, b"SSH-2.0-x");
    println!("  beta:22   3 connections, {ssh} completed (beta#1 drops)");
    let dns = net::udp_exchange_to(&link, BETA, 53, 10, 32);
    println!("  beta:53   10 datagrams, {dns} received (beta default pass)\n");
    fluxgate(&bin, &pins, &["-n", &ns, "stats", IF_B])?;
    println!();

    println!("beta's DNS keeps flowing (1,000 datagrams/s) through everything that follows.\n");
    let beta_flow = net::Flow::start(&link, &[(BETA, 53)], 1000);

    println!("a patch to acme that (by mistake) closes its web ports: preflight stops it:");
    let patch = |name: &str, web: &str| -> Result<String> {
        let dir = scratch.0.join(name);
        write_ruleset(&dir)?;
        std::fs::write(dir.join("acme.fg"), acme_file(web))?;
        Ok(dir.display().to_string())
    };
    let closed = patch("closed", "proto tcp dport { 80, 443 } drop")?;
    fluxgate_exits(
        &bin,
        &pins,
        &[
            "-n",
            &ns,
            "apply",
            &closed,
            IF_B,
            "--reason",
            "tighten acme",
        ],
        8,
    )?;
    let web_kept = net::tcp_exchange_to(&link, ACME, 443, 3, b"GET / HTTP/1.0\r\n\r\n");
    println!("  nothing changed: acme:443 3 connections, {web_kept} completed\n");

    println!(
        "a patch that passes the guards (they test from 198.51.100.7) but drops acme's real clients:"
    );
    let narrowed = patch(
        "narrowed",
        "saddr 198.51.100.0/24 proto tcp dport { 80, 443 } pass",
    )?;
    fluxgate(
        &bin,
        &pins,
        &[
            "-n",
            &ns,
            "apply",
            &narrowed,
            IF_B,
            "--reason",
            "web from partners only",
        ],
    )?;
    let broken = net::tcp_exchange_to(&link, ACME, 443, 3, b"GET / HTTP/1.0\r\n\r\n");
    println!("  acme:443 3 connections, {broken} completed");
    println!("rolling acme back: one selector flip, nothing recompiled:");
    fluxgate(
        &bin,
        &pins,
        &["-n", &ns, "rollback", IF_B, "--tenant", "acme"],
    )?;
    let restored = net::tcp_exchange_to(&link, ACME, 443, 5, b"GET / HTTP/1.0\r\n\r\n");
    println!("  acme:443 5 connections, {restored} completed");
    let beta = beta_flow.stop()[0];
    println!(
        "  meanwhile beta:53 {} datagrams sent, {} received\n",
        beta.0, beta.1
    );
    fluxgate(&bin, &pins, &["-n", &ns, "status", IF_B])?;
    fluxgate(&bin, &pins, &["-n", &ns, "history", IF_B])?;
    fluxgate(&bin, &pins, &["-n", &ns, "stats", IF_B, "--tenant", "acme"])?;
    println!();

    fluxgate(&bin, &pins, &["-n", &ns, "detach", IF_B])?;
    fleet_act::act(&bin, &scratch.0)?;
    if udp != 1000 || tcp != 20 || icmp != 10 {
        bail!("traffic was lost while fluxgate passed everything");
    }
    if (web, mysql, counted, ssh, dns) != (5, 0, 0, 0, 10) {
        bail!("the ruleset did not decide as written: {web} {mysql} {counted} {ssh} {dns}");
    }
    if (web_kept, broken, restored) != (3, 0, 5) || beta.0 != beta.1 {
        bail!("the patch / rollback did not behave: {web_kept} {broken} {restored}, beta {beta:?}");
    }
    println!("\ndemo done; namespaces removed");
    Ok(())
}
