//! `cargo xtask deb [--test]`: the Debian package (cargo-deb), and its test.
//!
//! Build: the release `lb` (XDP object embedded), then `lb generate-docs`
//! on that very binary writes the man pages (gzipped here) and the bash /
//! zsh / fish completions under `target/release/deb-assets`, the example
//! configuration must pass `lb check-config` without a warning, and
//! cargo-deb packs what `[package.metadata.deb]` of lb-user/Cargo.toml lists
//! (it is installed on demand, at [`CARGO_DEB_VERSION`]).
//!
//! `--test` then checks the package on this machine: its file list against
//! [`expected_files`], its control fields, that dpkg refuses it beside
//! keepalived (`Conflicts`), installs it with dpkg (past that conflict when
//! keepalived is installed: the VRRP tests use it as their peer), runs the
//! installed `lb --version` and `lb check-config` on the installed example,
//! `systemd-analyze verify` and `security` on the installed unit, checks
//! that the service is not enabled and the man pages are found, purges it
//! and checks that nothing it installed is left. An installed package is
//! purged also when a check fails (a guard).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Context as _};

use crate::{
    setup,
    util::{cargo, exec, output, root},
};

/// The cargo-deb release `cargo xtask deb` installs and uses.
pub const CARGO_DEB_VERSION: &str = "3.8.0";
/// Debian package name ([package.metadata.deb] name).
const PACKAGE: &str = "lb";
/// Worst `systemd-analyze security` exposure the test accepts (0 best, 10
/// worst; the unit scores 3.4 with the settings README: Installing
/// explains).
const MAX_EXPOSURE: f64 = 3.5;

#[derive(clap::Args, Debug, Default)]
pub struct Options {
    /// Then install the package on this machine, check it and purge it.
    #[arg(long)]
    pub test: bool,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let deb = build()?;
    eprintln!("xtask deb: {}", deb.display());
    if opts.test {
        package_test(&deb)?;
        eprintln!("xtask deb --test: passed");
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { root().join(p) } else { p })
        .unwrap_or_else(|| root().join("target"))
}

/// Installs cargo-deb [`CARGO_DEB_VERSION`] unless that version answers.
fn ensure_cargo_deb() -> anyhow::Result<()> {
    let have = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["deb", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if have
        .as_deref()
        .is_some_and(|v| v.split_whitespace().any(|w| w == CARGO_DEB_VERSION))
    {
        return Ok(());
    }
    exec(cargo().args([
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
    ]))
}

/// Builds the package; returns the .deb's path.
pub fn build() -> anyhow::Result<PathBuf> {
    setup::ensure()?;
    ensure_cargo_deb()?;
    exec(cargo().args(["build", "--release", "-p", "lb-user", "--bin", "lb"]))?;
    let release = target_dir().join("release");
    let lb = release.join("lb");
    let assets = release.join("deb-assets");
    if assets.exists() {
        std::fs::remove_dir_all(&assets)
            .with_context(|| format!("removing {}", assets.display()))?;
    }
    let man = assets.join("man");
    exec(
        Command::new(&lb)
            .arg("generate-docs")
            .arg("--man")
            .arg(&man)
            .arg("--completions")
            .arg(assets.join("completions")),
    )?;
    for page in std::fs::read_dir(&man)? {
        let page = page?.path();
        // -n: no name or time stamp in the file (a reproducible package).
        exec(Command::new("gzip").args(["-9nf"]).arg(&page))?;
    }
    let example = root().join("lb-user/pkg/keepalived.conf");
    let checked = Command::new(&lb)
        .arg("check-config")
        .arg(&example)
        .output()
        .context("running lb check-config")?;
    let text = String::from_utf8_lossy(&checked.stdout);
    ensure!(
        checked.status.success() && text.contains(" 0 error(s), 0 warning(s)"),
        "the example configuration {} does not pass lb check-config cleanly:\n{text}",
        example.display()
    );
    let out_dir = target_dir().join("debian");
    let printed = output(
        cargo()
            .args(["deb", "-p", "lb-user", "--no-build", "--output"])
            .arg(&out_dir),
    )?;
    let deb = printed
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("cargo deb printed no package path: {printed}"))?;
    ensure!(deb.is_file(), "cargo deb did not write {}", deb.display());
    Ok(deb)
}

