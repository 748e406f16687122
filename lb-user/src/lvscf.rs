//! `lb import-lvs-cf`: turns a Piranha `lvs.cf` (Red Hat's pulse / lvsd /
//! nanny configuration, `/etc/sysconfig/ha/lvs.cf`) into keepalived.conf.
//!
//! The file's grammar is Piranha's (`lvsconfig.c`): one `key = value
//! [device]` a line, values optionally quoted with `"` or `'`, `#` comments
//! on lines of their own, and the blocks `virtual NAME {`, `failover NAME {`
//! and, inside a virtual server, `server NAME {`, each closed by a `}` line.
//! Defaults are Piranha's: `network = nat`, `keepalive = 2`, `deadtime = 5`,
//! `port = 80`, `protocol = tcp`, `scheduler = wlc`, `timeout = 10`, server
//! `weight = 1` and port the virtual server's.
//!
//! What maps (see README, *Importing a Piranha lvs.cf*):
//! - the two routers → one `vrrp_instance` whose roles follow `--router`
//!   (primary: MASTER, priority 150; backup: BACKUP, priority 100), the
//!   peers as `unicast_src_ip` / `unicast_peer` (pulse heartbeats are
//!   unicast too), `keepalive` → `advert_int`, the virtual servers'
//!   addresses and `nat_router` → `virtual_ipaddress` (`/prefix dev DEV
//!   label DEV:N`), `active_cmd` / `inactive_cmd` → `notify_master` /
//!   `notify_backup`, `monitor_links` → `track_interface` (interfaces other
//!   than the instance's own, which VRRP always tracks);
//! - each active `virtual` → `virtual_server` with `lb_algo`, `lb_kind`
//!   (`network`), `protocol`, `persistence_timeout`, `persistence_granularity`
//!   (`pmask`), `sorry_server`; each active `server` → `real_server` with its
//!   weight;
//! - nanny's send/expect test → a checker: nothing to send or expect →
//!   `TCP_CHECK`; an HTTP GET request whose expected reply is the start of a
//!   status line → `HTTP_GET` (`status_code` from the expected code, any
//!   status when only `HTTP` is expected); `send_program` → `MISC_CHECK`;
//!   UDP → `UDP_CHECK`; anything else → `TCP_CHECK` with a warning;
//!   `timeout` → `connect_timeout`.
//!
//! Everything that cannot be carried over is a warning naming the lvs.cf
//! line and keyword.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::config::syntax::{Diag, Loc, Severity};

/// Which router the generated file is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Router {
    /// `primary =`: MASTER, priority 150.
    Primary,
    /// `backup =`: BACKUP, priority 100.
    Backup,
}

/// The result of an import: keepalived.conf text (empty when there are
/// errors) and every diagnostic, in file order.
#[derive(Debug)]
pub struct Import {
    pub text: String,
    pub diags: Vec<Diag>,
}

impl Import {
    /// Whether a diagnostic is an error (nothing can be generated).
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }
}

/// One lvs.cf statement: `key = value [extra…]` or a block `key NAME {`.
#[derive(Clone, Debug)]
struct Stmt {
    key: String,
    /// The value (quotes removed), or the block's name.
    value: String,
    /// Words after the value (`address = IP DEV:N`).
    extra: Vec<String>,
    loc: Loc,
    children: Option<Vec<Stmt>>,
}

/// Splits a line into words; a word starting with a quote runs to the
/// matching quote (Piranha's `tokenizeString`), without the quotes. Returns
/// (1-based column, word) pairs, or the column of an unterminated quote.
fn words(line: &str) -> Result<Vec<(u32, String)>, u32> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b' ' || b[i] == b'\t' {
            i += 1;
            continue;
        }
        let col = i as u32 + 1;
        if b[i] == b'"' || b[i] == b'\'' {
            let q = b[i];
            let Some(end) = b[i + 1..].iter().position(|&c| c == q) else {
                return Err(col);
            };
            out.push((col, line[i + 1..i + 1 + end].to_string()));
            i += end + 2;
        } else {
            let end = b[i..]
                .iter()
                .position(|&c| c == b' ' || c == b'\t')
                .map_or(b.len(), |e| i + e);
            out.push((col, line[i..end].to_string()));
            i = end;
        }
    }
    Ok(out)
}

