//! Global tracked objects of keepalived.conf: `track_file` (and its
//! deprecated synonym `vrrp_track_file`) and `vrrp_track_process`, the
//! `track_file { }` / `track_process { }` lists of instances and sync
//! groups, and the resolution of FILE_CHECKs against the track files.
//! Rules from keepalived 2.2.7 (trackers/track_file.c, vrrp/vrrp_parser.c,
//! vrrp/vrrp_track.c).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use super::{
    check::CheckKind,
    value::{arg, block, parse_num, timer, unknown},
    Diag, Loc, Node, VirtualServer,
};

/// `track_file NAME { file PATH; weight N [reverse]; init_file [VALUE] [overwrite] }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackFile {
    pub name: String,
    pub path: PathBuf,
    /// Default weight of the objects tracking it (keepalived: 1; range
    /// -254..254).
    pub weight: i32,
    pub reverse: bool,
    /// `init_file`: the value written at start when the file does not
    /// exist (or always, with `overwrite`), as keepalived does.
    pub init: Option<(i64, bool)>,
    pub loc: Loc,
}

/// How the parameters after `process PATH` are compared (`param_match`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamMatch {
    /// No parameters compared (only the name).
    None,
    /// Exactly the configured parameters.
    Exact,
    /// The configured parameters first, any after.
    Partial,
    /// As partial, and the last configured one may be a prefix.
    Initial,
}

/// `vrrp_track_process NAME { … }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackProcess {
    pub name: String,
    /// The process name (`/proc/PID/stat`'s comm) or, with `full_command`
    /// or parameters, the command's first word (`/proc/PID/cmdline`).
    pub process: String,
    pub params: Vec<String>,
    pub param_match: ParamMatch,
    pub full_command: bool,
    /// Matching processes needed for the quorum: `quorum..=quorum_max`
    /// (keepalived: 1 and unbounded).
    pub quorum: u32,
    pub quorum_max: u32,
    /// How long a gained / lost quorum must wait before it counts.
    pub fork_delay: Duration,
    pub terminate_delay: Duration,
    /// Default weight (keepalived: 0, i.e. FAULT without the quorum).
    pub weight: i32,
    pub reverse: bool,
    pub loc: Loc,
}

/// One entry of an instance's or sync group's `track_file { }` /
/// A tracked block's `weight N [reverse]` (N from -254 to 254, keepalived's
/// range): sets what is valid, reports the rest at the statement.
fn weight_reverse(c: &Node, weight: &mut i32, reverse: &mut bool, diags: &mut Vec<Diag>) {
    if let Some(w) = parse_num::<i32>(c, 0, "weight", diags) {
        if (-254..=254).contains(&w) {
            *weight = w;
        } else {
            diags.push(Diag::error(
                &c.loc,
                Some("weight"),
                "must be between -254 and 254",
            ));
        }
    }
    match c.args.get(1).map(String::as_str) {
        None => {}
        Some("reverse") => *reverse = true,
        Some(o) => diags.push(Diag::error(
            &c.loc,
            Some("weight"),
            format!("unknown option '{o}' (reverse)"),
        )),
    }
}

/// `track_process { }`: `NAME [weight W [reverse|noreverse]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackRef {
    pub name: String,
    /// `None`: the tracked object's own weight and direction.
    pub weight: Option<(i32, bool)>,
    pub loc: Loc,
}

/// `track_file NAME { … }`.
pub fn track_file(n: &Node, diags: &mut Vec<Diag>) -> Option<TrackFile> {
    let name = arg(n, 0, "track file name", diags)?.to_string();
    let mut path = None;
    let mut weight = 1;
    let mut reverse = false;
    let mut init = None;
    for c in block(n, diags) {
        match c.keyword.as_str() {
            "file" => path = arg(c, 0, "file path", diags).map(PathBuf::from),
            "weight" => weight_reverse(c, &mut weight, &mut reverse, diags),
            "init_file" => {
                let mut value = 0;
                let mut overwrite = false;
                for a in &c.args {
                    if a == "overwrite" {
                        overwrite = true;
                    } else if let Ok(v) = a.parse::<i64>() {
                        if !(-254..=254).contains(&v) {
                            diags.push(Diag::warning(
                                &c.loc,
                                Some("init_file"),
                                format!("value {v} is outside the sensible range -254..254"),
                            ));
                        }
                        value = v;
                    } else {
                        diags.push(Diag::error(
                            &c.loc,
                            Some("init_file"),
                            format!("unknown option '{a}' (a number or overwrite)"),
                        ));
                    }
                }
                init = Some((value, overwrite));
            }
            _ => diags.push(unknown(c, "track_file")),
        }
    }
    let Some(path) = path else {
        diags.push(Diag::error(&n.loc, Some("track_file"), "missing 'file'"));
        return None;
    };
    Some(TrackFile {
        name,
        path,
        weight,
        reverse,
        init,
        loc: n.loc.clone(),
    })
}

