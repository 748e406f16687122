//! Health checkers inside `real_server` (keepalived's `check` syntax) and the
//! timing keywords they inherit from `real_server` and `virtual_server`.

use std::{net::IpAddr, time::Duration};

pub use super::value::shell_words;
use super::{
    value::{
        arg, decode_hex, flag, parse_addr, parse_range, program_words, run_as, timer, uint,
        unknown, whole_secs, Shapes, ANY, TIMER_MAX,
    },
    Diag, Node,
};
use crate::util::process::Program;

/// Timing of a checker; unset fields inherit from the enclosing block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub delay_loop: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub retry: Option<u32>,
    pub delay_before_retry: Option<Duration>,
    pub warmup: Option<Duration>,
}

impl Timing {
    /// Values of `self`, else of `outer`.
    pub fn or(self, outer: Timing) -> Timing {
        Timing {
            delay_loop: self.delay_loop.or(outer.delay_loop),
            connect_timeout: self.connect_timeout.or(outer.connect_timeout),
            retry: self.retry.or(outer.retry),
            delay_before_retry: self.delay_before_retry.or(outer.delay_before_retry),
            warmup: self.warmup.or(outer.warmup),
        }
    }

    /// Reads a timing keyword; false if `n` is not one. Ranges are
    /// keepalived 2.2.7's (check_parser.c, check_api.c): `delay_loop` 1 µs
    /// and more, `connect_timeout` 1 µs to 4294.967295 s (`UINT_MAX` µs),
    /// `delay_before_retry` and `warmup` 0 and more, in seconds with µs
    /// resolution; `retry` 1 to 2^32 − 1 at virtual_server / real_server
    /// level, from 0 in a checker.
    pub fn take(&mut self, n: &Node, level: Level, diags: &mut Vec<Diag>) -> bool {
        let us = Duration::from_micros;
        match n.keyword.as_str() {
            "delay_loop" => self.delay_loop = timer(n, us(1), TIMER_MAX, diags),
            "connect_timeout" => self.connect_timeout = timer(n, us(1), us(u32::MAX.into()), diags),
            "delay_before_retry" => {
                self.delay_before_retry = timer(n, Duration::ZERO, TIMER_MAX, diags)
            }
            "warmup" => self.warmup = timer(n, Duration::ZERO, TIMER_MAX, diags),
            "retry" | "nb_get_retry" => {
                let min = match level {
                    Level::Server => 1,
                    Level::Checker => 0,
                };
                self.retry = uint(n, 0, min, u32::MAX.into(), "retries", diags).map(|r| r as u32)
            }
            _ => return false,
        }
        true
    }
}

/// Where a timing keyword is read: keepalived gives `retry` a different
/// lower bound in a checker (0) than in virtual_server / real_server (1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Server,
    Checker,
}

/// One `url { }` of an HTTP_GET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub path: String,
    /// Accepted status codes as inclusive ranges (default 200–299).
    pub status: Vec<(u16, u16)>,
    /// MD5 of the body, lower-case hex.
    pub digest: Option<String>,
}

/// What a checker does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// TCP_CHECK: a connection is accepted.
    Tcp,
    /// HTTP_GET / SSL_GET: every url answers with an accepted status (and
    /// digest); SSL_GET over TLS (rustls; the certificate is not verified,
    /// as keepalived does not), with SNI when `enable_sni`.
    Http {
        urls: Vec<Url>,
        virtualhost: Option<String>,
        tls: bool,
        sni: bool,
        /// `http_protocol 1.1` sends HTTP/1.1 requests (default 1.0); the
        /// connection is always closed after the answer.
        http11: bool,
    },
    /// UDP_CHECK: a datagram is sent; down on an ICMP port unreachable (or
    /// no reply when `require_reply`).
    Udp {
        payload: Vec<u8>,
        require_reply: bool,
    },
    /// DNS_CHECK: a query (`type`, `name`) gets an answer with the same id,
    /// QR set and RCODE 0.
    Dns { qtype: u16, name: String },
    /// MISC_CHECK: a program, run without a shell; exit 0 up, 1 down,
    /// 2–255 with `misc_dynamic` sets the weight to code − 2.
    Misc {
        /// `misc_path`, run as `user NAME [GROUP]` (else the default).
        program: Program,
        timeout: Option<Duration>,
        dynamic: bool,
    },
}

