//! The browser harness (lb_tests::browser) against a page nsprobe serves in
//! a lab namespace: Chromium and chromedriver run in the namespace and
//! nowhere else, forms are filled and submitted, texts, cookies, status and
//! screenshots read, and nothing is left behind, also when a test panics.
//! Needs root, Debian's chromium and chromium-driver (`cargo xtask setup`).

use std::{os::unix::fs::MetadataExt as _, path::Path, time::Duration};

use lb_tests::{
    browser::{pids_using, Browser, HttpRequest, WINDOW},
    Bins, Lab,
};

/// The page: a form whose submit handler writes what was typed and
/// chosen into `p#out`, and a cookie set by script.
const PAGE: &str = r#"<!doctype html>
<html><head><title>probe</title></head><body>
<h1 id="title">nsprobe page</h1>
<form id="f" onsubmit="document.getElementById('out').textContent = this.elements.user.value + '/' + this.elements.proto.value + '/' + this.elements.fwd.value; return false;">
<input name="user" value="old">
<select name="proto"><option value="tcp">TCP</option><option value="udp">UDP</option></select>
<input type="radio" name="fwd" value="dr" checked><input type="radio" name="fwd" value="nat">
<button id="go" type="submit">go</button>
</form>
<p id="out"></p>
<ul><li class="item">one</li><li class="item">two</li></ul>
<a id="next" href="/next">next</a>
<script>document.cookie = "probe=1; SameSite=Strict";</script>
</body></html>
"#;

const PORT: u16 = 8000;

fn lab(name: &str) -> Lab {
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    let mut lab =
        Lab::empty(&format!("lbw{}{name}", std::process::id() % 1000), bins).expect("lab");
    lab.add_ns("web").expect("namespace");
    let status = lab.workdir.join("status");
    std::fs::write(format!("{}.body", status.display()), PAGE).unwrap();
    let probe = lab.bins.nsprobe.to_string_lossy().into_owned();
    lab.spawn(
        "web",
        &[
            &probe,
            "serve",
            &PORT.to_string(),
            "page",
            &status.to_string_lossy(),
        ],
        "httpd",
    )
    .expect("nsprobe");
    lab
}

/// The network namespace (inode) of a process.
fn netns_of(pid: i32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

fn alive(pid: i32) -> bool {
    // State "Z" (zombie) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|st| st != "Z")
        })
        .unwrap_or(false)
}

