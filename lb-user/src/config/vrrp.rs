//! The VRRP side of keepalived.conf: `global_defs`, `vrrp_script`,
//! `vrrp_instance` and `vrrp_sync_group`, with keepalived's defaults.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use super::{
    track::{self, TrackFile, TrackProcess, TrackRef},
    value::{
        arg, block, command, errors, flag, ignored, int, notify_program, parse_addr, run_as,
        secs_text, timer, uint, unknown, whole_secs, words, Shapes, ANY,
    },
    Diag, Loc, Node,
};
use crate::util::process::Program;

/// Protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    /// As `lb list --vrrp` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Version::V2 => "v2",
            Version::V3 => "v3",
        }
    }
}

/// Length of the VRRPv2 authentication data.
pub const AUTH_LEN: usize = 8;

/// keepalived's PASS authentication data: the password's first 8 bytes,
/// zero padded.
pub fn pass_auth(password: &str) -> [u8; AUTH_LEN] {
    let mut a = [0u8; AUTH_LEN];
    let b = password.as_bytes();
    let n = b.len().min(AUTH_LEN);
    a[..n].copy_from_slice(&b[..n]);
    a
}

/// `global_defs` settings this agent uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Globals {
    pub router_id: Option<String>,
    /// Default version of the instances (keepalived: 2).
    pub version: Version,
    pub strict: bool,
    pub skip_check_adv_addr: bool,
    /// Pause between the gratuitous ARPs / NAs of one burst.
    pub garp_interval: Duration,
    pub gna_interval: Duration,
    /// Account the programs run as unless they name their own (else
    /// `keepalived_script` if it exists, else root; see `config::script`).
    pub script_user: Option<(u32, u32)>,
    /// Refuse programs run as root that a non-root user could change
    /// (keepalived's script security; see `util::security`).
    pub enable_script_security: bool,
    pub notification_email: Vec<String>,
    pub notification_email_from: Option<String>,
    pub smtp_server: Option<(IpAddr, u16)>,
    pub smtp_helo_name: Option<String>,
    pub smtp_connect_timeout: Duration,
    /// Instance defaults (`vrrp_garp_master_*`), as the instance keywords.
    pub garp_master_delay: Duration,
    pub garp_master_repeat: u32,
    pub garp_master_refresh: Option<Duration>,
    pub garp_master_refresh_repeat: u32,
    /// `vrrp_garp_lower_prio_delay` / `_repeat`; `None`: the instance's
    /// `garp_master_delay` / `garp_master_repeat` (keepalived.conf(5)).
    pub garp_lower_prio_delay: Option<Duration>,
    pub garp_lower_prio_repeat: Option<u32>,
    /// `vrrp_lower_prio_no_advert`; `None`: on exactly when `vrrp_strict`.
    pub lower_prio_no_advert: Option<bool>,
    /// `vrrp_higher_prio_send_advert` (default off).
    pub higher_prio_send_advert: bool,
    /// `lvs_sync_daemon`: connection sync is on (`crate::sync`).
    pub lvs_sync: Option<LvsSync>,
    /// `lb_sync_auth_key KEY` (lb's own keyword; keepalived reports it as
    /// unknown and goes on): sign sync messages and refuse unsigned ones.
    /// The key, where it was set.
    pub sync_auth_key: Option<(String, Loc)>,
}

/// keepalived's `lvs_sync_daemon IFACE VRRP_INSTANCE [id ID] [maxlen LEN]
/// [port PORT] [ttl TTL] [group ADDR]` (global_parser.c, keepalived 2.2.7):
/// the ipvs sync daemon's settings, with ipvs's defaults. lb's extension:
/// the instance may be left out (`lvs_sync_daemon IFACE [id ID] …`) for
/// directors without VRRP (active-active behind ECMP, README "Scale-out");
/// keepalived requires it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LvsSync {
    /// Interface the messages are sent and received on.
    pub iface: String,
    /// The VRRP instance whose state the sync follows: while this director
    /// is starting it holds that instance in BACKUP until the peer's bulk
    /// copy is in; its `virtual_router_id` is the default sync id. `None`
    /// (lb's extension): no VRRP; the sync id defaults to 0 (ipvsadm's
    /// `--syncid` default) and BGP announcements wait for the bulk copy.
    pub instance: Option<String>,
    /// `id` (0..=255); `None`: the instance's virtual_router_id, or 0
    /// without an instance.
    pub syncid: Option<u8>,
    /// `maxlen`: largest message, UDP payload bytes; `None`: the
    /// interface's MTU less 28 (IPv4 and UDP headers), as ipvs.
    pub maxlen: Option<u16>,
    /// `port` (default 8848).
    pub port: u16,
    /// `ttl` of multicast messages (default 1).
    pub ttl: u8,
    /// `group` (default 224.0.0.81; an IPv6 group needs an IPv6 address on the interface).
    pub group: IpAddr,
    pub loc: Loc,
}

impl Default for Globals {
    fn default() -> Self {
        Globals {
            router_id: None,
            version: Version::V2,
            strict: false,
            skip_check_adv_addr: false,
            garp_interval: Duration::ZERO,
            gna_interval: Duration::ZERO,
            script_user: None,
            enable_script_security: false,
            notification_email: Vec::new(),
            notification_email_from: None,
            smtp_server: None,
            smtp_helo_name: None,
            smtp_connect_timeout: Duration::from_secs(30),
            garp_master_delay: Duration::from_secs(5),
            garp_master_repeat: 5,
            garp_master_refresh: None,
            garp_master_refresh_repeat: 1,
            garp_lower_prio_delay: None,
            garp_lower_prio_repeat: None,
            lower_prio_no_advert: None,
            higher_prio_send_advert: false,
            lvs_sync: None,
            sync_auth_key: None,
        }
    }
}

/// A VMAC interface (`use_vmac [NAME] [MAC]`): a private-mode macvlan on the
/// instance's interface. keepalived's defaults: name `vrrp.VRID` (IPv4) /
/// `vrrp6.VRID` (IPv6), MAC `00:00:5e:00:01:VRID` / `00:00:5e:00:02:VRID`
/// (RFC 5798 7.3); a 5-octet MAC takes the VRID as its last octet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vmac {
    pub name: String,
    pub mac: [u8; 6],
}

/// One entry of `virtual_ipaddress`: `ADDR[/PREFIX] [dev IF] [label L] [scope S]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    pub addr: IpAddr,
    pub prefix: u8,
    /// Interface the address goes on (default: the instance's).
    pub dev: Option<String>,
    pub label: Option<String>,
    /// rtnetlink scope (0 global, 253 link, 254 host).
    pub scope: u8,
}

/// A `vrrp_script`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    pub name: String,
    /// The program (`script`) and its account (`user`, else the default).
    pub program: Program,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub weight: i32,
    /// Start failed rather than good.
    pub init_fail: bool,
    pub loc: Loc,
}

/// A tracked script or interface with the weight it adds (0: failure means FAULT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub name: String,
    /// `None`: the script's own weight.
    pub weight: Option<i32>,
}

