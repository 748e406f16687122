//! High availability end to end: two directors on one segment share the VIP
//! through VRRP, as the seeds' keepalived pairs do. Two `lb` agents, and
//! `lb` paired with Debian's keepalived both ways round. Failover times and
//! the HTTP requests lost meanwhile are printed. Needs root; one at a time.
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use lb_tests::{real_ip, Bins, Lab, AGENT_ARGS, VIP};

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::ha(&format!("lbv{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// The DR service both directors forward (no checkers: the reals stay).
fn service() -> String {
    format!(
        "virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n\
           real_server {} 80 {{\n    weight 1\n  }}\n\
           real_server {} 80 {{\n    weight 1\n  }}\n}}\n",
        real_ip(1),
        real_ip(2),
    )
}

/// One vrrp_instance VI_1 on eth0, VRID 51, with `extra` lines.
fn instance(state: &str, priority: u8, extra: &str) -> String {
    format!(
        "vrrp_instance VI_1 {{\n  state {state}\n  interface eth0\n  virtual_router_id 51\n  \
         priority {priority}\n  {extra}\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
    )
}

const V2: &str = "advert_int 1\n  authentication {\n    auth_type PASS\n    auth_pass s3cret\n  }";

fn vrrp_list(lab: &Lab, role: &str) -> String {
    let sock = lab.socket_of(role).to_string_lossy().into_owned();
    lab.lb(&["list", "--vrrp", "--socket", &sock])
        .unwrap_or_else(|e| format!("(no answer: {e})"))
}

/// State of VI_1 on `role`'s agent.
fn state(lab: &Lab, role: &str) -> String {
    vrrp_list(lab, role)
        .lines()
        .find(|l| l.starts_with("VI_1"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string()
}

/// Whether `role` has the VIP on eth0.
fn holds_vip(lab: &Lab, role: &str) -> bool {
    let out = lab
        .exec(role, &["ip", "-4", "addr", "show", "dev", "eth0"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("inet {VIP}/"))
}

/// Waits until `cond`; returns how long it took.
fn wait(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
    dump: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            dump()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn dump(lab: &Lab) -> impl Fn() -> String + '_ {
    move || {
        format!(
            "dir:\n{}\ndir2:\n{}\ndir log:\n{}\ndir2 log:\n{}\n{}",
            vrrp_list(lab, "dir"),
            vrrp_list(lab, "dir2"),
            lab.log("dir", "lb"),
            lab.log("dir2", "lb"),
            lab.log("dir2", "keepalived"),
        )
    }
}

fn wait_state(lab: &Lab, role: &str, want: &str, limit: Duration) -> Duration {
    wait(
        &format!("{role} {want}"),
        limit,
        || state(lab, role) == want,
        dump(lab),
    )
}

/// Background HTTP load from the client: a request every 20 ms.
struct Load(Child);

impl Load {
    fn start(lab: &Lab, secs: f64) -> Load {
        let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns("cl"), &probe, "load"])
            .arg(format!("{VIP}:80"))
            .arg(secs.to_string())
            .arg("20")
            .stdout(Stdio::piped())
            .spawn()
            .expect("load");
        Load(child)
    }

    /// (answered by a real, failed, outage in ms); answers from the
    /// director's own server (a dead director still holding the VIP) fail.
    fn finish(self) -> (usize, usize, u64) {
        let out = self.0.wait_with_output().expect("load output");
        let text = String::from_utf8_lossy(&out.stdout);
        let (mut ok, mut fail, mut outage) = (0, 0, 0);
        for l in text.lines() {
            let mut it = l.split_whitespace();
            match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
                (Some("fail"), Some(v)) => fail += v as usize,
                (Some("director"), Some(v)) => fail += v as usize,
                (Some("outage_ms"), Some(v)) => outage = v,
                (Some(_), Some(v)) => ok += v as usize,
                _ => {}
            }
        }
        (ok, fail, outage)
    }
}

/// Election, clean-shutdown failover (priority 0), preemption on return,
/// kill -9 failover (master down timer) and link-down failover, with HTTP
/// through the VIP across each.
#[test]
fn two_agents_fail_over_and_preempt() {
    let _g = lb_tests::serial();
    let mut lab = lab("pair");
    let a = format!("{}{}", instance("MASTER", 150, V2), service());
    let b = format!("{}{}", instance("BACKUP", 100, V2), service());
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    lab.start_agent_on("dir2", &b, AGENT_ARGS).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(5));
    assert!(holds_vip(&lab, "dir") && !holds_vip(&lab, "dir2"));
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    println!("lb list --vrrp on dir:\n{}", vrrp_list(&lab, "dir"));
    println!("lb list --vrrp on dir2:\n{}", vrrp_list(&lab, "dir2"));

    // Clean shutdown: priority 0, the backup takes over after skew time;
    // the old master keeps forwarding until then.
    let load = Load::start(&lab, 3.0);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    lab.signal("dir", "lb", libc::SIGTERM).unwrap();
    let took = wait_state(&lab, "dir2", "MASTER", Duration::from_secs(3));
    lab.stop("dir", "lb").unwrap();
    assert!(holds_vip(&lab, "dir2") && !holds_vip(&lab, "dir"));
    let (ok, fail, outage) = load.finish();
    println!("SIGTERM failover: backup MASTER {took:?} after SIGTERM (agent exited after {:?}); HTTP {ok} answered, {fail} failed, outage {outage} ms", t0.elapsed());
    assert!(ok > 50, "{ok} answered");

    // The master returns and preempts.
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(5));
    assert!(holds_vip(&lab, "dir") && !holds_vip(&lab, "dir2"));

    // kill -9: the backup waits 3 × advert + skew.
    let load = Load::start(&lab, 6.0);
    std::thread::sleep(Duration::from_millis(300));
    lab.signal("dir", "lb", libc::SIGKILL).unwrap();
    let t0 = Instant::now();
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(6));
    let took = t0.elapsed();
    let (ok, fail, outage) = load.finish();
    println!("SIGKILL failover: backup MASTER after {took:?} (3 × 1 s + skew 0.61 s = 3.61 s); HTTP {ok} answered, {fail} failed, outage {outage} ms");
    // The master-down timer started at the last advert heard, up to one
    // interval before the kill: 3.61 s - 1 s at least.
    assert!(took > Duration::from_millis(2500), "{took:?}");
    // The guard removed the VIP from the killed director.
    assert!(!holds_vip(&lab, "dir") && holds_vip(&lab, "dir2"));
    lab.stop("dir", "lb").unwrap();

    // Restart; then link down on the master.
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(5));
    let t0 = Instant::now();
    lab.exec("sw", &["ip", "link", "set", "dir", "down"])
        .unwrap();
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(6));
    let took = t0.elapsed();
    wait_state(&lab, "dir", "FAULT", Duration::from_secs(2));
    assert!(
        !holds_vip(&lab, "dir"),
        "a faulty director releases the VIP"
    );
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    println!("link-down failover: backup MASTER after {took:?}; HTTP after it: {t:?}");
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    lab.exec("sw", &["ip", "link", "set", "dir", "up"]).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(6));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(5));
}

