//! ipvsadm's command line, read as ipvsadm 1.31 reads it (popt: clustered
//! short options, `--long[=value]`, `-p` with an optional value, arguments
//! anywhere), checked against ipvsadm's table of which options each
//! command requires, allows or refuses, with ipvsadm's messages and exit
//! codes.

use std::net::IpAddr;

use crate::config::{Fwd, Proto, Sched, ServiceAddr};

/// ipvsadm's commands, in ipvsadm's order (its messages name them so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    /// ipvsadm's name of the command in its messages.
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::Timeout => "set",
            Cmd::StartDaemon => "start-daemon",
            Cmd::StopDaemon => "stop-daemon",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
        }
    }
}

/// ipvsadm's options, in the order its option check walks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Opt {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Mcast,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    SyncId,
    Exact,
    Ops,
    Pe,
    SchedFlags,
}

impl Opt {
    const ALL: [Opt; 24] = [
        Opt::Numeric,
        Opt::Connection,
        Opt::Service,
        Opt::Scheduler,
        Opt::Persistent,
        Opt::Netmask,
        Opt::Server,
        Opt::Forward,
        Opt::Weight,
        Opt::UThreshold,
        Opt::LThreshold,
        Opt::Mcast,
        Opt::Timeout,
        Opt::Daemon,
        Opt::Stats,
        Opt::Rate,
        Opt::Thresholds,
        Opt::PersistentConn,
        Opt::NoSort,
        Opt::SyncId,
        Opt::Exact,
        Opt::Ops,
        Opt::Pe,
        Opt::SchedFlags,
    ];

    /// ipvsadm's name of the option in its messages.
    pub fn name(self) -> &'static str {
        match self {
            Opt::Numeric => "numeric",
            Opt::Connection => "connection",
            Opt::Service => "service-address",
            Opt::Scheduler => "scheduler",
            Opt::Persistent => "persistent",
            Opt::Netmask => "netmask",
            Opt::Server => "real-server",
            Opt::Forward => "forwarding-method",
            Opt::Weight => "weight",
            Opt::UThreshold => "u-threshold",
            Opt::LThreshold => "l-threshold",
            Opt::Mcast => "mcast-interface",
            Opt::Timeout => "timeout",
            Opt::Daemon => "daemon",
            Opt::Stats => "stats",
            Opt::Rate => "rate",
            Opt::Thresholds => "thresholds",
            Opt::PersistentConn => "persistent-conn",
            Opt::NoSort => "nosort",
            Opt::SyncId => "syncid",
            Opt::Exact => "exact",
            Opt::Ops => "ops",
            Opt::Pe => "pe",
            Opt::SchedFlags => "sched-flags",
        }
    }
}

/// What a command does with an option (ipvsadm's `commands_v_options`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Required,
    Optional,
    Illegal,
    /// At most one of these per command.
    OneOf,
}

fn usage(cmd: Cmd, opt: Opt) -> Use {
    use Opt::*;
    use Use::*;
    match cmd {
        Cmd::Add | Cmd::Edit => match opt {
            Service => Required,
            Scheduler | Persistent | Netmask | Ops | Pe | SchedFlags => Optional,
            _ => Illegal,
        },
        Cmd::Del | Cmd::DelDest => match opt {
            Service => Required,
            Server if cmd == Cmd::DelDest => Required,
            _ => Illegal,
        },
        Cmd::List => match opt {
            Connection | Service | Timeout | Daemon => OneOf,
            Numeric | Stats | Rate | Thresholds | PersistentConn | NoSort | SyncId | Exact => {
                Optional
            }
            _ => Illegal,
        },
        Cmd::AddDest | Cmd::EditDest => match opt {
            Service | Server => Required,
            Forward | Weight | UThreshold | LThreshold => Optional,
            _ => Illegal,
        },
        Cmd::StartDaemon => match opt {
            Mcast | SyncId => Optional,
            _ => Illegal,
        },
        Cmd::StopDaemon => match opt {
            SyncId => Optional,
            _ => Illegal,
        },
        Cmd::Save => match opt {
            Numeric => Optional,
            _ => Illegal,
        },
        Cmd::Zero => match opt {
            Service => Optional,
            _ => Illegal,
        },
        Cmd::Flush | Cmd::Timeout | Cmd::Restore => Illegal,
    }
}