/// Every path the package must hold, directories included as dpkg lists
/// them ("./usr/sbin/"), given the man pages `lb generate-docs` wrote (file
/// names, e.g. "lb-run.8.gz"): the program and its `lbadm` link, the unit,
/// /etc/default/lb, the copyright file and the example configuration, the
/// man pages and the completions. Nothing else.
pub fn expected_files(man_pages: &[String]) -> BTreeSet<String> {
    let mut files: BTreeSet<String> = [
        "./usr/sbin/lb",
        "./usr/sbin/lbadm",
        "./usr/lib/systemd/system/lb.service",
        "./etc/default/lb",
        "./usr/share/doc/lb/copyright",
        "./usr/share/doc/lb/examples/keepalived.conf",
        "./usr/share/bash-completion/completions/lb",
        "./usr/share/zsh/vendor-completions/_lb",
        "./usr/share/fish/vendor_completions.d/lb.fish",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    files.extend(
        man_pages
            .iter()
            .map(|p| format!("./usr/share/man/man8/{p}")),
    );
    // Every parent directory, as dpkg -c lists them (cargo-deb writes no
    // "./" entry).
    let dirs: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let mut ds = Vec::new();
            let mut p = Path::new(f).parent();
            while let Some(d) = p {
                if d != Path::new("") && d != Path::new(".") {
                    ds.push(format!("{}/", d.display()));
                }
                p = d.parent();
            }
            ds
        })
        .collect();
    files.extend(dirs);
    files
}

/// One entry of `dpkg-deb -c`: mode string, path ("./usr/sbin/lb" or
/// "./usr/sbin/" for a directory), link target if a symbolic link.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub mode: String,
    pub path: String,
    pub link: Option<String>,
}

/// Parses `dpkg-deb -c` (tar's verbose listing: mode, owner, size, date,
/// time, path [-> target]).
pub fn parse_listing(text: &str) -> anyhow::Result<Vec<Entry>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            ensure!(f.len() >= 6, "unexpected dpkg-deb -c line: {l}");
            let rest = f[5..].join(" ");
            let (path, link) = match rest.split_once(" -> ") {
                Some((p, t)) => (p.to_owned(), Some(t.to_owned())),
                None => (rest, None),
            };
            Ok(Entry {
                mode: f[0].to_owned(),
                path,
                link,
            })
        })
        .collect()
}

/// Compares the listing with [`expected_files`]: same paths, the program
/// 0755, the link to `lb`, the rest 0644.
pub fn check_listing(entries: &[Entry], man_pages: &[String]) -> anyhow::Result<()> {
    let want = expected_files(man_pages);
    let got: BTreeSet<String> = entries.iter().map(|e| e.path.clone()).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "package file list differs: missing {missing:?}, unexpected {extra:?}"
    );
    for e in entries {
        let want_mode = match e.path.as_str() {
            p if p.ends_with('/') => "drwxr-xr-x",
            "./usr/sbin/lb" => "-rwxr-xr-x",
            "./usr/sbin/lbadm" => "lrwxrwxrwx",
            _ => "-rw-r--r--",
        };
        ensure!(
            e.mode == want_mode,
            "{}: mode {} (want {want_mode})",
            e.path,
            e.mode
        );
    }
    let link = entries.iter().find(|e| e.path == "./usr/sbin/lbadm");
    ensure!(
        link.and_then(|e| e.link.as_deref()) == Some("lb"),
        "/usr/sbin/lbadm is not a link to lb: {link:?}"
    );
    Ok(())
}

fn man_pages() -> anyhow::Result<Vec<String>> {
    let dir = target_dir().join("release/deb-assets/man");
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    pages.sort();
    for must in ["lb.8.gz", "lb-run.8.gz", "lb-check-config.8.gz"] {
        ensure!(
            pages.iter().any(|p| p == must),
            "no man page {must}: {pages:?}"
        );
    }
    Ok(pages)
}

/// Runs `cmd`; Ok(stdout) or Err with everything it said.
fn capture(cmd: &mut Command) -> anyhow::Result<(bool, String, String)> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: $ {shown}");
    let o = cmd
        .output()
        .with_context(|| format!("could not start {shown}"))?;
    Ok((
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

/// dpkg, retried while another dpkg / apt holds its lock (other work on a
/// shared machine).
fn dpkg(args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    for _ in 0..60 {
        let r = capture(Command::new("dpkg").args(args))?;
        if !r.0 && r.2.contains("lock") {
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        return Ok(r);
    }
    bail!(
        "dpkg {}: its lock stayed held for 2 minutes",
        args.join(" ")
    )
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", pkg])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).ends_with(" installed")
        })
}

/// Purges the package on drop unless disarmed (the test purges it itself
/// and checks the result).
struct Installed {
    armed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.armed {
            eprintln!("xtask deb --test: purging {PACKAGE} after a failed check");
            let _ = dpkg(&["--purge", PACKAGE]);
        }
    }
}

