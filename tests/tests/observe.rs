//! Machine-readable and observable: `--json` on the read commands after real
//! traffic, a real Prometheus server scraping `lb run --metrics-listen`,
//! `promtool check metrics` on the exposition, keepalived's dump signals
//! (SIGUSR1 / SIGUSR2) and the signals an operator sends by habit.
//! Needs root; tests run one at a time.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{real_ip, Bins, Lab, AGENT_ARGS, DIRECTOR_IP, VIP};
use serde_json::Value;

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(&format!("lbo{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// Two DR reals checked with TCP_CHECK on 8080; `extra` is appended (a
/// VRRP instance).
fn config(extra: &str) -> String {
    let mut s = format!(
        "virtual_server {VIP} 80 {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n"
    );
    for i in 1..=2 {
        s.push_str(&format!(
            "  real_server {} 80 {{\n    weight {i}\n    TCP_CHECK {{\n      connect_port 8080\n      connect_timeout 1\n    }}\n  }}\n",
            real_ip(i)
        ));
    }
    s.push_str("}\n");
    s.push_str(extra);
    s
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn json(lab: &Lab, args: &[&str]) -> Value {
    let out = lab.lb(args).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lb {args:?}: {e}\n{out}"))
}

/// Waits until `f` returns `Some`.
fn wait<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every checker has probed once (so the checks' JSON has durations).
fn wait_probed(lab: &Lab) {
    let sock = s(&lab.socket());
    wait("every checker probed", Duration::from_secs(10), || {
        let c = json(lab, &["list", "--checks", "--json", "--socket", &sock]);
        let all = c["checkers"].as_array()?;
        (all.len() == 2 && all.iter().all(|x| x["probes"].as_u64() > Some(0))).then_some(())
    });
}

#[test]
fn json_output_after_traffic() {
    let _g = lb_tests::serial();
    let mut lab = lab("json");
    lab.start_agent(&config(""), AGENT_ARGS).unwrap();
    wait_probed(&lab);
    let t = lab.http_get(&format!("{VIP}:80"), 30).unwrap();
    assert_eq!(t.values().sum::<usize>(), 30, "{t:?}");
    let bpffs = s(&lab.bpffs());
    let sock = s(&lab.socket());

    // lb list --json: exact numbers, names, bare addresses.
    let l = json(&lab, &["list", "--json", "--bpffs", &bpffs]);
    assert_eq!(l["conn_table_size"], 65536);
    let svc = &l["services"][0];
    assert_eq!(svc["protocol"], "TCP");
    assert_eq!(svc["address"], VIP);
    assert_eq!(svc["port"], 80);
    assert_eq!(svc["scheduler"], "rr");
    assert_eq!(svc["stats"]["conns"], 30, "{l:#}");
    assert!(
        svc["stats"]["in_packets"].as_u64().unwrap() >= 30 * 3,
        "{l:#}"
    );
    assert!(svc["rates"].is_null() && l["connections"].is_null());
    let reals = svc["reals"].as_array().unwrap();
    assert_eq!(reals.len(), 2);
    let mut sum = 0;
    for (i, r) in reals.iter().enumerate() {
        assert_eq!(r["address"], real_ip(i + 1));
        assert_eq!(r["forward"], "DR");
        assert_eq!(r["weight"], i as u64 + 1);
        // Each request's connection was counted where it was answered.
        let name = format!("r{}", i + 1);
        assert_eq!(
            r["stats"]["conns"].as_u64().unwrap() as usize,
            t.get(&name).copied().unwrap_or(0),
            "{l:#}"
        );
        sum += r["stats"]["conns"].as_u64().unwrap();
    }
    assert_eq!(sum, 30);

    // --stats is the same document; -c adds the connections.
    let st = json(&lab, &["list", "--stats", "--json", "--bpffs", &bpffs]);
    assert_eq!(st["services"][0]["stats"]["conns"], 30);
    let c = json(&lab, &["list", "-c", "--json", "--bpffs", &bpffs]);
    let conns = c["connections"].as_array().unwrap();
    assert!(!conns.is_empty(), "{c:#}");
    for x in conns {
        assert_eq!(x["virtual_address"], VIP);
        assert_eq!(x["virtual_port"], 80);
        assert_eq!(x["protocol"], "TCP");
        assert!(x["expire_s"].is_u64() && x["state"].is_string(), "{x}");
    }
    // --rate: per-second rates over the sampling interval.
    let r = json(&lab, &["list", "--rate", "--json", "--bpffs", &bpffs]);
    assert!(r["rate_interval_s"].as_f64().unwrap() >= 1.0, "{r:#}");
    assert!(r["services"][0]["rates"]["conns_per_s"].is_f64(), "{r:#}");

    // lb counters --json: the data plane's counters by name.
    let g = json(&lab, &["counters", "--json", "--bpffs", &bpffs]);
    assert!(g["counters"]["new_flows"].as_u64().unwrap() >= 30, "{g:#}");
    assert!(g["counters"]["tx"].as_u64().unwrap() >= 30 * 3, "{g:#}");
    assert_eq!(g["counters"]["aborted"], 0);

    // Checkers and VRRP from the agent, structured.
    let ch = json(&lab, &["list", "--checks", "--json", "--socket", &sock]);
    for x in ch["checkers"].as_array().unwrap() {
        assert_eq!(x["check"], "TCP_CHECK");
        assert_eq!(x["up"], true);
        assert_eq!(x["last"]["result"], "ok");
        assert!(x["last_duration_s"].as_f64().unwrap() >= 0.0, "{x}");
    }
    let v = json(&lab, &["list", "--vrrp", "--json", "--socket", &sock]);
    assert_eq!(v["running"], true);
    assert_eq!(v["instances"].as_array().unwrap().len(), 0);
    // The text tables are rendered from the same answers.
    let text = lab.lb(&["list", "--checks", "--socket", &sock]).unwrap();
    assert!(text.contains("TCP_CHECK") && text.contains("UP"), "{text}");
}

/// A Prometheus server (Debian's package) scrapes the agent once a second
/// in the director's namespace; PromQL over its HTTP API returns the
/// connections the test made. promtool checks the exposition.
#[test]
fn prometheus_scrapes_the_agent() {
    let Some(prometheus) = find("prometheus") else {
        eprintln!("SKIPPED: the prometheus binary is missing (`cargo xtask setup` installs Debian's prometheus package)");
        return;
    };
    let promtool = find("promtool").expect("promtool comes with the prometheus package");
    let _g = lb_tests::serial();
    let mut lab = lab("prom");
    let listen = format!("{DIRECTOR_IP}:9464");
    let mut args = AGENT_ARGS.to_vec();
    args.extend(["--metrics-listen", &listen]);
    lab.start_agent(&config(""), &args).unwrap();

    // Prometheus in the director's namespace, its data in the lab's
    // directory (removed with the lab), killed when the lab drops.
    let dir = lab.workdir.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: lb\n    static_configs:\n      - targets: ['{listen}']\n"
        ),
    )
    .unwrap();
    let prom = s(&prometheus);
    let conf_arg = format!("--config.file={}", conf.display());
    let data_arg = format!("--storage.tsdb.path={}", dir.join("data").display());
    lab.spawn(
        "dir",
        &[
            &prom,
            &conf_arg,
            &data_arg,
            "--web.listen-address=127.0.0.1:9090",
        ],
        "prometheus",
    )
    .unwrap();

    let t = lab.http_get(&format!("{VIP}:80"), 25).unwrap();
    assert_eq!(t.values().sum::<usize>(), 25, "{t:?}");

    let query = |q: &str| -> Option<Value> {
        let arg = format!("query={q}");
        let out = lab
            .exec(
                "dir",
                &[
                    "curl",
                    "-sfG",
                    "--max-time",
                    "2",
                    "--data-urlencode",
                    &arg,
                    "http://127.0.0.1:9090/api/v1/query",
                ],
            )
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"] == "success").then_some(v)
    };
    let value =
        |v: &Value| -> Option<f64> { v["data"]["result"][0]["value"][1].as_str()?.parse().ok() };
    // The connections the test made, as Prometheus stored them.
    let q = format!("sum(lb_ipvs_backend_connections_total{{local_address=\"{VIP}\",local_port=\"80\",proto=\"TCP\"}})");
    let got = wait(
        "Prometheus has scraped the connections",
        Duration::from_secs(30),
        || query(&q).and_then(|v| value(&v)).filter(|x| *x == 25.0),
    );
    assert_eq!(got, 25.0);
    let svc = query(&format!(
        "lb_ipvs_service_connections_total{{local_address=\"{VIP}\"}}"
    ))
    .unwrap();
    assert_eq!(value(&svc), Some(25.0), "{svc}");
    let up = query("up{job=\"lb\"}").unwrap();
    assert_eq!(value(&up), Some(1.0), "the scrape succeeds: {up}");
    // node_exporter's label set on the backend gauges.
    let w = query("lb_ipvs_backend_weight").unwrap();
    let metric = &w["data"]["result"][0]["metric"];
    for label in [
        "local_address",
        "local_port",
        "remote_address",
        "remote_port",
        "proto",
    ] {
        assert!(metric[label].is_string(), "{label} missing: {w}");
    }
    let b = query("lb_build_info").unwrap();
    assert_eq!(value(&b), Some(1.0), "{b}");

    // promtool reads the classic exposition without a complaint.
    let body = lab
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
        .unwrap()
        .stdout;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(text.contains("lb_ipvs_connections_total 25\n"), "{text}");
    let checked = {
        use std::io::Write as _;
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&body).unwrap();
        child.wait_with_output().unwrap()
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && report.trim().is_empty(),
        "promtool check metrics: {report}\n{text}"
    );
}

fn find(prog: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// State of process `pid` from /proc (`R`, `S`, `Z`…); `None` once reaped.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

const DATA: &str = "/tmp/lb.data";
const STATS: &str = "/tmp/lb.stats";

/// Removes the dump files this test made (they are in the host's /tmp).
struct DumpFiles;

impl Drop for DumpFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(DATA);
        let _ = std::fs::remove_file(STATS);
    }
}

