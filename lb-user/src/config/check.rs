//! Health checkers inside `real_server` (keepalived's `check` syntax) and the
//! timing keywords they inherit from `real_server` and `virtual_server`.

use std::{net::IpAddr, path::PathBuf, time::Duration};

pub use super::value::shell_words;
use super::{
    value::{
        arg, decode_hex, flag, int, parse_addr, parse_range, program_words, run_as, timer, uint,
        unknown, whole_secs, Shapes, ANY, TIMER_MAX,
    },
    Diag, Loc, Node,
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
    /// SMTP_CHECK (keepalived's check_smtp.c): the first line read must be
    /// a `220` banner, `HELO helo_name` must be answered `250`, then `QUIT`
    /// and one more line. Default helo_name `smtpchecker.keepalived.org`.
    Smtp { helo: String },
    /// PING_CHECK (check_ping.c): one ICMP / ICMPv6 echo request must be
    /// answered by an echo reply within connect_timeout.
    Ping,
    /// FILE_CHECK (check_file.c): the real follows the number in a
    /// global `track_file`; see [`crate::track::file_real_effect`].
    File(FileCheck),
}

/// A FILE_CHECK: which `track_file` it follows and with what weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCheck {
    /// Name of the global `track_file` block.
    pub track: String,
    /// The FILE_CHECK's own `weight N [reverse]` (keepalived: range
    /// ±2147483647), else the track_file's.
    pub own_weight: Option<(i64, bool)>,
    /// Filled in once every block is read (`config::track::resolve`):
    /// the file, the effective weight and direction, and the real's
    /// configured weight the file's value × weight is added to.
    pub path: PathBuf,
    pub weight: i64,
    pub reverse: bool,
    pub base_weight: u32,
    pub loc: Loc,
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

/// keepalived's SMTP_CHECK default `helo_name` (check_smtp.h, SMTP_DEFAULT_HELO).
pub const SMTP_DEFAULT_HELO: &str = "smtpchecker.keepalived.org";

/// Whether `keyword` names a checker block.
pub fn is_checker(keyword: &str) -> bool {
    matches!(
        keyword,
        "TCP_CHECK"
            | "HTTP_GET"
            | "SSL_GET"
            | "MISC_CHECK"
            | "UDP_CHECK"
            | "DNS_CHECK"
            | "SMTP_CHECK"
            | "PING_CHECK"
            | "FILE_CHECK"
            | "BFD_CHECK"
    )
}

/// Parses a checker block: its checkers (several for an SMTP_CHECK with
/// `host { }` blocks), none (with a diagnostic) when it cannot run.
pub fn parse(n: &Node, diags: &mut Vec<Diag>) -> Vec<Check> {
    match n.keyword.as_str() {
        "BFD_CHECK" => {
            // An error, not a warning: a real whose only checker never runs
            // would otherwise count as up whatever happens to it.
            diags.push(Diag::error(
                &n.loc,
                Some("BFD_CHECK"),
                "not implemented: lb has no BFD (RFC 5880) sessions (keepalived's bfd_instance); \
                 use PING_CHECK or TCP_CHECK for this real",
            ));
            Vec::new()
        }
        "FILE_CHECK" => file_check(n, diags).into_iter().collect(),
        _ => common(n, diags),
    }
}

/// FILE_CHECK: only `track_file NAME` and `weight N [reverse|noreverse]`
/// (keepalived's check_file.c installs no other keyword).
fn file_check(n: &Node, diags: &mut Vec<Diag>) -> Option<Check> {
    let mut track = None;
    let mut own_weight = None;
    for c in n.children.iter().flatten() {
        match c.keyword.as_str() {
            "track_file" => track = arg(c, 0, "track_file name", diags).map(String::from),
            "weight" => {
                let Some(w) = int(
                    c,
                    0,
                    -i64::from(i32::MAX),
                    i64::from(i32::MAX),
                    "weight",
                    diags,
                ) else {
                    continue;
                };
                let reverse = match c.args.get(1).map(String::as_str) {
                    None | Some("noreverse") => false,
                    Some("reverse") => true,
                    Some(o) => {
                        diags.push(Diag::error(
                            &c.loc,
                            Some("weight"),
                            format!("unknown option '{o}' (reverse or noreverse)"),
                        ));
                        continue;
                    }
                };
                own_weight = Some((w, reverse));
            }
            _ => diags.push(unknown(c, "FILE_CHECK")),
        }
    }
    let Some(track) = track else {
        diags.push(Diag::error(
            &n.loc,
            Some("FILE_CHECK"),
            "needs track_file NAME",
        ));
        return None;
    };
    Some(Check {
        kind: CheckKind::File(FileCheck {
            track,
            own_weight,
            path: PathBuf::new(),
            weight: 1,
            reverse: false,
            base_weight: 0,
            loc: n.loc.clone(),
        }),
        fast_recovery: false,
        connect_ip: None,
        connect_port: None,
        bindto: None,
        timing: Timing::default(),
    })
}

