//! keepalived.conf: the whole grammar is parsed (see [`syntax`]); this module
//! gives meaning to `virtual_server` / `real_server` and keeps every other
//! block for the features that will implement it.
//!
//! Every problem is collected and reported at once with its location. Errors
//! make the file unusable (the running configuration is kept); warnings name
//! unknown keywords and keywords whose semantics are not implemented yet.

pub mod bgp;
pub mod check;
pub mod dump;
pub mod export;
pub mod group;
pub mod reader;
pub mod route;
pub mod script;
pub mod source;
pub mod syntax;
pub mod track;
mod value;
pub mod vrrp;

use std::{collections::BTreeMap, fmt, net::IpAddr, path::Path};

/// Where callers found it before it moved to [`crate::util`].
pub use crate::util::fmt_sock;
use crate::util::process::Program;
pub use syntax::{Diag, Loc, Node, Severity};
pub use value::secs_text;
use value::{
    choice, errors, flag, notify_program, parse_addr, parse_num, uint, unknown, Shapes, ANY,
};

/// Transport protocol of a virtual service.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The protocol named `TCP` / `UDP` (as [`Proto::name`] writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            _ => None,
        }
    }
    /// The protocol of an IP protocol number (`None`: neither TCP nor UDP).
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            lb_common::PROTO_TCP => Some(Proto::Tcp),
            lb_common::PROTO_UDP => Some(Proto::Udp),
            _ => None,
        }
    }
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// Locality-based least-connection: a real per destination address.
    Lblc,
    /// lblc with replication: a set of reals per destination address.
    Lblcr,
}

impl Sched {
    pub const ALL: [(&'static str, Sched); 14] = [
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
        ("lblc", Sched::Lblc),
        ("lblcr", Sched::Lblcr),
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
            Sched::Lblc => SCHED_LBLC,
            Sched::Lblcr => SCHED_LBLCR,
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
                | Sched::Lblc
                | Sched::Lblcr
        )
    }
}

/// Forwarding method (`lb_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Fwd {
    Dr,
    Nat,
    Tun,
}

impl Fwd {
    /// ipvsadm's name in `-L` output: `Route`, `Masq`, `Tunnel`.
    pub fn ipvs_name(self) -> &'static str {
        match self {
            Fwd::Dr => "Route",
            Fwd::Nat => "Masq",
            Fwd::Tun => "Tunnel",
        }
    }

    /// keepalived's `lb_kind` word: `DR`, `NAT`, `TUN`.
    pub fn keepalived_name(self) -> &'static str {
        match self {
            Fwd::Dr => "DR",
            Fwd::Nat => "NAT",
            Fwd::Tun => "TUN",
        }
    }

    /// `lb_common::FWD_*`.
    pub fn id(self) -> u32 {
        match self {
            Fwd::Dr => lb_common::FWD_DR,
            Fwd::Nat => lb_common::FWD_NAT,
            Fwd::Tun => lb_common::FWD_TUN,
        }
    }
}

/// A virtual service's identity: (VIP, port, protocol).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
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
    /// Forwarding method of this real when it differs from the virtual
    /// server's (ipvs keeps one per destination: `ipvsadm -a … -g|-m|-i`);
    /// `None`: the virtual server's `lb_kind`. See [`RealServer::fwd_in`].
    pub fwd: Option<Fwd>,
    /// ipvs's upper connection threshold (`ipvsadm -x`, keepalived
    /// `uthreshold`): with active + inactive connections at or above it the
    /// real gets no new connections. 0: no limit.
    pub u_threshold: u32,
    /// ipvs's lower connection threshold (`ipvsadm -y`, keepalived
    /// `lthreshold`): an overloaded real takes new connections again once
    /// its connections fall below it (0: below 3/4 of `u_threshold`, as ipvs).
    pub l_threshold: u32,
    /// Health checkers; the real is up when all of them pass.
    pub checks: Vec<check::Check>,
    /// Timing defaults for its checkers.
    pub timing: check::Timing,
    /// Keep a failed real with weight 0 instead of removing it.
    pub inhibit_on_failure: Option<bool>,
    /// Programs run when the real goes up / down (words, no shell).
    pub notify_up: Option<Program>,
    pub notify_down: Option<Program>,
    /// This entry is the virtual server's `sorry_server`, put in place of
    /// the reals by the quorum merge (`health::quorum`). It is never checked:
    /// keepalived adds the sorry server without a checker, even when the
    /// same address and port is also a `real_server` whose checks failed.
    pub sorry: bool,
    pub loc: Loc,
}