/// Parses lvs.cf text into statements, reporting malformed lines.
fn parse(text: &str, file: &Arc<PathBuf>, diags: &mut Vec<Diag>) -> Vec<Stmt> {
    // Stack of open blocks: (statement, children so far).
    let mut stack: Vec<(Stmt, Vec<Stmt>)> = Vec::new();
    let mut top: Vec<Stmt> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let loc = |col: u32| Loc {
            file: file.clone(),
            line: n as u32 + 1,
            col,
        };
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let ws = match words(line) {
            Ok(w) => w,
            Err(col) => {
                diags.push(Diag::error(&loc(col), None, "unterminated quote"));
                continue;
            }
        };
        let (col, key) = ws[0].clone();
        if key == "}" {
            if ws.len() > 1 {
                diags.push(Diag::error(&loc(ws[1].0), None, "text after '}'"));
            }
            match stack.pop() {
                Some((mut s, children)) => {
                    s.children = Some(children);
                    match stack.last_mut() {
                        Some((_, c)) => c.push(s),
                        None => top.push(s),
                    }
                }
                None => diags.push(Diag::error(&loc(col), None, "'}' without an open block")),
            }
            continue;
        }
        let stmt = |value: String, extra: Vec<String>| Stmt {
            key: key.clone(),
            value,
            extra,
            loc: loc(col),
            children: None,
        };
        if ws.len() == 3 && ws[2].1 == "{" && ws[1].1 != "=" {
            stack.push((stmt(ws[1].1.clone(), Vec::new()), Vec::new()));
            continue;
        }
        if ws.len() < 3 || ws[1].1 != "=" {
            diags.push(Diag::error(
                &loc(col),
                Some(&key),
                "expected 'KEY = VALUE' or 'KEY NAME {'",
            ));
            continue;
        }
        if ws.len() > 3 && key != "address" && key != "nat_router" {
            diags.push(Diag::error(
                &loc(ws[3].0),
                Some(&key),
                "unexpected words after the value (quote a value with blanks)",
            ));
            continue;
        }
        let s = stmt(
            ws[2].1.clone(),
            ws[3..].iter().map(|(_, w)| w.clone()).collect(),
        );
        match stack.last_mut() {
            Some((_, c)) => c.push(s),
            None => top.push(s),
        }
    }
    // Unclosed blocks are reported, then closed so that their contents are
    // checked too.
    while let Some((mut s, children)) = stack.pop() {
        diags.push(Diag::error(
            &s.loc,
            Some(&s.key),
            format!("block '{}' is not closed", s.value),
        ));
        s.children = Some(children);
        match stack.last_mut() {
            Some((_, c)) => c.push(s),
            None => top.push(s),
        }
    }
    top
}

/// A netmask as a prefix length; `None` unless its ones are contiguous.
fn prefix_len(mask: &str) -> Option<u32> {
    let m = u32::from(mask.parse::<Ipv4Addr>().ok()?);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len)
}

/// Unescapes nanny's send / expect strings: `\n`, `\r`, `\t`, and `\` before
/// any other character stands for that character.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// Quotes a keepalived.conf word when it holds blanks, quotes, braces or
/// comment characters (a `"` inside becomes `'`: keepalived.conf strings
/// have no escape).
fn quoted(s: &str) -> String {
    if s.is_empty() || s.contains([' ', '\t', '"', '#', '!', '{', '}']) {
        format!("\"{}\"", s.replace('"', "'"))
    } else {
        s.to_string()
    }
}

/// A virtual address for `virtual_ipaddress`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Vip {
    addr: Ipv4Addr,
    prefix: u32,
    dev: String,
    label: Option<String>,
}

impl Vip {
    fn render(&self) -> String {
        let mut s = format!("{}/{} dev {}", self.addr, self.prefix, self.dev);
        if let Some(l) = &self.label {
            let _ = write!(s, " label {l}");
        }
        s
    }
}

/// `DEV:N` → (DEV, label `DEV:N`); `DEV` → (DEV, no label).
fn device(word: &str) -> (String, Option<String>) {
    match word.split_once(':') {
        Some((dev, _)) => (dev.to_string(), Some(word.to_string())),
        None => (word.to_string(), None),
    }
}

/// Collects warnings and errors for one import.
struct Ctx {
    diags: Vec<Diag>,
}

impl Ctx {
    fn warn(&mut self, s: &Stmt, message: impl Into<String>) {
        self.diags
            .push(Diag::warning(&s.loc, Some(&s.key), message.into()));
    }
    fn error(&mut self, s: &Stmt, message: impl Into<String>) {
        self.diags
            .push(Diag::error(&s.loc, Some(&s.key), message.into()));
    }
    fn num(&mut self, s: &Stmt) -> Option<u32> {
        // Piranha reads numbers with strtol(…, 0): decimal, 0x…, 0….
        let v = s.value.as_str();
        let r = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            u32::from_str_radix(h, 16)
        } else if v.len() > 1 && v.starts_with('0') {
            u32::from_str_radix(&v[1..], 8)
        } else {
            v.parse()
        };
        match r {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(s, format!("'{v}' is not a number"));
                None
            }
        }
    }
    fn bool(&mut self, s: &Stmt) -> Option<bool> {
        match s.value.as_str() {
            "0" => Some(false),
            "1" => Some(true),
            v => {
                self.error(s, format!("'{v}' is not 0 or 1"));
                None
            }
        }
    }
    fn ip(&mut self, s: &Stmt) -> Option<Ipv4Addr> {
        match s.value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    s,
                    format!(
                        "'{}' is not an IPv4 address (host names are not resolved)",
                        s.value
                    ),
                );
                None
            }
        }
    }
    fn prefix(&mut self, s: &Stmt) -> Option<u32> {
        let p = prefix_len(&s.value);
        if p.is_none() {
            self.error(s, format!("'{}' is not a netmask", s.value));
        }
        p
    }
}

