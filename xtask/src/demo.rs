//! `cargo xtask demo`: the embedded default. Builds an LVS-DR lab in network
//! namespaces (client, director, two real servers serving HTTP, VIP on the
//! reals' lo with arp_ignore/arp_announce), runs the agent on the director
//! with a keepalived.conf, sends requests through the VIP, shows which real
//! answered and the `lb list` tables, then removes everything (also on Ctrl-C).
//! `--ha`: two directors sharing the VIP through VRRP, with a failover.
//! `--web`: the lab with the web console (see [`crate::demo_web`]).
//! `--ecmp`: three directors behind an ECMP router, announcing through BGP,
//! and a director loss (see [`crate::demo_ecmp`]).
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
    /// High availability: two directors sharing the VIP through VRRP; the
    /// master is stopped and the backup takes over.
    #[arg(long)]
    pub ha: bool,
    /// The web console: the lab with `lb run --web-listen`, reachable on
    /// this machine's loopback; prints its address and a one-time password
    /// and runs until Ctrl-C.
    #[arg(long, conflicts_with = "ha")]
    pub web: bool,
    /// Scale-out: three directors (lb and gobgpd each) behind a BIRD router
    /// with ECMP; the route, the spread of 60 connections, the loss of one
    /// director and the connections that survived it.
    #[arg(long, conflicts_with_all = ["ha", "web", "hold"])]
    pub ecmp: bool,
    /// Host port the console is forwarded to (with --web).
    #[arg(long, default_value_t = crate::demo_web::PORT)]
    pub web_port: u16,
}

/// The demo's keepalived.conf with a vrrp_instance in front (HA demo).
fn ha_config(state: &str, priority: u8) -> String {
    format!(
        "vrrp_instance VI_1 {{
    state {state}
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 1
    authentication {{
        auth_type PASS
        auth_pass demo
    }}
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
{}",
        config()
    )
}

fn vrrp_state(lab: &Lab, role: &str) -> String {
    let sock = lab.socket_of(role).to_string_lossy().into_owned();
    lab.lb(&["list", "--vrrp", "--socket", &sock])
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("VI_1"))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

fn wait_state(lab: &Lab, role: &str, want: &str, stop: &AtomicBool) -> anyhow::Result<Duration> {
    let start = std::time::Instant::now();
    while vrrp_state(lab, role) != want {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{role} did not become {want}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start.elapsed())
}

fn requests(lab: &Lab, n: usize) -> anyhow::Result<String> {
    let t = lab.http_get(&format!("{VIP}:80"), n)?;
    Ok(t.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", "))
}

/// Two directors, VRRP between them, a failover and the return.
fn run_ha(bins: Bins, opts: &Options, stop: &AtomicBool) -> anyhow::Result<()> {
    println!(
        "== building the lab: namespaces lbdemo-{{sw,cl,dir,dir2,r1,r2}}, VIP {VIP} held by VRRP"
    );
    let mut lab = Lab::ha("lbdemo", bins, 2)?;
    let args = ["--conntrack-size", "65536"];
    println!(
        "== keepalived.conf on lbdemo-dir (lbdemo-dir2: state BACKUP, priority 100):\n{}",
        ha_config("MASTER", 150)
    );
    lab.start_agent_on("dir", &ha_config("MASTER", 150), &args)?;
    lab.start_agent_on("dir2", &ha_config("BACKUP", 100), &args)?;
    wait_state(&lab, "dir", "MASTER", stop)?;
    wait_state(&lab, "dir2", "BACKUP", stop)?;
    // One advert interval: the backup has heard the master.
    std::thread::sleep(Duration::from_millis(1200));
    for role in ["dir", "dir2"] {
        println!("\n== lb list --vrrp on lbdemo-{role}:");
        print!(
            "{}",
            lab.lb(&[
                "list",
                "--vrrp",
                "--socket",
                &lab.socket_of(role).to_string_lossy()
            ])?
        );
    }
    println!(
        "\n== {} requests through the VIP: {}",
        opts.requests,
        requests(&lab, opts.requests)?
    );
    println!("\n== stopping the master's agent (SIGTERM: it sends priority 0)");
    lab.stop("dir", "lb")?;
    let took = wait_state(&lab, "dir2", "MASTER", stop)?;
    println!(
        "== lbdemo-dir2 is MASTER {took:.2?} later; requests: {}",
        requests(&lab, opts.requests)?
    );
    println!("\n== the master comes back and preempts");
    lab.start_agent_on("dir", &ha_config("MASTER", 150), &args)?;
    wait_state(&lab, "dir", "MASTER", stop)?;
    wait_state(&lab, "dir2", "BACKUP", stop)?;
    println!(
        "== lbdemo-dir is MASTER again; requests: {}",
        requests(&lab, opts.requests)?
    );
    if opts.hold {
        println!(
            "\n== lab kept up; Ctrl-C removes it. Try: lb list --vrrp --socket {}",
            lab.socket_of("dir").display()
        );
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("\n== removing the lab");
    Ok(())
}

fn config() -> String {
    format!(
        "! cargo xtask demo: LVS-DR, two real servers, weighted round robin
virtual_server {VIP} 80 {{
    delay_loop 6
    lb_algo wrr
    lb_kind DR
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
        "lb-lab",
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
        lab: root().join("target/release/lb-lab"),
    };
    if opts.ha {
        return run_ha(bins, &opts, &stop);
    }
    if opts.ecmp {
        return crate::demo_ecmp::run(bins, &stop);
    }
    println!("== building the lab: namespaces lbdemo-{{sw,cl,dir,r1,r2}}, bridge 10.200.0.0/24, VIP {VIP}");
    let mut lab = Lab::dr("lbdemo", bins, 2)?;
    let conf = config();
    if opts.web {
        println!("== keepalived.conf on the director:\n{conf}");
        return crate::demo_web::run(lab, &conf, opts.web_port, stop);
    }
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
