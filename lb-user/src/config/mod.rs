//! keepalived.conf: the whole grammar is parsed (see [`syntax`]); this module
//! gives meaning to `virtual_server` / `real_server` and keeps every other
//! block for the features that will implement it.
//!
//! Every problem is collected and reported at once with its location. Errors
//! make the file unusable (the running configuration is kept); warnings name
//! unknown keywords and keywords whose semantics are not implemented yet.

pub mod check;
pub mod syntax;
mod value;
pub mod vrrp;

use std::{collections::BTreeMap, fmt, net::IpAddr, path::Path};

/// Where callers found it before it moved to [`crate::util`].
pub use crate::util::fmt_sock;
pub use syntax::{Diag, Loc, Node, Severity};
use value::{choice, command, errors, flag, parse_addr, parse_num, unknown};

/// Transport protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => lb_common::PROTO_TCP,
            Proto::Udp => lb_common::PROTO_UDP,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// Scheduler (`lb_algo`), named and behaving as ipvs's
/// (net/netfilter/ipvs/ip_vs_NAME.c).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sched {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Sed,
    Nq,
    Sh,
    Mh,
    /// Destination hashing: ipvs's 256-bucket table over the destination address.
    Dh,
    /// Weighted failover: the available real with the highest weight.
    Fo,
    /// Overflow: the highest weight among reals with at most `weight` active connections.
    Ovf,
    /// Power of two choices: two weighted random draws, the less loaded taken.
    Twos,
}

impl Sched {
    pub const ALL: [(&'static str, Sched); 12] = [
        ("rr", Sched::Rr),
        ("wrr", Sched::Wrr),
        ("lc", Sched::Lc),
        ("wlc", Sched::Wlc),
        ("sed", Sched::Sed),
        ("nq", Sched::Nq),
        ("sh", Sched::Sh),
        ("mh", Sched::Mh),
        ("dh", Sched::Dh),
        ("fo", Sched::Fo),
        ("ovf", Sched::Ovf),
        ("twos", Sched::Twos),
    ];
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(n, _)| *n)
            .expect("every scheduler is listed")
    }
    pub fn id(self) -> u32 {
        use lb_common::*;
        match self {
            Sched::Rr => SCHED_RR,
            Sched::Wrr => SCHED_WRR,
            Sched::Lc => SCHED_LC,
            Sched::Wlc => SCHED_WLC,
            Sched::Sed => SCHED_SED,
            Sched::Nq => SCHED_NQ,
            Sched::Sh => SCHED_SH,
            Sched::Mh => SCHED_MH,
            Sched::Dh => SCHED_DH,
            Sched::Fo => SCHED_FO,
            Sched::Ovf => SCHED_OVF,
            Sched::Twos => SCHED_TWOS,
        }
    }
    pub fn from_id(id: u32) -> Option<Sched> {
        Self::ALL.iter().map(|(_, s)| *s).find(|s| s.id() == id)
    }
    /// Schedulers whose data plane scans the member list per new flow
    /// (at most `MAX_LC_MEMBERS` reals).
    pub fn scans_members(self) -> bool {
        matches!(
            self,
            Sched::Lc
                | Sched::Wlc
                | Sched::Sed
                | Sched::Nq
                | Sched::Fo
                | Sched::Ovf
                | Sched::Twos
        )
    }
}

/// Forwarding method (`lb_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fwd {
    Dr,
    Nat,
    Tun,
}

impl Fwd {
    pub fn id(self) -> u32 {
        match self {
            Fwd::Dr => lb_common::FWD_DR,
            Fwd::Nat => lb_common::FWD_NAT,
            Fwd::Tun => lb_common::FWD_TUN,
        }
    }
}

/// A virtual service's identity: (VIP, port, protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceAddr {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.proto.name(),
            fmt_sock(self.addr, self.port)
        )
    }
}