impl RealServer {
    /// The forwarding method this real is reached with in `vs`.
    pub fn fwd_in(&self, vs: &VirtualServer) -> Fwd {
        self.fwd.unwrap_or(vs.fwd)
    }
}

#[derive(Clone, Debug)]
pub struct VirtualServer {
    pub key: ServiceAddr,
    pub sched: Sched,
    pub fwd: Fwd,
    /// sh / mh hash the source port as well (`sh-port`, `mh-port`, `flag-2`).
    pub hash_port: bool,
    /// `sh-fallback`, `mh-fallback`, `flag-1` given. lb's sh / mh always
    /// fall back to another real when the hashed one is unavailable; the
    /// flag is kept for listings (`ipvsadm -S` / `-L` show it).
    pub hash_fallback: bool,
    /// Seconds; `None` when not persistent.
    pub persistence_timeout: Option<u32>,
    /// Persistence granularity as a prefix length: clients whose addresses
    /// share the first `n` bits share one persistence template (ipvsadm
    /// `-M 255.255.255.0` = 24, keepalived `persistence_granularity`).
    /// `None`: the whole address (32 / 128), ipvs's default.
    pub persistence_prefix: Option<u8>,
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
    pub quorum_up: Option<Program>,
    pub quorum_down: Option<Program>,
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
    /// `lb_bgp`: announcing the VIPs through a BGP daemon (lb's own block).
    pub bgp: Option<bgp::Bgp>,
}

/// A parsed file with all its diagnostics.
pub struct Loaded {
    pub config: Config,
    pub diags: Vec<Diag>,
    /// Every file read (the main file first, then the includes in the order
    /// read), to tell whether one changed while the configuration was read.
    pub files: Vec<source::FileStamp>,
}

impl Loaded {
    /// An empty configuration without diagnostics (`lb run` without a file).
    pub fn empty() -> Self {
        finish(Vec::new(), Vec::new())
    }

    /// No configuration: one error located at `path`:1:1.
    pub fn failed(path: &Path, message: String) -> Self {
        let mut l = finish(Vec::new(), Vec::new());
        l.diags.push(Diag::error(
            &Loc {
                file: std::sync::Arc::new(path.to_owned()),
                line: 1,
                col: 1,
            },
            None,
            message,
        ));
        l
    }
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
    "linkbeat_interfaces",
    "garp_group",
    "bfd_instance",
    "net_namespace",
    "instance",
];

/// `virtual_server` keywords keepalived knows whose semantics are not implemented yet.
const VS_LATER: &[&str] = &[
    "nat_mask",
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
const RS_LATER: &[&str] = &["smtp_alert", "virtualhost"];

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
    let parsed = syntax::parse_file(path, &mut diags);
    let mut l = finish(parsed.nodes, diags);
    l.files = parsed.files;
    redact_private_includes(path, &mut l.diags);
    l
}

/// Reads and checks configuration text as if it were file `path`.
pub fn load_str(text: &str, path: &Path) -> Loaded {
    let mut diags = Vec::new();
    let parsed = syntax::parse_str(text, path, &mut diags);
    let mut l = finish(parsed.nodes, diags);
    l.files = parsed.files;
    redact_private_includes(path, &mut l.diags);
    l
}

/// Diagnostics about an included file that not everyone may read (no
/// "other" read bit: `/etc/shadow`, a 0600 token file) keep their location
/// and severity but show neither the word nor the message, which could
/// quote the file's content; the main file, which the operator names, is
/// shown as it is.
fn redact_private_includes(main: &Path, diags: &mut [Diag]) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut private: BTreeMap<std::path::PathBuf, bool> = BTreeMap::new();
    for d in diags.iter_mut() {
        let file = d.loc.file.as_path();
        if file == main {
            continue;
        }
        let hidden = *private.entry(file.to_owned()).or_insert_with(|| {
            std::fs::metadata(file).is_ok_and(|m| m.permissions().mode() & 0o004 == 0)
        });
        if hidden {
            d.keyword = None;
            d.message = "details not shown: the included file is not readable by everyone (its \
                         words could be secrets)"
                .into();
        }
    }
}

/// How long every file read must stay unchanged before a reload uses it
/// (100 ms), and how many times a reload reads again when one changed (5).
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(100);
pub const SETTLE_TRIES: u32 = 5;