/// ipvsadm's default persistence timeout (`-p` without a value), seconds.
pub const DEFAULT_PERSISTENCE_S: u32 = 360;
/// ipvsadm's largest timeout (`-p`, `--set`), seconds: 31 days.
pub const MAX_TIMEOUT_S: u32 = 86_400 * 31;

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub cmd: Cmd,
    pub opts: Vec<Opt>,
    /// `-t` / `-u`: the service (port 0 when not given).
    pub service: Option<ServiceAddr>,
    /// `-f`: a firewall-mark service (lb refuses them).
    pub fwmark: Option<u32>,
    pub sched: Option<String>,
    pub persistent: Option<u32>,
    /// `-M` as a prefix length (an IPv4 netmask or an IPv6 prefix).
    pub netmask: Option<u8>,
    pub sched_flags: Vec<String>,
    /// `-r`: address and port (the service's port when not given, and
    /// always for `-g` / `-i`).
    pub server: Option<(IpAddr, u16)>,
    pub fwd: Fwd,
    pub weight: u32,
    pub u_threshold: u32,
    pub l_threshold: u32,
    /// `--set`'s three values.
    pub timeouts: Option<(u32, u32, u32)>,
    pub numeric: bool,
    pub stats: bool,
    pub rate: bool,
    pub thresholds: bool,
    pub persistent_conn: bool,
    pub nosort: bool,
    pub exact: bool,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No argument at all: list the table (ipvsadm without arguments).
    ListAll,
    Help,
    Version,
    Run(Box<Invocation>),
}

/// A refused command line: what to print on stderr and the exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

/// ipvsadm's `fail(2, …)`.
fn fail(message: String) -> Failure {
    Failure { code: 2, message }
}