/// Starts Debian's keepalived (VRRP only) on `role` with `conf`.
fn start_keepalived(lab: &mut Lab, role: &str, conf: &str) {
    let path = lab.workdir.join(format!("{role}-keepalived.conf"));
    std::fs::write(&path, conf).unwrap();
    let pid = lab.workdir.join(format!("{role}-keepalived.pid"));
    let vpid = lab.workdir.join(format!("{role}-keepalived-vrrp.pid"));
    let p = path.to_string_lossy().into_owned();
    let (pid, vpid) = (
        pid.to_string_lossy().into_owned(),
        vpid.to_string_lossy().into_owned(),
    );
    lab.spawn(
        role,
        &[
            "keepalived",
            "--vrrp",
            "-n",
            "-l",
            "-D",
            "-f",
            &p,
            "-p",
            &pid,
            "-r",
            &vpid,
        ],
        "keepalived",
    )
    .unwrap();
}

/// lb and keepalived as the two routers of one VRID: election, failover
/// when the master stops, preemption when it returns.
fn interop(name: &str, version: &str, lb_master: bool) {
    let _g = lb_tests::serial();
    let mut lab = lab(name);
    let timing = if version == "2" {
        V2.to_string()
    } else {
        "version 3\n  advert_int 1".to_string()
    };
    let (lb_prio, ka_prio) = if lb_master { (150, 100) } else { (100, 150) };
    let lb_state = if lb_master { "MASTER" } else { "BACKUP" };
    let ka_state = if lb_master { "BACKUP" } else { "MASTER" };
    let lb_conf = format!("{}{}", instance(lb_state, lb_prio, &timing), service());
    let ka_conf = format!(
        "global_defs {{\n  router_id ka\n}}\n{}",
        instance(ka_state, ka_prio, &timing)
    );
    // The backup first, so the master's arrival is an election.
    if lb_master {
        start_keepalived(&mut lab, "dir2", &ka_conf);
        std::thread::sleep(Duration::from_millis(500));
        lab.start_agent_on("dir", &lb_conf, AGENT_ARGS).unwrap();
    } else {
        lab.start_agent_on("dir", &lb_conf, AGENT_ARGS).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        start_keepalived(&mut lab, "dir2", &ka_conf);
    }
    let (master, backup) = if lb_master {
        ("dir", "dir2")
    } else {
        ("dir2", "dir")
    };
    wait(
        "master holds the VIP alone",
        Duration::from_secs(8),
        || holds_vip(&lab, master) && !holds_vip(&lab, backup),
        dump(&lab),
    );
    wait_state(&lab, "dir", lb_state, Duration::from_secs(8));
    // Stable for two advert intervals: no flapping between the two.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        holds_vip(&lab, master) && !holds_vip(&lab, backup),
        "{}",
        dump(&lab)()
    );
    assert_eq!(state(&lab, "dir"), lb_state, "{}", dump(&lab)());
    let list = vrrp_list(&lab, "dir");
    assert!(
        !list.contains("dropped"),
        "lb rejected keepalived's adverts:\n{list}"
    );

    // The master stops cleanly: the other takes over.
    let t0 = Instant::now();
    let tag = if lb_master { "lb" } else { "keepalived" };
    lab.stop(master, tag).unwrap();
    wait(
        "backup takes over",
        Duration::from_secs(6),
        || holds_vip(&lab, backup),
        dump(&lab),
    );
    let took = t0.elapsed();
    if !lb_master {
        wait_state(&lab, "dir", "MASTER", Duration::from_secs(1));
    }
    println!(
        "v{version} {} master stopped → {} master after {took:?}",
        if lb_master { "lb" } else { "keepalived" },
        if lb_master { "keepalived" } else { "lb" },
    );
    // It returns and preempts.
    if lb_master {
        lab.start_agent_on("dir", &lb_conf, AGENT_ARGS).unwrap();
    } else {
        start_keepalived(&mut lab, "dir2", &ka_conf);
    }
    wait(
        "master preempts",
        Duration::from_secs(8),
        || holds_vip(&lab, master) && !holds_vip(&lab, backup),
        dump(&lab),
    );
    wait_state(&lab, "dir", lb_state, Duration::from_secs(5));
    if lb_master {
        let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
        assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    }
    // keepalived found nothing wrong with lb's advertisements.
    let klog = lab.log("dir2", "keepalived");
    if std::env::var_os("LB_SHOW_KEEPALIVED").is_some() {
        println!("{klog}");
    }
    for bad in ["invalid", "ignoring", "bad ", "mismatch", "error"] {
        assert!(
            !klog.to_lowercase().contains(bad),
            "keepalived complained ({bad}):\n{klog}"
        );
    }
}

