//! The eBPF build shared by the crates that embed eBPF objects (lb-user's
//! balancer, the labs' programs), called from their `build.rs`.
//!
//! The build is the one aya-build 0.2.0 runs (`rustup run nightly cargo build`
//! for bpfel-unknown-none with build-std, bpf-linker, BTF), but quiet: its
//! output is shown only when it fails, and compiler warnings are passed on.
//! (aya-build turns every line the inner cargo prints, "Compiling …"
//! included, into a cargo warning, which cargo repeats on every build.)
//! With `AYA_BUILD_SKIP=1` (cargo check, clippy, machines without
//! bpf-linker) empty stub objects are written instead; loading one then
//! fails with a clear message.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Context as _};
use cargo_metadata::{diagnostic::DiagnosticLevel, Artifact, Message};

/// The toolchain the eBPF programs are built with (`rustup run` puts its
/// libLLVM on the library path, which bpf-linker loads).
const TOOLCHAIN: &str = "nightly";

/// Builds `bins` of the workspace package `package` with `features` into
/// OUT_DIR (stubs under `AYA_BUILD_SKIP=1`), and tells cargo to rerun the
/// build script when the package's sources change.
pub fn build(package: &str, bins: &[&str], features: &[&str]) -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if skip {
        for bin in bins {
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
        .find(|p| p.name.as_str() == package)
        .ok_or_else(|| anyhow!("{package} package not found in the workspace"))?;
    let root = pkg
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{package} manifest has no parent"))?;
    // The eBPF package's library is a build-dependency of the caller, so
    // cargo reruns its script when it changes; this covers the binaries'
    // sources too (cargo compares the newest modification time under the
    // directory).
    println!("cargo:rerun-if-changed={root}");
    build_ebpf(&out_dir, package, bins, features)
}

/// Builds `bins` of `package` and copies them to `out_dir`. Prints nothing
/// unless the build fails (then everything it printed) or the compiler warns.
fn build_ebpf(
    out_dir: &Path,
    package: &str,
    bins: &[&str],
    features: &[&str],
) -> anyhow::Result<()> {
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN not set")?;
    let target = match endian.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        e => bail!("unsupported endianness {e}"),
    };
    let mut arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    if arch.starts_with("riscv64") {
        arch = "riscv64".into();
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["run", TOOLCHAIN, "cargo", "build", "--package", package]);
    for bin in bins.iter().copied() {
        cmd.args(["--bin", bin]);
    }
    cmd.args(["--message-format=json", "--release", "--target", target]);
    cmd.args(["-Z", "build-std=core", "--features", &features.join(",")]);
    // A target directory of its own: cargo would otherwise wait for the lock
    // on the outer build's.
    let target_dir = out_dir.join("aya-build").join("target").join(package);
    cmd.arg("--target-dir").arg(&target_dir);
    // Flags separated by 0x1f: the target architecture the eBPF code reads
    // (aya-ebpf's bpf_target_arch), and BTF for the kernel.
    let flags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ];
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    // The outer build's compiler would be used instead of the nightly one.
    cmd.env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");

    let out = cmd
        .output()
        .with_context(|| format!("running {cmd:?} (is rustup installed?)"))?;
    let mut executables = Vec::new();
    let mut warnings = Vec::new();
    let mut report = String::new();
    for message in Message::parse_stream(&out.stdout[..]) {
        match message.context("reading cargo's JSON messages")? {
            Message::CompilerArtifact(Artifact {
                executable: Some(exe),
                target,
                ..
            }) => executables.push((target.name, exe)),
            Message::CompilerMessage(m) => {
                let text = m.message.rendered.unwrap_or(m.message.message);
                if m.message.level == DiagnosticLevel::Warning {
                    warnings.push(text.clone());
                }
                report.push_str(&text);
                report.push('\n');
            }
            Message::TextLine(line) => {
                report.push_str(&line);
                report.push('\n');
            }
            _ => {}
        }
    }
    if !out.status.success() {
        // Cargo shows a failed build script's stderr.
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        eprintln!("{report}");
        bail!("{cmd:?} failed ({}): its output is above", out.status);
    }
    for line in warnings.iter().flat_map(|w| w.lines()) {
        println!("cargo:warning={line}");
    }
    for bin in bins.iter().copied() {
        let (_, exe) = executables
            .iter()
            .find(|(name, _)| name == bin)
            .ok_or_else(|| anyhow!("the build of {package} produced no {bin}"))?;
        let dst = out_dir.join(bin);
        fs::copy(exe, &dst).with_context(|| format!("copying {exe} to {}", dst.display()))?;
    }
    Ok(())
}
