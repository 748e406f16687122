//! The web console (`lb run --web-listen`) end to end: a headless Chromium
//! (lb_tests::browser) in the lab's namespaces logs in, builds an LVS-DR
//! service with two reals through the setup forms, watches HTTP through
//! the VIP on the overview, drains a real and sees traffic move; wrong
//! passwords, missing or wrong CSRF tokens, the read-only role and
//! unauthenticated requests are refused; TLS serves the console with a
//! Secure cookie; plain HTTP off loopback needs `--web-insecure`.
//! Selectors are the HTML contract of the console (README: Web console).
//! Needs root, Debian's chromium and chromium-driver (`cargo xtask setup`).
//! Screenshots of the overview and setup pages go to docs/screenshots/ with
//! LB_SCREENSHOTS=1, to target/screenshots/ otherwise.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lb_tests::{
    browser::{Browser, HttpRequest, HttpResponse, NetnsThread},
    real_ip, Bins, Lab, DIRECTOR_IP, VIP,
};

const ADMIN: (&str, &str) = ("alice", "correct horse battery staple");
const VIEWER: (&str, &str) = ("victor", "read only, really");
/// The console on the director's loopback (plain HTTP is allowed there).
const LOCAL: &str = "127.0.0.1:3636";
/// The service the tests build, as the overview names it.
const SERVICE: &str = "TCP 10.200.0.100:80";
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    Lab::dr(&format!("lbwb{}{name}", std::process::id() % 1000), bins, 2).expect("lab")
}