/// `Try 'PROG -h' …`, exit 255 (ipvsadm's `tryhelp_exit(-1)`).
pub fn tryhelp(program: &str) -> Failure {
    Failure {
        code: 255,
        message: format!("Try `{program} -h' or '{program} --help' for more information."),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    None,
    Required,
    Optional,
}

/// The option table: (long name, short letter, argument, tag).
const TABLE: &[(&str, Option<char>, Arg, Tag)] = &[
    ("add-service", Some('A'), Arg::None, Tag::Cmd(Cmd::Add)),
    ("edit-service", Some('E'), Arg::None, Tag::Cmd(Cmd::Edit)),
    ("delete-service", Some('D'), Arg::None, Tag::Cmd(Cmd::Del)),
    ("clear", Some('C'), Arg::None, Tag::Cmd(Cmd::Flush)),
    ("list", Some('L'), Arg::None, Tag::Cmd(Cmd::List)),
    ("list", Some('l'), Arg::None, Tag::Cmd(Cmd::List)),
    ("zero", Some('Z'), Arg::None, Tag::Cmd(Cmd::Zero)),
    ("add-server", Some('a'), Arg::None, Tag::Cmd(Cmd::AddDest)),
    ("edit-server", Some('e'), Arg::None, Tag::Cmd(Cmd::EditDest)),
    (
        "delete-server",
        Some('d'),
        Arg::None,
        Tag::Cmd(Cmd::DelDest),
    ),
    ("set", None, Arg::None, Tag::Cmd(Cmd::Timeout)),
    ("help", Some('h'), Arg::None, Tag::Help),
    ("version", Some('v'), Arg::None, Tag::Version),
    ("restore", Some('R'), Arg::None, Tag::Cmd(Cmd::Restore)),
    ("save", Some('S'), Arg::None, Tag::Cmd(Cmd::Save)),
    (
        "start-daemon",
        None,
        Arg::Required,
        Tag::Cmd(Cmd::StartDaemon),
    ),
    (
        "stop-daemon",
        None,
        Arg::Required,
        Tag::Cmd(Cmd::StopDaemon),
    ),
    ("tcp-service", Some('t'), Arg::Required, Tag::Tcp),
    ("udp-service", Some('u'), Arg::Required, Tag::Udp),
    ("fwmark-service", Some('f'), Arg::Required, Tag::Fwmark),
    ("scheduler", Some('s'), Arg::Required, Tag::Sched),
    ("persistent", Some('p'), Arg::Optional, Tag::Persistent),
    ("netmask", Some('M'), Arg::Required, Tag::Netmask),
    ("real-server", Some('r'), Arg::Required, Tag::Server),
    ("masquerading", Some('m'), Arg::None, Tag::Fwd(Fwd::Nat)),
    ("ipip", Some('i'), Arg::None, Tag::Fwd(Fwd::Tun)),
    ("gatewaying", Some('g'), Arg::None, Tag::Fwd(Fwd::Dr)),
    ("weight", Some('w'), Arg::Required, Tag::Weight),
    ("u-threshold", Some('x'), Arg::Required, Tag::UThreshold),
    ("l-threshold", Some('y'), Arg::Required, Tag::LThreshold),
    ("numeric", Some('n'), Arg::None, Tag::Numeric),
    ("connection", Some('c'), Arg::None, Tag::Connection),
    ("mcast-interface", None, Arg::Required, Tag::Mcast),
    ("syncid", None, Arg::Required, Tag::SyncId),
    ("timeout", None, Arg::None, Tag::Timeout),
    ("daemon", None, Arg::None, Tag::Daemon),
    ("stats", None, Arg::None, Tag::Stats),
    ("rate", None, Arg::None, Tag::Rate),
    ("thresholds", None, Arg::None, Tag::Thresholds),
    ("persistent-conn", None, Arg::None, Tag::PersistentConn),
    ("nosort", None, Arg::None, Tag::NoSort),
    ("sort", None, Arg::None, Tag::Sort),
    ("exact", Some('X'), Arg::None, Tag::Exact),
    ("ipv6", Some('6'), Arg::None, Tag::Ipv6),
    ("ops", Some('o'), Arg::None, Tag::Ops),
    ("pe", None, Arg::Required, Tag::Pe),
    ("sched-flags", Some('b'), Arg::Required, Tag::SchedFlags),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tag {
    Cmd(Cmd),
    Help,
    Version,
    Tcp,
    Udp,
    Fwmark,
    Sched,
    Persistent,
    Netmask,
    Server,
    Fwd(Fwd),
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    Mcast,
    SyncId,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
}

/// One option as read off the command line.
struct Got {
    /// As written (`-t`, `--tcp-service`), for messages.
    text: String,
    tag: Tag,
    value: Option<String>,
}

/// popt's reading: options and leftover arguments, in order.
fn tokenize(args: &[String]) -> Result<(Vec<Got>, Vec<String>), Failure> {
    let mut got = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    let bad = |text: &str, why: &str| Failure {
        code: 255,
        message: format!("{text}: {why}"),
    };
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            rest.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let Some(&(_, _, arg, tag)) = TABLE.iter().find(|t| t.0 == name) else {
                return Err(bad(a, "unknown option"));
            };
            let value = match arg {
                Arg::None => {
                    if inline.is_some() {
                        return Err(bad(a, "option does not take an argument"));
                    }
                    None
                }
                Arg::Required => match inline {
                    Some(v) => Some(v),
                    None if i < args.len() => {
                        i += 1;
                        Some(args[i - 1].clone())
                    }
                    None => return Err(bad(a, "missing argument")),
                },
                Arg::Optional => match inline {
                    Some(v) => Some(v),
                    None if i < args.len() && !args[i].starts_with('-') => {
                        i += 1;
                        Some(args[i - 1].clone())
                    }
                    None => None,
                },
            };
            got.push(Got {
                text: format!("--{name}"),
                tag,
                value,
            });
            continue;
        }
        if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let Some(&(_, _, arg, tag)) = TABLE.iter().find(|t| t.1 == Some(c)) else {
                    return Err(bad(a, "unknown option"));
                };
                let attached: String = chars[j..].iter().collect();
                let value = match arg {
                    Arg::None => None,
                    Arg::Required => {
                        if !attached.is_empty() {
                            j = chars.len();
                            Some(attached)
                        } else if i < args.len() {
                            i += 1;
                            Some(args[i - 1].clone())
                        } else {
                            return Err(bad(a, "missing argument"));
                        }
                    }
                    Arg::Optional => {
                        if !attached.is_empty() {
                            j = chars.len();
                            Some(attached)
                        } else if i < args.len() && !args[i].starts_with('-') {
                            i += 1;
                            Some(args[i - 1].clone())
                        } else {
                            None
                        }
                    }
                };
                got.push(Got {
                    text: format!("-{c}"),
                    tag,
                    value,
                });
            }
            continue;
        }
        rest.push(a.clone());
    }
    Ok((got, rest))
}