/// A configured checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub kind: CheckKind,
    /// `fast_recovery`: while down, probe every delay_before_retry instead
    /// of every delay_loop.
    pub fast_recovery: bool,
    pub connect_ip: Option<IpAddr>,
    pub connect_port: Option<u16>,
    pub bindto: Option<IpAddr>,
    pub timing: Timing,
}

/// Shapes of the statements of a checker block (see [`Shapes`]).
const CHECKER_SHAPES: Shapes = Shapes {
    blocks: &["url"],
    values: &[
        ("connect_ip", 1),
        ("connect_port", 1),
        ("bindto", 1),
        ("bind_port", 1),
        ("bind_if", 1),
        ("fwmark", 1),
        ("connect_timeout", 1),
        ("retry", 1),
        ("nb_get_retry", 1),
        ("delay_before_retry", 1),
        ("warmup", 1),
        ("delay_loop", 1),
        ("virtualhost", 1),
        ("misc_path", ANY),
        ("misc_timeout", 1),
        ("misc_dynamic", 0),
        ("payload", ANY),
        ("require_reply", ANY),
        ("min_reply_length", 1),
        ("max_reply_length", 1),
        ("reply_data", ANY),
        ("type", 1),
        ("name", 1),
        ("enable_sni", 0),
        ("user", 2),
        ("fast_recovery", 1),
        ("http_protocol", 1),
        ("alpha", 1),
        ("log_all_failures", 1),
    ],
};

/// Shapes of the statements of an HTTP_GET / SSL_GET `url` block.
const URL_SHAPES: Shapes = Shapes {
    blocks: &[],
    values: &[
        ("path", 1),
        ("status_code", ANY),
        ("digest", 1),
        ("regex", 1),
    ],
};

/// Checkers this build runs; the others are parsed and reported.
const LATER: &[&str] = &["SMTP_CHECK", "BFD_CHECK", "PING_CHECK", "FILE_CHECK"];

/// Whether `keyword` names a checker block.
pub fn is_checker(keyword: &str) -> bool {
    matches!(
        keyword,
        "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "UDP_CHECK" | "DNS_CHECK"
    ) || LATER.contains(&keyword)
}

