//! `lb export` / `GET /v1/export`: the configuration the agent runs (the
//! file merged with the runtime layer) written back as a keepalived.conf
//! that reproduces it.
//!
//! Every value is written as keepalived 2.2.7 reads it (and as lb's own
//! reader, [`super::load_str`], reads it back): the timings of each block
//! as that block sets them (a checker's unset timing is still inherited
//! from its real and virtual server), programs as one quoted word with
//! their account, a real's own forwarding method as `lvs_method` where it
//! differs from its virtual server's `lb_kind`, and the members of a
//! `virtual_server group` written as a `virtual_server_group` again while
//! they still share one block. The test of this module and
//! `lb-user/tests/export.rs` read each export back and compare
//! [`super::dump::dump`] of both.
//!
//! What keepalived.conf cannot say is named in the header comment:
//! the quorum of a service made at runtime (ipvs has none, so lb keeps 0;
//! keepalived's smallest is 1, which with no `quorum_up` / `quorum_down`
//! and no sorry server changes nothing but a log line), and the blocks lb
//! reads but does not implement (`static_ipaddress` and the other
//! [`super::TOP_LATER`] blocks), which are not kept in the model.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::{
    check::{Check, CheckKind, Timing},
    group,
    route::{RouteKind, RuleAction, VirtualRoute, VirtualRule},
    track::{ParamMatch, TrackRef},
    value::secs_text,
    vrrp::{Initial, Instance, Notify, SyncGroup, Track, Version, Vip},
    Config, Node, RealServer, VirtualServer,
};
use crate::util::process::Program;

/// The configuration `c` as a keepalived.conf, with a header comment
/// saying when and from which files it was exported.
pub fn keepalived_conf(c: &Config) -> String {
    keepalived_conf_at(c, SystemTime::now())
}

/// [`keepalived_conf`] with the export time given.
pub fn keepalived_conf_at(c: &Config, now: SystemTime) -> String {
    let mut w = Writer::default();
    header(&mut w, c, now);
    global_defs(&mut w, c);
    for t in c.vrrp.files.values() {
        w.open(&format!("track_file {}", word(&t.name)));
        w.line(&format!("file {}", word(&t.path.to_string_lossy())));
        w.line(&format!(
            "weight {}{}",
            t.weight,
            if t.reverse { " reverse" } else { "" }
        ));
        if let Some((v, overwrite)) = t.init {
            w.line(&format!(
                "init_file {v}{}",
                if overwrite { " overwrite" } else { "" }
            ));
        }
        w.close();
    }
    for p in c.vrrp.processes.values() {
        track_process(&mut w, p);
    }
    for s in c.vrrp.scripts.values() {
        w.open(&format!("vrrp_script {}", word(&s.name)));
        w.line(&format!("script {}", program_word(&s.program)));
        if let Some(u) = s.program.user {
            w.line(&format!("user {}", account(u)));
        }
        w.line(&format!("interval {}", secs_text(s.interval)));
        w.line(&format!("timeout {}", secs_text(s.timeout)));
        w.line(&format!("rise {}", s.rise));
        w.line(&format!("fall {}", s.fall));
        w.line(&format!("weight {}", s.weight));
        if s.init_fail {
            w.line("init_fail");
        }
        w.close();
    }
    for i in &c.vrrp.instances {
        instance(&mut w, i);
    }
    for g in &c.vrrp.groups {
        sync_group(&mut w, g);
    }
    if let Some(b) = &c.bgp {
        bgp(&mut w, b);
    }
    virtual_servers(&mut w, c);
    w.out
}

/// `lb_bgp { … }` with every value written out.
fn bgp(w: &mut Writer, b: &super::bgp::Bgp) {
    w.open(super::bgp::KEYWORD);
    w.line(&format!("daemon {}", b.daemon.name()));
    w.line(&format!("api {}", b.api));
    w.line(&format!("local_as {}", b.local_as));
    if let Some(r) = b.router_id {
        w.line(&format!("router_id {r}"));
    }
    for n in &b.neighbors {
        w.line(&format!("neighbor {} {}", n.addr, n.asn));
    }
    if let Some(h) = b.next_hop {
        w.line(&format!("next_hop {h}"));
    }
    if let Some(h) = b.next_hop6 {
        w.line(&format!("next_hop6 {h}"));
    }
    w.line(&format!("announce_delay {}", secs_text(b.announce_delay)));
    w.line(&format!("withdraw_grace {}", secs_text(b.withdraw_grace)));
    w.line(&format!("poll_interval {}", secs_text(b.poll_interval)));
    w.line(&format!("timeout {}", secs_text(b.timeout)));
    w.line(&format!(
        "gobgp_program {}",
        word(&b.program.to_string_lossy())
    ));
    w.close();
}

/// Lines with two-space indentation per open block.
#[derive(Default)]
struct Writer {
    out: String,
    depth: usize,
}

impl Writer {
    fn line(&mut self, text: &str) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }
    fn open(&mut self, head: &str) {
        self.line(&format!("{head} {{"));
        self.depth += 1;
    }
    fn close(&mut self) {
        self.depth -= 1;
        self.line("}");
        if self.depth == 0 {
            self.out.push('\n');
        }
    }
}