#[test]
fn keepalived_v2_backup_of_lb() {
    interop("k2b", "2", true);
}

#[test]
fn keepalived_v2_master_of_lb() {
    interop("k2m", "2", false);
}

#[test]
fn keepalived_v3_backup_of_lb() {
    interop("k3b", "3", true);
}

#[test]
fn keepalived_v3_master_of_lb() {
    interop("k3m", "3", false);
}

/// Unicast peers (no multicast), nopreempt, and a track_script with weight 0
/// (failure = FAULT) moving the VIP.
#[test]
fn unicast_nopreempt_and_track_script() {
    let _g = lb_tests::serial();
    let mut lab = lab("np");
    let flag = lab.workdir.join("dir2-healthy");
    std::fs::write(&flag, "").unwrap();
    let notes = lab.workdir.clone();
    let conf = |me: &str, peer: &str, prio: u8, script: &str| {
        let n = notes
            .join(if prio == 150 { "dir" } else { "dir2" })
            .display()
            .to_string();
        format!(
            "{script}vrrp_instance VI_1 {{\n  state BACKUP\n  nopreempt\n  interface eth0\n  \
             notify_master \"/usr/bin/touch {n}-master\"\n  notify_fault \"/usr/bin/touch {n}-fault\"\n  \
             virtual_router_id 51\n  priority {prio}\n  version 3\n  advert_int 0.2\n  \
             unicast_src_ip {me}\n  unicast_peer {{\n    {peer}\n  }}\n{track}  \
             virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n{svc}",
            track = if script.is_empty() {
                String::new()
            } else {
                "  track_script {\n    healthy\n  }\n".into()
            },
            svc = service(),
        )
    };
    let script = format!(
        "vrrp_script healthy {{\n  script \"/usr/bin/test -f {}\"\n  interval 0.2\n  fall 1\n  rise 1\n}}\n",
        flag.display()
    );
    let (d1, d2) = (lb_tests::DIRECTOR_IP, lb_tests::DIRECTOR2_IP);
    // dir2 (lower priority) first: it becomes master on its own.
    lab.start_agent_on("dir2", &conf(d2, d1, 100, &script), AGENT_ARGS)
        .unwrap();
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(5));
    // dir has the higher priority but nopreempt: it stays backup.
    lab.start_agent_on("dir", &conf(d1, d2, 150, ""), AGENT_ARGS)
        .unwrap();
    wait_state(&lab, "dir", "BACKUP", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(state(&lab, "dir"), "BACKUP", "{}", dump(&lab)());
    assert_eq!(state(&lab, "dir2"), "MASTER");
    assert!(holds_vip(&lab, "dir2") && !holds_vip(&lab, "dir"));
    let l = vrrp_list(&lab, "dir");
    assert!(
        l.contains(&format!("{d2} ")),
        "master's address shown:\n{l}"
    );
    // The script fails on dir2: FAULT, priority 0 sent, dir takes over.
    let t0 = Instant::now();
    std::fs::remove_file(&flag).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(3));
    let took = t0.elapsed();
    wait_state(&lab, "dir2", "FAULT", Duration::from_secs(1));
    assert!(holds_vip(&lab, "dir") && !holds_vip(&lab, "dir2"));
    let l = vrrp_list(&lab, "dir2");
    assert!(l.contains("script healthy failed"), "{l}");
    // notify_master / notify_fault ran (programs, no shell).
    let w = lab.workdir.clone();
    wait(
        "notify programs",
        Duration::from_secs(2),
        || {
            w.join("dir-master").exists()
                && w.join("dir2-fault").exists()
                && w.join("dir2-master").exists()
        },
        dump(&lab),
    );
    println!(
        "track_script (weight 0) failure → peer MASTER after {took:?} (script interval 0.2 s)"
    );
    // Healthy again: dir2 comes back as backup (nopreempt on dir's side too).
    std::fs::write(&flag, "").unwrap();
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(3));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(state(&lab, "dir"), "MASTER");
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
}