/// `strtol` to a number in `min..=max`, ipvsadm's `string_to_number`.
fn number(s: &str, min: i64, max: i64) -> Option<i64> {
    let t = s.trim_start();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    let v = if neg { -v } else { v };
    (min..=max).contains(&v).then_some(v)
}

/// A port number or a service name from /etc/services for `proto`.
fn port_of(s: &str, proto: Proto) -> Option<u16> {
    if let Some(n) = number(s, 0, 65535) {
        return Some(n as u16);
    }
    super::names::service_port(s, proto)
}

/// ipvsadm's `parse_service`: `ADDR[:PORT]`, `[IPV6]:PORT`, `IPV6`, a host
/// name (IPv4). Returns the address and, if given, the port; `None` when
/// the text is not one.
pub fn parse_addr_port(text: &str, proto: Proto) -> Option<(IpAddr, Option<u16>)> {
    if text.is_empty() || text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(inner) = text.strip_prefix('[') {
        let (addr, port) = inner.split_once(']')?;
        let port = port.strip_prefix(':')?;
        let a: std::net::Ipv6Addr = addr.parse().ok()?;
        return Some((IpAddr::V6(a), Some(port_of(port, proto)?)));
    }
    if let Ok(a) = text.parse::<std::net::Ipv6Addr>() {
        return Some((IpAddr::V6(a), None));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (text, None),
    };
    let addr = match super::names::parse_inet_aton(host) {
        Some(a) => a,
        None => super::names::host_v4(host)?,
    };
    let port = match port {
        Some(p) => Some(port_of(p, proto)?),
        None => None,
    };
    Some((IpAddr::V4(addr), port))
}

/// An IPv4 netmask (dotted, as `inet_aton` reads it) as a prefix length;
/// `None` for a mask that is not contiguous ones then zeros (ipvs would
/// take it, lb's templates need a prefix).
fn netmask_prefix(text: &str) -> Option<Result<u8, ()>> {
    let a = super::names::parse_inet_aton(text)?;
    let m = u32::from(a);
    let ones = m.leading_ones();
    if m.checked_shl(ones).unwrap_or(0) != 0 {
        return Some(Err(()));
    }
    Some(Ok(ones as u8))
}

