//! End to end in network namespaces: schedulers with real TCP traffic —
//! lc follows open connections, sh keeps a client on one real, mh keeps the
//! flows of the remaining reals when one is removed; rr keeps one order
//! whatever CPU connections arrive on. Needs root.
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

/// New connections per CPU of service slot `svc` (`conns` of the per-CPU
/// `LB_SVC_STATS`, as bpftool prints it with the map's BTF).
fn conns_per_cpu(lab: &Lab, svc: u32) -> Vec<(u64, u64)> {
    let path = lab.bpffs().join("LB_SVC_STATS");
    let out = lb_tests::run(&[
        "bpftool",
        "-j",
        "map",
        "lookup",
        "pinned",
        &path.to_string_lossy(),
        "key",
        &svc.to_string(),
        "0",
        "0",
        "0",
    ])
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = v.get("formatted").unwrap_or(&v);
    f["values"]
        .as_array()
        .unwrap_or_else(|| panic!("per-CPU values in {v}"))
        .iter()
        .map(|c| {
            (
                c["cpu"].as_u64().unwrap(),
                c["value"]["conns"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn rr_splits_connections_arriving_on_alternate_cpus_in_one_order() {
    // Issue 15: one rr order per service on any number of CPUs. The client
    // moves to CPU 0 and CPU 1 in turn before each connection; the
    // director's XDP runs in the softirq of the sending CPU (veth), so the
    // SYNs arrive on alternate CPUs (checked with the per-CPU counters).
    // One cursor per CPU gave r1 r1 r2 r2 ...; the shared cursor r1 r2 r1 r2.
    let _g = lb_tests::serial();
    let mut lab = lab("cpu", 2);
    lab.start_agent(&service("rr", 2, ""), AGENT_ARGS).unwrap();
    lab.wait_resolved(Duration::from_secs(5)).unwrap();
    let before = conns_per_cpu(&lab, 0);
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    let out = lab
        .exec("cl", &[&probe, "get-on-cpus", &vip80(), "100", "0,1"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let seq: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    let want: Vec<&str> = (0..100)
        .map(|i| if i % 2 == 0 { "r1" } else { "r2" })
        .collect();
    // The first connection may go to either real (the cursor's start is
    // not what is tested): from then on they alternate.
    let flip = seq.first() == Some(&"r2");
    let want: Vec<&str> = want
        .iter()
        .map(|&r| {
            if flip {
                if r == "r1" {
                    "r2"
                } else {
                    "r1"
                }
            } else {
                r
            }
        })
        .collect();
    assert_eq!(seq, want, "{text}");
    assert_eq!(seq.iter().filter(|&&r| r == "r1").count(), 50);
    let after = conns_per_cpu(&lab, 0);
    let arrived: Vec<u64> = after
        .iter()
        .zip(&before)
        .map(|((_, a), (_, b))| a - b)
        .collect();
    eprintln!("new connections per CPU: {arrived:?}");
    // The test's premise: connections arrived on both CPUs. Mostly on the
    // client's pinned CPU, but not always exactly (a SYN can be processed
    // from another CPU's softirq, e.g. after a retransmission timer), so a
    // share is required, not 50 / 50; the order above is what is exact.
    assert_eq!(arrived[..2].iter().sum::<u64>(), 100, "{arrived:?}");
    assert!(
        arrived[..2].iter().all(|&n| n >= 25),
        "connections did not arrive on both CPUs: {arrived:?}"
    );
}

/// An lb from before the shared cursor pinned `LB_CURSORS` as a per-CPU
/// array of 4-byte positions: the agent replaces that pin (it holds only
/// where the ring walks stand), says so, and rr works with the new map.
/// Global counters of an older layout (fewer counters) are replaced the
/// same way instead of refusing the start.
#[test]
fn an_old_per_cpu_cursor_pin_is_replaced_at_start() {
    let _g = lb_tests::serial();
    let mut lab = lab("pin", 2);
    let dir = lab.bpffs();
    std::fs::create_dir_all(&dir).unwrap();
    // Per-CPU arrays as an older lb pinned them: 4-byte cursors, 29 counters.
    let pin_old = |name: &str, value: usize, entries: u32| {
        let path = dir.join(name);
        let st = std::process::Command::new("bpftool")
            .args(["map", "create", &path.to_string_lossy()])
            .args(["type", "percpu_array", "key", "4"])
            .args(["value", &value.to_string(), "entries", &entries.to_string()])
            .args(["name", name])
            .status()
            .expect("bpftool");
        assert!(st.success(), "bpftool map create {name}");
        path
    };
    let pin = pin_old("LB_CURSORS", 4, 1024);
    pin_old("LB_GLOBAL_STATS", 29 * 8, 1);
    lab.start_agent(&service("rr", 2, ""), AGENT_ARGS).unwrap();
    lab.wait_resolved(Duration::from_secs(5)).unwrap();
    let log = lab.log("dir", "lb");
    assert!(
        log.contains("pinned map of an older lb replaced: rr / wrr restart"),
        "{log}"
    );
    assert!(
        log.contains("pinned map of an older lb replaced: the global counters"),
        "{log}"
    );
    let out = lb_tests::run(&[
        "bpftool",
        "-j",
        "map",
        "show",
        "pinned",
        &pin.to_string_lossy(),
    ])
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["bytes_value"].as_u64()),
        (Some("array"), Some(8)),
        "{v}"
    );
    let t = lab.http_get(&vip80(), 10).unwrap();
    assert_eq!((t.get("r1"), t.get("r2")), (Some(&5), Some(&5)), "{t:?}");
}
