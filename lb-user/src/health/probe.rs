//! The probes: TCP connect, HTTP GET (status codes, MD5 digest of the body),
//! MISC_CHECK programs (run without a shell, bounded, killed at the
//! timeout), SMTP (banner, HELO, QUIT), ICMP echo and tracked files. Every
//! probe is bounded by its timeout as a whole.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use std::io;

use lb_common::csum;
use md5::{Digest, Md5};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use super::Outcome;
use crate::{
    config::check::{Check, CheckKind, FileCheck, Url},
    track::{self, RealEffect},
    util::{
        chain,
        process::{self, Program},
    },
};

/// Why a probe failed; [`chain`] of it is the checker's reason for down.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The local address (with its port for UDP).
    #[error("bind {0}")]
    Bind(String, #[source] io::Error),
    #[error("fwmark {0}")]
    Mark(u32, #[source] io::Error),
    #[error("connect {0}")]
    Connect(SocketAddr, #[source] io::Error),
    #[error("send")]
    Send(#[source] io::Error),
    #[error("{0}")]
    Recv(SocketAddr, #[source] io::Error),
    #[error(transparent)]
    Io(io::Error),
    #[error("answer without QR")]
    NoQr,
    #[error("RCODE {0}")]
    Rcode(u16),
    #[error("label too long in '{0}'")]
    Label(String),
    #[error("SNI {0}")]
    Sni(String, #[source] rustls::pki_types::InvalidDnsNameError),
    #[error("TLS handshake")]
    Tls(#[source] io::Error),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("no status line")]
    NoStatusLine,
    #[error("bad status line '{0}'")]
    BadStatusLine(String),
    #[error("status {0}")]
    Status(u16),
    #[error("no end of headers")]
    NoHeaderEnd,
    #[error("digest {0}")]
    Digest(String),
    /// An SMTP step's answer: the step and the line read.
    #[error("{0} '{1}'")]
    Smtp(&'static str, String),
    #[error("connection closed by {0}")]
    Closed(SocketAddr),
    #[error("ICMP socket")]
    IcmpSocket(#[source] io::Error),
    #[error("send echo request to {0}")]
    EchoSend(IpAddr, #[source] io::Error),
    #[error("no echo reply from {0}")]
    NoEchoReply(IpAddr),
}

/// Most bytes of an HTTP answer read (headers and body).
pub const MAX_HTTP_BYTES: usize = 1 << 20;

/// Where a checker connects: connect_ip / connect_port, else the real's.
pub fn target(check: &Check, real: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(
        check.connect_ip.unwrap_or(real),
        check.connect_port.unwrap_or(port),
    )
}

/// Runs one probe of `check` against `to`, within `timeout`.
pub async fn run(check: &Check, to: SocketAddr, timeout: Duration) -> Outcome {
    match &check.kind {
        CheckKind::Tcp => {
            bounded(timeout, async {
                connect(to, check.bindto, None).await?;
                Ok(Outcome::Up)
            })
            .await
        }
        CheckKind::Http {
            urls,
            virtualhost,
            tls,
            sni,
            http11,
        } => {
            bounded(timeout, async {
                for u in urls {
                    let req = HttpRequest {
                        path: &u.path,
                        virtualhost: virtualhost.as_deref(),
                        http11: *http11,
                        tls: *tls,
                        sni: *sni,
                        bindto: check.bindto,
                        fwmark: None,
                    };
                    // Without a digest, the status line is all that is needed.
                    let r = match http_fetch(to, &req, u.digest.is_some()).await {
                        Ok(answer) => judge(u, &answer),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = r {
                        return Ok(Outcome::Down(format!("GET {}: {}", u.path, chain(&e))));
                    }
                }
                Ok(Outcome::Up)
            })
            .await
        }
        CheckKind::Misc {
            program,
            timeout: t,
            dynamic,
        } => misc(program, t.unwrap_or(timeout), *dynamic).await,
        CheckKind::Udp {
            payload,
            require_reply,
        } => udp(to, check.bindto, payload, *require_reply, timeout).await,
        CheckKind::Dns { qtype, name } => {
            bounded(timeout, dns(to, check.bindto, *qtype, name)).await
        }
        CheckKind::Smtp { helo } => bounded(timeout, smtp(to, check.bindto, helo)).await,
        CheckKind::Ping => bounded(timeout, ping(to.ip())).await,
        // The monitor keeps the last state instead of a number out of
        // range (keepalived ignores it); a single probe reports it.
        CheckKind::File(f) => file(f)
            .await
            .unwrap_or_else(|| Outcome::Down(format!("{}: number out of range", f.path.display()))),
    }
}

/// FILE_CHECK: the tracked file's number and what it does to the real
/// ([`track::file_real_effect`]); the weight it gives is the real's
/// configured one plus value × weight, within 0..=65535 (the weights the
/// configuration accepts). `None` for a number out of range (keepalived
/// keeps the last state). The file is read on a blocking thread.
pub async fn file(f: &FileCheck) -> Option<Outcome> {
    let path = f.path.clone();
    let v = tokio::task::spawn_blocking(move || track::read_file_value(&path))
        .await
        .ok()??;
    Some(match track::file_real_effect(v, f.weight, f.reverse) {
        RealEffect::Down => Outcome::Down(format!("{} holds {v}", f.path.display())),
        RealEffect::Up(0) => Outcome::Up,
        RealEffect::Up(d) => {
            Outcome::UpWeight((i64::from(f.base_weight) + d).clamp(0, 65535) as u32)
        }
    })
}

/// Most bytes kept while waiting for an SMTP line (keepalived's
/// SMTP_BUFF_MAX: a longer line wraps the buffer).
const SMTP_LINE_MAX: usize = 512;

/// Reads until a newline arrives and returns that first line; what came
/// after it in the same read is dropped, as keepalived's checker does
/// (each step starts with an empty buffer).
async fn smtp_line(s: &mut TcpStream, to: SocketAddr) -> Result<String, ProbeError> {
    let mut buf = Vec::with_capacity(SMTP_LINE_MAX);
    let mut chunk = [0u8; SMTP_LINE_MAX];
    loop {
        let n = s.read(&mut chunk).await.map_err(ProbeError::Io)?;
        if n == 0 {
            return Err(ProbeError::Closed(to));
        }
        if buf.len() + n >= SMTP_LINE_MAX {
            buf.clear();
        }
        buf.extend_from_slice(&chunk[..n.min(SMTP_LINE_MAX - 1)]);
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
    }
}

/// An SMTP reply's code: three digits then a space or the end of the line
/// (keepalived's smtp_get_status; a continuation line `250-…` is no code).
/// A trailing CR counts as the end, so a bare `220` line is accepted.
fn smtp_code(line: &str) -> Option<u16> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (code, rest) = line.split_at_checked(3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    code.parse().ok()
}

/// SMTP_CHECK (keepalived's check_smtp.c): a `220` banner, `HELO name`
/// answered `250`, then `QUIT` and any line back.
async fn smtp(to: SocketAddr, bindto: Option<IpAddr>, helo: &str) -> Result<Outcome, ProbeError> {
    let mut s = connect(to, bindto, None).await?;
    let banner = smtp_line(&mut s, to).await?;
    if smtp_code(&banner) != Some(220) {
        return Err(ProbeError::Smtp("bad greeting banner", banner));
    }
    s.write_all(format!("HELO {helo}\r\n").as_bytes())
        .await
        .map_err(ProbeError::Io)?;
    let answer = smtp_line(&mut s, to).await?;
    if smtp_code(&answer) != Some(250) {
        return Err(ProbeError::Smtp("bad HELO response", answer));
    }
    s.write_all(b"QUIT\r\n").await.map_err(ProbeError::Io)?;
    smtp_line(&mut s, to).await?;
    Ok(Outcome::Up)
}

/// Sequence numbers of the echo requests (shared by all PING_CHECKs).
static ECHO_SEQ: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);

/// An ICMP (type 8) or ICMPv6 (type 128) echo request with `id`, `seq`
/// and 56 bytes of payload; the ICMPv4 checksum is filled in (the kernel
/// computes ICMPv6's).
fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend((0..56u8).map(|i| i.wrapping_add(0x10)));
    if !v6 {
        let c = !csum::fold(csum::sum_be(&p, 0));
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Whether a received datagram is the echo reply to (`id`, `seq`): an
/// IPv4 raw socket hands over the IP header too (skipped); the kernel
/// sets and filters the id of an unprivileged ICMP socket (`check_id`
/// false then).
fn is_echo_reply(pkt: &[u8], v6: bool, raw: bool, id: u16, seq: u16, check_id: bool) -> bool {
    let icmp = if raw && !v6 {
        let ihl = usize::from(pkt.first().map_or(0, |b| b & 0x0f)) * 4;
        match pkt.get(ihl..) {
            Some(p) => p,
            None => return false,
        }
    } else {
        pkt
    };
    icmp.len() >= 8
        && icmp[0] == if v6 { 129 } else { 0 }
        && (!check_id || icmp[4..6] == id.to_be_bytes())
        && icmp[6..8] == seq.to_be_bytes()
}

/// PING_CHECK (keepalived's check_ping.c): one echo request; up when its
/// echo reply arrives (bounded by the caller). An unprivileged ICMP socket
/// (SOCK_DGRAM, allowed by `net.ipv4.ping_group_range`) is used, else a
/// raw socket (root). Other ICMP messages are skipped, not failures.
async fn ping(to: IpAddr) -> Result<Outcome, ProbeError> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let v6 = to.is_ipv6();
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let (sock, raw) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => (s, false),
        Err(_) => (
            Socket::new(domain, Type::RAW, Some(proto)).map_err(ProbeError::IcmpSocket)?,
            true,
        ),
    };
    sock.set_nonblocking(true).map_err(ProbeError::IcmpSocket)?;
    let dst = SockAddr::from(SocketAddr::new(to, 0));
    sock.connect(&dst)
        .map_err(|e| ProbeError::EchoSend(to, e))?;
    let sock = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock))
        .map_err(ProbeError::IcmpSocket)?;
    let id = (std::process::id() & 0xffff) as u16;
    let seq = ECHO_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    sock.send(&echo_request(v6, id, seq))
        .await
        .map_err(|e| ProbeError::EchoSend(to, e))?;
    let mut buf = [0u8; 1500];
    loop {
        let n = match sock.recv(&mut buf).await {
            Ok(n) => n,
            // An ICMP error queued on the socket (unreachable): no reply.
            Err(_) => return Err(ProbeError::NoEchoReply(to)),
        };
        if is_echo_reply(&buf[..n], v6, raw, id, seq, raw) {
            return Ok(Outcome::Up);
        }
    }
}

async fn udp_socket(
    to: SocketAddr,
    bindto: Option<IpAddr>,
) -> Result<tokio::net::UdpSocket, ProbeError> {
    let local = match (bindto, to) {
        (Some(b), _) => SocketAddr::new(b, 0),
        (None, SocketAddr::V4(_)) => "0.0.0.0:0".parse().expect("literal"),
        (None, SocketAddr::V6(_)) => "[::]:0".parse().expect("literal"),
    };
    let s = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| ProbeError::Bind(local.to_string(), e))?;
    s.connect(to)
        .await
        .map_err(|e| ProbeError::Connect(to, e))?;
    Ok(s)
}

/// UDP_CHECK: a connected socket learns of an ICMP port unreachable as
/// ECONNREFUSED; silence is success unless a reply is required.
async fn udp(
    to: SocketAddr,
    bindto: Option<IpAddr>,
    payload: &[u8],
    require_reply: bool,
    timeout: Duration,
) -> Outcome {
    let s = match udp_socket(to, bindto).await {
        Ok(s) => s,
        Err(e) => return Outcome::Down(chain(&e)),
    };
    if let Err(e) = s.send(payload).await {
        return Outcome::Down(format!("send: {e}"));
    }
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(timeout, s.recv(&mut buf)).await {
        Ok(Ok(_)) => Outcome::Up,
        Ok(Err(e)) => Outcome::Down(format!("{to}: {e}")),
        Err(_) if require_reply => Outcome::Down(format!("no reply within {timeout:?}")),
        Err(_) => Outcome::Up,
    }
}

/// DNS_CHECK: one query; the answer must carry the query's id, QR and RCODE 0.
async fn dns(
    to: SocketAddr,
    bindto: Option<IpAddr>,
    qtype: u16,
    name: &str,
) -> Result<Outcome, ProbeError> {
    let s = udp_socket(to, bindto).await?;
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        & 0xffff) as u16;
    let q = dns_query(id, qtype, name)?;
    s.send(&q).await.map_err(ProbeError::Send)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = s
            .recv(&mut buf)
            .await
            .map_err(|e| ProbeError::Recv(to, e))?;
        if n < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id {
            // Not the answer to this query (a stale one): keep waiting.
            continue;
        }
        let flags = u16::from_be_bytes([buf[2], buf[3]]);
        if flags & 0x8000 == 0 {
            return Err(ProbeError::NoQr);
        }
        let rcode = flags & 0xf;
        if rcode != 0 {
            return Err(ProbeError::Rcode(rcode));
        }
        return Ok(Outcome::Up);
    }
}

/// A DNS query: header (RD set), one question of `qtype` IN.
fn dns_query(id: u16, qtype: u16, name: &str) -> Result<Vec<u8>, ProbeError> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 {
            return Err(ProbeError::Label(name.to_string()));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Ok(q)
}

async fn bounded(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<Outcome, ProbeError>>,
) -> Outcome {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::Down(chain(&e)),
        Err(_) => Outcome::Down(format!("timed out after {:?}", timeout)),
    }
}

async fn connect(
    to: SocketAddr,
    bindto: Option<IpAddr>,
    fwmark: Option<u32>,
) -> Result<TcpStream, ProbeError> {
    let sock = if to.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ProbeError::Io)?;
    if let Some(mark) = fwmark {
        socket2::SockRef::from(&sock)
            .set_mark(mark)
            .map_err(|e| ProbeError::Mark(mark, e))?;
    }
    if let Some(b) = bindto {
        sock.bind(SocketAddr::new(b, 0))
            .map_err(|e| ProbeError::Bind(b.to_string(), e))?;
    }
    sock.connect(to)
        .await
        .map_err(|e| ProbeError::Connect(to, e))
}

/// Accepts any certificate: keepalived's SSL_GET does not verify the
/// server either (it checks that the service answers, not who it is).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
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

/// The TLS client configuration of SSL_GET (built once).
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(cfg)
        })
        .clone()
}

