//! Persistence and health end to end (issue 15): with
//! `persistence_timeout` + `inhibit_on_failure`, a persistent client whose
//! real fails its check is scheduled to a live real on its next connection
//! (ipvs with `expire_quiescent_template`), where before every new
//! connection went to the dead real and refreshed the template. A real
//! drained to weight 0 by the operator keeps its persistent client (ipvs's
//! default). Needs root; tests run one at a time.
use std::time::{Duration, Instant};

use lb_tests::{real_ip, Bins, Lab, AGENT_ARGS, VIP};

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(&format!("lbp{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// Two reals with a TCP check on port 8080 (1 s / retry 1 / 1 s),
/// persistent for 60 s, inhibit_on_failure.
fn service() -> String {
    let check = "TCP_CHECK {\n      connect_port 8080\n      connect_timeout 1\n      retry 1\n      delay_before_retry 1\n    }";
    format!(
        "virtual_server {VIP} 80 {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  \
         persistence_timeout 60\n\
           real_server {r1} 80 {{\n    weight 1\n    inhibit_on_failure\n    {check}\n  }}\n\
           real_server {r2} 80 {{\n    weight 1\n    inhibit_on_failure\n    {check}\n  }}\n}}\n",
        r1 = real_ip(1),
        r2 = real_ip(2),
    )
}

fn list(lab: &Lab) -> String {
    let bpffs = lab.bpffs().to_string_lossy().into_owned();
    lab.lb(&["list", "--bpffs", &bpffs]).unwrap()
}

/// Waits until real `name` (`r1`, `r2`) is listed with weight `w`.
fn wait_weight(lab: &Lab, name: &str, w: u32, limit: Duration) {
    let i: usize = name[1..].parse().unwrap();
    let row = format!("{}:80", real_ip(i));
    let want = w.to_string();
    let start = Instant::now();
    loop {
        let l = list(lab);
        if l.lines()
            .find(|x| x.contains(&row))
            .is_some_and(|x| x.split_whitespace().nth(3) == Some(want.as_str()))
        {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{name} weight {w}: not within {limit:?}\n{l}\n{}",
            lab.log("dir", "lb")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request on a new connection from the client: the real that answered.
fn one(lab: &Lab) -> String {
    let t = lab.http_get(&format!("{VIP}:80"), 1).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "request failed: {t:?}");
    t.into_iter()
        .find(|(k, _)| k != "fail")
        .map(|(k, _)| k)
        .expect("an answer")
}

/// `n` new connections 0.5 s apart: the reals that answered.
fn retries(lab: &Lab, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(500));
            one(lab)
        })
        .collect()
}

fn other(r: &str) -> &'static str {
    if r == "r1" {
        "r2"
    } else {
        "r1"
    }
}

#[test]
fn a_persistent_client_leaves_a_real_that_failed_its_check() {
    let _g = lb_tests::serial();
    let mut lab = lab("inh");
    lab.start_agent(&service(), AGENT_ARGS).unwrap();
    wait_weight(&lab, "r1", 1, Duration::from_secs(5));
    wait_weight(&lab, "r2", 1, Duration::from_secs(5));
    lab.wait_resolved(Duration::from_secs(5)).unwrap();
    let first = one(&lab);
    assert_eq!(
        retries(&lab, 2),
        [first.clone(), first.clone()],
        "persistent"
    );
    // The client's real dies: its checked port and its service stop.
    lab.stop(&first, "httpd8080").unwrap();
    lab.stop(&first, "httpd80").unwrap();
    wait_weight(&lab, &first, 0, Duration::from_secs(6));
    // Every new connection of the client reaches the live real.
    let live = other(&first);
    assert_eq!(retries(&lab, 6), vec![live.to_owned(); 6]);
}

#[test]
fn a_persistent_client_stays_on_a_drained_real() {
    let _g = lb_tests::serial();
    let mut lab = lab("drn");
    lab.start_agent(&service(), AGENT_ARGS).unwrap();
    wait_weight(&lab, "r1", 1, Duration::from_secs(5));
    wait_weight(&lab, "r2", 1, Duration::from_secs(5));
    lab.wait_resolved(Duration::from_secs(5)).unwrap();
    let first = one(&lab);
    let i: usize = first[1..].parse().unwrap();
    let (code, out, err) = lab
        .adm(
            "dir",
            &[
                "-e",
                "-t",
                &format!("{VIP}:80"),
                "-r",
                &format!("{}:80", real_ip(i)),
                "-g",
                "-w",
                "0",
            ],
            "",
        )
        .unwrap();
    assert_eq!(code, 0, "lb adm -e: {out}{err}");
    wait_weight(&lab, &first, 0, Duration::from_secs(5));
    // ipvs's default: the template holds for the drained real.
    assert_eq!(retries(&lab, 4), vec![first.clone(); 4]);
}
