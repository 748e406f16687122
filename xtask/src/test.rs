//! `cargo xtask test`: every test of the workspace (unit, config and seed
//! parsing, BPF_PROG_TEST_RUN fixtures, namespace end-to-end tests), then one
//! closing line with the totals over all test binaries.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

use crate::{
    setup,
    util::{cargo, exec},
};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Extra arguments for the test binaries (after `--`), e.g. a name filter.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Sums "test result: ok. N passed; M failed; K ignored" lines.
fn tally(line: &str, totals: &mut [u64; 3]) {
    let Some(rest) = line.strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(what), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => totals[0] += n,
            "failed" => totals[1] += n,
            "ignored" => totals[2] += n,
            _ => {}
        }
    }
}

/// The lines of a cargo build's output that are warnings (`warning: …`,
/// a build script's `warning: lb-user@…: …` among them).
fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("warning"))
        .collect()
}

/// Builds `lb` again, which is then a no-op: its output must hold no
/// warning (issue 12: the eBPF build's output is shown only when it fails;
/// it once printed 51 `warning: lb-user@…: Compiling …` lines every time).
fn quiet_rebuild() -> anyhow::Result<()> {
    let out = cargo()
        .args(["build", "-p", "lb-user", "--bins"])
        .output()
        .context("cargo build")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("cargo build -p lb-user failed:\n{stderr}");
    }
    let w = warnings(&stderr);
    if !w.is_empty() {
        bail!(
            "building lb printed {} warning line(s):\n{}",
            w.len(),
            w.join("\n")
        );
    }
    Ok(())
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::ensure()?;
    // The namespace tests run the binaries themselves: `lb`, lb-lab's
    // `xdp-pass` in the labs, the benchmark's `lb-pps` (tests/tests/bench.rs).
    exec(cargo().args([
        "build", "-p", "lb-user", "-p", "lb-lab", "-p", "lb-bench", "--bins",
    ]))?;
    quiet_rebuild()?;
    let mut cmd: Command = cargo();
    // The eBPF crates are tested through the fixtures (lb-testkit).
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--exclude",
        "lab-ebpf",
        "--",
    ])
    .args(&opts.args);
    eprintln!("xtask: $ {cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let mut totals = [0u64; 3];
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        let line = line?;
        println!("{line}");
        tally(&line, &mut totals);
    }
    let status = child.wait()?;
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals[0], totals[1], totals[2]
    );
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if totals[0] == 0 {
        bail!("no test ran");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_script_and_compiler_warnings_are_found() {
        let out = "   Compiling lb-user v0.1.0\nwarning: lb-user@0.1.0: Compiling lb-ebpf\n\
                   warning: unused variable: `x`\n    Finished `dev` profile\n";
        assert_eq!(warnings(out).len(), 2);
        assert!(warnings("    Finished `dev` profile [unoptimized] in 0.3s\n").is_empty());
    }

    #[test]
    fn test_result_lines_are_summed() {
        let mut t = [0; 3];
        tally(
            "test result: ok. 5 passed; 1 failed; 2 ignored; 0 measured",
            &mut t,
        );
        tally("test result: ok. 3 passed; 0 failed; 0 ignored", &mut t);
        tally("running 3 tests", &mut t);
        assert_eq!(t, [8, 1, 2]);
    }
}
