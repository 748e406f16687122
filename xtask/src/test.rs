//! `cargo xtask test`: every test of the workspace (unit, config and seed
//! parsing, BPF_PROG_TEST_RUN fixtures, namespace end-to-end tests).
use crate::{setup, util::{cargo, exec}};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Extra arguments for the test binaries (after `--`), e.g. a name filter.
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::ensure()?;
    // The namespace tests run the `lb` binary itself.
    exec(cargo().args(["build", "-p", "lb-user", "--bins"]))?;
    exec(cargo().args(["test", "--workspace", "--exclude", "lb-ebpf", "--"]).args(&opts.args))
}