async fn tls_connect(
    s: TcpStream,
    to: SocketAddr,
    sni: Option<&str>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
    use rustls::pki_types::ServerName;
    let mut cfg = (*tls_config()).clone();
    // Without SNI the server sees its address, not a name.
    cfg.enable_sni = sni.is_some();
    let name = match sni {
        Some(h) => {
            ServerName::try_from(h.to_string()).map_err(|e| ProbeError::Sni(h.to_string(), e))?
        }
        None => ServerName::IpAddress(to.ip().into()),
    };
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, s)
        .await
        .map_err(ProbeError::Tls)
}

/// One GET of HTTP_GET / SSL_GET (and of `lb genhash`, which must digest
/// exactly what the checker compares).
#[derive(Clone, Debug)]
pub struct HttpRequest<'a> {
    /// The URL path (`url { path }`, genhash `-u`).
    pub path: &'a str,
    /// `Host:` header; the target `address:port` when `None` (keepalived's
    /// default, `virtualhost` / genhash `-V` otherwise).
    pub virtualhost: Option<&'a str>,
    /// `HTTP/1.1` instead of `HTTP/1.0` (`http_protocol 1.1`, genhash `-P 1.1`).
    pub http11: bool,
    /// TLS (SSL_GET, genhash `-S`); the certificate is not verified.
    pub tls: bool,
    /// Send the virtualhost as TLS SNI (`enable_sni`, genhash `-I`).
    pub sni: bool,
    /// Local address to connect from (`bindto`).
    pub bindto: Option<IpAddr>,
    /// Firewall mark of the socket (SO_MARK; genhash `-m`).
    pub fwmark: Option<u32>,
}

