//! `lb_bgp { … }`: announcing the virtual addresses over BGP through a
//! routing daemon the director runs (GoBGP's `gobgpd`), for active-active
//! directors behind routers that spread flows by ECMP (README "Scale-out").
//!
//! keepalived has no such block. keepalived 2.2.7 reading this file logs
//! "Unknown keyword 'lb_bgp'", "Unexpected '{' - ignoring" and each line
//! inside as an unknown keyword, and runs with the rest of the file (its
//! `-t` counts them as configuration errors and exits 5); none of the
//! keywords inside is one of keepalived's top-level keywords, so nothing in
//! the block changes what keepalived does.
//!
//! ```text
//! lb_bgp {
//!     daemon gobgp                    # the only daemon driven (default)
//!     api 127.0.0.1:50051             # gobgpd's gRPC address (default)
//!     local_as 65001                  # this director's AS (required)
//!     router_id 10.0.0.2              # default: next_hop
//!     neighbor 10.0.0.1 65000         # a peer and its AS (repeatable)
//!     next_hop 10.0.0.2               # next hop of IPv4 VIPs
//!     next_hop6 fd00::2               # next hop of IPv6 VIPs
//!     announce_delay 1                # s after XDP is attached
//!     withdraw_grace 2                # s between withdrawal and detach
//!     poll_interval 2                 # s between checks of the daemon
//!     timeout 2                       # s, each request to the daemon
//!     gobgp_program /usr/bin/gobgp    # the client (default: gobgp in PATH)
//! }
//! ```

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use super::{
    value::{arg, block, errors, parse_addr, timer, uint, Shapes},
    Diag, Loc, Node,
};

/// The block's keyword.
pub const KEYWORD: &str = "lb_bgp";

/// gobgpd's default gRPC address (its `--api-hosts` default is `:50051`).
pub const DEFAULT_API: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50051);

/// The routing daemon lb drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Daemon {
    /// GoBGP's `gobgpd`, through its gRPC API with the `gobgp` client.
    Gobgp,
}

impl Daemon {
    /// The name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Gobgp => "gobgp",
        }
    }
}

/// One `neighbor ADDRESS AS` line: a BGP peer of the daemon (the router).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbor {
    pub addr: IpAddr,
    /// The peer's AS number (4-octet).
    pub asn: u32,
    pub loc: Loc,
}

/// The `lb_bgp` block with every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bgp {
    pub daemon: Daemon,
    /// The daemon's gRPC address.
    pub api: SocketAddr,
    /// This director's AS number (4-octet).
    pub local_as: u32,
    /// The BGP identifier; `None`: the IPv4 next hop.
    pub router_id: Option<std::net::Ipv4Addr>,
    /// Peers lb adds to the daemon when it lacks them (peers the daemon's
    /// own configuration defines are left as they are).
    pub neighbors: Vec<Neighbor>,
    /// Next hop announced with the IPv4 VIPs (this director's address on
    /// the router's network).
    pub next_hop: Option<std::net::Ipv4Addr>,
    /// Next hop announced with the IPv6 VIPs.
    pub next_hop6: Option<std::net::Ipv6Addr>,
    /// How long after XDP is attached (and the first table written) the
    /// VIPs may be announced.
    pub announce_delay: Duration,
    /// On a deliberate stop: how long XDP keeps forwarding after the
    /// routes were withdrawn, while the routers move the flows away.
    pub withdraw_grace: Duration,
    /// How often the daemon's state (sessions, paths) is read and
    /// corrected (a restarted daemon gets its paths back).
    pub poll_interval: Duration,
    /// Bound of each request to the daemon.
    pub timeout: Duration,
    /// The `gobgp` client program: an absolute path, or a bare name looked
    /// up in [`crate::util::security::SEARCH_PATH`]. It runs as root, so it
    /// is checked by keepalived's `enable_script_security` rule
    /// (`config::script::secure` at load, `bgp::gobgp::Client` before each
    /// run).
    pub program: PathBuf,
    /// Where `gobgp_program` was given (`None`: the default, `gobgp`).
    pub program_at: Option<Loc>,
    /// `enable_script_security` of the global block (set with the other
    /// programs' policy by `config::script::secure`): a `gobgp_program`
    /// that a non-root user could change is refused rather than run.
    pub script_security: bool,
    pub loc: Loc,
}