/// How many times [`load_stable`]'s settle time an empty file must stay
/// unchanged (1 s with the agent's 100 ms).
pub const EMPTY_SETTLE_FACTOR: u32 = 10;

/// Reads `path` as [`load`] does, then waits `settle` and reads every file
/// again: the result is used only if none changed (bytes, size, mtime,
/// identity), so that a file rewritten in place while it is read (`cat >
/// keepalived.conf` during a SIGHUP) is never half applied. After `tries`
/// reads that all saw a change, the result is an error of the file (the
/// running configuration is kept). Blocking.
pub fn load_stable(path: &Path, settle: std::time::Duration, tries: u32) -> Loaded {
    for _ in 0..tries {
        let loaded = load(path);
        // An empty file is what an in-place rewrite (`cat >`, an editor
        // truncating) shows between truncation and the first write: it
        // must hold still ten times longer before it is believed.
        let wait = if loaded.files.iter().any(|f| f.len == 0) {
            settle * EMPTY_SETTLE_FACTOR
        } else {
            settle
        };
        std::thread::sleep(wait);
        if loaded.files.iter().all(source::unchanged) {
            return loaded;
        }
    }
    Loaded::failed(
        path,
        format!(
            "the configuration changed while it was read, {tries} times {} ms apart; not used",
            settle.as_millis()
        ),
    )
}

