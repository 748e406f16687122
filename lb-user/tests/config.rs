//! keepalived.conf parsing: grammar, diagnostics with locations, the
//! semantics of virtual_server / real_server, and every seed document's
//! configuration blocks.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use lb_user::config::vrrp::Version;
use lb_user::config::{
    load, load_str,
    vrrp::{Initial, Vrrp},
    Fwd, Sched, Severity,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lb-config-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn grammar_comments_quotes_braces() {
    let text = r#"
! Configuration File for keepalived
global_defs {
   router_id "LVS DEVEL"   # trailing comment
}
virtual_server 10.1.1.1 80 {   ! comment after brace
    lb_algo rr#glued comment
    protocol TCP
    real_server 10.1.1.2 80{
        weight 2
        TCP_CHECK{
            connect_port 80
        }
    }
    real_server 10.1.1.3 80
    {
        weight 3
    }
}
"#;
    let l = load_str(text, Path::new("k.conf"));
    assert!(!l.has_errors(), "{:?}", l.diags);
    let gd = &l.config.nodes[0];
    assert_eq!(gd.keyword, "global_defs");
    assert_eq!(gd.child("router_id").unwrap().args, ["LVS DEVEL"]);
    let vs = &l.config.services[0];
    assert_eq!(vs.sched, Sched::Rr);
    assert_eq!(vs.reals.len(), 2);
    assert_eq!((vs.reals[0].addr, vs.reals[0].weight), (ip("10.1.1.2"), 2));
    assert_eq!((vs.reals[1].addr, vs.reals[1].weight), (ip("10.1.1.3"), 3));
}

#[test]
fn include_with_glob_relative_to_file() {
    let d = tmpdir("include");
    std::fs::create_dir_all(d.join("conf.d")).unwrap();
    std::fs::write(d.join("main.conf"), "include conf.d/*.conf\n").unwrap();
    std::fs::write(
        d.join("conf.d/a.conf"),
        "virtual_server 10.2.0.1 80 {\n lb_algo rr\n real_server 10.2.0.2 80 { weight 1 }\n}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("conf.d/b.conf"),
        "virtual_server 10.2.0.1 443 {\n lb_algo wrr\n real_server 10.2.0.2 443 { weight 1 }\n}\n",
    )
    .unwrap();
    let l = load(&d.join("main.conf"));
    assert!(!l.has_errors(), "{:?}", l.diags);
    let ports: Vec<u16> = l.config.services.iter().map(|s| s.key.port).collect();
    assert_eq!(ports, [80, 443]);
    assert!(l.config.services[1].loc.file.ends_with("conf.d/b.conf"));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn syntax_errors_have_file_line_column() {
    let l = load_str(
        "virtual_server 10.0.0.1 80 {\n  lb_algo rr\n",
        Path::new("/etc/k.conf"),
    );
    let e: Vec<String> = l.errors().map(|d| d.to_string()).collect();
    assert_eq!(e, ["/etc/k.conf:1:28: error: unclosed '{' (missing '}')"]);
    let l = load_str("global_defs {\n}\n}\n", Path::new("k.conf"));
    assert_eq!(
        l.errors().next().unwrap().to_string(),
        "k.conf:3:1: error: unexpected '}'"
    );
    let l = load_str("global_defs {\n router_id \"abc\n}\n", Path::new("k.conf"));
    assert_eq!(
        l.errors().next().unwrap().to_string(),
        "k.conf:2:12: error: unterminated quoted string"
    );
}

/// A port-0 service (every port, in ipvs) would only match port 0 in lb's
/// data plane: refused, never accepted and ignored.
#[test]
fn a_port_zero_service_is_refused_with_the_reason() {
    let l = load_str(
        "virtual_server 10.0.0.1 0 {\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n  persistence_timeout 60\n}\n",
        Path::new("/etc/k.conf"),
    );
    let e: Vec<String> = l.errors().map(|d| d.to_string()).collect();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "/etc/k.conf:1:1: error: virtual_server: port 0 (every port of the address"
        ),
        "{e:?}"
    );
    assert!(l.config.services.is_empty());
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "virtual_server 10.0.0.300 80 {\n lb_algo lblcx\n lb_kind BRIDGE\n real_server 10.0.0.2 80 { weight x }\n}\n\
                virtual_server 10.0.0.1 99999 {\n protocol SCTP\n}\n";
    let l = load_str(text, Path::new("k.conf"));
    let e: Vec<String> = l.errors().map(|d| d.to_string()).collect();
    assert_eq!(
        e,
        [
            "k.conf:1:1: error: virtual_server: invalid IP address '10.0.0.300'",
            "k.conf:2:2: error: lb_algo: unknown scheduler 'lblcx'",
            "k.conf:3:2: error: lb_kind: unknown forwarding method 'BRIDGE'",
            "k.conf:4:28: error: weight: 'x' must be a whole number from 0 to 65535 (weight)",
            "k.conf:6:1: error: virtual_server: invalid port '99999'",
            "k.conf:7:2: error: protocol: protocol 'SCTP' not implemented yet (implemented: TCP, UDP)",
        ]
    );
    assert!(l.config.services.is_empty());
}

#[test]
fn unknown_and_unimplemented_keywords_are_warnings_naming_file_line_keyword() {
    let text = "frobnicate 1\nstatic_ipaddress {\n 10.9.9.9/24 dev eth0\n}\n\
                virtual_server 10.0.0.1 80 {\n ha_suspend\n bogus_kw 1\n \
                real_server 10.0.0.2 80 {\n  weight 1\n  SMTP_CHECK {\n   helo_name x\n  }\n }\n}\n";
    let l = load_str(text, Path::new("k.conf"));
    assert!(!l.has_errors());
    let w: Vec<String> = l
        .diags
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        w,
        [
            "k.conf:1:1: warning: frobnicate: unknown keyword; ignored",
            "k.conf:2:1: warning: static_ipaddress: this block not implemented yet; parsed and ignored",
            "k.conf:6:2: warning: ha_suspend: keyword not implemented yet; parsed and ignored",
            "k.conf:7:2: warning: bogus_kw: unknown keyword in virtual_server; ignored",
            "k.conf:5:1: warning: protocol: virtual server 10.0.0.1:80: no protocol set; defaulting to UDP (as keepalived 2.2.7, whose kernel default it is)",
            "k.conf:5:1: warning: lb_algo: virtual server 10.0.0.1:80: no scheduler set; using keepalived's default 'wlc'",
            "k.conf:5:1: warning: lb_kind: virtual server 10.0.0.1:80: no forwarding method set; using keepalived's default NAT",
        ]
    );
    // The other blocks are kept for later features.
    let vi = l
        .config
        .nodes
        .iter()
        .find(|n| n.keyword == "static_ipaddress")
        .unwrap();
    assert_eq!(vi.children.as_ref().unwrap()[0].keyword, "10.9.9.9/24");
}