#[test]
fn drives_a_page_inside_the_namespace() {
    let _g = lb_tests::serial();
    let lab = lab("p");
    let ns = lab.ns("web");
    let url = format!("http://127.0.0.1:{PORT}/");
    let mut b = Browser::start(&ns, &lab.workdir).expect("browser");

    // Every process of the browser is in the lab's namespace, not the host's.
    let lab_ns = std::fs::metadata(format!("/run/netns/{ns}")).unwrap().ino();
    let host_ns = netns_of(std::process::id() as i32).unwrap();
    assert_ne!(lab_ns, host_ns);
    let driver = b.driver_pid().expect("driver") as i32;
    assert_eq!(netns_of(driver), Some(lab_ns), "chromedriver's namespace");
    let chromium = pids_using(b.profile());
    assert!(!chromium.is_empty(), "no Chromium process found");
    for pid in &chromium {
        if let Some(n) = netns_of(*pid) {
            assert_eq!(n, lab_ns, "Chromium process {pid} outside the lab");
        }
    }

    // The server only listens in the namespace: loading it proves the browser is there.
    b.wait_until("nsprobe answers", Duration::from_secs(10), |b| {
        Ok(b.status(&url)? == 200)
    })
    .expect("nsprobe");
    b.goto(&url).unwrap();
    assert_eq!(b.text("h1#title").unwrap(), "nsprobe page");
    assert_eq!(b.texts("li.item").unwrap(), ["one", "two"]);
    assert_eq!(b.count("li.item").unwrap(), 2);
    assert_eq!(b.count("table").unwrap(), 0);
    assert!(b.url().unwrap().starts_with(&url));

    // Fill (text input replaced, select chosen) and click.
    b.fill(
        "form#f",
        &[("user", "admin"), ("proto", "udp"), ("fwd", "nat")],
    )
    .unwrap();
    assert_eq!(
        b.prop("form#f [name=user]", "value").unwrap().as_deref(),
        Some("admin")
    );
    b.click("button#go").unwrap();
    b.wait_until("the submit handler ran", Duration::from_secs(5), |b| {
        Ok(b.text("p#out")? == "admin/udp/nat")
    })
    .unwrap();
    assert!(b.fill("form#f", &[("missing", "x")]).is_err());
    assert!(b.fill("form#f", &[("proto", "sctp")]).is_err());
    assert!(b.fill("form#f", &[("fwd", "tun")]).is_err());
    assert!(b.click("button#absent").is_err());

    // A click that loads another page returns once it is there.
    b.click_and_load("a#next").unwrap();
    assert_eq!(b.url().unwrap(), format!("{url}next"));
    assert_eq!(b.text("p#out").unwrap(), "", "a new document");
    let bound = b.timeout;
    b.timeout = Duration::from_secs(3);
    assert!(b.click_and_load("h1#title").is_err(), "nothing loads");
    b.timeout = bound;

    // Cookies as WebDriver reports them, and sent by the plain client.
    let cookies = b.cookies().unwrap();
    let probe = cookies.iter().find(|c| c.name == "probe").expect("cookie");
    assert_eq!(probe.value, "1");
    assert!(!probe.http_only && !probe.secure);
    assert_eq!(probe.same_site, "Strict");
    assert_eq!(b.cookie_pairs().unwrap(), [("probe".into(), "1".into())]);

    // Status through the plain client, from the namespace.
    std::fs::write(lab.workdir.join("status"), "404").unwrap();
    assert_eq!(b.status(&url).unwrap(), 404);
    let r = b
        .thread()
        .http(
            HttpRequest::post_form(&url, &[("a", "b c")]),
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.contains("nsprobe page"));
    assert!(r.header("Content-Length").is_some());
    // The host's loopback has no such server (the client really is in the
    // namespace): nothing listens there on that port, or something else
    // answers.
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", PORT)) {
        use std::io::{Read as _, Write as _};
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut v = Vec::new();
        let _ = s.read_to_end(&mut v);
        assert!(!String::from_utf8_lossy(&v).contains("nsprobe page"));
    }

    // A screenshot of the window's size.
    let shot = lab.workdir.join("shot.png");
    b.screenshot(&shot).unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((w, h), WINDOW, "screenshot size");

    // Dropping it leaves nothing.
    let profile = b.profile().to_owned();
    drop(b);
    assert!(!alive(driver), "chromedriver {driver} still runs");
    let left: Vec<i32> = pids_using(&profile)
        .into_iter()
        .filter(|p| alive(*p))
        .collect();
    assert!(left.is_empty(), "Chromium processes left: {left:?}");
    assert!(!profile.exists(), "profile {} left", profile.display());
}

#[test]
fn a_panicking_test_leaves_no_browser() {
    let _g = lb_tests::serial();
    let lab = lab("x");
    let ns = lab.ns("web");
    let (tx, rx) = std::sync::mpsc::channel();
    let workdir = lab.workdir.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let b = Browser::start(&ns, &workdir).expect("browser");
        tx.send((b.driver_pid().unwrap() as i32, b.profile().to_owned()))
            .unwrap();
        b.goto(&format!("http://127.0.0.1:{PORT}/")).unwrap();
        panic!("the test fails with the browser open");
    }));
    assert!(r.is_err());
    let (driver, profile) = rx.recv().unwrap();
    assert!(!alive(driver), "chromedriver {driver} still runs");
    assert!(pids_using(&profile).into_iter().all(|p| !alive(p)));
    assert!(!Path::new(&profile).exists());
}

#[test]
fn a_missing_namespace_is_an_error() {
    let _g = lb_tests::serial();
    let e = Browser::start("lb-no-such-namespace", &std::env::temp_dir())
        .err()
        .expect("no browser without a namespace");
    assert!(format!("{e:#}").contains("lb-no-such-namespace"), "{e:#}");
}
