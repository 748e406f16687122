//! Script security with real files and a real unprivileged user (`nobody`,
//! uid 65534): every program the configuration runs is checked where it is
//! configured, and again before each run. Needs root (chown).
// The guard of `assert_root` is held across awaits on purpose: each test
// has its own current-thread runtime; the lock only runs them one by one.
#![allow(clippy::await_holding_lock)]
use std::{
    os::unix::fs::{chown, lchown, symlink, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use lb_user::{
    config::{check::CheckKind, load_str, script::DEFAULT_USER, Config, Severity},
    health::{self, quorum::Event},
    util::{
        process::{run_bounded, Program, RunError},
        security::{Insecure, Refused, Weakness},
    },
};

const NOBODY: u32 = 65534;

/// A root-owned directory (mode 755) under /tmp, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("lb-scripts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        chown(&d, Some(0), Some(0)).unwrap();
        chmod(&d, 0o755);
        Dir(d)
    }

    /// An executable script that creates `marker` (a file of this
    /// directory) when it runs, owned by `owner`.
    fn program(&self, name: &str, marker: &str, owner: u32) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\ntouch '{}'\n", self.0.join(marker).display()),
        )
        .unwrap();
        chmod(&p, 0o755);
        chown(&p, Some(owner), None).unwrap();
        p
    }

    fn has(&self, marker: &str) -> bool {
        self.0.join(marker).exists()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Checks the tests run as root, and runs them one at a time: a program
/// one test writes must not be open for writing in a child another test
/// forks at that moment (the exec would fail with ETXTBSY).
fn assert_root() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests chown files: run them as root"
    );
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A configuration running `prog` from every place a program can be
/// configured, with `globals` in global_defs.
fn every_place(globals: &str, prog: &str) -> String {
    format!(
        "global_defs {{
  {globals}
}}
vrrp_script chk {{
  script \"{prog}\"
}}
vrrp_sync_group G {{
  group {{
    VI_1
  }}
  notify \"{prog}\"
}}
vrrp_instance VI_1 {{
  interface eth0
  virtual_router_id 1
  virtual_ipaddress {{
    10.0.0.1
  }}
  track_script {{
    chk
  }}
  notify_master \"{prog}\"
  notify_backup \"{prog}\"
  notify_fault \"{prog}\"
  notify_stop \"{prog}\"
  notify \"{prog} arg\"
}}
virtual_server 10.0.0.1 80 {{
  quorum_up \"{prog}\"
  quorum_down \"{prog}\"
  real_server 10.0.0.2 80 {{
    notify_up \"{prog}\"
    notify_down \"{prog}\"
    MISC_CHECK {{
      misc_path \"{prog} arg\"
    }}
  }}
}}
"
    )
}

/// (line:col, keyword) of every program of [`every_place`].
const PLACES: [(&str, &str); 12] = [
    ("5:1", "script"),
    ("14:1", "notify_master"),
    ("14:1", "notify_backup"),
    ("14:1", "notify_fault"),
    ("14:1", "notify_stop"),
    ("14:1", "notify"),
    ("8:1", "notify"),
    ("29:1", "quorum_up"),
    ("29:1", "quorum_down"),
    ("32:3", "MISC_CHECK"),
    ("32:3", "notify_up"),
    ("32:3", "notify_down"),
];