/// `vrrp_track_process NAME { … }`.
pub fn track_process(n: &Node, diags: &mut Vec<Diag>) -> Option<TrackProcess> {
    let name = arg(n, 0, "track process name", diags)?.to_string();
    let mut p = TrackProcess {
        name,
        process: String::new(),
        params: Vec::new(),
        param_match: ParamMatch::None,
        full_command: false,
        quorum: 1,
        quorum_max: u32::MAX,
        fork_delay: Duration::ZERO,
        terminate_delay: Duration::ZERO,
        weight: 0,
        reverse: false,
        loc: n.loc.clone(),
    };
    let mut explicit_match = None;
    for c in block(n, diags) {
        match c.keyword.as_str() {
            "process" => {
                if let Some(first) = arg(c, 0, "process", diags) {
                    p.process = first.to_string();
                    p.params = c.args[1..].to_vec();
                }
            }
            "param_match" => match c.args.first().map(String::as_str) {
                None => explicit_match = Some(ParamMatch::Exact),
                Some("initial") => explicit_match = Some(ParamMatch::Initial),
                Some("partial") => explicit_match = Some(ParamMatch::Partial),
                Some(o) => diags.push(Diag::error(
                    &c.loc,
                    Some("param_match"),
                    format!("unknown type '{o}' (initial or partial)"),
                )),
            },
            "weight" => weight_reverse(c, &mut p.weight, &mut p.reverse, diags),
            "quorum" => match parse_num::<u32>(c, 0, "count", diags) {
                Some(q @ 1..=65535) if q <= p.quorum_max => p.quorum = q,
                Some(1..=65535) => diags.push(Diag::error(
                    &c.loc,
                    Some("quorum"),
                    "greater than quorum_max",
                )),
                Some(_) => diags.push(Diag::error(
                    &c.loc,
                    Some("quorum"),
                    "must be between 1 and 65535",
                )),
                None => {}
            },
            "quorum_max" => match parse_num::<u32>(c, 0, "count", diags) {
                // keepalived: 0 is allowed while quorum is at most 1 and
                // means "fails while any such process runs".
                Some(m @ 0..=65535) if m >= p.quorum || (m == 0 && p.quorum <= 1) => {
                    p.quorum_max = m;
                    if m == 0 {
                        p.quorum = 0;
                    } else if p.quorum == 0 {
                        p.quorum = 1;
                    }
                }
                Some(0..=65535) => {
                    diags.push(Diag::error(&c.loc, Some("quorum_max"), "less than quorum"))
                }
                Some(_) => diags.push(Diag::error(
                    &c.loc,
                    Some("quorum_max"),
                    "must be between 0 and 65535",
                )),
                None => {}
            },
            "delay" | "fork_delay" | "terminate_delay" => {
                // 1 µs to an hour.
                let Some(d) = timer(
                    c,
                    Duration::from_micros(1),
                    Duration::from_secs(3600),
                    diags,
                ) else {
                    continue;
                };
                if c.keyword != "fork_delay" {
                    p.terminate_delay = d;
                }
                if c.keyword != "terminate_delay" {
                    p.fork_delay = d;
                }
            }
            "full_command" => p.full_command = true,
            _ => diags.push(unknown(c, "vrrp_track_process")),
        }
    }
    if p.process.is_empty() {
        diags.push(Diag::error(
            &n.loc,
            Some("vrrp_track_process"),
            "missing 'process'",
        ));
        return None;
    }
    // keepalived: parameters, or param_match, compare the whole command line.
    if let Some(m) = explicit_match {
        p.param_match = m;
        p.full_command = true;
    } else if !p.params.is_empty() {
        p.param_match = ParamMatch::Exact;
        p.full_command = true;
    }
    Some(p)
}

/// The entries of `track_file { }` / `track_process { }` in an instance
/// or sync group: weights -254..254 (keepalived's vrrp_alloc_track_file,
/// alloc_track_process).
pub fn refs(n: &Node, diags: &mut Vec<Diag>) -> Vec<TrackRef> {
    let mut out: Vec<TrackRef> = Vec::new();
    for c in block(n, diags) {
        let weight = match c.args.first().map(String::as_str) {
            None => None,
            Some("weight") => {
                let Some(w) = parse_num::<i32>(c, 1, "weight", diags) else {
                    continue;
                };
                if !(-254..=254).contains(&w) {
                    diags.push(Diag::error(
                        &c.loc,
                        Some("weight"),
                        "must be between -254 and 254",
                    ));
                    continue;
                }
                let reverse = match c.args.get(2).map(String::as_str) {
                    None | Some("noreverse") => false,
                    Some("reverse") => true,
                    Some(o) => {
                        diags.push(Diag::error(
                            &c.loc,
                            Some(&c.keyword),
                            format!("unknown option '{o}' (reverse or noreverse)"),
                        ));
                        continue;
                    }
                };
                Some((w, reverse))
            }
            Some(o) => {
                diags.push(Diag::error(
                    &c.loc,
                    Some(&c.keyword),
                    format!("unknown option '{o}' (weight W [reverse])"),
                ));
                continue;
            }
        };
        if out.iter().any(|r| r.name == c.keyword) {
            diags.push(Diag::warning(
                &c.loc,
                Some(&c.keyword),
                "tracked twice; ignored (as keepalived)",
            ));
            continue;
        }
        out.push(TrackRef {
            name: c.keyword.clone(),
            weight,
            loc: c.loc.clone(),
        });
    }
    out
}

