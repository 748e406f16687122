//! A headless Chromium driven through WebDriver (fantoccini), and a plain
//! HTTP client, both living inside a lab's network namespace.
//!
//! Nothing here touches the host's network. [`NetnsThread`] is a thread
//! that joins a namespace (`setns(2)` on `/run/netns/NAME` with
//! `CLONE_NEWNET`; the namespace is per thread) and runs its own
//! current-thread tokio runtime: every socket a job on it opens — the
//! WebDriver client's and [`NetnsThread::http`]'s — is a socket of that
//! namespace. [`Browser`] starts Debian's `chromedriver` in the same
//! namespace (`ip netns exec`) on a free port of its loopback, and the
//! driver starts `chromium` as its child, so the browser's sockets are the
//! namespace's too.
//!
//! Every call is bounded ([`Browser::timeout`]); dropping a [`Browser`]
//! ends the session, kills the driver's process group and every process
//! still using its profile, and removes the profile directory, also when
//! the test panics.

use std::{
    future::Future,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use fantoccini::{Client, ClientBuilder, Locator};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Debian's Chromium (package `chromium`, installed by `cargo xtask setup`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver (package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The browser window, in CSS pixels (the screenshots' size).
pub const WINDOW: (u32, u32) = (1280, 900);

/// Chromium's flags: headless, as root (no sandbox: the tests run as root
/// and the namespace is the isolation), nothing that reaches out (updates,
/// sync, QUIC, background fetches), /dev/shm not relied on.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

