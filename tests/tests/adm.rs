//! `lb adm` (ipvsadm's command line) end to end, in network namespaces:
//! the source documents' by-hand LVS-NAT session command for command
//! (addresses replaced by the lab's), with real HTTP checked at each step,
//! and the runtime layer's rules across a reload and an agent restart.
//! Needs root; tests run one at a time.

use std::{collections::BTreeMap, time::Duration};

use lb_tests::{private_ip, Bins, Lab, CLIENT_IP, VIP};

fn nat_lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::nat(&format!("lba{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// `lb adm ARGS` must succeed; returns its stdout.
fn adm_ok(lab: &Lab, line: &str) -> String {
    adm_in(lab, line, "")
}

fn adm_in(lab: &Lab, line: &str, stdin: &str) -> String {
    let args: Vec<&str> = line.split_whitespace().collect();
    let (code, out, err) = lab.adm("dir", &args, stdin).expect("lb adm runs");
    assert_eq!(
        code,
        0,
        "lb adm {line}: exit {code}\nstdout:\n{out}\nstderr:\n{err}\nagent log:\n{}",
        lab.log("dir", "lb")
    );
    assert!(err.is_empty(), "lb adm {line}: stderr: {err}");
    out
}

fn tally(lab: &Lab, n: usize) -> BTreeMap<String, usize> {
    lab.http_get(&format!("{VIP}:80"), n).expect("client runs")
}

fn count(t: &BTreeMap<String, usize>, k: &str) -> usize {
    t.get(k).copied().unwrap_or(0)
}

/// Waits until the agent answers on its socket.
fn wait_agent(lab: &Lab) {
    let sock = lab.socket().to_string_lossy().into_owned();
    for _ in 0..100 {
        if lab.lb(&["status", "--socket", &sock]).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("agent did not come up:\n{}", lab.log("dir", "lb"));
}

/// The private side's reals answer the client through the director (its
/// default gateway in this lab).
#[test]
fn by_hand_nat_session_of_the_source_document() {
    let _g = lb_tests::serial();
    let mut lab = nat_lab("hand");
    let (r1, r2) = (private_ip(1), private_ip(2));
    // `lb run` without a configuration file: an empty table. (Where the
    // machine has a keepalived.conf at the default path, an explicit empty
    // file stands in for "no file".)
    let default = std::path::Path::new("/etc/keepalived/keepalived.conf");
    if default.exists() {
        let empty = lab.workdir.join("empty.conf");
        std::fs::write(&empty, "").unwrap();
        let e = empty.to_string_lossy().into_owned();
        lab.spawn_agent_args("dir", &["--config", &e]).unwrap();
    } else {
        lab.spawn_agent_args("dir", &[]).unwrap();
    }
    wait_agent(&lab);
    let table = adm_ok(&lab, "-Ln");
    assert_eq!(
        table.lines().skip(1).collect::<Vec<_>>(),
        [
            "Prot LocalAddress:Port Scheduler Flags",
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
        ],
        "{table}"
    );

    // ipvsadm -C; -A -t VIP:80 -s rr; -a … -m (twice).
    adm_ok(&lab, "-C");
    adm_ok(&lab, &format!("-A -t {VIP}:80 -s rr"));
    adm_ok(&lab, &format!("-a -t {VIP}:80 -r {r1}:80 -m"));
    adm_ok(&lab, &format!("-a -t {VIP}:80 -r {r2}:80 -m"));
    let table = adm_ok(&lab, "-ln");
    assert!(table.contains(&format!("TCP  {VIP}:80 rr\n")), "{table}");
    for r in [&r1, &r2] {
        assert!(
            table.contains(&format!("  -> {:<28} Masq    1      ", format!("{r}:80"))),
            "{table}"
        );
    }
    let t = tally(&lab, 20);
    assert_eq!(count(&t, "fail"), 0, "{t:?}\n{}", lab.log("dir", "lb"));
    // One rr order per service, whatever CPU a connection arrives on.
    assert_eq!((count(&t, "r1"), count(&t, "r2")), (10, 10), "rr: {t:?}");
    // The connections are in the table as ipvsadm -lnc shows them.
    let conns = adm_ok(&lab, "-lnc");
    assert!(
        conns.starts_with("IPVS connection entries\npro expire state"),
        "{conns}"
    );
    assert!(conns.contains(&format!("{CLIENT_IP}:")), "{conns}");

    // Weighted round robin: -E to wrr, weights 3 and 2 with -e.
    adm_ok(&lab, &format!("-E -t {VIP}:80 -s wrr"));
    adm_ok(&lab, &format!("-e -t {VIP}:80 -r {r1}:80 -m -w 3"));
    adm_ok(&lab, &format!("-e -t {VIP}:80 -r {r2}:80 -m -w 2"));
    let t = tally(&lab, 50);
    assert_eq!(count(&t, "fail"), 0, "{t:?}");
    assert!(
        count(&t, "r1") > count(&t, "r2") && count(&t, "r2") >= 15,
        "3:2 weights: {t:?}"
    );

    // ipvsadm-save > file; -C; the VIP answers nothing; -R < file.
    let saved = adm_ok(&lab, "-S -n");
    assert_eq!(
        saved,
        format!(
            "-A -t {VIP}:80 -s wrr\n-a -t {VIP}:80 -r {r1}:80 -m -w 3\n-a -t {VIP}:80 -r {r2}:80 -m -w 2\n"
        )
    );
    let before = adm_ok(&lab, "-Ln");
    adm_ok(&lab, "-C");
    // Nothing is balanced: the director's own web server (the lab's) answers.
    let t = tally(&lab, 4);
    assert_eq!(count(&t, "director"), 4, "no service after -C: {t:?}");
    adm_in(&lab, "-R", &saved);
    let after = adm_ok(&lab, "-Ln");
    let rows = |s: &str| -> Vec<String> {
        // Service and real lines without the connection counts.
        s.lines()
            .skip(3)
            .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(rows(&before), rows(&after), "{before}\n{after}");
    let t = tally(&lab, 20);
    assert_eq!(count(&t, "fail"), 0, "after -R: {t:?}");

    // Errors as ipvsadm's: the service exists; no such destination.
    let (code, _, err) = lab
        .adm("dir", &["-A", "-t", &format!("{VIP}:80"), "-s", "rr"], "")
        .unwrap();
    assert_eq!((code, err.as_str()), (255, "Service already exists\n"));
    let (code, _, err) = lab
        .adm(
            "dir",
            &["-d", "-t", &format!("{VIP}:80"), "-r", "10.201.0.99:80"],
            "",
        )
        .unwrap();
    assert_eq!((code, err.as_str()), (255, "No such destination\n"));

    // -d one real: only the other answers; -D the service: nothing does.
    adm_ok(&lab, &format!("-d -t {VIP}:80 -r {r1}:80"));
    let t = tally(&lab, 10);
    assert_eq!((count(&t, "r2"), count(&t, "fail")), (10, 0), "{t:?}");
    adm_ok(&lab, &format!("-D -t {VIP}:80"));
    let t = tally(&lab, 3);
    assert_eq!(count(&t, "director"), 3, "{t:?}");
    let table = adm_ok(&lab, "-Ln");
    assert_eq!(table.lines().count(), 3, "{table}");

    // Through a link named ipvsadm: the same command line.
    let link = lab.workdir.join("ipvsadm");
    std::os::unix::fs::symlink(&lab.bins.lb, &link).unwrap();
    let out = std::process::Command::new(&link)
        .args(["-L", "--timeout"])
        .env("LB_SOCKET", lab.socket())
        .env("LB_BPFFS", lab.bpffs())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Timeout (tcp tcpfin udp): 900 120 300\n",
        "{out:?}"
    );
}

/// Runtime rules: a service made at runtime survives a reload and a
/// restart; a runtime change to the file's service lasts until the reload.
#[test]
fn runtime_layer_survives_reload_and_restart() {
    let _g = lb_tests::serial();
    let mut lab = nat_lab("rt");
    let (r1, r2) = (private_ip(1), private_ip(2));
    // The file: port 80 balanced over both reals.
    let conf = format!(
        "virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind NAT\n  protocol TCP\n  real_server {r1} 80 {{ weight 1 }}\n  real_server {r2} 80 {{ weight 1 }}\n}}\n"
    );
    lab.start_agent(&conf, &[]).unwrap();
    // Runtime: a new service on port 8080 with r2 only; the file's service
    // loses r1 at runtime.
    adm_ok(&lab, &format!("-A -t {VIP}:8080 -s rr"));
    adm_ok(&lab, &format!("-a -t {VIP}:8080 -r {r2}:8080 -m"));
    adm_ok(&lab, &format!("-d -t {VIP}:80 -r {r1}:80"));
    let on =
        |lab: &Lab, port: u16, n: usize| lab.http_get(&format!("{VIP}:{port}"), n).expect("client");
    let t = on(&lab, 80, 6);
    assert_eq!(count(&t, "r2"), 6, "r1 removed at runtime: {t:?}");
    let t = on(&lab, 8080, 4);
    assert_eq!(count(&t, "r2"), 4, "runtime service: {t:?}");
    let status = lab
        .lb(&["status", "--socket", &lab.socket().to_string_lossy()])
        .unwrap();
    assert!(
        status.contains(&format!("service TCP {VIP}:8080 rr NAT  (runtime)")),
        "{status}"
    );
    assert!(
        status.contains(&format!("real {r2}:8080 weight 1 [runtime]")),
        "the weight's source: {status}"
    );
    assert!(status.contains("runtime, over file"), "{status}");

    // Reload: the file applies again (r1 back), the runtime service stays.
    let out = lab
        .lb(&["reload", "--socket", &lab.socket().to_string_lossy()])
        .unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    let t = on(&lab, 80, 10);
    // One rr order per service: half each.
    assert_eq!(
        (count(&t, "r1"), count(&t, "r2")),
        (5, 5),
        "file re-applied: {t:?}"
    );
    let t = on(&lab, 8080, 4);
    assert_eq!(count(&t, "r2"), 4, "runtime service kept: {t:?}");
    // The agent logged what the reload changed.
    let log = lab.log("dir", "lb");
    assert!(
        log.contains(&format!(
            "reload: real {r1}:80 of service TCP {VIP}:80 added"
        )),
        "{log}"
    );

    // Restart: the runtime service comes back from the state directory.
    lab.stop("dir", "lb").unwrap();
    let saved = std::fs::read_to_string(lab.state_dir_of("dir").join("runtime.json")).unwrap();
    assert!(saved.contains("\"lb-runtime/1\""), "{saved}");
    lab.start_agent(&conf, &[]).unwrap();
    let t = on(&lab, 8080, 4);
    assert_eq!(
        count(&t, "r2"),
        4,
        "after restart: {t:?}\n{}",
        lab.log("dir", "lb")
    );
    let saved_rules = adm_ok(&lab, "-Sn");
    assert!(
        saved_rules.contains(&format!(
            "-A -t {VIP}:8080 -s rr\n-a -t {VIP}:8080 -r {r2}:8080 -m -w 1\n"
        )),
        "{saved_rules}"
    );

    // The file takes the runtime service over: a reload replaces it and
    // the saved layer forgets it (a later file without it must not bring
    // the runtime one back at a restart).
    let both = format!(
        "{conf}virtual_server {VIP} 8080 {{\n  lb_algo wrr\n  lb_kind NAT\n  protocol TCP\n  real_server {r1} 8080 {{ weight 1 }}\n}}\n"
    );
    lab.write_config(&both).unwrap();
    let out = lab
        .lb(&["reload", "--socket", &lab.socket().to_string_lossy()])
        .unwrap();
    assert!(out.contains("configuration reloaded"), "{out}");
    let t = on(&lab, 8080, 4);
    assert_eq!(count(&t, "r1"), 4, "the file's 8080: {t:?}");
    let saved = std::fs::read_to_string(lab.state_dir_of("dir").join("runtime.json")).unwrap();
    assert!(!saved.contains("8080"), "{saved}");
}

/// `POST` of `body` (JSON) to `path` on the agent's socket with a plain
/// HTTP/1.1 exchange: the status line and the body.
fn api_post(lab: &Lab, path: &str, body: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(lab.socket()).expect("agent socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// A service made at runtime whose reals carry HTTP_GET checkers (given
/// through the API: ipvsadm has none): a real whose checked server stops
/// leaves the table and comes back when it returns, as a file checker's
/// real does; `lb adm -e` keeps the checker; `lb export` writes it, and
/// the export is a configuration `lb check-config` accepts.
#[test]
fn runtime_reals_with_http_checks_go_down_and_up() {
    let _g = lb_tests::serial();
    let mut lab = nat_lab("chk");
    let (r1, r2) = (private_ip(1), private_ip(2));
    let empty = lab.workdir.join("empty.conf");
    std::fs::write(&empty, "").unwrap();
    let e = empty.to_string_lossy().into_owned();
    lab.spawn_agent_args("dir", &["--config", &e]).unwrap();
    wait_agent(&lab);
    adm_ok(&lab, &format!("-A -t {VIP}:80 -s rr"));
    for r in [&r1, &r2] {
        // HTTP_GET / on the real's port 8080 (its second web server),
        // probed every 0.5 s; down after one failed retry.
        let body = format!(
            r#"{{"op":"add_real","service":{{"addr":"{VIP}","port":80,"proto":"TCP"}},"real":{{"addr":"{r}","port":80,"fwd":"NAT","weight":1,"check":{{"type":"HTTP_GET","path":"/","status":200,"connect_port":8080,"connect_timeout_ms":500,"delay_loop_ms":500,"retry":1,"delay_before_retry_ms":500}}}}}}"#
        );
        let (status, reply) = api_post(&lab, "/v1/runtime", &body);
        assert!(status.contains(" 200 "), "{status}\n{reply}");
    }
    // A bad checker is refused with the reason, nothing added.
    let (status, reply) = api_post(
        &lab,
        "/v1/runtime",
        &format!(
            r#"{{"op":"add_real","service":{{"addr":"{VIP}","port":80,"proto":"TCP"}},"real":{{"addr":"{}","port":80,"fwd":"NAT","weight":1,"check":{{"type":"HTTP_GET","path":"health","status":200}}}}}}"#,
            private_ip(3)
        ),
    );
    assert!(status.contains(" 422 "), "{status}\n{reply}");
    assert!(reply.contains("must start with '/'"), "{reply}");
    let sock = lab.socket().to_string_lossy().into_owned();
    let checks = |lab: &Lab| lab.lb(&["list", "--checks", "--socket", &sock]).unwrap();
    let listed = |lab: &Lab, r: &str| adm_ok(lab, "-Ln").contains(&format!("{r}:80"));
    let wait = |lab: &Lab, what: &str, cond: &dyn Fn(&Lab) -> bool| {
        let start = std::time::Instant::now();
        while !cond(lab) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what}: not within 10 s\n{}\n{}\n{}",
                adm_ok(lab, "-Ln"),
                checks(lab),
                lab.log("dir", "lb")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    };
    wait(&lab, "both reals checked up", &|l| {
        let c = checks(l);
        c.matches("HTTP_GET").count() == 2 && c.matches(" UP ").count() == 2
    });
    let t = tally(&lab, 20);
    assert_eq!((count(&t, "r1"), count(&t, "r2")), (10, 10), "{t:?}");
    // ipvsadm's -e knows nothing of checkers: r2's stays.
    adm_ok(&lab, &format!("-e -t {VIP}:80 -r {r2}:80 -m -w 2"));
    let c = checks(&lab);
    assert_eq!(c.matches("HTTP_GET").count(), 2, "{c}");
    // r2's checked server stops: r2 leaves the table, traffic goes to r1.
    lab.stop("r2", "httpd8080").unwrap();
    let took = wait(&lab, "r2 removed", &|l| !listed(l, &r2));
    eprintln!("runtime HTTP_GET: down detected in {took:?} (delay_loop 0.5 s + 1 retry 0.5 s)");
    let c = checks(&lab);
    assert!(c.contains("DOWN"), "{c}");
    let t = tally(&lab, 10);
    assert_eq!(count(&t, "r1"), 10, "{t:?}");
    // It returns: r2 is back with its weight.
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    lab.spawn("r2", &[&probe, "serve", "8080", "r2"], "httpd8080")
        .unwrap();
    let took = wait(&lab, "r2 back", &|l| listed(l, &r2));
    eprintln!("runtime HTTP_GET: up detected in {took:?}");
    let table = adm_ok(&lab, "-Ln");
    assert!(
        table.contains(&format!("  -> {:<28} Masq    2      ", format!("{r2}:80"))),
        "{table}"
    );
    // The saved layer has the checkers; the export writes them and loads.
    let saved = lab.lb(&["export", "--socket", &sock]).unwrap();
    assert!(
        saved.starts_with("! keepalived.conf exported by lb"),
        "{saved}"
    );
    assert_eq!(saved.matches("HTTP_GET {").count(), 2, "{saved}");
    assert!(saved.contains("connect_port 8080"), "{saved}");
    assert!(saved.contains("delay_loop 0.5"), "{saved}");
    let f = lab.workdir.join("exported.conf");
    std::fs::write(&f, &saved).unwrap();
    let out = lab
        .lb(&["check-config", &f.to_string_lossy()])
        .expect("the export is a valid configuration");
    assert!(
        out.contains("1 virtual server(s), 0 VRRP instance(s), 0 error(s)"),
        "{out}"
    );
    let record = std::fs::read_to_string(lab.state_dir_of("dir").join("runtime.json")).unwrap();
    assert_eq!(record.matches("\"HTTP_GET\"").count(), 2, "{record}");
}
