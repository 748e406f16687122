//! End to end in network namespaces: schedulers with real TCP traffic —
//! lc follows open connections, sh keeps a client on one real, mh keeps the
//! flows of the remaining reals when one is removed. Needs root.
use std::time::Duration;

use lb_tests::{real_ip, Bins, Lab, AGENT_ARGS, VIP};

fn lab(name: &str, reals: usize) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(
        &format!("lbs{}{name}", std::process::id() % 1000),
        bins,
        reals,
    )
    .expect("lab")
}

fn service(algo: &str, reals: usize, extra: &str) -> String {
    let mut s = format!(
        "virtual_server {VIP} 80 {{\n  lb_algo {algo}\n  lb_kind DR\n  protocol TCP\n  {extra}\n"
    );
    for i in 1..=reals {
        s += &format!("  real_server {} 80 {{ weight 1 }}\n", real_ip(i));
    }
    s + "}\n"
}

fn vip80() -> String {
    format!("{VIP}:80")
}

#[test]
fn lc_sends_new_connections_to_the_real_with_fewer_open_ones() {
    let _g = lb_tests::serial();
    let mut lab = lab("lc", 2);
    lab.start_agent(&service("lc", 2, ""), AGENT_ARGS).unwrap();
    // Three long-lived connections: lc gives r1, r2, then r1 (tie → first).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut h = lab.hold(&vip80()).unwrap();
        // A second request establishes the flow in the director's table.
        let again = h.request().unwrap();
        assert_eq!(again, h.first);
        held.push(h);
    }
    let firsts: Vec<&str> = held.iter().map(|h| h.first.as_str()).collect();
    assert_eq!(firsts, ["r1", "r2", "r1"]);
    // r1 has two active connections, r2 one: every short connection (each
    // closed again: inactive) goes to r2 while 256 + inactive < 512.
    let t = lab.http_get(&vip80(), 20).unwrap();
    assert_eq!(t.get("r2"), Some(&20), "{t:?}");
    let bpffs = lab.bpffs().to_string_lossy().into_owned();
    let list = lab.lb(&["list", "--bpffs", &bpffs]).unwrap();
    let row = |ip: String| -> Vec<String> {
        list.lines()
            .find(|l| l.contains(&format!("{ip}:80")))
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    // ActiveConn as ipvsadm shows it.
    assert_eq!(row(real_ip(1))[4], "2", "{list}");
    assert_eq!(row(real_ip(2))[4], "1", "{list}");
}

#[test]
fn sh_keeps_a_client_on_one_real() {
    let _g = lb_tests::serial();
    let mut lab = lab("sh", 2);
    lab.start_agent(&service("sh", 2, ""), AGENT_ARGS).unwrap();
    let t = lab.http_get(&vip80(), 30).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    assert!(
        t.get("r1") == Some(&30) || t.get("r2") == Some(&30),
        "{t:?}"
    );
}

#[test]
fn mh_removing_a_real_moves_only_its_flows() {
    let _g = lb_tests::serial();
    let mut lab = lab("mh", 3);
    lab.start_agent(&service("mh", 3, "mh-port"), AGENT_ARGS)
        .unwrap();
    // mh-port: one client's connections spread over the reals by port.
    let t = lab.http_get(&vip80(), 60).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    assert!(t.len() >= 3, "connections spread over the reals: {t:?}");
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(lab.hold(&vip80()).unwrap());
    }
    assert!(
        held.iter().any(|h| h.first != "r3"),
        "some connection on r1/r2"
    );
    // Remove r3.
    lab.write_config(&service("mh", 2, "mh-port")).unwrap();
    lab.signal("dir", "lb", libc::SIGHUP).unwrap();
    let start = std::time::Instant::now();
    while !lab.log("dir", "lb").contains("configuration reloaded") {
        assert!(start.elapsed() < Duration::from_secs(5), "no reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every connection of r1 and r2 stays where it was.
    for h in held.iter_mut().filter(|h| h.first != "r3") {
        let first = h.first.clone();
        assert_eq!(h.request().unwrap(), first);
    }
    // New connections only reach the remaining reals.
    let t = lab.http_get(&vip80(), 30).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    assert_eq!(t.get("r3"), None, "{t:?}");
}
