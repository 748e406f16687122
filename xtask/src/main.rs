//! Orchestration for the project: `cargo xtask <command>`.
mod bench;
mod bench_http;
mod bench_ipvs;
mod conformance;
mod deb;
mod demo;
mod demo_ecmp;
mod demo_web;
mod fuzz;
mod kernel_check;
mod plot;
mod run;
mod setup;
mod test;
mod util;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "Build, run, test and benchmark the XDP load balancer"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine needs (nightly rust-src, bpf-linker, Debian packages).
    Setup(setup::Options),
    /// Build, then run the agent on real interfaces.
    Run(run::Options),
    /// The self-contained lab: namespaces, agent, HTTP through the VIP, `lb list`.
    Demo(demo::Options),
    /// Every test.
    Test(test::Options),
    /// The Debian package (cargo-deb) in target/debian; `--test` installs it
    /// here, checks it and purges it (README: Installing).
    Deb(deb::Options),
    /// The benchmark suite: per-packet cost, forwarding rate against the XDP_TX
    /// floor and nftables, the goals table, plots and a report in target/bench/
    /// (`--save`: the committed results/).
    Bench(bench::Options),
    /// Random, truncated and mutated frames over every forwarding path
    /// (BPF_PROG_TEST_RUN): verdicts, checksums, lengths, each counted once.
    Fuzz(fuzz::Options),
    /// ipvsadm and `lb adm` side by side: one script of ipvsadm command lines
    /// played against real ipvsadm in the ipvs VM and against `lb adm`,
    /// compared step by step (report in tests/conformance/REPORT.md).
    Conformance(conformance::Options),
    /// Loads this build's XDP programs on Debian 12's stock kernel (6.1) in
    /// the ipvs VM and prints each verifier verdict (opt-in; a few minutes).
    KernelCheck(kernel_check::Options),
    /// Plays the conformance script with one program (run inside the VM).
    #[command(hide = true)]
    ConformancePlay(conformance::PlayOptions),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup(o) => setup::run(o),
        Cmd::Run(o) => run::run(o),
        Cmd::Demo(o) => demo::run(o),
        Cmd::Test(o) => test::run(o),
        Cmd::Bench(o) => bench::run(o),
        Cmd::Fuzz(o) => fuzz::run(o),
        Cmd::Deb(o) => deb::run(o),
        Cmd::Conformance(o) => conformance::run(o),
        Cmd::ConformancePlay(o) => conformance::play(o),
        Cmd::KernelCheck(o) => kernel_check::run(o),
    }
}
