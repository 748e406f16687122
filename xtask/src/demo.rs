//! `cargo xtask demo`: the embedded default. Builds an LVS-DR lab in network
//! namespaces (client, director, two real servers serving HTTP, VIP on the
//! reals' lo with arp_ignore/arp_announce), runs the agent on the director
//! with a keepalived.conf, sends requests through the VIP, shows which real
//! answered and the `lb list` tables, then removes everything (also on Ctrl-C).
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::bail;
use lb_tests::{real_ip, Bins, Lab, VIP};

use crate::{
    setup,
    util::{cargo, exec, root},
};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Requests to send through the VIP.
    #[arg(long, default_value_t = 12)]
    pub requests: usize,
    /// Keep the lab up until Ctrl-C (to explore with `ip netns exec lbdemo-cl …`).
    #[arg(long)]
    pub hold: bool,
}

fn config() -> String {
    format!(
        "! cargo xtask demo: LVS-DR, two real servers, weighted round robin
virtual_server {VIP} 80 {{
    delay_loop 6
    lb_algo wrr
    lb_kind DR
    persistence_timeout 0
    protocol TCP

    real_server {r1} 80 {{
        weight 2
    }}
    real_server {r2} 80 {{
        weight 1
    }}
}}
",
        r1 = real_ip(1),
        r2 = real_ip(2)
    )
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    setup::ensure()?;
    exec(cargo().args([
        "build",
        "--release",
        "-p",
        "lb-user",
        "-p",
        "lb-tests",
        "--bins",
    ]))?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))?;
    let bins = Bins {
        lb: root().join("target/release/lb"),
        nsprobe: root().join("target/release/nsprobe"),
    };
    println!("== building the lab: namespaces lbdemo-{{sw,cl,dir,r1,r2}}, bridge 10.200.0.0/24, VIP {VIP}");
    let mut lab = Lab::dr("lbdemo", bins, 2)?;
    let conf = config();
    println!("== keepalived.conf on the director:\n{conf}");
    lab.start_agent(&conf, &["--conntrack-size", "65536"])?;
    println!("== agent running on lbdemo-dir (XDP on eth0); reals' MACs resolved:");
    print!(
        "{}",
        lab.lb(&["status", "--socket", &lab.socket().to_string_lossy()])?
    );
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    println!(
        "\n== {} HTTP requests from the client to http://{VIP}/ (one connection each):",
        opts.requests
    );
    let mut answers = Vec::new();
    for i in 0..opts.requests {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        let t = lab.http_get(&format!("{VIP}:80"), 1)?;
        let who = t
            .keys()
            .find(|k| k.as_str() != "fail")
            .cloned()
            .unwrap_or_else(|| "FAILED".into());
        println!("request {:>2}: answered by {who}", i + 1);
        answers.push(who);
    }
    let bpffs = lab.bpffs().to_string_lossy().into_owned();
    println!("\n== lb list (ipvsadm -Ln layout):");
    print!("{}", lab.lb(&["list", "--bpffs", &bpffs])?);
    println!("\n== lb list --stats:");
    print!("{}", lab.lb(&["list", "--stats", "--bpffs", &bpffs])?);
    let failed = answers.iter().filter(|a| *a == "FAILED").count();
    if opts.hold {
        println!(
            "\n== lab kept up; Ctrl-C removes it. Try: ip netns exec lbdemo-cl curl http://{VIP}/"
        );
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("\n== removing the lab");
    drop(lab);
    if failed > 0 {
        bail!("{failed} request(s) failed");
    }
    Ok(())
}