impl Bgp {
    /// The BGP identifier given to an unconfigured daemon.
    pub fn router_id(&self) -> Option<std::net::Ipv4Addr> {
        self.router_id.or(self.next_hop)
    }

    /// The next hop of `vip`'s family, if configured.
    pub fn next_hop_of(&self, vip: IpAddr) -> Option<IpAddr> {
        match vip {
            IpAddr::V4(_) => self.next_hop.map(IpAddr::V4),
            IpAddr::V6(_) => self.next_hop6.map(IpAddr::V6),
        }
    }
}

const SHAPES: Shapes = Shapes {
    blocks: &[],
    values: &[
        ("daemon", 1),
        ("api", 1),
        ("local_as", 1),
        ("router_id", 1),
        ("neighbor", 2),
        ("next_hop", 1),
        ("next_hop6", 1),
        ("announce_delay", 1),
        ("withdraw_grace", 1),
        ("poll_interval", 1),
        ("timeout", 1),
        ("gobgp_program", 1),
    ],
};

/// Largest AS number (4-octet, RFC 6793); 0 is reserved (RFC 7607).
const MAX_AS: u64 = u32::MAX as u64;

/// Most `neighbor`s in the block: a director peers with its routers (a
/// handful); the cap keeps a hostile file from costing the parser and the
/// daemon thousands of sessions.
pub const MAX_NEIGHBORS: usize = 64;

/// Keywords that take one value: a second one is an error (it would
/// otherwise silently win over the first).
const SINGLE: [&str; 11] = [
    "daemon",
    "api",
    "local_as",
    "router_id",
    "next_hop",
    "next_hop6",
    "announce_delay",
    "withdraw_grace",
    "poll_interval",
    "timeout",
    "gobgp_program",
];

/// Whether `a` can be a BGP peer, a next hop or a router id: not the
/// unspecified, a multicast or the broadcast address (gobgpd would take
/// them and announce routes nobody can use). `None`: fine; else why not.
fn unusable(a: IpAddr) -> Option<&'static str> {
    match a {
        a if a.is_unspecified() => Some("the unspecified address"),
        a if a.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        _ => None,
    }
}

/// An error when `a` (the value of `c`) is [`unusable`].
fn usable(c: &Node, a: IpAddr, diags: &mut Vec<Diag>) -> Option<IpAddr> {
    match unusable(a) {
        None => Some(a),
        Some(why) => {
            diags.push(Diag::error(
                &c.loc,
                Some(&c.keyword),
                format!("{a} is {why}"),
            ));
            None
        }
    }
}

