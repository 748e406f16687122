//! The configuration reader against hostile or moving input, with a running
//! agent: a file nested 10,300 blocks deep, a file rewritten in place while
//! SIGHUPs arrive, an include of a FIFO. Each test is one of issue 13's
//! failing inputs. Needs root; tests run one at a time.
use std::{
    io::Write as _,
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use lb_tests::{real_ip, Bins, Lab, AGENT_ARGS, VIP};

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(&format!("lbl{}{name}", std::process::id() % 1000), bins, 1).expect("lab")
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `n` DR services on ports 1000.. with one unchecked real each.
fn services(n: usize) -> String {
    let mut t = String::from("# services for the reader test\n");
    for i in 0..n {
        t.push_str(&format!(
            "virtual_server {VIP} {} {{\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  real_server {} {} {{\n    weight 1\n  }}\n}}\n",
            1000 + i,
            real_ip(1),
            1000 + i
        ));
    }
    t
}

/// Services in the data plane (`lb list`).
/// `line` without the terminal colour sequences of the agent's log.
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … final letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn count(lab: &Lab) -> usize {
    lab.lb(&["list", "--bpffs", &s(&lab.bpffs())])
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("TCP"))
        .count()
}

fn agent_alive(lab: &Lab, pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        !st.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    }) && lab
        .lb(&["status", "--json", "--socket", &s(&lab.socket())])
        .is_ok()
}

#[test]
fn sighup_with_a_file_nested_10300_deep_keeps_the_agent_serving() {
    let _g = lb_tests::serial();
    let mut lab = lab("nest");
    lab.start_agent(&services(3), AGENT_ARGS).unwrap();
    let pid = lab.pid("dir", "lb").unwrap();
    assert_eq!(count(&lab), 3);
    std::fs::write(lab.config_path(), format!("a {}\n", "{".repeat(10_300))).unwrap();
    lab.signal("dir", "lb", libc::SIGHUP).unwrap();
    // The reload reads, waits 100 ms, reads again and refuses.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(agent_alive(&lab, pid), "the agent died on the nested file");
    assert_eq!(count(&lab), 3, "the running table changed");
    // `lb reload` says why.
    let out = Command::new(&lab.bins.lb)
        .args(["reload", "--socket", &s(&lab.socket())])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(64), "{stdout}");
    assert!(stdout.contains("MAX_BLOCK_DEPTH"), "{stdout}");
}

#[test]
fn a_file_rewritten_in_place_during_sighups_is_never_applied_half_written() {
    let _g = lb_tests::serial();
    let mut lab = lab("rewrite");
    let (a, b) = (services(30), services(50));
    lab.start_agent(&a, AGENT_ARGS).unwrap();
    let pid = lab.pid("dir", "lb").unwrap();
    assert_eq!(count(&lab), 30);
    let stop = Arc::new(AtomicBool::new(false));
    // As `cat > keepalived.conf`: truncate, then write in pieces; the two
    // versions alternate with pauses of 0 to 300 ms.
    let writer = {
        let (stop, path) = (stop.clone(), lab.config_path());
        std::thread::spawn(move || {
            let mut seed = 0x2545_f491_u64;
            let mut rewrites = 0;
            while !stop.load(Ordering::Relaxed) {
                let text = if rewrites % 2 == 0 { &b } else { &a };
                let mut f = std::fs::File::create(&path).unwrap();
                for chunk in text.as_bytes().chunks(512) {
                    f.write_all(chunk).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(f);
                rewrites += 1;
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                std::thread::sleep(Duration::from_millis((seed >> 33) % 300));
            }
            rewrites
        })
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        lab.signal("dir", "lb", libc::SIGHUP).unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    stop.store(true, Ordering::Relaxed);
    let rewrites = writer.join().unwrap();
    // What each reload applied, as the agent logs it once the maps are
    // written (`lb list` reads the maps themselves and may catch one between
    // the removal of a service and the addition of another).
    let log = lab.log("dir", "lb");
    let mut seen = std::collections::BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("configuration reloaded")) {
        let plain = strip_ansi(line);
        let n: usize = plain
            .split("services=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no service count in {plain:?}"));
        *seen.entry(n).or_insert(0u32) += 1;
        if n != 30 && n != 50 {
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "a reload applied a partial file: {n} services; agent log, last lines first:\n{}",
                tail.join("\n")
            );
        }
    }
    eprintln!("{rewrites} rewrites; services applied by the reloads: {seen:?}");
    assert!(
        seen.len() == 2,
        "both versions were applied at some point: {seen:?}"
    );
    assert!(agent_alive(&lab, pid));
    // Settled: the last version is applied.
    let last = std::fs::read_to_string(lab.config_path()).unwrap();
    let want = if last == services(50) { 50 } else { 30 };
    lab.signal("dir", "lb", libc::SIGHUP).unwrap();
    let t = Instant::now();
    while count(&lab) != want {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the settled file was not applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_include_of_a_fifo_is_an_error_at_once_and_an_empty_file_is_applied_with_warnings() {
    let _g = lb_tests::serial();
    let mut lab = lab("fifo");
    lab.start_agent(&services(2), AGENT_ARGS).unwrap();
    let pid = lab.pid("dir", "lb").unwrap();
    let dir = lab.config_path().parent().unwrap().to_owned();
    let fifo = dir.join("fifo.conf");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let text = format!("{}include fifo.conf\n", services(1));
    std::fs::write(lab.config_path(), &text).unwrap();
    let t = Instant::now();
    let out = Command::new(&lab.bins.lb)
        .args(["check-config", &s(&lab.config_path())])
        .output()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "check-config blocked on the FIFO"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(64), "{stdout}");
    let line = text.lines().count();
    assert!(
        stdout.contains(&format!(
            "{}:{line}:1: error: include:",
            s(&lab.config_path())
        )) && stdout.contains("a FIFO"),
        "{stdout}"
    );
    // The agent: refused at once, still serving, and SIGTERM still works.
    let t = Instant::now();
    let out = Command::new(&lab.bins.lb)
        .args(["reload", "--socket", &s(&lab.socket())])
        .output()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the reload blocked on the FIFO"
    );
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(agent_alive(&lab, pid));
    assert_eq!(count(&lab), 2);
    // An empty file: applied, as keepalived does, with warnings naming it.
    std::fs::write(lab.config_path(), "").unwrap();
    let out = Command::new(&lab.bins.lb)
        .args(["reload", "--socket", &s(&lab.socket())])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let file = s(&lab.config_path());
    assert!(
        stdout.contains(&format!("{file}:1:1: warning: no statements in this file")),
        "{stdout}"
    );
    assert!(
        stdout.contains("this reload removes all 2 running service(s)"),
        "{stdout}"
    );
    assert_eq!(count(&lab), 0);
}