/// The connection keywords of an SMTP_CHECK `host { }` block (keepalived
/// 2.2.7 still accepts them; each host is one more checker).
fn smtp_host(
    n: &Node,
    outer: &mut Timing,
    diags: &mut Vec<Diag>,
) -> (
    Option<IpAddr>,
    Option<u16>,
    Option<IpAddr>,
    Option<Duration>,
) {
    let (mut ip, mut port, mut bindto, mut timeout) = (None, None, None, None);
    for c in n.children.iter().flatten() {
        match c.keyword.as_str() {
            "connect_ip" => ip = parse_addr(c, 0, diags),
            "connect_port" => port = uint(c, 0, 1, 65535, "port", diags).map(|p| p as u16),
            "bindto" => bindto = parse_addr(c, 0, diags),
            "connect_timeout" => {
                timeout = timer(
                    c,
                    Duration::from_micros(1),
                    Duration::from_micros(u32::MAX.into()),
                    diags,
                )
            }
            // As in keepalived, the other common keywords set the whole
            // SMTP_CHECK's values.
            _ if outer.take(c, Level::Checker, diags) => {}
            "bind_port" | "bind_if" | "fwmark" => diags.push(Diag::warning(
                &c.loc,
                Some(&c.keyword),
                "not implemented yet; parsed and ignored",
            )),
            _ => diags.push(unknown(c, "host")),
        }
    }
    (ip, port, bindto, timeout)
}