#[test]
fn semantics_defaults_and_persistence() {
    let text = "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n }\n}\n\
                virtual_server 10.0.0.1 53 {\n protocol UDP\n lb_algo rr\n lb_kind DR\n persistence_timeout 120\n delay_loop 6\n \
                real_server 10.0.0.2 53 { weight 0 }\n}\n\
                virtual_server 2001:db8::1 80 {\n protocol TCP\n lb_algo rr\n lb_kind DR\n persistence_timeout 0\n real_server 2001:db8::2 80 { weight 7 }\n}\n";
    let l = load_str(text, Path::new("k.conf"));
    assert!(!l.has_errors(), "{:?}", l.diags);
    let s = &l.config.services;
    // keepalived 2.2.7 (check_data.c): no protocol is UDP, no lb_algo wlc,
    // no lb_kind NAT, each with a message at the virtual_server.
    assert_eq!(
        (
            s[0].key.proto.name(),
            s[0].sched,
            s[0].fwd,
            s[0].persistence_timeout
        ),
        ("UDP", Sched::Wlc, Fwd::Nat, None)
    );
    assert_eq!(s[0].timing.delay_loop, None, "60 s applied by the checker");
    let diags: Vec<String> = l.diags.iter().map(|d| d.to_string()).collect();
    for want in [
        "k.conf:1:1: warning: protocol: virtual server 10.0.0.1:80: no protocol set; defaulting to UDP",
        "k.conf:1:1: warning: lb_algo: virtual server 10.0.0.1:80: no scheduler set; using keepalived's default 'wlc'",
        "k.conf:1:1: warning: lb_kind: virtual server 10.0.0.1:80: no forwarding method set; using keepalived's default NAT",
        "k.conf:17:2: warning: persistence_timeout: 0 is outside keepalived's 1 to 2678400 seconds; not persistent",
    ] {
        assert!(diags.iter().any(|d| d.starts_with(want)), "{want}\n{diags:#?}");
    }
    assert_eq!(diags.len(), 4, "{diags:#?}");
    assert_eq!(s[0].reals[0].weight, 1, "keepalived's default weight");
    assert_eq!(
        (
            s[1].key.proto.name(),
            s[1].persistence_timeout,
            s[1].timing.delay_loop
        ),
        ("UDP", Some(120), Some(Duration::from_secs(6)))
    );
    assert_eq!(s[1].reals[0].weight, 0);
    assert_eq!(
        (s[2].key.addr, s[2].persistence_timeout),
        (ip("2001:db8::1"), None)
    );
}

#[test]
fn duplicate_virtual_server_blocks_merge_their_reals() {
    let text = "virtual_server 10.0.0.1 80 {\n lb_algo rr\n real_server 10.0.0.2 80 { weight 1 }\n}\n\
                virtual_server 10.0.0.1 80 {\n lb_algo rr\n real_server 10.0.0.3 80 { weight 1 }\n}\n";
    let l = load_str(text, Path::new("k.conf"));
    assert!(!l.has_errors());
    assert_eq!(l.config.services.len(), 1);
    assert_eq!(l.config.services[0].reals.len(), 2);
    assert!(l.diags.iter().any(|d| d
        .to_string()
        .starts_with("k.conf:5:1: warning: virtual_server:")));
}

fn seed(prefix: &str) -> lb_user::config::Loaded {
    let (path, blocks) = lb_tests::seeds::config_of(prefix);
    let l = load_str(&blocks, &path);
    let errors: Vec<String> = l.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "seed {prefix} has errors: {errors:#?}");
    l
}

#[test]
fn seed_000_dr_wrr_persistent() {
    let l = seed("000");
    let s = &l.config.services;
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].key.addr, s[0].key.port), (ip("172.16.7.5"), 80));
    assert_eq!(
        (s[0].sched, s[0].persistence_timeout, s[0].timing.delay_loop),
        (Sched::Wrr, Some(60), Some(Duration::from_secs(6)))
    );
    let reals: Vec<(IpAddr, u32)> = s[0].reals.iter().map(|r| (r.addr, r.weight)).collect();
    assert_eq!(reals, [(ip("172.16.7.3"), 3), (ip("172.16.7.4"), 1)]);
}

#[test]
fn seed_001_two_blocks_one_service() {
    let l = seed("001");
    let s = &l.config.services;
    assert_eq!(s.len(), 1, "both blocks describe 172.20.1.100:80");
    assert_eq!((s[0].sched, s[0].persistence_timeout), (Sched::Rr, None));
    let reals: Vec<IpAddr> = s[0].reals.iter().map(|r| r.addr).collect();
    assert_eq!(reals, [ip("172.20.1.10"), ip("172.20.1.11")]);
    let v = &l.config.vrrp.instances;
    assert_eq!(v.len(), 1);
    assert_eq!(
        (v[0].initial, v[0].iface.as_str(), v[0].vrid, v[0].priority),
        (Initial::Master, "eth0", 51, 100)
    );
    // The seed's global_defs has vrrp_strict: keepalived drops the PASS
    // authentication then (with a warning), and so does lb.
    assert!(l.config.vrrp.globals.strict);
    assert_eq!(v[0].auth, None);
    assert_eq!(v[0].vips[0].addr, ip("172.20.1.100"));
}

#[test]
fn seed_002_dr_and_vrrp_scripts() {
    let l = seed("002");
    let s = &l.config.services;
    assert_eq!(s.len(), 1);
    // The seed sets no lb_algo: keepalived's default wlc, with its warning.
    assert_eq!(
        (s[0].key.addr, s[0].sched),
        (ip("192.168.118.100"), Sched::Wlc)
    );
    assert!(l
        .diags
        .iter()
        .any(|d| d.keyword.as_deref() == Some("lb_algo") && d.message.contains("'wlc'")));
    let reals: Vec<IpAddr> = s[0].reals.iter().map(|r| r.addr).collect();
    assert_eq!(reals, [ip("192.168.118.30"), ip("192.168.118.40")]);
    // vrrp_strict: authentication dropped with a warning, as keepalived.
    let v = &l.config.vrrp;
    assert!(v.globals.strict && v.globals.skip_check_adv_addr);
    assert_eq!(v.globals.router_id.as_deref(), Some("LVS_01"));
    assert_eq!(v.instances[0].auth, None);
    assert!(l.diags.iter().any(|d| d
        .message
        .contains("vrrp_strict does not allow authentication")));
    assert_eq!(v.instances[0].track_scripts[0].name, "check_nginx");
    assert_eq!(
        v.scripts["check_nginx"].program.argv,
        ["/root/check_nginx.sh"]
    );
    assert_eq!(v.scripts["check_nginx"].interval.as_secs(), 5);
}

#[test]
fn seed_003_has_no_keepalived_configuration() {
    // Piranha's lvs.cf is another format; nothing in the document is keepalived syntax.
    let l = seed("003");
    assert!(l.config.nodes.is_empty());
}

#[test]
fn seed_004_reference_blocks() {
    let l = seed("004");
    let kws: Vec<&str> = l.config.nodes.iter().map(|n| n.keyword.as_str()).collect();
    assert_eq!(kws, ["global_defs", "vrrp_script", "vrrp_instance"]);
    let vs = l
        .config
        .nodes
        .iter()
        .find(|n| n.keyword == "vrrp_script")
        .unwrap();
    assert_eq!(vs.child("weight").unwrap().args, ["-20"]);
    let v = &l.config.vrrp;
    assert_eq!(v.scripts["check_haproxy"].weight, -20);
    assert_eq!(v.instances[0].vips[0].addr, ip("192.168.200.16"));
    assert_eq!(v.globals.notification_email.len(), 3);
    assert_eq!(v.globals.smtp_server, Some((ip("192.168.200.1"), 25)));
}

