//! The VRRP side of keepalived.conf: `global_defs`, `vrrp_script`,
//! `vrrp_instance` and `vrrp_sync_group`, with keepalived's defaults.

use std::{collections::BTreeMap, net::IpAddr, path::Path, time::Duration};

use super::{
    track::{self, TrackFile, TrackProcess, TrackRef},
    value::{
        arg, block, command, errors, flag, ignored, parse_addr, parse_num, run_as, secs, unknown,
        words,
    },
    Diag, Loc, Node,
};

/// The (uid, gid) a program runs as; `None`: the agent's.
pub type RunAs = Option<(u32, u32)>;

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
    /// Account the VRRP scripts run as unless they name their own.
    pub script_user: Option<(u32, u32)>,
    pub enable_script_security: bool,
    pub notification_email: Vec<String>,
    pub notification_email_from: Option<String>,
    pub smtp_server: Option<(IpAddr, u16)>,
    pub smtp_helo_name: Option<String>,
    pub smtp_connect_timeout: Duration,
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
        }
    }
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
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub weight: i32,
    /// Start failed rather than good.
    pub init_fail: bool,
    pub user: Option<(u32, u32)>,
    pub loc: Loc,
}

/// A tracked script or interface with the weight it adds (0: failure means FAULT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub name: String,
    /// `None`: the script's own weight.
    pub weight: Option<i32>,
}

/// Programs run on state changes (words, never a shell).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub master: Option<Vec<String>>,
    pub backup: Option<Vec<String>>,
    pub fault: Option<Vec<String>>,
    pub stop: Option<Vec<String>>,
    /// Called with TYPE NAME STATE PRIORITY appended.
    pub any: Option<Vec<String>>,
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
    pub unicast_src: Option<IpAddr>,
    pub unicast_peers: Vec<IpAddr>,
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
    "lvs_sync_daemon",
    "lvs_timeouts",
    "vrrp_mcast_group4",
    "vrrp_mcast_group6",
    "max_auto_priority",
    "vrrp_no_swap",
    "checker_no_swap",
    "vrrp_priority",
    "checker_priority",
    "vrrp_garp_master_delay",
    "vrrp_garp_master_repeat",
    "vrrp_garp_master_refresh",
    "vrrp_garp_master_refresh_repeat",
    "vrrp_garp_lower_prio_delay",
    "vrrp_garp_lower_prio_repeat",
    "vrrp_lower_prio_no_advert",
    "vrrp_higher_prio_send_advert",
    "vrrp_check_unicast_src",
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
    "use_vmac",
    "vmac_xmit_base",
    "native_ipv6",
    "accept",
    "no_accept",
    "lvs_sync_daemon_interface",
    "debug",
    "virtual_routes",
    "virtual_rules",
    "garp_lower_prio_delay",
    "garp_lower_prio_repeat",
    "lower_prio_no_advert",
    "higher_prio_send_advert",
    "kernel_rx_buf_size",
    "strict_mode",
    "unicast_ttl",
    "check_unicast_src",
];

/// `global_defs`.
pub fn globals(n: &Node, g: &mut Globals, diags: &mut Vec<Diag>) {
    for c in block(n, diags) {
        match c.keyword.as_str() {
            "router_id" => g.router_id = arg(c, 0, "name", diags).map(str::to_string),
            "vrrp_version" => match c.args.first().map(String::as_str) {
                Some("2") => g.version = Version::V2,
                Some("3") => g.version = Version::V3,
                _ => diags.push(Diag::error(&c.loc, Some("vrrp_version"), "must be 2 or 3")),
            },
            "vrrp_strict" => g.strict = true,
            "vrrp_skip_check_adv_addr" => g.skip_check_adv_addr = true,
            "vrrp_garp_interval" => g.garp_interval = secs(c, diags).unwrap_or_default(),
            "vrrp_gna_interval" => g.gna_interval = secs(c, diags).unwrap_or_default(),
            "script_user" => g.script_user = run_as(c, diags),
            "enable_script_security" => g.enable_script_security = true,
            "notification_email" => g.notification_email = words(c, diags),
            "notification_email_from" => {
                g.notification_email_from = arg(c, 0, "address", diags).map(str::to_string)
            }
            "smtp_server" => {
                let a = parse_addr(c, 0, diags);
                let port = if c.args.len() > 1 {
                    parse_num(c, 1, "port", diags)
                } else {
                    Some(25)
                };
                if let (Some(a), Some(p)) = (a, port) {
                    g.smtp_server = Some((a, p));
                }
            }
            "smtp_helo_name" => g.smtp_helo_name = arg(c, 0, "name", diags).map(str::to_string),
            "smtp_connect_timeout" => {
                if let Some(t) = secs(c, diags) {
                    g.smtp_connect_timeout = t;
                }
            }
            k if GLOBAL_IGNORED.contains(&k) => diags.push(ignored(c, "not implemented; ignored")),
            _ => diags.push(unknown(c, "global_defs")),
        }
    }
}

