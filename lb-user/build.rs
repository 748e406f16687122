//! Builds the XDP program (`lb-ebpf`) with aya-build and leaves it in OUT_DIR
//! for `include_bytes_aligned!`. With `AYA_BUILD_SKIP=1` (cargo check, clippy,
//! machines without bpf-linker) an empty stub object is written instead; the
//! agent then refuses to load it with a clear message.
use std::{env, fs, path::PathBuf};

use anyhow::{anyhow, Context as _};

/// The eBPF binaries of lb-ebpf: the balancer and the real servers' tunnel
/// endpoint.
const EBPF_BINS: [&str; 2] = ["lb-xdp", "lb-decap"];

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if skip {
        for bin in EBPF_BINS {
            fs::write(out_dir.join(bin), []).context("writing stub eBPF object")?;
        }
        return Ok(());
    }
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let pkg = meta
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "lb-ebpf")
        .ok_or_else(|| anyhow!("lb-ebpf package not found in the workspace"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("lb-ebpf manifest has no parent"))?;
    let features: Vec<&str> = if env::var("LB_EBPF_LOG").is_ok() {
        vec!["log"]
    } else {
        vec![]
    };
    println!("cargo:rerun-if-env-changed=LB_EBPF_LOG");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: root.as_str(),
            no_default_features: false,
            features: &features,
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the XDP program (run `cargo xtask setup` if bpf-linker or rust-src is missing)",
    )
}