/// The global part of lvs.cf.
struct Globals {
    primary: Option<Ipv4Addr>,
    backup: Option<Ipv4Addr>,
    backup_active: bool,
    keepalive: u32,
    kind: &'static str,
    nat_router: Option<(Stmt, Ipv4Addr, String, Option<String>)>,
    nat_prefix: Option<u32>,
    monitor_links: Option<Stmt>,
    active_cmd: Option<String>,
    inactive_cmd: Option<String>,
    serial_no: Option<String>,
}

fn globals(stmts: &[Stmt], cx: &mut Ctx) -> Globals {
    let mut g = Globals {
        primary: None,
        backup: None,
        backup_active: false,
        keepalive: 2,
        kind: "NAT",
        nat_router: None,
        nat_prefix: None,
        monitor_links: None,
        active_cmd: None,
        inactive_cmd: None,
        serial_no: None,
    };
    let mut deadtime: Option<(Stmt, u32)> = None;
    for s in stmts.iter().filter(|s| s.children.is_none()) {
        match s.key.as_str() {
            "serial_no" => g.serial_no = Some(s.value.clone()),
            "primary" => g.primary = cx.ip(s),
            "backup" => g.backup = cx.ip(s),
            "backup_active" => g.backup_active = cx.bool(s).unwrap_or(false),
            "service" => match s.value.as_str() {
                "lvs" => {}
                "fos" => cx.warn(
                    s,
                    "failover services (fos) are not carried over: only the virtual servers are",
                ),
                v => cx.error(s, format!("'{v}' is not lvs or fos")),
            },
            "heartbeat" => {
                if cx.bool(s) == Some(false) {
                    cx.warn(
                        s,
                        "heartbeat = 0 is not carried over: VRRP advertisements are always sent",
                    );
                }
            }
            "heartbeat_port" => cx.warn(
                s,
                format!(
                    "not carried over: VRRP is IP protocol 112, without a port ({} is not used)",
                    s.value
                ),
            ),
            "keepalive" => {
                if let Some(n) = cx.num(s) {
                    if n == 0 || n > 255 {
                        cx.error(s, "advert_int must be 1-255 s");
                    } else {
                        g.keepalive = n;
                    }
                }
            }
            "deadtime" => deadtime = cx.num(s).map(|n| (s.clone(), n)),
            "network" => match s.value.as_str() {
                "direct" => g.kind = "DR",
                "nat" => g.kind = "NAT",
                "tunnel" => g.kind = "TUN",
                v => cx.error(s, format!("'{v}' is not direct, nat or tunnel")),
            },
            "nat_router" => {
                if let (Some(ip), Some(dev)) = (cx.ip(s), s.extra.first()) {
                    let (dev, label) = device(dev);
                    g.nat_router = Some((s.clone(), ip, dev, label));
                } else if s.extra.is_empty() {
                    cx.error(s, "expected 'nat_router = IP DEV:N'");
                }
            }
            "nat_nmask" => g.nat_prefix = cx.prefix(s),
            "monitor_links" => {
                if cx.num(s).is_some_and(|n| n != 0) {
                    g.monitor_links = Some(s.clone());
                }
            }
            "active_cmd" => g.active_cmd = Some(s.value.clone()),
            "inactive_cmd" => g.inactive_cmd = Some(s.value.clone()),
            "debug_level" => {
                if s.value != "NONE" {
                    cx.warn(s, "not carried over: lb logs through RUST_LOG");
                }
            }
            "syncdaemon" => {
                if cx.bool(s) == Some(true) {
                    cx.warn(
                        s,
                        "not carried over: lb does not synchronise connections between directors",
                    );
                }
            }
            "syncd_iface" | "syncd_id" => cx.warn(
                s,
                "not carried over: lb does not synchronise connections between directors",
            ),
            "tcp_timeout" | "tcpfin_timeout" | "udp_timeout" => {
                if cx.num(s).is_some_and(|n| n != 0) {
                    let opt = s.key.replace('_', "-");
                    cx.warn(
                        s,
                        format!(
                            "not a keepalived.conf setting: run `lb run --{opt} {}`",
                            s.value
                        ),
                    );
                }
            }
            "primary_private" | "backup_private" => cx.warn(
                s,
                "not carried over: VRRP advertises on the instance's interface only",
            ),
            "reservation_conflict_action"
            | "primary_shared"
            | "backup_shared"
            | "rsh_command"
            | "sync"
            | "hard_shutdown"
            | "ipvsadm" => cx.warn(s, "not carried over: no keepalived equivalent"),
            _ => cx.warn(s, "unknown lvs.cf keyword, not carried over"),
        }
    }
    if let Some((s, d)) = deadtime {
        let vrrp = 3 * g.keepalive;
        if d != vrrp {
            cx.warn(
                &s,
                format!(
                    "deadtime {d} s is not carried over: the backup takes over after 3 × advert_int (keepalive) plus skew, about {vrrp} s"
                ),
            );
        }
    }
    g
}

