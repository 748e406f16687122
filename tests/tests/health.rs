//! Health checking end to end in network namespaces: a real whose check
//! fails leaves the table and gets no new traffic; when it passes again it
//! comes back. Detection times are printed next to what keepalived's timing
//! implies. Needs root; tests run one at a time.
use std::time::{Duration, Instant};

use lb_tests::{real_ip, Bins, Lab, AGENT_ARGS, VIP};

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(&format!("lbh{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// Two reals, each with `check` (`{port}` is replaced by nothing: the check
/// text names its own port), timing 1 s / retry 1 / 1 s.
fn service(check1: &str, check2: &str, extra: &str) -> String {
    format!(
        "virtual_server {VIP} 80 {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  {extra}\n\
           real_server {r1} 80 {{\n    weight 1\n    {check1}\n  }}\n\
           real_server {r2} 80 {{\n    weight 1\n    {check2}\n  }}\n}}\n",
        r1 = real_ip(1),
        r2 = real_ip(2),
    )
}

const TIMING: &str = "connect_timeout 1\n      retry 1\n      delay_before_retry 1";

fn tcp_check(port: u16) -> String {
    format!("TCP_CHECK {{\n      connect_port {port}\n      {TIMING}\n    }}")
}

fn list(lab: &Lab) -> String {
    let bpffs = lab.bpffs().to_string_lossy().into_owned();
    lab.lb(&["list", "--bpffs", &bpffs]).unwrap()
}

fn checks(lab: &Lab) -> String {
    let sock = lab.socket().to_string_lossy().into_owned();
    lab.lb(&["list", "--checks", "--socket", &sock]).unwrap()
}

/// Waits until `lb list` satisfies `cond`; returns how long it took.
fn wait_list(lab: &Lab, what: &str, limit: Duration, cond: impl Fn(&str) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let l = list(lab);
        if cond(&l) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}\n{l}\n{}\n{}",
            checks(lab),
            lab.log("dir", "lb")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until real `i` is listed with weight `w`; returns how long it took.
fn wait_weight(lab: &Lab, i: usize, w: u32, limit: Duration) -> Duration {
    let row = format!("{}:80", real_ip(i));
    let want = w.to_string();
    wait_list(lab, &format!("r{i} weight {w}"), limit, |l| {
        l.lines()
            .find(|x| x.contains(&row))
            .is_some_and(|x| x.split_whitespace().nth(3) == Some(want.as_str()))
    })
}

fn has_real(l: &str, i: usize) -> bool {
    l.contains(&format!("{}:80", real_ip(i)))
}

#[test]
fn tcp_check_removes_a_stopped_server_and_brings_it_back() {
    let _g = lb_tests::serial();
    let mut lab = lab("tcp");
    lab.start_agent(&service(&tcp_check(8080), &tcp_check(8080), ""), AGENT_ARGS)
        .unwrap();
    wait_list(&lab, "both reals listed", Duration::from_secs(5), |l| {
        has_real(l, 1) && has_real(l, 2)
    });
    // Stop r2's checked service: after the failure and one retry 1 s later
    // it is removed. keepalived's timing: ≤ delay_loop (1) + retry × delay_before_retry (1) = 2 s.
    lab.stop("r2", "httpd8080").unwrap();
    // Requests keep flowing while the check detects the failure: none may
    // fail (r2's web server on port 80 still answers until it is removed).
    let start = Instant::now();
    let mut sent = 0;
    let mut failed = 0;
    while has_real(&list(&lab), 2) {
        assert!(start.elapsed() < Duration::from_secs(6), "r2 not removed");
        let t = lab.http_get(&format!("{VIP}:80"), 2).unwrap();
        sent += 2;
        failed += t.get("fail").copied().unwrap_or(0);
    }
    let took = start.elapsed();
    eprintln!(
        "TCP_CHECK down detected in {took:?} (keepalived timing: at most 2 s + probe); \
         {failed} of {sent} requests failed during the change"
    );
    assert_eq!(failed, 0);
    let c = checks(&lab);
    assert!(c.contains("DOWN") && c.contains("failed: connect"), "{c}");
    let t = lab.http_get(&format!("{VIP}:80"), 20).unwrap();
    assert_eq!(t.get("r1"), Some(&20), "all new requests to r1: {t:?}");
    // Start it again: back after its next successful probe (≤ delay_loop).
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    lab.spawn("r2", &[&probe, "serve", "8080", "r2"], "httpd8080")
        .unwrap();
    let took = wait_list(&lab, "r2 back", Duration::from_secs(5), |l| has_real(l, 2));
    eprintln!("TCP_CHECK up detected in {took:?} (keepalived timing: at most 1 s + probe)");
    let t = lab.http_get(&format!("{VIP}:80"), 20).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    assert!(t.get("r2").copied().unwrap_or(0) > 0, "{t:?}");
}

#[test]
fn http_get_follows_the_status_code_and_inhibit_keeps_weight_zero() {
    let _g = lb_tests::serial();
    let mut lab = lab("http");
    let status = lab.workdir.join("r2.status");
    std::fs::write(&status, "200").unwrap();
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    let st = status.to_string_lossy().into_owned();
    lab.spawn("r2", &[&probe, "serve", "8081", "r2", &st], "httpd8081")
        .unwrap();
    lab.spawn("r1", &[&probe, "serve", "8081", "r1"], "httpd8081")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let http = format!(
        "HTTP_GET {{\n      url {{\n        path /health\n        status_code 200\n      }}\n      connect_port 8081\n      {TIMING}\n    }}"
    );
    lab.start_agent(&service(&http, &http, "inhibit_on_failure"), AGENT_ARGS)
        .unwrap();
    wait_list(&lab, "both up", Duration::from_secs(5), |l| {
        has_real(l, 1) && has_real(l, 2)
    });
    // 500: down; with inhibit_on_failure it stays listed with weight 0.
    std::fs::write(&status, "500").unwrap();
    let took = wait_weight(&lab, 2, 0, Duration::from_secs(6));
    eprintln!("HTTP_GET 500 detected in {took:?} (keepalived timing: at most 2 s + probe)");
    assert!(checks(&lab).contains("status 500"));
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("r1"), Some(&10), "{t:?}");
    std::fs::write(&status, "200").unwrap();
    wait_weight(&lab, 2, 1, Duration::from_secs(5));
}

#[test]
fn misc_check_dynamic_weight_and_alpha() {
    let _g = lb_tests::serial();
    let mut lab = lab("misc");
    // The check program is the operator's: here a shell that exits with the
    // code written in a file (the agent runs it without a shell of its own).
    let code = lab.workdir.join("r2.code");
    std::fs::write(&code, "1").unwrap();
    let misc = format!(
        "MISC_CHECK {{\n      misc_path \"/bin/sh -c 'exit $(cat {})'\"\n      misc_timeout 2\n      misc_dynamic\n    }}",
        code.display()
    );
    // alpha: r2 starts down and stays down while its check fails.
    lab.start_agent(&service(&tcp_check(8080), &misc, "alpha"), AGENT_ARGS)
        .unwrap();
    wait_list(&lab, "r1 up", Duration::from_secs(5), |l| has_real(l, 1));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!has_real(&list(&lab), 2), "alpha: r2 down until it passes");
    // Exit 5 with misc_dynamic: up with weight 5 - 2 = 3.
    std::fs::write(&code, "5").unwrap();
    wait_weight(&lab, 2, 3, Duration::from_secs(5));
    // Exit 0: up with the configured weight.
    std::fs::write(&code, "0").unwrap();
    wait_weight(&lab, 2, 1, Duration::from_secs(5));
}

