//! BGP announcement of the VIPs end to end (issue 18), in the scale-out lab
//! (`lb_tests::ecmp`): a router namespace running BIRD 2 with ECMP into
//! its kernel, three directors each running lb and its own gobgpd, two
//! reals by DR. The router's kernel route to each VIP is what is checked:
//! its next hops are the directors that announce it.
//!
//! - every director announces both VIPs: the route has three next hops and
//!   HTTP through the VIP works;
//! - the service whose only real fails its check is withdrawn on every
//!   director (the other VIP stays), and comes back with its real;
//! - `lb bgp drain` on one director removes its next hop (traffic keeps
//!   flowing through the others), `lb bgp undrain` brings it back, and the
//!   drain survives a restart of the agent;
//! - a restarted gobgpd (empty, no configuration) gets its BGP instance,
//!   its peer and its paths back from lb;
//! - SIGTERM withdraws before detaching: the route loses the director while
//!   its BGP session stays established (the withdrawal, not a lost session,
//!   removed it), and the agent's log has the withdrawal before the detach.
//!
//! Needs root, gobgpd and bird2 (`cargo xtask setup`); tests run one at a
//! time.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use lb_tests::{
    ecmp::{self, bgp_block, director, director_ip, VIP, VIP2},
    real_ip, serial, Bins, Lab,
};

/// Generous: BGP sessions start within seconds, a loaded machine is slow.
const ROUTE_WAIT: Duration = Duration::from_secs(60);

fn lab(name: &str, directors: usize) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::ecmp(
        &format!("lbg{}{name}", std::process::id() % 1000),
        bins,
        directors,
        2,
    )
    .expect("lab")
}

/// Director `i`'s configuration: `VIP:80` by `mh` with `mh-port` (the
/// client's port in the hash: one client's flows spread over the reals) on
/// both reals (checked on port 80), `VIP2:80` on r2 alone, checked on port 8080 (its health is
/// switched by stopping r2's server on 8080).
fn config(i: usize) -> String {
    config_with(&bgp_block(
        i,
        "    poll_interval 0.5\n    withdraw_grace 1\n",
    ))
}

/// [`config`] with `bgp` as its `lb_bgp` block (empty: none).
fn config_with(bgp: &str) -> String {
    let check = |port: u16| {
        format!(
            "    TCP_CHECK {{\n      connect_port {port}\n      connect_timeout 1\n      delay_loop 1\n      retry 1\n    }}\n"
        )
    };
    format!(
        "{bgp}\
         virtual_server {VIP} 80 {{\n  lb_algo mh\n  mh-port\n  lb_kind DR\n  protocol TCP\n\
           real_server {r1} 80 {{\n    weight 1\n{c80}  }}\n\
           real_server {r2} 80 {{\n    weight 1\n{c80}  }}\n}}\n\
         virtual_server {VIP2} 80 {{\n  lb_algo mh\n  mh-port\n  lb_kind DR\n  protocol TCP\n\
           real_server {r2} 80 {{\n    weight 1\n{c8080}  }}\n}}\n",
        r1 = real_ip(1),
        r2 = real_ip(2),
        c80 = check(80),
        c8080 = check(8080),
    )
}

/// `count` HTTP requests through `vip`: they must all be answered.
fn all_answered(lab: &Lab, vip: &str, count: usize) {
    let tally = lab.http_get(&format!("{vip}:80"), count).expect("http");
    let answered: usize = tally
        .iter()
        .filter(|(k, _)| k.starts_with('r'))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(answered, count, "through {vip}: {tally:?}");
}

/// `lb list --bgp --json` of director `i`.
fn bgp_view(lab: &Lab, i: usize) -> serde_json::Value {
    let sock = lab.socket_of(&director(i)).to_string_lossy().into_owned();
    let out = lab
        .lb(&["list", "--bgp", "--json", "--socket", &sock])
        .expect("lb list --bgp");
    serde_json::from_str(&out).expect("JSON")
}

fn vip_entry(view: &serde_json::Value, vip: &str) -> serde_json::Value {
    view["vips"]
        .as_array()
        .expect("vips")
        .iter()
        .find(|v| v["vip"] == vip)
        .cloned()
        .unwrap_or_else(|| panic!("{vip} not in {view:#}"))
}

fn lb_bgp(lab: &Lab, i: usize, action: &str) -> String {
    let sock = lab.socket_of(&director(i)).to_string_lossy().into_owned();
    lab.lb(&["bgp", action, "--socket", &sock])
        .unwrap_or_else(|e| panic!("lb bgp {action}: {e}"))
}