/// Programs run on state changes (words, never a shell), each
/// `"PROGRAM ARGS…" [USER [GROUP]]` as keepalived.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub master: Option<Program>,
    pub backup: Option<Program>,
    pub fault: Option<Program>,
    pub stop: Option<Program>,
    /// Called with TYPE NAME STATE PRIORITY appended.
    pub any: Option<Program>,
    /// Mail on state changes (default: when an smtp_server and addresses are set).
    pub smtp_alert: Option<bool>,
}

/// Initial state asked for by `state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initial {
    Master,
    Backup,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub initial: Initial,
    pub iface: String,
    pub vrid: u8,
    pub priority: u8,
    /// Own advertisement interval, centiseconds.
    pub advert_cs: u16,
    pub version: Version,
    /// VRRPv2 PASS password (zero padded); `None`: no authentication.
    pub auth: Option<[u8; AUTH_LEN]>,
    pub vips: Vec<Vip>,
    pub excluded: Vec<Vip>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub track_interfaces: Vec<Track>,
    pub track_scripts: Vec<Track>,
    /// `track_file { NAME [weight W [reverse]] }`.
    pub track_files: Vec<TrackRef>,
    /// `track_process { NAME [weight W [reverse]] }`.
    pub track_processes: Vec<TrackRef>,
    pub notify: Notify,
    pub garp_master_delay: Duration,
    pub garp_master_repeat: u32,
    pub garp_master_refresh: Option<Duration>,
    pub garp_master_refresh_repeat: u32,
    /// Gratuitous ARPs / NAs sent at once when a master hears a lower
    /// priority advert (another master: a healed split brain), and the delay
    /// of the second set (keepalived's `garp_lower_prio_repeat` / `_delay`).
    pub garp_lower_prio_repeat: u32,
    pub garp_lower_prio_delay: Duration,
    /// A master that hears a lower priority advert does not answer it with
    /// an advert of its own (RFC 5798 6.4.3 discards it; keepalived answers
    /// unless this or `vrrp_strict` is set).
    pub lower_prio_no_advert: bool,
    /// A master that hears a higher priority advert sends one advert of its
    /// own before it steps down, so the winner re-announces the addresses
    /// (`garp_lower_prio_repeat`) after the clients last heard the loser.
    pub higher_prio_send_advert: bool,
    pub unicast_src: Option<IpAddr>,
    pub unicast_peers: Vec<IpAddr>,
    /// Routes held with the virtual addresses (`virtual_routes`).
    pub virtual_routes: Vec<super::route::VirtualRoute>,
    /// `use_vmac`: the virtual addresses live on a macvlan interface with the
    /// virtual router MAC (RFC 5798 7.3), created for the instance.
    pub vmac: Option<Vmac>,
    /// Policy-routing rules held with the virtual addresses (`virtual_rules`).
    pub virtual_rules: Vec<super::route::VirtualRule>,
    pub loc: Loc,
}

