//! `cargo xtask …`: everything a fresh machine needs, idempotently.
//!
//! - `setup`: apt packages, the Debian Rust toolchain linked as `deb` (it has
//!   rust-src for `-Z build-std`), bpf-linker in /opt/fluxgate/tools, bpffs mounted.
//! - `build`: setup, then build the eBPF object and every userspace crate.
//! - `demo`:  build, then two namespaces + veth, real XDP, real traffic, counters.
//! - `test`:  build, fmt/clippy checks, then every test (they need root).
//! - `man`:   the man page and shell completions of the `fluxgate` CLI,
//!   generated from its definition, into `target/dist/{man,completions}`.
//! - `fuzz TARGET|all [--time SECONDS]`: setup, then the cargo-fuzz (libFuzzer)
//!   targets of `fuzz/` (their own workspace), built with the `deb` toolchain.
//!
//! Deliberately no dependency on the other crates: `setup` must run before the
//! eBPF toolchain exists.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context, Result, bail};

/// Debian packages the build and the tests need (see ../shared/TOOLCHAIN.md).
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "clang-19",
    "libbpf-dev",
    "linux-libc-dev",
    "iproute2",
    "bpftool",
    // The capture test reads pcapng files back with tcpdump.
    "tcpdump",
    // The peers bench compares against xdp-filter and nftables.
    "xdp-tools",
    "nftables",
    // The status page's browser test: headless Chromium renders the page,
    // tesseract reads the screenshot back (English data, and a font to
    // render with).
    "chromium",
    "tesseract-ocr",
    "tesseract-ocr-eng",
    "fonts-dejavu-core",
    // Fleet rollout (issue #26): the tests, the demo and the fleet bench
    // start their own etcd; the etcd client crate compiles etcd's protobuf
    // definitions with protoc.
    "etcd-server",
    "protobuf-compiler",
];
const TOOLS_DIR: &str = "/opt/fluxgate/tools";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const DEB_TOOLCHAIN: &str = "deb";
/// cargo-fuzz, built with stable into [`TOOLS_DIR`]; it drives libFuzzer with the
/// `deb` toolchain, whose `-Zsanitizer` RUSTC_BOOTSTRAP=1 unlocks.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The fuzz targets in `fuzz/fuzz_targets/`; seeds in `fuzz/seeds/<target>`.
const FUZZ_TARGETS: &[&str] = &[
    "ruleset",
    "packet_parser",
    "classbench",
    "guard_packet",
    "pcap",
];
/// How long `cargo xtask test` runs each fuzz target.
const CI_FUZZ_SECONDS: u64 = 20;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("build") => setup().and_then(|()| build()),
        Some("demo") => setup().and_then(|()| build()).and_then(|()| demo()),
        Some("test") => setup()
            .and_then(|()| build())
            .and_then(|()| test(&args[1..])),
        Some("man") => setup().and_then(|()| man()),
        Some("fuzz") => setup().and_then(|()| fuzz(&args[1..])),
        _ => {
            eprintln!(
                "usage: cargo xtask <setup|build|demo|test [-- test args]|man|fuzz TARGET|all [--time SECONDS]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(what: &str) -> Instant {
    eprintln!("xtask: {what}");
    Instant::now()
}

fn done(started: Instant) {
    eprintln!("xtask:   done in {:.1}s", started.elapsed().as_secs_f64());
}

/// Runs a command, failing with its name when it fails.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout, or `None` if it cannot run or fails.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

fn setup() -> Result<()> {
    let started = step("setup: checking the toolchain and system packages");
    apt_packages()?;
    deb_toolchain()?;
    bpf_linker()?;
    cargo_fuzz()?;
    bpffs()?;
    done(started);
    Ok(())
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}; run `cargo xtask setup` as root to install them"
        );
    }
    let started = step(&format!("setup: installing Debian packages {missing:?}"));
    run(Command::new("apt-get").args(["update", "-q"]))
        .context("apt-get update (is the Debian mirror reachable?)")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("installing {missing:?}"))?;
    done(started);
    Ok(())
}