fn package_test(deb: &Path) -> anyhow::Result<()> {
    let deb_s = deb.to_string_lossy().into_owned();
    // The package as built.
    let pages = man_pages()?;
    let listing = output(Command::new("dpkg-deb").args(["-c", &deb_s]))?;
    let entries = parse_listing(&listing)?;
    check_listing(&entries, &pages)?;
    eprintln!(
        "xtask deb --test: file list as expected ({} entries)",
        entries.len()
    );
    let field = |f: &str| output(Command::new("dpkg-deb").args(["-f", &deb_s, f]));
    let conflicts = field("Conflicts")?;
    ensure!(conflicts.trim() == "keepalived", "Conflicts: {conflicts}");
    let depends = field("Depends")?;
    for d in ["libc6", "libgcc-s1", "procps"] {
        ensure!(depends.contains(d), "Depends lacks {d}: {depends}");
    }
    let conffiles = output(Command::new("dpkg-deb").args(["-I", &deb_s, "conffiles"]))?;
    ensure!(
        conffiles.lines().any(|l| l.trim() == "/etc/default/lb"),
        "/etc/default/lb is not a conffile: {conffiles}"
    );

    ensure!(
        !installed(PACKAGE),
        "a package named {PACKAGE} is installed already: the test installs and purges its own; remove it first (dpkg --purge {PACKAGE})"
    );
    let files: Vec<PathBuf> = entries
        .iter()
        .filter(|e| !e.path.ends_with('/'))
        .map(|e| PathBuf::from(e.path.trim_start_matches('.')))
        .collect();
    for f in &files {
        ensure!(
            std::fs::symlink_metadata(f).is_err(),
            "{} exists before the install: the test would not see what the package leaves",
            f.display()
        );
    }

    let mut guard = Installed { armed: true };
    if installed("keepalived") {
        // Conflicts: keepalived must stop a plain install.
        let (ok, _, err) = dpkg(&["-i", &deb_s])?;
        ensure!(
            !ok && err.contains("conflict"),
            "dpkg installed {PACKAGE} beside keepalived: {err}"
        );
        ensure!(
            !installed(PACKAGE),
            "a refused install left {PACKAGE} installed"
        );
        eprintln!("xtask deb --test: dpkg refuses it beside keepalived, as it must; installing with --force-conflicts");
        let (ok, _, err) = dpkg(&["-i", "--force-conflicts", &deb_s])?;
        ensure!(ok, "dpkg -i --force-conflicts failed: {err}");
    } else {
        let (ok, _, err) = dpkg(&["-i", &deb_s])?;
        ensure!(ok, "dpkg -i failed: {err}");
    }
    ensure!(installed(PACKAGE), "dpkg -i did not install {PACKAGE}");

    // The installed program.
    let version = output(Command::new("/usr/sbin/lb").arg("--version"))?;
    let want = format!("lb {}", env!("CARGO_PKG_VERSION"));
    ensure!(
        version.trim() == want,
        "lb --version: {version:?}, want {want:?}"
    );
    ensure!(
        std::fs::read_link("/usr/sbin/lbadm")? == Path::new("lb"),
        "/usr/sbin/lbadm does not point at lb"
    );
    let (ok, out, err) = capture(
        Command::new("/usr/sbin/lb")
            .args(["check-config", "/usr/share/doc/lb/examples/keepalived.conf"]),
    )?;
    ensure!(
        ok && out.contains(" 0 error(s), 0 warning(s)"),
        "lb check-config on the installed example: {out}{err}"
    );
    // The unit: systemd-analyze verify is silent on a good unit (it checks
    // the executables and that the Documentation= pages exist).
    let unit = "/usr/lib/systemd/system/lb.service";
    let (ok, out, err) = capture(Command::new("systemd-analyze").args(["verify", unit]))?;
    ensure!(
        ok && out.trim().is_empty() && err.trim().is_empty(),
        "systemd-analyze verify {unit}:\n{out}{err}"
    );
    let (_, out, err) =
        capture(Command::new("systemd-analyze").args(["security", "--offline=true", unit]))?;
    let exposure = exposure(&out)
        .ok_or_else(|| anyhow!("no exposure level in systemd-analyze security:\n{out}{err}"))?;
    eprintln!("xtask deb --test: systemd-analyze security: exposure {exposure}");
    ensure!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} above {MAX_EXPOSURE}:\n{out}"
    );
    let (_, state, _) = capture(Command::new("systemctl").args(["is-enabled", "lb.service"]))?;
    ensure!(
        state.trim() == "disabled",
        "lb.service is {:?} after the install (want disabled: /etc/default/lb names no interface of this machine yet)",
        state.trim()
    );
    if Path::new("/usr/bin/man").exists() {
        let (ok, out, err) = capture(Command::new("man").args(["-w", "8", "lb-run"]))?;
        ensure!(
            ok && out.trim().ends_with("/usr/share/man/man8/lb-run.8.gz"),
            "man -w 8 lb-run: {out}{err}"
        );
    }

    // Removal: nothing left.
    guard.armed = false;
    let (ok, _, err) = dpkg(&["--purge", PACKAGE])?;
    ensure!(ok, "dpkg --purge {PACKAGE} failed: {err}");
    ensure!(!installed(PACKAGE), "{PACKAGE} still installed after purge");
    let left: Vec<_> = files
        .iter()
        .filter(|f| std::fs::symlink_metadata(f).is_ok())
        .collect();
    ensure!(left.is_empty(), "left after dpkg --purge: {left:?}");
    for d in [
        "/usr/share/doc/lb",
        "/var/lib/systemd/deb-systemd-helper-enabled/lb.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-masked/lb.service",
    ] {
        ensure!(
            std::fs::symlink_metadata(d).is_err(),
            "left after dpkg --purge: {d}"
        );
    }
    eprintln!("xtask deb --test: purged, nothing left");
    Ok(())
}

