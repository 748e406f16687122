//! `lb drain` end to end, in network namespaces (LVS-DR lab, two reals):
//! a drain under load whose long-lived connections close after a few
//! seconds, a drain that ends by its timeout, and a drain that outlives its
//! CLI and is cancelled by a weight change and by a reload, with the
//! `draining` gauge on the metrics port. Needs root; tests run one at a time.

use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use lb_tests::{real_ip, Bins, Held, Lab, AGENT_ARGS, DIRECTOR_IP, VIP};

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(&format!("lbd{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// One rr service, both reals at weight 1.
fn config() -> String {
    format!(
        "virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n\
           real_server {r1} 80 {{\n    weight 1\n  }}\n  real_server {r2} 80 {{\n    weight 1\n  }}\n}}\n",
        r1 = real_ip(1),
        r2 = real_ip(2),
    )
}

fn vip80() -> String {
    format!("{VIP}:80")
}

/// `lb drain -t VIP:80 -r REAL:80 ARGS…` against the lab's agent, started
/// in the background with its output piped.
fn drain(lab: &Lab, real: &str, args: &[&str]) -> Child {
    Command::new(&lab.bins.lb)
        .args(["drain", "-t", &vip80(), "-r", &format!("{real}:80")])
        .args(args)
        .arg("--socket")
        .arg(lab.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lb drain starts")
}

/// Waits at most `limit` for `child`; its exit code, stdout and stderr.
fn finish(mut child: Child, limit: Duration) -> (i32, String, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let mut out = String::new();
            let _ = child.stdout.take().unwrap().read_to_string(&mut out);
            panic!("lb drain still running after {limit:?}; stdout:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), out, err)
}

/// `lb list` (with the drain markers the agent gives).
fn list(lab: &Lab) -> String {
    let bpffs = lab.bpffs().to_string_lossy().into_owned();
    let sock = lab.socket().to_string_lossy().into_owned();
    lab.lb(&["list", "--bpffs", &bpffs, "--socket", &sock])
        .unwrap()
}

/// The `lb list` line of real `r` (`None`: not listed).
fn real_line(table: &str, r: &str) -> Option<String> {
    let needle = format!("  -> {r}:80 ");
    table
        .lines()
        .find(|l| l.starts_with(&needle))
        .map(str::to_owned)
}

/// Opens keep-alive connections through the VIP until `n` of them are
/// served by `name`; the others are closed.
fn hold_on(lab: &Lab, name: &str, n: usize) -> Vec<Held> {
    let mut held = Vec::new();
    for _ in 0..4 * n + 4 {
        let h = lab.hold(&vip80()).expect("hold");
        if h.first == name {
            held.push(h);
            if held.len() == n {
                return held;
            }
        }
    }
    panic!("no {n} connection(s) reached {name}");
}

/// Polls `f` every 100 ms until it holds, at most `limit`.
fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Continuous new connections plus long-lived keep-alive ones on the
/// drained real that close after a few seconds: the real reaches 0 active
/// connections, `lb drain` exits 0, the real is removed, no request fails,
/// and the established connections kept being served by the drained real.
#[test]
fn drain_under_load() {
    let _g = lb_tests::serial();
    let mut lab = lab("load");
    lab.start_agent(&config(), AGENT_ARGS).unwrap();
    let r1 = real_ip(1);
    let mut held = hold_on(&lab, "r1", 2);
    // New connections all through the drain (a request every 20 ms, 9 s).
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    lab.spawn("cl", &[&probe, "load", &vip80(), "9", "20"], "load")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let child = drain(&lab, &r1, &["--timeout", "60"]);
    // The table marks the real while it drains, at weight 0, with its two
    // established connections.
    let mut marked = String::new();
    wait_for(
        Duration::from_secs(5),
        "the drain marker in lb list",
        || {
            marked = list(&lab);
            real_line(&marked, &r1)
                .is_some_and(|l| l.contains("draining") && l.split_whitespace().nth(3) == Some("0"))
        },
    );
    let line = real_line(&marked, &r1).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (cols[3], cols[4]),
        ("0", "2"),
        "weight 0, 2 active: {marked}"
    );
    assert!(line.contains("s/60s"), "{line}");

    // The established connections stay on the drained real.
    std::thread::sleep(Duration::from_secs(2));
    for h in &mut held {
        assert_eq!(
            h.request().unwrap(),
            "r1",
            "an established connection moved"
        );
    }
    // They close (FIN): no active connection is left.
    drop(held);
    let (code, out, err) = finish(child, Duration::from_secs(45));
    assert_eq!(
        code,
        0,
        "lb drain: exit {code}\nstdout:\n{out}\nstderr:\n{err}\nagent log:\n{}",
        lab.log("dir", "lb")
    );
    assert!(out.contains("drained after"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("draining ") && l.contains("active 2")),
        "progress lines: {out}"
    );
    // It ended once the connections closed, well before its 60 s timeout.
    assert!(started.elapsed() < Duration::from_secs(40), "{out}");
    let table = list(&lab);
    assert!(real_line(&table, &r1).is_none(), "r1 removed: {table}");
    assert!(real_line(&table, &real_ip(2)).is_some(), "{table}");

    wait_for(Duration::from_secs(15), "the load to end", || {
        lab.log("cl", "load").contains("outage_ms")
    });
    let load = lab.log("cl", "load");
    assert!(load.contains("fail 0\n"), "a request failed:\n{load}");
    assert!(load.contains("r2 "), "{load}");
    // After the drain began, new connections went to r2 only: at most the
    // ones made in the first half second went to r1 (one in two, rr).
    let r1_served: usize = load
        .lines()
        .find_map(|l| l.strip_prefix("r1 "))
        .map_or(0, |n| n.parse().unwrap());
    assert!(
        r1_served < 40,
        "r1 took new connections while draining:\n{load}"
    );
}

/// A connection held open past the timeout: the drain ends by its timeout
/// (exit 124), and the real is removed all the same. Unknown services and
/// reals, and bad addresses, exit as `lb adm` does.
#[test]
fn drain_times_out_with_a_connection_held_open() {
    let _g = lb_tests::serial();
    let mut lab = lab("tmo");
    lab.start_agent(&config(), AGENT_ARGS).unwrap();
    let r1 = real_ip(1);

    // Errors first: nothing is drained.
    let (code, _, err) = finish(drain(&lab, "10.200.0.99", &[]), Duration::from_secs(10));
    assert_eq!((code, err.as_str()), (255, "No such destination\n"));
    let (code, _, err) = finish(
        Command::new(&lab.bins.lb)
            .args(["drain", "-t", &format!("{VIP}:81"), "-r", &r1])
            .arg("--socket")
            .arg(lab.socket())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(10),
    );
    assert_eq!((code, err.as_str()), (255, "Service not defined\n"));
    let (code, _, err) = finish(
        Command::new(&lab.bins.lb)
            .args(["drain", "-t", VIP, "-r", &r1])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(10),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("illegal virtual server address[:port] specified"),
        "{err}"
    );
    let line = real_line(&list(&lab), &r1).expect("r1 listed");
    assert_eq!(
        line.split_whitespace().nth(3),
        Some("1"),
        "untouched: {line}"
    );

    let _held = hold_on(&lab, "r1", 1);
    let started = Instant::now();
    let (code, out, err) = finish(
        drain(&lab, &r1, &["--timeout", "3"]),
        Duration::from_secs(20),
    );
    assert_eq!(
        code,
        124,
        "lb drain: exit {code}\nstdout:\n{out}\nstderr:\n{err}\nagent log:\n{}",
        lab.log("dir", "lb")
    );
    assert!(out.contains("timed out after"), "{out}");
    assert!(out.contains("1 active"), "{out}");
    assert!(started.elapsed() >= Duration::from_secs(3), "{out}");
    let table = list(&lab);
    assert!(real_line(&table, &r1).is_none(), "r1 removed: {table}");
}

/// A drain runs in the agent: the CLI killed (Ctrl-C), it goes on (listed,
/// the `draining` gauge at 1); `lb adm -e -w 2` on the real cancels it (the
/// real stays, weight 2); a reload cancels another.
#[test]
fn drain_outlives_its_cli_and_is_cancelled() {
    let _g = lb_tests::serial();
    let mut lab = lab("cncl");
    let listen = format!("{DIRECTOR_IP}:9464");
    let mut args = AGENT_ARGS.to_vec();
    args.extend(["--metrics-listen", &listen]);
    lab.start_agent(&config(), &args).unwrap();
    let r1 = real_ip(1);
    let _held = hold_on(&lab, "r1", 1);
    let metrics = |lab: &Lab| {
        let out = lab
            .exec(
                "dir",
                &[
                    "curl",
                    "-sf",
                    "--max-time",
                    "5",
                    &format!("http://{listen}/metrics"),
                ],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let gauge = |r: &str, v: u8| {
        format!(
            "lb_ipvs_backend_draining{{local_address=\"{VIP}\",local_port=\"80\",remote_address=\"{r}\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"}} {v}\n"
        )
    };
    assert!(metrics(&lab).contains(&gauge(&r1, 0)));

    // The CLI's output goes to a file, read while it runs.
    let out_path = lab.workdir.join("drain-cli.out");
    let mut child = Command::new(&lab.bins.lb)
        .args([
            "drain",
            "-t",
            &vip80(),
            "-r",
            &format!("{r1}:80"),
            "--timeout",
            "0",
        ])
        .arg("--socket")
        .arg(lab.socket())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("lb drain starts");
    let printed = || std::fs::read_to_string(&out_path).unwrap_or_default();
    wait_for(
        Duration::from_secs(10),
        "lb drain's first progress line",
        || {
            printed()
                .lines()
                .any(|l| l.starts_with("draining ") && l.contains("active 1"))
        },
    );
    assert!(
        printed().contains("Ctrl-C stops following it, not the drain"),
        "{}",
        printed()
    );
    let line = real_line(&list(&lab), &r1).expect("listed");
    assert!(line.contains("draining"), "{line}");
    // Ctrl-C on the CLI: the drain goes on in the agent.
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed by SIGINT: {}", printed());
    std::thread::sleep(Duration::from_secs(2));
    let line = real_line(&list(&lab), &r1).expect("still there");
    assert!(
        line.contains("draining") && line.contains("no timeout"),
        "{line}"
    );
    let m = metrics(&lab);
    assert!(m.contains(&gauge(&r1, 1)), "{m}");
    assert!(m.contains(&gauge(&real_ip(2), 0)), "{m}");

    // `lb drain` again follows the running drain (no second one).
    let (code, out, _) = finish(drain(&lab, &r1, &["--no-wait"]), Duration::from_secs(5));
    assert_eq!(code, 0);
    assert!(out.contains("already being drained"), "{out}");

    // A weight given back cancels it: the real stays, weight 2.
    let (code, _, err) = lab
        .adm(
            "dir",
            &["-e", "-t", &vip80(), "-r", &format!("{r1}:80"), "-w", "2"],
            "",
        )
        .unwrap();
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_secs(2));
    let table = list(&lab);
    let line = real_line(&table, &r1).expect("r1 stays");
    assert!(!line.contains("draining"), "{line}");
    assert_eq!(line.split_whitespace().nth(3), Some("2"), "{line}");
    assert!(metrics(&lab).contains(&gauge(&r1, 0)));

    // A reload cancels a drain: the file's weight applies again.
    let (code, out, _) = finish(drain(&lab, &r1, &["--no-wait"]), Duration::from_secs(5));
    assert_eq!(code, 0, "{out}");
    let sock = lab.socket().to_string_lossy().into_owned();
    lab.lb(&["reload", "--socket", &sock]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let line = real_line(&list(&lab), &r1).expect("r1 stays");
    assert!(!line.contains("draining"), "{line}");
    assert_eq!(line.split_whitespace().nth(3), Some("1"), "{line}");
    let log = lab.log("dir", "lb");
    assert!(log.contains("cancelled by a reload"), "{log}");
    assert!(log.contains("the real's weight was set to 2"), "{log}");
}