/// `vrrp_script NAME { … }`.
pub fn script(n: &Node, diags: &mut Vec<Diag>) -> Option<Script> {
    let name = arg(n, 0, "script name", diags)?.to_string();
    let mut s = Script {
        name,
        argv: Vec::new(),
        interval: Duration::from_secs(1),
        timeout: Duration::ZERO,
        rise: 1,
        fall: 1,
        weight: 0,
        init_fail: false,
        user: None,
        loc: n.loc.clone(),
    };
    for c in block(n, diags) {
        match c.keyword.as_str() {
            "script" => s.argv = command(c, diags).unwrap_or_default(),
            "interval" => s.interval = secs(c, diags).unwrap_or(s.interval),
            "timeout" => s.timeout = secs(c, diags).unwrap_or_default(),
            "rise" => s.rise = parse_num::<u32>(c, 0, "count", diags).unwrap_or(1).max(1),
            "fall" => s.fall = parse_num::<u32>(c, 0, "count", diags).unwrap_or(1).max(1),
            "weight" => {
                if let Some(w) = parse_num::<i32>(c, 0, "weight", diags) {
                    if !(-254..=254).contains(&w) {
                        diags.push(Diag::error(
                            &c.loc,
                            Some("weight"),
                            "must be between -254 and 254",
                        ));
                    }
                    s.weight = w.clamp(-254, 254);
                }
                if c.args.get(1).map(String::as_str) == Some("reverse") {
                    diags.push(ignored(
                        c,
                        "'reverse' not implemented; weight used as given",
                    ));
                }
            }
            "init_fail" => s.init_fail = true,
            "user" => s.user = run_as(c, diags),
            _ => diags.push(unknown(c, "vrrp_script")),
        }
    }
    if s.argv.is_empty() {
        diags.push(Diag::error(&n.loc, Some("vrrp_script"), "missing 'script'"));
        return None;
    }
    if s.timeout.is_zero() {
        // keepalived: the interval when not given.
        s.timeout = s.interval;
    }
    if s.interval.is_zero() {
        s.interval = Duration::from_secs(1);
    }
    Some(s)
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
            Some("weight") => parse_num::<i32>(c, 1, "weight", diags).map(|w| w.clamp(-254, 254)),
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
        "notify_master" => notify.master = command(c, diags),
        "notify_backup" => notify.backup = command(c, diags),
        "notify_fault" => notify.fault = command(c, diags),
        "notify_stop" => notify.stop = command(c, diags),
        "notify" => notify.any = command(c, diags),
        "smtp_alert" => notify.smtp_alert = Some(flag(c)),
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
        garp_master_delay: Duration::from_secs(5),
        garp_master_repeat: 5,
        garp_master_refresh: None,
        garp_master_refresh_repeat: 1,
        unicast_src: None,
        unicast_peers: Vec::new(),
        loc: n.loc.clone(),
    };
    let mut advert = None;
    for c in block(n, diags) {
        if notify_keyword(c, &mut inst.notify, diags) {
            continue;
        }
        match c.keyword.as_str() {
            "state" => match c.args.first().map(String::as_str) {
                Some("MASTER") => inst.initial = Initial::Master,
                Some("BACKUP") => inst.initial = Initial::Backup,
                _ => diags.push(Diag::error(
                    &c.loc,
                    Some("state"),
                    "must be MASTER or BACKUP",
                )),
            },
            "interface" => iface = arg(c, 0, "interface", diags).map(str::to_string),
            "virtual_router_id" => match parse_num::<u32>(c, 0, "VRID", diags) {
                Some(v @ 1..=255) => vrid = Some(v as u8),
                Some(_) => diags.push(Diag::error(
                    &c.loc,
                    Some("virtual_router_id"),
                    "must be between 1 and 255",
                )),
                None => {}
            },
            "priority" => match parse_num::<u32>(c, 0, "priority", diags) {
                Some(p @ 1..=255) => inst.priority = p as u8,
                Some(_) => diags.push(Diag::error(
                    &c.loc,
                    Some("priority"),
                    "must be between 1 and 255",
                )),
                None => {}
            },
            "advert_int" => advert = secs(c, diags).map(|d| (d, c.loc.clone())),
            "version" => match c.args.first().map(String::as_str) {
                Some("2") => inst.version = Version::V2,
                Some("3") => inst.version = Version::V3,
                _ => diags.push(Diag::error(&c.loc, Some("version"), "must be 2 or 3")),
            },
            "authentication" => {
                let mut kind = None;
                let mut pass = None;
                for a in block(c, diags) {
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
            "virtual_ipaddress_excluded" => {
                for a in block(c, diags) {
                    inst.excluded.extend(vip(a, diags));
                }
            }
            "nopreempt" => inst.preempt = false,
            "preempt" => inst.preempt = true,
            "preempt_delay" => {
                inst.preempt_delay = secs(c, diags).unwrap_or_default();
                if inst.preempt_delay > Duration::from_secs(1000) {
                    diags.push(Diag::error(
                        &c.loc,
                        Some("preempt_delay"),
                        "must be at most 1000 seconds",
                    ));
                }
            }
            "track_interface" => inst.track_interfaces = tracks(c, diags),
            "track_script" => inst.track_scripts = tracks(c, diags),
            "track_file" => inst.track_files = track::refs(c, diags),
            "track_process" => inst.track_processes = track::refs(c, diags),
            "garp_master_delay" => {
                inst.garp_master_delay = secs(c, diags).unwrap_or(inst.garp_master_delay)
            }
            "garp_master_repeat" => {
                inst.garp_master_repeat = parse_num(c, 0, "count", diags).unwrap_or(5)
            }
            "garp_master_refresh" => {
                inst.garp_master_refresh = secs(c, diags).filter(|d| !d.is_zero())
            }
            "garp_master_refresh_repeat" => {
                inst.garp_master_refresh_repeat = parse_num(c, 0, "count", diags).unwrap_or(1)
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
    if let Some((d, loc)) = advert {
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
    if g.strict {
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
    if !inst.preempt && inst.initial == Initial::Master {
        diags.push(Diag::warning(
            &n.loc,
            Some("nopreempt"),
            "nopreempt needs 'state BACKUP'; starting as BACKUP (as keepalived)",
        ));
        inst.initial = Initial::Backup;
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
    // Scripts run as script_user unless they name their own.
    if let Some(u) = v.globals.script_user {
        for s in v.scripts.values_mut() {
            s.user.get_or_insert(u);
        }
    }
    if v.globals.enable_script_security {
        let notify_user = v.globals.script_user;
        // (words, account it runs as, where it is configured)
        let mut programs: Vec<(&Vec<String>, RunAs, &Loc)> = Vec::new();
        for s in v.scripts.values() {
            programs.push((&s.argv, s.user, &s.loc));
        }
        let notifies = v
            .instances
            .iter()
            .map(|i| (&i.notify, &i.loc))
            .chain(v.groups.iter().map(|g| (&g.notify, &g.loc)));
        for (n, loc) in notifies {
            for argv in [&n.master, &n.backup, &n.fault, &n.stop, &n.any]
                .into_iter()
                .flatten()
            {
                programs.push((argv, notify_user, loc));
            }
        }
        for (argv, user, loc) in programs {
            if user.is_some_and(|(uid, _)| uid != 0) {
                continue;
            }
            if let Some(why) = insecure(Path::new(&argv[0])) {
                diags.push(Diag::error(
                    loc,
                    Some("enable_script_security"),
                    format!("{} runs as root but {why}; refused", argv[0]),
                ));
            }
        }
    }
}

/// keepalived's script security: a program run as root must be given by
/// absolute path, and neither it nor any directory above it may be writable
/// by anyone but root.
pub fn insecure(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    if !path.is_absolute() {
        return Some("is not an absolute path".into());
    }
    let mut p = Some(path);
    while let Some(cur) = p {
        match std::fs::metadata(cur) {
            Err(e) => return Some(format!("{} cannot be read ({e})", cur.display())),
            Ok(m) => {
                if m.uid() != 0 {
                    return Some(format!("{} is owned by uid {}", cur.display(), m.uid()));
                }
                // Group / other write, unless a sticky directory (as /tmp).
                let sticky = m.is_dir() && m.mode() & 0o1000 != 0;
                if m.mode() & 0o022 != 0 && !sticky {
                    return Some(format!(
                        "{} is writable by non-root users (mode {:o})",
                        cur.display(),
                        m.mode() & 0o7777
                    ));
                }
            }
        }
        p = cur.parent();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_is_truncated_and_padded_to_eight_bytes() {
        assert_eq!(&pass_auth("secret"), b"secret\0\0");
        assert_eq!(&pass_auth("averylongpassword"), b"averylon");
    }
}