fn common(n: &Node, diags: &mut Vec<Diag>) -> Vec<Check> {
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
    let mut helo = None;
    let mut hosts = Vec::new();
    for c in n.children.iter().flatten() {
        CHECKER_SHAPES.check(c, diags);
        if check.timing.take(c, Level::Checker, diags) {
            continue;
        }
        match c.keyword.as_str() {
            "helo_name" if n.keyword == "SMTP_CHECK" => {
                helo = arg(c, 0, "HELO name", diags).map(String::from);
            }
            "host" if n.keyword == "SMTP_CHECK" => {
                hosts.push(smtp_host(c, &mut check.timing, diags));
            }
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
        "PING_CHECK" => CheckKind::Ping,
        "SMTP_CHECK" => {
            check.kind = CheckKind::Smtp {
                helo: helo.unwrap_or_else(|| SMTP_DEFAULT_HELO.to_string()),
            };
            // keepalived (check_smtp.c): with host blocks and no connection
            // setting of its own, the SMTP_CHECK is only its hosts; else it
            // is one checker more. A host defaults to the real's address
            // and port.
            let own = check.connect_ip.is_some()
                || check.connect_port.is_some()
                || check.bindto.is_some()
                || check.timing.connect_timeout.is_some();
            let mut out = Vec::new();
            if own || hosts.is_empty() {
                out.push(check.clone());
            }
            for (ip, port, bindto, timeout) in hosts {
                let mut h = check.clone();
                h.connect_ip = ip;
                h.connect_port = port;
                h.bindto = bindto;
                h.timing.connect_timeout = timeout;
                out.push(h);
            }
            return out;
        }
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
                return Vec::new();
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
                return Vec::new();
            };
            // keepalived's quoting rules: words, with "…" and '…' grouping.
            let Some(argv) = program_words(&path, &n.loc, "misc_path", diags) else {
                return Vec::new();
            };
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
    vec![check]
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{load_str, Loaded};

    fn load(reals: &str) -> Loaded {
        load_str(
            &format!(
                "track_file maint {{\n file /run/maint\n weight 2 reverse\n}}\n\
                 virtual_server 10.0.0.1 25 {{\n lb_kind DR\n protocol TCP\n lb_algo rr\n real_server 10.0.0.2 25 {{\n  weight 5\n{reals}\n }}\n}}\n"
            ),
            Path::new("c.conf"),
        )
    }

    fn checks(l: &Loaded) -> &[Check] {
        &l.config.services[0].reals[0].checks
    }

    fn messages(l: &Loaded) -> Vec<String> {
        l.diags.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn smtp_check_with_defaults_and_host_blocks() {
        let l = load("SMTP_CHECK {\n connect_timeout 3\n}");
        assert!(l.diags.is_empty(), "{:?}", messages(&l));
        let c = &checks(&l)[0];
        assert_eq!(
            c.kind,
            CheckKind::Smtp {
                helo: SMTP_DEFAULT_HELO.into()
            }
        );
        assert_eq!(c.timing.connect_timeout, Some(Duration::from_secs(3)));
        // Hosts only: one checker per host (keepalived's deprecated form),
        // retry given inside a host applies to all.
        let l = load(
            "SMTP_CHECK {\n helo_name lb.example\n host {\n  connect_ip 10.0.0.3\n  connect_port 2525\n  retry 4\n }\n host {\n  connect_ip 10.0.0.4\n  bindto 10.0.0.9\n }\n}",
        );
        assert!(l.diags.is_empty(), "{:?}", messages(&l));
        let c = checks(&l);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.iter()
                .map(|c| (c.connect_ip, c.connect_port, c.bindto, c.timing.retry))
                .collect::<Vec<_>>(),
            [
                (Some("10.0.0.3".parse().unwrap()), Some(2525), None, Some(4)),
                (
                    Some("10.0.0.4".parse().unwrap()),
                    None,
                    Some("10.0.0.9".parse().unwrap()),
                    Some(4)
                ),
            ]
        );
        assert!(c.iter().all(|c| c.kind
            == CheckKind::Smtp {
                helo: "lb.example".into()
            }));
        // Own connection settings and a host: two checkers.
        let l = load("SMTP_CHECK {\n connect_port 25\n host {\n  connect_ip 10.0.0.3\n }\n}");
        assert_eq!(checks(&l).len(), 2);
    }

    #[test]
    fn ping_and_file_checks() {
        let l = load("PING_CHECK {\n connect_ip 10.0.0.7\n retry 2\n}\nFILE_CHECK {\n track_file maint\n}\nFILE_CHECK {\n track_file maint\n weight 0 reverse\n}");
        assert!(l.diags.is_empty(), "{:?}", messages(&l));
        let c = checks(&l);
        assert_eq!(c[0].kind, CheckKind::Ping);
        assert_eq!(c[0].connect_ip, Some("10.0.0.7".parse().unwrap()));
        let CheckKind::File(f) = &c[1].kind else {
            panic!("{:?}", c[1].kind)
        };
        // The track_file's weight and direction, the real's weight.
        assert_eq!(
            (f.path.to_str(), f.weight, f.reverse, f.base_weight),
            (Some("/run/maint"), 2, true, 5)
        );
        let CheckKind::File(f) = &c[2].kind else {
            panic!()
        };
        assert_eq!((f.weight, f.reverse), (0, true));
    }

    #[test]
    fn bad_checkers_are_located_errors() {
        let l = load(
            "FILE_CHECK {\n weight 1\n}\nFILE_CHECK {\n track_file maint\n weight 1 sideways\n delay_loop 3\n}\nBFD_CHECK {\n name b\n}",
        );
        assert_eq!(
            messages(&l),
            [
                "c.conf:11:1: error: FILE_CHECK: needs track_file NAME",
                "c.conf:16:2: error: weight: unknown option 'sideways' (reverse or noreverse)",
                "c.conf:17:2: warning: delay_loop: unknown keyword in FILE_CHECK; ignored",
                "c.conf:19:1: error: BFD_CHECK: not implemented: lb has no BFD (RFC 5880) sessions (keepalived's bfd_instance); use PING_CHECK or TCP_CHECK for this real",
            ]
        );
        // A real whose only checker is a BFD_CHECK is never loaded.
        assert!(l.config.services.is_empty());
        let l = load("FILE_CHECK {\n track_file nothing\n}");
        assert_eq!(
            messages(&l),
            ["c.conf:11:1: error: track_file: no track_file named 'nothing'"]
        );
    }
}
