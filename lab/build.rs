//! Builds the lab's XDP programs (`lab-ebpf`) with aya-build and leaves them
//! in OUT_DIR for `include_bytes_aligned!`, as lb-user's build.rs does for the
//! balancer. With `AYA_BUILD_SKIP=1` (cargo check, clippy, machines without
//! bpf-linker) empty stub objects are written instead; loading one then
//! fails with a clear message.
use std::{env, fs, path::PathBuf};

use anyhow::{anyhow, Context as _};

/// The eBPF binaries of lab-ebpf: the labs' helper programs and the
/// benchmark's traffic generator.
const EBPF_BINS: [&str; 2] = ["lab-xdp", "lab-gen"];

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
        .find(|p| p.name.as_str() == "lab-ebpf")
        .ok_or_else(|| anyhow!("lab-ebpf package not found in the workspace"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("lab-ebpf manifest has no parent"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lab-ebpf",
            root_dir: root.as_str(),
            no_default_features: false,
            features: &[],
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the lab's XDP programs (run `cargo xtask setup` if bpf-linker or rust-src is missing)")
}
