//! Builds the XDP program (crate `fluxgate-ebpf`) for bpfel-unknown-none with the
//! Debian toolchain linked as `deb`, and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`. `cargo xtask setup` installs what this needs.

use std::path::Path;

const LINKER: &str = "/opt/fluxgate/tools/bin/bpf-linker";

fn main() -> anyhow::Result<()> {
    if !Path::new(LINKER).exists() {
        anyhow::bail!(
            "bpf-linker is missing at {LINKER}: run `cargo xtask setup` (or `cargo xtask build`) first"
        );
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root_dir = Path::new(&manifest_dir).join("../ebpf");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    println!("cargo:rerun-if-changed={manifest_dir}/../ebpf/common/src");
    println!("cargo:rerun-if-changed={manifest_dir}/../ebpf/parse/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "fluxgate-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom("deb"),
    )
}
