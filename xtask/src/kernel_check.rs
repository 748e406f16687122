//! `cargo xtask kernel-check`: does this build's data plane load on Debian
//! 12's stock kernel (6.1)? The ipvs VM (vm.rs: Debian's kernel under qemu,
//! this machine's filesystem over 9p) boots, `lb run` loads and attaches the
//! balancer to a veth pair and answers `lb status`, and `lb decap` loads the
//! tunnel endpoint; each program's result and, on a refusal, the verifier's
//! last lines are printed. Exits non-zero when a program is refused.
//!
//! Opt-in (not part of `cargo xtask test`): the emulated boot and the 6.1
//! verifier under TCG take two to four minutes.
use std::{path::Path, time::Duration};

use anyhow::{bail, Context as _};

use crate::{
    setup,
    util::{cargo, exec, root},
    vm::{tail, Vm},
};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// The `lb` binary to check (default: build target/debug/lb).
    #[arg(long)]
    pub lb: Option<std::path::PathBuf>,
}

/// One program's outcome as the job in the VM wrote it.
struct Outcome {
    name: &'static str,
    loaded: bool,
    log: String,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let lb = match opts.lb {
        Some(p) => std::fs::canonicalize(&p).with_context(|| format!("--lb {}", p.display()))?,
        None => {
            exec(cargo().args(["build", "-p", "lb-user", "--bin", "lb"]))?;
            root().join("target/debug/lb")
        }
    };
    setup::install_packages(setup::IPVS_PACKAGES)?;
    let vm = Vm::prepare()?;
    let out = root().join("target/kernel-check");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    eprintln!("kernel-check: booting Debian's kernel (emulated; two to four minutes)");
    let (text, kernel) = vm.run(
        "kernel-check",
        &job(&lb),
        Some(&out),
        Duration::from_secs(900),
    )?;
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    if read("done").is_empty() {
        bail!(
            "the job in the VM did not finish (console in {}):\n{}",
            vm.dir().join("kernel-check-console.log").display(),
            tail(&text, 20)
        );
    }
    let outcomes = [
        Outcome {
            name: "lb run (balancer, lb-xdp)",
            loaded: read("run.rc").trim() == "0",
            log: read("run.log"),
        },
        Outcome {
            name: "lb decap (tunnel endpoint, lb-decap)",
            loaded: read("decap.rc").trim() == "0",
            log: read("decap.log"),
        },
    ];
    println!("kernel {kernel}");
    let mut refused = Vec::new();
    for o in &outcomes {
        if o.loaded {
            println!("  {}: loaded and attached", o.name);
        } else {
            println!("  {}: REFUSED\n{}", o.name, indent(&verifier_tail(&o.log)));
            refused.push(o.name);
        }
    }
    println!("logs in {}", out.display());
    if !refused.is_empty() {
        bail!("refused on {kernel}: {}", refused.join(", "));
    }
    Ok(())
}

/// The shell job: a veth pair, the agent on one end until it answers
/// `lb status` (or exits), then `lb decap` on the other until it says it
/// attached (or exits). Bounded waits; everything it starts is stopped.
fn job(lb: &Path) -> String {
    let lb = lb.display();
    format!(
        "cd /tmp\n\
         ip link set lo up\n\
         ip link add lbkc0 type veth peer name lbkc1\n\
         ip link set lbkc0 up\nip link set lbkc1 up\n\
         : > /tmp/empty.conf\n\
         '{lb}' run --iface lbkc0 --state-dir /tmp/lb-state --socket /tmp/lb/lb.sock \
           --bpffs /sys/fs/bpf/lb --conntrack-size 4096 --config /tmp/empty.conf \
           > /tmp/out/run.log 2>&1 &\n\
         AGENT=$!\n\
         rc=1; i=0\n\
         while [ $i -lt 600 ]; do\n\
           if '{lb}' status --socket /tmp/lb/lb.sock > /tmp/out/status.txt 2>&1; then rc=0; break; fi\n\
           kill -0 $AGENT 2> /dev/null || break\n\
           i=$((i+1)); sleep 0.5\n\
         done\n\
         echo $rc > /tmp/out/run.rc\n\
         kill -TERM $AGENT 2> /dev/null; wait $AGENT\n\
         '{lb}' decap --iface lbkc1 --vip 10.255.0.1 > /tmp/out/decap.log 2>&1 &\n\
         DECAP=$!\n\
         rc=1; i=0\n\
         while [ $i -lt 600 ]; do\n\
           if grep -q decapsulating /tmp/out/decap.log; then rc=0; break; fi\n\
           kill -0 $DECAP 2> /dev/null || break\n\
           i=$((i+1)); sleep 0.5\n\
         done\n\
         echo $rc > /tmp/out/decap.rc\n\
         kill -TERM $DECAP 2> /dev/null; wait $DECAP\n\
         ip link del lbkc0\n\
         echo done > /tmp/out/done\n"
    )
}

/// The end of the verifier's output in an agent log: its last instructions
/// and the verdict, without the per-instruction trace before them.
fn verifier_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let n = lines.len();
    lines[n.saturating_sub(12)..].join("\n")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