fn deb_toolchain() -> Result<()> {
    let listed = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is required (it manages the stable toolchain)")?;
    if !listed
        .lines()
        .any(|l| l.split_whitespace().next() == Some(DEB_TOOLCHAIN))
    {
        let started = step("setup: linking the Debian Rust toolchain as `deb`");
        run(Command::new("rustup").args(["toolchain", "link", DEB_TOOLCHAIN, "/usr"]))?;
        done(started);
    }
    if !Path::new("/usr/lib/rustlib/src/rust/library/core").exists() {
        bail!("the `deb` toolchain has no rust-src (/usr/lib/rustlib/src); install rust-web-src");
    }
    output(Command::new("rustup").args(["run", DEB_TOOLCHAIN, "rustc", "--version"]))
        .context("`rustup run deb rustc` does not work; check the rustc-web package")?;
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let linker = PathBuf::from(TOOLS_DIR).join("bin/bpf-linker");
    let current = output(Command::new(&linker).arg("--version"));
    if current
        .as_deref()
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    let started = step(&format!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} into {TOOLS_DIR} (about a minute)"
    ));
    run(Command::new("cargo")
        .args([
            "+stable",
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        ])
        .args([
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
            "--force",
        ])
        .args(["--root", TOOLS_DIR])
        .env("LLVM_PREFIX", LLVM_PREFIX))
    .context("installing bpf-linker (needs llvm-22-dev and crates.io)")?;
    done(started);
    Ok(())
}

fn cargo_fuzz() -> Result<()> {
    let bin = PathBuf::from(TOOLS_DIR).join("bin/cargo-fuzz");
    let current = output(Command::new(&bin).arg("--version"));
    if current
        .as_deref()
        .is_some_and(|v| v.split_whitespace().nth(1) == Some(CARGO_FUZZ_VERSION))
    {
        return Ok(());
    }
    let started = step(&format!(
        "setup: building cargo-fuzz {CARGO_FUZZ_VERSION} into {TOOLS_DIR} (about a minute)"
    ));
    run(Command::new("cargo")
        .args([
            "+stable",
            "install",
            &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
        ])
        .args(["--locked", "--force", "--root", TOOLS_DIR]))
    .context("installing cargo-fuzz (needs crates.io)")?;
    done(started);
    Ok(())
}

fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    if !is_root() {
        bail!("bpffs is not mounted at /sys/fs/bpf; run `cargo xtask setup` as root");
    }
    let started = step("setup: mounting bpffs at /sys/fs/bpf (mode 0700, as systemd does)");
    run(Command::new("mount").args(["-t", "bpf", "-o", "mode=0700", "bpf", "/sys/fs/bpf"]))?;
    done(started);
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn build() -> Result<()> {
    let started = step("build: eBPF object (embedded in fluxgate-dataplane) and userspace crates");
    run(cargo().args(["build", "--all-targets"]))?;
    done(started);
    Ok(())
}

fn demo() -> Result<()> {
    if !is_root() {
        bail!("the demo creates network namespaces and attaches XDP: run it as root");
    }
    run(cargo().args([
        "build",
        "--quiet",
        "-p",
        "fluxgate-control",
        "--bins",
        "--examples",
    ]))?;
    run(cargo().args([
        "run",
        "--quiet",
        "-p",
        "fluxgate-control",
        "--example",
        "demo",
    ]))
}

/// Writes `fluxgate.1` and bash / zsh / fish completions, generated from the
/// CLI's own definition (`fluxgate generate`), into `target/dist`.
fn man() -> Result<()> {
    let dist = workspace_root().join("target").join("dist");
    for (what, dir) in [("man", "man"), ("completions", "completions")] {
        let started = step(&format!("man: {what} into target/dist/{dir}"));
        run(cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "fluxgate-control",
                "--bin",
                "fluxgate",
                "--",
            ])
            .args(["generate", what])
            .arg(dist.join(dir)))?;
        done(started);
    }
    eprintln!(
        "xtask: install with: install -Dm644 target/dist/man/fluxgate.1 /usr/local/share/man/man1/fluxgate.1"
    );
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    if !is_root() {
        bail!("the tests create network namespaces and attach XDP programs: run them as root");
    }
    let started = step("test: cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--check"]))?;
    done(started);
    let started = step("test: cargo clippy --all-targets -- -D warnings");
    run(cargo().args(["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"]))?;
    done(started);
    let started = step("test: cargo test (unit, integration with real XDP in namespaces, doc)");
    run(cargo().arg("test").args(extra))?;
    done(started);
    fuzz_build()?;
    for target in FUZZ_TARGETS {
        fuzz_run(target, Some(CI_FUZZ_SECONDS))?;
    }
    Ok(())
}