/// An HTTP answer as read by [`http_fetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code of the status line.
    pub status: u16,
    /// The header bytes, status line to the empty line (its CRLF CRLF
    /// included); empty when only the status line was read.
    pub head: Vec<u8>,
    /// The body bytes as received: everything after the headers, cut at
    /// `Content-Length` when there is one. Chunked framing is not decoded,
    /// as in keepalived's check_http.c and genhash (2.2.7): the MD5 digest
    /// covers the bytes on the wire.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// MD5 of the body, 32 lower-case hex digits: the value of
    /// `url { digest }` that matches this answer.
    pub fn digest_hex(&self) -> String {
        hex(&self.md5())
    }

    /// MD5 of the body (16 bytes).
    pub fn md5(&self) -> [u8; 16] {
        Md5::digest(&self.body).into()
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects to `to` (TLS when asked), sends one GET and reads the answer:
/// the whole answer (at most [`MAX_HTTP_BYTES`]) when `whole`, else up to
/// the end of the status line. Not bounded in time: callers bound it.
pub async fn http_fetch(
    to: SocketAddr,
    req: &HttpRequest<'_>,
    whole: bool,
) -> Result<HttpAnswer, ProbeError> {
    let s = connect(to, req.bindto, req.fwmark).await?;
    if req.tls {
        let sni = if req.sni { req.virtualhost } else { None };
        let s = tls_connect(s, to, sni).await?;
        http_exchange(s, to, req, whole).await
    } else {
        http_exchange(s, to, req, whole).await
    }
}

/// Ok when the status is accepted by `url` and its digest (if any) matches.
fn judge(url: &Url, answer: &HttpAnswer) -> Result<(), ProbeError> {
    if !url
        .status
        .iter()
        .any(|&(lo, hi)| (lo..=hi).contains(&answer.status))
    {
        return Err(ProbeError::Status(answer.status));
    }
    if let Some(want) = &url.digest {
        let got = answer.digest_hex();
        if &got != want {
            return Err(ProbeError::Digest(got));
        }
    }
    Ok(())
}

async fn http_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    to: SocketAddr,
    req: &HttpRequest<'_>,
    whole: bool,
) -> Result<HttpAnswer, ProbeError> {
    let host = req
        .virtualhost
        .map(String::from)
        .unwrap_or_else(|| match to {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => a.to_string(),
        });
    let text = format!(
        "GET {} HTTP/1.{}\r\nHost: {host}\r\nUser-Agent: lb-healthcheck\r\nConnection: close\r\n\r\n",
        req.path,
        u8::from(req.http11)
    );
    s.write_all(text.as_bytes()).await.map_err(ProbeError::Io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: what was read counts.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !buf.is_empty() => 0,
            Err(e) => return Err(ProbeError::Io(e)),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HTTP_BYTES {
            return Err(ProbeError::TooLarge(MAX_HTTP_BYTES));
        }
        if !whole && buf.windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    parse_answer(&buf, whole)
}

/// Splits a raw answer into status, headers and body (see [`HttpAnswer`]).
fn parse_answer(buf: &[u8], whole: bool) -> Result<HttpAnswer, ProbeError> {
    let line_end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(ProbeError::NoStatusLine)?;
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ProbeError::BadStatusLine(line.to_string()))?;
    if !whole {
        return Ok(HttpAnswer {
            status,
            head: Vec::new(),
            body: Vec::new(),
        });
    }
    let head_len = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(ProbeError::NoHeaderEnd)?
        + 4;
    let head = &buf[..head_len];
    let mut body = &buf[head_len..];
    if let Some(len) = content_length(head) {
        body = &body[..body.len().min(len)];
    }
    Ok(HttpAnswer {
        status,
        head: head.to_vec(),
        body: body.to_vec(),
    })
}

