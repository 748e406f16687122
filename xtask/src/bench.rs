//! `cargo xtask bench`: per-packet cost of each data-plane path through
//! BPF_PROG_TEST_RUN, side by side with an XDP_TX-only reference program in
//! the same run; the table is printed and written to results/bench.md.
use std::process::Command;

use crate::{
    setup,
    util::{cargo, exec, output, root},
};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Repetitions per measurement (the kernel reports the average).
    #[arg(long, default_value_t = 1_000_000)]
    pub repeat: u32,
    /// Interleaved rounds (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// A short run (fewer repetitions and rounds).
    #[arg(long)]
    pub quick: bool,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::ensure()?;
    exec(cargo().args(["build", "--release", "-p", "lb-user", "--bin", "lb-bench"]))?;
    let (repeat, rounds) = if opts.quick {
        (100_000, 3)
    } else {
        (opts.repeat, opts.rounds)
    };
    let dir = root().join("results");
    std::fs::create_dir_all(&dir)?;
    let table = dir.join("bench-table.md");
    exec(
        Command::new(root().join("target/release/lb-bench"))
            .args([
                "--repeat",
                &repeat.to_string(),
                "--rounds",
                &rounds.to_string(),
                "--out",
            ])
            .arg(&table),
    )?;
    let commit = output(Command::new("git").args([
        "-C",
        &root().to_string_lossy(),
        "rev-parse",
        "--short",
        "HEAD",
    ]))
    .unwrap_or_else(|_| "unknown".into());
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default();
    let report = format!(
        "# Data-plane benchmark\n\nMachine: {cpus} CPUs, kernel {}; date {}; commit {}.\n\n{}",
        kernel.trim(),
        date.trim(),
        commit.trim(),
        std::fs::read_to_string(&table)?
    );
    std::fs::write(dir.join("bench.md"), &report)?;
    std::fs::remove_file(&table)?;
    eprintln!("xtask bench: written to {}", dir.join("bench.md").display());
    Ok(())
}