#[test]
fn sorry_server_takes_over_when_all_reals_are_down_and_hands_back() {
    let _g = lb_tests::serial();
    let mut lab = lab("sorry");
    let nd = lab.workdir.join("r1.down");
    let qd = lab.workdir.join("quorum.down");
    let qu = lab.workdir.join("quorum.up");
    // One real (r1) and r2 as the sorry server; programs run without a shell.
    let conf = format!(
        "virtual_server {VIP} 80 {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n\
           sorry_server {r2} 80\n  quorum_down \"/usr/bin/touch {qd}\"\n  quorum_up \"/usr/bin/touch {qu}\"\n\
           real_server {r1} 80 {{\n    weight 1\n    notify_down \"/usr/bin/touch {nd}\"\n    {check}\n  }}\n}}\n",
        r1 = real_ip(1),
        r2 = real_ip(2),
        qd = qd.display(),
        qu = qu.display(),
        nd = nd.display(),
        check = tcp_check(8080),
    );
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    wait_list(&lab, "r1 serves", Duration::from_secs(5), |l| {
        has_real(l, 1)
    });
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("r1"), Some(&10), "{t:?}");
    lab.stop("r1", "httpd8080").unwrap();
    let took = wait_list(&lab, "sorry server in", Duration::from_secs(6), |l| {
        has_real(l, 2) && !has_real(l, 1)
    });
    eprintln!("sorry server took over after {took:?}");
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("r2"), Some(&10), "{t:?}");
    let start = Instant::now();
    while !(nd.exists() && qd.exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "notify_down / quorum_down not run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    lab.spawn("r1", &[&probe, "serve", "8080", "r1"], "httpd8080")
        .unwrap();
    wait_list(&lab, "r1 back", Duration::from_secs(5), |l| {
        has_real(l, 1) && !has_real(l, 2)
    });
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("r1"), Some(&10), "{t:?}");
    let start = Instant::now();
    while !qu.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "quorum_up not run"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// issue 13, input 5: the sorry server is also one of the reals (same address