/// One word of keepalived.conf: as it is when keepalived's reader keeps it
/// whole (no blank, quote, brace, backslash, comment character), else in
/// double quotes with `"` and `\` escaped (lib/parser.c reads `\x` inside
/// quotes as x).
fn word(s: &str) -> String {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'{}#!\\".contains(c));
    if plain {
        return s.to_string();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// A program's words as the one argument keepalived splits again
/// ([`super::check::shell_words`]): a word with blanks or quotes in single
/// quotes (a `'` as `'\''`), all of it one quoted keepalived word.
fn program_word(p: &Program) -> String {
    let text: Vec<String> = p
        .argv
        .iter()
        .map(|a| {
            let plain =
                !a.is_empty() && !a.chars().any(|c| c.is_whitespace() || "\"'\\".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect();
    word(&text.join(" "))
}

/// `USER GROUP` of an account (uid, gid), by name as keepalived takes
/// them; a number without a name is written as the number (which no
/// reader resolves: such an account can only come from a name that has
/// since been removed).
fn account((uid, gid): (u32, u32)) -> String {
    format!("{} {}", word(&user_name(uid)), word(&group_name(gid)))
}

fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    let mut pw: libc::passwd = unsafe_zeroed();
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes only into `pw` and `buf` (of the length
    // given) and sets `out` to `&pw` or null.
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return uid.to_string();
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned()
}

fn group_name(gid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    let mut gr: libc::group = unsafe_zeroed();
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in user_name, for getgrgid_r.
    let rc =
        unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return gid.to_string();
    }
    // SAFETY: gr_name points into `buf`, NUL-terminated.
    unsafe { std::ffi::CStr::from_ptr(gr.gr_name) }
        .to_string_lossy()
        .into_owned()
}

fn unsafe_zeroed<T: Copy>() -> T {
    // SAFETY: only used for libc's passwd / group, plain C structs of
    // integers and pointers, for which all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

fn flag_line(w: &mut Writer, keyword: &str, on: bool) {
    w.line(&format!("{keyword} {}", if on { "true" } else { "false" }));
}

/// `KEYWORD "PROGRAM ARGS" [USER GROUP]` (keepalived's notify scripts).
fn notify_line(w: &mut Writer, keyword: &str, p: &Option<Program>) {
    if let Some(p) = p {
        match p.user {
            Some(u) => w.line(&format!("{keyword} {} {}", program_word(p), account(u))),
            None => w.line(&format!("{keyword} {}", program_word(p))),
        }
    }
}

/// `2026-12-01T02:30:00Z` for `t` (UTC, whole seconds).
fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn header(w: &mut Writer, c: &Config, now: SystemTime) {
    w.line(&format!(
        "! keepalived.conf exported by lb {} at {}",
        env!("CARGO_PKG_VERSION"),
        utc(now)
    ));
    let mut files: Vec<Arc<PathBuf>> = Vec::new();
    for n in &c.nodes {
        if !files.contains(&n.loc.file) {
            files.push(n.loc.file.clone());
        }
    }
    match files.split_first() {
        None => w.line("! from: no configuration file"),
        Some((main, rest)) => {
            w.line(&format!("! from: {}", main.display()));
            for f in rest {
                w.line(&format!("!   and {} (included)", f.display()));
            }
        }
    }
    let runtime: Vec<&VirtualServer> = c
        .services
        .iter()
        .filter(|v| crate::runtime::is_runtime(&v.loc))
        .collect();
    if runtime.is_empty() {
        w.line("! and no virtual server made at runtime");
    } else {
        w.line(&format!(
            "! and {} virtual server(s) made at runtime (lb adm, the API); changes to the file's services are included",
            runtime.len()
        ));
        if runtime.iter().any(|v| v.quorum == 0) {
            w.line(
                "! A service made at runtime has no quorum (ipvs has none); keepalived's smallest",
            );
            w.line(
                "! quorum, 1, is written: with no sorry server and no quorum_up / quorum_down it",
            );
            w.line("! changes nothing but a \"quorum lost\" log line when every real is down.");
        }
    }
    let ignored: Vec<&Node> = c
        .nodes
        .iter()
        .filter(|n| super::TOP_LATER.contains(&n.keyword.as_str()))
        .collect();
    for n in ignored {
        w.line(&format!(
            "! not exported: {} at {} (lb reads it but does not implement it)",
            n.keyword, n.loc
        ));
    }
    w.line("");
}

fn global_defs(w: &mut Writer, c: &Config) {
    let g = &c.vrrp.globals;
    let d = super::vrrp::Globals::default();
    let mut lines: Vec<String> = Vec::new();
    let mut l = |s: String| lines.push(s);
    if let Some(r) = &g.router_id {
        l(format!("router_id {}", word(r)));
    }
    if g.version != d.version {
        l(format!("vrrp_version {}", version(g.version)));
    }
    if g.strict {
        l("vrrp_strict".into());
    }
    if g.skip_check_adv_addr {
        l("vrrp_skip_check_adv_addr".into());
    }
    if !g.garp_interval.is_zero() {
        l(format!("vrrp_garp_interval {}", secs_text(g.garp_interval)));
    }
    if !g.gna_interval.is_zero() {
        l(format!("vrrp_gna_interval {}", secs_text(g.gna_interval)));
    }
    if let Some(u) = g.script_user {
        l(format!("script_user {}", account(u)));
    }
    if g.enable_script_security {
        l("enable_script_security".into());
    }
    if let Some(f) = &g.notification_email_from {
        l(format!("notification_email_from {}", word(f)));
    }
    if let Some((a, p)) = g.smtp_server {
        l(format!("smtp_server {a} {p}"));
    }
    if let Some(h) = &g.smtp_helo_name {
        l(format!("smtp_helo_name {}", word(h)));
    }
    if g.smtp_connect_timeout != d.smtp_connect_timeout {
        l(format!(
            "smtp_connect_timeout {}",
            g.smtp_connect_timeout.as_secs()
        ));
    }
    // The instances' defaults; every instance below also says its own.
    l(format!(
        "vrrp_garp_master_delay {}",
        g.garp_master_delay.as_secs()
    ));
    l(format!("vrrp_garp_master_repeat {}", g.garp_master_repeat));
    if let Some(r) = g.garp_master_refresh {
        l(format!("vrrp_garp_master_refresh {}", r.as_secs()));
    }
    l(format!(
        "vrrp_garp_master_refresh_repeat {}",
        g.garp_master_refresh_repeat
    ));
    if let Some(d) = g.garp_lower_prio_delay {
        l(format!("vrrp_garp_lower_prio_delay {}", d.as_secs()));
    }
    if let Some(r) = g.garp_lower_prio_repeat {
        l(format!("vrrp_garp_lower_prio_repeat {r}"));
    }
    if let Some(on) = g.lower_prio_no_advert {
        l(format!(
            "vrrp_lower_prio_no_advert {}",
            if on { "true" } else { "false" }
        ));
    }
    if g.higher_prio_send_advert {
        l("vrrp_higher_prio_send_advert true".into());
    }
    if let Some(s) = &g.lvs_sync {
        let mut t = format!("lvs_sync_daemon {}", word(&s.iface));
        if let Some(i) = &s.instance {
            let _ = write!(t, " {}", word(i));
        }
        if let Some(id) = s.syncid {
            let _ = write!(t, " id {id}");
        }
        if let Some(m) = s.maxlen {
            let _ = write!(t, " maxlen {m}");
        }
        let _ = write!(t, " port {} ttl {} group {}", s.port, s.ttl, s.group);
        l(t);
    }
    if let Some((k, _)) = &g.sync_auth_key {
        l(format!("lb_sync_auth_key {}", word(k)));
    }
    w.open("global_defs");
    if !g.notification_email.is_empty() {
        w.open("notification_email");
        for a in &g.notification_email {
            w.line(&word(a));
        }
        w.depth -= 1;
        w.line("}");
    }
    for s in &lines {
        w.line(s);
    }
    w.close();
}

fn version(v: Version) -> u8 {
    match v {
        Version::V2 => 2,
        Version::V3 => 3,
    }
}

fn track_process(w: &mut Writer, p: &super::track::TrackProcess) {
    w.open(&format!("vrrp_track_process {}", word(&p.name)));
    let mut line = format!("process {}", word(&p.process));
    for a in &p.params {
        line.push(' ');
        line.push_str(&word(a));
    }
    w.line(&line);
    match p.param_match {
        ParamMatch::None if p.full_command => w.line("full_command"),
        ParamMatch::None => {}
        ParamMatch::Exact => w.line("param_match"),
        ParamMatch::Partial => w.line("param_match partial"),
        ParamMatch::Initial => w.line("param_match initial"),
    }
    // quorum_max first: each is checked against the other as it is read.
    if p.quorum_max != u32::MAX {
        w.line(&format!("quorum_max {}", p.quorum_max));
    }
    if p.quorum_max != 0 {
        w.line(&format!("quorum {}", p.quorum));
    }
    if !p.fork_delay.is_zero() {
        w.line(&format!("fork_delay {}", secs_text(p.fork_delay)));
    }
    if !p.terminate_delay.is_zero() {
        w.line(&format!("terminate_delay {}", secs_text(p.terminate_delay)));
    }
    w.line(&format!(
        "weight {}{}",
        p.weight,
        if p.reverse { " reverse" } else { "" }
    ));
    w.close();
}

fn vip_line(v: &Vip) -> String {
    let mut s = format!("{}/{}", v.addr, v.prefix);
    if let Some(d) = &v.dev {
        let _ = write!(s, " dev {}", word(d));
    }
    if let Some(l) = &v.label {
        let _ = write!(s, " label {}", word(l));
    }
    if let Some(name) = scope_name(v.scope).filter(|_| v.scope != 0) {
        let _ = write!(s, " scope {name}");
    }
    s
}

/// The rtnetlink scope names `ip` and keepalived read.
fn scope_name(scope: u8) -> Option<&'static str> {
    Some(match scope {
        0 => "global",
        200 => "site",
        253 => "link",
        254 => "host",
        255 => "nowhere",
        _ => return None,
    })
}

fn tracks_block(w: &mut Writer, keyword: &str, t: &[Track]) {
    if t.is_empty() {
        return;
    }
    w.open(keyword);
    for t in t {
        match t.weight {
            Some(wt) => w.line(&format!("{} weight {wt}", word(&t.name))),
            None => w.line(&word(&t.name)),
        }
    }
    w.depth -= 1;
    w.line("}");
}

fn refs_block(w: &mut Writer, keyword: &str, t: &[TrackRef]) {
    if t.is_empty() {
        return;
    }
    w.open(keyword);
    for t in t {
        match t.weight {
            Some((wt, rev)) => w.line(&format!(
                "{} weight {wt}{}",
                word(&t.name),
                if rev { " reverse" } else { "" }
            )),
            None => w.line(&word(&t.name)),
        }
    }
    w.depth -= 1;
    w.line("}");
}

fn notify(w: &mut Writer, n: &Notify) {
    notify_line(w, "notify_master", &n.master);
    notify_line(w, "notify_backup", &n.backup);
    notify_line(w, "notify_fault", &n.fault);
    notify_line(w, "notify_stop", &n.stop);
    notify_line(w, "notify", &n.any);
    if let Some(on) = n.smtp_alert {
        flag_line(w, "smtp_alert", on);
    }
}

fn route_line(r: &VirtualRoute) -> String {
    let mut s = String::new();
    if let Some(a) = r.src {
        let _ = write!(s, "src {a} ");
    }
    match r.kind {
        RouteKind::Unicast => {}
        RouteKind::Blackhole => s.push_str("blackhole "),
        RouteKind::Unreachable => s.push_str("unreachable "),
        RouteKind::Prohibit => s.push_str("prohibit "),
    }
    let _ = write!(s, "{}/{}", r.dest, r.prefix);
    if let Some(v) = r.via {
        let _ = write!(s, " via {v}");
    }
    if let Some(d) = &r.dev {
        let _ = write!(s, " dev {}", word(d));
    }
    if let Some(sc) = r.scope.and_then(scope_name) {
        let _ = write!(s, " scope {sc}");
    }
    if let Some(t) = r.table {
        let _ = write!(s, " table {t}");
    }
    if let Some(m) = r.metric {
        let _ = write!(s, " metric {m}");
    }
    if r.onlink {
        s.push_str(" onlink");
    }
    s
}

fn rule_line(r: &VirtualRule) -> String {
    let mut s = String::new();
    if let Some((a, p)) = r.from {
        let _ = write!(s, "from {a}/{p} ");
    }
    if let Some((a, p)) = r.to {
        let _ = write!(s, "to {a}/{p} ");
    }
    match r.action {
        RuleAction::Table => {
            let _ = write!(s, "table {}", r.table);
        }
        RuleAction::Blackhole => s.push_str("blackhole"),
        RuleAction::Unreachable => s.push_str("unreachable"),
        RuleAction::Prohibit => s.push_str("prohibit"),
    }
    if let Some(p) = r.priority {
        let _ = write!(s, " priority {p}");
    }
    if let Some(i) = &r.iif {
        let _ = write!(s, " iif {}", word(i));
    }
    if let Some(o) = &r.oif {
        let _ = write!(s, " oif {}", word(o));
    }
    if let Some(m) = r.fwmark {
        let _ = write!(s, " fwmark {m}");
    }
    if let Some(t) = r.tos {
        let _ = write!(s, " tos {t}");
    }
    s
}

fn instance(w: &mut Writer, i: &Instance) {
    w.open(&format!("vrrp_instance {}", word(&i.name)));
    w.line(match i.initial {
        Initial::Master => "state MASTER",
        Initial::Backup => "state BACKUP",
    });
    w.line(&format!("interface {}", word(&i.iface)));
    w.line(&format!("virtual_router_id {}", i.vrid));
    w.line(&format!("priority {}", i.priority));
    w.line(&format!(
        "advert_int {}",
        secs_text(Duration::from_millis(u64::from(i.advert_cs) * 10))
    ));
    w.line(&format!("version {}", version(i.version)));
    if let Some(a) = i.auth {
        let end = a.iter().position(|b| *b == 0).unwrap_or(a.len());
        w.open("authentication");
        w.line("auth_type PASS");
        w.line(&format!(
            "auth_pass {}",
            word(&String::from_utf8_lossy(&a[..end]))
        ));
        w.depth -= 1;
        w.line("}");
    }
    for (keyword, vips) in [
        ("virtual_ipaddress", &i.vips),
        ("virtual_ipaddress_excluded", &i.excluded),
    ] {
        if vips.is_empty() {
            continue;
        }
        w.open(keyword);
        for v in vips {
            w.line(&vip_line(v));
        }
        w.depth -= 1;
        w.line("}");
    }
    if !i.preempt {
        w.line("nopreempt");
    }
    if !i.preempt_delay.is_zero() {
        w.line(&format!("preempt_delay {}", secs_text(i.preempt_delay)));
    }
    tracks_block(w, "track_interface", &i.track_interfaces);
    tracks_block(w, "track_script", &i.track_scripts);
    refs_block(w, "track_file", &i.track_files);
    refs_block(w, "track_process", &i.track_processes);
    notify(w, &i.notify);
    w.line(&format!(
        "garp_master_delay {}",
        i.garp_master_delay.as_secs()
    ));
    w.line(&format!("garp_master_repeat {}", i.garp_master_repeat));
    if let Some(r) = i.garp_master_refresh {
        w.line(&format!("garp_master_refresh {}", r.as_secs()));
    }
    w.line(&format!(
        "garp_master_refresh_repeat {}",
        i.garp_master_refresh_repeat
    ));
    w.line(&format!(
        "garp_lower_prio_repeat {}",
        i.garp_lower_prio_repeat
    ));
    w.line(&format!(
        "garp_lower_prio_delay {}",
        i.garp_lower_prio_delay.as_secs()
    ));
    flag_line(w, "lower_prio_no_advert", i.lower_prio_no_advert);
    flag_line(w, "higher_prio_send_advert", i.higher_prio_send_advert);
    if let Some(a) = i.unicast_src {
        w.line(&format!("unicast_src_ip {a}"));
    }
    if !i.unicast_peers.is_empty() {
        w.open("unicast_peer");
        for p in &i.unicast_peers {
            w.line(&p.to_string());
        }
        w.depth -= 1;
        w.line("}");
    }
    if let Some(v) = &i.vmac {
        w.line(&format!(
            "use_vmac {} {}",
            word(&v.name),
            crate::util::fmt_mac(&v.mac)
        ));
    }
    if !i.virtual_routes.is_empty() {
        w.open("virtual_routes");
        for r in &i.virtual_routes {
            w.line(&route_line(r));
        }
        w.depth -= 1;
        w.line("}");
    }
    if !i.virtual_rules.is_empty() {
        w.open("virtual_rules");
        for r in &i.virtual_rules {
            w.line(&rule_line(r));
        }
        w.depth -= 1;
        w.line("}");
    }
    w.close();
}

fn sync_group(w: &mut Writer, g: &SyncGroup) {
    w.open(&format!("vrrp_sync_group {}", word(&g.name)));
    w.open("group");
    for m in &g.members {
        w.line(&word(m));
    }
    w.depth -= 1;
    w.line("}");
    tracks_block(w, "track_script", &g.track_scripts);
    refs_block(w, "track_file", &g.track_files);
    refs_block(w, "track_process", &g.track_processes);
    notify(w, &g.notify);
    w.close();
}

/// The virtual servers, in the table's order; the members of a file's
/// `virtual_server group NAME` block as that group again when they all
/// still are in the table, one after the other, with one body.
fn virtual_servers(w: &mut Writer, c: &Config) {
    let groups = group::groups(&c.nodes, &mut Vec::new());
    let group_blocks: Vec<(&Node, &str)> = c
        .nodes
        .iter()
        .filter(|n| n.keyword == "virtual_server")
        .filter_map(|n| match n.args.as_slice() {
            [g, name] if g == "group" => Some((n, name.as_str())),
            _ => None,
        })
        .collect();
    let mut i = 0;
    while i < c.services.len() {
        let vs = &c.services[i];
        let as_group = group_blocks.iter().find_map(|(n, name)| {
            if n.loc != vs.loc {
                return None;
            }
            let g = groups.get(*name)?;
            let run = c.services.get(i..i + g.members.len())?;
            let keys_match = run
                .iter()
                .zip(&g.members)
                .all(|(v, (a, p))| v.key.addr == *a && v.key.port == *p && v.loc == n.loc);
            let body = service_body(vs);
            (keys_match
                && run
                    .iter()
                    .all(|v| v.key.proto == vs.key.proto && service_body(v) == body))
            .then_some((*name, g, body))
        });
        match as_group {
            Some((name, g, body)) => {
                w.open(&format!("virtual_server_group {}", word(name)));
                for (a, p) in &g.members {
                    w.line(&format!("{a} {p}"));
                }
                w.close();
                w.open(&format!("virtual_server group {}", word(name)));
                w.depth -= 1;
                w.out.push_str(&body);
                w.depth += 1;
                w.close();
                i += g.members.len();
            }
            None => {
                w.open(&format!("virtual_server {} {}", vs.key.addr, vs.key.port));
                w.depth -= 1;
                w.out.push_str(&service_body(vs));
                w.depth += 1;
                w.close();
                i += 1;
            }
        }
    }
}

/// The statements inside a `virtual_server { }` (indented one level).
fn service_body(vs: &VirtualServer) -> String {
    let mut w = Writer {
        out: String::new(),
        depth: 1,
    };
    w.line(&format!("protocol {}", vs.key.proto.name()));
    w.line(&format!("lb_algo {}", vs.sched.name()));
    w.line(&format!("lb_kind {}", vs.fwd.keepalived_name()));
    let hashing = if vs.sched == super::Sched::Mh {
        "mh"
    } else {
        "sh"
    };
    if vs.hash_port {
        w.line(&format!("{hashing}-port"));
    }
    if vs.hash_fallback {
        w.line(&format!("{hashing}-fallback"));
    }
    if let Some(t) = vs.persistence_timeout {
        w.line(&format!("persistence_timeout {t}"));
        // Without persistence a prefix means nothing (only the API can
        // set one so), and the keyword alone would make the service
        // persistent: it is written only with a timeout.
        if let Some(p) = vs.persistence_prefix {
            if vs.key.addr.is_ipv4() {
                let mask = if p == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(p.min(32)))
                };
                w.line(&format!("persistence_granularity {}", Ipv4Addr::from(mask)));
            } else {
                w.line(&format!("persistence_granularity {p}"));
            }
        }
    }
    timing(&mut w, &vs.timing);
    if vs.alpha {
        w.line("alpha");
    }
    if vs.omega {
        w.line("omega");
    }
    if vs.inhibit_on_failure {
        w.line("inhibit_on_failure");
    }
    if let Some((a, p)) = vs.sorry_server {
        w.line(&format!("sorry_server {a} {p}"));
    }
    if vs.quorum >= 1 {
        w.line(&format!("quorum {}", vs.quorum));
    }
    if vs.hysteresis != 0 {
        w.line(&format!("hysteresis {}", vs.hysteresis));
    }
    notify_line(&mut w, "quorum_up", &vs.quorum_up);
    notify_line(&mut w, "quorum_down", &vs.quorum_down);
    for r in vs.reals.iter().filter(|r| !r.sorry) {
        real_server(&mut w, vs, r);
    }
    w.out
}

fn timing(w: &mut Writer, t: &Timing) {
    if let Some(d) = t.delay_loop {
        w.line(&format!("delay_loop {}", secs_text(d)));
    }
    if let Some(d) = t.connect_timeout {
        w.line(&format!("connect_timeout {}", secs_text(d)));
    }
    if let Some(r) = t.retry {
        w.line(&format!("retry {r}"));
    }
    if let Some(d) = t.delay_before_retry {
        w.line(&format!("delay_before_retry {}", secs_text(d)));
    }
    if let Some(d) = t.warmup {
        w.line(&format!("warmup {}", secs_text(d)));
    }
}

fn real_server(w: &mut Writer, vs: &VirtualServer, r: &RealServer) {
    w.open(&format!("real_server {} {}", r.addr, r.port));
    w.line(&format!("weight {}", r.weight));
    let fwd = r.fwd_in(vs);
    if fwd != vs.fwd {
        w.line(&format!("lvs_method {}", fwd.keepalived_name()));
    }
    if r.u_threshold != 0 {
        w.line(&format!("uthreshold {}", r.u_threshold));
    }
    if r.l_threshold != 0 {
        w.line(&format!("lthreshold {}", r.l_threshold));
    }
    if let Some(on) = r.inhibit_on_failure {
        flag_line(w, "inhibit_on_failure", on);
    }
    notify_line(w, "notify_up", &r.notify_up);
    notify_line(w, "notify_down", &r.notify_down);
    timing(w, &r.timing);
    for c in &r.checks {
        checker(w, c);
    }
    w.depth -= 1;
    w.line("}");
}

fn dns_type_name(t: u16) -> Option<&'static str> {
    Some(match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        _ => return None,
    })
}