/// VRRPv3 with advert_int 0.1: failover times, and a track_script weight
/// moving the VIP by priority (preemption both ways).
#[test]
fn v3_fast_adverts_and_track_weight() {
    let _g = lb_tests::serial();
    let mut lab = lab("v3");
    let flag = lab.workdir.join("dir-healthy");
    std::fs::write(&flag, "").unwrap();
    let script = format!(
        "vrrp_script healthy {{\n  script \"/usr/bin/test -f {}\"\n  interval 0.1\n  weight -60\n}}\n",
        flag.display()
    );
    let fast = "version 3\n  advert_int 0.1";
    let a = format!(
        "{script}{}{}",
        instance(
            "MASTER",
            150,
            &format!("{fast}\n  track_script {{\n    healthy\n  }}")
        ),
        service()
    );
    let b = format!("{}{}", instance("BACKUP", 100, fast), service());
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    lab.start_agent_on("dir2", &b, AGENT_ARGS).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(5));

    // Priority 150 - 60 = 90 < 100: dir2 preempts.
    let t0 = Instant::now();
    std::fs::remove_file(&flag).unwrap();
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(3));
    let took = t0.elapsed();
    wait_state(&lab, "dir", "BACKUP", Duration::from_secs(1));
    assert!(vrrp_list(&lab, "dir").contains("90(150)"));
    println!("track weight -60: VIP to the peer after {took:?}");
    std::fs::write(&flag, "").unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(3));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(1));

    for (how, sig) in [("SIGTERM", libc::SIGTERM), ("SIGKILL", libc::SIGKILL)] {
        let load = Load::start(&lab, 2.0);
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        lab.signal("dir", "lb", sig).unwrap();
        wait_state(&lab, "dir2", "MASTER", Duration::from_secs(3));
        let took = t0.elapsed();
        let (ok, fail, outage) = load.finish();
        println!(
            "advert_int 0.1 v3 {how} failover: backup MASTER after {took:?}; HTTP {ok} answered, {fail} failed, outage {outage} ms"
        );
        assert!(took < Duration::from_millis(1500), "{took:?}");
        lab.stop("dir", "lb").unwrap();
        lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
        wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
        wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(2));
    }
}