/// A real server of a service: (service, address, port).
pub type RealKey = (ServiceAddr, IpAddr, u16);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealServer {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
    /// Health checkers; the real is up when all of them pass.
    pub checks: Vec<check::Check>,
    /// Timing defaults for its checkers.
    pub timing: check::Timing,
    /// Keep a failed real with weight 0 instead of removing it.
    pub inhibit_on_failure: Option<bool>,
    /// Programs run when the real goes up / down (words, no shell).
    pub notify_up: Option<Vec<String>>,
    pub notify_down: Option<Vec<String>>,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub struct VirtualServer {
    pub key: ServiceAddr,
    pub sched: Sched,
    pub fwd: Fwd,
    /// sh / mh hash the source port as well (`sh-port`, `mh-port`, `flag-2`).
    pub hash_port: bool,
    /// Seconds; `None` when not persistent.
    pub persistence_timeout: Option<u32>,
    pub delay_loop: u32,
    /// Timing defaults for the checkers of its reals.
    pub timing: check::Timing,
    /// Reals start down until their checkers pass.
    pub alpha: bool,
    /// Default of the reals' `inhibit_on_failure`.
    pub inhibit_on_failure: bool,
    /// Used alone when the quorum is lost (e.g. every real down).
    pub sorry_server: Option<(IpAddr, u16)>,
    /// Sum of the weights of the reals up needed (default 1), and the
    /// hysteresis around it.
    pub quorum: u32,
    pub hysteresis: u32,
    /// Programs run when the quorum is gained / lost (words, no shell).
    pub quorum_up: Option<Vec<String>>,
    pub quorum_down: Option<Vec<String>>,
    /// On shutdown, run quorum_down and the reals' notify_down.
    pub omega: bool,
    pub reals: Vec<RealServer>,
    pub loc: Loc,
}

/// The usable result of a configuration file.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub services: Vec<VirtualServer>,
    /// `global_defs`, `vrrp_script`, `vrrp_instance`, `vrrp_sync_group`.
    pub vrrp: vrrp::Vrrp,
    /// Every top-level statement, kept for the features that use the other blocks.
    pub nodes: Vec<Node>,
}

/// A parsed file with all its diagnostics.
pub struct Loaded {
    pub config: Config,
    pub diags: Vec<Diag>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }
    pub fn errors(&self) -> impl Iterator<Item = &Diag> {
        self.diags.iter().filter(|d| d.severity == Severity::Error)
    }
}

/// Top-level blocks of keepalived whose semantics belong to later features.
const TOP_LATER: &[&str] = &[
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "virtual_server_group",
    "linkbeat_interfaces",
    "garp_group",
    "track_file",
    "vrrp_track_file",
    "track_process",
    "bfd_instance",
    "net_namespace",
    "instance",
];

/// `virtual_server` keywords keepalived knows whose semantics are not implemented yet.
const VS_LATER: &[&str] = &[
    "nat_mask",
    "persistence_granularity",
    "persistence_engine",
    "virtualhost",
    "sorry_server_inhibit",
    "sorry_server_lvs_method",
    "ha_suspend",
    "ops",
    "lvs_method",
    "smtp_alert",
    "virtualhost",
    "ip_family",
];

/// Health checkers and other `real_server` keywords for later features.
const RS_LATER: &[&str] = &[
    "uthreshold",
    "lthreshold",
    "smtp_alert",
    "virtualhost",
    "lb_kind",
    "lvs_method",
];