/// Reads ipvsadm's command line (`args` without the program name).
pub fn parse(program: &str, args: &[String]) -> Result<Parsed, Failure> {
    if args.is_empty() {
        return Ok(Parsed::ListAll);
    }
    let (got, rest) = match tokenize(args) {
        Ok(x) => x,
        // popt's error on the very first option: only the hint.
        Err(_) if first_is_bad(args) => return Err(tryhelp(program)),
        Err(f) => return Err(f),
    };
    let mut it = got.into_iter();
    let Some(first) = it.next() else {
        return Err(tryhelp(program));
    };
    let mut inv = Invocation {
        cmd: Cmd::List,
        opts: Vec::new(),
        service: None,
        fwmark: None,
        sched: None,
        persistent: None,
        netmask: None,
        sched_flags: Vec::new(),
        server: None,
        fwd: Fwd::Dr,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        timeouts: None,
        numeric: false,
        stats: false,
        rate: false,
        thresholds: false,
        persistent_conn: false,
        nosort: false,
        exact: false,
    };
    match first.tag {
        Tag::Cmd(c) => {
            inv.cmd = c;
            if matches!(c, Cmd::StartDaemon | Cmd::StopDaemon) {
                let v = first.value.as_deref().unwrap_or("");
                if v != "master" && v != "backup" {
                    return Err(fail(if c == Cmd::StartDaemon {
                        "illegal start-daemon parameter specified".into()
                    } else {
                        "illegal start_daemon specified".into()
                    }));
                }
            }
        }
        Tag::Help => return Ok(Parsed::Help),
        Tag::Version => return Ok(Parsed::Version),
        _ => return Err(tryhelp(program)),
    }
    let mut server_text: Option<(String, Option<u16>)> = None;
    let mut ipv6_fwmark = false;
    for g in it {
        let mut set = |o: Opt| -> Result<(), Failure> {
            if inv.opts.contains(&o) {
                return Err(fail(format!("multiple '{}' options specified", o.name())));
            }
            inv.opts.push(o);
            Ok(())
        };
        let v = g.value.clone().unwrap_or_default();
        match g.tag {
            Tag::Cmd(_) => return Err(fail("multiple commands specified".into())),
            Tag::Help | Tag::Version => {
                return Err(fail(format!("invalid option `{}'", g.text)));
            }
            Tag::Tcp | Tag::Udp => {
                set(Opt::Service)?;
                let proto = if g.tag == Tag::Tcp {
                    Proto::Tcp
                } else {
                    Proto::Udp
                };
                let (addr, port) = parse_addr_port(&v, proto).ok_or_else(|| {
                    fail("illegal virtual server address[:port] specified".into())
                })?;
                inv.service = Some(ServiceAddr {
                    addr,
                    port: port.unwrap_or(0),
                    proto,
                });
            }
            Tag::Fwmark => {
                set(Opt::Service)?;
                let m = number(&v, 1, u32::MAX as i64)
                    .ok_or_else(|| fail(format!("invalid fwmark value `{v}' specified")))?;
                inv.fwmark = Some(m as u32);
            }
            Tag::Sched => {
                set(Opt::Scheduler)?;
                inv.sched = Some(v);
            }
            Tag::Persistent => {
                set(Opt::Persistent)?;
                inv.persistent = Some(match g.value {
                    None => DEFAULT_PERSISTENCE_S,
                    Some(t) => number(&t, 1, MAX_TIMEOUT_S as i64)
                        .ok_or_else(|| fail(format!("invalid timeout value `{t}' specified")))?
                        as u32,
                });
            }
            Tag::Netmask => {
                set(Opt::Netmask)?;
                let v6 = inv.service.is_some_and(|s| s.addr.is_ipv6()) || ipv6_fwmark;
                if v6 {
                    let p = number(&v, 1, 128)
                        .ok_or_else(|| fail("illegal ipv6 netmask specified".into()))?;
                    inv.netmask = Some(p as u8);
                } else {
                    match netmask_prefix(&v) {
                        Some(Ok(p)) => inv.netmask = Some(p),
                        Some(Err(())) => {
                            return Err(Failure {
                                code: 2,
                                message: format!("lb: netmask {v} is not a prefix (contiguous ones): lb keeps persistence per address prefix"),
                            })
                        }
                        None => {
                            return Err(fail(
                                "illegal virtual server persistent mask specified".into(),
                            ))
                        }
                    }
                }
            }
            Tag::Server => {
                set(Opt::Server)?;
                server_text = Some((v, None));
            }
            Tag::Fwd(f) => {
                set(Opt::Forward)?;
                inv.fwd = f;
            }
            Tag::Weight => {
                set(Opt::Weight)?;
                inv.weight = number(&v, 0, 65535)
                    .ok_or_else(|| fail("illegal weight specified".into()))?
                    as u32;
            }
            Tag::UThreshold => {
                set(Opt::UThreshold)?;
                inv.u_threshold = number(&v, 0, i32::MAX as i64)
                    .ok_or_else(|| fail("illegal u_threshold specified".into()))?
                    as u32;
            }
            Tag::LThreshold => {
                set(Opt::LThreshold)?;
                inv.l_threshold = number(&v, 0, i32::MAX as i64)
                    .ok_or_else(|| fail("illegal l_threshold specified".into()))?
                    as u32;
            }
            Tag::Numeric => {
                set(Opt::Numeric)?;
                inv.numeric = true;
            }
            Tag::Connection => set(Opt::Connection)?,
            Tag::Mcast => set(Opt::Mcast)?,
            Tag::SyncId => {
                set(Opt::SyncId)?;
                number(&v, 0, 255).ok_or_else(|| fail("illegal syncid specified".into()))?;
            }
            Tag::Timeout => set(Opt::Timeout)?,
            Tag::Daemon => set(Opt::Daemon)?,
            Tag::Stats => {
                set(Opt::Stats)?;
                inv.stats = true;
            }
            Tag::Rate => {
                set(Opt::Rate)?;
                inv.rate = true;
            }
            Tag::Thresholds => {
                set(Opt::Thresholds)?;
                inv.thresholds = true;
            }
            Tag::PersistentConn => {
                set(Opt::PersistentConn)?;
                inv.persistent_conn = true;
            }
            Tag::NoSort => {
                set(Opt::NoSort)?;
                inv.nosort = true;
            }
            Tag::Sort => {}
            Tag::Exact => {
                set(Opt::Exact)?;
                inv.exact = true;
            }
            Tag::Ipv6 => {
                if inv.fwmark.is_some() {
                    ipv6_fwmark = true;
                } else {
                    return Err(fail("-6 used before -f\n".into()));
                }
            }
            Tag::Ops => set(Opt::Ops)?,
            Tag::Pe => set(Opt::Pe)?,
            Tag::SchedFlags => {
                set(Opt::SchedFlags)?;
                for f in v.split(',') {
                    match f {
                        "sh-fallback" | "sh-port" | "mh-fallback" | "mh-port" | "flag-1"
                        | "flag-2" | "flag-3" => inv.sched_flags.push(f.to_string()),
                        _ => return Err(fail(format!("invalid scheduler flag `{f}'"))),
                    }
                }
            }
        }
    }
    let mut rest = rest.into_iter();
    if inv.cmd == Cmd::Timeout {
        match (rest.next(), rest.next(), rest.next()) {
            (Some(a), Some(b), Some(c)) => {
                let t = |s: String| -> Result<u32, Failure> {
                    number(&s, 0, MAX_TIMEOUT_S as i64)
                        .map(|n| n as u32)
                        .ok_or_else(|| fail(format!("invalid timeout value `{s}' specified")))
                };
                inv.timeouts = Some((t(a)?, t(b)?, t(c)?));
            }
            _ => return Err(fail("--set option requires 3 timeout values".into())),
        }
    }
    if let Some(extra) = rest.next() {
        return Err(fail(format!("unexpected argument {extra}")));
    }
    // The real server's address is read against the service's protocol
    // (a port given by name).
    if let Some((text, _)) = server_text {
        let proto = inv.service.map_or(Proto::Tcp, |s| s.proto);
        let (addr, port) = parse_addr_port(&text, proto)
            .ok_or_else(|| fail("illegal real server address[:port] specified".into()))?;
        inv.server = Some((addr, port.unwrap_or(inv.service.map_or(0, |s| s.port))));
    }
    check_options(&inv)?;
    if matches!(inv.cmd, Cmd::Add | Cmd::Edit) {
        if inv.fwmark.is_none()
            && inv.service.is_some_and(|s| s.port == 0)
            && inv.persistent.is_none()
        {
            return Err(fail(
                "Zero port specified for non-persistent service".into(),
            ));
        }
        if inv.opts.contains(&Opt::Ops) && inv.service.is_some_and(|s| s.proto != Proto::Udp) {
            return Err(fail(
                "One-Packet Scheduling is only for UDP virtual services".into(),
            ));
        }
    }
    if matches!(inv.cmd, Cmd::AddDest | Cmd::EditDest) && inv.fwd != Fwd::Nat {
        // ipvsadm: DR and TUN reals take the service's port.
        if let (Some((a, _)), Some(s)) = (inv.server, inv.service) {
            inv.server = Some((a, s.port));
        }
    }
    if inv.cmd == Cmd::List {
        let has = |o: Opt| inv.opts.contains(&o);
        if ((has(Opt::Connection) || has(Opt::Timeout) || has(Opt::Daemon))
            && (has(Opt::Stats) || has(Opt::Rate) || has(Opt::Thresholds)))
            || ((has(Opt::Timeout) || has(Opt::Daemon)) && has(Opt::PersistentConn))
        {
            return Err(fail("options conflicts in the list command".into()));
        }
    }
    Ok(Parsed::Run(Box::new(inv)))
}

