//! End to end in network namespaces: ipvs's connection thresholds with
//! real TCP connections. A real holding `uthreshold` connections gets no
//! new one; once they are closed (and the agent's sweep has released them)
//! it takes new connections again. Needs root.
use std::time::{Duration, Instant};

use lb_tests::{real_ip, Bins, Lab, AGENT_ARGS, VIP};

fn vip80() -> String {
    format!("{VIP}:80")
}

#[test]
fn a_real_at_its_upper_threshold_gets_no_new_connection_until_they_close() {
    let _g = lb_tests::serial();
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    let mut lab = Lab::dr(&format!("lbth{}", std::process::id() % 1000), bins, 2).expect("lab");
    // fo sends every new connection to the heaviest real, r1, unless it is
    // overloaded: then to r2.
    let conf = format!(
        "virtual_server {VIP} 80 {{\n  lb_algo fo\n  lb_kind DR\n  protocol TCP\n  \
         real_server {} 80 {{\n    weight 3\n    uthreshold 2\n  }}\n  \
         real_server {} 80 {{ weight 1 }}\n}}\n",
        real_ip(1),
        real_ip(2)
    );
    // Closed connections (FIN_WAIT) count until their 1 s timeout, then the
    // sweep (every 2 s) releases them.
    let mut args = AGENT_ARGS.to_vec();
    args.extend(["--tcpfin-timeout", "1"]);
    lab.start_agent(&conf, &args).unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut h = lab.hold(&vip80()).unwrap();
        // A second request establishes the flow in the director's table.
        assert_eq!(h.request().unwrap(), h.first);
        held.push(h);
    }
    let firsts: Vec<&str> = held.iter().map(|h| h.first.as_str()).collect();
    assert_eq!(firsts, ["r1", "r1", "r2", "r2"]);
    // Still overloaded: short connections go to r2 as well; the held ones
    // keep their reals.
    let t = lab.http_get(&vip80(), 5).unwrap();
    assert_eq!(t.get("r2"), Some(&5), "{t:?}");
    for h in held.iter_mut() {
        let first = h.first.clone();
        assert_eq!(h.request().unwrap(), first);
    }
    // Close r1's two connections: below 3/4 × 2 once released.
    held.retain(|h| h.first != "r1");
    let start = Instant::now();
    loop {
        let t = lab.http_get(&vip80(), 1).unwrap();
        if t.get("r1") == Some(&1) {
            break;
        }
        assert_eq!(t.get("r2"), Some(&1), "{t:?}");
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "r1 took no new connection after its connections closed"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // r2's held connections are untouched.
    for h in held.iter_mut() {
        assert_eq!(h.request().unwrap(), "r2");
    }
}

/// `LB_REALS` grew with the thresholds: a map of the old size pinned by an
/// earlier lb is refused at start with a message naming it (aya would reuse
/// it, and the kernel would refuse the program with a verifier error).
#[test]
fn a_pinned_map_of_another_size_is_refused_by_name() {
    let _g = lb_tests::serial();
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    let mut lab = Lab::dr(&format!("lbtp{}", std::process::id() % 1000), bins, 1).expect("lab");
    let dir = lab.bpffs();
    std::fs::create_dir_all(&dir).unwrap();
    let pin = dir.join("LB_REALS");
    let st = std::process::Command::new("bpftool")
        .args(["map", "create", &pin.to_string_lossy()])
        .args([
            "type", "array", "key", "4", "value", "72", "entries", "16384",
        ])
        .args(["name", "LB_REALS"])
        .status()
        .expect("bpftool");
    assert!(st.success());
    let conf = format!(
        "virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server {} 80 {{ weight 1 }}\n}}\n",
        real_ip(1)
    );
    assert!(lab.start_agent(&conf, AGENT_ARGS).is_err(), "agent started");
    let start = Instant::now();
    let want = format!(
        "pinned map {} holds values of 72 bytes where this lb needs 80",
        pin.display()
    );
    while !lab.log("dir", "lb").contains(&want) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            lab.log("dir", "lb")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(&pin);
}