/// SIGUSR1 / SIGUSR2 write keepalived's dumps (a symbolic link planted at
/// the path does not redirect the write), `lb dump` gives the same through
/// the API, and no signal an operator sends by habit kills the agent;
/// SIGQUIT stops it cleanly.
#[test]
fn dump_signals_and_habitual_signals() {
    let _g = lb_tests::serial();
    let _files = DumpFiles;
    let mut lab = lab("sig");
    let vrrp = "vrrp_instance VI_OBS {\n  interface eth0\n  state BACKUP\n  virtual_router_id 77\n  priority 100\n  advert_int 1\n  virtual_ipaddress {\n    10.200.0.150/32\n  }\n}\n";
    lab.start_agent(&config(vrrp), AGENT_ARGS).unwrap();
    wait_probed(&lab);
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.values().sum::<usize>(), 10, "{t:?}");
    let sock = s(&lab.socket());
    let pid = lab.pid("dir", "lb").unwrap();

    // A link planted where the dump goes, to a file it must not touch.
    let _ = std::fs::remove_file(DATA);
    let _ = std::fs::remove_file(STATS);
    let victim = lab.workdir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, DATA).unwrap();

    lab.signal("dir", "lb", libc::SIGUSR1).unwrap();
    let data = wait("SIGUSR1 dump", Duration::from_secs(5), || {
        let m = std::fs::symlink_metadata(DATA).ok()?;
        m.file_type()
            .is_file()
            .then(|| std::fs::read_to_string(DATA).ok())
            .flatten()
    });
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let m = std::fs::metadata(DATA).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    for want in [
        format!("service TCP {VIP}:80 rr DR"),
        format!("real {}:80 weight 1", real_ip(1)),
        format!("real {}:80 weight 2", real_ip(2)),
        "TCP_CHECK".to_string(),
        "VI_OBS".to_string(),
        "10.200.0.150/32".to_string(),
    ] {
        assert!(
            data.contains(&want),
            "{want:?} not in /tmp/lb.data:\n{data}"
        );
    }

    lab.signal("dir", "lb", libc::SIGUSR2).unwrap();
    let stats = wait("SIGUSR2 dump", Duration::from_secs(5), || {
        std::fs::read_to_string(STATS).ok()
    });
    assert_eq!(
        std::fs::metadata(STATS).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let svc_row = stats
        .lines()
        .find(|l| l.starts_with(&format!("TCP {VIP}:80")))
        .unwrap_or_else(|| panic!("no service row:\n{stats}"));
    assert_eq!(svc_row.split_whitespace().nth(2), Some("10"), "{stats}");
    assert!(stats.contains("new_flows"), "{stats}");
    assert!(stats.contains("VI_OBS (eth0 vrid 77)"), "{stats}");

    // The same through the API.
    let d: Value =
        serde_json::from_str(&lab.lb(&["dump", "--json", "--socket", &sock]).unwrap()).unwrap();
    assert_eq!(
        d["status"]["services"][0]["service"],
        format!("TCP {VIP}:80")
    );
    assert_eq!(d["vrrp"]["instances"][0]["name"], "VI_OBS");
    assert_eq!(d["checks"]["checkers"].as_array().unwrap().len(), 2);
    let st: Value = serde_json::from_str(
        &lab.lb(&["dump", "--stats", "--json", "--socket", &sock])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(st["table"]["services"][0]["stats"]["conns"], 10);
    assert!(st["counters"]["counters"]["new_flows"].as_u64().unwrap() >= 10);
    let text = lab.lb(&["dump", "--socket", &sock]).unwrap();
    assert!(
        text.contains("VI_OBS") && text.contains("TCP_CHECK"),
        "{text}"
    );

    // Signals sent by habit: the agent keeps running and answering.
    for (sig, name) in [
        (libc::SIGHUP, "HUP"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
        (libc::SIGPIPE, "PIPE"),
        (libc::SIGWINCH, "WINCH"),
        (libc::SIGALRM, "ALRM"),
        (libc::SIGPWR, "PWR"),
        (libc::SIGIO, "IO"),
    ] {
        lab.signal("dir", "lb", sig).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            matches!(proc_state(pid), Some(c) if c != 'Z'),
            "SIG{name} killed the agent:\n{}",
            lab.log("dir", "lb")
        );
        lab.lb(&["status", "--socket", &sock])
            .unwrap_or_else(|e| panic!("no answer after SIG{name}: {e}"));
    }
    let t = lab.http_get(&format!("{VIP}:80"), 4).unwrap();
    assert_eq!(
        t.values().sum::<usize>(),
        4,
        "forwarding after the signals: {t:?}"
    );

    // SIGQUIT: a clean stop (VRRP released, XDP detached), not a core dump.
    lab.signal("dir", "lb", libc::SIGQUIT).unwrap();
    wait(
        "the agent stops on SIGQUIT",
        Duration::from_secs(10),
        || matches!(proc_state(pid), None | Some('Z')).then_some(()),
    );
    let log = lab.log("dir", "lb");
    assert!(log.contains("stopping: detaching XDP"), "{log}");
    assert!(!Path::new(&sock).exists(), "the socket was removed");
}
