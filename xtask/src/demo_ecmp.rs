//! `cargo xtask demo --ecmp`: the scale-out lab (`lb_tests::ecmp`). A
//! client behind a router running BIRD 2 with ECMP, three directors each
//! running lb and its own gobgpd, announcing an `mh` DR service of two
//! checked reals. Shows the router's route with its three next hops and
//! BIRD's sessions, the spread of 60 keep-alive connections over the
//! directors (each director's connection table), then a director loss
//! (SIGKILL of dir3's lb and gobgpd): the route shrinking to two next hops,
//! dir3's connections picked up by the others on the same reals, and what
//! the client saw (resets, changed reals). Everything is removed at the end
//! and on Ctrl-C.
use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::bail;
use lb_tests::{
    ecmp::{self, bgp_block, director, director_ip, Tracked, VIP},
    real_ip, Bins, Lab,
};

/// Keep-alive connections held through the director loss.
const CONNECTIONS: usize = 60;
/// How long they are held (s): the spread, the loss, the route change and
/// a few seconds of requests after it.
const HOLD_SECONDS: f64 = 16.0;
/// Gap between two requests on one connection (ms).
const GAP_MS: u64 = 200;
/// SIGKILL on Linux (xtask has no libc dependency of its own).
const SIGKILL: i32 = 9;
/// Generous: BGP sessions start within seconds, a loaded machine is slow.
const ROUTE_WAIT: Duration = Duration::from_secs(60);

/// Director `i`'s keepalived.conf: its `lb_bgp` block and the service.
fn config(i: usize) -> String {
    let check = "    TCP_CHECK {\n      connect_port 80\n      connect_timeout 1\n      delay_loop 1\n      retry 1\n    }\n";
    format!(
        "! cargo xtask demo --ecmp: director dir{i}, one of three behind an ECMP router\n\
         {bgp}\
         virtual_server {VIP} 80 {{\n  lb_algo mh\n  mh-port\n  lb_kind DR\n  protocol TCP\n\
         \x20 real_server {r1} 80 {{\n    weight 1\n{check}  }}\n\
         \x20 real_server {r2} 80 {{\n    weight 1\n{check}  }}\n}}\n",
        bgp = bgp_block(i, "    poll_interval 0.5\n    withdraw_grace 1\n"),
        r1 = real_ip(1),
        r2 = real_ip(2),
    )
}

