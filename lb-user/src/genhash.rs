//! `lb genhash`: keepalived's genhash. Fetches one URL from a server over
//! HTTP or HTTPS and prints the MD5 digest that `HTTP_GET` / `SSL_GET`
//! `url { path …; digest … }` expects.
//!
//! The fetch and the digest are the checker's own ([`probe::http_fetch`],
//! [`HttpAnswer::digest_hex`]), so the printed value is exactly what the
//! checker compares. As keepalived's (2.2.7, `check_genhash.c`): the digest
//! covers the body bytes as received (cut at `Content-Length`, chunked
//! framing not decoded), whatever the status; `-v` prints the same hex
//! dumps and banners. Unlike keepalived's, a failed fetch exits 1 (keepalived
//! prints `Connection failed` and exits 0), a status outside 200–299 is
//! reported on stderr, and the fetch is bounded by `-t` (default 5 s, the
//! checker's `connect_timeout`; keepalived's genhash waits without limit).

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use crate::health::probe::{self, HttpAnswer, HttpRequest, ProbeError};

/// `-P`: the HTTP version of the request. `1.0c` is keepalived's "1.0 with
/// `Connection: close`"; the checker always sends `Connection: close`, so
/// `1.0` and `1.0c` send the same request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http10,
    Http10Close,
    Http11,
}

/// A `-P` value that is none of 1.0, 1.0c, 1.1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid HTTP protocol version '{0}' (1.0, 1.0c or 1.1)")]
pub struct BadProtocol(pub String);

impl std::str::FromStr for Protocol {
    type Err = BadProtocol;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1.0" => Ok(Self::Http10),
            "1.0c" | "1.0C" => Ok(Self::Http10Close),
            "1.1" => Ok(Self::Http11),
            _ => Err(BadProtocol(s.to_owned())),
        }
    }
}

/// What to fetch (genhash's command line).
#[derive(Clone, Debug)]
pub struct Options {
    /// `-s`: the server's address (an IP address, as keepalived requires).
    pub server: IpAddr,
    /// `-p`: the server's port.
    pub port: u16,
    /// `-u`: the URL path.
    pub url: String,
    /// `-S`: TLS (SSL_GET); the certificate is not verified.
    pub ssl: bool,
    /// `-I`: send the virtualhost as SNI.
    pub sni: bool,
    /// `-V`: the `Host:` header (default: `server:port`).
    pub virtualhost: Option<String>,
    /// `-P`.
    pub protocol: Protocol,
    /// `-m`: firewall mark of the socket.
    pub fwmark: Option<u32>,
    /// `-t`: bound of the whole fetch.
    pub timeout: Duration,
}

/// Why no digest could be computed.
#[derive(Debug, thiserror::Error)]
pub enum GenhashError {
    #[error("GET {url} from {to}")]
    Fetch {
        url: String,
        to: SocketAddr,
        #[source]
        source: ProbeError,
    },
    #[error("GET {url} from {to}: no complete answer within {timeout:?}")]
    Timeout {
        url: String,
        to: SocketAddr,
        timeout: Duration,
    },
}

/// A fetched answer and how long the fetch took.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub answer: HttpAnswer,
    pub elapsed: Duration,
}

/// Fetches `opts.url` as the HTTP_GET / SSL_GET checker does, reading the
/// whole answer.
pub async fn fetch(opts: &Options) -> Result<Fetched, GenhashError> {
    let to = SocketAddr::new(opts.server, opts.port);
    let req = HttpRequest {
        path: &opts.url,
        virtualhost: opts.virtualhost.as_deref(),
        http11: opts.protocol == Protocol::Http11,
        tls: opts.ssl,
        sni: opts.sni,
        bindto: None,
        fwmark: opts.fwmark,
    };
    let start = Instant::now();
    match tokio::time::timeout(opts.timeout, probe::http_fetch(to, &req, true)).await {
        Ok(Ok(answer)) => Ok(Fetched {
            answer,
            elapsed: start.elapsed(),
        }),
        Ok(Err(source)) => Err(GenhashError::Fetch {
            url: opts.url.clone(),
            to,
            source,
        }),
        Err(_) => Err(GenhashError::Timeout {
            url: opts.url.clone(),
            to,
            timeout: opts.timeout,
        }),
    }
}

/// What genhash prints on stdout: the digest alone, or with `verbose` the
/// dumps of keepalived's `genhash -v` (header bytes, header text, body,
/// digest) and the response time in microseconds.
pub fn render(f: &Fetched, url: &str, verbose: bool) -> String {
    let digest = f.answer.md5();
    if !verbose {
        return format!("{}\n", probe::hex(&digest));
    }
    let mut out = String::new();
    banner(&mut out, "    HTTP Header Buffer    ");
    out.push_str(&hexdump(&f.answer.head));
    banner(&mut out, " HTTP Header Ascii Buffer ");
    out.push_str(&String::from_utf8_lossy(&f.answer.head));
    out.push('\n');
    banner(&mut out, "        HTML Buffer        ");
    out.push_str(&hexdump(&f.answer.body));
    out.push('\n');
    banner(&mut out, "    HTML hash resulting    ");
    out.push_str(&hexdump(&digest));
    banner(&mut out, " HTML hash final resulting ");
    out.push_str(&probe::hex(&digest));
    out.push_str("\n\n");
    let _ = writeln!(
        out,
        "Global response time for [{url}] = {} usecs",
        f.elapsed.as_micros()
    );
    out
}

fn banner(out: &mut String, title: &str) {
    let dashes = "-".repeat(23);
    let _ = writeln!(out, "{dashes}[{title}]{dashes}");
}

/// keepalived's dump layout (`dump_buffer`, lib/utils.c): 16 bytes a
/// line, the offset in decimal on four digits (modulo 65536, as there),
/// two groups of eight hex bytes split by `-`, then the bytes as text (`.`
/// for what is not printable ASCII), the last line padded with spaces.
pub fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "{:04} ", (i * 16) & 0xffff);
        for j in 0..16 {
            match line.get(j) {
                Some(b) => {
                    let _ = write!(out, " {b:02x}");
                }
                None => out.push_str("   "),
            }
            if j == 7 {
                out.push_str(" -");
            }
        }
        out.push_str("   ");
        for j in 0..16 {
            out.push(match line.get(j) {
                Some(&b) if (0x20..0x7f).contains(&b) => b as char,
                Some(_) => '.',
                None => ' ',
            });
        }
        out.push('\n');
    }
    out
}

/// A warning for stderr when the checker would not accept the status with
/// its default `status_code` (200–299).
pub fn status_warning(answer: &HttpAnswer) -> Option<String> {
    (!(200..=299).contains(&answer.status)).then(|| {
        format!(
            "status {}: HTTP_GET / SSL_GET fail on it unless the url has `status_code {}`",
            answer.status, answer.status
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_pads_the_last_line() {
        assert_eq!(
            hexdump(b"0123456789abcdefXY\x01"),
            "0000  30 31 32 33 34 35 36 37 - 38 39 61 62 63 64 65 66   0123456789abcdef\n\
             0016  58 59 01                -                           XY.             \n"
        );
        assert_eq!(hexdump(b""), "");
    }

    #[test]
    fn protocol_values() {
        assert_eq!("1.0".parse(), Ok(Protocol::Http10));
        assert_eq!("1.0C".parse(), Ok(Protocol::Http10Close));
        assert_eq!("1.1".parse(), Ok(Protocol::Http11));
        assert!("2".parse::<Protocol>().is_err());
    }
}
