//! `lb-lab`: helpers of the namespace labs and benchmarks (not part of `lb`).
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lb-lab",
    about = "Helpers of the lb namespace labs and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach a pass-everything XDP program to IFACE until SIGTERM (veth
    /// delivers XDP_TX frames only when its peer has an XDP program).
    XdpPass {
        #[arg(long)]
        iface: String,
        /// xdp_pass, or xdp_tx_ref (the benchmark's reflector).
        #[arg(long, default_value = lb_lab::PASS_PROGRAM)]
        program: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::XdpPass { iface, program } => {
            rt.block_on(lb_lab::attach_until_signal(&iface, &program))
        }
    }
}