/// Fails with "interrupted" once Ctrl-C was pressed.
fn check(stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, in steps that notice Ctrl-C.
fn sleep(d: Duration, stop: &AtomicBool) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check(stop)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The router's kernel route to the VIP and BIRD's view of each director.
fn show_router(lab: &Lab, directors: usize) -> anyhow::Result<()> {
    let route = lab.exec("rt", &["ip", "route", "show", &format!("{VIP}/32")])?;
    println!("$ ip route show {VIP}/32   (in lbdemo-rt)");
    print!("{}", String::from_utf8_lossy(&route.stdout));
    println!("BGP sessions of the router (BIRD 2, birdc show protocols):");
    for i in 1..=directors {
        println!("  d{i}  {:<15} {}", director_ip(i), lab.bird_session(i)?);
    }
    Ok(())
}

/// "r1 12, r2 8" from the reals of `flows`.
fn by_real<'a>(flows: impl Iterator<Item = &'a Tracked>) -> String {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for t in flows {
        *n.entry(t.real.as_str()).or_default() += 1;
    }
    n.iter()
        .map(|(r, c)| format!("{r} {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where each connection from the client is, by client port: (director,
/// its entry). A flow tracked by several directors (the router moved it)
/// is on the one whose entry has the most time left, as every packet
/// refreshes it; the others are stale. Prints a table per director
/// (connections by real, stale entries); returns the connections.
fn show_spread(lab: &Lab, directors: &[usize]) -> anyhow::Result<BTreeMap<u16, (usize, Tracked)>> {
    let tables: Vec<(usize, BTreeMap<u16, Tracked>)> = directors
        .iter()
        .map(|&i| Ok((i, lab.director_flows(i, VIP, 80)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut now: BTreeMap<u16, (usize, Tracked)> = BTreeMap::new();
    for (i, table) in &tables {
        for (port, t) in table {
            if now.get(port).is_none_or(|(_, o)| t.expire_s > o.expire_s) {
                now.insert(*port, (*i, t.clone()));
            }
        }
    }
    let tracked: usize = tables.iter().map(|(_, t)| t.len()).sum();
    println!(
        "  director  address         connections  to the reals                    stale entries"
    );
    for (i, table) in &tables {
        let here: Vec<&Tracked> = now
            .values()
            .filter(|(d, _)| d == i)
            .map(|(_, t)| t)
            .collect();
        println!(
            "  {:<9} {:<15} {:>11}  {:<31} {:>13}",
            director(*i),
            director_ip(*i),
            here.len(),
            by_real(here.iter().copied()),
            table.len() - here.len()
        );
    }
    let states: Vec<&str> = now
        .values()
        .map(|(_, t)| t.state.as_str())
        .filter(|s| *s != "ESTABLISHED")
        .collect();
    println!(
        "  {} connections, {} entries in all{}",
        now.len(),
        tracked,
        if states.is_empty() {
            ", every one ESTABLISHED".to_string()
        } else {
            format!(", {} not ESTABLISHED: {states:?}", states.len())
        }
    );
    Ok(now)
}

/// The demo; `bins` are the release binaries.
pub fn run(bins: Bins, stop: &AtomicBool) -> anyhow::Result<()> {
    println!(
        "== building the lab: namespaces lbdemo-{{sw,rt,cl,dir1,dir2,dir3,r1,r2}}; the client {} \
         behind the router {} (BIRD 2, ECMP); VIP {VIP} reached only through the routes the \
         directors announce",
        ecmp::CLIENT_IP,
        ecmp::ROUTER_IP
    );
    let mut lab = Lab::ecmp("lbdemo", bins, 3, 2)?;
    println!(
        "== keepalived.conf on lbdemo-dir1 (dir2, dir3: the same with next_hop {}, {}):\n{}",
        director_ip(2),
        director_ip(3),
        config(1)
    );
    for i in 1..=3 {
        check(stop)?;
        lab.start_ecmp_agent(i, &config(i))?;
        println!(
            "== lb running on lbdemo-{} (XDP on eth0), gobgpd beside it",
            director(i)
        );
    }
    let took = lab.wait_next_hops(VIP, &[1, 2, 3], ROUTE_WAIT)?;
    println!(
        "\n== the router has the VIP through all three directors ({took:.1?} after the last agent started):"
    );
    show_router(&lab, 3)?;

    check(stop)?;
    println!(
        "\n== {CONNECTIONS} keep-alive HTTP connections from the client (nsprobe hold-many: \
         a request on each every {GAP_MS} ms for {HOLD_SECONDS:.0} s)"
    );
    let held = lab.hold_many(&format!("{VIP}:80"), CONNECTIONS, HOLD_SECONDS, GAP_MS)?;
    sleep(Duration::from_secs(3), stop)?;
    println!("== the spread: each director's connection table (lb list -c --json):");
    let before = show_spread(&lab, &[1, 2, 3])?;

    check(stop)?;
    println!("\n== director loss: SIGKILL of lb and gobgpd on lbdemo-dir3");
    lab.signal("dir3", "lb", SIGKILL)?;
    lab.signal("dir3", "gobgpd", SIGKILL)?;
    let took = lab.wait_next_hops(VIP, &[1, 2], ROUTE_WAIT)?;
    println!(
        "== the router dropped dir3's next hop {took:.1?} later (gobgpd's end closed the BGP session):"
    );
    show_router(&lab, 3)?;
    sleep(Duration::from_secs(2), stop)?;
    println!(
        "\n== the connection tables after the loss (entries the router moved away are stale):"
    );
    let after = show_spread(&lab, &[1, 2])?;
    // Per connection: where it was, where it is, on which real.
    let (mut from3, mut from3_same, mut moved, mut moved_same, mut same_real) = (0, 0, 0, 0, 0);
    for (port, (was_on, was)) in &before {
        let Some((is_on, is)) = after.get(port) else {
            continue;
        };
        let same = was.real == is.real;
        same_real += usize::from(same);
        if *was_on == 3 {
            from3 += 1;
            from3_same += usize::from(same);
        } else if was_on != is_on {
            moved += 1;
            moved_same += usize::from(same);
        }
    }
    let on3 = before.values().filter(|(d, _)| *d == 3).count();
    println!(
        "  dir3's {on3} connections: {from3} now on dir1 / dir2, {from3_same} of them on the same real"
    );
    println!(
        "  dir1's and dir2's: {moved} moved between them too (the router's ECMP splits the hash \
         range by next hop, and a next hop less shifts the ranges), {moved_same} of them on the same real"
    );
    println!(
        "  {same_real} of {} connections on the real they started on",
        before.len()
    );

    println!("\n== waiting for the connections' last requests");
    let summary = held.finish()?;
    println!(
        "== what the client saw (nsprobe hold-many): {} connections, {} requests, \
         resets {}, changed {}, failed {} (a request unanswered for 1 s, answered later)",
        summary.connections, summary.requests, summary.resets, summary.changed, summary.failed
    );
    if !summary.errors.trim().is_empty() {
        print!("{}", summary.errors);
    }

    let sock = lab.socket_of("dir1").to_string_lossy().into_owned();
    println!("\n== lb list --bgp on lbdemo-dir1 (a survivor):");
    print!("{}", lab.lb(&["list", "--bgp", "--socket", &sock])?);
    println!("\n== removing the lab");
    drop(lab);
    if summary.resets > 0 || summary.changed > 0 {
        bail!(
            "{} connection(s) reset, {} answer(s) from another real",
            summary.resets,
            summary.changed
        );
    }
    Ok(())
}
