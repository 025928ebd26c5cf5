//! `cargo xtask demo`: two network namespaces joined by a veth pair, fluxgate
//! attached to the receiving end with the `fluxgate` CLI, bounded UDP / TCP /
//! ICMP traffic plus one malformed and one non-IP frame, then the counters.
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
        .args(args)
        .status()?;
    if !status.success() {
        bail!("fluxgate {} failed ({status})", args.join(" "));
    }
    Ok(())
}

struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() -> Result<()> {
    support::require_root();
    let bin = fluxgate_bin()?;
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/fluxgate-demo-{}",
        std::process::id()
    )));
    let link = Link::new();
    let ns = link.b.name().to_owned();
    println!(
        "namespaces {} ({ADDR_A}) and {ns} ({ADDR_B}, XDP on {IF_B}) joined by a veth pair\n",
        link.a.name()
    );

    fluxgate(&bin, &pins.0, &["-n", &ns, "attach", IF_B])?;
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

    fluxgate(&bin, &pins.0, &["-n", &ns, "stats"])?;
    println!();
    fluxgate(&bin, &pins.0, &["-n", &ns, "stats", "--json"])?;
    println!();
    fluxgate(&bin, &pins.0, &["-n", &ns, "detach", IF_B])?;
    if udp != 1000 || tcp != 20 || icmp != 10 {
        bail!("traffic was lost while fluxgate passed everything");
    }
    println!("\ndemo done; namespaces removed");
    Ok(())
}
