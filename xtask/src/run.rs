//! `cargo xtask run --iface IF [--config FILE] [-- extra lb run options]`.
use std::{path::PathBuf, process::Command};

use crate::{
    setup,
    util::{cargo, exec, root},
};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Interface(s) to attach to.
    #[arg(long = "iface", required = true)]
    pub ifaces: Vec<String>,
    /// keepalived.conf-syntax configuration.
    #[arg(long, default_value = "/etc/keepalived/keepalived.conf")]
    pub config: PathBuf,
    /// Further options for `lb run` (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::ensure()?;
    exec(cargo().args(["build", "--release", "-p", "lb-user", "--bin", "lb"]))?;
    let mut cmd = Command::new(root().join("target/release/lb"));
    cmd.arg("run").arg("--config").arg(&opts.config);
    for i in &opts.ifaces {
        cmd.args(["--iface", i]);
    }
    exec(cmd.args(&opts.args))
}