#[test]
fn announced_while_healthy_withdrawn_on_failure_drain_daemon_restart_and_stop() {
    let _g = serial();
    let mut lab = lab("a", 3);
    for i in 1..=3 {
        lab.start_ecmp_agent(i, &config(i)).expect("agent");
    }
    let all = [1, 2, 3];

    // Every director announces both VIPs; the router spreads over three.
    let t = lab
        .wait_next_hops(VIP, &all, ROUTE_WAIT)
        .expect("VIP routed");
    lab.wait_next_hops(VIP2, &all, ROUTE_WAIT)
        .expect("VIP2 routed");
    eprintln!("both VIPs routed through three directors {t:?} after the last start");
    all_answered(&lab, VIP, 30);
    all_answered(&lab, VIP2, 10);
    let v = bgp_view(&lab, 1);
    assert_eq!(v["daemon_up"], true, "{v:#}");
    assert_eq!(v["peers"][0]["address"], ecmp::ROUTER_IP, "{v:#}");
    assert_eq!(v["peers"][0]["state"], "established", "{v:#}");
    let e = vip_entry(&v, VIP);
    assert_eq!(
        (&e["announced"], &e["next_hop"], &e["serving"]),
        (&true.into(), &director_ip(1).into(), &1.into()),
        "{v:#}"
    );
    let text = lab
        .lb(&[
            "list",
            "--bgp",
            "--socket",
            &lab.socket_of("dir1").to_string_lossy(),
        ])
        .expect("lb list --bgp");
    assert!(text.contains("established"), "{text}");

    // VIP2's only real fails its check: withdrawn on every director, VIP
    // stays with its three next hops.
    lab.stop("r2", "httpd8080").expect("stop r2:8080");
    let t = lab
        .wait_next_hops(VIP2, &[], ROUTE_WAIT)
        .expect("VIP2 withdrawn");
    eprintln!("VIP2 withdrawn {t:?} after its real's server stopped");
    assert_eq!(lab.router_next_hops(VIP).unwrap().len(), 3);
    let e = vip_entry(&bgp_view(&lab, 2), VIP2);
    assert_eq!(
        (&e["announced"], &e["reason"], &e["serving"]),
        (&false.into(), &"no_healthy_real".into(), &0.into()),
        "{e:#}"
    );
    all_answered(&lab, VIP, 20);
    // The real comes back: so does the route.
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    lab.spawn("r2", &[&probe, "serve", "8080", "r2"], "httpd8080")
        .expect("r2:8080 again");
    lab.wait_next_hops(VIP2, &all, ROUTE_WAIT)
        .expect("VIP2 announced again");

    // Drain director 2: its next hop leaves both routes; traffic flows
    // through the other two.
    let out = lb_bgp(&lab, 2, "drain");
    assert!(out.contains("DRAINED"), "{out}");
    lab.wait_next_hops(VIP, &[1, 3], ROUTE_WAIT)
        .expect("dir2 drained");
    lab.wait_next_hops(VIP2, &[1, 3], ROUTE_WAIT)
        .expect("dir2 drained (VIP2)");
    all_answered(&lab, VIP, 20);
    // The drain is kept across a restart of the agent.
    lab.stop("dir2", "lb").expect("stop dir2's lb");
    lab.start_ecmp_agent(2, &config(2)).expect("dir2 again");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.router_next_hops(VIP).unwrap(),
        [
            director_ip(1).parse::<std::net::IpAddr>().unwrap(),
            director_ip(3).parse().unwrap()
        ],
        "a drained director stays withdrawn after a restart"
    );
    assert_eq!(bgp_view(&lab, 2)["drained"], true);
    lb_bgp(&lab, 2, "undrain");
    lab.wait_next_hops(VIP, &all, ROUTE_WAIT)
        .expect("dir2 undrained");

    // gobgpd on director 1 restarts empty: lb gives it its instance, its
    // peer and its paths back.
    lab.stop("dir1", "gobgpd").expect("stop gobgpd");
    lab.wait_next_hops(VIP, &[2, 3], ROUTE_WAIT)
        .expect("dir1's routes gone with its daemon");
    lab.start_gobgpd(1).expect("gobgpd again");
    let t = lab
        .wait_next_hops(VIP, &all, ROUTE_WAIT)
        .expect("dir1 announced again after its daemon restarted");
    eprintln!("re-announced {t:?} after gobgpd restarted");
    assert!(
        lab.log("dir1", "lb")
            .contains("started gobgpd's BGP instance"),
        "{}",
        lab.log("dir1", "lb")
    );

    // SIGTERM on director 3: withdrawn before XDP is detached, the BGP
    // session staying up (the withdrawal removed the next hop).
    lab.signal("dir3", "lb", libc::SIGTERM).expect("SIGTERM");
    lab.wait_next_hops(VIP, &[1, 2], ROUTE_WAIT)
        .expect("dir3 withdrawn on SIGTERM");
    assert_eq!(lab.bird_session(3).unwrap(), "Established");
    all_answered(&lab, VIP, 20);
    let start = Instant::now();
    while !lab.log("dir3", "lb").contains("detaching XDP") {
        assert!(
            start.elapsed() < ROUTE_WAIT,
            "dir3's agent did not stop: {}",
            lab.log("dir3", "lb")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = lab.log("dir3", "lb");
    let withdrawn = log.find("BGP: withdrawn").expect("a withdrawal logged");
    let detached = log.find("detaching XDP").expect("the detach logged");
    assert!(withdrawn < detached, "{log}");
    assert!(log.contains("every VIP withdrawn before the stop"), "{log}");
}

/// The flows director `i` tracks to `vip` port 80 in ESTABLISHED, by the
/// client's source port: the real each goes to.
fn flows(lab: &Lab, i: usize, vip: &str) -> BTreeMap<u16, String> {
    lab.director_flows(i, vip, 80)
        .expect("lb list -c")
        .into_iter()
        .filter(|(_, t)| t.state == "ESTABLISHED")
        .map(|(port, t)| (port, t.real))
        .collect()
}

/// `lb list --mh-digest --json` of director `i`.
fn mh_digest(lab: &Lab, i: usize) -> serde_json::Value {
    let bpffs = lab.bpffs_of(&director(i)).to_string_lossy().into_owned();
    let out = lab
        .lb(&["list", "--mh-digest", "--json", "--bpffs", &bpffs])
        .expect("lb list --mh-digest");
    serde_json::from_str(&out).expect("JSON")
}

/// Every flow seen in `seen` goes to one real whatever director tracks it:
/// merges `more` into `seen`, failing on a flow whose real differs.
fn same_reals(seen: &mut BTreeMap<u16, String>, more: &BTreeMap<u16, String>, what: &str) {
    for (port, real) in more {
        match seen.get(port) {
            Some(r) => assert_eq!(
                r, real,
                "{what}: the flow from port {port} moved to another real"
            ),
            None => {
                seen.insert(*port, real.clone());
            }
        }
    }
}

/// SIGKILL of director `i`'s agent and daemon (XDP stays attached, pinned:
/// it forwards what still reaches it until the router drops the routes).
fn kill_director(lab: &mut Lab, i: usize) {
    let d = director(i);
    for tag in ["lb", "gobgpd"] {
        lab.signal(&d, tag, libc::SIGKILL).expect("SIGKILL");
    }
    for tag in ["lb", "gobgpd"] {
        lab.stop(&d, tag).expect("reaped");
    }
}

/// `CONNS` keep-alive connections held through the VIP for `secs`, a
/// request every 200 ms each (tag `held`).
fn hold(lab: &mut Lab, conns: usize, secs: u64) {
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    lab.spawn(
        "cl",
        &[
            &probe,
            "hold-many",
            &format!("{VIP}:80"),
            &conns.to_string(),
            &secs.to_string(),
            "200",
        ],
        "held",
    )
    .expect("hold-many");
}

/// Where `needle` first appears in `log` (a panic naming it when absent).
fn at(log: &str, needle: &str) -> usize {
    log.find(needle)
        .unwrap_or_else(|| panic!("no '{needle}' in the log:\n{log}"))
}

/// The issue's scale-out scenario with `mh` (identical Maglev tables, no
/// state shared): 60 held connections spread over three directors (each
/// tracks some, none tracks another's); SIGKILL of director 3's agent and
/// gobgpd: the router drops its next hop, its flows continue on directors
/// 1 and 2 to the same reals; director 3 returns (announced again once its
/// agent runs): flows the router moves back keep their reals; a graceful
/// drain of director 1 (`lb bgp drain`) the same. Through all of it, no
/// held connection is reset or answered by another real.
#[test]
fn flows_spread_over_three_directors_and_survive_a_loss_a_return_and_a_drain() {
    let _g = serial();
    let mut lab = lab("s", 3);
    for i in 1..=3 {
        lab.start_ecmp_agent(i, &config(i)).expect("agent");
    }
    lab.wait_next_hops(VIP, &[1, 2, 3], ROUTE_WAIT)
        .expect("VIP routed");
    // The operator's check: the live Maglev tables are equal everywhere.
    let digests: Vec<serde_json::Value> = (1..=3).map(|i| mh_digest(&lab, i)).collect();
    eprintln!("mh tables: {:#}", digests[0]);
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:#?}");
    let t = &digests[0]["mh_tables"];
    assert_eq!(t.as_array().unwrap().len(), 2, "{t:#}");
    let per_real: Vec<u64> = t[0]["reals"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(per_real.iter().sum::<u64>(), 65537, "{t:#}");
    assert!(
        per_real.len() == 2 && per_real.iter().all(|&n| n > 30_000),
        "{t:#}"
    );
    const CONNS: usize = 60;
    // Long enough for every phase on a loaded machine; checked below.
    hold(&mut lab, CONNS, 100);
    std::thread::sleep(Duration::from_secs(3));

    // The spread: every director tracks some of the flows, each flow on
    // one director.
    let before: Vec<BTreeMap<u16, String>> = (1..=3).map(|i| flows(&lab, i, VIP)).collect();
    let counts: Vec<usize> = before.iter().map(|f| f.len()).collect();
    eprintln!("flows per director: {counts:?}");
    assert!(counts.iter().all(|&n| n > 0), "not spread: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), CONNS, "{before:?}");
    let mut seen = BTreeMap::new();
    for f in &before {
        same_reals(&mut seen, f, "before");
    }
    assert_eq!(seen.len(), CONNS, "a flow on two directors: {before:?}");
    // mh-port: the one client's flows go to both reals (else "the same
    // real" below would hold trivially).
    let to_r1 = seen.values().filter(|r| **r == real_ip(1)).count();
    assert!(to_r1 > 0 && to_r1 < CONNS, "{seen:?}");

    // Director 3 dies: its flows continue through 1 and 2, to the same reals.
    kill_director(&mut lab, 3);
    let t = lab
        .wait_next_hops(VIP, &[1, 2], ROUTE_WAIT)
        .expect("director 3's route dropped");
    eprintln!("director 3's next hop dropped {t:?} after the SIGKILL");
    std::thread::sleep(Duration::from_secs(2));
    let survivors: BTreeMap<u16, String> = flows(&lab, 1, VIP)
        .into_iter()
        .chain(flows(&lab, 2, VIP))
        .collect();
    for (port, real) in &before[2] {
        assert_eq!(
            survivors.get(port),
            Some(real),
            "director 3's flow from port {port} is not on its real through 1 or 2"
        );
    }
    same_reals(&mut seen, &flows(&lab, 1, VIP), "after the loss (1)");
    same_reals(&mut seen, &flows(&lab, 2, VIP), "after the loss (2)");

    // Director 3 returns: announced once its agent runs with its tables.
    lab.start_gobgpd(3).expect("gobgpd again");
    lab.start_ecmp_agent(3, &config(3)).expect("agent again");
    let t = lab
        .wait_next_hops(VIP, &[1, 2, 3], ROUTE_WAIT)
        .expect("director 3 announced again");
    eprintln!("director 3 routed again {t:?} after its agent resolved its reals");
    // The new agent took the killed one's XDP link over (its pinned tables
    // forwarded meanwhile) before anything was announced.
    let log = lab.log("dir3", "lb");
    assert!(
        at(&log, "adopted the XDP link of a previous agent") < at(&log, "BGP: announced"),
        "{log}"
    );
    assert_eq!(
        mh_digest(&lab, 3),
        digests[0],
        "the returning director's table"
    );
    std::thread::sleep(Duration::from_secs(2));
    for i in 1..=3 {
        same_reals(&mut seen, &flows(&lab, i, VIP), "after the return");
    }

    // A graceful drain of director 1: its flows move to 2 and 3.
    let out = lb_bgp(&lab, 1, "drain");
    assert!(out.contains("DRAINED"), "{out}");
    lab.wait_next_hops(VIP, &[2, 3], ROUTE_WAIT)
        .expect("director 1 drained");
    std::thread::sleep(Duration::from_secs(2));
    for i in 2..=3 {
        same_reals(&mut seen, &flows(&lab, i, VIP), "after the drain");
    }
    assert!(
        lab.hold_many_summary("held").is_none(),
        "the held connections ended before the last phase: lengthen them"
    );
    let (resets, changed, failed) = lab.wait_hold_many("held", Duration::from_secs(150));
    eprintln!("held {CONNS} connections: resets {resets} changed {changed} failed {failed}");
    assert_eq!((resets, changed), (0, 0), "{}", lab.log("cl", "held"));
}

/// Director `i`'s configuration for the sync test: `VIP:80` by `rr` on both
/// reals, connection sync without a VRRP instance (lb's extension for
/// active-active directors) on the directors' segment.
fn sync_config(i: usize) -> String {
    let check = "    TCP_CHECK {\n      connect_port 80\n      connect_timeout 1\n      delay_loop 1\n      retry 1\n    }\n";
    format!(
        "global_defs {{\n  lvs_sync_daemon eth0 id 18\n}}\n\
         {bgp}\
         virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n\
           real_server {r1} 80 {{\n    weight 1\n{check}  }}\n\
           real_server {r2} 80 {{\n    weight 1\n{check}  }}\n}}\n",
        bgp = bgp_block(i, "    poll_interval 0.5\n    withdraw_grace 1\n"),
        r1 = real_ip(1),
        r2 = real_ip(2),
    )
}

/// Waits until director `i` tracks at least `n` flows to the VIP.
fn wait_flows(lab: &Lab, i: usize, n: usize) -> BTreeMap<u16, String> {
    let t0 = Instant::now();
    loop {
        let f = flows(lab, i, VIP);
        if f.len() >= n {
            return f;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "director {i} tracks {} flows, not {n}: {f:?}",
            f.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Other schedulers than `mh` choose per director: what carries a flow
/// to another director is connection sync. With `rr` and
/// `lvs_sync_daemon` on all three directors (multicast: each sends its new
/// flows to all others), every director holds every flow with its real;
/// after the SIGKILL of director 3, its flows and those the router's new
/// split moves between 1 and 2 keep their reals; director 3 returns,
/// asks for the table, and is announced only once the table is in (its
/// log in that order; it then tracks every flow with the same real).
#[test]
fn with_rr_connection_sync_carries_a_lost_directors_flows_and_a_returning_one_waits_for_the_table()
{
    let _g = serial();
    let mut lab = lab("y", 3);
    for i in 1..=3 {
        lab.start_ecmp_agent(i, &sync_config(i)).expect("agent");
    }
    lab.wait_next_hops(VIP, &[1, 2, 3], ROUTE_WAIT)
        .expect("VIP routed");
    const CONNS: usize = 45;
    hold(&mut lab, CONNS, 70);
    std::thread::sleep(Duration::from_secs(3));
    let mut seen = BTreeMap::new();
    for i in 1..=3 {
        let f = wait_flows(&lab, i, CONNS);
        same_reals(&mut seen, &f, "synced");
    }
    let per_real: BTreeMap<&String, usize> = seen.values().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r).or_default() += 1;
        m
    });
    eprintln!("every director tracks the {CONNS} flows; per real: {per_real:?}");

    kill_director(&mut lab, 3);
    lab.wait_next_hops(VIP, &[1, 2], ROUTE_WAIT)
        .expect("director 3's route dropped");
    std::thread::sleep(Duration::from_secs(2));
    for i in 1..=2 {
        same_reals(&mut seen, &flows(&lab, i, VIP), "after the loss");
    }

    lab.start_gobgpd(3).expect("gobgpd again");
    lab.start_ecmp_agent(3, &sync_config(3))
        .expect("agent again");
    lab.wait_next_hops(VIP, &[1, 2, 3], ROUTE_WAIT)
        .expect("director 3 announced again");
    let log = lab.log("dir3", "lb");
    assert!(
        at(&log, "the peer's table is in; tables in place") < at(&log, "BGP: announced"),
        "{log}"
    );
    same_reals(&mut seen, &wait_flows(&lab, 3, CONNS), "after the return");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        lab.hold_many_summary("held").is_none(),
        "the held connections ended before the last phase: lengthen them"
    );
    let (resets, changed, failed) = lab.wait_hold_many("held", Duration::from_secs(120));
    eprintln!("held {CONNS} connections: resets {resets} changed {changed} failed {failed}");
    assert_eq!((resets, changed), (0, 0), "{}", lab.log("cl", "held"));
}

/// Writes `config` as director `i`'s file and reloads its agent.
fn reload(lab: &Lab, i: usize, config: &str) {
    std::fs::write(lab.config_path_of(&director(i)), config).expect("config");
    let sock = lab.socket_of(&director(i)).to_string_lossy().into_owned();
    let out = lab.lb(&["reload", "--socket", &sock]).expect("lb reload");
    assert!(out.contains("reloaded"), "{out}");
}

/// What the fresh-user trial broke, on two directors:
/// - a reload that removes `lb_bgp` withdraws what the agent announced (it
///   was left announced with no health gate), and one that names another
///   neighbor deletes the peer the agent had added (it stayed peered);
/// - `lb list --bgp` vouches for nothing while gobgpd does not answer
///   (it showed the last good state);
/// - SIGTERM while gobgpd is frozen: the withdrawal cannot be confirmed, so
///   the agent stops leaving XDP attached; when gobgpd wakes up with its
///   paths the routes come back to a director that still forwards (it
///   detached, and the VIP was refused).
#[test]
fn reloads_and_an_unanswering_daemon_never_leave_a_route_without_forwarding() {
    let _g = serial();
    let mut lab = lab("r", 2);
    for i in 1..=2 {
        lab.start_ecmp_agent(i, &config(i)).expect("agent");
    }
    lab.wait_next_hops(VIP, &[1, 2], ROUTE_WAIT)
        .expect("VIP routed");

    // lb_bgp removed from director 1: its routes go; back: they return.
    reload(&lab, 1, &config_with(""));
    lab.wait_next_hops(VIP, &[2], ROUTE_WAIT)
        .expect("withdrawn when lb_bgp is removed");
    lab.wait_next_hops(VIP2, &[2], ROUTE_WAIT)
        .expect("VIP2 withdrawn too");
    assert_eq!(bgp_view(&lab, 1)["configured"], false);
    let sock = lab.socket_of("dir1").to_string_lossy().into_owned();
    let e = lab
        .lb(&["bgp", "drain", "--socket", &sock])
        .expect_err("drain without lb_bgp");
    assert!(e.to_string().contains("no lb_bgp block"), "{e:#}");
    reload(&lab, 1, &config(1));
    lab.wait_next_hops(VIP, &[1, 2], ROUTE_WAIT)
        .expect("announced again");

    // Another neighbor: the router's session with director 1 ends (the
    // peer lb added is deleted), its routes with it.
    let other = config(1).replace(
        &format!("neighbor {} ", ecmp::ROUTER_IP),
        "neighbor 10.200.0.253 ",
    );
    reload(&lab, 1, &other);
    lab.wait_next_hops(VIP, &[2], ROUTE_WAIT)
        .expect("the old peer deleted");
    let peers = bgp_view(&lab, 1)["peers"].clone();
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["address"] != ecmp::ROUTER_IP),
        "{peers:#}"
    );
    reload(&lab, 1, &config(1));
    lab.wait_next_hops(VIP, &[1, 2], ROUTE_WAIT)
        .expect("peered again");

    // gobgpd frozen: nothing vouched for.
    lab.signal("dir1", "gobgpd", libc::SIGSTOP)
        .expect("SIGSTOP");
    let t0 = Instant::now();
    let v = loop {
        let v = bgp_view(&lab, 1);
        if v["daemon_up"] == false {
            break v;
        }
        assert!(t0.elapsed() < ROUTE_WAIT, "{v:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(v["peers"][0]["state"], "unknown", "{v:#}");
    assert_eq!(v["peers"][0]["up"], false, "{v:#}");
    assert_eq!(vip_entry(&v, VIP)["announced"], false, "{v:#}");

    // SIGTERM while frozen: the stop cannot confirm the withdrawal and
    // leaves XDP attached.
    lab.signal("dir1", "lb", libc::SIGTERM).expect("SIGTERM");
    let t0 = Instant::now();
    while !lab
        .log("dir1", "lb")
        .contains("leaving XDP and tc attached")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{}",
            lab.log("dir1", "lb")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = lab.log("dir1", "lb");
    assert!(log.contains("did not confirm the withdrawal"), "{log}");
    lab.stop("dir1", "lb").expect("reaped");
    // The router's hold time (3 s) drops the frozen director meanwhile.
    lab.wait_next_hops(VIP, &[2], ROUTE_WAIT)
        .expect("frozen director dropped by the hold time");
    // gobgpd wakes up with its paths: the route returns to director 1,
    // whose XDP still forwards.
    lab.signal("dir1", "gobgpd", libc::SIGCONT)
        .expect("SIGCONT");
    lab.wait_next_hops(VIP, &[1, 2], ROUTE_WAIT)
        .expect("gobgpd's paths back");
    all_answered(&lab, VIP, 30);
}