/// A real server to emit.
struct Real {
    name: String,
    line: u32,
    addr: Ipv4Addr,
    port: u16,
    weight: u32,
}

/// A virtual server to emit.
struct Virtual {
    name: String,
    line: u32,
    addr: Ipv4Addr,
    port: u16,
    udp: bool,
    sched: String,
    persistent: Option<u32>,
    pmask: Option<Ipv4Addr>,
    sorry: Option<Ipv4Addr>,
    timeout: u32,
    checker: Checker,
    reals: Vec<Real>,
}

/// The checker nanny's test maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Checker {
    Tcp,
    Http {
        path: String,
        host: Option<String>,
        http11: bool,
        /// Inclusive status range.
        status: (u16, u16),
    },
    /// The program with `%h` not yet replaced.
    Misc(String),
    Udp {
        payload: Vec<u8>,
        require_reply: bool,
    },
}

/// Maps nanny's send / expect test to a checker, with the warnings of what
/// does not map exactly.
fn checker(
    vs: &Stmt,
    udp: bool,
    send: Option<&Stmt>,
    expect: Option<&Stmt>,
    program: Option<&Stmt>,
    regex: Option<&Stmt>,
    cx: &mut Ctx,
) -> Checker {
    let send_s = send.map(|s| unescape(&s.value)).unwrap_or_default();
    let expect_s = expect.map(|s| unescape(&s.value)).unwrap_or_default();
    let regex_on = regex.is_some_and(|r| r.value == "1");
    if let Some(p) = program.filter(|p| !p.value.is_empty()) {
        let mut msg = "run as MISC_CHECK: its exit status decides (0 = up)".to_string();
        if !expect_s.is_empty() {
            let _ = write!(
                msg,
                ", its output is not compared with expect '{}'",
                expect_s.escape_debug()
            );
        }
        cx.warn(p, msg);
        return Checker::Misc(p.value.clone());
    }
    if udp {
        if !expect_s.is_empty() {
            cx.warn(
                expect.unwrap_or(vs),
                format!(
                    "UDP_CHECK with require_reply: any reply is up, not only '{}'",
                    expect_s.escape_debug()
                ),
            );
        }
        return Checker::Udp {
            payload: send_s.into_bytes(),
            require_reply: !expect_s.is_empty(),
        };
    }
    if send_s.is_empty() && expect_s.is_empty() {
        return Checker::Tcp;
    }
    if !regex_on {
        if let Some(c) = http_checker(&send_s, &expect_s) {
            // HTTP_GET compares the status code only: an expected version
            // (`HTTP/1.1`) or reason phrase is not checked.
            if expect_s.len() >= "HTTP/1.x".len() {
                cx.warn(
                    expect.unwrap_or(vs),
                    format!(
                        "HTTP_GET compares the status code of '{}', not the HTTP version or reason",
                        expect_s.escape_debug()
                    ),
                );
            }
            return c;
        }
    }
    let what = if regex_on {
        "a regular expression"
    } else {
        "an arbitrary reply"
    };
    cx.warn(
        send.or(expect).unwrap_or(vs),
        format!(
            "send '{}' / expect '{}': no keepalived checker compares {what}; TCP_CHECK (the connection only) instead",
            send_s.escape_debug(),
            expect_s.escape_debug()
        ),
    );
    Checker::Tcp
}

/// `GET PATH HTTP/1.x` (headers optional) expecting the start of a status
/// line (`HTTP`, `HTTP/1.1`, `HTTP/1.1 200`, `HTTP/1.1 200 OK`).
fn http_checker(send: &str, expect: &str) -> Option<Checker> {
    let mut lines = send.split("\r\n").flat_map(|l| l.split('\n'));
    let request = lines.next()?;
    let mut parts = request.split(' ');
    let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    if method != "GET" || parts.next().is_some() || !path.starts_with('/') {
        return None;
    }
    let http11 = match version {
        "HTTP/1.0" => false,
        "HTTP/1.1" => true,
        _ => return None,
    };
    let host = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("host")
            .then(|| v.trim().to_string())
    });
    // The expected text must be the start of a status line.
    let version = &expect[..expect.len().min(8)];
    if version.len() < 4
        || !["HTTP/1.0", "HTTP/1.1"]
            .iter()
            .any(|v| v.starts_with(version))
    {
        return None;
    }
    let status = match expect.get(8..).unwrap_or("") {
        "" => (100, 599),
        rest => {
            let code = rest.strip_prefix(' ')?.split(' ').next()?;
            let c: u16 = code.parse().ok().filter(|c| (100..=599).contains(c))?;
            if code.len() != 3 {
                return None;
            }
            (c, c)
        }
    };
    Some(Checker::Http {
        path: path.to_string(),
        host,
        http11,
        status,
    })
}

