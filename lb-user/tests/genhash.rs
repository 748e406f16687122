//! `lb genhash` against local HTTP(S) servers: the digest (computed here
//! independently with the md-5 crate), the verbose layout against keepalived
//! 2.2.7's `genhash -v` output for the same answer (fixture), the options
//! as they appear in the request, and the failures (exit code, message).
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    process::Command,
    sync::{mpsc, Arc},
    time::Duration,
};

use lb_user::genhash::{self, Options, Protocol};
use md5::{Digest, Md5};

/// The answer keepalived's genhash was run against for the fixture
/// `fixtures/genhash-verbose.txt`: a body of 40 bytes (Content-Length) and
/// 5 more that must not be digested.
const ANSWER: &[u8] = b"HTTP/1.0 200 OK\r\nServer: fixture\r\nContent-Length: 40\r\n\r\n<html>hello, genhash \x01\xff\t fixture</html>\nEXTRA";
const BODY: &[u8] = b"<html>hello, genhash \x01\xff\t fixture</html>\n";

/// Serves `answer` to every connection; each request head goes to the
/// returned channel.
fn server(answer: &'static [u8]) -> (SocketAddr, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let head = read_head(&mut s);
            let _ = tx.send(head);
            let _ = s.write_all(answer);
        }
    });
    (addr, rx)
}

fn read_head(s: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn opts(addr: SocketAddr, url: &str) -> Options {
    Options {
        server: addr.ip(),
        port: addr.port(),
        url: url.into(),
        ssl: false,
        sni: false,
        virtualhost: None,
        protocol: Protocol::Http10,
        fwmark: None,
        timeout: Duration::from_secs(5),
    }
}

fn md5_hex(b: &[u8]) -> String {
    format!("{:032x}", u128::from_be_bytes(Md5::digest(b).into()))
}

#[tokio::test]
async fn digest_is_the_md5_of_the_body_up_to_content_length() {
    let (addr, rx) = server(ANSWER);
    let f = genhash::fetch(&opts(addr, "/index.html")).await.unwrap();
    let want = md5_hex(BODY);
    assert_eq!(want, "8dd77a45387425eb021f677edb6f0e1a");
    assert_eq!(
        genhash::render(&f, "/index.html", false),
        format!("{want}\n")
    );
    assert_eq!(f.answer.status, 200);
    assert_eq!(genhash::status_warning(&f.answer), None);
    // The default request: HTTP/1.0, Host is address:port.
    let head = rx.recv().unwrap();
    assert!(head.starts_with("GET /index.html HTTP/1.0\r\n"), "{head:?}");
    assert!(head.contains(&format!("\r\nHost: {addr}\r\n")), "{head:?}");
}

#[tokio::test]
async fn verbose_output_matches_keepalived_genhash() {
    let (addr, _rx) = server(ANSWER);
    let f = genhash::fetch(&opts(addr, "/index.html")).await.unwrap();
    let ours = genhash::render(&f, "/index.html", true);
    let theirs = include_str!("fixtures/genhash-verbose.txt");
    // Everything but the measured time is identical.
    let cut = |s: &str| s[..s.rfind(" = ").unwrap()].to_string();
    assert_eq!(cut(&ours), cut(theirs));
    let last = ours.lines().last().unwrap();
    assert!(
        last.starts_with("Global response time for [/index.html] = ") && last.ends_with(" usecs"),
        "{last}"
    );
}

#[tokio::test]
async fn options_shape_the_request() {
    let (addr, rx) = server(ANSWER);
    let mut o = opts(addr, "/health?x=1");
    o.virtualhost = Some("www.example.com".into());
    o.protocol = Protocol::Http11;
    genhash::fetch(&o).await.unwrap();
    let head = rx.recv().unwrap();
    assert!(head.starts_with("GET /health?x=1 HTTP/1.1\r\n"), "{head:?}");
    assert!(head.contains("\r\nHost: www.example.com\r\n"), "{head:?}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head:?}");
    // A firewall mark is set on the socket (root only: CAP_NET_ADMIN).
    if unsafe { libc::geteuid() } == 0 {
        let mut o = opts(addr, "/");
        o.fwmark = Some(7);
        genhash::fetch(&o).await.unwrap();
    }
}

#[tokio::test]
async fn a_non_2xx_status_is_digested_and_reported() {
    let (addr, _rx) = server(
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let f = genhash::fetch(&opts(addr, "/missing")).await.unwrap();
    // The chunked framing is digested as received (keepalived 2.2.7's genhash
    // prints 79e9489e3bd3f0cb0158215341de046d for this answer).
    assert_eq!(
        genhash::render(&f, "/missing", false),
        format!("{}\n", md5_hex(b"5\r\nhello\r\n0\r\n\r\n"))
    );
    assert_eq!(
        genhash::status_warning(&f.answer).unwrap(),
        "status 404: HTTP_GET / SSL_GET fail on it unless the url has `status_code 404`"
    );
}

#[tokio::test]
async fn ssl_with_sni_against_a_generated_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let tls = acceptor.accept(s).await.unwrap();
        let sni = tls.get_ref().1.server_name().map(String::from);
        tx.send(sni).unwrap();
        let mut tls = tls;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut b = [0u8; 1024];
        let _ = tls.read(&mut b).await;
        tls.write_all(ANSWER).await.unwrap();
        tls.shutdown().await.unwrap();
    });
    let mut o = opts(addr, "/");
    o.ssl = true;
    o.sni = true;
    o.virtualhost = Some("www.example.com".into());
    let f = genhash::fetch(&o).await.unwrap();
    assert_eq!(
        genhash::render(&f, "/", false),
        format!("{}\n", md5_hex(BODY))
    );
    assert_eq!(rx.recv().await.unwrap().as_deref(), Some("www.example.com"));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut o = opts(addr, "/");
    o.timeout = Duration::from_millis(300);
    let e = genhash::fetch(&o).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("GET / from {addr}: no complete answer within 300ms")
    );
    drop(l);
}

fn lb(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

#[test]
fn the_command_prints_the_digest() {
    let (addr, _rx) = server(ANSWER);
    let port = addr.port().to_string();
    let out = lb(&[
        "genhash",
        "-s",
        "127.0.0.1",
        "-p",
        &port,
        "-u",
        "/index.html",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", md5_hex(BODY))
    );
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "");
}

#[test]
fn connection_refused_exits_1_with_the_reason() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let out = lb(&[
        "genhash",
        "-s",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-u",
        "/",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "lb: GET / from 127.0.0.1:{port}: connect 127.0.0.1:{port}: Connection refused (os error 111)\n"
        )
    );
}

#[test]
fn bad_options_are_usage_errors() {
    // The server must be an address, as keepalived's genhash requires.
    let out = lb(&["genhash", "-s", "localhost", "-p", "80", "-u", "/"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid value 'localhost' for '--server <SERVER>'"),
        "{out:?}"
    );
    let out = lb(&[
        "genhash",
        "-s",
        "127.0.0.1",
        "-p",
        "80",
        "-u",
        "/",
        "-P",
        "2.0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid HTTP protocol version '2.0'"),
        "{out:?}"
    );
    // -p and -u are required.
    let out = lb(&["genhash", "-s", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(2));
}
