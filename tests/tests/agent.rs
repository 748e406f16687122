//! The agent as an operator meets it: a responsive control API whatever its
//! clients do, one agent per pin directory and per socket, clean failed
//! starts, located reload errors, early signals and root-only places.
//! Each test is one of issue 12's failing inputs. Needs root; tests run one
//! at a time.
use std::{
    io::{Read, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use lb_tests::{real_ip, Bins, Lab, AGENT_ARGS, VIP};

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(&format!("lba{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

const TIMING: &str = "connect_timeout 1\n      retry 1\n      delay_before_retry 1";

/// Two DR reals on port 80 checked with TCP_CHECK on 8080 (or only the
/// first `reals` of them).
fn service(reals: usize) -> String {
    let mut s = format!(
        "virtual_server {VIP} 80 {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n"
    );
    for i in 1..=reals {
        s.push_str(&format!(
            "  real_server {} 80 {{\n    weight 1\n    TCP_CHECK {{\n      connect_port 8080\n      {TIMING}\n    }}\n  }}\n",
            real_ip(i)
        ));
    }
    s.push_str("}\n");
    s
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs the `lb` CLI on the host; the whole output, whatever the exit code.
fn lb(lab: &Lab, args: &[&str]) -> Output {
    Command::new(&lab.bins.lb)
        .args(args)
        .output()
        .expect("running lb")
}

/// Where a second `lb run` is pointed.
struct Run<'a> {
    iface: &'a str,
    config: &'a Path,
    bpffs: &'a Path,
    socket: &'a Path,
}

/// Runs `lb run` in the director's namespace to completion (bounded).
fn lb_run_in_dir(lab: &Lab, run: Run<'_>, limit: Duration) -> Output {
    let ns = lab.ns("dir");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&lab.bins.lb)
        .args(["run", "--iface", run.iface, "--config"])
        .arg(run.config)
        .arg("--bpffs")
        .arg(run.bpffs)
        .arg("--socket")
        .arg(run.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting lb run");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "lb run still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn list(lab: &Lab) -> String {
    lab.lb(&["list", "--bpffs", &s(&lab.bpffs())]).unwrap()
}

fn status_json(lab: &Lab) -> serde_json::Value {
    let out = lab
        .lb(&["status", "--json", "--socket", &s(&lab.socket())])
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

fn agent_pid(lab: &Lab) -> u64 {
    status_json(lab)["pid"].as_u64().expect("pid")
}

/// One raw `GET /v1/status` over the socket; the HTTP status line.
fn raw_status(sock: &Path) -> String {
    let mut c = UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /v1/status HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    reply.lines().next().unwrap_or_default().to_owned()
}

/// Whether the server still holds `c` open (no EOF, no error yet).
fn still_open(c: &mut UnixStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let open = matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    c.set_nonblocking(false).unwrap();
    open
}

/// A client that sends a request one byte a second until told to stop.
struct Slow {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Slow {
    fn start(sock: &Path) -> Slow {
        let mut c = UnixStream::connect(sock).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for b in b"GET /v1/status HTTP/1.1\r\nHost: lb\r\n\r\n"
                .iter()
                .cycle()
                .take(120)
            {
                if flag.load(std::sync::atomic::Ordering::Relaxed) || c.write_all(&[*b]).is_err() {
                    return;
                }
                for _ in 0..10 {
                    if flag.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Slow {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn idle_and_slow_clients_stall_neither_the_api_nor_health_verdicts() {
    let _g = lb_tests::serial();
    let mut lab = lab("idle");
    lab.start_agent(&service(2), AGENT_ARGS).unwrap();
    let sock = lab.socket();
    let has_r2 = |l: &str| l.contains(&format!("{}:80", real_ip(2)));
    let start = Instant::now();
    while !has_r2(&list(&lab)) {
        assert!(start.elapsed() < Duration::from_secs(5), "r2 never listed");
        std::thread::sleep(Duration::from_millis(50));
    }

    // An idle client and a 1-byte-per-second client hold connections open
    // while 1,000 requests are answered.
    let mut idle = UnixStream::connect(&sock).unwrap();
    let _slow = Slow::start(&sock);
    let t = Instant::now();
    let out = lb(&lab, &["status", "--socket", &s(&sock)]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("service TCP"));
    for i in 0..1000 {
        let line = raw_status(&sock);
        assert_eq!(line, "HTTP/1.1 200 OK", "request {i}");
    }
    eprintln!(
        "1,001 requests answered in {:?} beside an idle and a slow client",
        t.elapsed()
    );
    assert!(still_open(&mut idle), "the idle client was dropped early");

    // A health transition reaches the data plane in its usual time while
    // fresh idle and slow clients are connected (keepalived's timing: at
    // most delay_loop + retry × delay_before_retry = 2 s, plus the probe;
    // the limit is health.rs's).
    let mut idle = UnixStream::connect(&sock).unwrap();
    let _slow2 = Slow::start(&sock);
    lab.stop("r2", "httpd8080").unwrap();
    let t = Instant::now();
    while has_r2(&list(&lab)) {
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "r2 not removed:\n{}",
            lab.log("dir", "lb")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "TCP_CHECK down applied {:?} after the server stopped",
        t.elapsed()
    );
    assert!(still_open(&mut idle), "the idle client was dropped early");
    let st = status_json(&lab);
    assert!(st["health_changes"].as_u64().unwrap() >= 1, "{st}");
    eprintln!(
        "verdict to maps: {} ms",
        st["last_health_apply_ms"].as_f64().unwrap()
    );
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("r1"), Some(&10), "all new requests to r1: {t:?}");

    // The server does not keep an idle client for ever (header timeout).
    let t = Instant::now();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut b = [0u8; 16];
    let n = idle.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0, "idle client got data");
    assert!(
        t.elapsed() < Duration::from_secs(29),
        "idle client never closed"
    );

    // With as many connections open as the agent serves at once, a CLI
    // request is refused with the reason (503 after its request was read)
    // and exit 75 (EX_TEMPFAIL: nothing was done, try again).
    let held: Vec<UnixStream> = (0..256)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let out = lb(&lab, &["status", "--socket", &s(&sock)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    assert!(err.contains("256 control connections"), "{err}");
    drop(held);
}

#[test]
fn a_second_agent_on_the_same_pin_directory_is_refused_and_changes_nothing() {
    let _g = lb_tests::serial();
    let mut lab = lab("twice");
    lab.start_agent(&service(2), AGENT_ARGS).unwrap();
    let before = list(&lab);
    let pid = agent_pid(&lab);
    // Same --bpffs, another socket, another interface, a table with one real.
    lab.exec("dir", &["ip", "link", "add", "lbbridge0", "type", "bridge"])
        .unwrap();
    let other = lab.config_path_of("dir2");
    std::fs::write(&other, service(1)).unwrap();
    let sock2 = lab.socket_of("dir2");
    let t = Instant::now();
    let out = lb_run_in_dir(
        &lab,
        Run {
            iface: "lbbridge0",
            config: &other,
            bpffs: &lab.bpffs(),
            socket: &sock2,
        },
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second agent started: {err}");
    assert!(
        err.contains(&format!("in use by another lb agent (pid {pid})")),
        "{err}"
    );
    assert!(!err.contains("native XDP"), "{err}");
    // Nothing of its own is left either: a socket directory it created is
    // removed again.
    let own_dir = lab.workdir.join("refused-run");
    let out = lb_run_in_dir(
        &lab,
        Run {
            iface: "lbbridge0",
            config: &other,
            bpffs: &lab.bpffs(),
            socket: &own_dir.join("lb.sock"),
        },
        Duration::from_secs(10),
    );
    assert!(!out.status.success());
    assert!(!own_dir.exists(), "the refused agent left {own_dir:?}");
    eprintln!("second agent refused in {:?}", t.elapsed());
    assert_eq!(list(&lab), before, "the first agent's table changed");
    let t = lab.http_get(&format!("{VIP}:80"), 20).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
    assert!(t.get("r2").copied().unwrap_or(0) > 0, "r2 vanished: {t:?}");
}

#[test]
fn a_second_agent_on_the_same_socket_is_refused_and_leaves_it_alone() {
    let _g = lb_tests::serial();
    let mut lab = lab("sock");
    lab.start_agent(&service(2), AGENT_ARGS).unwrap();
    lab.exec("dir", &["ip", "link", "add", "lbbridge0", "type", "bridge"])
        .unwrap();
    let pid = agent_pid(&lab);
    let out = lb_run_in_dir(
        &lab,
        Run {
            iface: "lbbridge0",
            config: &lab.config_path(),
            bpffs: &lab.bpffs_of("other"),
            socket: &lab.socket(),
        },
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second agent started: {err}");
    assert!(err.contains(&format!("(pid {pid})")), "{err}");
    // It created nothing on its own pin directory either.
    assert!(!lab.bpffs_of("other").exists(), "pin directory left behind");
    assert!(
        lab.socket().exists(),
        "the first agent's socket was removed"
    );
    assert_eq!(agent_pid(&lab), pid);
}

#[test]
fn a_failed_start_leaves_no_pinned_maps() {
    let _g = lb_tests::serial();
    let mut lab = lab("fail");
    std::fs::write(lab.config_path(), service(2)).unwrap();
    let bpffs = lab.bpffs();
    // A mistyped interface: refused before anything is created.
    let (config, socket) = (lab.config_path(), lab.socket());
    let run = |iface| Run {
        iface,
        config: &config,
        bpffs: &bpffs,
        socket: &socket,
    };
    let out = lb_run_in_dir(&lab, run("eht0"), Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no interface named eht0"), "{err}");
    assert!(!bpffs.exists(), "pin directory created: {bpffs:?}");
    // An interface without an Ethernet address (loopback): refused the same way.
    let out = lb_run_in_dir(&lab, run("lo"), Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("has no Ethernet address"), "{err}");
    assert!(!bpffs.exists(), "pin directory created: {bpffs:?}");
    // An attach that fails after the maps were created (a bridge
    // interface has no native XDP): the maps this start pinned are removed again.
    lab.exec("dir", &["ip", "link", "add", "lbbridge0", "type", "bridge"])
        .unwrap();
    let out = lb_run_in_dir(&lab, run("lbbridge0"), Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "attached to a bridge natively?");
    let left: Vec<_> = std::fs::read_dir(&bpffs)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "maps left behind: {left:?}\n{err}");
    assert!(!lab.socket().exists(), "socket left behind");
    // Tables an earlier agent left hold its flows: a restart that fails,
    // with another file, leaves them as they were.
    lab.start_agent(&service(2), AGENT_ARGS).unwrap();
    let before = list(&lab);
    lab.stop("dir", "lb").unwrap();
    std::fs::write(&config, service(1)).unwrap();
    let out = lb_run_in_dir(&lab, run("lbbridge0"), Duration::from_secs(30));
    assert!(!out.status.success(), "attached to a bridge natively?");
    assert_eq!(list(&lab), before, "a failed restart rewrote the tables");
}

#[test]
fn reload_of_a_broken_file_shows_located_errors_and_keeps_the_running_table() {
    let _g = lb_tests::serial();
    let mut lab = lab("reload");
    lab.start_agent(&service(2), AGENT_ARGS).unwrap();
    let before = list(&lab);
    let broken = format!(
        "virtual_server {VIP} 80 {{\n  lb_algo nosuch\n  lb_kind DR\n  protocol TCP\n  real_server 10.300.0.1 80 {{\n  }}\n}}\n"
    );
    std::fs::write(lab.config_path(), broken).unwrap();
    let out = lb(&lab, &["reload", "--socket", &s(&lab.socket())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(64), "{stdout}");
    let file = s(&lab.config_path());
    assert!(
        stdout.contains(&format!("{file}:2:")) && stdout.contains("lb_algo"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("{file}:5:")), "{stdout}");
    assert!(stdout.contains("reload refused"), "{stdout}");
    assert_eq!(list(&lab), before, "the running table changed");
    // A good file again: applied, exit 0.
    std::fs::write(lab.config_path(), service(1)).unwrap();
    let out = lb(&lab, &["reload", "--socket", &s(&lab.socket())]);
    assert!(out.status.success(), "{out:?}");
    assert!(!list(&lab).contains(&format!("{}:80", real_ip(2))));
}

#[test]
fn sighup_right_after_start_reloads_instead_of_killing_the_agent() {
    let _g = lb_tests::serial();
    let mut lab = lab("hup");
    lab.spawn_agent_on("dir", &service(2), AGENT_ARGS).unwrap();
    // `ip netns exec` becomes `lb` (same pid) once it has entered the
    // namespace. From lb's first instruction in main SIGHUP is held or
    // caught (nothing can act before main runs; a service manager waits for
    // readiness): from then on, as `systemctl reload` right after `systemctl
    // start`, signals while the agent starts, loads the program and pins
    // its maps.
    let pid = lab.pid("dir", "lb").unwrap();
    let sighup_taken = || {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        exe.as_deref() == Some(lab.bins.lb.as_path())
            && st.lines().any(|l| {
                (l.starts_with("SigBlk:") || l.starts_with("SigCgt:"))
                    && u64::from_str_radix(l[7..].trim(), 16).is_ok_and(|m| m & 1 != 0)
            })
    };
    // An lb that takes SIGHUP only later is signalled once it has run 30 ms
    // of CPU time since the exec (long after main began, long before the
    // verifier is done).
    let cpu_ticks = || {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = st.rsplit(')').next().unwrap_or_default();
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after ")".
        f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
    };
    let t = Instant::now();
    let mut base = None;
    while !sighup_taken() {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if exe.as_deref() == Some(lab.bins.lb.as_path()) {
            let b = *base.get_or_insert_with(cpu_ticks);
            if cpu_ticks() >= b + 3 {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(5), "lb never started");
        std::thread::yield_now();
    }
    eprintln!(
        "signalling after {:?}: SIGHUP taken {}, {} CPU ticks",
        t.elapsed(),
        sighup_taken(),
        cpu_ticks()
    );
    // 60 signals over the first ~0.5 s: while the maps are created and the
    // verifier runs (a pending signal makes it give up with EAGAIN).
    for ms in [0u64, 1, 5, 20, 50, 100, 150, 200, 300]
        .into_iter()
        .chain([5; 51])
    {
        std::thread::sleep(Duration::from_millis(ms));
        lab.signal("dir", "lb", libc::SIGHUP).unwrap();
    }
    lab.wait_resolved(Duration::from_secs(10))
        .unwrap_or_else(|e| {
            let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            panic!("{e}\nagent status:\n{st}")
        });
    let st = status_json(&lab);
    assert!(st["pid"].as_u64().is_some(), "{st}");
    let t = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(t.get("fail"), Some(&0), "{t:?}");
}

#[test]
fn places_another_user_controls_are_refused_and_new_ones_are_root_only() {
    let _g = lb_tests::serial();
    let lab = lab("perm");
    std::fs::write(lab.config_path(), service(2)).unwrap();
    // A pin directory pre-created by an unprivileged user.
    let evil = lab.bpffs_of("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::os::unix::fs::chown(&evil, Some(65534), Some(65534)).unwrap();
    let out = lb_run_in_dir(
        &lab,
        Run {
            iface: "eth0",
            config: &lab.config_path(),
            bpffs: &evil,
            socket: &lab.socket(),
        },
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert_eq!(std::fs::read_dir(&evil).unwrap().count(), 0, "pinned in it");
    // A socket directory writable by others.
    let open = lab.workdir.join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = lb_run_in_dir(
        &lab,
        Run {
            iface: "eth0",
            config: &lab.config_path(),
            bpffs: &lab.bpffs(),
            socket: &open.join("lb.sock"),
        },
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("writable by others"), "{err}");
    // Under umask 000 the socket's new directory is still 0700, the socket
    // 0600 and the pin directory 0700.
    let sockdir = lab.workdir.join("run/lb");
    let sock = sockdir.join("lb.sock");
    let ns = lab.ns("dir");
    let cmd = format!(
        "umask 000; exec ip netns exec {ns} {} run --iface eth0 --config {} --bpffs {} --socket {} --conntrack-size 65536",
        s(&lab.bins.lb),
        s(&lab.config_path()),
        s(&lab.bpffs()),
        s(&sock)
    );
    let mut child = Command::new("sh")
        .args(["-c", &cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "agent did not start");
        assert!(child.try_wait().unwrap().is_none(), "agent exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let (dmode, smode, pmode) = (mode(&sockdir), mode(&sock), mode(&lab.bpffs()));
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert_eq!(dmode, 0o700, "socket directory mode {dmode:o}");
    assert_eq!(smode, 0o600, "socket mode {smode:o}");
    assert_eq!(pmode, 0o700, "pin directory mode {pmode:o}");
}

#[test]
fn list_without_a_running_agent_says_the_table_is_not_maintained() {
    let _g = lb_tests::serial();
    let mut lab = lab("orphan");
    lab.start_agent(&service(2), AGENT_ARGS).unwrap();
    let bpffs = s(&lab.bpffs());
    let out = lb(&lab, &["list", "--bpffs", &bpffs]);
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not being maintained"),
        "{out:?}"
    );
    lab.stop("dir", "lb").unwrap();
    let lock = format!("{}.lock", s(&lab.socket()));
    assert!(!Path::new(&lock).exists(), "{lock} left after SIGTERM");
    let out = lb(&lab, &["list", "--bpffs", &bpffs]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("not being maintained"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&real_ip(1)));
}