fn virtual_server(
    vs: &Stmt,
    kind_nat: bool,
    vips: &mut Vec<(Stmt, Vip)>,
    cx: &mut Ctx,
) -> Option<Virtual> {
    let children = vs.children.as_deref().unwrap_or_default();
    let get = |k: &str| {
        children
            .iter()
            .rev()
            .find(|c| c.key == k && c.children.is_none())
    };
    // Piranha's default is inactive (the structure is zeroed when parsed).
    if get("active").and_then(|a| cx.bool(a)) != Some(true) {
        cx.warn(
            vs,
            format!(
                "virtual server '{}' is inactive (no 'active = 1'): not carried over",
                vs.value
            ),
        );
        return None;
    }
    let Some(addr_stmt) = get("address") else {
        cx.error(vs, format!("virtual server '{}' has no address", vs.value));
        return None;
    };
    let addr = cx.ip(addr_stmt)?;
    let prefix = match get("vip_nmask") {
        Some(m) => cx.prefix(m).unwrap_or(32),
        None => 32,
    };
    match addr_stmt.extra.first() {
        Some(dev) => {
            let (dev, label) = device(dev);
            vips.push((
                addr_stmt.clone(),
                Vip {
                    addr,
                    prefix,
                    dev,
                    label,
                },
            ));
        }
        None => cx.error(
            addr_stmt,
            "expected 'address = IP DEV:N' (the device holds the VIP)",
        ),
    }
    let port = match get("port") {
        Some(p) => match p.value.parse::<u16>() {
            Ok(n) => n,
            Err(_) => {
                cx.error(p, format!("'{}' is not a port number", p.value));
                80
            }
        },
        None => 80,
    };
    let udp = match get("protocol").map(|p| (p, p.value.as_str())) {
        None | Some((_, "tcp")) => false,
        Some((_, "udp")) => true,
        Some((p, v)) => {
            cx.error(p, format!("'{v}' is not tcp or udp"));
            false
        }
    };
    let sched = match get("scheduler") {
        Some(s) => match s.value.as_str() {
            "rr" | "wrr" | "lc" | "wlc" | "sh" | "lblc" | "lblcr" | "dh" => s.value.clone(),
            v => {
                cx.error(s, format!("'{v}' is not a Piranha scheduler"));
                "wlc".into()
            }
        },
        None => "wlc".into(),
    };
    let persistent = get("persistent").and_then(|p| cx.num(p)).filter(|&n| n > 0);
    let pmask = match (persistent, get("pmask")) {
        (Some(_), Some(m)) if m.value != "255.255.255.255" => {
            let a = cx.ip(m);
            // lb keeps a prefix of the client address (keepalived.conf's
            // persistence_granularity refuses other masks).
            match a {
                Some(v4) if u32::from(v4).leading_ones() + u32::from(v4).trailing_zeros() < 32 => {
                    cx.error(
                        m,
                        format!("netmask {v4} is not contiguous: lb's persistence_granularity keeps a prefix of the client address"),
                    );
                    None
                }
                _ => a,
            }
        }
        _ => None,
    };
    let fwmark = get("fwmark").and_then(|f| cx.num(f)).filter(|&n| n > 0);
    if let Some(f) = get("fwmark").filter(|_| fwmark.is_some()) {
        cx.warn(
            f,
            "written as a virtual_server for the virtual's address and port; lb cannot select a service by firewall mark (netfilter marks packets after the XDP program has run), so the other ports the mark groups are not carried over",
        );
    }
    let sorry = get("sorry_server").and_then(|s| cx.ip(s));
    let timeout = get("timeout").and_then(|t| cx.num(t)).unwrap_or(10);
    if let Some(r) = get("reentry") {
        if cx.num(r).is_some_and(|n| n > 0) {
            cx.warn(
                r,
                "not carried over: a real that passes its check again is re-added at once",
            );
        }
    }
    if let Some(q) = get("quiesce_server") {
        if cx.bool(q) == Some(true) {
            cx.warn(
                q,
                "not carried over: the connection counts are not reset when a real comes back",
            );
        }
    }
    if let Some(l) = get("load_monitor") {
        if l.value != "none" {
            cx.warn(
                l,
                "not carried over: weights are not adjusted to the reals' load (MISC_CHECK with misc_dynamic can)",
            );
        }
    }
    for c in children {
        match c.key.as_str() {
            "active" | "address" | "vip_nmask" | "port" | "protocol" | "scheduler"
            | "persistent" | "pmask" | "fwmark" | "sorry_server" | "timeout" | "reentry"
            | "quiesce_server" | "load_monitor" | "send" | "expect" | "send_program"
            | "use_regex" | "server" => {}
            "client_monitor" | "master" | "dirs" | "start_cmd" | "stop_cmd" => {
                cx.warn(c, "not carried over: no keepalived equivalent")
            }
            _ => cx.warn(c, "unknown lvs.cf keyword, not carried over"),
        }
    }
    let checker = checker(
        vs,
        udp,
        get("send"),
        get("expect"),
        get("send_program"),
        get("use_regex"),
        cx,
    );
    let mut reals = Vec::new();
    for s in children
        .iter()
        .filter(|c| c.key == "server" && c.children.is_some())
    {
        if let Some(r) = real(s, port, kind_nat, cx) {
            reals.push(r);
        }
    }
    Some(Virtual {
        name: vs.value.clone(),
        line: vs.loc.line,
        addr,
        port,
        udp,
        sched,
        persistent,
        pmask,
        sorry,
        timeout,
        checker,
        reals,
    })
}

