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

use std::time::Duration;

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

/// Director `i`'s configuration: `VIP:80` on both reals (checked on port
/// 80), `VIP2:80` on r2 alone, checked on port 8080 (its health is
/// switched by stopping r2's server on 8080).
fn config(i: usize) -> String {
    let check = |port: u16| {
        format!(
            "    TCP_CHECK {{\n      connect_port {port}\n      connect_timeout 1\n      delay_loop 1\n      retry 1\n    }}\n"
        )
    };
    format!(
        "{bgp}\
         virtual_server {VIP} 80 {{\n  lb_algo mh\n  lb_kind DR\n  protocol TCP\n\
           real_server {r1} 80 {{\n    weight 1\n{c80}  }}\n\
           real_server {r2} 80 {{\n    weight 1\n{c80}  }}\n}}\n\
         virtual_server {VIP2} 80 {{\n  lb_algo mh\n  lb_kind DR\n  protocol TCP\n\
           real_server {r2} 80 {{\n    weight 1\n{c8080}  }}\n}}\n",
        bgp = bgp_block(i, "    poll_interval 0.5\n    withdraw_grace 1\n"),
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
    let start = std::time::Instant::now();
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