/// Whether popt fails on the first option of `args` (ipvsadm then prints
/// only its hint).
fn first_is_bad(args: &[String]) -> bool {
    let first_opt = args.iter().position(|a| a.starts_with('-') && a.len() > 1);
    match first_opt {
        None => true,
        Some(i) => {
            tokenize(&args[i..i + 1]).is_err() && {
                // A first option that needs an argument it lacks, or an unknown
                // one.
                true
            }
        }
    }
}

/// ipvsadm's `generic_opt_check`.
fn check_options(inv: &Invocation) -> Result<(), Failure> {
    let mut first_one: Option<Opt> = None;
    for o in Opt::ALL {
        let given = inv.opts.contains(&o);
        match (usage(inv.cmd, o), given) {
            (Use::Required, false) => {
                return Err(fail(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    o.name(),
                    inv.cmd.name()
                )))
            }
            (Use::Illegal, true) => {
                return Err(fail(format!(
                    "Illegal '{}' option with the '{}' command",
                    o.name(),
                    inv.cmd.name()
                )))
            }
            (Use::OneOf, true) => match first_one {
                None => first_one = Some(o),
                Some(f) => {
                    return Err(fail(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        o.name(),
                        f.name(),
                        inv.cmd.name()
                    )))
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// The scheduler named by `-s` (ipvsadm's default `wlc`); `None` for a
/// name lb does not have (ipvs: "Scheduler or persistence engine not
/// found").
pub fn sched_of(inv: &Invocation) -> Option<Sched> {
    let name = inv.sched.as_deref().unwrap_or("wlc");
    Sched::ALL.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Parsed, Failure> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse("ipvsadm", &args)
    }

    fn inv(line: &str) -> Invocation {
        match p(line) {
            Ok(Parsed::Run(i)) => *i,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn err(line: &str) -> (u8, String) {
        match p(line) {
            Err(f) => (f.code, f.message),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn the_source_documents_lines() {
        let i = inv("-A -t 12.0.0.20:80 -s rr");
        assert_eq!(i.cmd, Cmd::Add);
        assert_eq!(i.service.unwrap().to_string(), "TCP 12.0.0.20:80");
        assert_eq!(sched_of(&i), Some(Sched::Rr));
        let i = inv("-a -t 12.0.0.20:80 -r 192.168.118.40:80 -m -w 3");
        assert_eq!(i.server, Some(("192.168.118.40".parse().unwrap(), 80)));
        assert_eq!((i.fwd, i.weight), (Fwd::Nat, 3));
        let i = inv("-d -r 192.168.118.30:80 -t 12.0.0.20:80");
        assert_eq!(i.cmd, Cmd::DelDest);
        let i = inv("-a -t 192.168.118.100:80 -r 192.168.118.30 -g");
        assert_eq!(i.server.unwrap().1, 80, "the service's port");
        assert_eq!(inv("-ln").cmd, Cmd::List);
        assert!(inv("-Ln").numeric);
        let i = inv("-lnc");
        assert!(i.opts.contains(&Opt::Connection));
        assert_eq!(inv("-C").cmd, Cmd::Flush);
        assert_eq!(inv("-D -t 192.168.118.20:80").cmd, Cmd::Del);
        assert_eq!(p(""), Ok(Parsed::ListAll));
    }

    #[test]
    fn options_as_popt_reads_them() {
        // -p with and without its optional value.
        assert_eq!(inv("-A -t 1.2.3.4:80 -p").persistent, Some(360));
        assert_eq!(inv("-A -t 1.2.3.4:80 -p 60 -s sh").persistent, Some(60));
        assert_eq!(inv("-A -t 1.2.3.4:80 -p -s sh").persistent, Some(360));
        assert_eq!(inv("-A -t1.2.3.4:80 -p60").persistent, Some(60));
        assert_eq!(inv("--add-service --tcp-service=1.2.3.4:80").cmd, Cmd::Add);
        assert_eq!(
            inv("-A -u [2001:db8::1]:53 -s rr")
                .service
                .unwrap()
                .to_string(),
            "UDP [2001:db8::1]:53"
        );
        let i = inv("-A -t 1.2.3.4:80 -p 60 -M 255.255.255.0");
        assert_eq!(i.netmask, Some(24));
        let i = inv("-A -t [2001:db8::1]:80 -p 60 -M 64");
        assert_eq!(i.netmask, Some(64));
        let i = inv("-A -t 1.2.3.4:80 -s mh -b mh-fallback,mh-port");
        assert_eq!(i.sched_flags, ["mh-fallback", "mh-port"]);
        let i = inv("-a -t 1.2.3.4:80 -r 10.0.0.1:8080 -m -x 100 -y 50");
        assert_eq!((i.u_threshold, i.l_threshold), (100, 50));
        assert_eq!(i.server.unwrap().1, 8080, "NAT keeps its port");
        let i = inv("-a -t 1.2.3.4:80 -r 10.0.0.1:8080 -i");
        assert_eq!(i.server.unwrap().1, 80, "TUN takes the service's port");
        assert_eq!(inv("--set 10 20 30").timeouts, Some((10, 20, 30)));
        let i = inv("-L -n -t 1.2.3.4:80 --stats --exact");
        assert!(i.stats && i.exact && i.service.is_some());
    }

    #[test]
    fn errors_as_ipvsadm_words_them() {
        assert_eq!(
            err("-A"),
            (
                2,
                "You need to supply the 'service-address' option for the 'add-service' command"
                    .into()
            )
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -w 3"),
            (
                2,
                "Illegal 'weight' option with the 'add-service' command".into()
            )
        );
        assert_eq!(
            err("-a -t 1.2.3.4:80 -r 10.0.0.1 -w 65536"),
            (2, "illegal weight specified".into())
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -A"),
            (2, "multiple commands specified".into())
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -s rr -s wrr"),
            (2, "multiple 'scheduler' options specified".into())
        );
        assert_eq!(
            err("-A -t 1.2.3.4"),
            (2, "Zero port specified for non-persistent service".into())
        );
        assert_eq!(
            err("-A -t 80"),
            (2, "illegal virtual server address[:port] specified".into())
        );
        assert_eq!(
            err("-L -c --stats"),
            (2, "options conflicts in the list command".into())
        );
        assert_eq!(
            err("-L -c --timeout"),
            (
                2,
                "The option 'timeout' conflicts with the 'connection' option in the 'list' command"
                    .into()
            )
        );
        assert_eq!(
            err("--set 1 2"),
            (2, "--set option requires 3 timeout values".into())
        );
        assert_eq!(err("-C extra"), (2, "unexpected argument extra".into()));
        assert_eq!(
            err("-A -t 1.2.3.4:80 --bogus"),
            (255, "--bogus: unknown option".into())
        );
        assert_eq!(err("--bogus").0, 255);
        assert_eq!(err("-t 1.2.3.4:80").0, 255, "no command first");
        assert_eq!(
            err("-A -t 1.2.3.4:80 -p 0"),
            (2, "invalid timeout value `0' specified".into())
        );
    }
}