impl Instance {
    pub fn is_ipv6(&self) -> bool {
        self.vips.first().is_some_and(|v| v.addr.is_ipv6())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncGroup {
    pub name: String,
    pub members: Vec<String>,
    pub notify: Notify,
    pub track_scripts: Vec<Track>,
    pub track_files: Vec<TrackRef>,
    pub track_processes: Vec<TrackRef>,
    pub loc: Loc,
}

/// Everything VRRP in one configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vrrp {
    pub globals: Globals,
    pub scripts: BTreeMap<String, Script>,
    pub instances: Vec<Instance>,
    pub groups: Vec<SyncGroup>,
    /// Global `track_file` blocks (instances and FILE_CHECKs use them).
    pub files: BTreeMap<String, TrackFile>,
    /// `vrrp_track_process` blocks.
    pub processes: BTreeMap<String, TrackProcess>,
}

/// global_defs settings (ipvs, iptables, process, SNMP) with no meaning here.
const GLOBAL_IGNORED: &[&str] = &[
    "vrrp_iptables",
    "vrrp_ipsets",
    "lvs_id",
    "lvs_timeouts",
    "vrrp_mcast_group4",
    "vrrp_mcast_group6",
    "max_auto_priority",
    "vrrp_no_swap",
    "checker_no_swap",
    "vrrp_priority",
    "checker_priority",
    "dynamic_interfaces",
    "enable_traps",
    "enable_snmp_vrrp",
    "enable_snmp_checker",
    "enable_snmp_rfc",
    "enable_dbus",
];

/// vrrp_instance keywords accepted but not implemented (a warning each).
const INSTANCE_IGNORED: &[&str] = &[
    "dont_track_primary",
    "native_ipv6",
    "accept",
    "no_accept",
    "lvs_sync_daemon_interface",
    "debug",
    "kernel_rx_buf_size",
    "strict_mode",
    "unicast_ttl",
];

/// keepalived's `UINT_MAX / TIMER_HZ`: the most whole seconds several
/// keywords take (4294).
const MAX_WHOLE_S: u64 = u32::MAX as u64 / 1_000_000;

/// `UINT_MAX` microseconds (4294.967295 s), keepalived's bound of
/// `vrrp_garp_interval` / `vrrp_gna_interval`.
const UINT_MAX_US: Duration = Duration::from_micros(u32::MAX as u64);

/// Shapes of `global_defs` statements (see [`Shapes`]); the ignored
/// keywords take keepalived's own arguments and are not checked.
const GLOBAL_SHAPES: Shapes = Shapes {
    blocks: &["notification_email"],
    values: &[
        ("router_id", 1),
        ("vrrp_version", 1),
        ("vrrp_strict", 0),
        ("vrrp_skip_check_adv_addr", 0),
        ("vrrp_garp_interval", 1),
        ("vrrp_gna_interval", 1),
        ("script_user", 2),
        ("enable_script_security", 0),
        ("notification_email_from", 1),
        ("smtp_server", 2),
        ("smtp_helo_name", 1),
        ("smtp_connect_timeout", 1),
        ("vrrp_garp_master_delay", 1),
        ("vrrp_garp_master_repeat", 1),
        ("vrrp_garp_master_refresh", 1),
        ("vrrp_garp_master_refresh_repeat", 1),
        ("vrrp_garp_lower_prio_delay", 1),
        ("vrrp_garp_lower_prio_repeat", 1),
        ("vrrp_lower_prio_no_advert", 1),
        ("vrrp_higher_prio_send_advert", 1),
        ("vrrp_check_unicast_src", 0),
        ("lvs_sync_daemon", ANY),
        ("lb_sync_auth_key", 1),
    ],
};

/// Shapes of `vrrp_script` statements.
const SCRIPT_SHAPES: Shapes = Shapes {
    blocks: &[],
    values: &[
        ("script", ANY),
        ("interval", 1),
        ("timeout", 1),
        ("rise", 1),
        ("fall", 1),
        ("weight", 2),
        ("init_fail", 0),
        ("user", 2),
    ],
};

/// Shapes of `vrrp_instance` statements.
const INSTANCE_SHAPES: Shapes = Shapes {
    blocks: &[
        "authentication",
        "virtual_ipaddress",
        "virtual_ipaddress_excluded",
        "track_interface",
        "track_script",
        "unicast_peer",
        "virtual_routes",
        "virtual_rules",
    ],
    values: &[
        ("state", 1),
        ("interface", 1),
        ("virtual_router_id", 1),
        ("priority", 1),
        ("advert_int", 1),
        ("version", 1),
        ("nopreempt", 0),
        ("preempt", 0),
        ("preempt_delay", 1),
        ("notify_master", ANY),
        ("notify_backup", ANY),
        ("notify_fault", ANY),
        ("notify_stop", ANY),
        ("notify", ANY),
        ("smtp_alert", 1),
        ("garp_master_delay", 1),
        ("garp_master_repeat", 1),
        ("garp_master_refresh", 1),
        ("garp_master_refresh_repeat", 1),
        ("unicast_src_ip", 1),
        ("mcast_src_ip", 1),
        ("garp_lower_prio_delay", 1),
        ("garp_lower_prio_repeat", 1),
        ("lower_prio_no_advert", 1),
        ("higher_prio_send_advert", 1),
        ("check_unicast_src", 0),
        ("use_vmac", 2),
        ("vmac_xmit_base", 0),
    ],
};

/// Shapes of `authentication` and `vrrp_sync_group` statements.
const AUTH_SHAPES: Shapes = Shapes {
    blocks: &[],
    values: &[("auth_type", 1), ("auth_pass", 1)],
};
const GROUP_SHAPES: Shapes = Shapes {
    blocks: &["group", "track_script", "track_interface"],
    values: &[
        ("notify_master", ANY),
        ("notify_backup", ANY),
        ("notify_fault", ANY),
        ("notify_stop", ANY),
        ("notify", ANY),
        ("smtp_alert", 1),
    ],
};

/// `global_defs`.
pub fn globals(n: &Node, g: &mut Globals, diags: &mut Vec<Diag>) {
    // keepalived (global_parser.c): 1 µs to 4294.967295 s.
    let garp =
        |c: &Node, diags: &mut Vec<Diag>| timer(c, Duration::from_micros(1), UINT_MAX_US, diags);
    for c in block(n, diags) {
        GLOBAL_SHAPES.check(c, diags);
        match c.keyword.as_str() {
            "router_id" => g.router_id = arg(c, 0, "name", diags).map(str::to_string),
            "vrrp_version" => match int(c, 0, 2, 3, "VRRP version", diags) {
                Some(2) => g.version = Version::V2,
                Some(_) => g.version = Version::V3,
                None => {}
            },
            "vrrp_strict" => g.strict = true,
            "vrrp_skip_check_adv_addr" => g.skip_check_adv_addr = true,
            // keepalived reports 0 and keeps its default, 0 (no pause).
            "vrrp_garp_interval" | "vrrp_gna_interval" if c.args.first().is_some_and(|a| a == "0") => {
                diags.push(ignored(
                    c,
                    "0 is outside keepalived's 0.000001 to 4294.967295 seconds (keepalived reports it and keeps its default 0: no pause between messages)",
                ))
            }
            "vrrp_garp_interval" => g.garp_interval = garp(c, diags).unwrap_or(g.garp_interval),
            "vrrp_gna_interval" => g.gna_interval = garp(c, diags).unwrap_or(g.gna_interval),
            "script_user" => g.script_user = run_as(c, diags),
            "enable_script_security" => g.enable_script_security = true,
            "notification_email" => g.notification_email = words(c, diags),
            "notification_email_from" => {
                g.notification_email_from = arg(c, 0, "address", diags).map(str::to_string)
            }
            "smtp_server" => {
                let a = parse_addr(c, 0, diags);
                let port = if c.args.len() > 1 {
                    uint(c, 1, 1, 65535, "port", diags).map(|p| p as u16)
                } else {
                    Some(25)
                };
                if let (Some(a), Some(p)) = (a, port) {
                    g.smtp_server = Some((a, p));
                }
            }
            "smtp_helo_name" => g.smtp_helo_name = arg(c, 0, "name", diags).map(str::to_string),
            // keepalived: whole seconds to 4294; 0 is reported and read as 1.
            "smtp_connect_timeout" => {
                if let Some(t) = whole_secs(c, 0, MAX_WHOLE_S, diags) {
                    if t.is_zero() {
                        diags.push(ignored(c, "must be greater than 0; using 1 second (as keepalived)"));
                    }
                    g.smtp_connect_timeout = t.max(Duration::from_secs(1));
                }
            }
            // The instances' defaults, in the instance keywords' units.
            "vrrp_garp_master_delay" => {
                g.garp_master_delay =
                    whole_secs(c, 0, MAX_WHOLE_S, diags).unwrap_or(g.garp_master_delay)
            }
            "vrrp_garp_master_repeat" | "vrrp_garp_master_refresh_repeat" => {
                if let Some(r) = uint(c, 0, 1, u32::MAX.into(), "messages", diags) {
                    if c.keyword == "vrrp_garp_master_repeat" {
                        g.garp_master_repeat = r as u32;
                    } else {
                        g.garp_master_refresh_repeat = r as u32;
                    }
                }
            }
            "vrrp_garp_master_refresh" => {
                g.garp_master_refresh =
                    whole_secs(c, 0, u32::MAX.into(), diags).filter(|d| !d.is_zero())
            }
            "vrrp_garp_lower_prio_delay" => {
                g.garp_lower_prio_delay = whole_secs(c, 0, MAX_WHOLE_S, diags)
            }
            "vrrp_garp_lower_prio_repeat" => {
                g.garp_lower_prio_repeat =
                    uint(c, 0, 0, u32::MAX.into(), "messages", diags).map(|r| r as u32)
            }
            "vrrp_lower_prio_no_advert" => g.lower_prio_no_advert = Some(flag(c, diags)),
            "vrrp_higher_prio_send_advert" => g.higher_prio_send_advert = flag(c, diags),
            // keepalived checks a unicast advert's source against
            // unicast_peer only with this set; lb always does (validate.rs).
            "vrrp_check_unicast_src" => {}
            "lvs_sync_daemon" => g.lvs_sync = lvs_sync(c, diags),
            "lb_sync_auth_key" => {
                g.sync_auth_key = arg(c, 0, "key", diags).map(|k| (k.to_string(), c.loc.clone()))
            }
            k if GLOBAL_IGNORED.contains(&k) => diags.push(ignored(c, "not implemented; ignored")),
            _ => diags.push(unknown(c, "global_defs")),
        }
    }
}

/// The smallest `maxlen` lb uses: the 8-byte header and one 72-byte IPv6 conn.
const MIN_SYNC_MAXLEN: u64 = 80;

/// `lvs_sync_daemon IFACE VRRP_INSTANCE [id ID] [maxlen LEN] [port PORT]
/// [ttl TTL] [group ADDR]`. keepalived ignores a bad option with a
/// message and keeps its default; lb reports each as an error (a sync that
/// silently runs with another id or group never meets its peer).
fn lvs_sync(c: &Node, diags: &mut Vec<Diag>) -> Option<LvsSync> {
    let iface = arg(c, 0, "interface", diags)?.to_string();
    const OPTIONS: [&str; 5] = ["id", "maxlen", "port", "ttl", "group"];
    // The instance is the second word unless it is left out (lb's
    // extension): absent, or the second word is an option.
    let instance = c
        .args
        .get(1)
        .filter(|a| !OPTIONS.contains(&a.as_str()))
        .cloned();
    let mut s = LvsSync {
        iface,
        instance,
        syncid: None,
        maxlen: None,
        port: crate::sync::wire::DEFAULT_PORT,
        ttl: 1,
        group: IpAddr::V4(crate::sync::wire::DEFAULT_GROUP),
        loc: c.loc.clone(),
    };
    let mut i = if s.instance.is_some() { 2 } else { 1 };
    let mut ok = true;
    while i < c.args.len() {
        let opt = c.args[i].as_str();
        if !OPTIONS.contains(&opt) {
            diags.push(Diag::error(
                &c.loc,
                Some("lvs_sync_daemon"),
                format!("unknown option '{opt}' (id, maxlen, port, ttl, group)"),
            ));
            ok = false;
            i += 1;
            continue;
        }
        if i + 1 >= c.args.len() {
            diags.push(Diag::error(
                &c.loc,
                Some("lvs_sync_daemon"),
                format!("no value after '{opt}'"),
            ));
            return None;
        }
        let v = i + 1;
        match opt {
            "id" => match uint(c, v, 0, 255, "sync id", diags) {
                Some(x) => s.syncid = Some(x as u8),
                None => ok = false,
            },
            // keepalived: up to 65535 - 20 - 8 (an IPv4 UDP payload).
            "maxlen" => match uint(c, v, 1, 65535 - 20 - 8, "bytes", diags) {
                // A message carries at least one conn: below a header and
                // an IPv6 conn it could carry none.
                Some(x) if x < MIN_SYNC_MAXLEN => {
                    diags.push(Diag::warning(
                        &c.loc,
                        Some("lvs_sync_daemon"),
                        format!("maxlen {x} is smaller than one message with one IPv6 conn; using {MIN_SYNC_MAXLEN}"),
                    ));
                    s.maxlen = Some(MIN_SYNC_MAXLEN as u16);
                }
                Some(x) => s.maxlen = Some(x as u16),
                None => ok = false,
            },
            "port" => match uint(c, v, 1, 65535, "port", diags) {
                Some(x) => s.port = x as u16,
                None => ok = false,
            },
            "ttl" => match uint(c, v, 1, 255, "hops", diags) {
                Some(x) => s.ttl = x as u8,
                None => ok = false,
            },
            _ => match parse_addr(c, v, diags) {
                Some(a) if a.is_multicast() => s.group = a,
                Some(a) => {
                    diags.push(Diag::error(
                        &c.loc,
                        Some("lvs_sync_daemon"),
                        format!("group {a} is not a multicast address"),
                    ));
                    ok = false;
                }
                None => ok = false,
            },
        }
        i += 2;
    }
    ok.then_some(s)
}

/// `vrrp_script NAME { … }`.
pub fn script(n: &Node, diags: &mut Vec<Diag>) -> Option<Script> {
    let name = arg(n, 0, "script name", diags)?.to_string();
    let mut s = Script {
        name,
        program: Program::new(Vec::new()),
        interval: Duration::from_secs(1),
        timeout: Duration::ZERO,
        rise: 1,
        fall: 1,
        weight: 0,
        init_fail: false,
        loc: n.loc.clone(),
    };
    for c in block(n, diags) {
        SCRIPT_SHAPES.check(c, diags);
        match c.keyword.as_str() {
            "script" => s.program.argv = command(c, diags).unwrap_or_default(),
            "interval" => s.interval = script_secs(c, diags).unwrap_or(s.interval),
            "timeout" => s.timeout = script_secs(c, diags).unwrap_or(s.timeout),
            // keepalived: 1 to 2^31 − 1.
            "rise" => {
                s.rise = uint(c, 0, 1, i32::MAX as u64, "successes", diags).map_or(1, |v| v as u32)
            }
            "fall" => {
                s.fall = uint(c, 0, 1, i32::MAX as u64, "failures", diags).map_or(1, |v| v as u32)
            }
            // keepalived: -253 to 253 (a track_script's own weight: ±254).
            "weight" => {
                if let Some(w) = int(c, 0, -253, 253, "priority points", diags) {
                    s.weight = w as i32;
                }
                match c.args.get(1).map(String::as_str) {
                    None => {}
                    Some("reverse") => diags.push(ignored(
                        c,
                        "'reverse' not implemented; weight used as given",
                    )),
                    Some(other) => diags.push(Diag::error(
                        &c.loc,
                        Some("weight"),
                        format!("unknown weight option '{other}' (keepalived knows 'reverse')"),
                    )),
                }
            }
            "init_fail" => s.init_fail = true,
            "user" => s.program.user = run_as(c, diags),
            _ => diags.push(unknown(c, "vrrp_script")),
        }
    }
    if s.program.argv.is_empty() {
        diags.push(Diag::error(&n.loc, Some("vrrp_script"), "missing 'script'"));
        return None;
    }
    if s.timeout.is_zero() {
        // keepalived: the interval when not given.
        s.timeout = s.interval;
    }
    Some(s)
}

/// A `vrrp_script`'s `interval` / `timeout`: keepalived 2.2.7 reads whole
/// seconds, 0 to 4294, and uses 1 for 0 (vrrp_parser.c). lb also runs
/// scripts at fractions of a second (down to 1 ms) and says that
/// keepalived would not.
fn script_secs(c: &Node, diags: &mut Vec<Diag>) -> Option<Duration> {
    let d = timer(c, Duration::ZERO, Duration::from_secs(MAX_WHOLE_S), diags)?;
    if d.is_zero() {
        diags.push(ignored(
            c,
            "must be greater than 0; using 1 second (as keepalived)",
        ));
        return Some(Duration::from_secs(1));
    }
    if d.subsec_nanos() != 0 {
        if d < Duration::from_millis(1) {
            diags.push(Diag::error(
                &c.loc,
                Some(&c.keyword),
                format!("'{}' is below lb's 0.001 seconds", c.args[0]),
            ));
            return None;
        }
        diags.push(ignored(
            c,
            &format!(
                "fractions of a second are lb's extension: keepalived 2.2.7 reads whole seconds (it reports '{}' and keeps its default)",
                c.args[0]
            ),
        ));
    }
    Some(d)
}

fn vip(c: &Node, diags: &mut Vec<Diag>) -> Option<Vip> {
    let (addr_text, prefix_text) = match c.keyword.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (c.keyword.as_str(), None),
    };
    let Ok(addr) = addr_text.parse::<IpAddr>() else {
        diags.push(Diag::error(
            &c.loc,
            Some(&c.keyword),
            "invalid virtual IP address",
        ));
        return None;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_text {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(p) if p <= max => p,
            _ => {
                diags.push(Diag::error(
                    &c.loc,
                    Some(&c.keyword),
                    format!("invalid prefix length '/{p}'"),
                ));
                return None;
            }
        },
    };
    let mut v = Vip {
        addr,
        prefix,
        dev: None,
        label: None,
        scope: 0,
    };
    let mut args = c.args.iter();
    while let Some(k) = args.next() {
        let mut value = |what: &str| {
            let v = args.next().cloned();
            if v.is_none() {
                diags.push(Diag::error(
                    &c.loc,
                    Some(&c.keyword),
                    format!("'{k}' needs {what}"),
                ));
            }
            v
        };
        match k.as_str() {
            "dev" => v.dev = value("an interface"),
            "label" => v.label = value("a label"),
            "scope" => {
                v.scope = match value("a scope").as_deref() {
                    Some("global") | Some("universe") | None => 0,
                    Some("site") => 200,
                    Some("link") => 253,
                    Some("host") => 254,
                    Some("nowhere") => 255,
                    Some(other) => {
                        diags.push(Diag::error(
                            &c.loc,
                            Some(&c.keyword),
                            format!("unknown scope '{other}'"),
                        ));
                        0
                    }
                }
            }
            "brd" | "broadcast" | "preferred_lft" => {
                value("a value");
            }
            "no_track" | "home" | "-nodad" | "nodad" | "noprefixroute" | "autojoin" => {}
            other => diags.push(Diag::warning(
                &c.loc,
                Some(&c.keyword),
                format!("virtual address option '{other}' not implemented; ignored"),
            )),
        }
    }
    Some(v)
}

