//! `cargo xtask fuzz [--packets N] [--seed S]`: random, truncated and mutated
//! frames over every forwarding path of the data plane through
//! BPF_PROG_TEST_RUN (binary `lb-fuzz`, checks in `lb_testkit::fuzz`):
//! verdicts, checksums and lengths of every output, every packet counted
//! once, no XDP_ABORTED. Opt-in: not part of `cargo xtask test`.
use std::process::Command;

use crate::{
    setup,
    util::{cargo, exec, root},
};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Frames to run (the seeds unchanged first, then mutations).
    #[arg(long, default_value_t = 1_000_000)]
    pub packets: u64,
    /// Seed of the mutations (a failing run reproduces with the same seed).
    #[arg(long, default_value_t = 0x9e37_79b9_7f4a_7c15)]
    pub seed: u64,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::ensure()?;
    exec(cargo().args(["build", "--release", "-p", "lb-bench", "--bin", "lb-fuzz"]))?;
    exec(
        Command::new(root().join("target/release/lb-fuzz"))
            .arg("--packets")
            .arg(opts.packets.to_string())
            .arg("--seed")
            .arg(opts.seed.to_string()),
    )
}