/// VRRPv3 over IPv6 (ff02::12, link-local sources, unsolicited NA): election
/// and failover between two agents.
#[test]
fn ipv6_instances_fail_over() {
    let _g = lb_tests::serial();
    let mut lab = lab("v6");
    let inst = |state: &str, prio: u8| {
        format!(
            "vrrp_instance VI_6 {{\n  state {state}\n  interface eth0\n  virtual_router_id 52\n  \
             priority {prio}\n  advert_int 0.2\n  virtual_ipaddress {{\n    {}/64\n  }}\n}}\n{}",
            lb_tests::VIP6,
            service()
        )
    };
    let holds6 = |lab: &Lab, role: &str| {
        let out = lab
            .exec(role, &["ip", "-6", "addr", "show", "dev", "eth0"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet6 {}/64", lb_tests::VIP6))
    };
    let st = |lab: &Lab, role: &str| {
        vrrp_list(lab, role)
            .lines()
            .find(|l| l.starts_with("VI_6"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    lab.start_agent_on("dir", &inst("MASTER", 150), AGENT_ARGS)
        .unwrap();
    lab.start_agent_on("dir2", &inst("BACKUP", 100), AGENT_ARGS)
        .unwrap();
    wait(
        "v6 election",
        Duration::from_secs(5),
        || st(&lab, "dir") == "MASTER" && st(&lab, "dir2") == "BACKUP",
        dump(&lab),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(st(&lab, "dir2"), "BACKUP", "{}", dump(&lab)());
    assert!(holds6(&lab, "dir") && !holds6(&lab, "dir2"));
    let l = vrrp_list(&lab, "dir2");
    assert!(
        l.contains("fe80::"),
        "the master's link-local address:\n{l}"
    );
    let t0 = Instant::now();
    lab.signal("dir", "lb", libc::SIGKILL).unwrap();
    wait(
        "v6 failover",
        Duration::from_secs(3),
        || st(&lab, "dir2") == "MASTER",
        dump(&lab),
    );
    println!(
        "IPv6 v3 advert_int 0.2 SIGKILL failover: {:?}",
        t0.elapsed()
    );
    assert!(holds6(&lab, "dir2") && !holds6(&lab, "dir"));
}

/// Fast VRRPv3 instance `name` (advert 0.2 s) with VIP `vip`.
fn fast_instance(name: &str, vrid: u8, state: &str, prio: u8, vip: &str, extra: &str) -> String {
    format!(
        "vrrp_instance {name} {{\n  state {state}\n  interface eth0\n  virtual_router_id {vrid}\n  \
         priority {prio}\n  version 3\n  advert_int 0.2\n  {extra}\n  virtual_ipaddress {{\n    {vip}/24\n  }}\n}}\n"
    )
}

fn has_addr(lab: &Lab, role: &str, ip: &str) -> bool {
    let out = lab
        .exec(role, &["ip", "-4", "addr", "show", "dev", "eth0"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("inet {ip}/"))
}

/// The client's neighbour entry for the VIP (`ip neigh show VIP`).
fn client_neigh(lab: &Lab) -> String {
    let out = lab.exec("cl", &["ip", "neigh", "show", VIP]).unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn mac_of(lab: &Lab, role: &str) -> String {
    let out = lab
        .exec(role, &["cat", "/sys/class/net/eth0/address"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The directors lose sight of each other (dir2's switch port leaves the
/// bridge): both become MASTER. When adverts flow again the split brain is
/// logged, counted and resolved by priority; gratuitous ARP moves the
/// client's neighbour entry at each takeover.
#[test]
fn split_brain_is_detected_and_resolved_and_garp_moves_clients() {
    let _g = lb_tests::serial();
    let mut lab = lab("sb");
    let a = format!(
        "{}{}",
        fast_instance("VI_1", 51, "MASTER", 150, VIP, ""),
        service()
    );
    let b = format!(
        "{}{}",
        fast_instance("VI_1", 51, "BACKUP", 100, VIP, ""),
        service()
    );
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    lab.start_agent_on("dir2", &b, AGENT_ARGS).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(5));
    let t = lab.http_get(&format!("{VIP}:80"), 4).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    assert!(
        client_neigh(&lab).contains(&mac_of(&lab, "dir")),
        "{}",
        client_neigh(&lab)
    );

    // Partition.
    lab.exec("sw", &["ip", "link", "set", "dir2", "nomaster"])
        .unwrap();
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(3));
    assert_eq!(state(&lab, "dir"), "MASTER");
    assert!(
        holds_vip(&lab, "dir") && holds_vip(&lab, "dir2"),
        "both claim the VIP"
    );
    // Heal: dir (150) hears dir2 (100) and keeps the role; dir2 steps down.
    let t0 = Instant::now();
    lab.exec("sw", &["ip", "link", "set", "dir2", "master", "br0"])
        .unwrap();
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(3));
    println!(
        "split brain resolved {:?} after the link healed",
        t0.elapsed()
    );
    assert!(holds_vip(&lab, "dir") && !holds_vip(&lab, "dir2"));
    wait(
        "split brain counted and logged",
        Duration::from_secs(2),
        || {
            // Whichever master hears the other first detects it (the lower
            // one then steps down at once, the higher keeps its role).
            ["dir", "dir2"].iter().any(|r| {
                let l = vrrp_list(&lab, r);
                !l.contains("other master seen 0") && lab.log(r, "lb").contains("SPLIT BRAIN")
            })
        },
        dump(&lab),
    );

    // GARP: the client's entry follows the takeover without asking.
    lab.stop("dir", "lb").unwrap();
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(2));
    let mac2 = mac_of(&lab, "dir2");
    wait(
        "client's neighbour entry moved by gratuitous ARP",
        Duration::from_millis(500),
        || client_neigh(&lab).contains(&mac2),
        || client_neigh(&lab),
    );
}

/// Drops VRRP (IP protocol 112) in and out of `role` with nftables, leaving
/// ARP and traffic alone: the switch blocking VRRP only. (Raw sockets get
/// IPv4 packets after the input hook, and send through the output hook.)
fn block_vrrp(lab: &Lab, role: &str, block: bool) {
    let nft = |args: &[&str]| {
        let mut a = vec!["nft"];
        a.extend_from_slice(args);
        let out = lab.exec(role, &a).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if block {
        nft(&["add", "table", "ip", "lbtest"]);
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            nft(&[
                "add",
                "chain",
                "ip",
                "lbtest",
                chain,
                &format!("{{ type filter hook {hook} priority 0; }}"),
            ]);
            nft(&[
                "add", "rule", "ip", "lbtest", chain, "ip", "protocol", "112", "drop",
            ]);
        }
    } else {
        nft(&["delete", "table", "ip", "lbtest"]);
    }
}

/// issue 13, input 4: VRRP blocked on the switch, then let through. During
/// the split brain the clients learn the lower director's MAC last; when it
/// heals, that director steps down (sending one advert first:
/// `higher_prio_send_advert`) and the winner, hearing a lower priority
/// advert, announces the VIP again (`garp_lower_prio_repeat`), so the
/// clients come back to the director that holds the VIP.
#[test]
fn a_healed_split_brain_moves_clients_back_to_the_winner() {
    let _g = lb_tests::serial();
    let mut lab = lab("hb");
    let extra = "higher_prio_send_advert\n  garp_lower_prio_repeat 2\n  garp_master_delay 0";
    let a = format!(
        "{}{}",
        fast_instance("VI_1", 52, "MASTER", 150, VIP, extra),
        service()
    );
    let b = format!(
        "{}{}",
        fast_instance("VI_1", 52, "BACKUP", 100, VIP, extra),
        service()
    );
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    lab.start_agent_on("dir2", &b, AGENT_ARGS).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(5));
    let t = lab.http_get(&format!("{VIP}:80"), 2).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    let (mac1, mac2) = (mac_of(&lab, "dir"), mac_of(&lab, "dir2"));

    block_vrrp(&lab, "dir2", true);
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(3));
    assert_eq!(state(&lab, "dir"), "MASTER");
    wait(
        "the client learned the lower master's MAC last",
        Duration::from_secs(2),
        || client_neigh(&lab).contains(&mac2),
        || client_neigh(&lab),
    );

    let t0 = Instant::now();
    block_vrrp(&lab, "dir2", false);
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(3));
    wait(
        "the winner announced the VIP again",
        Duration::from_secs(2),
        || client_neigh(&lab).contains(&mac1),
        || format!("{}\n{}", client_neigh(&lab), lab.log("dir", "lb")),
    );
    println!(
        "client back on the winner {:?} after the heal",
        t0.elapsed()
    );
    assert!(holds_vip(&lab, "dir") && !holds_vip(&lab, "dir2"));
    assert!(lab
        .log("dir", "lb")
        .contains("announcing the addresses again"));
    let t = lab.http_get(&format!("{VIP}:80"), 4).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
}

fn routes(lab: &Lab, role: &str, table: &str) -> String {
    let out = lab
        .exec(role, &["ip", "route", "show", "table", table])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// issue 13, input 6: `virtual_routes` come and go with the master role:
/// added with the VIP on MASTER, removed on a clean stop (and on BACKUP /
/// FAULT, the same code path as the addresses).
#[test]
fn virtual_routes_follow_the_master_role() {
    let _g = lb_tests::serial();
    let mut lab = lab("rt");
    let extra = format!(
        "{V2}\n  virtual_routes {{\n    src {VIP} 10.99.0.0/24 dev eth0\n    \
         blackhole 10.98.0.0/24 table 100 metric 7\n  }}\n  \
         virtual_rules {{\n    from {VIP}/32 table 100 priority 1234\n  }}"
    );
    let a = format!("{}{}", instance("MASTER", 150, &extra), service());
    assert!(routes(&lab, "dir", "main").find("10.99.0.0").is_none());
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
    wait(
        "routes added on MASTER",
        Duration::from_secs(2),
        || {
            routes(&lab, "dir", "main").contains(&format!(
                "10.99.0.0/24 dev eth0 proto static scope link src {VIP}"
            ))
        },
        || format!("{}\n{}", routes(&lab, "dir", "main"), lab.log("dir", "lb")),
    );
    assert!(
        routes(&lab, "dir", "100").contains("blackhole 10.98.0.0/24 proto static metric 7"),
        "{}",
        routes(&lab, "dir", "100")
    );
    let rules = |lab: &Lab| {
        let out = lab.exec("dir", &["ip", "rule", "show"]).unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        rules(&lab).lines().any(|l| l.starts_with("1234:")
            && l.contains(&format!("from {VIP} "))
            && l.contains("lookup 100")),
        "{}",
        rules(&lab)
    );
    lab.signal("dir", "lb", libc::SIGTERM).unwrap();
    wait(
        "routes and rules removed when the master leaves",
        Duration::from_secs(3),
        || {
            !routes(&lab, "dir", "main").contains("10.99.0.0")
                && !routes(&lab, "dir", "100").contains("10.98.0.0")
                && !rules(&lab).contains("1234:")
        },
        || {
            format!(
                "{}\n{}",
                routes(&lab, "dir", "main"),
                routes(&lab, "dir", "100")
            )
        },
    );
    lab.stop("dir", "lb").unwrap();
}

/// issue 13, input 6: `use_vmac`. The VIP lives on a macvlan with the
/// virtual router MAC (00:00:5e:00:01:VRID); the client's ARP entry holds
/// that MAC, and after a failover it is still right: the new master
/// answers on the same MAC. The VMAC interface goes with the agent.
#[test]
fn use_vmac_keeps_one_mac_across_a_failover() {
    let _g = lb_tests::serial();
    let mut lab = lab("vm");
    let a = format!(
        "{}{}",
        instance("MASTER", 150, &format!("{V2}\n  use_vmac")),
        service()
    );
    let b = format!(
        "{}{}",
        instance("BACKUP", 100, &format!("{V2}\n  use_vmac")),
        service()
    );
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    lab.start_agent_on("dir2", &b, AGENT_ARGS).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(5));
    let vmac_addr = |lab: &Lab, role: &str| {
        let out = lab
            .exec(role, &["ip", "-4", "addr", "show", "dev", "vrrp.51"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        vmac_addr(&lab, "dir").contains(&format!("inet {VIP}/")),
        "{}",
        vmac_addr(&lab, "dir")
    );
    assert!(!vmac_addr(&lab, "dir2").contains(&format!("inet {VIP}/")));
    let t = lab.http_get(&format!("{VIP}:80"), 4).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    assert!(
        client_neigh(&lab).contains("00:00:5e:00:01:33"),
        "{}",
        client_neigh(&lab)
    );

    lab.signal("dir", "lb", libc::SIGTERM).unwrap();
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(3));
    lab.stop("dir", "lb").unwrap();
    assert!(vmac_addr(&lab, "dir2").contains(&format!("inet {VIP}/")));
    let gone = lab.exec("dir", &["ip", "link", "show", "vrrp.51"]);
    assert!(
        gone.is_err(),
        "the VMAC interface stays after the agent stopped"
    );
    let t = lab.http_get(&format!("{VIP}:80"), 4).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    assert!(
        client_neigh(&lab).contains("00:00:5e:00:01:33"),
        "{}",
        client_neigh(&lab)
    );
}

/// A vrrp_sync_group: one member's track_script failing takes the whole
/// group to FAULT, so the peer takes both VIPs; recovery brings both back.
#[test]
fn sync_group_members_move_together() {
    let _g = lb_tests::serial();
    let mut lab = lab("sg");
    let flag = lab.workdir.join("vi2-ok");
    std::fs::write(&flag, "").unwrap();
    let vip2 = "10.200.0.101";
    let group = "vrrp_sync_group G {\n  group {\n    VI_1\n    VI_2\n  }\n}\n";
    let script = format!(
        "vrrp_script ok {{\n  script \"/usr/bin/test -f {}\"\n  interval 0.1\n}}\n",
        flag.display()
    );
    let w = lab.workdir.clone();
    let group_a = format!(
        "vrrp_sync_group G {{\n  group {{\n    VI_1\n    VI_2\n  }}\n  \
         notify_master \"/usr/bin/touch {m}\"\n  notify_fault \"/usr/bin/touch {f}\"\n}}\n",
        m = w.join("group-master").display(),
        f = w.join("group-fault").display(),
    );
    let a = format!(
        "{script}{group_a}{}{}{}",
        fast_instance("VI_1", 51, "MASTER", 150, VIP, ""),
        fast_instance(
            "VI_2",
            52,
            "MASTER",
            150,
            vip2,
            "track_script {\n    ok\n  }"
        ),
        service()
    );
    let b = format!(
        "{group}{}{}{}",
        fast_instance("VI_1", 51, "BACKUP", 100, VIP, ""),
        fast_instance("VI_2", 52, "BACKUP", 100, vip2, ""),
        service()
    );
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    lab.start_agent_on("dir2", &b, AGENT_ARGS).unwrap();
    let d = dump(&lab);
    wait(
        "dir holds both",
        Duration::from_secs(5),
        || {
            has_addr(&lab, "dir", VIP)
                && has_addr(&lab, "dir", vip2)
                && state(&lab, "dir2") == "BACKUP"
        },
        &d,
    );
    let t0 = Instant::now();
    std::fs::remove_file(&flag).unwrap();
    wait(
        "dir2 takes both",
        Duration::from_secs(3),
        || has_addr(&lab, "dir2", VIP) && has_addr(&lab, "dir2", vip2),
        &d,
    );
    println!(
        "sync group: both VIPs on the peer {:?} after one member's script failed",
        t0.elapsed()
    );
    assert!(!has_addr(&lab, "dir", VIP) && !has_addr(&lab, "dir", vip2));
    let l = vrrp_list(&lab, "dir");
    assert!(l.contains("sync group member VI_2 in fault"), "{l}");
    // The group's own notify programs ran once the members agreed.
    wait(
        "group notify_fault",
        Duration::from_secs(2),
        || w.join("group-fault").exists(),
        &d,
    );
    assert!(
        w.join("group-master").exists(),
        "group notify_master at start"
    );
    std::fs::remove_file(w.join("group-master")).unwrap();
    std::fs::write(&flag, "").unwrap();
    wait(
        "dir takes both back",
        Duration::from_secs(3),
        || has_addr(&lab, "dir", VIP) && has_addr(&lab, "dir", vip2),
        &d,
    );
    assert!(!has_addr(&lab, "dir2", VIP) && !has_addr(&lab, "dir2", vip2));
    wait(
        "group notify_master again",
        Duration::from_secs(2),
        || w.join("group-master").exists(),
        &d,
    );
}

/// Adverts that fail validation are dropped and counted per reason: a wrong
/// password, and a VRID no instance has.
#[test]
fn invalid_adverts_are_dropped_and_counted() {
    let _g = lb_tests::serial();
    let mut lab = lab("bad");
    let auth = |p: &str| {
        format!("advert_int 1\n  authentication {{\n    auth_type PASS\n    auth_pass {p}\n  }}")
    };
    let a = format!("{}{}", instance("MASTER", 150, &auth("right")), service());
    let b = format!(
        "{}{}{}",
        instance("BACKUP", 100, &auth("wrong")),
        fast_instance("VI_9", 59, "MASTER", 100, "10.200.0.109", ""),
        service()
    );
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    lab.start_agent_on("dir2", &b, AGENT_ARGS).unwrap();
    let d = dump(&lab);
    wait(
        "drops counted",
        Duration::from_secs(6),
        || {
            let l = vrrp_list(&lab, "dir");
            l.contains("dropped: auth") && l.contains("eth0 vrid")
        },
        &d,
    );
    // Neither hears the other: both are master (what keepalived does too).
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(5));
    println!("{}", vrrp_list(&lab, "dir"));
}

/// SIGHUP with a new priority updates the instance in place (no restart, no
/// priority-0 goodbye); the peer preempts, and back.
#[test]
fn reload_changes_priority_in_place() {
    let _g = lb_tests::serial();
    let mut lab = lab("rl");
    let a = |p: u8| {
        format!(
            "{}{}",
            fast_instance("VI_1", 51, "MASTER", p, VIP, ""),
            service()
        )
    };
    let b = format!(
        "{}{}",
        fast_instance("VI_1", 51, "BACKUP", 100, VIP, ""),
        service()
    );
    lab.start_agent_on("dir", &a(150), AGENT_ARGS).unwrap();
    lab.start_agent_on("dir2", &b, AGENT_ARGS).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(5));
    std::fs::write(lab.config_path_of("dir"), a(50)).unwrap();
    lab.signal("dir", "lb", libc::SIGHUP).unwrap();
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(3));
    wait_state(&lab, "dir", "BACKUP", Duration::from_secs(1));
    let log = lab.log("dir", "lb");
    assert!(log.contains("updated in place"), "{log}");
    assert!(!log.contains("VRRP instance stopped"), "{log}");
    assert!(vrrp_list(&lab, "dir").contains("50(50)"));
    std::fs::write(lab.config_path_of("dir"), a(150)).unwrap();
    lab.signal("dir", "lb", libc::SIGHUP).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(3));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(1));
}

/// The seeds' own vrrp_instance blocks, run as their authors describe: the
/// document's file on the master, the same with `state BACKUP` and the lower
/// priority the author gives on the backup; the master's eth0 goes down (as
/// seed 001 tests it) and comes back.
fn seed_pair(prefix: &str, backup_priority: u8, vip: &str) {
    let _g = lb_tests::serial();
    let mut lab = lab(&format!("s{prefix}"));
    let (_, master) = lb_tests::seeds::config_of(prefix);
    assert_eq!(master.matches("state MASTER").count(), 1, "{master}");
    assert_eq!(master.matches("priority 100").count(), 1, "{master}");
    let backup = master
        .replace("state MASTER", "state BACKUP")
        .replace("priority 100", &format!("priority {backup_priority}"));
    lab.spawn_agent_on("dir", &master, AGENT_ARGS).unwrap();
    lab.spawn_agent_on("dir2", &backup, AGENT_ARGS).unwrap();
    let d = dump(&lab);
    wait(
        "seed master elected",
        Duration::from_secs(8),
        || {
            state(&lab, "dir") == "MASTER"
                && state(&lab, "dir2") == "BACKUP"
                && has_addr(&lab, "dir", vip)
                && !has_addr(&lab, "dir2", vip)
        },
        &d,
    );
    let t0 = Instant::now();
    lab.exec("dir", &["ip", "link", "set", "eth0", "down"])
        .unwrap();
    wait(
        "backup takes over",
        Duration::from_secs(6),
        || has_addr(&lab, "dir2", vip),
        &d,
    );
    println!(
        "seed {prefix}: master's eth0 down → backup holds {vip} after {:?}",
        t0.elapsed()
    );
    wait_state(&lab, "dir", "FAULT", Duration::from_secs(1));
    lab.exec("dir", &["ip", "link", "set", "eth0", "up"])
        .unwrap();
    wait(
        "master back",
        Duration::from_secs(8),
        || has_addr(&lab, "dir", vip) && !has_addr(&lab, "dir2", vip),
        &d,
    );
}

#[test]
fn seed_000_pair_fails_over_as_described() {
    // "备用服务器上为 BACKUP", "备用服务器上为90": the backup is BACKUP, priority 90.
    seed_pair("000", 90, "172.16.7.5");
}

#[test]
fn seed_001_pair_fails_over_as_described() {
    // "state BACKUP 表示为从节点; priority 50": the backup is BACKUP, priority 50.
    seed_pair("001", 50, "172.20.1.100");
}

/// DR with Maglev on both directors: a keep-alive connection opened through
/// the master keeps being served by the same real through the new master
/// after a failover (the backup schedules the flow's next packet alike).
#[test]
fn established_dr_flows_survive_failover_with_maglev() {
    let _g = lb_tests::serial();
    let mut lab = lab("mh");
    let svc = service().replace("lb_algo rr", "lb_algo mh");
    let a = format!("{}{svc}", fast_instance("VI_1", 51, "MASTER", 150, VIP, ""));
    let b = format!("{}{svc}", fast_instance("VI_1", 51, "BACKUP", 100, VIP, ""));
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    lab.start_agent_on("dir2", &b, AGENT_ARGS).unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(5));
    let mut held: Vec<_> = (0..6)
        .map(|_| lab.hold(&format!("{VIP}:80")).unwrap())
        .collect();
    let first: Vec<String> = held.iter().map(|h| h.first.clone()).collect();
    assert!(first.iter().all(|f| f.starts_with('r')), "{first:?}");
    lab.stop("dir", "lb").unwrap();
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(200));
    let after: Vec<String> = held.iter_mut().map(|h| h.request().unwrap()).collect();
    assert_eq!(after, first, "each connection still answered by its real");
    let stats = lab
        .lb(&["list", "--bpffs", &lab.bpffs_of("dir2").to_string_lossy()])
        .unwrap();
    println!("dir2 after the failover:\n{stats}");
}

