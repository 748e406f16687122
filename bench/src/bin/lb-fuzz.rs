//! The fuzz run of `cargo xtask fuzz`: random, truncated and mutated frames
//! over every forwarding path through BPF_PROG_TEST_RUN, each output checked
//! (verdict, checksums, lengths, counted once; `lb_testkit::fuzz`). Prints a
//! summary and exits 1 on any failure.
//!
//! Usage: lb-fuzz [--packets N] [--seed S]
use std::time::Instant;

use anyhow::{bail, Context as _};
use lb_testkit::fuzz;

fn main() -> anyhow::Result<()> {
    let mut packets: u64 = 1_000_000;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            let v = args
                .next()
                .with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .with_context(|| format!("{name} {v}: not a number"))
        };
        match a.as_str() {
            "--packets" => packets = value("--packets")?,
            "--seed" => seed = value("--seed")?,
            _ => bail!("unknown argument {a} (usage: lb-fuzz [--packets N] [--seed S])"),
        }
    }
    // Enough flows that mutated source ports do not evict the seeds' state
    // at once; the table is an LRU, so eviction is part of what runs.
    let h = fuzz::harness(65_536).context("harness (needs root and a BPF-capable kernel)")?;
    let start = Instant::now();
    let sum = fuzz::run(&h, packets, seed, |s| {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "lb-fuzz: {} frames, {} failures, {:.0} s, {:.0} frames/s",
            s.frames,
            s.failed(),
            secs,
            s.frames as f64 / secs
        );
    })?;
    let secs = start.elapsed().as_secs_f64();
    print!("{}", sum.report());
    println!(
        "seed: {seed:#x}; {:.1} s, {:.0} frames/s",
        secs,
        sum.frames as f64 / secs
    );
    if sum.failed() > 0 {
        std::process::exit(1);
    }
    Ok(())
}