/// and port, checked on another port). When every real fails, keepalived
/// serves the sorry server; it must not inherit its twin's failed verdict.
#[test]
fn a_sorry_server_that_is_also_a_failed_real_still_serves() {
    let _g = lb_tests::serial();
    let mut lab = lab("twin");
    let conf = service(
        &tcp_check(8080),
        &tcp_check(8080),
        &format!("sorry_server {} 80", real_ip(2)),
    );
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    wait_list(&lab, "both reals serve", Duration::from_secs(5), |l| {
        has_real(l, 1) && has_real(l, 2)
    });
    lab.stop("r1", "httpd8080").unwrap();
    lab.stop("r2", "httpd8080").unwrap();
    let took = wait_list(&lab, "the sorry twin in", Duration::from_secs(6), |l| {
        has_real(l, 2) && !has_real(l, 1)
    });
    eprintln!("sorry server (twin of r2) took over after {took:?}");
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("r2"), Some(&10), "{t:?}\n{}", list(&lab));
}

#[test]
fn reload_keeps_the_state_of_unchanged_checkers() {
    let _g = lb_tests::serial();
    let mut lab = lab("reload");
    let conf = service(&tcp_check(8080), &tcp_check(8080), "");
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    lab.stop("r2", "httpd8080").unwrap();
    wait_list(&lab, "r2 removed", Duration::from_secs(6), |l| {
        !has_real(l, 2)
    });
    let before = checks(&lab);
    // Reload with one more keyword elsewhere: r2 stays down (no flap through
    // "up" while its checker would start over), its probe count keeps growing.
    lab.write_config(&conf.replace("protocol TCP", "protocol TCP\n  persistence_timeout 0"))
        .unwrap();
    lab.signal("dir", "lb", libc::SIGHUP).unwrap();
    let start = Instant::now();
    while !lab.log("dir", "lb").contains("configuration reloaded") {
        assert!(start.elapsed() < Duration::from_secs(5), "no reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !has_real(&list(&lab), 2),
        "r2 still out right after the reload"
    );
    let after = checks(&lab);
    let probes = |c: &str| -> u64 {
        c.lines()
            .find(|l| l.contains(&format!("{}:80", real_ip(2))))
            .and_then(|l| l.split_whitespace().nth(5))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    assert!(probes(&after) >= probes(&before), "{before}\n{after}");
    assert!(after.contains("DOWN"), "{after}");
}

/// MD5 of `b` in hex, as keepalived's genhash prints it.
fn md5_hex(b: &[u8]) -> String {
    // A small MD5 would be a second implementation; the digest is taken
    // from the system's md5sum instead.
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

#[test]
fn http_digest_change_and_a_silent_server_are_detected() {
    let _g = lb_tests::serial();
    let mut lab = lab("digest");
    let status = lab.workdir.join("r1.status");
    std::fs::write(&status, "200").unwrap();
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    let st = status.to_string_lossy().into_owned();
    lab.spawn("r1", &[&probe, "serve", "8081", "r1", &st], "httpd8081")
        .unwrap();
    // r2's check port accepts connections and never answers.
    lab.spawn("r2", &[&probe, "silent", "8081"], "silent")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let digest = md5_hex(b"r1\n");
    let http = format!(
        "HTTP_GET {{\n      url {{\n        path /\n        digest {digest}\n      }}\n      connect_port 8081\n      {TIMING}\n    }}"
    );
    lab.start_agent(&service(&http, &http, ""), AGENT_ARGS)
        .unwrap();
    // The silent server: each probe times out after connect_timeout (1 s),
    // retried once 1 s later: out after about 3 s.
    let took = wait_list(&lab, "silent r2 removed", Duration::from_secs(6), |l| {
        has_real(l, 1) && !has_real(l, 2)
    });
    eprintln!(
        "silent server detected in {took:?} (keepalived timing: 1 s timeout + 1 s + 1 s timeout)"
    );
    assert!(checks(&lab).contains("timed out"));
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("r1"), Some(&10), "{t:?}");
    // The body changes: its digest no longer matches.
    std::fs::write(lab.workdir.join("r1.status.body"), "changed\n").unwrap();
    let took = wait_list(&lab, "r1 removed", Duration::from_secs(6), |l| {
        !has_real(l, 1)
    });
    eprintln!("digest change detected in {took:?}");
    assert!(checks(&lab).contains("digest"));
}

#[test]
fn ssl_get_against_a_tls_server_with_a_generated_certificate() {
    let _g = lb_tests::serial();
    let mut lab = lab("ssl");
    let cert = rcgen::generate_simple_self_signed(vec!["r1.example".into()]).unwrap();
    let (c, k) = (lab.workdir.join("cert.der"), lab.workdir.join("key.der"));
    std::fs::write(&c, cert.cert.der()).unwrap();
    std::fs::write(&k, cert.key_pair.serialize_der()).unwrap();
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    let (cs, ks) = (
        c.to_string_lossy().into_owned(),
        k.to_string_lossy().into_owned(),
    );
    // r1 serves TLS on 8443; r2 serves plain HTTP there (the handshake fails).
    lab.spawn("r1", &[&probe, "tls-serve", "8443", "r1", &cs, &ks], "tls")
        .unwrap();
    lab.spawn("r2", &[&probe, "serve", "8443", "r2"], "plain")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let ssl = format!(
        "SSL_GET {{\n      url {{\n        path /\n        digest {}\n      }}\n      virtualhost r1.example\n      enable_sni\n      connect_port 8443\n      {TIMING}\n    }}",
        md5_hex(b"r1\n")
    );
    lab.start_agent(&service(&ssl, &ssl, ""), AGENT_ARGS)
        .unwrap();
    let took = wait_list(&lab, "r2 removed", Duration::from_secs(6), |l| {
        has_real(l, 1) && !has_real(l, 2)
    });
    eprintln!("SSL_GET failure detected in {took:?}");
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("r1"), Some(&10), "{t:?}");
    // r1 passed its probes over TLS (digest of its body included).
    let c = checks(&lab);
    assert!(c.contains("SSL_GET") && c.contains("TLS handshake"), "{c}");
    let r1 = c
        .lines()
        .find(|l| l.contains(&format!("{}:80", real_ip(1))))
        .unwrap();
    assert!(r1.contains(" UP ") && r1.ends_with(" ok"), "{r1}");
    assert!(has_real(&list(&lab), 1));
}