#[test]
fn check_config_command_exit_codes() {
    let d = tmpdir("check");
    let good = d.join("good.conf");
    std::fs::write(
        &good,
        "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 { weight 1 }\n}\n",
    )
    .unwrap();
    let bad = d.join("bad.conf");
    std::fs::write(
        &bad,
        "virtual_server 10.0.0.1 80 {\n lb_algo nope\n bogus 1\n",
    )
    .unwrap();
    let lb = env!("CARGO_BIN_EXE_lb");
    let ok = Command::new(lb)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    let out = Command::new(lb)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "{}:2:2: error: lb_algo: unknown scheduler 'nope'",
            bad.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}:3:2: warning: bogus: unknown keyword",
            bad.display()
        )),
        "{text}"
    );
    assert!(text.contains(":1:28: error: unclosed '{'"), "{text}");
    // `lb run` refuses a broken file before touching any interface.
    let run = Command::new(lb)
        .args([
            "run",
            "--iface",
            "lb-no-such-if",
            "--bpffs",
            "/nonexistent/bpffs",
            "--config",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn checkers_and_their_timing_are_read() {
    use lb_user::config::check::{CheckKind, Url};
    use std::time::Duration;
    let text = "virtual_server 10.0.0.1 80 {\n delay_loop 6\n retry 2\n alpha\n \
                real_server 10.0.0.2 80 {\n  inhibit_on_failure\n  connect_timeout 2\n  \
                TCP_CHECK {\n   connect_port 8080\n   nb_get_retry 3\n  }\n  \
                HTTP_GET {\n   url {\n    path /health\n    status_code 200-204 301\n    \
                digest 9e107d9d372bb6826bd81d3542a419d6\n   }\n   virtualhost example.org\n  }\n  \
                MISC_CHECK {\n   misc_path \"/usr/bin/check --port 80 'a b'\"\n   misc_timeout 3\n   misc_dynamic\n  }\n }\n}\n";
    let l = load_str(text, Path::new("k.conf"));
    assert!(!l.has_errors(), "{:?}", l.diags);
    let vs = &l.config.services[0];
    assert!(vs.alpha);
    assert_eq!(vs.timing.delay_loop, Some(Duration::from_secs(6)));
    assert_eq!(vs.timing.retry, Some(2));
    let r = &vs.reals[0];
    assert_eq!(r.inhibit_on_failure, Some(true));
    assert_eq!(r.timing.connect_timeout, Some(Duration::from_secs(2)));
    assert_eq!(r.checks.len(), 3);
    assert_eq!(r.checks[0].kind, CheckKind::Tcp);
    assert_eq!(r.checks[0].connect_port, Some(8080));
    assert_eq!(r.checks[0].timing.retry, Some(3));
    assert_eq!(
        r.checks[1].kind,
        CheckKind::Http {
            urls: vec![Url {
                path: "/health".into(),
                status: vec![(200, 204), (301, 301)],
                digest: Some("9e107d9d372bb6826bd81d3542a419d6".into()),
            }],
            virtualhost: Some("example.org".into()),
            tls: false,
            sni: false,
            http11: false,
        }
    );
    match &r.checks[2].kind {
        CheckKind::Misc {
            program,
            timeout,
            dynamic,
        } => {
            assert_eq!(program.argv, ["/usr/bin/check", "--port", "80", "a b"]);
            assert_eq!(*timeout, Some(Duration::from_secs(3)));
            assert!(dynamic);
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn udp_and_dns_checks_are_read() {
    use lb_user::config::check::CheckKind;
    let text = "virtual_server 10.0.0.1 53 {\n protocol UDP\n \
                real_server 10.0.0.2 53 {\n  UDP_CHECK {\n   payload 0a0b\n   require_reply\n  }\n  \
                DNS_CHECK {\n   type A\n   name www.example.org\n  }\n }\n}\n";
    let l = load_str(text, Path::new("k.conf"));
    assert!(!l.has_errors(), "{:?}", l.diags);
    let r = &l.config.services[0].reals[0];
    assert_eq!(
        r.checks[0].kind,
        CheckKind::Udp {
            payload: vec![0x0a, 0x0b],
            require_reply: true
        }
    );
    assert_eq!(
        r.checks[1].kind,
        CheckKind::Dns {
            qtype: 1,
            name: "www.example.org".into()
        }
    );
    let bad = load_str(
        "virtual_server 10.0.0.1 53 {\n real_server 10.0.0.2 53 {\n  DNS_CHECK {\n   type BOGUS\n  }\n }\n}\n",
        Path::new("k.conf"),
    );
    let e: Vec<String> = bad.errors().map(|d| d.to_string()).collect();
    assert_eq!(e, ["k.conf:4:4: error: type: unknown DNS type 'BOGUS'"]);
}

/// The seeds' checkers as their authors wrote them: TCP_CHECK on port 80
/// with 3 s timeout, 3 retries 3 s (or 4 s) apart; HTTP_GET of / expecting 200.
#[test]
fn seed_checkers_are_understood() {
    use lb_user::config::check::CheckKind;
    use lb_user::health::Schedule;
    use std::time::Duration;
    let mut seen = 0;
    for prefix in ["000", "001", "002", "003", "004"] {
        let l = seed(prefix);
        for w in l.diags.iter().filter(|d| d.severity == Severity::Warning) {
            let text = w.to_string();
            assert!(
                !text.contains("_CHECK") && !text.contains("HTTP_GET"),
                "seed {prefix}: checker not understood: {text}"
            );
        }
        for vs in &l.config.services {
            for r in &vs.reals {
                for c in &r.checks {
                    seen += 1;
                    let s = Schedule::resolve(c, r.timing, vs.timing);
                    assert_eq!(s.connect_timeout, Duration::from_secs(3), "seed {prefix}");
                    assert_eq!(s.retry, 3, "seed {prefix}");
                    match &c.kind {
                        CheckKind::Tcp => assert_eq!(c.connect_port, Some(80)),
                        CheckKind::Http { urls, .. } => {
                            assert_eq!(
                                (urls[0].path.as_str(), urls[0].status.clone()),
                                ("/", vec![(200, 200)])
                            )
                        }
                        k => panic!("seed {prefix}: unexpected checker {k:?}"),
                    }
                }
            }
        }
    }
    assert!(
        seen >= 6,
        "the seeds configure checkers on their reals ({seen} found)"
    );
}

#[test]
fn misc_check_user_is_resolved_or_refused() {
    use lb_user::config::check::CheckKind;
    let conf = |u: &str| {
        format!(
            "virtual_server 10.0.0.1 80 {{\n real_server 10.0.0.2 80 {{\n  MISC_CHECK {{\n   misc_path /bin/true\n   user {u}\n  }}\n }}\n}}\n"
        )
    };
    let l = load_str(&conf("nobody"), Path::new("k.conf"));
    assert!(!l.has_errors(), "{:?}", l.diags);
    match &l.config.services[0].reals[0].checks[0].kind {
        CheckKind::Misc { program, .. } => assert_eq!(program.user, Some((65534, 65534))),
        k => panic!("{k:?}"),
    }
    let bad = load_str(&conf("no-such-user-here"), Path::new("k.conf"));
    let e: Vec<String> = bad.errors().map(|d| d.to_string()).collect();
    assert_eq!(
        e,
        ["k.conf:5:4: error: user: no user 'no-such-user-here' on this system"]
    );
}

#[test]
fn http_protocol_and_fast_recovery_are_read() {
    use lb_user::config::check::CheckKind;
    let text = "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n   url { path / }\n   \
                http_protocol 1.1\n   fast_recovery\n  }\n  TCP_CHECK {\n   fast_recovery off\n  }\n }\n}\n";
    let l = load_str(text, Path::new("k.conf"));
    assert!(!l.has_errors(), "{:?}", l.diags);
    let c = &l.config.services[0].reals[0].checks;
    assert!(matches!(c[0].kind, CheckKind::Http { http11: true, .. }));
    assert!(c[0].fast_recovery);
    assert!(!c[1].fast_recovery);
    let bad = load_str(&text.replace("1.1", "2"), Path::new("k.conf"));
    assert_eq!(bad.errors().count(), 1);
}

fn vrrp_of(text: &str) -> (Vrrp, Vec<String>) {
    let l = load_str(text, Path::new("ha.conf"));
    let d = l.diags.iter().map(|d| d.to_string()).collect();
    (l.config.vrrp, d)
}

#[test]
fn vrrp_blocks_are_read_with_keepalived_defaults() {
    let text = r#"
global_defs {
  router_id LB_A
  vrrp_version 3
  vrrp_garp_interval 0.01
  script_user root
  notification_email {
    ops@example.net
  }
  notification_email_from lb@example.net
  smtp_server 127.0.0.1 2525
}
vrrp_script chk {
  script "/usr/bin/test -f '/run/ok file'"
  interval 2
  timeout 1
  rise 2
  fall 3
  weight 30
  init_fail
}
vrrp_sync_group G1 {
  group {
    VI_1
    VI_6
  }
  notify "/usr/local/bin/notify group"
}
vrrp_instance VI_1 {
  interface eth0
  virtual_router_id 51
  priority 150
  advert_int 0.5
  nopreempt
  preempt_delay 10
  unicast_src_ip 10.0.0.2
  unicast_peer {
    10.0.0.3
  }
  virtual_ipaddress {
    10.0.0.100/24 dev eth1 label eth1:vip scope global
    10.0.0.101
  }
  virtual_ipaddress_excluded {
    10.0.9.1/32
  }
  track_interface {
    eth1 weight -20
    eth2
  }
  track_script {
    chk weight -50
  }
  notify_master "/usr/local/bin/to master"
  notify "/usr/local/bin/notify"
  garp_master_delay 2
  garp_master_repeat 3
  garp_master_refresh 60
}
vrrp_instance VI_6 {
  state MASTER
  interface eth0
  virtual_router_id 51
  virtual_ipaddress {
    fd00::100/64
  }
}
"#;
    let (v, diags) = vrrp_of(text);
    assert!(!diags.iter().any(|d| d.contains("error")), "{diags:#?}");
    let g = &v.globals;
    assert_eq!(g.router_id.as_deref(), Some("LB_A"));
    assert_eq!(g.version, Version::V3);
    assert_eq!(g.garp_interval.as_millis(), 10);
    assert_eq!(g.script_user, Some((0, 0)));
    assert_eq!(g.smtp_server, Some((ip("127.0.0.1"), 2525)));
    let s = &v.scripts["chk"];
    assert_eq!(s.program.argv, ["/usr/bin/test", "-f", "/run/ok file"]);
    assert_eq!(
        (
            s.interval.as_secs(),
            s.timeout.as_secs(),
            s.rise,
            s.fall,
            s.weight,
            s.init_fail
        ),
        (2, 1, 2, 3, 30, true)
    );
    assert_eq!(s.program.user, Some((0, 0)), "script_user applies");
    let i = &v.instances[0];
    assert_eq!(
        (
            i.initial,
            i.vrid,
            i.priority,
            i.advert_cs,
            i.version,
            i.preempt
        ),
        (Initial::Backup, 51, 150, 50, Version::V3, false)
    );
    assert_eq!(i.preempt_delay.as_secs(), 10);
    assert_eq!(i.unicast_src, Some(ip("10.0.0.2")));
    assert_eq!(i.unicast_peers, [ip("10.0.0.3")]);
    assert_eq!(i.vips.len(), 2);
    assert_eq!(
        (
            i.vips[0].prefix,
            i.vips[0].dev.as_deref(),
            i.vips[0].label.as_deref()
        ),
        (24, Some("eth1"), Some("eth1:vip"))
    );
    assert_eq!(i.vips[1].prefix, 32);
    assert_eq!(i.excluded[0].addr, ip("10.0.9.1"));
    assert_eq!(i.track_interfaces[0].weight, Some(-20));
    assert_eq!(i.track_interfaces[1].weight, None);
    assert_eq!(i.track_scripts[0].weight, Some(-50));
    assert_eq!(
        i.notify.master.as_ref().unwrap().argv,
        ["/usr/local/bin/to", "master"]
    );
    assert_eq!(
        (i.garp_master_delay.as_secs(), i.garp_master_repeat),
        (2, 3)
    );
    assert_eq!(i.garp_master_refresh.map(|d| d.as_secs()), Some(60));
    // IPv6 instance: VRRPv3 with a /64, same VRID allowed (other family).
    let i6 = &v.instances[1];
    assert!(i6.is_ipv6());
    assert_eq!((i6.vips[0].prefix, i6.initial), (64, Initial::Master));
    assert_eq!(v.groups[0].members, ["VI_1", "VI_6"]);
}

#[test]
fn vrrp_mistakes_are_errors_with_locations() {
    let text = "vrrp_instance A {\n  virtual_router_id 300\n  advert_int 0.5\n  \
                virtual_ipaddress {\n    10.0.0.1/40\n  }\n}\n\
                vrrp_instance B {\n  interface eth0\n  virtual_router_id 7\n  track_script {\n    nope\n  }\n  \
                virtual_ipaddress {\n    10.0.0.2\n  }\n}\n\
                vrrp_instance C {\n  interface eth0\n  virtual_router_id 7\n  \
                virtual_ipaddress {\n    10.0.0.3\n  }\n}\n\
                vrrp_sync_group G {\n  group {\n    B\n    Z\n  }\n}\n";
    let (_, d) = vrrp_of(text);
    // keepalived 2.2.7 rounds a VRRPv2 interval ("must be an integer. rounding").
    assert!(
        d.iter().any(|x| x
            == "ha.conf:3:3: warning: advert_int: VRRPv2 carries whole seconds; 0.5 s rounded to 1 s (as keepalived; use version 3 for less)"),
        "{d:#?}"
    );
    let errors: Vec<&String> = d.iter().filter(|d| d.contains(": error: ")).collect();
    let want = [
        "ha.conf:2:3: error: virtual_router_id: '300' must be a whole number from 1 to 255 (VRID)",
        "ha.conf:5:5: error: 10.0.0.1/40: invalid prefix length '/40'",
        "ha.conf:1:1: error: vrrp_instance: missing 'interface'",
        "ha.conf:1:1: error: vrrp_instance: missing 'virtual_router_id'",
        "ha.conf:1:1: error: vrrp_instance: no virtual_ipaddress",
        "ha.conf:18:1: error: virtual_router_id: 7 is also used by B on eth0",
        "ha.conf:8:1: error: track_script: no vrrp_script named 'nope'",
        "ha.conf:25:1: error: group: no vrrp_instance named 'Z'",
    ];
    for w in want {
        assert!(
            errors.iter().any(|e| *e == w),
            "missing {w:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), want.len(), "{errors:#?}");
}

#[test]
fn more_than_the_data_plane_holds_is_an_error_of_the_file() {
    // 1,025 services: the 1,025th is refused where it is written.
    let mut text = String::new();
    for i in 0..1025u32 {
        text.push_str(&format!(
            "virtual_server 10.9.{}.{} 80 {{\n  lb_kind DR\n  lb_algo {}\n  real_server 10.8.0.1 80 {{ weight 1 }}\n}}\n",
            i / 250,
            i % 250 + 1,
            if i < 17 { "mh" } else { "rr" }
        ));
    }
    let l = load_str(&text, Path::new("big.conf"));
    let errs: Vec<String> = l.errors().map(|d| d.to_string()).collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs.iter().any(|e| e.starts_with("big.conf:5121:1: error: virtual_server: 1025 virtual servers; the data plane holds 1024")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e
                .starts_with("big.conf:81:1: error: lb_algo: more than 16 virtual servers use mh")),
        "{errs:?}"
    );
}

/// The lines of `text`'s diagnostics.
fn diags_of(text: &str) -> Vec<String> {
    load_str(text, Path::new("v.conf"))
        .diags
        .iter()
        .map(|d| d.to_string())
        .collect()
}

fn has(diags: &[String], want: &str) -> bool {
    diags.iter().any(|d| d.starts_with(want))
}

#[test]
fn invalid_values_are_errors_with_range_and_unit() {
    let vs = |body: &str| {
        format!(
            "virtual_server 10.0.0.1 80 {{\n protocol TCP\n lb_algo rr\n lb_kind DR\n{body}\n real_server 10.0.0.2 80 {{\n  TCP_CHECK {{\n  }}\n }}\n}}\n"
        )
    };
    let max = "18446744073709.551614";
    for (body, want) in [
        (" delay_loop -1", format!("v.conf:5:2: error: delay_loop: '-1' is negative; expected seconds from 0.000001 to {max}")),
        (" delay_loop nan", format!("v.conf:5:2: error: delay_loop: 'nan' is not a decimal number; expected seconds from 0.000001 to {max}")),
        (" delay_loop 0", format!("v.conf:5:2: error: delay_loop: '0' must be from 0.000001 to {max} seconds")),
        (" delay_loop 1.0000001", format!("v.conf:5:2: error: delay_loop: '1.0000001' has more than 6 decimal places (the resolution is 1 µs); expected seconds from 0.000001 to {max}")),
        (" connect_timeout -3", "v.conf:5:2: error: connect_timeout: '-3' is negative; expected seconds from 0.000001 to 4294.967295".into()),
        (" connect_timeout inf", "v.conf:5:2: error: connect_timeout: 'inf' is not a decimal number; expected seconds from 0.000001 to 4294.967295".into()),
        (" connect_timeout 5000", "v.conf:5:2: error: connect_timeout: '5000' must be from 0.000001 to 4294.967295 seconds".into()),
        (" delay_before_retry -1", format!("v.conf:5:2: error: delay_before_retry: '-1' is negative; expected seconds from 0 to {max}")),
        (" warmup 1e3", format!("v.conf:5:2: error: warmup: '1e3' is not a decimal number; expected seconds from 0 to {max}")),
        (" retry 0", "v.conf:5:2: error: retry: '0' must be a whole number from 1 to 4294967295 (retries)".into()),
        (" quorum 0", "v.conf:5:2: error: quorum: '0' must be a whole number from 1 to 4294967295 (weight sum)".into()),
        (" persistence_timeout 2678401", "v.conf:5:2: error: persistence_timeout: '2678401' must be a whole number from 1 to 2678400 (seconds)".into()),
        (" alpha maybe", "v.conf:5:2: error: alpha: 'maybe' is not one of true, on, yes, false, off, no".into()),
    ] {
        let d = diags_of(&vs(body));
        assert!(has(&d, &want), "{body}: want {want}\n{d:#?}");
    }
    // Inside a checker: retry may be 0 (keepalived's checker range), a
    // negative or infinite time may not, nor a misc_timeout past 4294 s.
    let misc = |line: &str| {
        format!(
            "virtual_server 10.0.0.1 80 {{\n protocol TCP\n lb_algo rr\n lb_kind DR\n real_server 10.0.0.2 80 {{\n  MISC_CHECK {{\n   misc_path /bin/true\n{line}\n  }}\n }}\n}}\n"
        )
    };
    assert!(!diags_of(&misc("   retry 0"))
        .iter()
        .any(|d| d.contains("error")));
    for (line, want) in [
        ("   misc_timeout -1", "v.conf:8:4: error: misc_timeout: '-1' must be a whole number from 0 to 4294 (seconds)"),
        ("   misc_timeout 1.5", "v.conf:8:4: error: misc_timeout: '1.5' must be a whole number from 0 to 4294 (seconds)"),
        ("   delay_before_retry -2", "v.conf:8:4: error: delay_before_retry: '-2' is negative"),
        ("   connect_timeout inf", "v.conf:8:4: error: connect_timeout: 'inf' is not a decimal number"),
        ("   connect_port 0", "v.conf:8:4: error: connect_port: '0' must be a whole number from 1 to 65535 (port)"),
    ] {
        let d = diags_of(&misc(line));
        assert!(has(&d, want), "{line}: want {want}\n{d:#?}");
    }
    // A value keepalived takes is read exactly (µs resolution).
    let l = load_str(
        &vs(" delay_loop 0.000001\n connect_timeout 4294.967295"),
        Path::new("v.conf"),
    );
    assert!(!l.has_errors(), "{:?}", l.diags);
    let t = l.config.services[0].timing;
    assert_eq!(t.delay_loop, Some(Duration::from_micros(1)));
    assert_eq!(
        t.connect_timeout,
        Some(Duration::from_micros(4_294_967_295))
    );
}

#[test]
fn vrrp_values_are_range_checked() {
    let inst = |line: &str| {
        format!(
            "vrrp_instance A {{\n interface eth0\n virtual_router_id 5\n{line}\n virtual_ipaddress {{\n  10.0.0.1\n }}\n}}\n"
        )
    };
    for (line, want) in [
        (" priority 0", "v.conf:4:2: error: priority: '0' must be a whole number from 1 to 255 (priority)"),
        (" priority -5", "v.conf:4:2: error: priority: '-5' must be a whole number from 1 to 255 (priority)"),
        (" advert_int 0", "v.conf:4:2: error: advert_int: '0' must be from 0.01 to 255 seconds"),
        (" advert_int nan", "v.conf:4:2: error: advert_int: 'nan' is not a decimal number"),
        (" preempt_delay 1001", "v.conf:4:2: error: preempt_delay: '1001' must be from 0 to 1000 seconds"),
        (" garp_master_delay 1.5", "v.conf:4:2: error: garp_master_delay: '1.5' must be a whole number from 0 to 4294 (seconds)"),
        (" garp_master_repeat -1", "v.conf:4:2: error: garp_master_repeat: '-1' must be a whole number from 0 to 4294967295 (messages)"),
        (" garp_master_repeat 0", "v.conf:4:2: warning: garp_master_repeat: must be greater than 0; using 1 (as keepalived)"),
        (" version 4", "v.conf:4:2: error: version: '4' must be a whole number from 2 to 3 (VRRP version)"),
    ] {
        let d = diags_of(&inst(line));
        assert!(has(&d, want), "{line}: want {want}\n{d:#?}");
    }
    let script = |line: &str| format!("vrrp_script s {{\n script /bin/true\n{line}\n}}\n");
    for (line, want) in [
        (" weight 254", "v.conf:3:2: error: weight: '254' must be a whole number from -253 to 253 (priority points)"),
        (" rise 0", "v.conf:3:2: error: rise: '0' must be a whole number from 1 to 2147483647 (successes)"),
        (" interval -1", "v.conf:3:2: error: interval: '-1' is negative"),
        (" interval 0", "v.conf:3:2: warning: interval: must be greater than 0; using 1 second (as keepalived)"),
        (" interval 0.2", "v.conf:3:2: warning: interval: fractions of a second are lb's extension"),
    ] {
        let d = diags_of(&script(line));
        assert!(has(&d, want), "{line}: want {want}\n{d:#?}");
    }
    let d = diags_of("global_defs {\n smtp_connect_timeout -1\n vrrp_garp_interval inf\n}\n");
    assert!(has(&d, "v.conf:2:2: error: smtp_connect_timeout: '-1' must be a whole number from 0 to 4294 (seconds)"), "{d:#?}");
    assert!(
        has(
            &d,
            "v.conf:3:2: error: vrrp_garp_interval: 'inf' is not a decimal number"
        ),
        "{d:#?}"
    );
}

#[test]
fn extra_arguments_warn_and_a_block_on_a_value_is_an_error() {
    // keepalived reads `weight 1 {` as weight 1 and "Unexpected '{'", and
    // the TCP_CHECK inside is lost: lb refuses the file.
    let text = "virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_algo rr 5\n lb_kind DR\n \
                real_server 10.0.0.2 80 {\n  weight 1 {\n   TCP_CHECK {\n    connect_timeout 3\n   }\n  }\n }\n}\n\
                vrrp_instance A {\n interface eth0\n virtual_router_id 5\n priority 100 200\n \
                nopreempt now\n virtual_ipaddress {\n  10.0.0.1\n }\n}\n";
    let l = load_str(text, Path::new("v.conf"));
    let d: Vec<String> = l.diags.iter().map(|d| d.to_string()).collect();
    for want in [
        "v.conf:3:2: warning: lb_algo: extra argument(s) '5' ignored (as keepalived)",
        "v.conf:6:3: error: weight: takes a value, not a '{ … }' block; the block and everything in it would be lost",
        "v.conf:16:2: warning: priority: extra argument(s) '200' ignored (as keepalived)",
        "v.conf:17:2: warning: nopreempt: extra argument(s) 'now' ignored (as keepalived)",
    ] {
        assert!(has(&d, want), "want {want}\n{d:#?}");
    }
    assert!(l.has_errors());
    assert_eq!(l.config.vrrp.instances[0].priority, 100);
}

#[test]
fn every_value_keyword_refuses_a_block() {
    // Each value keyword of each block, given a block: an error at it.
    let cases: &[(&str, &[&str], &str)] = &[
        ("global_defs {\n", &["router_id", "vrrp_version", "vrrp_strict", "vrrp_garp_interval", "smtp_connect_timeout", "notification_email_from"], "}\n"),
        ("vrrp_script s {\n script /bin/true\n", &["interval", "timeout", "rise", "fall", "weight", "init_fail", "user"], "}\n"),
        ("vrrp_instance A {\n interface eth0\n virtual_router_id 5\n virtual_ipaddress {\n  10.0.0.1\n }\n", &["state", "priority", "advert_int", "nopreempt", "preempt_delay", "garp_master_delay", "garp_master_repeat", "notify_master", "unicast_src_ip"], "}\n"),
        ("virtual_server 10.0.0.1 80 {\n", &["protocol", "lb_algo", "lb_kind", "persistence_timeout", "delay_loop", "quorum", "hysteresis", "alpha", "sorry_server", "connect_timeout", "retry", "delay_before_retry", "warmup", "inhibit_on_failure"], "}\n"),
        ("virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n", &["weight", "notify_up", "inhibit_on_failure", "delay_loop"], " }\n}\n"),
        ("virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  TCP_CHECK {\n", &["connect_port", "connect_timeout", "retry", "delay_before_retry", "fast_recovery", "warmup"], "  }\n }\n}\n"),
    ];
    for (head, keywords, tail) in cases {
        let line = head.lines().count() + 1;
        for k in *keywords {
            let text = format!("{head}{k} 1 {{\n x 1\n}}\n{tail}");
            let d = diags_of(&text);
            let want = format!("v.conf:{line}:1: error: {k}: takes a value, not a '{{ … }}' block");
            assert!(has(&d, &want), "{k}: want {want}\n{d:#?}");
        }
    }
}

#[test]
fn nopreempt_is_cleared_for_state_master_as_keepalived() {
    let (v, d) = vrrp_of(
        "vrrp_instance A {\n  state MASTER\n  nopreempt\n  preempt_delay 5\n  priority 100\n  virtual_router_id 5\n  interface eth0\n  \
         virtual_ipaddress {\n    10.0.0.1\n  }\n}\n",
    );
    let i = &v.instances[0];
    assert_eq!(
        (i.initial, i.preempt, i.preempt_delay),
        (Initial::Master, true, Duration::ZERO)
    );
    assert!(
        d.iter().any(|d| d.starts_with(
            "ha.conf:3:3: warning: nopreempt: nopreempt does not work with 'state MASTER'; cleared"
        )),
        "{d:#?}"
    );
    assert!(d.iter().any(|d| d.starts_with("ha.conf:4:3: warning: preempt_delay: preempt_delay does not work with 'state MASTER'; cleared")), "{d:#?}");
    // BACKUP keeps it.
    let (v, _) = vrrp_of(
        "vrrp_instance A {\n  state BACKUP\n  nopreempt\n  interface eth0\n  virtual_router_id 5\n  \
         virtual_ipaddress {\n    10.0.0.1\n  }\n}\n",
    );
    assert_eq!(
        (v.instances[0].initial, v.instances[0].preempt),
        (Initial::Backup, false)
    );
}

#[test]
fn check_config_refuses_what_the_data_plane_cannot_hold() {
    let d = tmpdir("capacity");
    let lb = env!("CARGO_BIN_EXE_lb");
    for (name, count, mh, want) in [
        (
            "1025.conf",
            1025u32,
            0u32,
            ":5121:1: error: virtual_server: 1025 virtual servers; the data plane holds 1024",
        ),
        (
            "17mh.conf",
            17,
            17,
            ":81:1: error: lb_algo: more than 16 virtual servers use mh",
        ),
    ] {
        let mut text = String::new();
        for i in 0..count {
            text.push_str(&format!(
                "virtual_server 10.9.{}.{} 80 {{\n  lb_kind DR\n  lb_algo {}\n  real_server 10.8.0.1 80 {{ weight 1 }}\n}}\n",
                i / 250,
                i % 250 + 1,
                if i < mh { "mh" } else { "rr" }
            ));
        }
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(lb)
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(64), "{name}");
        assert!(
            stdout.contains(&format!("{}{want}", path.display())),
            "{name}: {stdout}"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn every_ipvs_scheduler_is_accepted_by_name() {
    let want = [
        ("rr", Sched::Rr),
        ("wrr", Sched::Wrr),
        ("lc", Sched::Lc),
        ("wlc", Sched::Wlc),
        ("sed", Sched::Sed),
        ("nq", Sched::Nq),
        ("sh", Sched::Sh),
        ("mh", Sched::Mh),
        ("dh", Sched::Dh),
        ("fo", Sched::Fo),
        ("ovf", Sched::Ovf),
        ("twos", Sched::Twos),
        ("lblc", Sched::Lblc),
        ("lblcr", Sched::Lblcr),
    ];
    for (i, (name, sched)) in want.iter().enumerate() {
        // lvs_sched is keepalived's other name for lb_algo.
        let kw = if i % 2 == 0 { "lb_algo" } else { "lvs_sched" };
        let text = format!(
            "virtual_server 10.0.0.1 80 {{\n {kw} {name}\n lb_kind DR\n protocol TCP\n real_server 10.0.0.2 80 {{ weight 1 }}\n}}\n"
        );
        let l = load_str(&text, Path::new("k.conf"));
        assert!(l.diags.is_empty(), "{name}: {:?}", l.diags);
        assert_eq!(l.config.services[0].sched, *sched, "{name}");
        assert_eq!(sched.name(), *name);
        assert_eq!(Sched::from_id(sched.id()), Some(*sched));
    }
    // Names are case-sensitive, as in keepalived ("Invalid lvs_scheduler 'LBLC'").
    let l = load_str(
        "virtual_server 10.0.0.1 80 {\n lb_algo LBLC\n}\n",
        Path::new("k.conf"),
    );
    let e: Vec<String> = l.errors().map(|d| d.to_string()).collect();
    assert_eq!(e, ["k.conf:2:2: error: lb_algo: unknown scheduler 'LBLC'"]);
}

#[test]
fn member_scanning_schedulers_hold_at_most_256_reals() {
    for (name, limited) in [
        ("fo", true),
        ("ovf", true),
        ("twos", true),
        ("lblc", true),
        ("lblcr", true),
        ("dh", false),
    ] {
        let mut text = format!(
            "virtual_server 10.0.0.1 80 {{
 lb_algo {name}
 lb_kind DR
 protocol TCP
"
        );
        for i in 0..257u32 {
            text += &format!(
                " real_server 10.1.{}.{} 80 {{ weight 1 }}\n",
                i / 200,
                i % 200 + 1
            );
        }
        text += "}\n";
        let l = load_str(&text, Path::new("k.conf"));
        let e: Vec<String> = l.errors().map(|d| d.to_string()).collect();
        if limited {
            assert_eq!(
                e,
                [format!(
                    "k.conf:261:2: error: real_server: {name} scans at most 256 real servers per new connection"
                )],
                "{name}"
            );
        } else {
            assert!(e.is_empty(), "{name}: {e:?}");
            assert_eq!(l.config.services[0].reals.len(), 257);
        }
    }
}

/// issue 14: ipvs's connection thresholds (`uthreshold` / `lthreshold`,
/// keepalived: 0 to UINT_MAX) and persistence granularity (an IPv4 netmask,
/// an IPv6 prefix length 1 to 128), with their errors and their dump.
#[test]
fn thresholds_and_persistence_granularity() {
    let text = "virtual_server 10.0.0.1 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n persistence_timeout 60\n persistence_granularity 255.255.255.0\n\
                real_server 10.0.0.2 80 {\n  weight 1\n  uthreshold 100\n  lthreshold 50\n }\n\
                real_server 10.0.0.3 80 {\n  uthreshold 4294967295\n }\n\
                real_server 10.0.0.4 80 { weight 1 }\n}\n\
                virtual_server 2001:db8::1 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n persistence_granularity 64\n\
                real_server 2001:db8::2 80 { weight 1 }\n}\n";
    let l = load_str(text, Path::new("k.conf"));
    assert!(!l.has_errors(), "{:?}", l.diags);
    let w: Vec<String> = l.diags.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        w,
        ["k.conf:21:2: warning: persistence_granularity: without persistence_timeout: persistent for keepalived's default 360 s (as keepalived, which sets it silently)"]
    );
    let s = &l.config.services;
    assert_eq!(
        (s[0].persistence_timeout, s[0].persistence_prefix),
        (Some(60), Some(24))
    );
    let th: Vec<(u32, u32)> = s[0]
        .reals
        .iter()
        .map(|r| (r.u_threshold, r.l_threshold))
        .collect();
    assert_eq!(th, [(100, 50), (u32::MAX, 0), (0, 0)]);
    assert_eq!(
        (s[1].persistence_timeout, s[1].persistence_prefix),
        (Some(360), Some(64))
    );

    // The dump shows them.
    let d = lb_user::config::dump::dump(&l.config);
    let vs = &d["virtual_servers"][0];
    assert_eq!(vs["persistence_prefix"], 24);
    assert_eq!(vs["real_servers"][0]["uthreshold"], 100);
    assert_eq!(vs["real_servers"][0]["lthreshold"], 50);
    assert_eq!(vs["real_servers"][2]["uthreshold"], 0);
    assert_eq!(d["virtual_servers"][1]["persistence_prefix"], 64);

    // A timeout after the granularity wins, without the warning.
    let text = "virtual_server 10.0.0.1 80 {\n persistence_granularity 255.255.0.0\n persistence_timeout 30\n real_server 10.0.0.2 80 { weight 1 }\n}\n";
    let l = load_str(text, Path::new("k.conf"));
    let s = &l.config.services[0];
    assert_eq!(
        (s.persistence_timeout, s.persistence_prefix),
        (Some(30), Some(16))
    );
    assert!(!l
        .diags
        .iter()
        .any(|d| d.to_string().contains("persistence_granularity")));
}

#[test]
fn thresholds_and_granularity_errors() {
    let text = "virtual_server 10.0.0.1 80 {\n persistence_timeout 60\n persistence_granularity 255.0.255.0\n\
                real_server 10.0.0.2 80 {\n  uthreshold -1\n  lthreshold x\n }\n\
                real_server 10.0.0.3 80 {\n  uthreshold 4294967296\n }\n\
                real_server 10.0.0.4 80 {\n  uthreshold 10\n  lthreshold 11\n }\n}\n\
                virtual_server 10.0.0.5 80 {\n persistence_granularity 24\n real_server 10.0.0.6 80 { weight 1 }\n}\n\
                virtual_server 2001:db8::1 80 {\n persistence_granularity 129\n real_server 2001:db8::2 80 { weight 1 }\n}\n\
                virtual_server 2001:db8::3 80 {\n persistence_granularity 0\n real_server 2001:db8::4 80 { weight 1 }\n}\n";
    let l = load_str(text, Path::new("k.conf"));
    let e: Vec<String> = l.errors().map(|d| d.to_string()).collect();
    assert_eq!(
        e,
        [
            "k.conf:3:2: error: persistence_granularity: netmask 255.0.255.0 is not contiguous: lb keeps a prefix of the client address (ipvs would AND any mask)",
            "k.conf:5:3: error: uthreshold: '-1' must be a whole number from 0 to 4294967295 (connections)",
            "k.conf:6:3: error: lthreshold: 'x' must be a whole number from 0 to 4294967295 (connections)",
            "k.conf:9:3: error: uthreshold: '4294967296' must be a whole number from 0 to 4294967295 (connections)",
            "k.conf:13:3: error: lthreshold: 11 is above uthreshold 10: ipvs refuses such a real server (ERANGE)",
            "k.conf:17:2: error: persistence_granularity: invalid IPv4 netmask '24' (write it as 255.255.255.0)",
            "k.conf:21:2: error: persistence_granularity: '129' must be a whole number from 1 to 128 (IPv6 prefix length)",
            "k.conf:25:2: error: persistence_granularity: '0' must be a whole number from 1 to 128 (IPv6 prefix length)",
        ]
    );
    // A lower threshold without an upper one is refused too (ipvs: l > u = 0).
    let text = "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  lthreshold 5\n }\n}\n";
    let l = load_str(text, Path::new("k.conf"));
    let e: Vec<String> = l.errors().map(|d| d.to_string()).collect();
    assert_eq!(
        e,
        ["k.conf:3:3: error: lthreshold: 5 is above uthreshold 0: ipvs refuses such a real server (ERANGE)"]
    );
}

/// `lvs_sync_daemon` as keepalived 2.2.7 reads it (interface, instance,
/// then `id` / `maxlen` / `port` / `ttl` / `group`), ipvs's defaults, and
/// every bad option an error naming file, line and keyword.
#[test]
fn lvs_sync_daemon_options_defaults_and_errors() {
    let inst = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n priority 100\n virtual_ipaddress {\n  10.0.0.100\n }\n}\n";
    let conf = |line: &str| format!("global_defs {{\n {line}\n}}\n{inst}");
    let l = load_str(&conf("lvs_sync_daemon eth1 VI_1"), Path::new("s.conf"));
    assert!(!l.has_errors(), "{:?}", l.diags);
    let s = l.config.vrrp.globals.lvs_sync.clone().unwrap();
    assert_eq!(
        (
            s.iface.as_str(),
            s.instance.as_deref(),
            s.syncid,
            s.maxlen,
            s.port,
            s.ttl,
            s.group
        ),
        ("eth1", Some("VI_1"), None, None, 8848, 1, ip("224.0.0.81"))
    );
    // lb's extension: without an instance (active-active directors, no
    // VRRP), the options follow the interface; the sync id defaults to 0.
    for (line, id) in [
        ("lvs_sync_daemon eth1", None),
        ("lvs_sync_daemon eth1 id 9 port 9001", Some(9)),
    ] {
        let l = load_str(
            &format!("global_defs {{\n {line}\n}}\n"),
            Path::new("s.conf"),
        );
        assert!(!l.has_errors(), "{line}: {:?}", l.diags);
        let s = l.config.vrrp.globals.lvs_sync.clone().unwrap();
        assert_eq!((s.instance, s.syncid), (None, id), "{line}");
        let dump = lb_user::config::dump::dump(&l.config);
        assert_eq!(
            dump["global_defs"]["lvs_sync_daemon"]["id"],
            id.unwrap_or(0),
            "{line}: {dump:#}"
        );
    }
    let l = load_str(
        &conf("lvs_sync_daemon eth1 VI_1 id 7 maxlen 1200 port 9000 ttl 3 group 239.1.2.3\n lb_sync_auth_key k3y"),
        Path::new("s.conf"),
    );
    assert!(!l.has_errors(), "{:?}", l.diags);
    let s = l.config.vrrp.globals.lvs_sync.clone().unwrap();
    assert_eq!(
        (s.syncid, s.maxlen, s.port, s.ttl, s.group),
        (Some(7), Some(1200), 9000, 3, ip("239.1.2.3"))
    );
    assert_eq!(
        l.config.vrrp.globals.sync_auth_key.as_ref().unwrap().0,
        "k3y"
    );
    for (line, want) in [
        (
            "lvs_sync_daemon",
            "s.conf:2:2: error: lvs_sync_daemon: missing interface",
        ),
        (
            "lvs_sync_daemon eth1 VI_2",
            "s.conf:2:2: error: lvs_sync_daemon: no vrrp_instance named 'VI_2'",
        ),
        (
            "lvs_sync_daemon eth1 VI_1 id 256",
            "s.conf:2:2: error: lvs_sync_daemon:",
        ),
        (
            "lvs_sync_daemon eth1 VI_1 port",
            "s.conf:2:2: error: lvs_sync_daemon: no value after 'port'",
        ),
        (
            "lvs_sync_daemon eth1 VI_1 group 10.0.0.1",
            "s.conf:2:2: error: lvs_sync_daemon: group 10.0.0.1 is not a multicast address",
        ),
        (
            "lvs_sync_daemon eth1 VI_1 speed 9",
            "s.conf:2:2: error: lvs_sync_daemon: unknown option 'speed'",
        ),
    ] {
        let l = load_str(&conf(line), Path::new("s.conf"));
        let errs: Vec<String> = l.errors().map(|d| d.to_string()).collect();
        assert!(errs.iter().any(|e| e.starts_with(want)), "{line}: {errs:?}");
    }
    // A maxlen below one message with one IPv6 conn is raised, with a warning.
    let l = load_str(
        &conf("lvs_sync_daemon eth1 VI_1 maxlen 10"),
        Path::new("s.conf"),
    );
    assert!(!l.has_errors());
    assert_eq!(
        l.config.vrrp.globals.lvs_sync.as_ref().unwrap().maxlen,
        Some(80)
    );
    assert!(l
        .diags
        .iter()
        .any(|d| d.to_string().contains("maxlen 10 is smaller")));
    // A key without sync is a warning.
    let l = load_str(&conf("lb_sync_auth_key k"), Path::new("s.conf"));
    assert!(!l.has_errors());
    assert!(l.diags.iter().any(|d| d
        .to_string()
        .contains("no lvs_sync_daemon: the key is not used")));
}
