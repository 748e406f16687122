//! Side by side with keepalived: every file of `tests/corpus/valid/` (which
//! together use every keyword lb implements) is accepted by both
//! `keepalived -t` (keepalived 2.2.7: exit 0 when the file has no
//! configuration error, 5 when it has one) and `lb check-config`, and
//! `lb check-config --dump` shows keepalived's documented defaults
//! (keepalived.conf(5), check_data.c, check_api.c, vrrp.h).
//!
//! Runs only as root with `keepalived` installed (CI has both); otherwise
//! each test prints why it is skipped. keepalived runs in a fresh network
//! namespace (`unshare -n`) holding a veth pair `eth0` / `eth1`, so that
//! the interfaces the files name exist whatever the host has.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/valid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "corpus in {}", dir.display());
    files
}

/// Why keepalived cannot be run here, if it cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (keepalived -t and unshare need it)".into());
    }
    match Command::new("keepalived").arg("--version").output() {
        Err(e) => Some(format!("keepalived not found: {e}")),
        Ok(_) => None,
    }
}

/// `keepalived -t -f FILE` in a fresh network namespace: exit code and
/// everything it printed.
fn keepalived_t(file: &Path) -> (Option<i32>, String) {
    let script = format!(
        "ip link add eth0 type veth peer name eth1 && ip link set eth0 up && ip link set eth1 up && exec keepalived -t -l -f '{}'",
        file.display()
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

fn lb_check(file: &Path, dump: bool) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lb"));
    cmd.arg("check-config");
    if dump {
        cmd.arg("--dump");
    }
    let out = cmd.arg(file).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn dump(file: &Path) -> Value {
    let (code, stdout, stderr) = lb_check(file, true);
    assert_eq!(code, Some(0), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["format"], "lb-config-dump/1");
    v
}

#[test]
fn keepalived_and_lb_both_accept_the_corpus() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    for f in corpus() {
        let (code, text) = keepalived_t(&f);
        assert_eq!(code, Some(0), "keepalived -t {}:\n{text}", f.display());
        let (code, stdout, _) = lb_check(&f, false);
        assert_eq!(code, Some(0), "lb check-config {}:\n{stdout}", f.display());
        assert!(
            stdout.ends_with("0 error(s), 0 warning(s)\n"),
            "lb check-config {}:\n{stdout}",
            f.display()
        );
    }
}

#[test]
fn dump_shows_keepalived_defaults() {
    // Needs no keepalived: the values are keepalived 2.2.7's documented
    // defaults, compared with what lb will use.
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/valid/defaults.conf");
    let v = dump(&f);
    let vs = &v["virtual_servers"][0];
    assert_eq!(
        (vs["lb_algo"].as_str(), vs["lb_kind"].as_str()),
        (Some("wlc"), Some("NAT"))
    );
    assert_eq!(vs["persistence_timeout_s"], Value::Null);
    assert_eq!(
        (vs["quorum"].as_u64(), vs["hysteresis"].as_u64()),
        (Some(1), Some(0))
    );
    let real = &vs["real_servers"][0];
    assert_eq!(real["weight"], 1);
    assert_eq!(real["inhibit_on_failure"], false);
    let c = &real["checkers"];
    let timing = |i: usize| {
        let k = &c[i];
        (
            k["type"].as_str().unwrap().to_string(),
            k["delay_loop_s"].as_f64().unwrap(),
            k["connect_timeout_s"].as_f64().unwrap(),
            k["retry"].as_u64().unwrap(),
            k["delay_before_retry_s"].as_f64().unwrap(),
            k["warmup_s"].as_f64().unwrap(),
        )
    };
    // keepalived: delay_loop 60, connect_timeout 5, retry 1,
    // delay_before_retry 1 (HTTP_GET 3; DNS_CHECK retry 3 and
    // delay_before_retry = delay_loop; MISC_CHECK retry 0), warmup up to
    // delay_loop.
    assert_eq!(timing(0), ("TCP_CHECK".into(), 60.0, 5.0, 1, 1.0, 60.0));
    assert_eq!(timing(1), ("HTTP_GET".into(), 60.0, 5.0, 1, 3.0, 60.0));
    assert_eq!(timing(2), ("MISC_CHECK".into(), 60.0, 5.0, 0, 1.0, 60.0));
    assert_eq!(timing(3), ("DNS_CHECK".into(), 60.0, 5.0, 3, 60.0, 60.0));
    assert_eq!(c[0]["connect_port"], 80, "the real's port");
    assert_eq!(c[3]["query_type"], 6, "SOA");
    let s = &v["vrrp_scripts"][0];
    assert_eq!(
        (
            s["interval_s"].as_u64(),
            s["rise"].as_u64(),
            s["fall"].as_u64(),
            s["weight"].as_i64()
        ),
        (Some(1), Some(1), Some(1), Some(0))
    );
    let i = &v["vrrp_instances"][0];
    for (key, want) in [
        ("state", Value::from("BACKUP")),
        ("priority", 100.into()),
        ("advert_int_s", 1.into()),
        ("version", 2.into()),
        ("preempt", true.into()),
        ("preempt_delay_s", 0.into()),
        ("garp_master_delay_s", 5.into()),
        ("garp_master_repeat", 5.into()),
        ("garp_master_refresh_s", 0.into()),
        ("garp_master_refresh_repeat", 1.into()),
        // keepalived.conf(5): the lower-priority ones default to the master ones.
        ("garp_lower_prio_repeat", 5.into()),
        ("garp_lower_prio_delay_s", 5.into()),
        ("lower_prio_no_advert", false.into()),
        ("higher_prio_send_advert", false.into()),
        ("use_vmac", Value::Null),
        ("authentication", Value::Null),
    ] {
        assert_eq!(i[key], want, "vrrp_instance {key}");
    }
    let g = &v["global_defs"];
    assert_eq!(g["smtp_connect_timeout_s"], 30);
    assert_eq!(g["vrrp_version"], 2);
}

#[test]
fn unset_protocol_scheduler_and_method_default_as_keepalived_says() {
    let dir = std::env::temp_dir().join(format!("lb-ka-defaults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("unset.conf");
    std::fs::write(
        &f,
        "virtual_server 10.0.0.1 80 {\n  real_server 10.0.0.2 80 {\n    weight 1\n  }\n}\n\
         vrrp_instance VI {\n  state MASTER\n  nopreempt\n  interface eth0\n  virtual_router_id 5\n  \
         virtual_ipaddress {\n    10.9.9.9\n  }\n}\n",
    )
    .unwrap();
    let v = dump(&f);
    let vs = &v["virtual_servers"][0];
    assert_eq!(
        (
            vs["protocol"].as_str(),
            vs["lb_algo"].as_str(),
            vs["lb_kind"].as_str()
        ),
        (Some("UDP"), Some("wlc"), Some("NAT"))
    );
    let i = &v["vrrp_instances"][0];
    // No priority with state MASTER: the address owner, 255 (keepalived
    // vrrp.c), which always preempts.
    assert_eq!(
        (
            i["state"].as_str(),
            i["priority"].as_u64(),
            i["preempt"].as_bool()
        ),
        (Some("MASTER"), Some(255), Some(true))
    );
    let (_, stdout, _) = lb_check(&f, false);
    for want in [
        "no protocol set; defaulting to UDP",
        "no scheduler set; using keepalived's default 'wlc'",
        "no forwarding method set; using keepalived's default NAT",
        "nopreempt is incompatible with priority 255 (the address owner); preempting",
    ] {
        assert!(stdout.contains(want), "lb: {want}\n{stdout}");
    }
    match skip_reason() {
        Some(why) => eprintln!("keepalived side skipped: {why}"),
        None => {
            // keepalived reports each (a configuration error for -t: exit 5).
            let (code, text) = keepalived_t(&f);
            assert_eq!(code, Some(5), "{text}");
            for want in [
                "no protocol set - defaulting to UDP",
                "no scheduler set, setting default 'wlc'",
                "no forwarding method set, setting default NAT",
                "nopreempt is incompatible with priority 255. resetting nopreempt",
            ] {
                assert!(text.contains(want), "keepalived: {want}\n{text}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
