//! Forwarding that outlives the agent, end to end in network namespaces
//! (a standalone LVS-DR director, no VRRP): a SIGKILLed agent leaves XDP
//! attached (its link is pinned) and the next one takes the link over and
//! replaces the program in place; `lb stop --keep-forwarding` does the same
//! for an upgrade to another binary; SIGTERM still detaches. Throughout, a
//! client opens a new connection every 20 ms (`nsprobe load`) and 20
//! long-lived keep-alive connections send a request every 200 ms (`nsprobe
//! hold-many`). Needs root; tests run one at a time.
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use lb_tests::{real_ip, Bins, Lab, AGENT_ARGS, VIP};

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(&format!("lbc{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// Two reals with a TCP_CHECK each, `alpha` (keepalived starts such a
/// checker down) and a first probe up to `delay_loop` (3 s, keepalived's
/// warmup) after the start: an agent that started its checkers from
/// keepalived's initial state would take both reals out at a restart.
fn config() -> String {
    format!(
        "virtual_server {VIP} 80 {{\n  delay_loop 3\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  alpha\n\
           real_server {r1} 80 {{\n    weight 1\n    TCP_CHECK {{\n      connect_timeout 1\n    }}\n  }}\n\
           real_server {r2} 80 {{\n    weight 1\n    TCP_CHECK {{\n      connect_timeout 1\n    }}\n  }}\n}}\n",
        r1 = real_ip(1),
        r2 = real_ip(2),
    )
}

fn vip80() -> String {
    format!("{VIP}:80")
}

const ADOPTED: &str = "adopted the XDP link of a previous agent on eth0, program replaced";

/// `nsprobe ARGS` in the client's namespace, in the background.
struct Probe(Option<Child>);

impl Probe {
    fn start(lab: &Lab, args: &[&str]) -> Probe {
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns("cl")])
            .arg(&lab.bins.nsprobe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsprobe");
        Probe(Some(child))
    }

    /// Waits for the end (nsprobe bounds its own run); its output.
    fn finish(mut self) -> String {
        let out = self.0.take().unwrap().wait_with_output().expect("nsprobe");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The number after `key` on its own line of `out`.
fn value(out: &str, key: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{key} N` line in:\n{out}"))
}

/// Whether XDP is attached to the director's eth0 (`ip link`).
fn xdp_on_eth0(lab: &Lab) -> bool {
    let out = lab.exec("dir", &["ip", "link", "show", "eth0"]).unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

fn wait_both_reals(lab: &Lab, limit: Duration) {
    let bpffs = lab.bpffs().to_string_lossy().into_owned();
    let start = Instant::now();
    loop {
        let l = lab.lb(&["list", "--bpffs", &bpffs]).unwrap();
        if l.contains(&format!("{}:80", real_ip(1))) && l.contains(&format!("{}:80", real_ip(2))) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "both reals not up within {limit:?}:\n{l}\n{}",
            lab.log("dir", "lb")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Seconds the client traffic runs in each test: before the stop, the 10 s
/// without agent, the next start and a few seconds after it.
const TRAFFIC_S: &str = "18";

/// Starts the client traffic for `secs` seconds: new connections and 20
/// long-lived ones.
fn traffic(lab: &Lab, secs: &str) -> (Probe, Probe) {
    let load = Probe::start(lab, &["load", &vip80(), secs, "20"]);
    let held = Probe::start(lab, &["hold-many", &vip80(), "20", secs, "200"]);
    (load, held)
}

/// Checks the client traffic's results: no failed request, no reset or
/// moved connection.
fn check_traffic(lab: &Lab, load: Probe, held: Probe, what: &str) {
    let load = load.finish();
    let held = held.finish();
    eprintln!("{what}: nsprobe load:\n{load}\nnsprobe hold-many:\n{held}");
    let log = lab.log("dir", "lb");
    assert_eq!(
        value(&load, "fail"),
        0,
        "{what}: new connections failed\n{load}\n{log}"
    );
    assert!(
        value(&load, "r1") + value(&load, "r2") > 100,
        "{what}: too few requests\n{load}"
    );
    assert_eq!(
        value(&held, "resets"),
        0,
        "{what}: connections died\n{held}\n{log}"
    );
    assert_eq!(
        value(&held, "failed"),
        0,
        "{what}: unanswered requests\n{held}\n{log}"
    );
    assert_eq!(
        value(&held, "changed"),
        0,
        "{what}: connections moved\n{held}"
    );
    let conns: Vec<&str> = held.lines().filter(|l| l.starts_with("conn ")).collect();
    assert_eq!(conns.len(), 20, "{held}");
    for c in conns {
        let first = c.split_whitespace().find_map(|w| w.strip_prefix("first="));
        let last = c.split_whitespace().find_map(|w| w.strip_prefix("last="));
        assert!(
            first.is_some_and(|f| f.starts_with('r')) && first == last,
            "{c}"
        );
        let requests: u64 = c
            .split_whitespace()
            .find_map(|w| w.strip_prefix("requests=")?.parse().ok())
            .unwrap();
        assert!(requests >= 40, "a request every 200 ms for 18 s: {c}");
    }
}

#[test]
fn sigkill_then_restart_forwards_without_a_failure_and_keeps_health() {
    let _g = lb_tests::serial();
    let mut lab = lab("kill");
    let conf = config();
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    // alpha: the reals come in after their first probe.
    wait_both_reals(&lab, Duration::from_secs(10));
    let (load, held) = traffic(&lab, TRAFFIC_S);
    std::thread::sleep(Duration::from_secs(2));

    lab.signal("dir", "lb", libc::SIGKILL).unwrap();
    lab.stop("dir", "lb").unwrap();
    assert!(xdp_on_eth0(&lab), "XDP must stay attached after SIGKILL");
    std::thread::sleep(Duration::from_secs(10));
    assert!(xdp_on_eth0(&lab), "XDP still attached 10 s later");

    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    let log = lab.log("dir", "lb");
    assert!(log.contains(ADOPTED), "{log}");
    // Health: the checkers start from the pinned verdicts (both up), not
    // from alpha's down.
    wait_both_reals(&lab, Duration::from_millis(500));
    let sock = lab.socket().to_string_lossy().into_owned();
    let checks = lab.lb(&["list", "--checks", "--socket", &sock]).unwrap();
    assert!(!checks.contains("DOWN"), "{checks}");
    check_traffic(&lab, load, held, "SIGKILL + restart");
    let log = lab.log("dir", "lb");
    assert!(
        log.contains("checked reals start from the health the pinned tables show"),
        "{log}"
    );
    assert!(
        !log.contains("real server DOWN"),
        "no DOWN transition:\n{log}"
    );
    wait_both_reals(&lab, Duration::from_millis(500));
}

#[test]
fn upgrade_to_another_binary_takes_the_link_over_without_a_failure() {
    let _g = lb_tests::serial();
    let mut lab = lab("upg");
    let conf = config();
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    wait_both_reals(&lab, Duration::from_secs(10));
    // The "new version": another file with other bytes (data after the ELF
    // image changes the binary, not what it runs); what matters is that it
    // loads its own program and puts it in place of the running one.
    let next = lab.workdir.join("lb-next");
    let mut bytes = std::fs::read(&lab.bins.lb).unwrap();
    bytes.extend_from_slice(b"\nlb continuity test: the next version\n");
    std::fs::write(&next, bytes).unwrap();
    std::fs::set_permissions(&next, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let (load, held) = traffic(&lab, TRAFFIC_S);
    std::thread::sleep(Duration::from_secs(2));
    let sock = lab.socket().to_string_lossy().into_owned();
    let out = lab
        .lb(&["stop", "--keep-forwarding", "--socket", &sock])
        .unwrap();
    assert!(out.contains("stopped"), "{out}");
    let old_log = lab.log("dir", "lb");
    lab.stop("dir", "lb").unwrap();
    assert!(old_log.contains("leaving XDP and tc attached"), "{old_log}");
    assert!(
        xdp_on_eth0(&lab),
        "XDP stays attached after lb stop --keep-forwarding"
    );
    assert!(lab.bpffs().join("link_xdp_eth0").exists());
    std::thread::sleep(Duration::from_secs(10));

    lab.bins.lb = next;
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    let log = lab.log("dir", "lb");
    let adopted = log
        .lines()
        .find(|l| l.contains(ADOPTED))
        .unwrap_or_else(|| panic!("{log}"));
    let id = |key: &str| -> u64 {
        adopted
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {adopted}"))
    };
    assert_ne!(
        id("old_program="),
        id("new_program="),
        "the link runs the new agent's program: {adopted}"
    );
    check_traffic(&lab, load, held, "upgrade");
}

#[test]
fn sigterm_detaches_unless_a_deferred_keep_forwarding_stop_was_asked() {
    let _g = lb_tests::serial();
    let mut lab = lab("term");
    let conf = config();
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    assert!(xdp_on_eth0(&lab));
    assert!(lab.bpffs().join("link_xdp_eth0").exists());

    // `systemctl restart` after `lb stop --keep-forwarding --defer`: the
    // SIGTERM leaves XDP attached.
    let sock = lab.socket().to_string_lossy().into_owned();
    let out = lab
        .lb(&["stop", "--keep-forwarding", "--defer", "--socket", &sock])
        .unwrap();
    assert!(out.contains("next SIGTERM"), "{out}");
    lab.stop("dir", "lb").unwrap();
    assert!(
        xdp_on_eth0(&lab),
        "deferred keep-forwarding stop\n{}",
        lab.log("dir", "lb")
    );

    // The next agent takes it over; a plain SIGTERM then detaches and
    // unpins (the maps stay pinned). Measured, not asserted: what a plain
    // SIGTERM + start (`systemctl restart lb` without the deferred stop)
    // costs the client traffic.
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    assert!(
        lab.log("dir", "lb").contains(ADOPTED),
        "{}",
        lab.log("dir", "lb")
    );
    wait_both_reals(&lab, Duration::from_secs(10));
    let (load, held) = traffic(&lab, "8");
    std::thread::sleep(Duration::from_secs(2));
    let stopping = Instant::now();
    lab.stop("dir", "lb").unwrap();
    let log = lab.log("dir", "lb");
    assert!(log.contains("stopping: detaching XDP"), "{log}");
    assert!(!xdp_on_eth0(&lab), "SIGTERM detaches XDP\n{log}");
    assert!(!lab.bpffs().join("link_xdp_eth0").exists());
    assert!(!lab.bpffs().join("link_tc_eth0").exists());
    assert!(
        lab.bpffs().join("LB_CONNTRACK").exists(),
        "maps stay pinned"
    );

    // A start after a detaching stop attaches anew (nothing to adopt), and
    // `lb stop` (no option) detaches as SIGTERM does.
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    let gap = stopping.elapsed();
    assert!(!lab.log("dir", "lb").contains(ADOPTED));
    let (load, held) = (load.finish(), held.finish());
    eprintln!(
        "SIGTERM + start (detached for {gap:?} until the new agent ran): nsprobe load:\n{load}\nnsprobe hold-many:\n{held}"
    );
    let out = lab.lb(&["stop", "--socket", &sock]).unwrap();
    assert!(out.contains("stopped"), "{out}");
    assert!(!xdp_on_eth0(&lab), "lb stop detaches XDP");
}

#[test]
fn a_pinned_link_in_another_mode_is_replaced_by_a_fresh_attach() {
    let _g = lb_tests::serial();
    let mut lab = lab("mode");
    let conf = config();
    let mut skb = AGENT_ARGS.to_vec();
    skb.extend(["--xdp-mode", "skb"]);
    lab.start_agent(&conf, &skb).unwrap();
    let link = |lab: &Lab| {
        let out = lab.exec("dir", &["ip", "link", "show", "eth0"]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(link(&lab).contains("xdpgeneric"), "{}", link(&lab));
    lab.signal("dir", "lb", libc::SIGKILL).unwrap();
    lab.stop("dir", "lb").unwrap();
    assert!(link(&lab).contains("xdpgeneric"), "kept after SIGKILL");

    // Native mode asked for: the skb-mode link is not taken over.
    lab.start_agent(&conf, AGENT_ARGS).unwrap();
    let log = lab.log("dir", "lb");
    assert!(!log.contains(ADOPTED), "{log}");
    assert!(
        log.contains("runs in skb mode, native mode is asked for"),
        "{log}"
    );
    let l = link(&lab);
    assert!(l.contains("prog/xdp") && !l.contains("xdpgeneric"), "{l}");
    wait_both_reals(&lab, Duration::from_secs(10));
    let t = lab.http_get(&vip80(), 20).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    assert_eq!(
        t.get("r1").copied().unwrap_or(0) + t.get("r2").copied().unwrap_or(0),
        20,
        "{t:?}"
    );
}