fn real(s: &Stmt, vs_port: u16, kind_nat: bool, cx: &mut Ctx) -> Option<Real> {
    let children = s.children.as_deref().unwrap_or_default();
    let get = |k: &str| children.iter().rev().find(|c| c.key == k);
    for c in children {
        if !matches!(c.key.as_str(), "address" | "active" | "weight" | "port") {
            cx.warn(c, "unknown lvs.cf keyword, not carried over");
        }
    }
    // Piranha's default is inactive (the structure is zeroed when parsed).
    if get("active").and_then(|a| cx.bool(a)) != Some(true) {
        cx.warn(
            s,
            format!(
                "real server '{}' is inactive (no 'active = 1'): not carried over",
                s.value
            ),
        );
        return None;
    }
    let Some(a) = get("address") else {
        cx.error(s, format!("real server '{}' has no address", s.value));
        return None;
    };
    let addr = cx.ip(a)?;
    let weight = get("weight").and_then(|w| cx.num(w)).unwrap_or(1);
    let port = match get("port") {
        Some(p) => match p.value.parse::<u16>() {
            Ok(n) => {
                if n != vs_port && !kind_nat {
                    cx.warn(
                        p,
                        "a real port other than the virtual port needs network = nat (DR and TUN keep the port)",
                    );
                }
                n
            }
            Err(_) => {
                cx.error(p, format!("'{}' is not a port number", p.value));
                vs_port
            }
        },
        None => vs_port,
    };
    Some(Real {
        name: s.value.clone(),
        line: s.loc.line,
        addr,
        port,
        weight,
    })
}

