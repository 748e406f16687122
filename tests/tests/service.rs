//! `lb run` as systemd's lb.service sees it (issue 14, "Installs as a
//! service" and "Logs for journald"): the sd_notify messages arrive on
//! `$NOTIFY_SOCKET` in order — `READY=1` only once XDP is attached and the
//! configuration is applied, `RELOADING=1` (with `MONOTONIC_USEC`) then
//! `READY=1` around a SIGHUP reload, `STOPPING=1` on SIGTERM — and a stderr
//! that is the journal's stream gets lines with a syslog priority prefix,
//! no timestamp and no colour codes. Needs root; tests run one at a time.
use std::{
    os::unix::{fs::MetadataExt as _, net::UnixDatagram},
    time::Duration,
};

use lb_tests::{Bins, Lab, AGENT_ARGS, VIP};

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(&format!("lbs{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// The next notification (one datagram, newline-separated assignments).
fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("no sd_notify message within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn has(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

#[test]
fn notify_ready_reloading_stopping_and_journal_lines() {
    let _g = lb_tests::serial();
    let mut lab = lab("ntf");
    let notify_path = lab.workdir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The log file Lab::spawn writes stderr to, made first so that its
    // device and inode can be named as the journal stream
    // (File::create truncates it in place).
    let log = lab.workdir.join("dir-lb.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let config = format!(
        "virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server {} 80 {{\n    weight 1\n  }}\n}}\n",
        lb_tests::real_ip(1)
    );
    std::fs::write(lab.config_path(), &config).unwrap();
    let lb = lab.bins.lb.to_string_lossy().into_owned();
    let notify_env = format!("NOTIFY_SOCKET={}", notify_path.display());
    let journal_env = format!("JOURNAL_STREAM={}:{}", meta.dev(), meta.ino());
    let (cfg, bpffs, sock_path) = (
        lab.config_path().to_string_lossy().into_owned(),
        lab.bpffs().to_string_lossy().into_owned(),
        lab.socket().to_string_lossy().into_owned(),
    );
    let mut args = vec![
        "env",
        notify_env.as_str(),
        journal_env.as_str(),
        lb.as_str(),
        "run",
        "--iface",
        "eth0",
        "--config",
        &cfg,
        "--bpffs",
        &bpffs,
        "--socket",
        &sock_path,
    ];
    args.extend_from_slice(AGENT_ARGS);
    lab.spawn("dir", &args, "lb").unwrap();

    // READY=1 first, and only when XDP is attached and the file applied.
    let ready = next(&sock);
    assert!(has(&ready, "READY=1"), "first message: {ready:?}");
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=running: 1 virtual server(s), XDP on eth0")),
        "{ready:?}"
    );
    let link = lab
        .exec("dir", &["ip", "link", "show", "dev", "eth0"])
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        link.contains("xdp"),
        "READY=1 before XDP is attached: {link}"
    );
    let table = lab
        .lb(&["list", "--bpffs", &lab.bpffs().to_string_lossy()])
        .unwrap();
    assert!(
        table.contains(&format!("TCP  {VIP}:80 rr")),
        "READY=1 before the configuration is applied:\n{table}"
    );

    // A reload: RELOADING=1 with the monotonic time, then READY=1 again.
    lab.signal("dir", "lb", libc::SIGHUP).unwrap();
    let reloading = next(&sock);
    assert!(has(&reloading, "RELOADING=1"), "{reloading:?}");
    assert!(
        reloading.lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok_and(|us| us > 0))),
        "{reloading:?}"
    );
    let reloaded = next(&sock);
    assert!(has(&reloaded, "READY=1"), "{reloaded:?}");
    assert!(
        reloaded
            .lines()
            .any(|l| l.starts_with("STATUS=running: configuration reloaded: 1 virtual server(s)")),
        "{reloaded:?}"
    );

    // A refused reload still ends with READY=1 (the agent runs on) and says
    // so in its status.
    std::fs::write(lab.config_path(), "virtual_server {\n").unwrap();
    lab.signal("dir", "lb", libc::SIGHUP).unwrap();
    assert!(has(&next(&sock), "RELOADING=1"));
    let refused = next(&sock);
    assert!(has(&refused, "READY=1"), "{refused:?}");
    assert!(
        refused
            .lines()
            .any(|l| l.starts_with("STATUS=running (last reload not applied): ")),
        "{refused:?}"
    );

    lab.signal("dir", "lb", libc::SIGTERM).unwrap();
    let stopping = next(&sock);
    assert!(has(&stopping, "STOPPING=1"), "{stopping:?}");
    lab.stop("dir", "lb").unwrap();

    // The journal got priority-prefixed lines: <6> info, <3> the refused
    // file's error; no timestamps (journald adds its own), no colours.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "colour codes in the log:\n{text}");
    // Every event line: "<N>", then the level (no timestamp before it);
    // a multi-line message's further lines are indented.
    for line in text.lines().filter(|l| !l.starts_with(char::is_whitespace)) {
        let b = line.as_bytes();
        let level = line.get(3..).unwrap_or_default().trim_start();
        assert!(
            b.len() > 3
                && b[0] == b'<'
                && (b'0'..=b'7').contains(&b[1])
                && b[2] == b'>'
                && ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                    .iter()
                    .any(|l| level.starts_with(l)),
            "not \"<N>LEVEL ...\": {line:?}\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>") && l.contains("XDP and tc (neighbour path) attached")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("<3>") && l.contains("reload refused")),
        "{text}"
    );
}