fn finish(nodes: Vec<Node>, mut diags: Vec<Diag>) -> Loaded {
    let mut services: Vec<VirtualServer> = Vec::new();
    let mut index: BTreeMap<ServiceAddr, usize> = BTreeMap::new();
    let mut vr = vrrp::Vrrp::default();
    let groups = group::groups(&nodes, &mut diags);
    let mut bgp_block: Option<bgp::Bgp> = None;
    let mut bgp_at: Option<Loc> = None;
    // global_defs first: it sets the instances' defaults wherever it is.
    for n in nodes.iter().filter(|n| n.keyword == "global_defs") {
        vrrp::globals(n, &mut vr.globals, &mut diags);
    }
    for n in &nodes {
        match n.keyword.as_str() {
            "global_defs" => {}
            "track_file" | "vrrp_track_file" => {
                if let Some(t) = track::track_file(n, &mut diags) {
                    if vr.files.contains_key(&t.name) {
                        diags.push(Diag::error(
                            &n.loc,
                            Some(&n.keyword),
                            format!("'{}' is defined twice", t.name),
                        ));
                    }
                    vr.files.insert(t.name.clone(), t);
                }
            }
            "vrrp_track_process" => {
                if let Some(t) = track::track_process(n, &mut diags) {
                    if vr.processes.contains_key(&t.name) {
                        diags.push(Diag::error(
                            &n.loc,
                            Some(&n.keyword),
                            format!("'{}' is defined twice", t.name),
                        ));
                    }
                    vr.processes.insert(t.name.clone(), t);
                }
            }
            // Not a keepalived 2.2.7 block: it says "Unknown keyword".
            "track_process" => diags.push(Diag::warning(
                &n.loc,
                Some("track_process"),
                "unknown keyword at top level; ignored (the block is vrrp_track_process)",
            )),
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
            // Collected above, wherever they are in the file.
            "virtual_server_group" => {}
            "virtual_server" if n.args.first().is_some_and(|a| a == "group") => {
                for vs in group_servers(n, &groups, &mut diags) {
                    insert_service(&mut services, &mut index, vs, &mut diags);
                }
            }
            "virtual_server" => {
                if let Some(vs) = virtual_server(n, &mut diags) {
                    insert_service(&mut services, &mut index, vs, &mut diags);
                }
            }
            bgp::KEYWORD => {
                if let Some(first) = &bgp_at {
                    diags.push(Diag::error(
                        &n.loc,
                        Some(bgp::KEYWORD),
                        format!("given twice; the first is at {first}"),
                    ));
                } else {
                    bgp_at = Some(n.loc.clone());
                    bgp_block = bgp::bgp(n, &mut diags);
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
    track::resolve(&mut services, &vr.files, &mut diags);
    capacity(&services, &mut diags);
    if let Some(b) = &bgp_block {
        bgp::check_vips(b, &services, &mut diags);
    }
    let mut config = Config {
        services,
        vrrp: vr,
        nodes,
        bgp: bgp_block,
    };
    script::secure(&mut config, &mut diags);
    Loaded {
        config,
        diags,
        files: Vec::new(),
    }
}

/// Adds `vs`, or merges its reals into an earlier block for the same service
/// (seen in operators' files: ipvs ends up with the reals of both).
fn insert_service(
    services: &mut Vec<VirtualServer>,
    index: &mut BTreeMap<ServiceAddr, usize>,
    vs: VirtualServer,
    diags: &mut Vec<Diag>,
) {
    if let Some(&i) = index.get(&vs.key) {
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
            add_real(first, r, diags);
        }
    } else {
        index.insert(vs.key, services.len());
        services.push(vs);
    }
}

/// `virtual_server group NAME { … }`: the block applied to every member of
/// the group, one service each (as keepalived gives ipvs). The block's own
/// problems are reported once, for the first member.
fn group_servers(
    n: &Node,
    groups: &BTreeMap<String, group::Group>,
    diags: &mut Vec<Diag>,
) -> Vec<VirtualServer> {
    let name = match n.args.as_slice() {
        [_, name] => name,
        [_] => {
            diags.push(Diag::error(
                &n.loc,
                Some("virtual_server"),
                "missing group name",
            ));
            return Vec::new();
        }
        _ => {
            diags.push(Diag::error(
                &n.loc,
                Some("virtual_server"),
                "expected 'virtual_server group NAME {'",
            ));
            return Vec::new();
        }
    };
    let Some(g) = groups.get(name) else {
        diags.push(Diag::error(
            &n.loc,
            Some("virtual_server"),
            format!("no usable virtual_server_group '{name}'"),
        ));
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (addr, port) in &g.members {
        let member = Node {
            keyword: n.keyword.clone(),
            args: vec![addr.to_string(), port.to_string()],
            children: n.children.clone(),
            loc: n.loc.clone(),
        };
        let mut d = Vec::new();
        out.extend(virtual_server(&member, &mut d));
        // What every member shares is said once; what differs (a real of
        // the other address family) for each member it concerns.
        for x in d {
            if seen.insert(x.to_string()) {
                diags.push(x);
            }
        }
    }
    out
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
    let fwd = r.fwd_in(vs);
    if r.port != vs.key.port && vs.key.port != 0 && fwd != Fwd::Nat {
        diags.push(Diag::warning(
            &r.loc,
            Some("real_server"),
            format!(
                "{} cannot change ports (only NAT can): packets reach the real on port {}",
                if fwd == Fwd::Dr {
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

/// Shapes of the `virtual_server` block's statements (see [`value::Shapes`]).
const VS_SHAPES: Shapes = Shapes {
    blocks: &["real_server"],
    values: &[
        ("protocol", 1),
        ("lb_algo", 1),
        ("lvs_sched", 1),
        // `TUN type ipip|gue PORT|gre` in keepalived 2.2.7.
        ("lb_kind", 4),
        ("lvs_method", 4),
        ("sh-port", 0),
        ("mh-port", 0),
        ("flag-2", 0),
        ("sh-fallback", 0),
        ("mh-fallback", 0),
        ("flag-1", 0),
        ("flag-3", 0),
        ("lb_algo_flags", ANY),
        ("persistence_timeout", 1),
        ("persistence_granularity", 1),
        ("delay_loop", 1),
        ("alpha", 1),
        ("omega", 1),
        ("sorry_server", 2),
        ("quorum", 1),
        ("hysteresis", 1),
        ("quorum_up", ANY),
        ("quorum_down", ANY),
        ("inhibit_on_failure", 1),
        ("weight", 1),
        ("connect_timeout", 1),
        ("retry", 1),
        ("nb_get_retry", 1),
        ("delay_before_retry", 1),
        ("warmup", 1),
    ],
};

/// Shapes of the `real_server` block's statements.
const RS_SHAPES: Shapes = Shapes {
    blocks: &[
        "TCP_CHECK",
        "HTTP_GET",
        "SSL_GET",
        "MISC_CHECK",
        "UDP_CHECK",
        "DNS_CHECK",
        "SMTP_CHECK",
        "BFD_CHECK",
        "PING_CHECK",
        "FILE_CHECK",
    ],
    values: &[
        ("weight", 1),
        ("lvs_method", 4),
        ("lb_kind", 4),
        ("uthreshold", 1),
        ("lthreshold", 1),
        ("inhibit_on_failure", 1),
        ("notify_up", ANY),
        ("notify_down", ANY),
        ("connect_timeout", 1),
        ("retry", 1),
        ("nb_get_retry", 1),
        ("delay_before_retry", 1),
        ("warmup", 1),
        ("delay_loop", 1),
    ],
};

/// keepalived's longest persistence (`LVS_MAX_TIMEOUT`, 31 days), seconds.
pub const MAX_PERSISTENCE_S: u64 = 86400 * 31;
/// keepalived's persistence for a bare `persistence_timeout`
/// (`IPVS_SVC_PERSISTENT_TIMEOUT`), seconds.
pub const DEFAULT_PERSISTENCE_S: u32 = 360;
/// The heaviest real this data plane weighs (keepalived allows up to
/// `IPVS_WEIGHT_MAX`, 2^31 − 1; the maps hold 16 bits).
pub const MAX_WEIGHT: u32 = 65535;

fn virtual_server(n: &Node, diags: &mut Vec<Diag>) -> Option<VirtualServer> {
    let errors_before = errors(diags);
    if n.args.first().is_some_and(|a| a == "fwmark") {
        diags.push(Diag::error(
            &n.loc,
            Some("virtual_server"),
            "firewall-mark services are not supported: netfilter sets the mark after the \
             XDP program has chosen the service; use one virtual_server per VIP:port, or \
             virtual_server_group",
        ));
        return None;
    }
    let addr = parse_addr(n, 0, diags);
    let port: Option<u16> = parse_num(n, 1, "port", diags);
    if port == Some(0) {
        diags.push(Diag::error(
            &n.loc,
            Some("virtual_server"),
            "port 0 (every port of the address, for a persistent service in ipvs) is not \
             supported: lb's data plane selects a service by address, protocol and port; \
             give one virtual_server per port",
        ));
        return None;
    }
    if n.children.is_none() {
        diags.push(Diag::error(
            &n.loc,
            Some("virtual_server"),
            "missing '{ … }' block",
        ));
    }
    // Unset until read: keepalived (check_data.c validate_check_config)
    // fills protocol, scheduler and forwarding method in afterwards, each
    // with a message.
    let mut proto = None;
    let mut sched = None;
    let mut fwd = None;
    let mut hash_port = false;
    let mut hash_fallback = false;
    let mut persistence_timeout = None;
    let mut persistence_prefix = None;
    let mut timing = check::Timing::default();
    let mut alpha = false;
    let mut inhibit_on_failure = false;
    let mut sorry_server = None;
    let mut quorum = 1;
    let mut hysteresis = 0;
    let mut quorum_up = None;
    let mut quorum_down = None;
    let mut omega = false;
    let mut weight = 1;
    let mut reals = Vec::new();
    // Where a persistence_granularity made the service persistent with no
    // persistence_timeout given.
    let mut granularity_alone: Option<Loc> = None;
    for c in n.children.iter().flatten() {
        VS_SHAPES.check(c, diags);
        match c.keyword.as_str() {
            "protocol" => {
                let known = [("TCP", Proto::Tcp), ("UDP", Proto::Udp)];
                if let Some(p) = choice(c, "protocol", &known, &["SCTP"], diags) {
                    proto = Some(p);
                }
            }
            "lb_algo" | "lvs_sched" => {
                if let Some(v) = choice(c, "scheduler", &Sched::ALL, &[], diags) {
                    sched = Some(v);
                }
            }
            "lb_kind" | "lvs_method" => {
                let known = [("DR", Fwd::Dr), ("NAT", Fwd::Nat), ("TUN", Fwd::Tun)];
                if let Some(v) = choice(c, "forwarding method", &known, &[], diags) {
                    fwd = Some(v);
                }
            }
            // keepalived's scheduler flags: flag-2 is sh-port / mh-port,
            // flag-1 sh-fallback / mh-fallback (fallback is always on here).
            "sh-port" | "mh-port" | "flag-2" => hash_port = true,
            "sh-fallback" | "mh-fallback" | "flag-1" => hash_fallback = true,
            "flag-3" => diags.push(later(c, "keyword")),
            "lb_algo_flags" => {
                for a in &c.args {
                    match a.as_str() {
                        "sh-port" | "mh-port" | "flag-2" => hash_port = true,
                        "sh-fallback" | "mh-fallback" | "flag-1" => hash_fallback = true,
                        other => diags.push(Diag::warning(
                            &c.loc,
                            Some("lb_algo_flags"),
                            format!("unknown scheduler flag '{other}'; ignored"),
                        )),
                    }
                }
            }
            "persistence_timeout" => {
                // keepalived (check_parser.c): a bare keyword means 360 s;
                // otherwise 1 to 31 days. It reports 0 and ignores it, which
                // leaves the service not persistent: a warning here.
                if c.args.is_empty() {
                    persistence_timeout = Some(DEFAULT_PERSISTENCE_S);
                } else if c.args[0] == "0" {
                    diags.push(Diag::warning(
                        &c.loc,
                        Some("persistence_timeout"),
                        format!("0 is outside keepalived's 1 to {MAX_PERSISTENCE_S} seconds; not persistent (keepalived reports and ignores it)"),
                    ));
                    persistence_timeout = None;
                } else if let Some(t) = uint(c, 0, 1, MAX_PERSISTENCE_S, "seconds", diags) {
                    persistence_timeout = Some(t as u32);
                }
                if persistence_timeout.is_some() {
                    granularity_alone = None;
                }
            }
            "persistence_granularity" => {
                if let Some(p) = granularity(c, addr, diags) {
                    persistence_prefix = Some(p);
                    // keepalived (check_parser.c pgr_handler): a granularity
                    // makes the service persistent, 360 s unless a
                    // persistence_timeout says otherwise (before or after).
                    if persistence_timeout.is_none() {
                        persistence_timeout = Some(DEFAULT_PERSISTENCE_S);
                        granularity_alone = Some(c.loc.clone());
                    }
                }
            }
            "alpha" => alpha = flag(c, diags),
            "omega" => omega = flag(c, diags),
            "sorry_server" => {
                let a = parse_addr(c, 0, diags);
                let p = uint(c, 1, 0, 65535, "port", diags);
                if let (Some(a), Some(p)) = (a, p) {
                    sorry_server = Some((a, p as u16));
                }
            }
            "quorum" => {
                if let Some(q) = uint(c, 0, 1, u32::MAX.into(), "weight sum", diags) {
                    quorum = q as u32;
                }
            }
            "hysteresis" => {
                if let Some(h) = uint(c, 0, 0, u32::MAX.into(), "weight", diags) {
                    hysteresis = h as u32;
                }
            }
            // keepalived: the weight of reals that set none (1 to 2^31 − 1).
            "weight" => {
                if let Some(w) = uint(c, 0, 1, MAX_WEIGHT.into(), "weight", diags) {
                    weight = w as u32;
                }
            }
            "quorum_up" => quorum_up = notify_program(c, diags),
            "quorum_down" => quorum_down = notify_program(c, diags),
            "inhibit_on_failure" => inhibit_on_failure = flag(c, diags),
            k if timing_keyword(k) || k == "delay_loop" => {
                timing.take(c, check::Level::Server, diags);
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
    if let Some(loc) = &granularity_alone {
        diags.push(Diag::warning(
            loc,
            Some("persistence_granularity"),
            format!("without persistence_timeout: persistent for keepalived's default {DEFAULT_PERSISTENCE_S} s (as keepalived, which sets it silently)"),
        ));
    }
    let errors_after = errors(diags);
    let (addr, port) = (addr?, port?);
    if errors_after > errors_before {
        return None;
    }
    let key_text = fmt_sock(addr, port);
    let proto = proto.unwrap_or_else(|| {
        diags.push(Diag::warning(
            &n.loc,
            Some("protocol"),
            format!("virtual server {key_text}: no protocol set; defaulting to UDP (as keepalived 2.2.7, whose kernel default it is)"),
        ));
        Proto::Udp
    });
    let sched = sched.unwrap_or_else(|| {
        diags.push(Diag::warning(
            &n.loc,
            Some("lb_algo"),
            format!(
                "virtual server {key_text}: no scheduler set; using keepalived's default 'wlc'"
            ),
        ));
        Sched::Wlc
    });
    let fwd = fwd.unwrap_or_else(|| {
        diags.push(Diag::warning(
            &n.loc,
            Some("lb_kind"),
            format!("virtual server {key_text}: no forwarding method set; using keepalived's default NAT"),
        ));
        Fwd::Nat
    });
    let mut vs = VirtualServer {
        key: ServiceAddr { addr, port, proto },
        sched,
        fwd,
        hash_port,
        hash_fallback,
        persistence_timeout,
        persistence_prefix,
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
    for (mut r, own_weight) in reals {
        r.weight = own_weight.unwrap_or(weight);
        add_real(&mut vs, r, diags);
    }
    Some(vs)
}

/// `persistence_granularity` as a prefix length, as keepalived 2.2.7
/// reads it (check_parser.c `pgr_handler`): for an IPv6 virtual server a
/// prefix length from 1 to 128; for IPv4 a netmask in dotted form (glibc's
/// numeric `getaddrinfo`), whose bits must be contiguous here (ipvs ANDs
/// any mask; the data plane keeps a prefix length). `vip` chooses the
/// family; unknown (a bad address, reported elsewhere), the form does.
fn granularity(c: &Node, vip: Option<IpAddr>, diags: &mut Vec<Diag>) -> Option<u8> {
    let a = c.args.first()?;
    let v6 = match vip {
        Some(ip) => ip.is_ipv6(),
        None => !a.contains('.'),
    };
    if v6 {
        return uint(c, 0, 1, 128, "IPv6 prefix length", diags).map(|p| p as u8);
    }
    let Ok(mask) = a.parse::<std::net::Ipv4Addr>() else {
        diags.push(Diag::error(
            &c.loc,
            Some("persistence_granularity"),
            format!("invalid IPv4 netmask '{a}' (write it as 255.255.255.0)"),
        ));
        return None;
    };
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    if bits.checked_shl(prefix).unwrap_or(0) != 0 {
        diags.push(Diag::error(
            &c.loc,
            Some("persistence_granularity"),
            format!("netmask {mask} is not contiguous: lb keeps a prefix of the client address (ipvs would AND any mask)"),
        ));
        return None;
    }
    Some(prefix as u8)
}

fn timing_keyword(k: &str) -> bool {
    matches!(
        k,
        "connect_timeout" | "retry" | "nb_get_retry" | "delay_before_retry" | "warmup"
    )
}

/// A `real_server` block and its own `weight`, if it sets one (else the
/// virtual server's `weight`, default 1, applies).
fn real_server(n: &Node, diags: &mut Vec<Diag>) -> Option<(RealServer, Option<u32>)> {
    let addr = parse_addr(n, 0, diags);
    let port = uint(n, 1, 0, 65535, "port", diags);
    let mut weight = None;
    let mut checks = Vec::new();
    let mut timing = check::Timing::default();
    let mut inhibit_on_failure = None;
    let mut notify_up = None;
    let mut notify_down = None;
    let mut u_threshold = 0;
    let mut l_threshold = 0;
    let mut lthreshold_at = None;
    let mut fwd = None;
    for c in n.children.iter().flatten() {
        RS_SHAPES.check(c, diags);
        match c.keyword.as_str() {
            k if check::is_checker(k) => checks.extend(check::parse(c, diags)),
            // keepalived 2.2.7 (check_parser.c rs_forwarding_handler): this
            // real's own forwarding method, as ipvs keeps one per
            // destination (`ipvsadm -a … -g|-m|-i`).
            "lvs_method" | "lb_kind" => {
                let known = [("DR", Fwd::Dr), ("NAT", Fwd::Nat), ("TUN", Fwd::Tun)];
                if let Some(v) = choice(c, "forwarding method", &known, &[], diags) {
                    fwd = Some(v);
                }
            }
            "inhibit_on_failure" => inhibit_on_failure = Some(flag(c, diags)),
            "notify_up" => notify_up = notify_program(c, diags),
            "notify_down" => notify_down = notify_program(c, diags),
            k if timing_keyword(k) || k == "delay_loop" => {
                timing.take(c, check::Level::Server, diags);
            }
            // keepalived: 0 to 2^31 − 1; the data plane holds 16 bits.
            "weight" => {
                if let Some(w) = uint(c, 0, 0, MAX_WEIGHT.into(), "weight", diags) {
                    weight = Some(w as u32);
                }
            }
            // keepalived: 0 to UINT_MAX (0: none); ipvs's dest thresholds.
            "uthreshold" => {
                if let Some(t) = uint(c, 0, 0, u32::MAX.into(), "connections", diags) {
                    u_threshold = t as u32;
                }
            }
            "lthreshold" => {
                if let Some(t) = uint(c, 0, 0, u32::MAX.into(), "connections", diags) {
                    l_threshold = t as u32;
                    lthreshold_at = Some(c);
                }
            }
            k if RS_LATER.contains(&k) => diags.push(later(c, "keyword")),
            _ => diags.push(unknown(c, "real_server")),
        }
    }
    // The kernel refuses such a destination (ip_vs_ctl.c: "lower threshold
    // is higher than upper threshold", ERANGE), and keepalived with it;
    // keepalived -t does not check.
    if let Some(c) = lthreshold_at.filter(|_| l_threshold > u_threshold) {
        diags.push(Diag::error(
            &c.loc,
            Some("lthreshold"),
            format!("{l_threshold} is above uthreshold {u_threshold}: ipvs refuses such a real server (ERANGE)"),
        ));
        return None;
    }
    let real = RealServer {
        addr: addr?,
        port: port? as u16,
        weight: 1,
        fwd,
        u_threshold,
        l_threshold,
        checks,
        timing,
        inhibit_on_failure,
        notify_up,
        notify_down,
        sorry: false,
        loc: n.loc.clone(),
    };
    Some((real, weight))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// issue 13, input 9: an include of a file not everyone may read (a
    /// secret reached through a symbolic link) never has its words shown.
    #[test]
    fn words_of_a_private_include_are_never_shown() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = std::env::temp_dir().join(format!("lb-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let secret = d.join("secret");
        std::fs::write(&secret, "ghp_A1b2C3d4E5 hunter2supersecret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let open = d.join("open.conf");
        std::fs::write(&open, "frobnicate 1\n").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let main = d.join("k.conf");
        std::fs::write(
            &main,
            format!("include {}\ninclude {}\n", secret.display(), open.display()),
        )
        .unwrap();
        let l = load(&main);
        let text: Vec<String> = l.diags.iter().map(ToString::to_string).collect();
        assert!(
            !text
                .iter()
                .any(|t| t.contains("ghp_") || t.contains("hunter2")),
            "{text:?}"
        );
        assert!(
            text.contains(&format!(
                "{}:1:1: warning: details not shown: the included file is not readable by everyone (its words could be secrets)",
                secret.display()
            )),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("frobnicate: unknown keyword")),
            "{text:?}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// `cat > keepalived.conf` truncates, then writes: a reload that reads
    /// the empty file waits ten settle times, so a writer that stalls
    /// longer than one settle time after truncating is still seen.
    #[test]
    fn a_truncated_file_must_hold_still_longer() {
        let d = std::env::temp_dir().join(format!("lb-trunc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("k.conf");
        std::fs::write(&f, "").unwrap();
        let w = {
            let f = f.clone();
            std::thread::spawn(move || {
                // Stalls 3 settle times after the truncation, then writes.
                std::thread::sleep(std::time::Duration::from_millis(150));
                std::fs::write(&f, "virtual_server 10.0.0.1 80 {\n}\n").unwrap();
            })
        };
        let l = load_stable(&f, std::time::Duration::from_millis(50), 3);
        w.join().unwrap();
        assert!(!l.has_errors(), "{:?}", l.diags);
        assert_eq!(l.config.services.len(), 1, "the empty read was not used");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_that_keeps_changing_is_refused_and_a_stable_one_used() {
        let d = std::env::temp_dir().join(format!("lb-stable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("k.conf");
        std::fs::write(&f, "virtual_server 10.0.0.1 80 {\n}\n").unwrap();
        let settle = std::time::Duration::from_millis(50);
        let l = load_stable(&f, settle, 3);
        assert!(!l.has_errors(), "{:?}", l.diags);
        assert_eq!(l.config.services.len(), 1);
        assert_eq!(l.files.len(), 1);
        // A writer that rewrites the file every 10 ms.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = {
            let (stop, f) = (stop.clone(), f.clone());
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::fs::write(
                        &f,
                        format!("virtual_server 10.0.0.{} 80 {{\n}}\n", i % 200 + 1),
                    )
                    .unwrap();
                    i += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            })
        };
        let l = load_stable(&f, settle, 3);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        w.join().unwrap();
        let e: Vec<_> = l.errors().map(ToString::to_string).collect();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("k.conf:1:1: error: the configuration changed while it was read, 3 times 50 ms apart"), "{e:?}");
        assert!(l.config.services.is_empty());
    }

    #[test]
    fn an_include_that_changes_counts_too() {
        let d = std::env::temp_dir().join(format!("lb-stable-inc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("k.conf"), "include inc.conf\n").unwrap();
        std::fs::write(d.join("inc.conf"), "virtual_server 10.0.0.1 80 {\n}\n").unwrap();
        let l = load(&d.join("k.conf"));
        assert_eq!(l.files.len(), 2);
        assert!(l.files.iter().all(source::unchanged));
        std::fs::write(d.join("inc.conf"), "virtual_server 10.0.0.2 80 {\n}\n").unwrap();
        assert!(source::unchanged(&l.files[0]));
        assert!(!source::unchanged(&l.files[1]));
    }
}