/// Converts lvs.cf `text` (read from `path`, for the diagnostics) into
/// keepalived.conf for `router`, with VRRP virtual router id `vrid`.
pub fn import(text: &str, path: &Path, router: Router, vrid: u8) -> Import {
    let file = Arc::new(path.to_path_buf());
    let mut diags = Vec::new();
    let stmts = parse(text, &file, &mut diags);
    let mut cx = Ctx { diags };
    let g = globals(&stmts, &mut cx);
    let mut vips: Vec<(Stmt, Vip)> = Vec::new();
    let mut services = Vec::new();
    for s in &stmts {
        match (s.key.as_str(), &s.children) {
            ("virtual", Some(_)) => {
                if let Some(v) = virtual_server(s, g.kind == "NAT", &mut vips, &mut cx) {
                    services.push(v);
                }
            }
            ("failover", Some(_)) => cx.warn(
                s,
                format!(
                    "failover service '{}' is not carried over (only LVS virtual servers are)",
                    s.value
                ),
            ),
            (_, Some(_)) => cx.warn(s, "unknown lvs.cf block, not carried over"),
            _ => {}
        }
    }
    if let Some((s, ip, dev, label)) = &g.nat_router {
        if g.kind == "NAT" {
            let prefix = g.nat_prefix.unwrap_or_else(|| {
                cx.warn(s, "no nat_nmask: the router address is added as /32");
                32
            });
            vips.push((
                s.clone(),
                Vip {
                    addr: *ip,
                    prefix,
                    dev: dev.clone(),
                    label: label.clone(),
                },
            ));
        } else {
            cx.warn(s, "not carried over: only network = nat routes the reals' replies through the director");
        }
    }
    // One entry per address: the first wins.
    let mut seen: Vec<Vip> = Vec::new();
    for (s, v) in &vips {
        match seen.iter().find(|o| o.addr == v.addr) {
            Some(o) if o != v => cx.warn(
                s,
                format!(
                    "{} is already a virtual address as {}; this one is ignored",
                    v.addr,
                    o.render()
                ),
            ),
            Some(_) => {}
            None => seen.push(v.clone()),
        }
    }
    let (me, peer) = match router {
        Router::Primary => (g.primary, g.backup),
        Router::Backup => (g.backup, g.primary),
    };
    let start = Loc {
        file: file.clone(),
        line: 1,
        col: 1,
    };
    let backup_stmt = stmts.iter().find(|s| s.key == "backup_active");
    if !g.backup_active {
        match (router, backup_stmt) {
            (Router::Backup, Some(b)) => cx.error(
                b,
                "--router backup: this lvs.cf has no active backup router",
            ),
            (Router::Backup, None) => cx.diags.push(Diag::error(
                &start,
                None,
                "--router backup: this lvs.cf has no active backup router (no 'backup_active = 1')",
            )),
            (Router::Primary, b) => {
                let d = "no backup router: the vrrp_instance holds the addresses on this router alone (MASTER after 3 × advert_int)";
                match b {
                    Some(b) => cx.warn(b, d),
                    None => cx.diags.push(Diag::warning(&start, None, d)),
                }
            }
        }
    } else if me.is_none() || peer.is_none() {
        let d = "primary or backup address missing: no unicast peers, VRRP advertisements are multicast";
        match backup_stmt {
            Some(b) => cx.warn(b, d),
            None => cx.diags.push(Diag::warning(&start, None, d)),
        }
    }
    if seen.is_empty() && !cx.diags.iter().any(|d| d.severity == Severity::Error) {
        cx.diags.push(Diag::error(
            &start,
            None,
            "no active virtual server: nothing to balance, no address for VRRP to hold",
        ));
    }
    if cx.diags.iter().any(|d| d.severity == Severity::Error) || seen.is_empty() {
        cx.diags.sort_by_key(|d| (d.loc.line, d.loc.col));
        return Import {
            text: String::new(),
            diags: cx.diags,
        };
    }
    if let Some(first) = stmts
        .iter()
        .find(|s| s.key == "virtual" && s.children.is_some())
    {
        cx.warn(
            first,
            "lvs.cf has no check interval: delay_loop is left at keepalived's default (60 s); set it to the interval wanted",
        );
    }
    let iface = seen[0].dev.clone();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `lb import-lvs-cf` from {}{} for the {} router.",
        path.display(),
        g.serial_no
            .as_deref()
            .map(|s| format!(" (serial_no {s})"))
            .unwrap_or_default(),
        match router {
            Router::Primary => "primary",
            Router::Backup => "backup",
        }
    );
    let scripts = g.active_cmd.is_some()
        || g.inactive_cmd.is_some()
        || services
            .iter()
            .any(|v| matches!(v.checker, Checker::Misc(_)));
    if scripts {
        out.push_str(
            "\nglobal_defs {\n    # Piranha ran its programs as root; keepalived asks for this explicitly.\n    enable_script_security\n    script_user root\n}\n",
        );
    }
    let _ = writeln!(out, "\nvrrp_instance lvs {{");
    let (state, prio) = match router {
        Router::Primary => ("MASTER", 150),
        Router::Backup => ("BACKUP", 100),
    };
    let _ = writeln!(out, "    state {state}");
    let _ = writeln!(out, "    interface {iface}");
    let _ = writeln!(out, "    virtual_router_id {vrid}");
    let _ = writeln!(out, "    priority {prio}");
    let _ = writeln!(out, "    advert_int {}", g.keepalive);
    if g.backup_active {
        if let (Some(me), Some(peer)) = (me, peer) {
            let _ = writeln!(out, "    unicast_src_ip {me}");
            let _ = writeln!(out, "    unicast_peer {{\n        {peer}\n    }}");
        }
    }
    let _ = writeln!(out, "    virtual_ipaddress {{");
    for v in &seen {
        let _ = writeln!(out, "        {}", v.render());
    }
    let _ = writeln!(out, "    }}");
    if g.monitor_links.is_some() {
        let others: BTreeSet<&str> = seen
            .iter()
            .map(|v| v.dev.as_str())
            .filter(|d| *d != iface)
            .collect();
        if !others.is_empty() {
            let _ = writeln!(out, "    track_interface {{");
            for d in others {
                let _ = writeln!(out, "        {d}");
            }
            let _ = writeln!(out, "    }}");
        }
    }
    if let Some(c) = &g.active_cmd {
        let _ = writeln!(out, "    notify_master {}", quoted(c));
    }
    if let Some(c) = &g.inactive_cmd {
        let _ = writeln!(out, "    notify_backup {}", quoted(c));
    }
    let _ = writeln!(out, "}}");
    for v in &services {
        render_virtual(&mut out, v, g.kind);
    }
    cx.diags.sort_by_key(|d| (d.loc.line, d.loc.col));
    Import {
        text: out,
        diags: cx.diags,
    }
}