fn later(node: &Node, what: &str) -> Diag {
    Diag::warning(
        &node.loc,
        Some(&node.keyword),
        format!("{what} not implemented yet; parsed and ignored"),
    )
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Loaded {
    let mut diags = Vec::new();
    let nodes = syntax::parse_file(path, &mut diags);
    finish(nodes, diags)
}

/// Reads and checks configuration text as if it were file `path`.
pub fn load_str(text: &str, path: &Path) -> Loaded {
    let mut diags = Vec::new();
    let nodes = syntax::parse_str(text, path, &mut diags);
    finish(nodes, diags)
}

fn finish(nodes: Vec<Node>, mut diags: Vec<Diag>) -> Loaded {
    let mut services: Vec<VirtualServer> = Vec::new();
    let mut index: BTreeMap<ServiceAddr, usize> = BTreeMap::new();
    let mut vr = vrrp::Vrrp::default();
    // global_defs first: it sets the instances' defaults wherever it is.
    for n in nodes.iter().filter(|n| n.keyword == "global_defs") {
        vrrp::globals(n, &mut vr.globals, &mut diags);
    }
    for n in &nodes {
        match n.keyword.as_str() {
            "global_defs" => {}
            "vrrp_script" => {
                if let Some(s) = vrrp::script(n, &mut diags) {
                    if vr.scripts.contains_key(&s.name) {
                        diags.push(Diag::error(
                            &n.loc,
                            Some("vrrp_script"),
                            format!("'{}' is defined twice", s.name),
                        ));
                    }
                    vr.scripts.insert(s.name.clone(), s);
                }
            }
            "vrrp_instance" => {
                if let Some(i) = vrrp::instance(n, &vr.globals, &mut diags) {
                    if vr.instances.iter().any(|o| o.name == i.name) {
                        diags.push(Diag::error(
                            &n.loc,
                            Some("vrrp_instance"),
                            format!("'{}' is defined twice", i.name),
                        ));
                    }
                    vr.instances.push(i);
                }
            }
            "vrrp_sync_group" => vr.groups.extend(vrrp::sync_group(n, &mut diags)),
            "virtual_server" => {
                if let Some(vs) = virtual_server(n, &mut diags) {
                    if let Some(&i) = index.get(&vs.key) {
                        // Two blocks for one service (seen in operators' files):
                        // ipvs ends up with the reals of both.
                        let first = &mut services[i];
                        diags.push(Diag::warning(
                            &vs.loc,
                            Some("virtual_server"),
                            format!(
                                "{} is also defined at {}; real servers merged, settings of the first block kept",
                                vs.key, first.loc
                            ),
                        ));
                        for r in vs.reals {
                            add_real(first, r, &mut diags);
                        }
                    } else {
                        index.insert(vs.key, services.len());
                        services.push(vs);
                    }
                }
            }
            k if TOP_LATER.contains(&k) => diags.push(later(n, "this block")),
            _ => diags.push(Diag::warning(
                &n.loc,
                Some(&n.keyword),
                "unknown keyword; ignored",
            )),
        }
    }
    vrrp::finish(&mut vr, &mut diags);
    capacity(&services, &mut diags);
    Loaded {
        config: Config {
            services,
            vrrp: vr,
            nodes,
        },
        diags,
    }
}

/// What the data plane's maps cannot hold is an error of the file, located
/// at the first service past the limit (`lb_common::MAX_SERVICES` services,
/// `MAX_MH_TABLES` using mh, `MAX_REALS` reals), so that check-config and a
/// reload refuse what `lb run` could never apply.
fn capacity(services: &[VirtualServer], diags: &mut Vec<Diag>) {
    use lb_common::{MAX_MH_TABLES, MAX_REALS, MAX_SERVICES};
    if let Some(vs) = services.get(MAX_SERVICES as usize) {
        diags.push(Diag::error(
            &vs.loc,
            Some("virtual_server"),
            format!(
                "{} virtual servers; the data plane holds {MAX_SERVICES} (this is number {})",
                services.len(),
                MAX_SERVICES + 1
            ),
        ));
    }
    if let Some(vs) = services
        .iter()
        .filter(|v| v.sched == Sched::Mh)
        .nth(MAX_MH_TABLES as usize)
    {
        diags.push(Diag::error(
            &vs.loc,
            Some("lb_algo"),
            format!("more than {MAX_MH_TABLES} virtual servers use mh (one Maglev table each)"),
        ));
    }
    let mut reals = 0usize;
    for vs in services {
        reals += vs.reals.len() + usize::from(vs.sorry_server.is_some());
        if reals > MAX_REALS as usize {
            diags.push(Diag::error(
                &vs.loc,
                Some("real_server"),
                format!("more than {MAX_REALS} real servers in all (sorry servers included); the data plane holds {MAX_REALS}"),
            ));
            break;
        }
    }
}

fn add_real(vs: &mut VirtualServer, r: RealServer, diags: &mut Vec<Diag>) {
    if let Some(prev) = vs
        .reals
        .iter()
        .find(|p| p.addr == r.addr && p.port == r.port)
    {
        diags.push(Diag::warning(
            &r.loc,
            Some("real_server"),
            format!(
                "{} already defined at {}; ignored",
                fmt_sock(r.addr, r.port),
                prev.loc
            ),
        ));
        return;
    }
    if r.addr.is_ipv4() != vs.key.addr.is_ipv4() {
        diags.push(Diag::error(
            &r.loc,
            Some("real_server"),
            "address family differs from the virtual server's (forwarding stays within one family)",
        ));
        return;
    }
    if r.port != vs.key.port && vs.key.port != 0 && vs.fwd != Fwd::Nat {
        diags.push(Diag::warning(
            &r.loc,
            Some("real_server"),
            format!(
                "{} cannot change ports (only NAT can): packets reach the real on port {}",
                if vs.fwd == Fwd::Dr {
                    "direct routing"
                } else {
                    "tunnelling"
                },
                vs.key.port
            ),
        ));
    }
    if vs.sched.scans_members() && vs.reals.len() >= lb_common::MAX_LC_MEMBERS as usize {
        diags.push(Diag::error(
            &r.loc,
            Some("real_server"),
            format!(
                "{} scans at most {} real servers per new connection",
                vs.sched.name(),
                lb_common::MAX_LC_MEMBERS
            ),
        ));
        return;
    }
    vs.reals.push(r);
}

fn virtual_server(n: &Node, diags: &mut Vec<Diag>) -> Option<VirtualServer> {
    let errors_before = errors(diags);
    match n.args.first().map(String::as_str) {
        Some("fwmark") | Some("group") => {
            diags.push(later(n, &format!("virtual_server {}", n.args[0])));
            return None;
        }
        _ => {}
    }
    let addr = parse_addr(n, 0, diags);
    let port: Option<u16> = parse_num(n, 1, "port", diags);
    if n.children.is_none() {
        diags.push(Diag::error(
            &n.loc,
            Some("virtual_server"),
            "missing '{ … }' block",
        ));
    }
    let mut proto = Proto::Tcp;
    let mut sched = Sched::Wrr; // keepalived's default lb_algo
    let mut fwd = Fwd::Nat; // keepalived's default lb_kind
    let mut hash_port = false;
    let mut persistence_timeout = None;
    let mut delay_loop = 60;
    let mut timing = check::Timing::default();
    let mut alpha = false;
    let mut inhibit_on_failure = false;
    let mut sorry_server = None;
    let mut quorum = 1;
    let mut hysteresis = 0;
    let mut quorum_up = None;
    let mut quorum_down = None;
    let mut omega = false;
    let mut reals = Vec::new();
    for c in n.children.iter().flatten() {
        match c.keyword.as_str() {
            "protocol" => {
                let known = [("TCP", Proto::Tcp), ("UDP", Proto::Udp)];
                if let Some(p) = choice(c, "protocol", &known, &["SCTP"], diags) {
                    proto = p;
                }
            }
            "lb_algo" | "lvs_sched" => {
                // lblc / lblcr: the data plane version did not fit the
                // verifier's budget yet (see README, Limits).
                let later = ["lblc", "lblcr"];
                if let Some(v) = choice(c, "scheduler", &Sched::ALL, &later, diags) {
                    sched = v;
                }
            }
            "lb_kind" | "lvs_method" => {
                let known = [("DR", Fwd::Dr), ("NAT", Fwd::Nat), ("TUN", Fwd::Tun)];
                if let Some(v) = choice(c, "forwarding method", &known, &[], diags) {
                    fwd = v;
                }
            }
            // keepalived's scheduler flags: flag-2 is sh-port / mh-port,
            // flag-1 sh-fallback / mh-fallback (fallback is always on here).
            "sh-port" | "mh-port" | "flag-2" => hash_port = true,
            "sh-fallback" | "mh-fallback" | "flag-1" => {}
            "flag-3" => diags.push(later(c, "keyword")),
            "lb_algo_flags" => {
                for a in &c.args {
                    match a.as_str() {
                        "sh-port" | "mh-port" | "flag-2" => hash_port = true,
                        "sh-fallback" | "mh-fallback" | "flag-1" => {}
                        other => diags.push(Diag::warning(
                            &c.loc,
                            Some("lb_algo_flags"),
                            format!("unknown scheduler flag '{other}'; ignored"),
                        )),
                    }
                }
            }
            "persistence_timeout" => {
                // keepalived: a bare keyword means 360 s; 0 means not persistent.
                let t = if c.args.is_empty() {
                    Some(360)
                } else {
                    parse_num::<u32>(c, 0, "timeout", diags)
                };
                persistence_timeout = t.filter(|&t| t > 0);
            }
            "delay_loop" => {
                if let Some(d) = parse_num::<f64>(c, 0, "delay", diags) {
                    delay_loop = d.max(1.0) as u32;
                    timing.delay_loop = Some(std::time::Duration::from_secs_f64(d.max(0.01)));
                }
            }
            "alpha" => alpha = true,
            "omega" => omega = true,
            "sorry_server" => {
                let a = parse_addr(c, 0, diags);
                let p: Option<u16> = parse_num(c, 1, "port", diags);
                if let (Some(a), Some(p)) = (a, p) {
                    sorry_server = Some((a, p));
                }
            }
            "quorum" => {
                if let Some(q) = parse_num(c, 0, "weight sum", diags) {
                    quorum = q;
                }
            }
            "hysteresis" => {
                if let Some(h) = parse_num(c, 0, "weight", diags) {
                    hysteresis = h;
                }
            }
            "quorum_up" => quorum_up = command(c, diags),
            "quorum_down" => quorum_down = command(c, diags),
            "inhibit_on_failure" => inhibit_on_failure = flag(c),
            k if timing_keyword(k) => {
                timing.take(c, diags);
            }
            "real_server" => {
                if let Some(r) = real_server(c, diags) {
                    reals.push(r);
                }
            }
            k if VS_LATER.contains(&k) => diags.push(later(c, "keyword")),
            _ => diags.push(unknown(c, "virtual_server")),
        }
    }
    let errors_after = errors(diags);
    let (addr, port) = (addr?, port?);
    if errors_after > errors_before {
        return None;
    }
    let mut vs = VirtualServer {
        key: ServiceAddr { addr, port, proto },
        sched,
        fwd,
        hash_port,
        persistence_timeout,
        delay_loop,
        timing,
        alpha,
        inhibit_on_failure,
        sorry_server,
        quorum,
        hysteresis,
        quorum_up,
        quorum_down,
        omega,
        reals: Vec::new(),
        loc: n.loc.clone(),
    };
    for r in reals {
        add_real(&mut vs, r, diags);
    }
    Some(vs)
}

fn timing_keyword(k: &str) -> bool {
    matches!(
        k,
        "connect_timeout" | "retry" | "nb_get_retry" | "delay_before_retry" | "warmup"
    )
}

fn real_server(n: &Node, diags: &mut Vec<Diag>) -> Option<RealServer> {
    let addr = parse_addr(n, 0, diags);
    let port: Option<u16> = parse_num(n, 1, "port", diags);
    let mut weight = 1;
    let mut checks = Vec::new();
    let mut timing = check::Timing::default();
    let mut inhibit_on_failure = None;
    let mut notify_up = None;
    let mut notify_down = None;
    for c in n.children.iter().flatten() {
        match c.keyword.as_str() {
            k if check::is_checker(k) => {
                if let Some(ch) = check::parse(c, diags) {
                    checks.push(ch);
                }
            }
            "inhibit_on_failure" => inhibit_on_failure = Some(flag(c)),
            "notify_up" => notify_up = command(c, diags),
            "notify_down" => notify_down = command(c, diags),
            k if timing_keyword(k) || k == "delay_loop" => {
                timing.take(c, diags);
            }
            "weight" => {
                if let Some(w) = parse_num::<u32>(c, 0, "weight", diags) {
                    if w > 65535 {
                        diags.push(Diag::error(
                            &c.loc,
                            Some("weight"),
                            "weight must be 0..65535",
                        ));
                    } else {
                        weight = w;
                    }
                }
            }
            k if RS_LATER.contains(&k) => diags.push(later(c, "keyword")),
            _ => diags.push(unknown(c, "real_server")),
        }
    }
    Some(RealServer {
        addr: addr?,
        port: port?,
        weight,
        checks,
        timing,
        inhibit_on_failure,
        notify_up,
        notify_down,
        loc: n.loc.clone(),
    })
}
