//! `cargo xtask setup`: everything a fresh machine needs, idempotent.
//!
//! - rust-src for the nightly toolchain (build-std for bpfel-unknown-none);
//! - bpf-linker built against the nightly toolchain's own libLLVM (its major
//!   version and file name are read from the toolchain at run time);
//! - the Debian packages the build and the tests use (iproute2, bpftool,
//!   ethtool, procps, a C compiler for ring, keepalived as the VRRP test
//!   peer, nftables, HAProxy, wrk and a font for the benchmark, Prometheus for the
//!   metrics test). Services the packages
//!   ship are not started (policy-rc.d).
use std::{path::PathBuf, process::Command};

use anyhow::{anyhow, Context as _};

use crate::util::{exec, find_program, output};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// (program, Debian package) the tests and labs run.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("bpftool", "bpftool"),
    ("ethtool", "ethtool"),
    ("mount", "mount"),
    ("sysctl", "procps"),
    ("md5sum", "coreutils"),
    // ring (rustls' crypto for SSL_GET) compiles C and assembly.
    ("cc", "gcc"),
    // The VRRP interoperability tests run keepalived as the peer.
    ("keepalived", "keepalived"),
    // The benchmark: nftables DNAT and HAProxy as baselines, wrk as the
    // HTTP load generator, a font for the plots.
    ("nft", "nftables"),
    ("haproxy", "haproxy"),
    ("wrk", "wrk"),
    // The metrics test: a real Prometheus scrapes the agent; promtool
    // checks its exposition.
    ("prometheus", "prometheus"),
    (crate::plot::FONT, "fonts-dejavu-core"),
];

#[derive(clap::Args, Debug, Default)]
pub struct Options {
    /// Only check; print what is missing and fail if anything is.
    #[arg(long)]
    pub check: bool,
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let s = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is needed to build the XDP program")?;
    Ok(PathBuf::from(s.trim()))
}

fn has_rust_src(sysroot: &std::path::Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file()
}

/// bpf-linker loads the nightly toolchain's libLLVM, which `rustup run`
/// puts on the library path (as lb-user's build.rs does when it builds).
fn bpf_linker_ok() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "bpf-linker", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn llvm_major() -> anyhow::Result<String> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let v = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .ok_or_else(|| anyhow!("rustc +nightly -vV shows no LLVM version"))?;
    Ok(v.split('.').next().unwrap_or(v).to_owned())
}

/// What is missing now.
pub fn missing() -> Vec<String> {
    let mut m = Vec::new();
    match nightly_sysroot() {
        Ok(s) if has_rust_src(&s) => {}
        Ok(_) => m.push("rust-src (nightly)".into()),
        Err(_) => m.push("nightly toolchain".into()),
    }
    if !bpf_linker_ok() {
        m.push("bpf-linker".into());
    }
    for (prog, pkg) in PACKAGES {
        if find_program(prog).is_none() {
            m.push(format!("{pkg} (Debian)"));
        }
    }
    m
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let miss = missing();
    if opts.check {
        if miss.is_empty() {
            eprintln!("xtask setup: everything is installed");
            return Ok(());
        }
        return Err(anyhow!("missing: {}", miss.join(", ")));
    }
    if miss.is_empty() {
        eprintln!(
            "xtask setup: nothing to do (nightly rust-src, bpf-linker and test packages present)"
        );
        return Ok(());
    }
    eprintln!("xtask setup: installing {}", miss.join(", "));

    let sysroot = match nightly_sysroot() {
        Ok(s) => s,
        Err(_) => {
            exec(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]))?;
            nightly_sysroot()?
        }
    };
    if !has_rust_src(&sysroot) {
        exec(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    if !bpf_linker_ok() {
        // bpf-linker links against a shared libLLVM of rustc's LLVM major
        // version; the nightly toolchain ships one.
        let major = llvm_major()?;
        let lib = std::fs::read_dir(sysroot.join("lib"))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so"))
            })
            .ok_or_else(|| anyhow!("no libLLVM.so* in {}/lib", sysroot.display()))?;
        let prefix = dirs_home().join(".local/share/lb-bpf-llvm");
        std::fs::create_dir_all(prefix.join("lib"))?;
        let link = prefix.join("lib/libLLVM.so");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)?;
        eprintln!(
            "xtask setup: bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {major})",
            lib.display()
        );
        exec(
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--no-default-features",
                    "--features",
                ])
                .arg(format!("llvm-{major}"))
                .env("LLVM_PREFIX", &prefix),
        )?;
    }

    install_packages(PACKAGES)?;
    let miss = missing();
    if !miss.is_empty() {
        return Err(anyhow!("still missing after setup: {}", miss.join(", ")));
    }
    eprintln!("xtask setup: done");
    Ok(())
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Packages only `cargo xtask bench --ipvs` needs: the emulator, a static
/// busybox for the initramfs, ipvsadm, and depmod / modprobe.
pub const IPVS_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("/bin/busybox", "busybox-static"),
    ("ipvsadm", "ipvsadm"),
    ("depmod", "kmod"),
];

/// Installs the Debian packages of `list` whose program is missing; services
/// the packages ship are not started.
pub fn install_packages(list: &[(&str, &str)]) -> anyhow::Result<()> {
    let pkgs: Vec<&str> = list
        .iter()
        .filter(|(p, _)| find_program(p).is_none())
        .map(|(_, k)| *k)
        .collect();
    if !pkgs.is_empty() {
        exec(
            Command::new("apt-get")
                .arg("update")
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        // keepalived's package would start its service: a policy-rc.d
        // that forbids it for the duration of the install (Debian's way).
        let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
        let ours = !policy.exists();
        if ours {
            std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
            std::fs::set_permissions(
                policy,
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
            )?;
        }
        let r = exec(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&pkgs)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        );
        if ours {
            let _ = std::fs::remove_file(policy);
        }
        r?;
    }
    Ok(())
}

/// Runs setup when something is missing (the other commands call this).
pub fn ensure() -> anyhow::Result<()> {
    if missing().is_empty() {
        Ok(())
    } else {
        run(Options::default())
    }
}