/// Parses one `lb_bgp` block; problems go to `diags` with their location.
pub fn bgp(n: &Node, diags: &mut Vec<Diag>) -> Option<Bgp> {
    if !n.args.is_empty() {
        diags.push(Diag::warning(
            &n.loc,
            Some(KEYWORD),
            format!("argument(s) '{}' ignored", n.args.join(" ")),
        ));
    }
    let mut out = Bgp {
        daemon: Daemon::Gobgp,
        api: DEFAULT_API,
        local_as: 0,
        router_id: None,
        neighbors: Vec::new(),
        next_hop: None,
        next_hop6: None,
        announce_delay: Duration::ZERO,
        withdraw_grace: Duration::from_secs(2),
        poll_interval: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        program: PathBuf::from("gobgp"),
        program_at: None,
        script_security: false,
        loc: n.loc.clone(),
    };
    let mut local_as = None;
    let errors_before = errors(diags);
    let secs = |c: &Node, min: u64, max: u64, diags: &mut Vec<Diag>| {
        timer(c, Duration::from_secs(min), Duration::from_secs(max), diags)
    };
    let mut seen: std::collections::BTreeMap<&str, &Loc> = std::collections::BTreeMap::new();
    let mut too_many: Option<&Loc> = None;
    for c in block(n, diags) {
        SHAPES.check(c, diags);
        if let Some(k) = SINGLE.iter().find(|k| **k == c.keyword) {
            if let Some(first) = seen.insert(k, &c.loc) {
                diags.push(Diag::error(
                    &c.loc,
                    Some(k),
                    format!("given twice (first at {first}): say it once"),
                ));
                continue;
            }
        }
        match c.keyword.as_str() {
            "daemon" => match arg(c, 0, "daemon name", diags) {
                Some("gobgp") => out.daemon = Daemon::Gobgp,
                Some(other) => diags.push(Diag::error(
                    &c.loc,
                    Some("daemon"),
                    format!("unknown daemon '{other}' (lb drives gobgp)"),
                )),
                None => {}
            },
            "api" => {
                if let Some(a) = arg(c, 0, "address:port", diags) {
                    match a.parse::<SocketAddr>() {
                        Ok(s) if s.port() == 0 || unusable(s.ip()).is_some() => {
                            diags.push(Diag::error(
                                &c.loc,
                                Some("api"),
                                format!("'{a}' cannot be gobgpd's gRPC address (port 0, or an address nothing listens on)"),
                            ))
                        }
                        Ok(s) => out.api = s,
                        Err(_) => diags.push(Diag::error(
                            &c.loc,
                            Some("api"),
                            format!("'{a}' is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)"),
                        )),
                    }
                }
            }
            "local_as" => local_as = uint(c, 0, 1, MAX_AS, "AS number", diags),
            "router_id" => match parse_addr(c, 0, diags).and_then(|a| usable(c, a, diags)) {
                Some(IpAddr::V4(a)) => out.router_id = Some(a),
                Some(IpAddr::V6(_)) => diags.push(Diag::error(
                    &c.loc,
                    Some("router_id"),
                    "the BGP identifier is an IPv4 address",
                )),
                None => {}
            },
            "neighbor" => {
                if out.neighbors.len() >= MAX_NEIGHBORS {
                    // One error for the lot (below), not one per line.
                    too_many.get_or_insert(&c.loc);
                    continue;
                }
                let addr = parse_addr(c, 0, diags).and_then(|a| usable(c, a, diags));
                let asn = uint(c, 1, 1, MAX_AS, "AS number", diags);
                if let (Some(addr), Some(asn)) = (addr, asn) {
                    if let Some(o) = out.neighbors.iter().find(|o| o.addr == addr) {
                        diags.push(Diag::error(
                            &c.loc,
                            Some("neighbor"),
                            format!("{addr} is already a neighbor at {}", o.loc),
                        ));
                    } else {
                        out.neighbors.push(Neighbor {
                            addr,
                            asn: asn as u32,
                            loc: c.loc.clone(),
                        });
                    }
                }
            }
            "next_hop" => match parse_addr(c, 0, diags).and_then(|a| usable(c, a, diags)) {
                Some(IpAddr::V4(a)) => out.next_hop = Some(a),
                Some(IpAddr::V6(_)) => diags.push(Diag::error(
                    &c.loc,
                    Some("next_hop"),
                    "an IPv6 next hop goes in next_hop6",
                )),
                None => {}
            },
            "next_hop6" => match parse_addr(c, 0, diags).and_then(|a| usable(c, a, diags)) {
                Some(IpAddr::V6(a)) => out.next_hop6 = Some(a),
                Some(IpAddr::V4(_)) => diags.push(Diag::error(
                    &c.loc,
                    Some("next_hop6"),
                    "an IPv4 next hop goes in next_hop",
                )),
                None => {}
            },
            "announce_delay" => {
                out.announce_delay = secs(c, 0, 3600, diags).unwrap_or(out.announce_delay)
            }
            "withdraw_grace" => {
                out.withdraw_grace = secs(c, 0, 300, diags).unwrap_or(out.withdraw_grace)
            }
            "poll_interval" => {
                out.poll_interval = match timer(
                    c,
                    Duration::from_millis(100),
                    Duration::from_secs(3600),
                    diags,
                ) {
                    Some(d) => d,
                    None => out.poll_interval,
                }
            }
            "timeout" => {
                out.timeout = match timer(
                    c,
                    Duration::from_millis(100),
                    Duration::from_secs(60),
                    diags,
                ) {
                    Some(d) => d,
                    None => out.timeout,
                }
            }
            "gobgp_program" => {
                if let Some(p) = arg(c, 0, "program path", diags) {
                    out.program = PathBuf::from(p);
                    out.program_at = Some(c.loc.clone());
                }
            }
            // lb's own block: a misspelt keyword (`neighbour`) is an
            // error, not a warning keepalived-style, since nothing else
            // reads the block and a lost line changes what is announced.
            _ => diags.push(Diag::error(
                &c.loc,
                Some(&c.keyword),
                format!("unknown keyword in {KEYWORD} (daemon, api, local_as, router_id, neighbor, next_hop, next_hop6, announce_delay, withdraw_grace, poll_interval, timeout, gobgp_program)"),
            )),
        }
    }
    if let Some(loc) = too_many {
        diags.push(Diag::error(
            loc,
            Some("neighbor"),
            format!("more than {MAX_NEIGHBORS} neighbors (from here on)"),
        ));
    }
    match local_as {
        Some(a) => out.local_as = a as u32,
        None if n.child("local_as").is_none() => diags.push(Diag::error(
            &n.loc,
            Some(KEYWORD),
            "missing local_as (this director's AS number)",
        )),
        None => {}
    }
    if out.next_hop.is_none() && out.next_hop6.is_none() {
        diags.push(Diag::error(
            &n.loc,
            Some(KEYWORD),
            "missing next_hop (and next_hop6): the address the routers send the VIPs' traffic to",
        ));
    }
    if out.router_id().is_none() && out.next_hop.is_none() && out.next_hop6.is_some() {
        diags.push(Diag::error(
            &n.loc,
            Some(KEYWORD),
            "missing router_id (an IPv4 address; the default is next_hop, which is not set)",
        ));
    }
    (errors(diags) == errors_before).then_some(out)
}

