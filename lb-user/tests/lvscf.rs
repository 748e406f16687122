//! `lb import-lvs-cf` on Piranha lvs.cf files (`fixtures/lvscf/`): the
//! seed's setup (DR, both routers), NAT with nat_router, an inactive real,
//! a real on another port and an unmappable send/expect, TUN with
//! persistence, send_program, UDP and an inactive virtual server; a file
//! full of mistakes. The exact keepalived.conf and warnings are asserted,
//! and every output passes `lb check-config` and keepalived 2.2.7's
//! `keepalived -t` (as root, where keepalived is installed).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use lb_user::{
    config,
    lvscf::{self, Router},
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lvscf")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Imports fixture `name` as the CLI does from the fixture directory.
fn import(name: &str, router: Router) -> lvscf::Import {
    lvscf::import(&read(name), Path::new(name), router, 51)
}

fn rendered(i: &lvscf::Import) -> String {
    i.diags.iter().map(|d| format!("{d}\n")).collect()
}

/// (lvs.cf, router, expected keepalived.conf, expected warnings)
const CASES: &[(&str, Router, &str, &str)] = &[
    (
        "seed-003.cf",
        Router::Primary,
        "seed-003.conf",
        "seed-003.warnings",
    ),
    (
        "seed-003.cf",
        Router::Backup,
        "seed-003-backup.conf",
        "seed-003.warnings",
    ),
    ("nat.cf", Router::Primary, "nat.conf", "nat.warnings"),
    (
        "tunnel.cf",
        Router::Primary,
        "tunnel.conf",
        "tunnel.warnings",
    ),
];

#[test]
fn fixtures_convert_to_the_expected_keepalived_conf() {
    for &(cf, router, conf, warnings) in CASES {
        let i = import(cf, router);
        assert!(!i.has_errors(), "{cf}: {}", rendered(&i));
        assert_eq!(i.text, read(conf), "{cf} → {conf}");
        assert_eq!(rendered(&i), read(warnings), "{cf}: warnings");
    }
}

#[test]
fn outputs_pass_lb_check_config() {
    // (conf, virtual servers, warnings of check-config)
    for (conf, services, warnings) in [
        ("seed-003.conf", 1, 0),
        ("seed-003-backup.conf", 1, 0),
        ("nat.conf", 2, 0),
        // The send_program (/usr/local/bin/smtp-probe) does not exist here.
        ("tunnel.conf", 2, 1),
    ] {
        let loaded = config::load_str(&read(conf), Path::new(conf));
        assert!(!loaded.has_errors(), "{conf}: {:?}", loaded.diags);
        assert_eq!(loaded.config.services.len(), services, "{conf}");
        assert_eq!(loaded.config.vrrp.instances.len(), 1, "{conf}");
        assert_eq!(loaded.diags.len(), warnings, "{conf}: {:?}", loaded.diags);
    }
}

/// Network interfaces of this machine other than loopback, eth0 first.
fn interfaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n != "lo")
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|n| (n != "eth0", n.clone()));
    v
}

#[test]
fn outputs_pass_keepalived_t() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: keepalived -t needs root");
        return;
    }
    if Command::new("keepalived")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: keepalived is not installed");
        return;
    }
    // keepalived checks that the interfaces exist: eth0 and eth1 of the
    // fixtures become two interfaces of this machine.
    let ifs = interfaces();
    if ifs.len() < 2 || ifs[0] != "eth0" {
        eprintln!("skipped: keepalived -t needs eth0 and a second interface here, found {ifs:?}");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("lb-lvscf-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for &(_, _, conf, _) in CASES {
        let text = read(conf).replace("eth1", &ifs[1]);
        let path = tmp.join(conf);
        std::fs::write(&path, text).unwrap();
        let out = Command::new("keepalived")
            .args(["-t", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keepalived -t {conf}: {:?}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

fn lb(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(args)
        .current_dir(dir())
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

#[test]
fn the_command_prints_the_conf_and_the_warnings_apart() {
    let out = lb(&["import-lvs-cf", "seed-003.cf"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        read("seed-003.conf")
    );
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        read("seed-003.warnings")
    );
    let out = lb(&["import-lvs-cf", "--router", "backup", "seed-003.cf"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        read("seed-003-backup.conf")
    );
}

#[test]
fn mistakes_are_errors_with_their_lines_and_nothing_is_printed() {
    let out = lb(&["import-lvs-cf", "errors.cf"]);
    assert_eq!(out.status.code(), Some(64));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        read("errors.warnings")
    );
    // A backup router's file from an lvs.cf without one.
    let i = import("tunnel.cf", Router::Backup);
    assert!(i.has_errors());
    assert_eq!(i.text, "");
    assert_eq!(
        i.diags[0].to_string(),
        "tunnel.cf:4:1: error: backup_active: --router backup: this lvs.cf has no active backup router"
    );
    let out = lb(&["import-lvs-cf", "missing.cf"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("lb: cannot read missing.cf: "),
        "{out:?}"
    );
}

#[test]
fn locality_schedulers_carry_over_and_fwmark_services_with_a_warning() {
    let cf = "primary = 10.0.0.2\nbackup_active = 1\nbackup = 10.0.0.3\nnetwork = direct\n\
              virtual cache {\n active = 1\n address = 10.0.0.80 eth0:1\n scheduler = lblc\n fwmark = 7\n\
              server c1 {\n  address = 10.1.0.1\n  active = 1\n  weight = 0x10\n }\n}\n";
    let i = lvscf::import(cf, Path::new("cache.cf"), Router::Primary, 9);
    assert!(!i.has_errors(), "{}", rendered(&i));
    assert_eq!(
        rendered(&i),
        "cache.cf:5:1: warning: virtual: lvs.cf has no check interval: delay_loop is left at keepalived's default (60 s); set it to the interval wanted\n\
         cache.cf:9:2: warning: fwmark: written as a virtual_server for the virtual's address and port; lb cannot select a service by firewall mark (netfilter marks packets after the XDP program has run), so the other ports the mark groups are not carried over\n"
    );
    assert!(i.text.contains("    virtual_router_id 9\n"), "{}", i.text);
    assert!(
        i.text
            .contains("virtual_server 10.0.0.80 80 {\n    lb_algo lblc\n    lb_kind DR\n"),
        "{}",
        i.text
    );
    // Piranha reads numbers with strtol(…, 0): 0x10 is 16.
    assert!(i.text.contains("        weight 16\n"), "{}", i.text);
}