fn checker(w: &mut Writer, c: &Check) {
    if let CheckKind::File(f) = &c.kind {
        // FILE_CHECK takes only these two keywords (check_file.c).
        w.open("FILE_CHECK");
        w.line(&format!("track_file {}", word(&f.track)));
        if let Some((wt, rev)) = f.own_weight {
            w.line(&format!("weight {wt}{}", if rev { " reverse" } else { "" }));
        }
        w.depth -= 1;
        w.line("}");
        return;
    }
    let name = match &c.kind {
        CheckKind::Tcp => "TCP_CHECK",
        CheckKind::Http { tls: false, .. } => "HTTP_GET",
        CheckKind::Http { tls: true, .. } => "SSL_GET",
        CheckKind::Udp { .. } => "UDP_CHECK",
        CheckKind::Dns { .. } => "DNS_CHECK",
        CheckKind::Misc { .. } => "MISC_CHECK",
        CheckKind::Smtp { .. } => "SMTP_CHECK",
        CheckKind::Ping => "PING_CHECK",
        CheckKind::File(_) => unreachable!("written above"),
    };
    w.open(name);
    if let Some(a) = c.connect_ip {
        w.line(&format!("connect_ip {a}"));
    }
    if let Some(p) = c.connect_port {
        w.line(&format!("connect_port {p}"));
    }
    if let Some(a) = c.bindto {
        w.line(&format!("bindto {a}"));
    }
    if c.fast_recovery {
        w.line("fast_recovery true");
    }
    timing(w, &c.timing);
    match &c.kind {
        CheckKind::Http {
            urls,
            virtualhost,
            sni,
            http11,
            ..
        } => {
            for u in urls {
                w.open("url");
                w.line(&format!("path {}", word(&u.path)));
                let codes: Vec<String> = u
                    .status
                    .iter()
                    .map(|(a, b)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}-{b}")
                        }
                    })
                    .collect();
                w.line(&format!("status_code {}", codes.join(" ")));
                if let Some(d) = &u.digest {
                    w.line(&format!("digest {d}"));
                }
                w.depth -= 1;
                w.line("}");
            }
            if let Some(h) = virtualhost {
                w.line(&format!("virtualhost {}", word(h)));
            }
            if *sni {
                w.line("enable_sni");
            }
            if *http11 {
                w.line("http_protocol 1.1");
            }
        }
        CheckKind::Udp {
            payload,
            require_reply,
        } => {
            if !payload.is_empty() {
                let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
                w.line(&format!("payload {hex}"));
            }
            if *require_reply {
                w.line("require_reply");
            }
        }
        CheckKind::Dns { qtype, name } => {
            match dns_type_name(*qtype) {
                Some(t) => w.line(&format!("type {t}")),
                // Only the types above are read, so no other can be here.
                None => w.line(&format!("! DNS type {qtype} has no keepalived name")),
            }
            w.line(&format!("name {}", word(name)));
        }
        CheckKind::Misc {
            program,
            timeout,
            dynamic,
        } => {
            w.line(&format!("misc_path {}", program_word(program)));
            if let Some(u) = program.user {
                w.line(&format!("user {}", account(u)));
            }
            if let Some(t) = timeout {
                w.line(&format!("misc_timeout {}", t.as_secs()));
            }
            if *dynamic {
                w.line("misc_dynamic");
            }
        }
        CheckKind::Smtp { helo } => {
            w.line(&format!("helo_name {}", word(helo)));
        }
        CheckKind::Tcp | CheckKind::Ping | CheckKind::File(_) => {}
    }
    w.depth -= 1;
    w.line("}");
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;

    use super::*;
    use crate::{
        config::{dump::dump, load_str, Fwd, Proto, Sched, ServiceAddr},
        runtime::{Change, CheckSpec, RealSpec, Runtime, ServiceSpec},
    };

    /// The dump without source locations (an export is another file).
    fn without_locations(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("location");
                m.values_mut().for_each(without_locations);
            }
            Value::Array(a) => a.iter_mut().for_each(without_locations),
            _ => {}
        }
    }

    fn load(text: &str) -> Config {
        let l = load_str(text, Path::new("/etc/keepalived/keepalived.conf"));
        let errors: Vec<String> = l.errors().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{errors:#?}\n{text}");
        l.config
    }

    /// Exports `c`, reads the export back, and returns both dumps.
    fn round_trip(c: &Config) -> (Value, Value, String) {
        let text = keepalived_conf(c);
        let back = load(&text);
        let (mut a, mut b) = (dump(c), dump(&back));
        without_locations(&mut a);
        without_locations(&mut b);
        (a, b, text)
    }

    #[test]
    fn words_are_quoted_only_when_needed_and_read_back_whole() {
        assert_eq!(word("eth0"), "eth0");
        assert_eq!(word("a b"), "\"a b\"");
        assert_eq!(word(r#"x"y\z#"#), r#""x\"y\\z#""#);
        assert_eq!(word(""), "\"\"");
        let p = Program::new(vec!["/bin/echo".into(), "it's a b".into(), "$x;#!".into()]);
        let text = format!(
            "vrrp_script s {{\n script {}\n}}\nvrrp_instance v {{\n interface {}\n virtual_router_id 1\n virtual_ipaddress {{\n  10.0.0.1\n }}\n notify_master {}\n}}\n",
            program_word(&p),
            word("we ird"),
            program_word(&p)
        );
        let c = load(&text);
        assert_eq!(c.vrrp.scripts["s"].program.argv, p.argv);
        assert_eq!(
            c.vrrp.instances[0].notify.master.as_ref().unwrap().argv,
            p.argv
        );
        assert_eq!(c.vrrp.instances[0].iface, "we ird");
    }

    #[test]
    fn utc_times() {
        let at = |s: u64| utc(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_999_999), "2026-11-30T00:53:19Z");
    }

    fn svc(proto: Proto, addr: &str, port: u16) -> ServiceAddr {
        ServiceAddr {
            addr: addr.parse().unwrap(),
            port,
            proto,
        }
    }

    fn real(addr: &str, port: u16, fwd: Fwd, weight: u32, check: Option<CheckSpec>) -> RealSpec {
        RealSpec {
            addr: addr.parse().unwrap(),
            port,
            fwd,
            weight,
            u_threshold: 0,
            l_threshold: 0,
            check,
        }
    }

    /// The runtime layer on a file: a NAT service made at runtime with
    /// checked reals, another with mixed methods, thresholds and
    /// persistence, and a file's real changed at runtime.
    #[test]
    fn the_runtime_layer_is_exported_with_the_file() {
        let file = load(
            "global_defs {\n router_id lb1\n}\nvirtual_server 10.0.0.1 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n delay_loop 3\n real_server 10.0.1.1 80 {\n  weight 2\n  TCP_CHECK {\n   connect_timeout 1\n  }\n }\n}\n",
        );
        let mut rt = Runtime::default();
        let web = svc(Proto::Tcp, "10.0.0.2", 80);
        let mut http = CheckSpec::http("/health", 200);
        http.connect_port = Some(8080);
        http.delay_loop_ms = Some(1500);
        let mut tcp = CheckSpec::tcp();
        tcp.connect_timeout_ms = Some(250);
        tcp.retry = Some(0);
        let dns = svc(Proto::Udp, "2001:db8::53", 53);
        let changes = [
            Change::AddService {
                spec: ServiceSpec {
                    service: web,
                    sched: Sched::Wlc,
                    hash_port: false,
                    hash_fallback: false,
                    persistence_timeout: Some(300),
                    persistence_prefix: Some(24),
                },
            },
            Change::AddReal {
                service: web,
                real: real("10.0.2.1", 8080, Fwd::Nat, 3, Some(http)),
            },
            Change::AddReal {
                service: web,
                real: RealSpec {
                    u_threshold: 100,
                    l_threshold: 50,
                    ..real("10.0.2.2", 8080, Fwd::Nat, 1, Some(tcp))
                },
            },
            Change::AddReal {
                service: web,
                real: real("10.0.2.3", 80, Fwd::Dr, 0, None),
            },
            Change::AddService {
                spec: ServiceSpec {
                    service: dns,
                    sched: Sched::Sh,
                    hash_port: true,
                    hash_fallback: true,
                    persistence_timeout: None,
                    persistence_prefix: None,
                },
            },
            Change::AddReal {
                service: dns,
                real: real("2001:db8::1:1", 53, Fwd::Tun, 1, None),
            },
            Change::EditReal {
                service: svc(Proto::Tcp, "10.0.0.1", 80),
                real: real("10.0.1.1", 80, Fwd::Dr, 7, None),
            },
        ];
        for ch in &changes {
            rt.apply(&file, ch).unwrap();
        }
        let merged = rt.merge(&file);
        let (mut want, got, text) = round_trip(&merged);
        // What keepalived.conf cannot say: a service without quorum (see
        // the module's documentation); everything else must match.
        for vs in want["virtual_servers"].as_array_mut().unwrap() {
            if vs["quorum"] == 0 {
                vs["quorum"] = 1.into();
            }
        }
        assert_eq!(want, got, "{text}");
        assert!(
            text.contains("! and 2 virtual server(s) made at runtime"),
            "{text}"
        );
        assert!(text.contains("quorum, 1, is written"), "{text}");
        assert!(text.contains("    lvs_method NAT\n"), "{text}");
        assert!(
            text.contains("persistence_granularity 255.255.255.0"),
            "{text}"
        );
        assert!(
            text.contains("! from: /etc/keepalived/keepalived.conf"),
            "{text}"
        );
        // The file's real keeps its checker and has the runtime weight.
        let back = load(&text);
        let r = &back.services[0].reals[0];
        assert_eq!((r.weight, r.checks.len()), (7, 1));
        // The runtime checkers come back as the same specs.
        let vs = &back.services[1];
        let specs: Vec<Option<CheckSpec>> =
            vs.reals.iter().map(|r| RealSpec::of(r, vs).check).collect();
        assert_eq!(
            specs,
            merged.services[1]
                .reals
                .iter()
                .map(|r| RealSpec::of(r, &merged.services[1]).check)
                .collect::<Vec<_>>()
        );
    }

    /// A group stays a group while its members share one block; once the
    /// runtime layer changes one member, each is written on its own.
    #[test]
    fn groups_are_kept_while_their_members_agree() {
        let text = "virtual_server_group WEB {\n 10.0.0.1-2 80\n 10.0.0.9 80\n}\nvirtual_server group WEB {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.0.1.1 80 {\n  HTTP_GET {\n   url {\n    path /\n   }\n  }\n }\n}\n";
        let file = load(text);
        let (a, b, out) = round_trip(&file);
        assert_eq!(a, b, "{out}");
        assert!(out.contains("virtual_server group WEB {"), "{out}");
        assert!(out.contains("  10.0.0.2 80\n"), "{out}");
        let mut rt = Runtime::default();
        rt.apply(
            &file,
            &Change::EditReal {
                service: svc(Proto::Tcp, "10.0.0.2", 80),
                real: real("10.0.1.1", 80, Fwd::Dr, 5, None),
            },
        )
        .unwrap();
        let (a, b, out) = round_trip(&rt.merge(&file));
        assert_eq!(a, b, "{out}");
        assert!(!out.contains("group WEB"), "{out}");
        assert_eq!(out.matches("virtual_server 10.0.0.").count(), 3, "{out}");
    }
}