/// Checks that every VIP can be announced: a VIP of a family without a
/// next hop is a warning (it is not announced).
pub fn check_vips(b: &Bgp, services: &[super::VirtualServer], diags: &mut Vec<Diag>) {
    let mut seen = std::collections::BTreeSet::new();
    for vs in services {
        let vip = vs.key.addr;
        if b.next_hop_of(vip).is_none() && seen.insert(vip) {
            diags.push(Diag::warning(
                &vs.loc,
                Some("virtual_server"),
                format!(
                    "{vip} is not announced over BGP: lb_bgp has no {}",
                    if vip.is_ipv4() {
                        "next_hop"
                    } else {
                        "next_hop6"
                    }
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, Severity};

    fn load(text: &str) -> crate::config::Loaded {
        load_str(text, std::path::Path::new("k.conf"))
    }

    fn lines(l: &crate::config::Loaded) -> Vec<String> {
        l.diags.iter().map(ToString::to_string).collect()
    }

    /// [`lines`] less the warning that the default client, `gobgp`, is not
    /// installed (on a machine without Debian's gobgpd).
    fn lines_but_no_client(l: &crate::config::Loaded) -> Vec<String> {
        lines(l)
            .into_iter()
            .filter(|d| !d.contains("warning: lb_bgp: 'gobgp' is not an executable file in"))
            .collect()
    }

    /// Input: a whole block. Output: every value, and the defaults of
    /// what it leaves out.
    #[test]
    fn a_block_is_read_with_its_defaults() {
        let l = load("lb_bgp {\n  local_as 4200000001\n  neighbor 10.0.0.1 65000\n  neighbor fd00::1 65000\n  next_hop 10.0.0.2\n  next_hop6 fd00::2\n  withdraw_grace 0.5\n}\n");
        assert_eq!(lines_but_no_client(&l), Vec::<String>::new());
        let b = l.config.bgp.expect("the block");
        assert_eq!(b.daemon, Daemon::Gobgp);
        assert_eq!(b.api, DEFAULT_API);
        assert_eq!(b.local_as, 4_200_000_001);
        assert_eq!(b.router_id(), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(b.neighbors.len(), 2);
        assert_eq!(b.neighbors[1].loc.line, 4);
        assert_eq!(b.withdraw_grace, Duration::from_millis(500));
        assert_eq!(b.announce_delay, Duration::ZERO);
        assert_eq!(b.poll_interval, Duration::from_secs(2));
        assert_eq!(b.timeout, Duration::from_secs(2));
        assert_eq!(b.program, PathBuf::from("gobgp"));
        assert_eq!(
            b.next_hop_of("fd00::100".parse().unwrap()),
            Some("fd00::2".parse().unwrap())
        );
    }

    /// Input: a block with a problem on each line. Output: every problem
    /// at once, located, and no block.
    #[test]
    fn every_problem_is_reported_with_its_location() {
        let l = load(
            "lb_bgp {\n  daemon bird\n  api localhost\n  local_as 0\n  neighbor 10.0.0.1 4294967296\n  next_hop fd00::2\n  router_id fd00::1\n  poll_interval 0.01\n  frobnicate 1\n}\n",
        );
        let got = lines(&l);
        for want in [
            "k.conf:2:3: error: daemon: unknown daemon 'bird' (lb drives gobgp)",
            "k.conf:3:3: error: api: 'localhost' is not ADDRESS:PORT",
            "k.conf:4:3: error: local_as: '0' must be a whole number from 1 to 4294967295 (AS number)",
            "k.conf:5:3: error: neighbor: '4294967296' must be a whole number from 1 to 4294967295 (AS number)",
            "k.conf:6:3: error: next_hop: an IPv6 next hop goes in next_hop6",
            "k.conf:7:3: error: router_id: the BGP identifier is an IPv4 address",
            "k.conf:8:3: error: poll_interval: '0.01' must be from 0.1 to 3600 seconds",
            "k.conf:9:3: error: frobnicate: unknown keyword in lb_bgp (daemon, api,",
            "k.conf:1:1: error: lb_bgp: missing next_hop",
        ] {
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "{want}\nnot in:\n{}",
                got.join("\n")
            );
        }
        assert!(l.config.bgp.is_none());
        let l = load(
            "lb_bgp {\n  next_hop 10.0.0.2\n}\nlb_bgp {\n  local_as 1\n  next_hop 10.0.0.2\n}\n",
        );
        let got = lines(&l);
        assert!(
            got.iter()
                .any(|g| g.starts_with("k.conf:1:1: error: lb_bgp: missing local_as")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|g| g
                .starts_with("k.conf:4:1: error: lb_bgp: given twice; the first is at k.conf:1:1")),
            "{got:?}"
        );
    }

    /// Input: what the fresh-user trial found accepted without a word.
    /// Output: each an error at its line; no block.
    #[test]
    fn repeats_typos_unusable_addresses_and_too_many_neighbors_are_errors() {
        for (body, want) in [
            (
                "  local_as 65002\n",
                "k.conf:5:3: error: local_as: given twice (first at k.conf:2:3)",
            ),
            (
                "  next_hop 10.0.0.3\n",
                "k.conf:5:3: error: next_hop: given twice (first at k.conf:4:3)",
            ),
            (
                "  neighbour 10.0.0.1 65000\n",
                "k.conf:5:3: error: neighbour: unknown keyword in lb_bgp",
            ),
            (
                "  neighbor 0.0.0.0 65000\n",
                "k.conf:5:3: error: neighbor: 0.0.0.0 is the unspecified address",
            ),
            (
                "  neighbor 224.0.0.1 65000\n",
                "k.conf:5:3: error: neighbor: 224.0.0.1 is a multicast address",
            ),
            (
                "  router_id 255.255.255.255\n",
                "k.conf:5:3: error: router_id: 255.255.255.255 is the broadcast address",
            ),
            (
                "  api 127.0.0.1:0\n",
                "k.conf:5:3: error: api: '127.0.0.1:0' cannot be",
            ),
            (
                "  next_hop6 ::\n",
                "k.conf:5:3: error: next_hop6: :: is the unspecified address",
            ),
        ] {
            let l = load(&format!(
                "lb_bgp {{\n  local_as 65001\n  neighbor 10.0.0.254 65000\n  next_hop 10.0.0.2\n{body}}}\n"
            ));
            let got = lines(&l);
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "{want}\nnot in:\n{}",
                got.join("\n")
            );
            assert!(l.config.bgp.is_none(), "{body}");
        }
        // 65 neighbors: one error, at the 65th.
        let many: String = (1..=65)
            .map(|i| format!("  neighbor 10.1.{}.{} 65000\n", i / 250, i % 250 + 1))
            .collect();
        let l = load(&format!(
            "lb_bgp {{\n  local_as 65001\n  next_hop 10.0.0.2\n{many}}}\n"
        ));
        let got: Vec<String> = lines(&l)
            .into_iter()
            .filter(|g| g.contains("neighbors"))
            .collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("k.conf:68:3: error: neighbor: more than 64 neighbors"),
            "{got:?}"
        );
    }

    /// A VIP of a family without a next hop is a warning at its service.
    #[test]
    fn a_vip_without_a_next_hop_of_its_family_is_a_warning() {
        let l = load("lb_bgp {\n  local_as 65001\n  next_hop 10.0.0.2\n}\nvirtual_server fd00::100 80 {\n  lb_kind DR\n  protocol TCP\n  lb_algo mh\n}\n");
        let w: Vec<_> = l
            .diags
            .iter()
            .filter(|d| d.severity == Severity::Warning && d.message.contains("announced over BGP"))
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            w,
            ["k.conf:5:1: warning: virtual_server: fd00::100 is not announced over BGP: lb_bgp has no next_hop6"]
        );
    }

    /// `lb export` writes the block so that it reads back the same.
    #[test]
    fn export_reads_back_the_same() {
        let l = load("lb_bgp {\n  api [::1]:50052\n  local_as 65001\n  router_id 1.2.3.4\n  neighbor 10.0.0.1 65000\n  next_hop 10.0.0.2\n  announce_delay 1.5\n  timeout 3\n  gobgp_program \"/nonexistent go bgp/gobgp\"\n}\n");
        // The program is checked where it is given: it is not there.
        assert_eq!(
            lines(&l),
            ["k.conf:9:3: warning: gobgp_program: /nonexistent go bgp: No such file or directory; every request to the BGP daemon fails and no VIP is announced until it is there (Debian's gobgpd package)"]
        );
        let text = crate::config::export::keepalived_conf(&l.config);
        let again = load(&text);
        assert!(!again.has_errors(), "{:?}\n{text}", lines(&again));
        let (mut a, mut b) = (l.config.bgp.clone().unwrap(), again.config.bgp.unwrap());
        // Locations differ (the exported file has its own lines).
        a.loc = b.loc.clone();
        a.program_at = b.program_at.clone();
        for (x, y) in a.neighbors.iter_mut().zip(&b.neighbors) {
            x.loc = y.loc.clone();
        }
        b.loc = a.loc.clone();
        assert_eq!(a, b, "{text}");
        let dump = crate::config::dump::dump(&l.config);
        assert_eq!(dump["lb_bgp"]["router_id"], "1.2.3.4");
        assert_eq!(dump["lb_bgp"]["announce_delay_s"], 1.5);
        assert_eq!(dump["lb_bgp"]["neighbors"][0]["as"], 65000);
    }
}
