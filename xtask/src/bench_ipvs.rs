//! `cargo xtask bench --ipvs`: ipvs side by side with lb in one virtual
//! machine (crate::vm: Debian's stock kernel under qemu, the host's root
//! filesystem read-only over 9p); inside, `lb-pps` measures the XDP_TX floor,
//! lb DR / NAT, ipvs DR / NAT and nftables on the same topology with the
//! same generator, interleaved. Emulation is 25–45× slower than the host:
//! only ratios inside the VM mean anything.
use std::{process::Command, time::Duration};

use anyhow::{anyhow, Context as _};

use crate::{
    util::{output, root},
    vm::{tail, Vm},
};

/// Markers around the JSON the VM prints on its console.
const BEGIN: &str = "LBVM-JSON-BEGIN";
const END: &str = "LBVM-JSON-END";

/// Boots the VM, runs lb-pps there and returns its JSON document.
pub fn run(seconds: f64, rounds: u32) -> anyhow::Result<serde_json::Value> {
    let vm = Vm::prepare()?;
    let bin = root().join("target/release");
    let job = format!(
        "cd /tmp\n\
         '{pps}' --lb '{lb}' --seconds {seconds} --rounds {rounds} \
         --methods floor,dr,nat,ipvs-dr,ipvs-nat,nft --json /tmp/ipvs.json 2>&1\n\
         echo {BEGIN}\ncat /tmp/ipvs.json\necho\necho {END}\n",
        pps = bin.join("lb-pps").display(),
        lb = bin.join("lb").display(),
    );
    eprintln!("ipvs VM: booting (emulated; the run takes a minute or two)");
    let (text, kernel) = vm.run("inner", &job, None, Duration::from_secs(900))?;
    let console = vm.dir().join("inner-console.log");
    let json = text
        .split(BEGIN)
        .nth(1)
        .and_then(|t| t.split(END).next())
        .ok_or_else(|| {
            anyhow!(
                "the VM printed no results; console in {}:\n{}",
                console.display(),
                tail(&text, 30)
            )
        })?;
    let mut doc: serde_json::Value = serde_json::from_str(json.trim())
        .with_context(|| format!("the VM's JSON (console in {})", console.display()))?;
    doc["vm_kernel"] = kernel.into();
    doc["date"] = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .unwrap_or_default()
        .trim()
        .into();
    Ok(doc)
}
