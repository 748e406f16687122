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

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::ensure()?;
    // The namespace tests run the binaries themselves: `lb`, lb-lab's
    // `xdp-pass` in the labs, the benchmark's `lb-pps` (tests/tests/bench.rs).
    exec(cargo().args([
        "build", "-p", "lb-user", "-p", "lb-lab", "-p", "lb-bench", "--bins",
    ]))?;
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