/// Parses a checker block; `None` (with a diagnostic) when it cannot run.
pub fn parse(n: &Node, diags: &mut Vec<Diag>) -> Option<Check> {
    if LATER.contains(&n.keyword.as_str()) {
        diags.push(Diag::warning(
            &n.loc,
            Some(&n.keyword),
            "checker not implemented yet; parsed and ignored (the real is not checked by it)",
        ));
        return None;
    }
    let mut check = Check {
        kind: CheckKind::Tcp,
        fast_recovery: false,
        connect_ip: None,
        connect_port: None,
        bindto: None,
        timing: Timing::default(),
    };
    let mut urls = Vec::new();
    let mut virtualhost = None;
    let mut misc_path = None;
    let mut misc_timeout = None;
    let mut dynamic = false;
    let mut payload = Vec::new();
    let mut require_reply = false;
    let mut qtype = 6u16; // SOA, keepalived's default
    let mut qname = ".".to_string();
    let mut sni = false;
    let mut http11 = false;
    let mut user = None;
    for c in n.children.iter().flatten() {
        CHECKER_SHAPES.check(c, diags);
        if check.timing.take(c, Level::Checker, diags) {
            continue;
        }
        match c.keyword.as_str() {
            "connect_ip" => check.connect_ip = parse_addr(c, 0, diags),
            "connect_port" => {
                check.connect_port = uint(c, 0, 1, 65535, "port", diags).map(|p| p as u16)
            }
            "bindto" => check.bindto = parse_addr(c, 0, diags),
            "url" if n.keyword == "HTTP_GET" || n.keyword == "SSL_GET" => {
                if let Some(u) = url(c, diags) {
                    urls.push(u);
                }
            }
            "virtualhost" => virtualhost = arg(c, 0, "host name", diags).map(String::from),
            "misc_path" if n.keyword == "MISC_CHECK" => {
                misc_path = arg(c, 0, "command", diags).map(String::from);
            }
            // keepalived (check_misc.c): whole seconds, 0 to 4294 (0: the
            // checker's delay_loop).
            "misc_timeout" => {
                misc_timeout = whole_secs(c, 0, u64::from(u32::MAX) / 1_000_000, diags)
                    .filter(|d| !d.is_zero());
            }
            "misc_dynamic" => dynamic = true,
            "payload" if n.keyword == "UDP_CHECK" => {
                let hex = c.args.join("");
                match decode_hex(&hex) {
                    Some(p) => payload = p,
                    None => diags.push(Diag::error(
                        &c.loc,
                        Some("payload"),
                        "payload is hexadecimal bytes",
                    )),
                }
            }
            "require_reply" => require_reply = true,
            "type" if n.keyword == "DNS_CHECK" => {
                let t = arg(c, 0, "query type", diags).unwrap_or("SOA");
                match dns_type(t) {
                    Some(v) => qtype = v,
                    None => diags.push(Diag::error(
                        &c.loc,
                        Some("type"),
                        format!("unknown DNS type '{t}'"),
                    )),
                }
            }
            "name" if n.keyword == "DNS_CHECK" => {
                if let Some(v) = arg(c, 0, "name", diags) {
                    qname = v.to_string();
                }
            }
            "enable_sni" => sni = true,
            "user" if n.keyword == "MISC_CHECK" => user = run_as(c, diags),
            "fast_recovery" => check.fast_recovery = flag(c, diags),
            "http_protocol" => match arg(c, 0, "version", diags) {
                Some("1.1") => http11 = true,
                Some("1.0" | "1.0C" | "1.0K" | "1.1C") | None => {}
                Some(v) => diags.push(Diag::error(
                    &c.loc,
                    Some("http_protocol"),
                    format!("unknown HTTP version '{v}' (1.0, 1.0C, 1.1)"),
                )),
            },
            "bind_port" | "bind_if" | "fwmark" | "min_reply_length" | "max_reply_length"
            | "reply_data" => diags.push(Diag::warning(
                &c.loc,
                Some(&c.keyword),
                "not implemented yet; parsed and ignored",
            )),
            _ => diags.push(unknown(c, &n.keyword)),
        }
    }
    check.kind = match n.keyword.as_str() {
        "TCP_CHECK" => CheckKind::Tcp,
        "UDP_CHECK" => CheckKind::Udp {
            payload,
            require_reply,
        },
        "DNS_CHECK" => CheckKind::Dns { qtype, name: qname },
        "HTTP_GET" | "SSL_GET" => {
            if urls.is_empty() {
                diags.push(Diag::error(
                    &n.loc,
                    Some(&n.keyword),
                    "needs at least one url { path … }",
                ));
                return None;
            }
            CheckKind::Http {
                urls,
                virtualhost,
                tls: n.keyword == "SSL_GET",
                sni,
                http11,
            }
        }
        _ => {
            let Some(path) = misc_path else {
                diags.push(Diag::error(&n.loc, Some("MISC_CHECK"), "needs misc_path"));
                return None;
            };
            // keepalived's quoting rules: words, with "…" and '…' grouping.
            let argv = program_words(&path, &n.loc, "misc_path", diags)?;
            CheckKind::Misc {
                program: Program {
                    user,
                    ..Program::new(argv)
                },
                timeout: misc_timeout,
                dynamic,
            }
        }
    };
    Some(check)
}

fn url(n: &Node, diags: &mut Vec<Diag>) -> Option<Url> {
    let mut path = None;
    let mut status = Vec::new();
    let mut digest = None;
    for c in n.children.iter().flatten() {
        URL_SHAPES.check(c, diags);
        match c.keyword.as_str() {
            "path" => path = arg(c, 0, "path", diags).map(String::from),
            "status_code" => {
                for a in &c.args {
                    match parse_range(a) {
                        Some(r) => status.push(r),
                        None => diags.push(Diag::error(
                            &c.loc,
                            Some("status_code"),
                            format!(
                                "invalid status code '{a}' (a code or a range such as 200-299)"
                            ),
                        )),
                    }
                }
            }
            "digest" => {
                let d = arg(c, 0, "MD5 digest", diags)?.to_ascii_lowercase();
                if d.len() != 32 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    diags.push(Diag::error(
                        &c.loc,
                        Some("digest"),
                        "a digest is 32 hexadecimal digits (MD5)",
                    ));
                } else {
                    digest = Some(d);
                }
            }
            _ => diags.push(unknown(c, "url")),
        }
    }
    let Some(path) = path else {
        diags.push(Diag::error(&n.loc, Some("url"), "needs a path"));
        return None;
    };
    if status.is_empty() {
        status.push((200, 299));
    }
    Some(Url {
        path,
        status,
        digest,
    })
}

/// DNS query types keepalived's DNS_CHECK accepts.
fn dns_type(t: &str) -> Option<u16> {
    Some(match t.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        _ => return None,
    })
}
