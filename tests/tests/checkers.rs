//! SMTP_CHECK, PING_CHECK and FILE_CHECK end to end in network namespaces,
//! and a VRRP instance following a track_file and a vrrp_track_process.
//! Needs root; tests run one at a time.
use std::time::{Duration, Instant};

use lb_tests::{real_ip, Bins, Lab, AGENT_ARGS, VIP};

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(&format!("lbk{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// Waits until `read()` satisfies `cond`; returns how long it took.
fn wait(
    what: &str,
    limit: Duration,
    read: impl Fn() -> String,
    cond: impl Fn(&str) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let l = read();
        if cond(&l) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}\n{l}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn list(lab: &Lab) -> String {
    let bpffs = lab.bpffs().to_string_lossy().into_owned();
    let sock = lab.socket().to_string_lossy().into_owned();
    let table = lab.lb(&["list", "--bpffs", &bpffs]).unwrap();
    let checks = lab
        .lb(&["list", "--checks", "--socket", &sock])
        .unwrap_or_default();
    format!("{table}\n{checks}")
}

fn vrrp(lab: &Lab) -> String {
    let sock = lab.socket().to_string_lossy().into_owned();
    lab.lb(&["list", "--vrrp", "--socket", &sock])
        .unwrap_or_default()
}

/// Real `i`'s weight in `lb list`, `None` when it is not listed.
fn weight(l: &str, i: usize) -> Option<u32> {
    let row = format!("{}:80", real_ip(i));
    l.lines()
        .find(|x| x.contains(&row) && x.contains("->"))
        .and_then(|x| x.split_whitespace().nth(3))
        .and_then(|w| w.parse().ok())
}

/// r1: PING_CHECK and a FILE_CHECK adding 2 × the file's number to its
/// weight; r2: SMTP_CHECK on port 2525 and a FILE_CHECK with weight 0 (a
/// maintenance file: non-zero takes the real out).
#[test]
fn smtp_ping_and_file_checks_follow_their_reals() {
    let _g = lb_tests::serial();
    let mut lab = lab("chk");
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    lab.spawn("r2", &[&probe, "smtp", "2525"], "smtp").unwrap();
    let boost = lab.workdir.join("boost");
    let maint = lab.workdir.join("maint");
    let timing = "connect_timeout 1\n      retry 0";
    let conf = format!(
        "track_file boost {{\n  file {boost}\n  weight 2\n}}\n\
         track_file maint {{\n  file {maint}\n  init_file 0\n}}\n\
         virtual_server {VIP} 80 {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n\
           real_server {r1} 80 {{\n    weight 1\n    PING_CHECK {{\n      {timing}\n    }}\n    FILE_CHECK {{\n      track_file boost\n    }}\n  }}\n\
           real_server {r2} 80 {{\n    weight 1\n    SMTP_CHECK {{\n      connect_port 2525\n      helo_name lb.test\n      {timing}\n    }}\n    FILE_CHECK {{\n      track_file maint\n      weight 0\n    }}\n  }}\n}}\n",
        boost = boost.display(),
        maint = maint.display(),
        r1 = real_ip(1),
        r2 = real_ip(2),
    );
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    wait(
        "both up",
        Duration::from_secs(5),
        || list(&lab),
        |l| weight(l, 1) == Some(1) && weight(l, 2) == Some(1),
    );
    assert_eq!(std::fs::read_to_string(&maint).unwrap(), "0\n", "init_file");
    // PING_CHECK: r1 stops answering echo requests, then answers again.
    lab.exec("r1", &["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1"])
        .unwrap();
    let took = wait(
        "r1 out",
        Duration::from_secs(5),
        || list(&lab),
        |l| weight(l, 1).is_none(),
    );
    eprintln!("PING_CHECK down detected in {took:?} (delay_loop 1 + timeout 1)");
    assert!(list(&lab).contains("no echo reply") || list(&lab).contains("timed out"));
    lab.exec("r1", &["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=0"])
        .unwrap();
    wait(
        "r1 back",
        Duration::from_secs(5),
        || list(&lab),
        |l| weight(l, 1) == Some(1),
    );
    // FILE_CHECK with weight 2: 1 + 2 × 3 = 7, then back to 1 at 0.
    std::fs::write(&boost, "3\n").unwrap();
    let took = wait(
        "r1 weight 7",
        Duration::from_secs(3),
        || list(&lab),
        |l| weight(l, 1) == Some(7),
    );
    eprintln!("FILE_CHECK weight change applied in {took:?}");
    std::fs::write(&boost, "0").unwrap();
    wait(
        "r1 weight 1",
        Duration::from_secs(3),
        || list(&lab),
        |l| weight(l, 1) == Some(1),
    );
    // SMTP_CHECK: the server stops, then starts again.
    lab.stop("r2", "smtp").unwrap();
    let took = wait(
        "r2 out",
        Duration::from_secs(5),
        || list(&lab),
        |l| weight(l, 2).is_none(),
    );
    eprintln!("SMTP_CHECK down detected in {took:?}");
    lab.spawn("r2", &[&probe, "smtp", "2525"], "smtp").unwrap();
    wait(
        "r2 back",
        Duration::from_secs(5),
        || list(&lab),
        |l| weight(l, 2) == Some(1),
    );
    // FILE_CHECK with weight 0: a non-zero number takes r2 out at once.
    std::fs::write(&maint, "1").unwrap();
    let took = wait(
        "r2 in maintenance",
        Duration::from_secs(3),
        || list(&lab),
        |l| weight(l, 2).is_none(),
    );
    eprintln!("FILE_CHECK maintenance applied in {took:?}");
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("r1"), Some(&10), "{t:?}");
    std::fs::write(&maint, "0").unwrap();
    wait(
        "r2 back",
        Duration::from_secs(3),
        || list(&lab),
        |l| weight(l, 2) == Some(1),
    );
}

/// A single director: VI_1 (priority 100) tracks a file (weight 5) and a
/// process (weight 0: FAULT without it); `lb list --vrrp` shows the
/// effective priority and the state.
#[test]
fn vrrp_instance_follows_track_file_and_track_process() {
    let _g = lb_tests::serial();
    let mut lab = lab("trk");
    // A process with a name no other process has: a copy of sleep.
    let name = format!("lbtp{}", std::process::id() % 100_000);
    let prog = lab.workdir.join(&name);
    std::fs::copy("/bin/sleep", &prog).unwrap();
    let prog = prog.to_string_lossy().into_owned();
    lab.spawn("r1", &[&prog, "600"], "tracked").unwrap();
    let file = lab.workdir.join("prio");
    std::fs::write(&file, "4\n").unwrap();
    let conf = format!(
        "track_file prio {{\n  file {file}\n  weight 5\n}}\n\
         vrrp_track_process proc {{\n  process {name}\n  terminate_delay 0.5\n}}\n\
         vrrp_instance VI_1 {{\n  state MASTER\n  interface eth0\n  virtual_router_id 51\n  priority 100\n  advert_int 1\n\
           track_file {{\n    prio\n  }}\n  track_process {{\n    proc\n  }}\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n\
         virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server {r1} 80 {{\n    weight 1\n  }}\n}}\n",
        file = file.display(),
        r1 = real_ip(1),
    );
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    let row = |l: &str| {
        l.lines()
            .find(|x| x.starts_with("VI_1"))
            .map(|x| {
                let f: Vec<&str> = x.split_whitespace().collect();
                format!("{} {}", f[1], f[4])
            })
            .unwrap_or_default()
    };
    // 100 + 4 × 5.
    wait(
        "master at 120",
        Duration::from_secs(5),
        || vrrp(&lab),
        |l| row(l) == "MASTER 120(100)",
    );
    std::fs::write(&file, "-2").unwrap();
    let took = wait(
        "priority 90",
        Duration::from_secs(3),
        || vrrp(&lab),
        |l| row(l) == "MASTER 90(100)",
    );
    eprintln!("track_file priority change applied in {took:?}");
    // The process ends: FAULT after terminate_delay.
    lab.stop("r1", "tracked").unwrap();
    let took = wait(
        "fault",
        Duration::from_secs(4),
        || vrrp(&lab),
        |l| row(l).starts_with("FAULT"),
    );
    eprintln!("track_process quorum loss: FAULT after {took:?} (terminate_delay 0.5 s)");
    let v = vrrp(&lab);
    assert!(v.contains("lacks quorum"), "{v}");
    lab.spawn("r1", &[&prog, "600"], "tracked").unwrap();
    wait(
        "master again",
        Duration::from_secs(6),
        || vrrp(&lab),
        |l| row(l).starts_with("MASTER"),
    );
    // Weight -254 and below is FAULT too.
    std::fs::write(&file, "-60").unwrap();
    wait(
        "fault by file",
        Duration::from_secs(3),
        || vrrp(&lab),
        |l| row(l).starts_with("FAULT"),
    );
}