/// The number in systemd-analyze security's last line, "→ Overall exposure
/// level for lb.service: 3.8 OK".
pub fn exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .rev()
        .find(|l| l.contains("Overall exposure level"))?;
    line.rsplit_once(':')?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
drwxr-xr-x 0/0               0 2026-11-30 14:00 ./usr/
drwxr-xr-x 0/0               0 2026-11-30 14:00 ./usr/sbin/
-rwxr-xr-x 0/0         9876543 2026-11-30 14:00 ./usr/sbin/lb
lrwxrwxrwx 0/0               0 2026-11-30 14:00 ./usr/sbin/lbadm -> lb
";

    #[test]
    fn listing_lines_give_mode_path_and_link() {
        let e = parse_listing(LISTING).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[2].path, "./usr/sbin/lb");
        assert_eq!(e[2].mode, "-rwxr-xr-x");
        assert_eq!(e[3].link.as_deref(), Some("lb"));
        assert_eq!(e[3].path, "./usr/sbin/lbadm");
    }

    #[test]
    fn the_expected_list_has_every_parent_directory_and_the_man_pages() {
        let f = expected_files(&["lb.8.gz".into(), "lb-run.8.gz".into()]);
        assert!(!f.contains("./"));
        for p in [
            "./usr/",
            "./usr/share/man/man8/",
            "./usr/share/man/man8/lb-run.8.gz",
            "./usr/lib/systemd/system/",
            "./etc/default/lb",
        ] {
            assert!(f.contains(p), "{p} missing from {f:?}");
        }
        assert!(!f.contains("./usr/share/man/man8/lb-list.8.gz"));
    }

    #[test]
    fn a_missing_file_an_extra_file_or_a_wrong_mode_fails_the_check() {
        let pages = ["lb.8.gz".to_string()];
        let mut good = String::new();
        for p in expected_files(&pages) {
            let line = match p.as_str() {
                p if p.ends_with('/') => format!("drwxr-xr-x 0/0 0 2026-11-30 14:00 {p}"),
                "./usr/sbin/lb" => format!("-rwxr-xr-x 0/0 1 2026-11-30 14:00 {p}"),
                "./usr/sbin/lbadm" => format!("lrwxrwxrwx 0/0 0 2026-11-30 14:00 {p} -> lb"),
                p => format!("-rw-r--r-- 0/0 1 2026-11-30 14:00 {p}"),
            };
            good.push_str(&line);
            good.push('\n');
        }
        check_listing(&parse_listing(&good).unwrap(), &pages).unwrap();

        let extra = format!("{good}-rw-r--r-- 0/0 1 2026-11-30 14:00 ./usr/bin/stray\n");
        let e = check_listing(&parse_listing(&extra).unwrap(), &pages).unwrap_err();
        assert!(e.to_string().contains("./usr/bin/stray"), "{e}");

        let missing: String = good
            .lines()
            .filter(|l| !l.ends_with("./etc/default/lb"))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = check_listing(&parse_listing(&missing).unwrap(), &pages).unwrap_err();
        assert!(e.to_string().contains("./etc/default/lb"), "{e}");

        let bad_mode = good.replace("-rwxr-xr-x 0/0 1", "-rw-r--r-- 0/0 1");
        let e = check_listing(&parse_listing(&bad_mode).unwrap(), &pages).unwrap_err();
        assert!(e.to_string().contains("./usr/sbin/lb: mode"), "{e}");

        let bad_link = good.replace("lbadm -> lb", "lbadm -> /usr/bin/lb");
        assert!(check_listing(&parse_listing(&bad_link).unwrap(), &pages).is_err());
    }

    #[test]
    fn exposure_is_read_from_the_last_line() {
        let r = "✗ PrivateTmp= ...  0.2\n\n→ Overall exposure level for lb.service: 3.8 OK 🙂\n";
        assert_eq!(exposure(r), Some(3.8));
        assert_eq!(exposure("nothing"), None);
    }
}