/// Fills in every FILE_CHECK from its track_file (path, weight and
/// direction unless its own, the real's configured weight); an unknown
/// track_file is an error.
pub fn resolve(
    services: &mut [VirtualServer],
    files: &BTreeMap<String, TrackFile>,
    diags: &mut Vec<Diag>,
) {
    for vs in services {
        for r in &mut vs.reals {
            let base = r.weight;
            r.checks.retain_mut(|c| {
                let CheckKind::File(f) = &mut c.kind else {
                    return true;
                };
                let Some(t) = files.get(&f.track) else {
                    diags.push(Diag::error(
                        &f.loc,
                        Some("track_file"),
                        format!("no track_file named '{}'", f.track),
                    ));
                    return false;
                };
                f.path = t.path.clone();
                (f.weight, f.reverse) = f.own_weight.unwrap_or((i64::from(t.weight), t.reverse));
                f.base_weight = base;
                true
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn load(text: &str) -> crate::config::Loaded {
        load_str(text, std::path::Path::new("t.conf"))
    }

    fn messages(l: &crate::config::Loaded) -> Vec<String> {
        l.diags.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn track_file_and_process_blocks_with_keepalived_defaults() {
        let l = load(
            "track_file tf {\n file /run/x\n}\n\
             track_file tw {\n file /run/y\n weight -5 reverse\n init_file 3 overwrite\n}\n\
             vrrp_track_process p {\n process haproxy\n}\n\
             vrrp_track_process q {\n process /usr/bin/x -a \"b c\"\n param_match partial\n quorum 2\n quorum_max 3\n delay 1.5\n terminate_delay 2\n weight 10 reverse\n}\n\
             vrrp_track_process z {\n process sshd\n quorum_max 0\n}\n",
        );
        assert!(!l.has_errors(), "{:?}", messages(&l));
        let v = &l.config.vrrp;
        let tf = &v.files["tf"];
        assert_eq!(
            (tf.path.to_str(), tf.weight, tf.reverse, tf.init),
            (Some("/run/x"), 1, false, None)
        );
        let tw = &v.files["tw"];
        assert_eq!(
            (tw.weight, tw.reverse, tw.init),
            (-5, true, Some((3, true)))
        );
        let p = &v.processes["p"];
        assert_eq!(
            (
                p.param_match,
                p.full_command,
                p.quorum,
                p.quorum_max,
                p.weight
            ),
            (ParamMatch::None, false, 1, u32::MAX, 0)
        );
        let q = &v.processes["q"];
        assert_eq!(q.params, ["-a", "b c"]);
        assert_eq!((q.param_match, q.full_command), (ParamMatch::Partial, true));
        assert_eq!((q.quorum, q.quorum_max), (2, 3));
        assert_eq!(
            (q.fork_delay, q.terminate_delay),
            (Duration::from_millis(1500), Duration::from_secs(2))
        );
        assert_eq!((q.weight, q.reverse), (10, true));
        let z = &v.processes["z"];
        assert_eq!((z.quorum, z.quorum_max), (0, 0));
    }

    #[test]
    fn bad_track_blocks_are_located_errors() {
        let l = load(
            "track_file a {\n weight 3\n}\n\
             track_file b {\n file /x\n weight 300\n}\n\
             vrrp_track_process c {\n quorum 2\n}\n\
             vrrp_track_process d {\n process x\n quorum 5\n quorum_max 2\n param_match fuzzy\n delay 0\n}\n",
        );
        assert_eq!(
            messages(&l),
            [
                "t.conf:1:1: error: track_file: missing 'file'",
                "t.conf:6:2: error: weight: must be between -254 and 254",
                "t.conf:8:1: error: vrrp_track_process: missing 'process'",
                "t.conf:14:2: error: quorum_max: less than quorum",
                "t.conf:15:2: error: param_match: unknown type 'fuzzy' (initial or partial)",
                "t.conf:16:2: error: delay: '0' must be from 0.000001 to 3600 seconds",
            ]
        );
    }
}
