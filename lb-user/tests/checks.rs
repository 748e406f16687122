//! The probes against real servers on loopback: HTTP status and digest
//! changes, a server that accepts but never answers (timeout kept strictly),
//! and SSL_GET against a TLS server with a certificate generated here.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use lb_user::{
    config::check::{Check, CheckKind, Timing, Url},
    health::{probe, Outcome},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

fn http(path: &str, digest: Option<&str>, tls: bool) -> Check {
    Check {
        kind: CheckKind::Http {
            urls: vec![Url {
                path: path.into(),
                status: vec![(200, 299)],
                digest: digest.map(String::from),
            }],
            virtualhost: Some("localhost".into()),
            tls,
            sni: tls,
            http11: tls,
        },
        fast_recovery: false,
        connect_ip: None,
        connect_port: None,
        bindto: None,
        timing: Timing::default(),
    }
}

/// Reads a request head; answers `status` with `body`.
async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    status: u16,
    body: &str,
) {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    let resp = format!(
        "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// An HTTP server answering `(status, body)` from `pick` per connection.
async fn server(pick: Arc<std::sync::Mutex<(u16, String)>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let (st, body) = pick.lock().unwrap().clone();
            tokio::spawn(answer(s, st, Box::leak(body.into_boxed_str())));
        }
    });
    addr
}

#[tokio::test]
async fn http_status_and_digest_changes() {
    let state = Arc::new(std::sync::Mutex::new((200u16, "hello".to_string())));
    let addr = server(state.clone()).await;
    let t = Duration::from_secs(2);
    // MD5("hello") = 5d41402abc4b2a76b9719d911017c592.
    let with_digest = http("/", Some("5d41402abc4b2a76b9719d911017c592"), false);
    assert_eq!(probe::run(&with_digest, addr, t).await, Outcome::Up);
    state.lock().unwrap().1 = "changed".into();
    let o = probe::run(&with_digest, addr, t).await;
    assert!(
        matches!(&o, Outcome::Down(e) if e.contains("digest")),
        "{o:?}"
    );
    *state.lock().unwrap() = (500, "hello".into());
    let o = probe::run(&http("/", None, false), addr, t).await;
    assert!(
        matches!(&o, Outcome::Down(e) if e.contains("status 500")),
        "{o:?}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_fails_at_the_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = l.accept().await.unwrap();
            held.push(s);
        }
    });
    let start = std::time::Instant::now();
    let o = probe::run(&http("/", None, false), addr, Duration::from_millis(500)).await;
    let took = start.elapsed();
    assert!(
        matches!(&o, Outcome::Down(e) if e.contains("timed out")),
        "{o:?}"
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(900),
        "{took:?}"
    );
}

#[tokio::test]
async fn ssl_get_against_a_generated_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
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
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    answer(tls, 200, "secure").await;
                }
            });
        }
    });
    let t = Duration::from_secs(2);
    // MD5("secure").
    let digest = format!("{:032x}", md5_of(b"secure"));
    assert_eq!(
        probe::run(&http("/", Some(&digest), true), addr, t).await,
        Outcome::Up
    );
    // Plain HTTP to the TLS port fails.
    assert!(matches!(
        probe::run(&http("/", None, false), addr, t).await,
        Outcome::Down(_)
    ));
}

fn md5_of(b: &[u8]) -> u128 {
    use md5::{Digest, Md5};
    u128::from_be_bytes(Md5::digest(b).into())
}

#[tokio::test]
async fn probes_connect_from_bindto_and_speak_the_configured_http_version() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, peer) = l.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 512];
                let n = s.read(&mut b).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&b[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let _ = tx.send((peer.ip(), line));
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            });
        }
    });
    let t = Duration::from_secs(2);
    let mut tcp = http("/", None, false);
    tcp.kind = CheckKind::Tcp;
    tcp.bindto = Some("127.0.0.2".parse().unwrap());
    assert_eq!(probe::run(&tcp, addr, t).await, Outcome::Up);
    let (peer, _) = rx.recv().await.unwrap();
    assert_eq!(peer, "127.0.0.2".parse::<std::net::IpAddr>().unwrap());
    let mut h11 = http("/x", None, false);
    if let CheckKind::Http { http11, .. } = &mut h11.kind {
        *http11 = true;
    }
    assert_eq!(probe::run(&h11, addr, t).await, Outcome::Up);
    let (_, line) = rx.recv().await.unwrap();
    assert_eq!(line, "GET /x HTTP/1.1");
    assert_eq!(
        probe::run(&http("/y", None, false), addr, t).await,
        Outcome::Up
    );
    let (_, line) = rx.recv().await.unwrap();
    assert_eq!(line, "GET /y HTTP/1.0");
}
