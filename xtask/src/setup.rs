//! `cargo xtask setup`: everything a fresh machine needs, idempotent.
//!
//! - rust-src for the nightly toolchain (build-std for bpfel-unknown-none);
//! - bpf-linker built against the nightly toolchain's own libLLVM (its major
//!   version and file name are read from the toolchain at run time);
//! - the Debian packages the build and the tests use (iproute2, bpftool,
//!   ethtool, procps, a C compiler for ring, keepalived as the VRRP test
//!   peer, nftables, HAProxy, wrk and a font for the benchmark, Prometheus for the
//!   metrics test, Chromium and its WebDriver for the web console's tests,
//!   GoBGP and BIRD 2 for the scale-out lab). Services the packages
//!   ship are not started (policy-rc.d), and the daemons' services
//!   ([`SERVICE_PACKAGES`]) are left disabled: see [`disable_services`].
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
    // The scale-out lab (tests/tests/bgp.rs): each director announces its
    // VIPs through GoBGP (`gobgpd`, driven with the `gobgp` client the same
    // package ships); the router stands in for the top-of-rack switch with
    // BIRD 2 installing ECMP routes into its kernel.
    ("gobgpd", "gobgpd"),
    ("gobgp", "gobgpd"),
    ("bird", "bird2"),
    ("birdc", "bird2"),
    (crate::plot::FONT, "fonts-dejavu-core"),
    // The web console's tests drive a headless Chromium through WebDriver
    // (tests/src/browser.rs); Debian splits the browser and its driver.
    ("/usr/bin/chromium", "chromium"),
    ("/usr/bin/chromedriver", "chromium-driver"),
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
            "xtask setup: nothing to install (nightly rust-src, bpf-linker and test packages present)"
        );
        // Packages installed before (by an older setup, or by hand) may
        // have their services enabled.
        return disable_services();
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
/// the packages ship are not started, and those of [`SERVICE_PACKAGES`] are
/// left disabled ([`disable_services`]).
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
    disable_services()
}

/// Packages whose services must not run beside lb, nor start at the next
/// boot: keepalived (lb replaces it), HAProxy (a benchmark baseline),
/// Prometheus (the metrics test's scraper), ipvsadm (its boot script
/// restores ipvs rules) and the BGP daemons a lab may run. Debian enables
/// and starts their services on install. Packages of the list that are not
/// installed are skipped.
pub const SERVICE_PACKAGES: &[&str] = &[
    "keepalived",
    "haproxy",
    "prometheus",
    "ipvsadm",
    "bird2",
    "frr",
    "gobgpd",
];

/// What starts a package's daemon at boot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    /// A systemd unit file the package ships (`keepalived.service`).
    Unit(String),
    /// A SysV init script the package ships (`/etc/init.d/ipvsadm`) with no
    /// systemd unit of the same name.
    SysV(String),
}

/// The services of one package, from its file list (`dpkg -L` output):
/// unit files (service, socket, timer, path) directly in systemd's system
/// unit directories, and init scripts in /etc/init.d that no unit of the
/// same name replaces.
pub fn services_of(file_list: &str) -> Vec<Service> {
    const UNIT_DIRS: [&str; 2] = ["/lib/systemd/system", "/usr/lib/systemd/system"];
    const KINDS: [&str; 4] = ["service", "socket", "timer", "path"];
    let mut units = std::collections::BTreeSet::new();
    let mut scripts = std::collections::BTreeSet::new();
    for line in file_list.lines().map(str::trim) {
        let p = std::path::Path::new(line);
        let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
            continue;
        };
        let dir = dir.to_string_lossy();
        if UNIT_DIRS.contains(&dir.as_ref())
            && name
                .rsplit_once('.')
                .is_some_and(|(stem, kind)| !stem.is_empty() && KINDS.contains(&kind))
        {
            units.insert(name.to_owned());
        } else if dir == "/etc/init.d" && !name.starts_with('.') && name != "README" {
            scripts.insert(name.to_owned());
        }
    }
    let mut out: Vec<Service> = units.iter().cloned().map(Service::Unit).collect();
    out.extend(
        scripts
            .into_iter()
            .filter(|s| !units.contains(&format!("{s}.service")))
            .map(Service::SysV),
    );
    out
}