fn tracks(n: &Node, diags: &mut Vec<Diag>) -> Vec<Track> {
    let mut out = Vec::new();
    for c in block(n, diags) {
        let weight = match c.args.first().map(String::as_str) {
            // keepalived (vrrp_parser.c): -254 to 254.
            Some("weight") => int(c, 1, -254, 254, "priority points", diags).map(|w| w as i32),
            Some(other) => {
                diags.push(Diag::warning(
                    &c.loc,
                    Some(&c.keyword),
                    format!("unexpected '{other}'; ignored"),
                ));
                None
            }
            None => None,
        };
        out.push(Track {
            name: c.keyword.clone(),
            weight,
        });
    }
    out
}

fn notify_keyword(c: &Node, notify: &mut Notify, diags: &mut Vec<Diag>) -> bool {
    match c.keyword.as_str() {
        "notify_master" => notify.master = notify_program(c, diags),
        "notify_backup" => notify.backup = notify_program(c, diags),
        "notify_fault" => notify.fault = notify_program(c, diags),
        "notify_stop" => notify.stop = notify_program(c, diags),
        "notify" => notify.any = notify_program(c, diags),
        "smtp_alert" => notify.smtp_alert = Some(flag(c, diags)),
        _ => return false,
    }
    true
}

/// `vrrp_instance NAME { … }`.
pub fn instance(n: &Node, g: &Globals, diags: &mut Vec<Diag>) -> Option<Instance> {
    let errors_before = errors(diags);
    let name = arg(n, 0, "instance name", diags)?.to_string();
    let mut iface = None;
    let mut vrid = None;
    let mut inst = Instance {
        name,
        initial: Initial::Backup,
        iface: String::new(),
        vrid: 0,
        priority: 100,
        advert_cs: 100,
        version: g.version,
        auth: None,
        vips: Vec::new(),
        excluded: Vec::new(),
        preempt: true,
        preempt_delay: Duration::ZERO,
        track_interfaces: Vec::new(),
        track_scripts: Vec::new(),
        track_files: Vec::new(),
        track_processes: Vec::new(),
        notify: Notify::default(),
        garp_master_delay: g.garp_master_delay,
        garp_master_repeat: g.garp_master_repeat,
        garp_master_refresh: g.garp_master_refresh,
        garp_master_refresh_repeat: g.garp_master_refresh_repeat,
        garp_lower_prio_repeat: 0,
        garp_lower_prio_delay: Duration::ZERO,
        lower_prio_no_advert: false,
        higher_prio_send_advert: g.higher_prio_send_advert,
        unicast_src: None,
        unicast_peers: Vec::new(),
        virtual_routes: Vec::new(),
        virtual_rules: Vec::new(),
        vmac: None,
        loc: n.loc.clone(),
    };
    let mut advert = None;
    // use_vmac's name and MAC as written; completed once the VRID is known.
    let mut vmac: Option<(Option<String>, Option<Vec<u8>>)> = None;
    let mut lower_prio_repeat = g.garp_lower_prio_repeat;
    let mut lower_prio_delay = g.garp_lower_prio_delay;
    let mut lower_prio_no_advert = g.lower_prio_no_advert;
    let mut nopreempt_loc = None;
    let mut state_set = None;
    let mut priority_set = None;
    let mut preempt_delay_loc = None;
    for c in block(n, diags) {
        INSTANCE_SHAPES.check(c, diags);
        if notify_keyword(c, &mut inst.notify, diags) {
            continue;
        }
        match c.keyword.as_str() {
            "state" => match c.args.first().map(String::as_str) {
                Some("MASTER") => state_set = Some(Initial::Master),
                Some("BACKUP") => state_set = Some(Initial::Backup),
                _ => diags.push(Diag::error(
                    &c.loc,
                    Some("state"),
                    "must be MASTER or BACKUP",
                )),
            },
            "interface" => iface = arg(c, 0, "interface", diags).map(str::to_string),
            "virtual_router_id" => {
                vrid = uint(c, 0, 1, 255, "VRID", diags).map(|v| v as u8).or(vrid)
            }
            "priority" => {
                if let Some(p) = uint(c, 0, 1, 255, "priority", diags) {
                    priority_set = Some(p as u8);
                }
            }
            // keepalived: 0.01 to 255 seconds, µs resolution; what each
            // version can carry is checked below.
            "advert_int" => {
                advert = timer(
                    c,
                    Duration::from_millis(10),
                    Duration::from_secs(255),
                    diags,
                )
                .map(|d| (d, c.loc.clone()))
            }
            "version" => match int(c, 0, 2, 3, "VRRP version", diags) {
                Some(2) => inst.version = Version::V2,
                Some(_) => inst.version = Version::V3,
                None => {}
            },
            "authentication" => {
                let mut kind = None;
                let mut pass = None;
                for a in block(c, diags) {
                    AUTH_SHAPES.check(a, diags);
                    match a.keyword.as_str() {
                        "auth_type" => kind = arg(a, 0, "type", diags).map(str::to_string),
                        "auth_pass" => pass = arg(a, 0, "password", diags).map(str::to_string),
                        _ => diags.push(unknown(a, "authentication")),
                    }
                }
                match kind.as_deref() {
                    Some("PASS") => match pass {
                        Some(p) => {
                            if p.len() > AUTH_LEN {
                                diags.push(Diag::warning(
                                    &c.loc,
                                    Some("auth_pass"),
                                    "longer than 8 characters; only the first 8 are used (as keepalived)",
                                ));
                            }
                            inst.auth = Some(pass_auth(&p));
                        }
                        None => diags.push(Diag::error(
                            &c.loc,
                            Some("authentication"),
                            "auth_type PASS needs auth_pass",
                        )),
                    },
                    Some("AH") => diags.push(Diag::error(
                        &c.loc,
                        Some("auth_type"),
                        "AH authentication not implemented (keepalived deprecates it); use PASS or none",
                    )),
                    _ => diags.push(Diag::error(
                        &c.loc,
                        Some("auth_type"),
                        "must be PASS or AH",
                    )),
                }
            }
            "virtual_ipaddress" => {
                for a in block(c, diags) {
                    inst.vips.extend(vip(a, diags));
                }
            }
            "virtual_routes" => {
                for r in block(c, diags) {
                    inst.virtual_routes.extend(super::route::route(r, diags));
                }
            }
            "use_vmac" => {
                let (mut name, mut mac) = (None, None);
                for a in &c.args {
                    if a.contains(':') {
                        let b: Option<Vec<u8>> = a
                            .split(':')
                            .map(|o| u8::from_str_radix(o, 16).ok())
                            .collect();
                        match b {
                            Some(b) if b.len() == 5 || b.len() == 6 => mac = Some(b),
                            _ => diags.push(Diag::error(
                                &c.loc,
                                Some("use_vmac"),
                                format!("invalid MAC address '{a}' (5 or 6 hex octets)"),
                            )),
                        }
                    } else if a.len() > 15 || a.contains('/') {
                        diags.push(Diag::error(
                            &c.loc,
                            Some("use_vmac"),
                            format!("invalid interface name '{a}' (at most 15 characters, no '/')"),
                        ));
                    } else {
                        name = Some(a.clone());
                    }
                }
                vmac = Some((name, mac));
            }
            // Adverts always go out and come in on the base interface here.
            "vmac_xmit_base" => {}
            "virtual_rules" => {
                for r in block(c, diags) {
                    inst.virtual_rules.extend(super::route::rule(r, diags));
                }
            }
            "virtual_ipaddress_excluded" => {
                for a in block(c, diags) {
                    inst.excluded.extend(vip(a, diags));
                }
            }
            "nopreempt" => {
                inst.preempt = false;
                nopreempt_loc = Some(c.loc.clone());
            }
            "preempt" => inst.preempt = true,
            // keepalived: 0 to 1000 seconds (TIMER_MAX_SEC), µs resolution.
            "preempt_delay" => {
                if let Some(d) = timer(c, Duration::ZERO, Duration::from_secs(1000), diags) {
                    inst.preempt_delay = d;
                    preempt_delay_loc = Some(c.loc.clone());
                }
            }
            "track_interface" => inst.track_interfaces = tracks(c, diags),
            "track_script" => inst.track_scripts = tracks(c, diags),
            "track_file" => inst.track_files = track::refs(c, diags),
            "track_process" => inst.track_processes = track::refs(c, diags),
            // keepalived (vrrp_parser.c): whole seconds, 0 to 4294.
            "garp_master_delay" => {
                inst.garp_master_delay =
                    whole_secs(c, 0, MAX_WHOLE_S, diags).unwrap_or(inst.garp_master_delay)
            }
            // keepalived: 0 (off) to 2^32 − 1 messages; the delay as
            // garp_master_delay.
            "garp_lower_prio_repeat" => {
                lower_prio_repeat = uint(c, 0, 0, u32::MAX.into(), "messages", diags)
                    .map(|r| r as u32)
                    .or(lower_prio_repeat)
            }
            "garp_lower_prio_delay" => {
                lower_prio_delay = whole_secs(c, 0, MAX_WHOLE_S, diags).or(lower_prio_delay)
            }
            "lower_prio_no_advert" => lower_prio_no_advert = Some(flag(c, diags)),
            "higher_prio_send_advert" => inst.higher_prio_send_advert = flag(c, diags),
            // Always on here: a unicast advert from outside unicast_peer is
            // dropped and counted as unknown-peer (vrrp::validate).
            "check_unicast_src" => {}
            // keepalived: whole seconds, 0 (off) to 2^32 − 1.
            "garp_master_refresh" => {
                inst.garp_master_refresh =
                    whole_secs(c, 0, u32::MAX.into(), diags).filter(|d| !d.is_zero())
            }
            // keepalived: 0 to 2^32 − 1 messages, 0 reported and read as 1.
            "garp_master_repeat" | "garp_master_refresh_repeat" => {
                if let Some(r) = uint(c, 0, 0, u32::MAX.into(), "messages", diags) {
                    if r == 0 {
                        diags.push(ignored(
                            c,
                            "must be greater than 0; using 1 (as keepalived)",
                        ));
                    }
                    let r = (r as u32).max(1);
                    if c.keyword == "garp_master_repeat" {
                        inst.garp_master_repeat = r;
                    } else {
                        inst.garp_master_refresh_repeat = r;
                    }
                }
            }
            "unicast_src_ip" | "mcast_src_ip" => {
                inst.unicast_src = parse_addr(c, 0, diags);
            }
            "unicast_peer" => {
                for a in block(c, diags) {
                    match a.keyword.parse() {
                        Ok(ip) => inst.unicast_peers.push(ip),
                        Err(_) => diags.push(Diag::error(
                            &a.loc,
                            Some(&a.keyword),
                            "invalid unicast peer address",
                        )),
                    }
                }
            }
            k if INSTANCE_IGNORED.contains(&k) => {
                diags.push(ignored(c, "not implemented; ignored"))
            }
            _ => diags.push(unknown(c, "vrrp_instance")),
        }
    }
    // keepalived (vrrp.c vrrp_complete_instance): without `priority`, a
    // MASTER is the address owner (255), others 100; without `state`, the
    // owner starts as MASTER, others as BACKUP.
    inst.priority = priority_set.unwrap_or(match state_set {
        Some(Initial::Master) => 255,
        _ => 100,
    });
    inst.initial = state_set.unwrap_or(if inst.priority == 255 {
        Initial::Master
    } else {
        Initial::Backup
    });
    match iface {
        Some(i) => inst.iface = i,
        None => diags.push(Diag::error(
            &n.loc,
            Some("vrrp_instance"),
            "missing 'interface'",
        )),
    }
    match vrid {
        Some(v) => inst.vrid = v,
        None => diags.push(Diag::error(
            &n.loc,
            Some("vrrp_instance"),
            "missing 'virtual_router_id'",
        )),
    }
    if inst.vips.is_empty() {
        diags.push(Diag::error(
            &n.loc,
            Some("vrrp_instance"),
            "no virtual_ipaddress",
        ));
    } else {
        let v6 = inst.is_ipv6();
        if inst.vips.iter().any(|v| v.addr.is_ipv6() != v6) {
            diags.push(Diag::error(
                &n.loc,
                Some("virtual_ipaddress"),
                "IPv4 and IPv6 addresses in one instance (use one instance per family; excluded addresses may mix)",
            ));
        }
        if v6 && inst.version == Version::V2 {
            // keepalived does the same: IPv6 exists only in VRRPv3.
            inst.version = Version::V3;
        }
    }
    if let Some((mut d, loc)) = advert {
        if inst.version == Version::V2 && d.subsec_millis() != 0 && d <= Duration::from_secs(255) {
            // keepalived 2.2.7: "VRRPv2 advertisement interval … must be an
            // integer. rounding" — to the nearest second, at least 1.
            let whole = Duration::from_secs(d.as_secs_f64().round().max(1.0) as u64);
            diags.push(Diag::warning(
                &loc,
                Some("advert_int"),
                format!(
                    "VRRPv2 carries whole seconds; {} s rounded to {} s (as keepalived; use version 3 for less)",
                    secs_text(d),
                    whole.as_secs()
                ),
            ));
            d = whole;
        }
        let cs = (d.as_millis() / 10) as u64;
        let bad = match inst.version {
            // v2 carries whole seconds (1–255).
            Version::V2 => d.subsec_millis() != 0 || !(1..=255).contains(&d.as_secs()),
            // v3: 12 bits of centiseconds.
            Version::V3 => !(1..=4095).contains(&cs),
        };
        if bad {
            let what = match inst.version {
                Version::V2 => {
                    "VRRPv2 needs a whole number of seconds from 1 to 255 (use version 3 for less)"
                }
                Version::V3 => "VRRPv3 takes 0.01 to 40.95 seconds",
            };
            diags.push(Diag::error(&loc, Some("advert_int"), what));
        } else {
            inst.advert_cs = cs as u16;
        }
    }
    if inst.version == Version::V3 && inst.auth.is_some() {
        diags.push(Diag::warning(
            &n.loc,
            Some("authentication"),
            "VRRPv3 has no authentication; ignored",
        ));
        inst.auth = None;
    }
    if let Some((name, mac)) = vmac {
        let v6 = inst.is_ipv6();
        let mut m = [0, 0, 0x5e, 0, if v6 { 2 } else { 1 }, inst.vrid];
        if let Some(b) = mac {
            m[..b.len()].copy_from_slice(&b);
        }
        inst.vmac = Some(Vmac {
            name: name
                .unwrap_or_else(|| format!("vrrp{}.{}", if v6 { "6" } else { "" }, inst.vrid)),
            mac: m,
        });
    }
    // Unset lower-priority settings follow the master ones (keepalived.conf(5)).
    inst.garp_lower_prio_repeat = lower_prio_repeat.unwrap_or(inst.garp_master_repeat);
    inst.garp_lower_prio_delay = lower_prio_delay.unwrap_or(inst.garp_master_delay);
    inst.lower_prio_no_advert = lower_prio_no_advert.unwrap_or(g.strict);
    if g.strict {
        if !inst.lower_prio_no_advert {
            diags.push(Diag::warning(
                &n.loc,
                Some("lower_prio_no_advert"),
                "vrrp_strict does not allow clearing lower_prio_no_advert; set (as keepalived)",
            ));
            inst.lower_prio_no_advert = true;
        }
        if inst.higher_prio_send_advert {
            diags.push(Diag::warning(
                &n.loc,
                Some("higher_prio_send_advert"),
                "vrrp_strict does not allow higher_prio_send_advert; cleared (as keepalived)",
            ));
            inst.higher_prio_send_advert = false;
        }
        if inst.auth.is_some() {
            diags.push(Diag::warning(
                &n.loc,
                Some("authentication"),
                "vrrp_strict does not allow authentication; ignored (as keepalived)",
            ));
            inst.auth = None;
        }
        if !inst.unicast_peers.is_empty() {
            diags.push(Diag::error(
                &n.loc,
                Some("unicast_peer"),
                "vrrp_strict does not allow unicast peers",
            ));
        }
        if !inst.preempt {
            diags.push(Diag::warning(
                &n.loc,
                Some("nopreempt"),
                "vrrp_strict does not allow nopreempt; preempting (as keepalived)",
            ));
            inst.preempt = true;
        }
    }
    // keepalived (vrrp.c vrrp_complete_instance): the address owner always
    // preempts, and an instance starting as MASTER neither honours
    // nopreempt nor waits preempt_delay; each is cleared with a message.
    let nopreempt_at = nopreempt_loc.unwrap_or_else(|| n.loc.clone());
    if !inst.preempt && inst.priority == 255 {
        diags.push(Diag::warning(
            &nopreempt_at,
            Some("nopreempt"),
            "nopreempt is incompatible with priority 255 (the address owner); preempting (as keepalived)",
        ));
        inst.preempt = true;
    }
    if inst.initial == Initial::Master {
        if !inst.preempt {
            diags.push(Diag::warning(
                &nopreempt_at,
                Some("nopreempt"),
                "nopreempt does not work with 'state MASTER'; cleared: starting as MASTER and preempting (as keepalived)",
            ));
            inst.preempt = true;
        }
        if !inst.preempt_delay.is_zero() {
            diags.push(Diag::warning(
                preempt_delay_loc.as_ref().unwrap_or(&n.loc),
                Some("preempt_delay"),
                "preempt_delay does not work with 'state MASTER'; cleared (as keepalived)",
            ));
            inst.preempt_delay = Duration::ZERO;
        }
    }
    if let Some(src) = inst.unicast_src {
        if inst
            .vips
            .first()
            .is_some_and(|v| v.addr.is_ipv6() != src.is_ipv6())
        {
            diags.push(Diag::error(
                &n.loc,
                Some("unicast_src_ip"),
                "address family differs from the virtual addresses'",
            ));
        }
    }
    (errors(diags) == errors_before).then_some(inst)
}