/// `cargo xtask fuzz TARGET|all [--time SECONDS]`: builds every target once,
/// then runs TARGET (or each in turn) for SECONDS, or until it finds a crash
/// or is interrupted when no time is given (`all` needs a time).
fn fuzz(args: &[String]) -> Result<()> {
    let usage = || {
        anyhow::anyhow!(
            "usage: cargo xtask fuzz TARGET|all [--time SECONDS]; targets: {}",
            FUZZ_TARGETS.join(", ")
        )
    };
    let mut target = None;
    let mut time = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--time" => {
                let value = args.next().ok_or_else(usage)?;
                time = Some(
                    value
                        .trim_end_matches('s')
                        .parse::<u64>()
                        .with_context(|| format!("--time {value}: seconds expected"))?,
                );
            }
            t if target.is_none() && (t == "all" || FUZZ_TARGETS.contains(&t)) => {
                target = Some(t.to_owned());
            }
            _ => return Err(usage()),
        }
    }
    let target = target.ok_or_else(usage)?;
    fuzz_build()?;
    if target == "all" {
        if time.is_none() {
            bail!(
                "`cargo xtask fuzz all` runs the targets one after the other: give --time SECONDS"
            );
        }
        for target in FUZZ_TARGETS {
            fuzz_run(target, time)?;
        }
        return Ok(());
    }
    fuzz_run(&target, time)
}

/// `cargo fuzz SUBCOMMAND --fuzz-dir fuzz --sanitizer none` with the `deb`
/// toolchain (1.96; RUSTC_BOOTSTRAP=1 unlocks the `-Z` flags cargo-fuzz
/// passes, as stable rustup has no nightly here), cargo-fuzz and bpf-linker
/// from [`TOOLS_DIR`] on PATH (fluxgate-dataplane's build script builds the
/// XDP object). No sanitizer: Debian's rustc ships no AddressSanitizer
/// runtime (`librustc-stable_rt.asan.a`), so the link would fail; the
/// targets are safe Rust but for the XDP parser, whose fuzz target puts each
/// frame against a guard page instead.
fn cargo_fuzz_cmd(subcommand: &str) -> Command {
    let tools = PathBuf::from(TOOLS_DIR).join("bin");
    let path = env::var_os("PATH").unwrap_or_default();
    let path =
        env::join_paths(std::iter::once(tools).chain(env::split_paths(&path))).unwrap_or(path);
    let mut cmd = Command::new("rustup");
    cmd.args(["run", DEB_TOOLCHAIN, "cargo", "fuzz", subcommand])
        .args(["--fuzz-dir", "fuzz", "--sanitizer", "none"])
        .current_dir(workspace_root())
        .env("PATH", path)
        .env("RUSTC_BOOTSTRAP", "1")
        // The CARGO of the stable toolchain running xtask must not leak in.
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

fn fuzz_build() -> Result<()> {
    let started = step("fuzz: building the fuzz targets (cargo fuzz build)");
    run(&mut cargo_fuzz_cmd("build"))?;
    done(started);
    Ok(())
}

/// Runs one target with its corpus (`fuzz/corpus/TARGET`, grown by the run)
/// and its committed seeds (`fuzz/seeds/TARGET`); a panic, a crash, an input
/// that takes over 10 s or 2 GiB of RSS fails, leaving the input in `fuzz/artifacts/TARGET/`.
fn fuzz_run(target: &str, seconds: Option<u64>) -> Result<()> {
    let root = workspace_root().join("fuzz");
    let corpus = root.join("corpus").join(target);
    let seeds = root.join("seeds").join(target);
    let artifacts = root.join("artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let started = step(&format!(
        "fuzz: {target} for {}",
        seconds.map_or("until a crash or Ctrl-C".to_owned(), |s| format!("{s} s"))
    ));
    let mut cmd = cargo_fuzz_cmd("run");
    cmd.arg(target)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .args(["-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"])
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    if let Some(s) = seconds {
        cmd.arg(format!("-max_total_time={s}"));
    }
    run(&mut cmd).with_context(|| {
        format!(
            "fuzz target {target} failed: the input is in {}",
            artifacts.display()
        )
    })?;
    done(started);
    Ok(())
}
