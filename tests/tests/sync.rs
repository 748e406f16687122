//! Connection sync between two lb directors (`lvs_sync_daemon`, ipvs sync
//! protocol v1): long-lived connections survive a SIGKILL of the master and
//! its return (bulk copy, then preemption). Needs root; one at a time.
use std::time::{Duration, Instant};

use lb_tests::{private_ip, real_ip, real_ip6, Bins, Lab, AGENT_ARGS, NAT_GATEWAY_IP, VIP, VIP6};

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::ha(&format!("lbs{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// Both directors' configuration: VRRPv3 with 0.1 s adverts, sync on eth0
/// (signed), a DR `rr` service on port 80 and a DR `wlc` service with
/// persistence on port 8080.
fn config(state: &str, priority: u8, key: &str) -> String {
    config_weighted(state, priority, key, (1, 1))
}

/// [`config`] with the weights of the port-80 service's reals.
fn config_weighted(state: &str, priority: u8, key: &str, w: (u32, u32)) -> String {
    let reals = |port: u16| {
        let (w1, w2) = if port == 80 { w } else { (1, 1) };
        format!(
            "  real_server {} {port} {{\n    weight {w1}\n  }}\n  real_server {} {port} {{\n    weight {w2}\n  }}\n",
            real_ip(1),
            real_ip(2)
        )
    };
    format!(
        "global_defs {{\n  lvs_sync_daemon eth0 VI_1 id 51\n  lb_sync_auth_key {key}\n}}\n\
         vrrp_instance VI_1 {{\n  state {state}\n  interface eth0\n  virtual_router_id 51\n  \
         priority {priority}\n  version 3\n  advert_int 0.1\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n\
         virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n{}}}\n\
         virtual_server {VIP} 8080 {{\n  lb_algo wlc\n  lb_kind DR\n  persistence_timeout 300\n  protocol TCP\n{}}}\n",
        reals(80),
        reals(8080)
    )
}

fn vrrp_list(lab: &Lab, role: &str) -> String {
    let sock = lab.socket_of(role).to_string_lossy().into_owned();
    lab.lb(&["list", "--vrrp", "--socket", &sock])
        .unwrap_or_else(|e| format!("{e:#}"))
}

fn wait_for(lab: &Lab, role: &str, what: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if vrrp_list(lab, role).contains(what) {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{role}: no '{what}' in {limit:?}\n{}\nlog:\n{}",
        vrrp_list(lab, role),
        lab.log(role, "lb")
    );
}

fn master(lab: &Lab, role: &str, limit: Duration) -> Duration {
    wait_for(lab, role, "MASTER", limit)
}

/// The "N installed" count of `lb list --vrrp`'s sync lines.
fn installed(list: &str) -> u64 {
    list.split(" installed")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no installed count in\n{list}"))
}

/// Starts `a` (priority 150) alone, then `b` (100); 25 keep-alive
/// connections to each `ADDR:PORT` of `targets` (a request every 100 ms each); SIGKILL
/// of dir; dir2 takes over; dir returns, pulls the table and preempts.
/// Every connection must stay on its real without a reset.
fn master_kill_and_return(lab: &mut Lab, a: &str, b: &str, targets: &[(String, &str)]) {
    lab.start_agent_on("dir", a, AGENT_ARGS).unwrap();
    // No peer yet: dir waits for a bulk copy nobody sends, then takes over.
    master(lab, "dir", Duration::from_secs(15));
    assert!(vrrp_list(lab, "dir").contains("no answer from a peer"));
    lab.start_agent_on("dir2", b, AGENT_ARGS).unwrap();
    // dir2 gets dir's (empty) table at once.
    wait_for(
        lab,
        "dir2",
        "connection sync: in sync",
        Duration::from_secs(5),
    );
    wait_for(lab, "dir2", "BACKUP", Duration::from_secs(2));

    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    let secs = "16";
    for (to, tag) in targets {
        lab.spawn("cl", &[&probe, "hold-many", to, "25", secs, "100"], tag)
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    println!("dir before the kill:\n{}", vrrp_list(lab, "dir"));
    let list2 = vrrp_list(lab, "dir2");
    println!("dir2 before the kill:\n{list2}");
    assert!(
        installed(&list2) >= 25 * targets.len() as u64,
        "the backup installed too little:\n{list2}"
    );

    // SIGKILL of the master: the backup takes over with the synced flows.
    lab.signal("dir", "lb", libc::SIGKILL).unwrap();
    let took = master(lab, "dir2", Duration::from_secs(3));
    println!("SIGKILL: dir2 MASTER after {took:?}");
    lab.stop("dir", "lb").unwrap();
    std::thread::sleep(Duration::from_secs(3));

    // The old master returns: it pulls dir2's table, then preempts.
    lab.start_agent_on("dir", a, AGENT_ARGS).unwrap();
    let took = master(lab, "dir", Duration::from_secs(12));
    let list = vrrp_list(lab, "dir");
    println!("dir back, MASTER after {took:?}:\n{list}");
    assert!(list.contains("connection sync: in sync"), "{list}");
    assert!(!list.contains("bulk copy: 0 conns"), "{list}");
    wait_for(lab, "dir2", "BACKUP", Duration::from_secs(2));

    for (_, tag) in targets {
        let (resets, changed, failed) = lab.wait_hold_many(tag, Duration::from_secs(30));
        assert_eq!(
            (resets, changed),
            (0, 0),
            "{tag}: connections reset or moved to another real"
        );
        println!("{tag}: 25 connections, 0 reset, 0 moved; {failed} requests unanswered within 1 s during the takeovers");
    }
    println!("dir2 at the end:\n{}", vrrp_list(lab, "dir2"));
}

#[test]
fn long_lived_connections_survive_a_master_kill_and_its_return() {
    let _g = lb_tests::serial();
    let mut lab = lab("pair");
    let a = config("BACKUP", 150, "s3cret");
    let b = config("BACKUP", 100, "s3cret");
    master_kill_and_return(
        &mut lab,
        &a,
        &b,
        &[(format!("{VIP}:80"), "rr"), (format!("{VIP}:8080"), "wlc")],
    );
}

/// IPv6: a VRRPv3 instance for the IPv6 VIP beside the IPv4 one (one sync
/// group), a DR `rr` service on the IPv6 VIP; sync over IPv4 multicast.
fn v6_config(priority: u8) -> String {
    let inst = |name: &str, vrid: u8, vip: &str, len: u8| {
        format!(
            "vrrp_instance {name} {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {vrid}\n  \
             priority {priority}\n  version 3\n  advert_int 0.1\n  virtual_ipaddress {{\n    {vip}/{len}\n  }}\n}}\n"
        )
    };
    format!(
        "global_defs {{\n  lvs_sync_daemon eth0 VI_1\n}}\n\
         vrrp_sync_group G {{\n  group {{\n    VI_1\n    VI_6\n  }}\n}}\n{}{}\
         virtual_server {VIP6} 80 {{\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  \
         real_server {} 80 {{\n    weight 1\n  }}\n  real_server {} 80 {{\n    weight 1\n  }}\n}}\n",
        inst("VI_1", 51, VIP, 24),
        inst("VI_6", 52, VIP6, 64),
        real_ip6(1),
        real_ip6(2),
    )
}

#[test]
fn ipv6_connections_survive_a_master_kill_and_its_return() {
    let _g = lb_tests::serial();
    let mut lab = lab("v6");
    master_kill_and_return(
        &mut lab,
        &v6_config(150),
        &v6_config(100),
        &[(format!("[{VIP6}]:80"), "v6")],
    );
}

/// The classic LVS-NAT pair: the VIP on eth0 and the reals' gateway on
/// eth1 in one vrrp_sync_group; an `rr` NAT service. The replies of the
/// synced connections are translated by the new master from the synced
/// NAT reverse entries.
fn nat_config(priority: u8) -> String {
    let inst = |name: &str, iface: &str, vrid: u8, vip: &str| {
        format!(
            "vrrp_instance {name} {{\n  state BACKUP\n  interface {iface}\n  virtual_router_id {vrid}\n  \
             priority {priority}\n  version 3\n  advert_int 0.1\n  virtual_ipaddress {{\n    {vip}/24\n  }}\n}}\n"
        )
    };
    format!(
        "global_defs {{\n  lvs_sync_daemon eth0 VI_1\n}}\n\
         vrrp_sync_group G {{\n  group {{\n    VI_1\n    VI_2\n  }}\n}}\n{}{}\
         virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n  \
         real_server {} 80 {{\n    weight 1\n  }}\n  real_server {} 80 {{\n    weight 1\n  }}\n}}\n",
        inst("VI_1", "eth0", 51, VIP),
        inst("VI_2", "eth1", 52, NAT_GATEWAY_IP),
        private_ip(1),
        private_ip(2),
    )
}

#[test]
fn nat_connections_survive_a_master_kill_and_its_return() {
    let _g = lb_tests::serial();
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    let mut lab =
        Lab::nat_ha(&format!("lbs{}nat", std::process::id() % 1000), bins, 2).expect("lab");
    master_kill_and_return(
        &mut lab,
        &nat_config(150),
        &nat_config(100),
        &[(format!("{VIP}:80"), "nat")],
    );
}

/// The control: the pair without `lvs_sync_daemon`. The backup schedules
/// the mid-stream packets anew, and a connection it sends to the other
/// real is reset: what the tests above guard against. The weights make it
/// certain (the master sends every connection to r1, the backup would send
/// them to r2), not a matter of which real rr happens to pick.
#[test]
fn without_sync_a_takeover_resets_rr_connections() {
    let _g = lb_tests::serial();
    let mut lab = lab("nosync");
    let strip = |c: String| {
        let end = c.find("}\n").expect("global_defs") + 2;
        c[end..].to_string()
    };
    lab.start_agent_on(
        "dir",
        &strip(config_weighted("BACKUP", 150, "k", (1, 0))),
        AGENT_ARGS,
    )
    .unwrap();
    master(&lab, "dir", Duration::from_secs(3));
    lab.start_agent_on(
        "dir2",
        &strip(config_weighted("BACKUP", 100, "k", (0, 1))),
        AGENT_ARGS,
    )
    .unwrap();
    wait_for(&lab, "dir2", "BACKUP", Duration::from_secs(2));
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    let to = format!("{VIP}:80");
    lab.spawn("cl", &[&probe, "hold-many", &to, "10", "5", "100"], "rr")
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    lab.signal("dir", "lb", libc::SIGKILL).unwrap();
    master(&lab, "dir2", Duration::from_secs(3));
    let (resets, _, _) = lab.wait_hold_many("rr", Duration::from_secs(20));
    assert!(
        resets > 0,
        "no connection was reset without sync: the sync tests prove nothing"
    );
    println!("without sync: {resets} of 10 connections reset by the takeover");
}

#[test]
fn unsigned_and_wrongly_signed_messages_are_dropped_and_counted() {
    let _g = lb_tests::serial();
    let mut lab = lab("auth");
    lab.start_agent_on("dir", &config("BACKUP", 150, "right-key"), AGENT_ARGS)
        .unwrap();
    lab.start_agent_on("dir2", &config("BACKUP", 100, "wrong-key"), AGENT_ARGS)
        .unwrap();
    // Neither answers the other's request: each times out and counts.
    master(&lab, "dir", Duration::from_secs(15));
    let list = vrrp_list(&lab, "dir");
    assert!(list.contains("bad signature"), "{list}");
    assert!(list.contains("no answer from a peer"), "{list}");
    // Flows made on dir are not installed on dir2.
    let t = lab.http_get(&format!("{VIP}:80"), 4).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    std::thread::sleep(Duration::from_millis(300));
    let list2 = vrrp_list(&lab, "dir2");
    assert_eq!(installed(&list2), 0, "{list2}");
    assert!(list2.contains("bad signature"), "{list2}");
    // A reload that changes the key says the running sync keeps its own.
    std::fs::write(
        lab.config_path_of("dir2"),
        config("BACKUP", 100, "right-key"),
    )
    .unwrap();
    let sock = lab.socket_of("dir2").to_string_lossy().into_owned();
    let out = lab.lb(&["reload", "--socket", &sock]).unwrap();
    assert!(
        out.contains("connection sync settings changed: they take effect at the next start"),
        "{out}"
    );
}

/// Two directors started together ask each other for their tables and are
/// released together: the higher priority takes the VIP, the other never
/// does (no flap while the first still waits for an answer). Priorities
/// 250 and 10: their Master_Down_Intervals differ by 94 ms (skew), the
/// margin the release order may use on a loaded machine.
#[test]
fn a_pair_started_together_does_not_flap() {
    let _g = lb_tests::serial();
    let mut lab = lab("cold");
    lab.spawn_agent_on("dir", &config("BACKUP", 250, "k"), AGENT_ARGS)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lab.spawn_agent_on("dir2", &config("BACKUP", 10, "k"), AGENT_ARGS)
        .unwrap();
    let took = master(&lab, "dir", Duration::from_secs(15));
    wait_for(
        &lab,
        "dir2",
        "connection sync: in sync",
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_secs(1));
    let list2 = vrrp_list(&lab, "dir2");
    println!(
        "dir MASTER {took:?} after the start\n{}\n{list2}",
        vrrp_list(&lab, "dir")
    );
    assert!(
        list2.contains("became master 0"),
        "dir2 took the VIP meanwhile:\n{list2}"
    );
    assert!(vrrp_list(&lab, "dir").contains("connection sync: in sync"));
}

/// LVS-TUN: both services of [`config`] tunnelled (IPIP) to the reals,
/// which decapsulate with `lb decap`.
#[test]
fn tun_connections_survive_a_master_kill_and_its_return() {
    let _g = lb_tests::serial();
    let mut lab = lab("tun");
    // The FIB lookup that routes the tunnel answers only where forwarding is on.
    for d in ["dir", "dir2"] {
        lab.exec(d, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .unwrap();
    }
    let lb = lab.bins.lb.to_string_lossy().into_owned();
    for r in ["r1", "r2"] {
        lab.spawn(r, &[&lb, "decap", "--iface", "eth0", "--vip", VIP], "decap")
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let tun = |p: u8| config("BACKUP", p, "s3cret").replace("lb_kind DR", "lb_kind TUN");
    master_kill_and_return(
        &mut lab,
        &tun(150),
        &tun(100),
        &[
            (format!("{VIP}:80"), "tun-rr"),
            (format!("{VIP}:8080"), "tun-wlc"),
        ],
    );
}