/// The `Content-Length` header's value, when present and a number.
fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).split("\r\n").find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// MISC_CHECK: the program with its arguments, no shell, an empty
/// environment (PATH only), output discarded, killed at the timeout; down
/// when script security refuses it (see `util::process::command`).
pub(crate) async fn misc(program: &Program, timeout: Duration, dynamic: bool) -> Outcome {
    match process::run_bounded(program, timeout).await {
        Err(e) => Outcome::Down(chain(&e)),
        Ok(st) => match st.code() {
            Some(0) => Outcome::Up,
            Some(c) if dynamic && c >= 2 => Outcome::UpWeight(c as u32 - 2),
            Some(c) => Outcome::Down(format!("exit status {c}")),
            None => Outcome::Down(format!("{st}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_query_bytes() {
        assert_eq!(
            dns_query(0x1234, 1, "a.example.").unwrap(),
            [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 7, b'e', b'x', b'a', b'm', b'p',
                b'l', b'e', 0, 0, 1, 0, 1
            ]
        );
        assert_eq!(dns_query(1, 6, ".").unwrap()[12..], [0, 0, 6, 0, 1]);
    }

    #[tokio::test]
    async fn udp_and_dns_against_local_sockets() {
        let t = Duration::from_millis(300);
        // A closed port answers with ICMP port unreachable.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        assert!(matches!(
            udp(addr, None, b"x", false, t).await,
            Outcome::Down(_)
        ));
        // A silent listener: up unless a reply is required.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        assert_eq!(udp(addr, None, b"x", false, t).await, Outcome::Up);
        assert!(matches!(
            udp(addr, None, b"x", true, t).await,
            Outcome::Down(_)
        ));
        // A responder that answers every query with QR set: DNS up; with an
        // RCODE, down.
        for (rcode, up) in [(0u8, true), (2, false)] {
            let srv = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = srv.local_addr().unwrap();
            tokio::spawn(async move {
                let mut b = [0u8; 512];
                let (n, from) = srv.recv_from(&mut b).await.unwrap();
                b[2] |= 0x80;
                b[3] |= rcode;
                srv.send_to(&b[..n], from).await.unwrap();
            });
            let o = bounded(t, dns(addr, None, 6, ".")).await;
            assert_eq!(o == Outcome::Up, up, "{o:?}");
        }
    }

    #[test]
    fn bodies_are_digested_as_received_up_to_content_length() {
        // keepalived digests the bytes after the headers, cut at
        // Content-Length, without decoding chunked framing.
        let a = parse_answer(
            b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA",
            true,
        )
        .unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b"hello");
        assert_eq!(a.digest_hex(), "5d41402abc4b2a76b9719d911017c592");
        let a = parse_answer(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            true,
        )
        .unwrap();
        assert_eq!(a.status, 404);
        assert_eq!(a.body, b"5\r\nhello\r\n0\r\n\r\n");
        // The value keepalived 2.2.7's genhash prints for this answer.
        assert_eq!(a.digest_hex(), "79e9489e3bd3f0cb0158215341de046d");
        assert!(matches!(
            parse_answer(b"HTTP/1.0 200 OK\r\nServer: x\r\n", true),
            Err(ProbeError::NoHeaderEnd)
        ));
        assert!(matches!(
            parse_answer(b"garbage\r\n", true),
            Err(ProbeError::BadStatusLine(_))
        ));
    }

    #[test]
    fn smtp_codes_as_keepalived_reads_them() {
        assert_eq!(smtp_code("220 mail.example ESMTP"), Some(220));
        assert_eq!(smtp_code("250\r"), Some(250));
        assert_eq!(smtp_code("250-PIPELINING"), None);
        assert_eq!(smtp_code("25 x"), None);
        assert_eq!(smtp_code("2200 x"), None);
        assert_eq!(smtp_code(""), None);
    }

    /// An SMTP responder on loopback: answers `banner`, then `helo` to the
    /// HELO, then 221 to QUIT; records what it was sent.
    async fn smtp_server(
        banner: &'static str,
        helo: &'static str,
    ) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = String::new();
            s.write_all(banner.as_bytes()).await.unwrap();
            let mut buf = [0u8; 512];
            for answer in [helo, "221 bye\r\n"] {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                got += &String::from_utf8_lossy(&buf[..n]);
                let _ = s.write_all(answer.as_bytes()).await;
            }
            got
        });
        (addr, task)
    }

    #[tokio::test]
    async fn smtp_against_a_local_responder() {
        let t = Duration::from_secs(2);
        let (addr, srv) = smtp_server("220 mx ESMTP\r\n", "250 hello\r\n").await;
        assert_eq!(
            bounded(t, smtp(addr, None, "lb.example")).await,
            Outcome::Up
        );
        assert_eq!(srv.await.unwrap(), "HELO lb.example\r\nQUIT\r\n");
        // A 554 banner (service refused): down, naming the banner.
        let (addr, _srv) = smtp_server("554 go away\r\n", "250 x\r\n").await;
        let o = bounded(t, smtp(addr, None, "x")).await;
        assert_eq!(
            o,
            Outcome::Down("bad greeting banner '554 go away\r'".into())
        );
        // HELO refused.
        let (addr, _srv) = smtp_server("220 mx\r\n", "501 syntax\r\n").await;
        let o = bounded(t, smtp(addr, None, "x")).await;
        assert_eq!(o, Outcome::Down("bad HELO response '501 syntax\r'".into()));
        // A server that never greets: the timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let o = bounded(
            Duration::from_millis(200),
            smtp(silent.local_addr().unwrap(), None, "x"),
        )
        .await;
        assert_eq!(o, Outcome::Down("timed out after 200ms".into()));
        // Nothing listening.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        assert!(
            matches!(bounded(t, smtp(addr, None, "x")).await, Outcome::Down(e) if e.contains("refused"))
        );
    }

    #[test]
    fn echo_requests_and_replies() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(&p[..8], [8, 0, p[2], p[3], 0x12, 0x34, 0, 7]);
        assert_eq!(
            !csum::fold(csum::sum_be(&p, 0)),
            0,
            "the checksum covers the message"
        );
        let mut reply = p.clone();
        reply[0] = 0;
        assert!(is_echo_reply(&reply, false, false, 0, 7, false));
        assert!(
            !is_echo_reply(&reply, false, false, 0, 8, false),
            "other seq"
        );
        assert!(!is_echo_reply(&p, false, false, 0, 7, false), "a request");
        assert!(
            !is_echo_reply(&reply, false, false, 0x9999, 7, true),
            "other id"
        );
        // Raw IPv4: behind a 20-byte IP header.
        let mut ip = vec![0x45u8];
        ip.resize(20, 0);
        ip.extend_from_slice(&reply);
        assert!(is_echo_reply(&ip, false, true, 0x1234, 7, true));
        let mut v6 = echo_request(true, 1, 9);
        assert_eq!(v6[0], 128);
        v6[0] = 129;
        assert!(is_echo_reply(&v6, true, false, 0, 9, false));
    }

    #[tokio::test]
    async fn ping_loopback_answers_and_test_net_does_not() {
        let t = Duration::from_millis(500);
        assert_eq!(
            bounded(t, ping("127.0.0.1".parse().unwrap())).await,
            Outcome::Up
        );
        // TEST-NET-2 (RFC 5737): never answers (or has no route).
        let o = bounded(t, ping("198.51.100.1".parse().unwrap())).await;
        assert!(matches!(o, Outcome::Down(_)), "{o:?}");
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            assert_eq!(bounded(t, ping("::1".parse().unwrap())).await, Outcome::Up);
        }
    }

    #[tokio::test]
    async fn file_check_values() {
        let dir = std::env::temp_dir().join(format!("lb-filecheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state");
        let mut f = FileCheck {
            track: "t".into(),
            own_weight: None,
            path: path.clone(),
            weight: 0,
            reverse: false,
            base_weight: 10,
            loc: crate::config::Loc {
                file: Arc::new("t.conf".into()),
                line: 1,
                col: 1,
            },
        };
        // weight 0: missing or 0 is up, non-zero down; reverse swaps.
        assert_eq!(file(&f).await, Some(Outcome::Up));
        std::fs::write(&path, "1\n").unwrap();
        assert!(matches!(file(&f).await, Some(Outcome::Down(e)) if e.ends_with("holds 1")));
        f.reverse = true;
        assert_eq!(file(&f).await, Some(Outcome::Up));
        // weight 3: the real's weight 10 plus 3 × the value, at least 0.
        (f.weight, f.reverse) = (3, false);
        std::fs::write(&path, "4").unwrap();
        assert_eq!(file(&f).await, Some(Outcome::UpWeight(22)));
        std::fs::write(&path, "-5").unwrap();
        assert_eq!(file(&f).await, Some(Outcome::UpWeight(0)));
        std::fs::write(&path, "0").unwrap();
        assert_eq!(file(&f).await, Some(Outcome::Up));
        std::fs::write(&path, "99999999999").unwrap();
        assert_eq!(file(&f).await, None, "out of range: the last state stays");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn chunked_bodies_decode() {}

    #[tokio::test]
    async fn misc_exit_codes_and_timeout() {
        let sh = |s: &str| Program::new(vec!["/bin/sh".to_string(), "-c".into(), s.to_string()]);
        let t = Duration::from_secs(5);
        assert_eq!(misc(&sh("exit 0"), t, false).await, Outcome::Up);
        assert!(matches!(
            misc(&sh("exit 1"), t, true).await,
            Outcome::Down(_)
        ));
        assert_eq!(misc(&sh("exit 7"), t, true).await, Outcome::UpWeight(5));
        assert!(matches!(
            misc(&sh("exit 7"), t, false).await,
            Outcome::Down(_)
        ));
        // `user`: runs as nobody (65534).
        let as_nobody = Program {
            user: Some((65534, 65534)),
            ..sh("test $(id -u) = 65534")
        };
        assert_eq!(misc(&as_nobody, t, false).await, Outcome::Up);
        let start = std::time::Instant::now();
        let o = misc(&sh("sleep 10"), Duration::from_millis(200), false).await;
        assert!(matches!(o, Outcome::Down(e) if e.contains("killed")));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(matches!(
            misc(&Program::new(vec!["/nonexistent/x".to_string()]), t, false).await,
            Outcome::Down(e) if e.contains("/nonexistent")
        ));
    }
}