/// `lb passwd --file FILE USER --role ROLE`, the password on stdin.
fn passwd(lab: &Lab, file: &PathBuf, user: &str, role: &str, password: &str) {
    let mut child = Command::new(&lab.bins.lb)
        .args(["passwd", "--file"])
        .arg(file)
        .args([user, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lb passwd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "lb passwd {user}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The users file with [`ADMIN`] (role admin) and [`VIEWER`] (role view).
fn users(lab: &Lab) -> PathBuf {
    let file = lab.workdir.join("web-users");
    if file.exists() {
        return file;
    }
    passwd(lab, &file, ADMIN.0, "admin", ADMIN.1);
    passwd(lab, &file, VIEWER.0, "view", VIEWER.1);
    file
}

/// An empty configuration file (no services: the console makes them; the
/// machine's /etc/keepalived/keepalived.conf is not read).
fn empty_config(lab: &Lab) -> String {
    std::fs::write(lab.config_path(), "").unwrap();
    lab.config_path().to_string_lossy().into_owned()
}

/// Starts the agent on the director with an empty configuration, the console on
/// `listen` with `extra` options, and waits until `/login` answers from
/// namespace `client` at `base`.
fn start_console(lab: &mut Lab, listen: &str, extra: &[&str], client: &str, base: &str) {
    let users = users(lab).to_string_lossy().into_owned();
    let config = empty_config(lab);
    let mut args = vec![
        "--config",
        config.as_str(),
        "--web-listen",
        listen,
        "--web-users",
        users.as_str(),
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(lb_tests::AGENT_ARGS);
    lab.spawn_agent_args("dir", &args).expect("agent");
    let t = NetnsThread::new(&lab.ns(client)).expect("namespace thread");
    let start = Instant::now();
    loop {
        match t.http(HttpRequest::get(&format!("{base}/login")), HTTP_TIMEOUT) {
            Ok(r) if r.status == 200 => return,
            r => assert!(
                start.elapsed() < Duration::from_secs(40),
                "the console did not answer within 40 s ({r:?}); agent log:\n{}",
                lab.log("dir", "lb")
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A browser in `role`'s namespace looking at the console at `base`.
struct Console {
    b: Browser,
    base: String,
}

impl Console {
    fn open(lab: &Lab, role: &str, base: &str) -> Self {
        Self {
            b: Browser::start(&lab.ns(role), &lab.workdir).expect("browser"),
            base: base.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn goto(&self, path: &str) {
        self.b.goto(&self.url(path)).unwrap();
    }

    /// Fills and submits the login form; returns the page's path after it.
    fn try_login(&self, user: &str, password: &str) -> String {
        self.goto("/login");
        self.b
            .fill("form#login-form", &[("user", user), ("password", password)])
            .unwrap();
        self.b.click_and_load("button#login-submit").unwrap();
        path_of(&self.b.url().unwrap())
    }

    /// Logs in: the overview shows, `span#user` names the user.
    fn login(&self, user: &str, password: &str) {
        let at = self.try_login(user, password);
        assert_eq!(
            at,
            "/",
            "login as {user} did not reach the overview; the page says: {:?}",
            self.b.texts("p#error, h1").unwrap_or_default()
        );
        let who = self.b.text("span#user").unwrap();
        assert!(who.contains(user), "span#user: {who}");
    }

    /// The hidden CSRF token of the page shown (the logout form carries one
    /// on every page).
    fn csrf(&self, form: &str) -> String {
        self.b
            .attr(&format!("{form} input[name=csrf]"), "value")
            .unwrap()
            .expect("csrf token")
    }

    /// A POST of `fields` with the browser's session cookie, sent from the
    /// browser's namespace by the plain client.
    fn post(&self, path: &str, fields: &[(&str, &str)]) -> HttpResponse {
        self.b
            .http(HttpRequest::post_form(&self.url(path), fields))
            .unwrap()
    }

    /// Adds a real through the service's `form.add-real`.
    fn add_real(&self, ip: &str, check: &str) {
        let form = format!("section.service[data-service=\"{SERVICE}\"] form.add-real");
        self.b
            .fill(
                &form,
                &[
                    ("addr", ip),
                    ("port", "80"),
                    ("weight", "1"),
                    ("check", check),
                ],
            )
            .unwrap();
        self.b
            .click_and_load(&format!("{form} button.add-real"))
            .unwrap();
        self.assert_no_error("adding a real");
    }

    fn assert_no_error(&self, what: &str) {
        if self.b.count("p#error").unwrap() > 0 {
            panic!("{what}: {}", self.b.text("p#error").unwrap());
        }
    }

    /// `(selector of the real's row, its cells by class)` on the page shown.
    fn cells(&self, ip: &str) -> BTreeMap<String, String> {
        let row = real_row(ip);
        ["fwd", "weight", "health", "active", "inactive", "conns"]
            .into_iter()
            .map(|c| {
                (
                    c.to_owned(),
                    self.b
                        .text(&format!("{row} td.{c}"))
                        .unwrap_or_else(|e| panic!("{row} td.{c}: {e:#}"))
                        .trim()
                        .to_owned(),
                )
            })
            .collect()
    }

    fn conns(&self, ip: &str) -> anyhow::Result<u64> {
        let t = self.b.text(&format!("{} td.conns", real_row(ip)))?;
        t.trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("td.conns {t:?}: {e}"))
    }

    fn screenshot(&self, name: &str) {
        self.b.screenshot(&screenshot_path(name)).unwrap();
    }
}

fn real_row(ip: &str) -> String {
    format!("section.service[data-service=\"{SERVICE}\"] tr.real[data-real=\"{ip}:80\"]")
}

fn path_of(url: &str) -> String {
    url::Url::parse(url).unwrap().path().to_owned()
}

/// docs/screenshots/NAME.png with LB_SCREENSHOTS=1, else
/// target/screenshots/NAME.png.
fn screenshot_path(name: &str) -> PathBuf {
    if std::env::var_os("LB_SCREENSHOTS").is_some_and(|v| v == "1") {
        return PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/screenshots")
            .join(format!("{name}.png"));
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/web-…
    let target = exe.ancestors().nth(3).unwrap().to_owned();
    target.join("screenshots").join(format!("{name}.png"))
}

/// The services `lb adm -L -n` lists (the agent's view, independent of the
/// console).
fn adm_list(lab: &Lab) -> String {
    let (code, out, err) = lab.adm("dir", &["-L", "-n"], "").unwrap();
    assert_eq!(code, 0, "lb adm -L -n: {err}");
    out
}

/// Builds [`SERVICE`] (DR, rr) with reals 1 and 2 through the setup forms.
fn create_service(c: &Console, check: &str) {
    c.goto("/setup");
    c.b.fill(
        "form#new-service",
        &[
            ("proto", "tcp"),
            ("vip", VIP),
            ("port", "80"),
            ("sched", "rr"),
            ("fwd", "dr"),
            ("persistence", ""),
        ],
    )
    .unwrap();
    c.b.click_and_load("button#save-service").unwrap();
    c.assert_no_error("saving the service");
    if path_of(&c.b.url().unwrap()) != "/setup" {
        c.goto("/setup");
    }
    assert_eq!(
        c.b.count(&format!("section.service[data-service=\"{SERVICE}\"]"))
            .unwrap(),
        1,
        "the new service on /setup"
    );
    for i in 1..=2 {
        c.add_real(&real_ip(i), check);
        if path_of(&c.b.url().unwrap()) != "/setup" {
            c.goto("/setup");
        }
    }
}

#[test]
fn a_dr_service_built_in_the_browser_carries_traffic_and_drains() {
    let _g = lb_tests::serial();
    let mut lab = lab("dr");
    let base = format!("http://{LOCAL}");
    start_console(&mut lab, LOCAL, &[], "dir", &base);
    let c = Console::open(&lab, "dir", &base);
    c.login(ADMIN.0, ADMIN.1);
    for nav in [
        "overview",
        "checks",
        "vrrp",
        "connections",
        "config",
        "setup",
    ] {
        assert_eq!(
            c.b.count(&format!("nav a#nav-{nav}")).unwrap(),
            1,
            "nav {nav}"
        );
    }

    create_service(&c, "tcp");
    let list = adm_list(&lab);
    for i in 1..=2 {
        assert!(
            list.contains(&format!("{}:80", real_ip(i))),
            "lb adm -L -n lacks real {i}:\n{list}"
        );
    }
    lab.wait_resolved(Duration::from_secs(30)).unwrap();

    // The overview before traffic: both reals up (their TCP checks
    // passed), DR, weight 1; then the live cells (no reload) follow the
    // traffic.
    c.goto("/");
    c.b.wait_until("both reals up", Duration::from_secs(30), |_| {
        c.goto("/");
        Ok((1..=2).all(|i| c.cells(&real_ip(i))["health"] == "up"))
    })
    .unwrap();
    for i in 1..=2 {
        let cells = c.cells(&real_ip(i));
        assert_eq!(cells["fwd"], "Route", "real {i}: {cells:?}");
        assert_eq!(cells["weight"], "1", "real {i}: {cells:?}");
    }
    let before: Vec<u64> = (1..=2).map(|i| c.conns(&real_ip(i)).unwrap()).collect();
    let tally = lab.http_get(&format!("{VIP}:80"), 20).unwrap();
    assert_eq!(tally.get("r1"), Some(&10), "rr over two reals: {tally:?}");
    assert_eq!(tally.get("r2"), Some(&10), "rr over two reals: {tally:?}");
    c.b.wait_until(
        "the overview's live cells count the 20 connections",
        Duration::from_secs(20),
        |_| Ok((1..=2).all(|i| c.conns(&real_ip(i)).unwrap_or(0) >= before[i - 1] + 10)),
    )
    .unwrap();
    c.goto("/");
    for i in 1..=2 {
        assert!(c.conns(&real_ip(i)).unwrap() >= before[i - 1] + 10);
    }
    // A few seconds of steady traffic, so the screenshot's chart has a
    // curve (the sampler takes one point every 2 s).
    for _ in 0..6 {
        let t = lab.http_get(&format!("{VIP}:80"), 6).unwrap();
        assert_eq!(
            t.get("r1").unwrap_or(&0) + t.get("r2").unwrap_or(&0),
            6,
            "{t:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    c.goto("/");
    std::thread::sleep(Duration::from_millis(2500));
    c.screenshot("overview");

    // Drain real 2 on the setup page: kept, weight 0, "draining"; new
    // connections all go to real 1.
    c.goto("/setup");
    c.screenshot("setup");
    c.b.click_and_load(&format!("{} button.drain", real_row(&real_ip(2))))
        .unwrap();
    c.assert_no_error("draining real 2");
    c.goto("/");
    let drained = c.cells(&real_ip(2));
    assert_eq!(drained["health"], "draining", "{drained:?}");
    assert_eq!(drained["weight"], "0", "{drained:?}");
    let r2_before = c.conns(&real_ip(2)).unwrap();
    let r1_before = c.conns(&real_ip(1)).unwrap();
    let tally = lab.http_get(&format!("{VIP}:80"), 20).unwrap();
    assert_eq!(tally.get("r1"), Some(&20), "after the drain: {tally:?}");
    assert_eq!(tally.get("r2"), None, "after the drain: {tally:?}");
    c.b.wait_until(
        "real 1 counts the new connections",
        Duration::from_secs(20),
        |_| {
            c.goto("/");
            Ok(c.conns(&real_ip(1))? >= r1_before + 20)
        },
    )
    .unwrap();
    assert_eq!(
        c.conns(&real_ip(2)).unwrap(),
        r2_before,
        "the drained real got connections"
    );

    // Enable it again: traffic returns to both.
    c.goto("/setup");
    c.b.click_and_load(&format!("{} button.enable", real_row(&real_ip(2))))
        .unwrap();
    c.assert_no_error("enabling real 2");
    let tally = lab.http_get(&format!("{VIP}:80"), 20).unwrap();
    assert_eq!(tally.get("r2"), Some(&10), "after enable: {tally:?}");

    // The health check made in the form takes a real that stops serving
    // out: "down" on the overview, its traffic to the other.
    lab.stop("r2", "httpd80").unwrap();
    c.b.wait_until(
        "real 2 down on the overview",
        Duration::from_secs(40),
        |_| {
            c.goto("/");
            Ok(c.cells(&real_ip(2))["health"] == "down")
        },
    )
    .unwrap();
    let tally = lab.http_get(&format!("{VIP}:80"), 10).unwrap();
    assert_eq!(tally.get("r1"), Some(&10), "with real 2 down: {tally:?}");
}

/// `a#export` on the setup page downloads the runtime state as
/// keepalived.conf, health checks included, which `lb check-config`
/// accepts.
#[test]
fn the_export_reproduces_the_runtime_state() {
    let _g = lb_tests::serial();
    let mut lab = lab("exp");
    let base = format!("http://{LOCAL}");
    start_console(&mut lab, LOCAL, &[], "dir", &base);
    let c = Console::open(&lab, "dir", &base);
    c.login(ADMIN.0, ADMIN.1);
    create_service(&c, "http");
    c.goto("/setup");
    let href =
        c.b.attr("a#export", "href")
            .unwrap()
            .expect("a#export href");
    assert_eq!(path_of(&c.url(&href)), "/setup/export");
    let export = c.b.http(HttpRequest::get(&c.url("/setup/export"))).unwrap();
    assert_eq!(export.status, 200);
    assert!(
        export
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{:?}",
        export.headers
    );
    assert!(
        export.body.contains(&format!("virtual_server {VIP} 80")),
        "{}",
        export.body
    );
    for i in 1..=2 {
        assert!(
            export
                .body
                .contains(&format!("real_server {} 80", real_ip(i))),
            "{}",
            export.body
        );
    }
    assert_eq!(
        export.body.matches("HTTP_GET").count(),
        2,
        "{}",
        export.body
    );
    let file = lab.workdir.join("exported.conf");
    std::fs::write(&file, &export.body).unwrap();
    let (code, out) = check_config(&lab, &file);
    assert_eq!(
        code, 0,
        "lb check-config on the export:\n{out}\n{}",
        export.body
    );
}

/// `lb check-config FILE`: exit code, stdout and stderr.
fn check_config(lab: &Lab, file: &std::path::Path) -> (i32, String) {
    let out = Command::new(&lab.bins.lb)
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_wrong_password_is_refused() {
    let _g = lb_tests::serial();
    let mut lab = lab("pw");
    let base = format!("http://{LOCAL}");
    start_console(&mut lab, LOCAL, &[], "dir", &base);
    let c = Console::open(&lab, "dir", &base);

    assert_eq!(c.try_login(ADMIN.0, "not the password"), "/login");
    assert!(c
        .b
        .text("p#error")
        .unwrap()
        .contains("wrong user name or password"));
    assert!(c
        .b
        .cookies()
        .unwrap()
        .iter()
        .all(|k| k.name != "lb_session"));
    assert_eq!(c.try_login("mallory", ADMIN.1), "/login");
    assert_eq!(c.b.count("p#error").unwrap(), 1);

    // The status is 401, without a session cookie (the plain client, with
    // the login form's own token and cookies).
    c.goto("/login");
    let token = c.csrf("form#login-form");
    let r = c.post(
        "/login",
        &[("user", ADMIN.0), ("password", "nope"), ("csrf", &token)],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("id=\"error\""), "{}", r.body);
    assert!(r
        .set_cookies()
        .iter()
        .all(|k| !k.starts_with("lb_session=")));

    // The right password still works afterwards.
    c.login(ADMIN.0, ADMIN.1);
}

#[test]
fn a_change_without_the_csrf_token_is_refused() {
    let _g = lb_tests::serial();
    let mut lab = lab("csrf");
    let base = format!("http://{LOCAL}");
    start_console(&mut lab, LOCAL, &[], "dir", &base);
    let c = Console::open(&lab, "dir", &base);
    c.login(ADMIN.0, ADMIN.1);
    c.goto("/setup");
    let token = c.csrf("form#new-service");
    let service = |csrf: Option<&str>| {
        let mut f = vec![
            ("proto", "tcp"),
            ("vip", "10.200.0.101"),
            ("port", "80"),
            ("sched", "rr"),
            ("fwd", "dr"),
            ("persistence", ""),
        ];
        if let Some(t) = csrf {
            f.push(("csrf", t));
        }
        c.post("/setup/service", &f)
    };
    for (what, csrf) in [
        ("no token", None),
        ("a wrong token", Some("0123456789abcdef")),
    ] {
        let r = service(csrf);
        assert_eq!(r.status, 403, "{what}: {}", r.body);
        assert!(r.body.contains("CSRF"), "{what}: {}", r.body);
        assert!(
            !adm_list(&lab).contains("10.200.0.101"),
            "{what}: the service was made"
        );
    }
    // Another session's token is not this one's.
    let other = Console::open(&lab, "dir", &base);
    other.login(ADMIN.0, ADMIN.1);
    other.goto("/setup");
    let foreign = other.csrf("form#new-service");
    if foreign != token {
        let r = service(Some(&foreign));
        assert_eq!(r.status, 403, "another session's token: {}", r.body);
        assert!(!adm_list(&lab).contains("10.200.0.101"));
    }
    // The same request with the page's token is a change.
    let r = service(Some(&token));
    assert!(
        r.status == 303 || r.status == 200,
        "with the token: {} {}",
        r.status,
        r.body
    );
    assert!(
        adm_list(&lab).contains("10.200.0.101:80"),
        "{}",
        adm_list(&lab)
    );
}

#[test]
fn the_view_role_cannot_change_anything() {
    let _g = lb_tests::serial();
    let mut lab = lab("view");
    let base = format!("http://{LOCAL}");
    start_console(&mut lab, LOCAL, &[], "dir", &base);
    // A service to look at (and to try to change), made by the admin.
    let admin = Console::open(&lab, "dir", &base);
    admin.login(ADMIN.0, ADMIN.1);
    create_service(&admin, "none");
    drop(admin);

    let c = Console::open(&lab, "dir", &base);
    c.login(VIEWER.0, VIEWER.1);
    assert!(c.b.text("span#user").unwrap().contains("view"));
    c.goto("/");
    assert_eq!(
        c.b.count(&real_row(&real_ip(1))).unwrap(),
        1,
        "the overview shows the service"
    );
    c.goto("/setup");
    for form in [
        "form#new-service",
        "form.add-real",
        "button.drain",
        "button.enable",
        "button.remove",
        "button.remove-service",
        "button#save-service",
    ] {
        assert_eq!(c.b.count(form).unwrap(), 0, "{form} shown to the view role");
    }
    // Forged changes with the viewer's own valid session and token.
    c.goto("/");
    let token = c.csrf("form#logout");
    let before = adm_list(&lab);
    let svc_field = SERVICE;
    let r1 = real_ip(1);
    let forged: [(&str, Vec<(&str, &str)>); 3] = [
        (
            "/setup/service",
            vec![
                ("proto", "tcp"),
                ("vip", "10.200.0.101"),
                ("port", "80"),
                ("sched", "rr"),
                ("fwd", "dr"),
                ("persistence", ""),
            ],
        ),
        (
            "/setup/real",
            vec![
                ("service", svc_field),
                ("addr", "10.200.0.13"),
                ("port", "80"),
                ("weight", "1"),
                ("check", "none"),
                ("check_path", ""),
            ],
        ),
        (
            "/setup/real/drain",
            vec![("service", svc_field), ("addr", &r1), ("port", "80")],
        ),
    ];
    for (path, mut fields) in forged {
        fields.push(("csrf", &token));
        let r = c.post(path, &fields);
        assert_eq!(r.status, 403, "POST {path}: {}", r.body);
        assert!(r.body.contains("read-only"), "POST {path}: {}", r.body);
    }
    assert_eq!(adm_list(&lab), before, "a view-role POST changed the table");
    // The export holds the VRRP and sync keys: admins only; the
    // configuration page shows the viewer the configuration, keys hidden.
    let r = c.b.http(HttpRequest::get(&c.url("/setup/export"))).unwrap();
    assert_eq!(r.status, 403, "GET /setup/export: {}", r.body);
    assert!(r.body.contains("read-only"), "{}", r.body);
    c.goto("/config");
    assert!(c.b.text("main").unwrap().contains("keys hidden"));
    assert_eq!(c.b.count("a#export-link").unwrap(), 0);
    // The viewer's overview still shows real 1 at weight 1.
    c.goto("/");
    assert_eq!(c.cells(&real_ip(1))["weight"], "1");
}

#[test]
fn unauthenticated_requests_go_to_the_login_page_or_are_refused() {
    let _g = lb_tests::serial();
    let mut lab = lab("anon");
    let base = format!("http://{LOCAL}");
    start_console(&mut lab, LOCAL, &[], "dir", &base);
    let t = NetnsThread::new(&lab.ns("dir")).unwrap();
    let get = |path: &str, cookie: Option<&str>| {
        let mut r = HttpRequest::get(&format!("{base}{path}"));
        if let Some(c) = cookie {
            r = r.header("Cookie", c);
        }
        t.http(r, HTTP_TIMEOUT).unwrap()
    };
    const PAGES: &[&str] = &[
        "/",
        "/checks",
        "/vrrp",
        "/connections",
        "/config",
        "/setup",
        "/setup/wizard",
        "/setup/export",
    ];
    for cookie in [None, Some("lb_session=forged0123456789")] {
        for p in PAGES {
            let r = get(p, cookie);
            assert_eq!(r.status, 303, "GET {p} ({cookie:?}): {}", r.body);
            assert_eq!(r.header("location"), Some("/login"), "GET {p}");
        }
        let r = get("/live.json", cookie);
        assert_eq!(r.status, 401, "GET /live.json: {}", r.body);
        for p in [
            "/",
            "/setup/service",
            "/setup/real",
            "/setup/real/drain",
            "/setup/real/enable",
            "/setup/real/remove",
            "/logout",
        ] {
            let mut req = HttpRequest::post_form(&format!("{base}{p}"), &[("csrf", "x")]);
            if let Some(c) = cookie {
                req = req.header("Cookie", c);
            }
            let r = t.http(req, HTTP_TIMEOUT).unwrap();
            assert_eq!(r.status, 401, "POST {p} ({cookie:?}): {}", r.body);
        }
    }

    // The browser lands on the login form.
    let c = Console::open(&lab, "dir", &base);
    c.goto("/setup");
    assert_eq!(path_of(&c.b.url().unwrap()), "/login");
    assert_eq!(c.b.count("form#login-form").unwrap(), 1);

    // A session ends with logout: its cookie opens nothing afterwards.
    c.login(ADMIN.0, ADMIN.1);
    let session =
        c.b.cookies()
            .unwrap()
            .into_iter()
            .find(|k| k.name == "lb_session")
            .expect("lb_session cookie");
    assert!(session.http_only, "lb_session not HttpOnly");
    assert_eq!(session.same_site, "Strict");
    assert!(
        !session.secure,
        "Secure on plain HTTP would not be sent back"
    );
    let cookie = format!("lb_session={}", session.value);
    assert_eq!(get("/", Some(&cookie)).status, 200);
    assert_eq!(get("/live.json", Some(&cookie)).status, 200);
    c.b.click_and_load("button#logout-submit").unwrap();
    assert_eq!(path_of(&c.b.url().unwrap()), "/login");
    assert_eq!(get("/", Some(&cookie)).status, 303);
    assert_eq!(get("/live.json", Some(&cookie)).status, 401);
}

/// A certificate for the director's address and its key, PEM, in the lab.
fn certificate(lab: &Lab) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![DIRECTOR_IP.to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (lab.workdir.join("web.crt"), lab.workdir.join("web.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn the_console_over_tls_sets_a_secure_cookie() {
    let _g = lb_tests::serial();
    let mut lab = lab("tls");
    let (cert, key) = certificate(&lab);
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let listen = format!("{DIRECTOR_IP}:3636");
    let base = format!("https://{listen}");
    // No --web-insecure: TLS makes a non-loopback address acceptable.
    start_console(
        &mut lab,
        &listen,
        &["--web-cert", &cert, "--web-key", &key],
        "cl",
        &base,
    );
    // From the client's namespace, across the lab's network.
    let c = Console::open(&lab, "cl", &base);
    c.login(ADMIN.0, ADMIN.1);
    assert!(c.b.url().unwrap().starts_with("https://"));
    let session =
        c.b.cookies()
            .unwrap()
            .into_iter()
            .find(|k| k.name == "lb_session")
            .expect("lb_session cookie");
    assert!(session.secure, "lb_session without Secure under TLS");
    assert!(session.http_only);
    assert_eq!(session.same_site, "Strict");
    assert_eq!(c.b.status(&c.url("/")).unwrap(), 200);
    // Plain HTTP on the TLS port gets no page.
    let plain = c.b.thread().http(
        HttpRequest::get(&format!("http://{listen}/login")),
        HTTP_TIMEOUT,
    );
    assert!(
        plain.as_ref().map_or(true, |r| r.status >= 400),
        "plain HTTP served: {plain:?}"
    );
}

/// `lb run` with `args`, in the director's namespace; its exit status and
/// output if it ends within 40 s, else `None` (it was killed).
fn run_briefly(lab: &Lab, args: &[&str]) -> Option<(std::process::ExitStatus, String)> {
    let log = lab.workdir.join("briefly.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.ns("dir")])
        .arg(&lab.bins.lb)
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(40) {
        if let Some(st) = child.try_wait().unwrap() {
            return Some((st, std::fs::read_to_string(&log).unwrap_or_default()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn plain_http_off_loopback_needs_web_insecure() {
    let _g = lb_tests::serial();
    let mut lab = lab("insec");
    let users = users(&lab).to_string_lossy().into_owned();
    let bpffs = lab.bpffs().to_string_lossy().into_owned();
    let sock = lab.socket().to_string_lossy().into_owned();
    let state = lab.state_dir_of("dir").to_string_lossy().into_owned();
    let config = empty_config(&lab);
    let listen = format!("{DIRECTOR_IP}:3636");
    let args = [
        "--config",
        &config,
        "--iface",
        "eth0",
        "--bpffs",
        &bpffs,
        "--socket",
        &sock,
        "--state-dir",
        &state,
        "--web-listen",
        &listen,
        "--web-users",
        &users,
    ];
    let (status, out) = run_briefly(&lab, &args)
        .expect("lb run with plain HTTP on a non-loopback address kept running");
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("--web-insecure"),
        "the refusal should name the option:\n{out}"
    );

    // With --web-insecure it serves, across the lab's network.
    let base = format!("http://{listen}");
    start_console(&mut lab, &listen, &["--web-insecure"], "cl", &base);
    let c = Console::open(&lab, "cl", &base);
    c.login(ADMIN.0, ADMIN.1);
}

/// The first-run wizard: one DR service with two reals and their HTTP
/// checks in one form; the overview shows it up and it carries traffic.
#[test]
fn the_first_run_wizard_makes_a_checked_dr_service() {
    let _g = lb_tests::serial();
    let mut lab = lab("wiz");
    let base = format!("http://{LOCAL}");
    start_console(&mut lab, LOCAL, &[], "dir", &base);
    let c = Console::open(&lab, "dir", &base);
    c.login(ADMIN.0, ADMIN.1);
    c.goto("/setup/wizard");
    let (r1, r2) = (real_ip(1), real_ip(2));
    c.b.fill(
        "form#wizard",
        &[
            ("fwd", "dr"),
            ("proto", "tcp"),
            ("vip", VIP),
            ("port", "80"),
            ("sched", "rr"),
            ("real1", &r1),
            ("real2", &r2),
            ("check", "http"),
            ("check_path", "/"),
        ],
    )
    .unwrap();
    c.b.click_and_load("button#wizard-submit").unwrap();
    c.assert_no_error("the wizard");
    let list = adm_list(&lab);
    assert!(
        list.contains(&format!("{r1}:80")) && list.contains(&format!("{r2}:80")),
        "{list}"
    );
    lab.wait_resolved(Duration::from_secs(30)).unwrap();
    c.b.wait_until("both reals up", Duration::from_secs(30), |_| {
        c.goto("/");
        Ok((1..=2).all(|i| c.cells(&real_ip(i))["health"] == "up"))
    })
    .unwrap();
    let tally = lab.http_get(&format!("{VIP}:80"), 20).unwrap();
    assert_eq!(tally.get("r1"), Some(&10), "{tally:?}");
    assert_eq!(tally.get("r2"), Some(&10), "{tally:?}");
    // The checks are the wizard's: the export carries an HTTP_GET per real.
    let export = c.b.http(HttpRequest::get(&c.url("/setup/export"))).unwrap();
    assert_eq!(
        export.body.matches("HTTP_GET").count(),
        2,
        "{}",
        export.body
    );
}

/// One login through the plain client from `t`'s namespace, as a browser
/// does it: `GET /login` for the form's token and its cookie, then the POST.
fn raw_login(t: &NetnsThread, base: &str, user: &str, password: &str) -> HttpResponse {
    let page = t
        .http(HttpRequest::get(&format!("{base}/login")), HTTP_TIMEOUT)
        .unwrap();
    let cookie = page
        .set_cookies()
        .into_iter()
        .find_map(|c| c.split(';').next().filter(|kv| kv.starts_with("lb_login=")))
        .expect("lb_login cookie")
        .to_owned();
    let token = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the login form's csrf field")
        .to_owned();
    let req = HttpRequest::post_form(
        &format!("{base}/login"),
        &[("user", user), ("password", password), ("csrf", &token)],
    )
    .header("Cookie", &cookie);
    t.http(req, HTTP_TIMEOUT).unwrap()
}

/// Failed logins from one address are limited: after five, even the right
/// password gets 429 (the limit's window is a minute; not waited for).
#[test]
fn login_attempts_are_rate_limited() {
    let _g = lb_tests::serial();
    let mut lab = lab("rate");
    let base = format!("http://{LOCAL}");
    start_console(&mut lab, LOCAL, &[], "dir", &base);
    let t = NetnsThread::new(&lab.ns("dir")).unwrap();
    // The raw login works (the check below is the limit, not the client).
    let ok = raw_login(&t, &base, ADMIN.0, ADMIN.1);
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(ok
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("lb_session=")));
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(raw_login(&t, &base, ADMIN.0, "guess").status);
        if codes.last() == Some(&429) {
            break;
        }
    }
    assert_eq!(codes.last(), Some(&429), "no limit after {codes:?}");
    assert!(codes.len() >= 3, "limited too early: {codes:?}");
    assert!(
        codes[..codes.len() - 1].iter().all(|c| *c == 401),
        "{codes:?}"
    );
    let r = raw_login(&t, &base, ADMIN.0, ADMIN.1);
    assert_eq!(
        r.status, 429,
        "the right password within the window: {}",
        r.body
    );
    assert!(r.body.contains("id=\"error\""), "{}", r.body);
    assert!(r
        .set_cookies()
        .iter()
        .all(|c| !c.starts_with("lb_session=")));
}