/// `vrrp_sync_group NAME { group { … } … }`.
pub fn sync_group(n: &Node, diags: &mut Vec<Diag>) -> Option<SyncGroup> {
    let name = arg(n, 0, "group name", diags)?.to_string();
    let mut g = SyncGroup {
        name,
        members: Vec::new(),
        notify: Notify::default(),
        track_scripts: Vec::new(),
        track_files: Vec::new(),
        track_processes: Vec::new(),
        loc: n.loc.clone(),
    };
    for c in block(n, diags) {
        GROUP_SHAPES.check(c, diags);
        if notify_keyword(c, &mut g.notify, diags) {
            continue;
        }
        match c.keyword.as_str() {
            "group" => g.members = words(c, diags),
            "track_script" => g.track_scripts = tracks(c, diags),
            "track_file" => g.track_files = track::refs(c, diags),
            "track_process" => g.track_processes = track::refs(c, diags),
            "global_tracking" | "sync_group_tracking_weight" => {
                diags.push(ignored(c, "not implemented; ignored"))
            }
            _ => diags.push(unknown(c, "vrrp_sync_group")),
        }
    }
    Some(g)
}

/// Cross-checks once every block is read: names resolve, VRIDs are unique
/// per interface and family.
pub fn finish(v: &mut Vrrp, diags: &mut Vec<Diag>) {
    if let Some((s, name)) = v
        .globals
        .lvs_sync
        .as_ref()
        .and_then(|s| Some((s, s.instance.as_ref()?)))
    {
        if !v.instances.iter().any(|i| &i.name == name) {
            // keepalived logs this and runs without sync; lb refuses it:
            // the operator asked for sync.
            diags.push(Diag::error(
                &s.loc,
                Some("lvs_sync_daemon"),
                format!("no vrrp_instance named '{name}'"),
            ));
        }
    }
    if let (Some((_, loc)), None) = (&v.globals.sync_auth_key, &v.globals.lvs_sync) {
        diags.push(Diag::warning(
            loc,
            Some("lb_sync_auth_key"),
            "no lvs_sync_daemon: the key is not used",
        ));
    }
    let mut seen: BTreeMap<(String, bool, u8), String> = BTreeMap::new();
    for i in &v.instances {
        let key = (i.iface.clone(), i.is_ipv6(), i.vrid);
        if let Some(other) = seen.insert(key, i.name.clone()) {
            diags.push(Diag::error(
                &i.loc,
                Some("virtual_router_id"),
                format!("{} is also used by {other} on {}", i.vrid, i.iface),
            ));
        }
        for t in &i.track_scripts {
            if !v.scripts.contains_key(&t.name) {
                diags.push(Diag::error(
                    &i.loc,
                    Some("track_script"),
                    format!("no vrrp_script named '{}'", t.name),
                ));
            }
        }
    }
    let refs = v
        .instances
        .iter()
        .map(|i| (&i.track_files, &i.track_processes));
    let refs = refs.chain(
        v.groups
            .iter()
            .map(|g| (&g.track_files, &g.track_processes)),
    );
    for (files, procs) in refs {
        for t in files.iter().filter(|t| !v.files.contains_key(&t.name)) {
            diags.push(Diag::error(
                &t.loc,
                Some("track_file"),
                format!("no track_file named '{}'", t.name),
            ));
        }
        for t in procs.iter().filter(|t| !v.processes.contains_key(&t.name)) {
            diags.push(Diag::error(
                &t.loc,
                Some("track_process"),
                format!("no vrrp_track_process named '{}'", t.name),
            ));
        }
    }
    let mut member_of: BTreeMap<String, String> = BTreeMap::new();
    for g in &v.groups {
        for m in &g.members {
            if !v.instances.iter().any(|i| &i.name == m) {
                diags.push(Diag::error(
                    &g.loc,
                    Some("group"),
                    format!("no vrrp_instance named '{m}'"),
                ));
            }
            if let Some(other) = member_of.insert(m.clone(), g.name.clone()) {
                diags.push(Diag::error(
                    &g.loc,
                    Some("group"),
                    format!("{m} is already in vrrp_sync_group {other}"),
                ));
            }
        }
        for t in &g.track_scripts {
            if !v.scripts.contains_key(&t.name) {
                diags.push(Diag::error(
                    &g.loc,
                    Some("track_script"),
                    format!("no vrrp_script named '{}'", t.name),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_is_truncated_and_padded_to_eight_bytes() {
        assert_eq!(&pass_auth("secret"), b"secret\0\0");
        assert_eq!(&pass_auth("averylongpassword"), b"averylon");
    }

    fn instances(globals: &str, inst: &str) -> (Vec<Instance>, Vec<String>) {
        let text = format!(
            "global_defs {{\n{globals}\n}}\nvrrp_instance V {{\n interface lo\n virtual_router_id 7\n\
             virtual_ipaddress {{\n  10.9.9.9\n }}\n{inst}\n}}\n"
        );
        let l = crate::config::load_str(&text, std::path::Path::new("t.conf"));
        let d = l.diags.iter().map(|d| d.to_string()).collect();
        (l.config.vrrp.instances, d)
    }

    /// issue 13, input 6: use_vmac with keepalived's default name and MAC.
    #[test]
    fn use_vmac_names_and_macs() {
        let (i, d) = instances("", "use_vmac\nvmac_xmit_base");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            i[0].vmac,
            Some(Vmac {
                name: "vrrp.7".into(),
                mac: [0, 0, 0x5e, 0, 1, 7]
            })
        );
        let (i, _) = instances("", "use_vmac vip1 02:11:22:33:44");
        assert_eq!(
            i[0].vmac,
            Some(Vmac {
                name: "vip1".into(),
                mac: [2, 0x11, 0x22, 0x33, 0x44, 7]
            })
        );
        let (_, d) = instances("", "use_vmac 02:11:zz:33:44 averyveryverylongname");
        assert_eq!(
            d,
            [
                "t.conf:10:1: error: use_vmac: invalid MAC address '02:11:zz:33:44' (5 or 6 hex octets)",
                "t.conf:10:1: error: use_vmac: invalid interface name 'averyveryverylongname' (at most 15 characters, no '/')",
            ]
        );
    }

    /// issue 13, input 4: the split-brain keywords are read, with
    /// keepalived.conf(5)'s defaults: lower-priority GARPs follow the master
    /// ones, global defaults reach instances, vrrp_strict forces the RFC.
    #[test]
    fn split_brain_keywords_and_their_defaults() {
        let (i, d) = instances("", "");
        assert!(d.is_empty(), "{d:?}");
        let i = &i[0];
        assert_eq!(
            (
                i.garp_lower_prio_repeat,
                i.garp_lower_prio_delay,
                i.lower_prio_no_advert,
                i.higher_prio_send_advert
            ),
            (5, Duration::from_secs(5), false, false)
        );
        let (i, d) = instances(
            "vrrp_garp_master_repeat 3\nvrrp_garp_master_delay 2\nvrrp_higher_prio_send_advert",
            "",
        );
        assert!(d.is_empty(), "{d:?}");
        let i = &i[0];
        assert_eq!(
            (
                i.garp_master_repeat,
                i.garp_lower_prio_repeat,
                i.garp_lower_prio_delay,
                i.higher_prio_send_advert
            ),
            (3, 3, Duration::from_secs(2), true)
        );
        let (i, _) = instances(
            "vrrp_garp_lower_prio_repeat 2",
            "garp_lower_prio_repeat 4\ngarp_lower_prio_delay 0\nlower_prio_no_advert\nhigher_prio_send_advert false",
        );
        let i = &i[0];
        assert_eq!(
            (
                i.garp_lower_prio_repeat,
                i.garp_lower_prio_delay,
                i.lower_prio_no_advert,
                i.higher_prio_send_advert
            ),
            (4, Duration::ZERO, true, false)
        );
        let (i, d) = instances(
            "vrrp_strict",
            "higher_prio_send_advert\nlower_prio_no_advert off",
        );
        let i = &i[0];
        assert!((i.lower_prio_no_advert, i.higher_prio_send_advert) == (true, false));
        assert!(
            d.iter()
                .any(|x| x.contains("t.conf:4:1: warning: higher_prio_send_advert")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|x| x.contains("warning: lower_prio_no_advert")),
            "{d:?}"
        );
    }
}