fn diags(text: &str, severity: Severity) -> Vec<String> {
    load_str(text, Path::new("s.conf"))
        .diags
        .iter()
        .filter(|d| d.severity == severity)
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn every_program_a_user_owns_is_refused_at_load_with_script_security() {
    let _serial = assert_root();
    let d = Dir::new("owned");
    let prog = d.program("user.sh", "ran", NOBODY);
    let p = prog.display();
    let text = every_place("enable_script_security\n  script_user root", &p.to_string());
    let mut want: Vec<String> = PLACES
        .iter()
        .map(|(at, k)| {
            format!(
                "s.conf:{at}: error: {k}: {p} is owned by uid 65534: a non-root user could change what runs as root; refused (enable_script_security)"
            )
        })
        .collect();
    let mut got = diags(&text, Severity::Error);
    want.sort();
    got.sort();
    assert_eq!(got, want);

    // Without enable_script_security, keepalived runs them with a warning.
    let text = every_place("script_user root", &p.to_string());
    assert_eq!(diags(&text, Severity::Error), Vec::<String>::new());
    let warned = diags(&text, Severity::Warning)
        .iter()
        .filter(|w| w.contains("is owned by uid 65534") && w.contains("run anyway"))
        .count();
    assert_eq!(warned, 12);

    // Run as the user who owns them, nothing is privileged: accepted.
    let text = every_place(
        "enable_script_security\n  script_user nobody",
        &p.to_string(),
    );
    assert_eq!(diags(&text, Severity::Error), Vec::<String>::new());
    assert!(!d.has("ran"), "loading runs nothing");
}

#[test]
fn links_a_user_can_repoint_are_refused_at_load() {
    let _serial = assert_root();
    let d = Dir::new("links");
    let target = d.program("good.sh", "ran", 0);
    let conf = |prog: &Path| {
        format!(
            "global_defs {{\n  enable_script_security\n  script_user root\n}}\nvrrp_script chk {{\n  script \"{}\"\n}}\n",
            prog.display()
        )
    };
    assert_eq!(diags(&conf(&target), Severity::Error), Vec::<String>::new());
    // A link in sticky /tmp, owned by a user: the user can re-point it.
    let link = std::env::temp_dir().join(format!("lb-scripts-tmplink-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    symlink(&target, &link).unwrap();
    lchown(&link, Some(NOBODY), None).unwrap();
    assert_eq!(
        diags(&conf(&link), Severity::Error),
        [format!(
            "s.conf:5:1: error: script: {} is a symbolic link owned by uid 65534: a non-root user could change what runs as root; refused (enable_script_security)",
            link.display()
        )]
    );
    // The same link owned by root: only root can re-point it (sticky /tmp).
    lchown(&link, Some(0), None).unwrap();
    assert_eq!(diags(&conf(&link), Severity::Error), Vec::<String>::new());
    std::fs::remove_file(&link).unwrap();
    // A root link in a directory every user can write (not sticky).
    let open = d.0.join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let link = open.join("link");
    symlink(&target, &link).unwrap();
    assert_eq!(
        diags(&conf(&link), Severity::Error),
        [format!(
            "s.conf:5:1: error: script: {} is writable by every user (mode 777): a non-root user could change what runs as root; refused (enable_script_security)",
            open.display()
        )]
    );
}

fn loaded(text: &str) -> Config {
    let l = load_str(text, Path::new("s.conf"));
    assert!(!l.has_errors(), "{:?}", l.diags);
    l.config
}

#[tokio::test]
async fn a_link_repointed_after_load_is_refused_before_the_run() {
    let _serial = assert_root();
    let d = Dir::new("repoint");
    let good = d.program("good.sh", "good-ran", 0);
    let evil = d.program("evil.sh", "evil-ran", NOBODY);
    let link = d.0.join("link");
    symlink(&good, &link).unwrap();
    let cfg = loaded(&format!(
        "global_defs {{\n  enable_script_security\n  script_user root\n}}\nvrrp_script chk {{\n  script \"{}\"\n}}\n",
        link.display()
    ));
    let prog = &cfg.vrrp.scripts["chk"].program;
    let t = Duration::from_secs(10);
    // As loaded, it runs (the marker proves it).
    assert!(run_bounded(prog, t).await.unwrap().success());
    assert!(d.has("good-ran"));
    // Re-pointed to a program a user owns: refused, not run.
    std::fs::remove_file(&link).unwrap();
    symlink(&evil, &link).unwrap();
    match run_bounded(prog, t).await {
        Err(RunError::Refused(Refused::Insecure(i))) => assert_eq!(
            i,
            Insecure {
                path: evil.clone(),
                weakness: Weakness::Owner(NOBODY)
            }
        ),
        other => panic!("{other:?}"),
    }
    assert!(!d.has("evil-ran"), "the re-pointed program must not run");
    // Replaced by a link the user owns, to the good program: refused too.
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_file(d.0.join("good-ran")).unwrap();
    symlink(&good, &link).unwrap();
    lchown(&link, Some(NOBODY), None).unwrap();
    assert!(matches!(
        run_bounded(prog, t).await,
        Err(RunError::Refused(Refused::Insecure(Insecure {
            weakness: Weakness::LinkOwner(NOBODY),
            ..
        })))
    ));
    assert!(!d.has("good-ran"));
    // Without enable_script_security keepalived runs it anyway (warned).
    std::fs::remove_file(&link).unwrap();
    symlink(&evil, &link).unwrap();
    let lax = Program {
        script_security: false,
        ..prog.clone()
    };
    assert!(run_bounded(&lax, t).await.unwrap().success());
    assert!(d.has("evil-ran"));
}

#[tokio::test]
async fn misc_check_and_quorum_programs_changed_after_load_are_not_run() {
    let _serial = assert_root();
    let d = Dir::new("changed");
    let misc = d.program("misc.sh", "misc-ran", 0);
    let up = d.program("up.sh", "up-ran", 0);
    let cfg = loaded(&format!(
        "global_defs {{\n  enable_script_security\n  script_user root\n}}\n\
         virtual_server 10.0.0.1 80 {{\n  quorum_up \"{}\"\n  real_server 127.0.0.1 80 {{\n    \
         MISC_CHECK {{\n      misc_path \"{}\"\n    }}\n  }}\n}}\n",
        up.display(),
        misc.display()
    ));
    let vs = &cfg.services[0];
    let check = &vs.reals[0].checks[0];
    assert!(matches!(check.kind, CheckKind::Misc { .. }));
    let to = "127.0.0.1:80".parse().unwrap();
    let t = Duration::from_secs(10);
    // As loaded: both run.
    assert_eq!(health::probe::run(check, to, t).await, health::Outcome::Up);
    health::handle_event(Event::QuorumUp(vs.key, vs.quorum_up.clone()))
        .unwrap()
        .await
        .unwrap();
    assert!(d.has("misc-ran") && d.has("up-ran"));
    std::fs::remove_file(d.0.join("misc-ran")).unwrap();
    std::fs::remove_file(d.0.join("up-ran")).unwrap();
    // Given to a user after the load: refused before the run.
    chown(&misc, Some(NOBODY), None).unwrap();
    chown(&up, Some(NOBODY), None).unwrap();
    match health::probe::run(check, to, t).await {
        health::Outcome::Down(why) => assert_eq!(
            why,
            format!(
                "not run: {} is owned by uid 65534: a non-root user could change what runs as root (enable_script_security)",
                misc.display()
            )
        ),
        o => panic!("{o:?}"),
    }
    health::handle_event(Event::QuorumUp(vs.key, vs.quorum_up.clone()))
        .unwrap()
        .await
        .unwrap();
    assert!(!d.has("misc-ran") && !d.has("up-ran"));
}

#[tokio::test]
async fn notify_programs_take_a_user_and_group_as_keepalived() {
    let _serial = assert_root();
    let cfg = loaded(
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 1\n  virtual_ipaddress {\n    10.0.0.1\n  }\n  \
         notify_master \"/bin/sh -c 'test $(id -u):$(id -g) = 65534:65534'\" nobody nogroup\n  \
         notify_backup \"/bin/true x\" nobody\n}\n",
    );
    let n = &cfg.vrrp.instances[0].notify;
    let master = n.master.as_ref().unwrap();
    assert_eq!(master.user, Some((NOBODY, NOBODY)));
    assert_eq!(master.argv[..2], ["/bin/sh", "-c"]);
    assert_eq!(n.backup.as_ref().unwrap().argv, ["/bin/true", "x"]);
    // It runs as that account.
    assert!(run_bounded(master, Duration::from_secs(10))
        .await
        .unwrap()
        .success());
    let bad = load_str(
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 1\n  virtual_ipaddress {\n    10.0.0.1\n  }\n  \
         notify_master /bin/true no-such-user-here\n}\n",
        Path::new("s.conf"),
    );
    let errors: Vec<String> = bad.errors().map(|d| d.to_string()).collect();
    assert_eq!(
        errors,
        ["s.conf:7:3: error: notify_master: no user 'no-such-user-here' on this system"]
    );
}

#[test]
fn script_security_without_an_account_to_run_as_is_refused_as_keepalived() {
    let _serial = assert_root();
    let text = "global_defs {\n  enable_script_security\n}\nvrrp_script chk {\n  script \"/bin/true\"\n}\n";
    let errors = diags(text, Severity::Error);
    let has_default = std::process::Command::new("id")
        .arg(DEFAULT_USER)
        .output()
        .unwrap()
        .status
        .success();
    if has_default {
        // keepalived_script exists: the programs run as it.
        assert_eq!(errors, Vec::<String>::new());
    } else {
        assert_eq!(
            errors,
            ["s.conf:4:1: error: script: enable_script_security without script_user, and no user 'keepalived_script': keepalived refuses to run programs as root by default; set script_user (root to run them as root) or create keepalived_script"]
        );
    }
    // Without enable_script_security, root is the default (no error).
    let text = text.replace("enable_script_security", "router_id a");
    assert_eq!(diags(&text, Severity::Error), Vec::<String>::new());
}

#[test]
fn bare_names_are_searched_and_missing_programs_warned() {
    let _serial = assert_root();
    let text = "global_defs {\n  script_user root\n}\nvrrp_script chk {\n  script \"true\"\n}\n\
                vrrp_script gone {\n  script \"/nonexistent/lb-check\"\n}\n";
    let l = load_str(text, Path::new("s.conf"));
    assert!(!l.has_errors(), "{:?}", l.diags);
    let warnings: Vec<String> = l.diags.iter().map(|d| d.to_string()).collect();
    assert!(
        warnings.iter().any(|w| w
            .starts_with("s.conf:4:1: warning: script: 'true' found by PATH search as /")
            && w.ends_with("; give the full path (as keepalived asks)")),
        "{warnings:#?}"
    );
    assert!(
        warnings.contains(&"s.conf:7:1: warning: script: /nonexistent: No such file or directory; it fails each time it is due (keepalived disables it)".to_string()),
        "{warnings:#?}"
    );
}

/// lb_bgp's `gobgp_program` runs as root: it is checked where it is
/// configured as every program is (an error under enable_script_security,
/// a warning without, a missing one a warning), and again before each run,
/// where a refused one never runs.
#[tokio::test]
async fn the_gobgp_client_is_checked_at_load_and_before_each_run() {
    let _serial = assert_root();
    let d = Dir::new("gobgp");
    let prog = d.program("gobgp", "ran", NOBODY);
    let p = prog.display().to_string();
    let conf = |globals: &str, prog: &str| {
        format!(
            "global_defs {{\n  {globals}\n}}\nlb_bgp {{\n  local_as 65001\n  next_hop 10.0.0.2\n  gobgp_program \"{prog}\"\n}}\n"
        )
    };
    assert_eq!(
        diags(&conf("enable_script_security", &p), Severity::Error),
        [format!(
            "s.conf:7:3: error: gobgp_program: {p} is owned by uid 65534: a non-root user could change what runs as root; refused (enable_script_security)"
        )]
    );
    let text = conf("script_user root", &p);
    assert_eq!(diags(&text, Severity::Error), Vec::<String>::new());
    assert_eq!(
        diags(&text, Severity::Warning),
        [format!(
            "s.conf:7:3: warning: gobgp_program: {p} is owned by uid 65534: a non-root user could change what runs as root; run anyway as enable_script_security is not set (keepalived: SECURITY VIOLATION)"
        )]
    );
    // One that is not there: a warning, the block is kept.
    let missing = d.0.join("none");
    let l = load_str(
        &conf("enable_script_security", &missing.display().to_string()),
        Path::new("s.conf"),
    );
    assert!(!l.has_errors(), "{:?}", l.diags);
    assert!(l.config.bgp.is_some());
    assert_eq!(
        l.diags.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!(
            "s.conf:7:3: warning: gobgp_program: {}: No such file or directory; every request to the BGP daemon fails and no VIP is announced until it is there (Debian's gobgpd package)",
            missing.display()
        )]
    );
    // A bare name other than the default is found but reported.
    assert_eq!(
        diags(&conf("script_user root", "true"), Severity::Warning),
        ["s.conf:7:3: warning: gobgp_program: 'true' found by PATH search as /usr/bin/true; give the full path (as keepalived asks)"]
    );

    // Before each run: refused under enable_script_security, nothing runs.
    let mut client = lb_user::bgp::gobgp::Client {
        program: prog.clone(),
        api: "127.0.0.1:9".parse().unwrap(),
        timeout: Duration::from_secs(5),
        script_security: true,
    };
    let e = client.global().await.unwrap_err();
    assert!(
        matches!(e, lb_user::bgp::gobgp::GobgpError::Refused { .. }),
        "{e:?}"
    );
    assert!(!d.has("ran"), "a refused client never runs");
    // Without it, it runs (and prints nothing lb can read).
    client.script_security = false;
    let e = client.global().await.unwrap_err();
    assert!(
        matches!(e, lb_user::bgp::gobgp::GobgpError::Output { .. }),
        "{e:?}"
    );
    assert!(d.has("ran"));
}