/// True when systemd is the running service manager (sd_booted(3)).
fn systemd_running() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// Leaves every service of the installed [`SERVICE_PACKAGES`] disabled
/// (idempotent; also for packages installed before setup ran):
/// `systemctl disable` for unit files (it works without a running systemd,
/// on the files), `update-rc.d NAME disable` for init scripts without a
/// unit. Where systemd runs the services (PID 1), a running unit is
/// stopped too. Where it does not (containers, this project's build
/// machines) nothing the package installed runs (policy-rc.d kept its
/// start out), and a daemon running now was started by someone else — a
/// test's keepalived peer, say — so none is stopped.
pub fn disable_services() -> anyhow::Result<()> {
    let running = systemd_running();
    for pkg in SERVICE_PACKAGES {
        let Ok(list) = output(Command::new("dpkg-query").args(["-L", pkg])) else {
            continue; // not installed
        };
        for svc in services_of(&list) {
            match &svc {
                Service::Unit(unit) => {
                    if running
                        && Command::new("systemctl")
                            .args(["is-active", "--quiet", unit])
                            .status()
                            .is_ok_and(|s| s.success())
                    {
                        exec(Command::new("systemctl").args(["stop", unit]))?;
                    }
                    let enabled = output(Command::new("systemctl").args(["is-enabled", unit]))
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_default();
                    // "enabled", "enabled-runtime", "alias", "indirect"...:
                    // everything but disabled / static / masked.
                    if !matches!(enabled.as_str(), "disabled" | "static" | "masked" | "") {
                        exec(Command::new("systemctl").args(["disable", "--quiet", unit]))?;
                    }
                }
                Service::SysV(name) => {
                    if has_start_links(name) {
                        exec(Command::new("update-rc.d").args([name.as_str(), "disable"]))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Does some runlevel directory start `name` (an `S??name` link)?
fn has_start_links(name: &str) -> bool {
    (0..=6)
        .map(|l| format!("/etc/rc{l}.d"))
        .chain(["/etc/rcS.d".to_owned()])
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(Result::ok)
        .any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with('S') && n.len() > 3 && &n[3..] == name
        })
}

/// Runs setup when something is missing (the other commands call this).
pub fn ensure() -> anyhow::Result<()> {
    if missing().is_empty() {
        Ok(())
    } else {
        run(Options::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_init_scripts_without_a_unit_are_services() {
        let keepalived = "/.\n/etc\n/etc/init.d\n/etc/init.d/keepalived\n/lib/systemd\n/lib/systemd/system\n/lib/systemd/system/keepalived.service\n/usr/sbin/keepalived\n";
        assert_eq!(
            services_of(keepalived),
            [Service::Unit("keepalived.service".into())]
        );
        let ipvsadm = "/etc/init.d/ipvsadm\n/etc/default/ipvsadm\n/sbin/ipvsadm\n";
        assert_eq!(services_of(ipvsadm), [Service::SysV("ipvsadm".into())]);
        let many = "/usr/lib/systemd/system/prometheus.service\n\
                    /lib/systemd/system/haproxy@.service\n\
                    /lib/systemd/system/foo.timer\n\
                    /lib/systemd/system/foo.socket\n\
                    /lib/systemd/system/foo.path\n\
                    /lib/systemd/system/foo.target\n\
                    /lib/systemd/system/.service\n\
                    /lib/systemd/system/sockets.target.wants/foo.socket\n\
                    /lib/systemd/system-generators/foo-gen\n\
                    /etc/systemd/system/local.service\n\
                    /etc/init.d/prometheus\n\
                    /etc/init.d/README\n\
                    /usr/share/doc/foo/example.service\n";
        assert_eq!(
            services_of(many),
            [
                Service::Unit("foo.path".into()),
                Service::Unit("foo.socket".into()),
                Service::Unit("foo.timer".into()),
                Service::Unit("haproxy@.service".into()),
                Service::Unit("prometheus.service".into()),
            ]
        );
        assert!(services_of("").is_empty());
    }
}