fn render_virtual(out: &mut String, v: &Virtual, kind: &str) {
    let _ = writeln!(out, "\n# virtual {} (line {})", v.name, v.line);
    // A firewall mark cannot select a service in XDP: the address and port
    // stand for it (warned where the mark is read).
    let _ = writeln!(out, "virtual_server {} {} {{", v.addr, v.port);
    let _ = writeln!(out, "    lb_algo {}", v.sched);
    let _ = writeln!(out, "    lb_kind {kind}");
    let _ = writeln!(out, "    protocol {}", if v.udp { "UDP" } else { "TCP" });
    if let Some(p) = v.persistent {
        let _ = writeln!(out, "    persistence_timeout {p}");
    }
    if let Some(m) = v.pmask {
        let _ = writeln!(out, "    persistence_granularity {m}");
    }
    if let Some(s) = v.sorry {
        let _ = writeln!(out, "    sorry_server {s} {}", v.port);
    }
    for r in &v.reals {
        let _ = writeln!(out, "    # server {} (line {})", r.name, r.line);
        let _ = writeln!(out, "    real_server {} {} {{", r.addr, r.port);
        let _ = writeln!(out, "        weight {}", r.weight);
        render_checker(out, &v.checker, r, v.timeout);
        let _ = writeln!(out, "    }}");
    }
    let _ = writeln!(out, "}}");
}

fn render_checker(out: &mut String, c: &Checker, r: &Real, timeout: u32) {
    match c {
        Checker::Tcp => {
            let _ = writeln!(out, "        TCP_CHECK {{");
        }
        Checker::Http {
            path,
            host,
            http11,
            status,
        } => {
            let _ = writeln!(out, "        HTTP_GET {{");
            let _ = writeln!(out, "            url {{");
            let _ = writeln!(out, "                path {}", quoted(path));
            if status.0 == status.1 {
                let _ = writeln!(out, "                status_code {}", status.0);
            } else {
                let _ = writeln!(out, "                status_code {}-{}", status.0, status.1);
            }
            let _ = writeln!(out, "            }}");
            if let Some(h) = host {
                let _ = writeln!(out, "            virtualhost {}", quoted(h));
            }
            if *http11 {
                let _ = writeln!(out, "            http_protocol 1.1");
            }
        }
        Checker::Misc(program) => {
            let _ = writeln!(out, "        MISC_CHECK {{");
            let cmd = program.replace("%h", &r.addr.to_string());
            let _ = writeln!(out, "            misc_path {}", quoted(&cmd));
            let _ = writeln!(out, "            misc_timeout {timeout}");
        }
        Checker::Udp {
            payload,
            require_reply,
        } => {
            let _ = writeln!(out, "        UDP_CHECK {{");
            if !payload.is_empty() {
                let _ = writeln!(
                    out,
                    "            payload {}",
                    crate::health::probe::hex(payload)
                );
            }
            if *require_reply {
                let _ = writeln!(out, "            require_reply");
            }
        }
    }
    if !matches!(c, Checker::Misc(_)) {
        let _ = writeln!(out, "            connect_timeout {timeout}");
    }
    let _ = writeln!(out, "        }}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks() {
        assert_eq!(prefix_len("255.255.255.0"), Some(24));
        assert_eq!(prefix_len("255.255.255.255"), Some(32));
        assert_eq!(prefix_len("0.0.0.0"), Some(0));
        assert_eq!(prefix_len("255.0.255.0"), None);
        assert_eq!(prefix_len("eth0"), None);
    }

    #[test]
    fn quoted_words_and_escapes() {
        assert_eq!(
            words(r#"send = "GET / HTTP/1.0\r\n\r\n""#).unwrap(),
            vec![
                (1, "send".to_string()),
                (6, "=".to_string()),
                (8, r"GET / HTTP/1.0\r\n\r\n".to_string())
            ]
        );
        assert_eq!(words("expect = 'HTTP").unwrap_err(), 10);
        assert_eq!(unescape(r"a\r\n\tb\\c\q"), "a\r\n\tb\\cq");
    }

    #[test]
    fn http_tests_map_to_http_get() {
        let h = |send: &str, expect: &str| http_checker(send, expect);
        assert_eq!(
            h("GET / HTTP/1.0\r\n\r\n", "HTTP"),
            Some(Checker::Http {
                path: "/".into(),
                host: None,
                http11: false,
                status: (100, 599)
            })
        );
        assert_eq!(
            h(
                "GET /health HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
                "HTTP/1.1 200 OK"
            ),
            Some(Checker::Http {
                path: "/health".into(),
                host: Some("www.example.com".into()),
                http11: true,
                status: (200, 200)
            })
        );
        assert_eq!(h("GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 2"), None);
        assert_eq!(h("GET / HTTP/1.0\r\n\r\n", "220"), None);
        assert_eq!(h("HEAD / HTTP/1.0\r\n\r\n", "HTTP"), None);
        assert_eq!(h("quit\r\n", "220"), None);
    }
}