/// mh is identical on both directors whatever the order the reals were
/// added in: `dir` has the three reals in its file (r1, r2, r3); `dir2`'s
/// file has r3 only and `lb adm -a` adds r2, then r1, at runtime (another
/// order, other real ids). 24 keep-alive connections (`mh-port`: spread by
/// source port) opened through `dir` are answered by the same reals through
/// `dir2` after `dir` stops. (The slot-by-slot comparison of two tables is
/// `testkit/tests/directors.rs`; this is the agents' whole path.)
#[test]
fn maglev_is_identical_on_both_directors_whatever_the_order_reals_were_added() {
    let _g = lb_tests::serial();
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    let mut lab = Lab::ha(&format!("lbv{}mo", std::process::id() % 1000), bins, 3).expect("lab");
    let real =
        |i: usize, w: u32| format!("  real_server {} 80 {{\n    weight {w}\n  }}\n", real_ip(i));
    let head = format!(
        "virtual_server {VIP} 80 {{\n  lb_algo mh\n  mh-port\n  lb_kind DR\n  protocol TCP\n"
    );
    let svc_a = format!("{head}{}{}{}}}\n", real(1, 1), real(2, 2), real(3, 1));
    let svc_b = format!("{head}{}}}\n", real(3, 1));
    let a = format!(
        "{}{svc_a}",
        fast_instance("VI_1", 51, "MASTER", 150, VIP, "")
    );
    let b = format!(
        "{}{svc_b}",
        fast_instance("VI_1", 51, "BACKUP", 100, VIP, "")
    );
    lab.start_agent_on("dir", &a, AGENT_ARGS).unwrap();
    lab.start_agent_on("dir2", &b, AGENT_ARGS).unwrap();
    for (i, w) in [(2, "2"), (1, "1")] {
        let (code, out, err) = lab
            .adm(
                "dir2",
                &[
                    "-a",
                    "-t",
                    &format!("{VIP}:80"),
                    "-r",
                    &format!("{}:80", real_ip(i)),
                    "-g",
                    "-w",
                    w,
                ],
                "",
            )
            .unwrap();
        assert_eq!(code, 0, "lb adm -a r{i}: {out}{err}");
    }
    lab.wait_resolved_on("dir", Duration::from_secs(5)).unwrap();
    lab.wait_resolved_on("dir2", Duration::from_secs(5))
        .unwrap();
    wait_state(&lab, "dir", "MASTER", Duration::from_secs(5));
    wait_state(&lab, "dir2", "BACKUP", Duration::from_secs(5));
    let mut held: Vec<_> = (0..24)
        .map(|_| lab.hold(&format!("{VIP}:80")).unwrap())
        .collect();
    let first: Vec<String> = held.iter().map(|h| h.first.clone()).collect();
    assert!(first.iter().all(|f| f.starts_with('r')), "{first:?}");
    let reals: std::collections::BTreeSet<&String> = first.iter().collect();
    assert!(
        reals.len() > 1,
        "mh-port spreads the connections: {first:?}"
    );
    lab.stop("dir", "lb").unwrap();
    wait_state(&lab, "dir2", "MASTER", Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(200));
    let after: Vec<String> = held.iter_mut().map(|h| h.request().unwrap()).collect();
    assert_eq!(after, first, "each connection still answered by its real");
}