/// A thread inside a network namespace with its own current-thread tokio
/// runtime; jobs run on it one at a time.
pub struct NetnsThread {
    ns: String,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NetnsThread {
    /// Starts the thread and joins namespace `ns` (a name under
    /// /run/netns, as `ip netns` makes: [`crate::Lab::ns`]).
    pub fn new(ns: &str) -> anyhow::Result<Self> {
        let path = PathBuf::from("/run/netns").join(ns);
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<()>>();
        let thread = std::thread::Builder::new()
            .name(format!("netns-{ns}"))
            .spawn(move || {
                let joined = (|| {
                    let f = std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    // SAFETY: setns(2) on an fd we hold open; it moves this
                    // thread only (CLONE_NEWNET is allowed per thread).
                    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        bail!(
                            "setns({}): {}",
                            path.display(),
                            std::io::Error::last_os_error()
                        );
                    }
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("tokio runtime")
                })();
                let rt = match joined {
                    Ok(rt) => {
                        let _ = ready_tx.send(Ok(()));
                        rt
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&rt);
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the namespace thread for {ns} died"))??;
        Ok(Self {
            ns: ns.to_owned(),
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// The namespace's name.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Runs `f`'s future on the thread, in the namespace, for at most
    /// `timeout`.
    pub fn run<R, F, Fut>(&self, timeout: Duration, f: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<R>>,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |rt| {
            let r = rt.block_on(async move {
                match tokio::time::timeout(timeout, f()).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow!("no answer within {timeout:?}")),
                }
            });
            let _ = tx.send(r);
        });
        self.jobs
            .as_ref()
            .ok_or_else(|| anyhow!("namespace thread stopped"))?
            .send(job)
            .map_err(|_| anyhow!("the namespace thread for {} died", self.ns))?;
        // The job bounds itself; the margin covers a busy thread.
        rx.recv_timeout(timeout + Duration::from_secs(10))
            .map_err(|e| anyhow!("namespace thread for {}: {e}", self.ns))?
    }

    /// One HTTP/1.1 request from the namespace (`http://` or `https://`;
    /// any server certificate is accepted: the tests make their own),
    /// `Connection: close`, answered within `timeout`.
    pub fn http(&self, req: HttpRequest, timeout: Duration) -> anyhow::Result<HttpResponse> {
        let what = format!("{} {}", req.method, req.url);
        self.run(timeout, move || http_once(req))
            .with_context(|| what)
    }
}

impl Drop for NetnsThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop (jobs bound themselves).
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A request for [`NetnsThread::http`].
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    /// Extra headers (`Host` and `Connection: close` are added).
    pub headers: Vec<(String, String)>,
    /// A body sent as `application/x-www-form-urlencoded` when `form` is
    /// set, as is otherwise.
    pub body: Option<String>,
}

impl HttpRequest {
    /// `GET url`.
    pub fn get(url: &str) -> Self {
        Self {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// `POST url` with a form body (`application/x-www-form-urlencoded`,
    /// fields encoded here).
    pub fn post_form(url: &str, fields: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        Self {
            method: "POST".into(),
            url: url.into(),
            headers: vec![(
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: Some(body),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds a `Cookie` header (`name=value; …`), when `cookies` is not empty.
    pub fn cookies(self, cookies: &[(String, String)]) -> Self {
        if cookies.is_empty() {
            return self;
        }
        let v = cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        self.header("Cookie", &v)
    }
}

/// What [`NetnsThread::http`] got back.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Accepts any server certificate (the tests' own, self-signed); the
/// handshake's signatures are still checked with ring.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn http_once(req: HttpRequest) -> anyhow::Result<HttpResponse> {
    let url = url::Url::parse(&req.url).with_context(|| format!("URL {}", req.url))?;
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("no host in {}", req.url))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| anyhow!("no port in {}", req.url))?;
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut builder = hyper::Request::builder()
        .method(req.method.as_str())
        .uri(path)
        .header("Host", authority)
        .header("Connection", "close");
    for (n, v) in &req.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    let request = builder.body(Full::new(Bytes::from(req.body.unwrap_or_default())))?;
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    match url.scheme() {
        "http" => send(tcp, request).await,
        "https" => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth();
            let name =
                rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']))?.to_owned();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .context("TLS handshake")?;
            send(tls, request).await
        }
        s => bail!("scheme {s} not supported"),
    }
}

async fn send<S>(io: S, request: hyper::Request<Full<Bytes>>) -> anyhow::Result<HttpResponse>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(request).await?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A cookie of the browser, as WebDriver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserCookie {
    pub name: String,
    pub value: String,
    pub secure: bool,
    pub http_only: bool,
    /// `Strict`, `Lax`, `None`, or empty when not reported.
    pub same_site: String,
}

static PROFILES: AtomicUsize = AtomicUsize::new(0);

/// A headless Chromium in a lab namespace, through chromedriver.
pub struct Browser {
    /// The bound of every call (navigation included).
    pub timeout: Duration,
    thread: NetnsThread,
    client: Option<Client>,
    driver: Option<Child>,
    profile: PathBuf,
    driver_log: PathBuf,
}

impl Browser {
    /// Starts chromedriver in namespace `ns` on a free loopback port, a
    /// Chromium session through it (window [`WINDOW`], a fresh profile),
    /// and the WebDriver client on a [`NetnsThread`] of the same namespace.
    /// The driver's log goes to `log_dir/chromedriver-N.log`.
    pub fn start(ns: &str, log_dir: &Path) -> anyhow::Result<Self> {
        for p in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(p).exists() {
                bail!("{p} missing: run `cargo xtask setup` (Debian chromium, chromium-driver)");
            }
        }
        let thread = NetnsThread::new(ns)?;
        let n = PROFILES.fetch_add(1, Ordering::Relaxed);
        let profile = std::env::temp_dir().join(format!("lb-chromium-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)?;
        let driver_log = log_dir.join(format!("chromedriver-{n}.log"));
        let mut b = Self {
            timeout: Duration::from_secs(30),
            thread,
            client: None,
            driver: None,
            profile,
            driver_log,
        };
        // A port free in the namespace now; only this lab's own processes
        // could take it before the driver binds it.
        let port: u16 = b.thread.run(Duration::from_secs(5), || async {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        })?;
        let log = std::fs::File::create(&b.driver_log)?;
        let child = {
            use std::os::unix::process::CommandExt as _;
            Command::new("ip")
                .args(["netns", "exec", ns, CHROMEDRIVER])
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Its own process group: chromium and its helpers are
                // killed with the driver ([`Browser::drop`]).
                .process_group(0)
                .spawn()
                .context("starting chromedriver")?
        };
        b.driver = Some(child);
        let url = format!("http://127.0.0.1:{port}");
        b.thread
            .run(Duration::from_secs(20), move || async move {
                let start = Instant::now();
                loop {
                    if tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                    {
                        return Ok(());
                    }
                    if start.elapsed() > Duration::from_secs(15) {
                        bail!("chromedriver did not listen on {port} within 15 s");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .with_context(|| format!("chromedriver log:\n{}", b.driver_log()))?;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(b.profile_arg());
        args.push(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
        let caps = serde_json::json!({
            "browserName": "chrome",
            // The TLS test serves a self-signed certificate.
            "acceptInsecureCerts": true,
            "timeouts": { "pageLoad": 30_000, "script": 10_000, "implicit": 0 },
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let client = b
            .thread
            .run(Duration::from_secs(60), move || async move {
                let mut builder =
                    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
                let c = builder.capabilities(caps).connect(&url).await?;
                // Headless Chromium draws no browser UI but still counts
                // one in the window's size: grow the window by the
                // difference, so the viewport (and a screenshot) is WINDOW.
                let inner = c
                    .execute("return [window.innerWidth, window.innerHeight];", vec![])
                    .await?;
                let dim = |i: usize| {
                    inner[i]
                        .as_u64()
                        .map(|v| v as u32)
                        .ok_or_else(|| anyhow!("viewport size {inner}"))
                };
                let (w, h) = (dim(0)?, dim(1)?);
                if (w, h) != WINDOW {
                    c.set_window_size(
                        2 * WINDOW.0 - w.min(WINDOW.0),
                        2 * WINDOW.1 - h.min(WINDOW.1),
                    )
                    .await?;
                }
                Ok(c)
            })
            .with_context(|| {
                format!(
                    "new WebDriver session; chromedriver log:\n{}",
                    b.driver_log()
                )
            })?;
        b.client = Some(client);
        Ok(b)
    }

    /// The namespace thread (for [`NetnsThread::http`]).
    pub fn thread(&self) -> &NetnsThread {
        &self.thread
    }

    /// The driver's log so far.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(&self.driver_log).unwrap_or_default()
    }

    /// The profile directory (`--user-data-dir`), removed on drop; every
    /// process of this browser names it ([`pids_using`]).
    pub fn profile(&self) -> &Path {
        &self.profile
    }

    /// Chromium's `--user-data-dir=…` argument.
    pub fn profile_arg(&self) -> String {
        format!("--user-data-dir={}", self.profile.display())
    }

    /// The process id of chromedriver (its process group holds chromium).
    pub fn driver_pid(&self) -> Option<u32> {
        self.driver.as_ref().map(Child::id)
    }

    /// Runs `f` with the WebDriver client, on the namespace thread, within
    /// [`Browser::timeout`].
    pub fn with<R, F, Fut>(&self, f: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<R>>,
    {
        let c = self
            .client
            .clone()
            .ok_or_else(|| anyhow!("no WebDriver session"))?;
        self.thread.run(self.timeout, move || f(c))
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        let u = url.to_owned();
        self.with(move |c| async move { Ok(c.goto(&u).await?) })
            .with_context(|| format!("goto {url}"))
    }

    /// The URL of the page shown.
    pub fn url(&self) -> anyhow::Result<String> {
        self.with(|c| async move { Ok(c.current_url().await?.to_string()) })
    }

    /// The page's HTML as the browser holds it now.
    pub fn source(&self) -> anyhow::Result<String> {
        self.with(|c| async move { Ok(c.source().await?) })
    }

    /// Fills fields of the form `form` (a CSS selector) by their `name`:
    /// a `select` gets the option of that value, a radio button group the
    /// button of that value, a checkbox is ticked when the value is not
    /// empty, anything else is cleared and typed into.
    pub fn fill(&self, form: &str, fields: &[(&str, &str)]) -> anyhow::Result<()> {
        let form = form.to_owned();
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let what = format!("filling {form}");
        self.with(move |c| async move {
            for (name, value) in fields {
                let css = format!("{form} [name=\"{name}\"]");
                let e = c
                    .find(Locator::Css(&css))
                    .await
                    .with_context(|| format!("no field {css}"))?;
                let tag = e.tag_name().await?.to_ascii_lowercase();
                let kind = e.attr("type").await?.unwrap_or_default();
                if tag == "select" {
                    e.select_by_value(&value)
                        .await
                        .with_context(|| format!("{css}: no option {value}"))?;
                } else if kind == "radio" {
                    let css = format!("{form} [name=\"{name}\"][value=\"{value}\"]");
                    c.find(Locator::Css(&css))
                        .await
                        .with_context(|| format!("no radio button {css}"))?
                        .click()
                        .await?;
                } else if kind == "checkbox" {
                    let on = e.is_selected().await?;
                    // Click when the box is not as asked.
                    if on == value.is_empty() {
                        e.click().await?;
                    }
                } else {
                    e.clear().await?;
                    e.send_keys(&value).await?;
                }
            }
            Ok(())
        })
        .context(what)
    }

    /// Clicks the first element matching `css` (for a click that loads a
    /// page, [`Browser::click_and_load`]).
    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        let s = css.to_owned();
        self.with(move |c| async move {
            c.find(Locator::Css(&s)).await?.click().await?;
            Ok(())
        })
        .with_context(|| format!("click {css}"))
    }

    /// Clicks the first element matching `css` and waits until the page it
    /// loads (a form's submit button, a link) has replaced the one shown
    /// and finished loading: a click returns before a slow answer arrives.
    pub fn click_and_load(&self, css: &str) -> anyhow::Result<()> {
        let s = css.to_owned();
        let timeout = self.timeout;
        self.with(move |c| async move {
            // A mark on the current document: gone once another one shows.
            c.execute("window.__lb_old_page = true;", vec![]).await?;
            c.find(Locator::Css(&s)).await?.click().await?;
            let start = Instant::now();
            loop {
                let loaded = c
                    .execute(
                        "return window.__lb_old_page !== true && document.readyState === 'complete';",
                        vec![],
                    )
                    .await;
                // A script may fail while the next document replaces this one.
                if let Ok(serde_json::Value::Bool(true)) = loaded {
                    return Ok(());
                }
                if start.elapsed() > timeout {
                    bail!("no new page loaded within {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .with_context(|| format!("click {css} and load"))
    }

    /// The rendered text of the first element matching `css`.
    pub fn text(&self, css: &str) -> anyhow::Result<String> {
        let s = css.to_owned();
        self.with(move |c| async move { Ok(c.find(Locator::Css(&s)).await?.text().await?) })
            .with_context(|| format!("text of {css}"))
    }

    /// The rendered texts of every element matching `css`.
    pub fn texts(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let s = css.to_owned();
        self.with(move |c| async move {
            let mut out = Vec::new();
            for e in c.find_all(Locator::Css(&s)).await? {
                out.push(e.text().await?);
            }
            Ok(out)
        })
        .with_context(|| format!("texts of {css}"))
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> anyhow::Result<usize> {
        let s = css.to_owned();
        self.with(move |c| async move { Ok(c.find_all(Locator::Css(&s)).await?.len()) })
            .with_context(|| format!("count of {css}"))
    }

    /// Attribute `name` of the first element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> anyhow::Result<Option<String>> {
        let (s, n) = (css.to_owned(), name.to_owned());
        self.with(move |c| async move { Ok(c.find(Locator::Css(&s)).await?.attr(&n).await?) })
            .with_context(|| format!("attribute {name} of {css}"))
    }

    /// Property `name` of the first element matching `css` (an input's
    /// current `value`, say).
    pub fn prop(&self, css: &str, name: &str) -> anyhow::Result<Option<String>> {
        let (s, n) = (css.to_owned(), name.to_owned());
        self.with(move |c| async move { Ok(c.find(Locator::Css(&s)).await?.prop(&n).await?) })
            .with_context(|| format!("property {name} of {css}"))
    }

    /// Polls until `cond(self)` holds, at most `timeout`; returns its last
    /// error, or a timeout naming `what`.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&Self) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let last = cond(self);
            if let Ok(true) = last {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(match last {
                    Err(e) => e.context(format!("{what}: not within {timeout:?}")),
                    _ => anyhow!("{what}: not within {timeout:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The browser's cookies for the page shown.
    pub fn cookies(&self) -> anyhow::Result<Vec<BrowserCookie>> {
        self.with(|c| async move {
            Ok(c.get_all_cookies()
                .await?
                .into_iter()
                .map(|k| BrowserCookie {
                    name: k.name().to_owned(),
                    value: k.value().to_owned(),
                    secure: k.secure().unwrap_or(false),
                    http_only: k.http_only().unwrap_or(false),
                    same_site: k.same_site().map(|s| s.to_string()).unwrap_or_default(),
                })
                .collect())
        })
    }

    /// The browser's cookies as (name, value), for [`HttpRequest::cookies`].
    pub fn cookie_pairs(&self) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self
            .cookies()?
            .into_iter()
            .map(|c| (c.name, c.value))
            .collect())
    }

    /// One request with the browser's cookies, from the namespace (WebDriver
    /// does not tell a page's HTTP status; this does).
    pub fn http(&self, req: HttpRequest) -> anyhow::Result<HttpResponse> {
        let req = req.cookies(&self.cookie_pairs()?);
        self.thread.http(req, self.timeout)
    }

    /// The HTTP status of `GET url` with the browser's cookies.
    pub fn status(&self, url: &str) -> anyhow::Result<u16> {
        Ok(self.http(HttpRequest::get(url))?.status)
    }

    /// Saves a PNG of the window to `path` (directories made as needed).
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self.with(|c| async move { Ok(c.screenshot().await?) })?;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}

/// Pids of processes with an argument naming `dir` or a path under it
/// (alone or as `--option=PATH`): every process of a Chromium started
/// with `--user-data-dir=DIR`, its crash handler's `--database=DIR/…`
/// included.
pub fn pids_using(dir: &Path) -> Vec<i32> {
    let dir = dir.to_string_lossy().into_owned();
    let under = format!("{dir}/");
    let names = |a: &str| {
        let path = match a.split_once('=') {
            Some((opt, p)) if opt.starts_with("--") => p,
            _ => a,
        };
        path == dir || path.starts_with(&under)
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .any(|a| names(&String::from_utf8_lossy(a)))
            })
        })
        .collect()
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (chromedriver quits Chromium), bounded.
        if let Some(c) = self.client.take() {
            let _ = self
                .thread
                .run(Duration::from_secs(10), move || async move {
                    Ok(c.close().await?)
                });
        }
        if let Some(mut d) = self.driver.take() {
            let pgid = d.id() as i32;
            // SAFETY: kill(2) on the process group we created (process_group(0)).
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = d.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above; whatever of the group is left.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = d.kill();
            let _ = d.wait();
        }
        // A helper that left the group (the crash handler) still names
        // the profile.
        for pid in pids_using(&self.profile) {
            // SAFETY: kill(2) on a process started with our own profile directory.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
