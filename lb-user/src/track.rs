//! Tracked files and processes (keepalived's `track_file` and
//! `vrrp_track_process`): reading a file's number, what a value or a
//! process quorum does to a VRRP instance or a real server, and counting
//! the processes that match. The rules are keepalived 2.2.7's
//! (trackers/track_file.c, core/track_process.c, vrrp/vrrp_track.c); the
//! functions here are pure, the I/O ones ([`read_file_value`],
//! [`scan_proc`]) are blocking and run in `spawn_blocking`.
//!
//! keepalived learns of changes through inotify and the netlink process
//! connector; here a file is read every [`FILE_POLL`] and /proc is scanned
//! every [`PROCESS_POLL`], so a change is seen within that time.

use std::{path::Path, time::Duration};

use crate::config::track::{ParamMatch, TrackProcess};

/// How often a tracked file is read.
pub const FILE_POLL: Duration = Duration::from_millis(500);
/// How often /proc is scanned for tracked processes.
pub const PROCESS_POLL: Duration = Duration::from_millis(500);

/// The number a tracked file holds, read as keepalived does (`strtol`
/// base 0: decimal, `0x` hexadecimal, leading `0` octal; leading blanks
/// and a sign allowed; text without digits is 0). `None` when the number
/// is outside -2147483648..=2147483648: keepalived then keeps the
/// previous value.
pub fn parse_file_value(text: &str) -> Option<i64> {
    let t = text.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if let Some(h) = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .filter(|h| h.starts_with(|c: char| c.is_ascii_hexdigit()))
    {
        (16, h)
    } else if t.starts_with('0') {
        (8, t)
    } else {
        (10, t)
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    let digits = &digits[..end];
    if digits.is_empty() {
        return Some(0);
    }
    let v = i64::from_str_radix(digits, radix).ok()?;
    let v = if neg { -v } else { v };
    (i64::from(i32::MIN)..=i64::from(i32::MAX) + 1)
        .contains(&v)
        .then_some(v)
}

/// Reads a tracked file: a missing, unreadable or empty file is 0 (as
/// keepalived); `None` for a number out of range (keep the last value).
/// At most the first 127 bytes are read. Blocking.
pub fn read_file_value(path: &Path) -> Option<i64> {
    use std::io::Read;
    let mut buf = [0u8; 127];
    let n = match std::fs::File::open(path).and_then(|mut f| f.read(&mut buf)) {
        Ok(n) => n,
        Err(_) => return Some(0),
    };
    parse_file_value(&String::from_utf8_lossy(&buf[..n]))
}

/// Writes `init_file`'s value when the file is missing (or always with
/// `overwrite`, unless it exists and is not a regular file), as keepalived
/// does at start. Blocking.
pub fn init_file(path: &Path, value: i64, overwrite: bool) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(_) if !overwrite => Ok(()),
        Ok(m) if !m.is_file() => Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        ))),
        _ => std::fs::write(path, format!("{value}\n")),
    }
}

/// What a tracked object does to a VRRP instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The instance goes to FAULT.
    Fault,
    /// Added to the priority (before the clamp to 1..=254).
    Priority(i32),
}

/// A file's value for a VRRP instance (vrrp_track.c,
/// process_update_vrrp_track_file_status): with weight 0 a non-zero value
/// (a zero one with `reverse`) is FAULT; else value × weight (negated with
/// `reverse`), FAULT at -254 or below, at most 253.
pub fn file_vrrp_effect(value: i64, weight: i32, reverse: bool) -> Effect {
    if weight == 0 {
        return if (value != 0) != reverse {
            Effect::Fault
        } else {
            Effect::Priority(0)
        };
    }
    let m = if reverse { -1 } else { 1 };
    let s = value.saturating_mul(i64::from(weight) * m);
    if s <= -254 {
        Effect::Fault
    } else {
        Effect::Priority(s.min(253) as i32)
    }
}

/// What a file does to a real server with a FILE_CHECK (check_file.c,
/// process_update_checker_track_file_status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealEffect {
    /// The checker is down.
    Down,
    /// Up, with the real's weight changed by this much.
    Up(i64),
}

/// With weight 0 a non-zero value (a zero one with `reverse`) is down;
/// else value × weight (negated with `reverse`) is added to the real's
/// weight, and down only at -2147483648 or below (keepalived's
/// IPVS_WEIGHT_FAULT).
pub fn file_real_effect(value: i64, weight: i64, reverse: bool) -> RealEffect {
    if weight == 0 {
        return if (value != 0) != reverse {
            RealEffect::Down
        } else {
            RealEffect::Up(0)
        };
    }
    let m = if reverse { -1 } else { 1 };
    let s = value.saturating_mul(weight * m);
    if s <= i64::from(i32::MIN) {
        RealEffect::Down
    } else {
        RealEffect::Up(s.min(i64::from(i32::MAX)))
    }
}

/// A tracked process's quorum for a VRRP instance (vrrp_track.c,
/// process_update_track_process_status): weight 0 is FAULT without the
/// quorum (with it, under `reverse`); a positive weight is added while
/// the quorum holds, a negative one while it does not, both negated by
/// `reverse`.
pub fn process_effect(quorum: bool, weight: i32, reverse: bool) -> Effect {
    let m = if reverse { -1 } else { 1 };
    match weight {
        0 if quorum == reverse => Effect::Fault,
        0 => Effect::Priority(0),
        w if (w > 0) == quorum => Effect::Priority(w * m),
        _ => Effect::Priority(0),
    }
}

/// A running process as the matcher sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proc {
    /// `/proc/PID/stat`'s command name (at most 15 bytes).
    pub comm: String,
    /// `/proc/PID/cmdline`: the words, each NUL-terminated (empty for
    /// kernel threads; only read when a tracker needs it).
    pub cmdline: Vec<u8>,
}

/// Whether `p` is one of `t`'s processes (track_process.c, read_procs and
/// check_params): the name equals `comm`, or with `full_command` the
/// command line's first word; then the parameters as `param_match` says.
pub fn matches(t: &TrackProcess, p: &Proc) -> bool {
    if !t.full_command {
        return p.comm == t.process;
    }
    let mut words = p.cmdline.splitn(2, |&b| b == 0);
    if words.next() != Some(t.process.as_bytes()) {
        return false;
    }
    if t.param_match == ParamMatch::None {
        return true;
    }
    let have = words.next().unwrap_or_default();
    let want: Vec<u8> = t
        .params
        .iter()
        .flat_map(|w| w.bytes().chain(std::iter::once(0)))
        .collect();
    match t.param_match {
        ParamMatch::None => true,
        ParamMatch::Exact => have == want.as_slice(),
        ParamMatch::Partial => have.starts_with(&want),
        // The last parameter may go on: compare without its terminator.
        ParamMatch::Initial => want.is_empty() || have.starts_with(&want[..want.len() - 1]),
    }
}

/// Whether a number of matching processes makes the quorum.
pub fn has_quorum(t: &TrackProcess, count: usize) -> bool {
    let c = u32::try_from(count).unwrap_or(u32::MAX);
    (t.quorum..=t.quorum_max).contains(&c)
}

/// The processes running now (zombies left out, as keepalived does);
/// `cmdline` is read only when `with_cmdline`. Blocking: scans /proc.
pub fn scan_proc(with_cmdline: bool) -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // A process gone between the listing and the read is skipped.
        let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((comm, zombie)) = parse_stat(&stat) else {
            continue;
        };
        if zombie {
            continue;
        }
        let cmdline = if with_cmdline {
            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
        } else {
            Vec::new()
        };
        out.push(Proc { comm, cmdline });
    }
    out
}

/// `/proc/PID/stat`: the name between the first '(' and the last ')',
/// and whether the state after it is Z (zombie).
fn parse_stat(stat: &[u8]) -> Option<(String, bool)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let comm = String::from_utf8_lossy(stat.get(open + 1..close)?).into_owned();
    Some((comm, stat.get(close + 2) == Some(&b'Z')))
}

/// A tracked process's quorum over time: a change counts after
/// `fork_delay` (gained) or `terminate_delay` (lost), judged by the count
/// at that moment, as keepalived's timers do; a change undone before then
/// is forgotten. Times are offsets on a monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// The quorum as tracked (what the instances see).
    pub up: bool,
    /// When the pending change is judged.
    pending: Option<Duration>,
}

impl Quorum {
    /// The state at start: the quorum as found, without delay (keepalived's
    /// initial /proc scan).
    pub fn new(up: bool) -> Self {
        Quorum { up, pending: None }
    }

    /// Records a scan at `now` that found the quorum `now_up`; true when
    /// the tracked state changed.
    pub fn observe(&mut self, t: &TrackProcess, now: Duration, now_up: bool) -> bool {
        if now_up == self.up {
            self.pending = None;
            return false;
        }
        let delay = if now_up {
            t.fork_delay
        } else {
            t.terminate_delay
        };
        let due = *self.pending.get_or_insert(now + delay);
        if now >= due {
            self.up = now_up;
            self.pending = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::track::TrackProcess;

    #[test]
    fn file_values_are_read_as_strtol_base_0() {
        assert_eq!(parse_file_value("12\n"), Some(12));
        assert_eq!(parse_file_value("  -7 trailing"), Some(-7));
        assert_eq!(parse_file_value("0x1f"), Some(31));
        assert_eq!(parse_file_value("010"), Some(8));
        assert_eq!(parse_file_value("abc"), Some(0));
        assert_eq!(parse_file_value(""), Some(0));
        assert_eq!(parse_file_value("2147483648"), Some(2147483648));
        assert_eq!(parse_file_value("2147483649"), None);
        assert_eq!(parse_file_value("-2147483649"), None);
    }

    #[test]
    fn files_missing_or_written() {
        let dir = std::env::temp_dir().join(format!("lb-track-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("v");
        assert_eq!(read_file_value(&f), Some(0), "missing file is 0");
        init_file(&f, 5, false).unwrap();
        assert_eq!(read_file_value(&f), Some(5));
        init_file(&f, 9, false).unwrap();
        assert_eq!(read_file_value(&f), Some(5), "an existing file is kept");
        init_file(&f, 9, true).unwrap();
        assert_eq!(read_file_value(&f), Some(9), "overwrite");
        assert!(
            init_file(&dir, 1, true).is_err(),
            "a directory is not overwritten"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_effects_follow_keepalived() {
        use Effect::*;
        // weight 0: non-zero is FAULT; reverse: zero is FAULT.
        assert_eq!(file_vrrp_effect(0, 0, false), Priority(0));
        assert_eq!(file_vrrp_effect(3, 0, false), Fault);
        assert_eq!(file_vrrp_effect(0, 0, true), Fault);
        assert_eq!(file_vrrp_effect(3, 0, true), Priority(0));
        // value × weight, reverse negates; FAULT at -254, at most 253.
        assert_eq!(file_vrrp_effect(5, 2, false), Priority(10));
        assert_eq!(file_vrrp_effect(5, 2, true), Priority(-10));
        assert_eq!(file_vrrp_effect(-100, 2, false), Priority(-200));
        assert_eq!(file_vrrp_effect(-127, 2, false), Fault);
        assert_eq!(file_vrrp_effect(1000, 1, false), Priority(253));
        // Reals: weight 0 as above; else added, down only at i32::MIN.
        assert_eq!(file_real_effect(1, 0, false), RealEffect::Down);
        assert_eq!(file_real_effect(0, 0, false), RealEffect::Up(0));
        assert_eq!(file_real_effect(0, 0, true), RealEffect::Down);
        assert_eq!(file_real_effect(4, 3, false), RealEffect::Up(12));
        assert_eq!(file_real_effect(4, 3, true), RealEffect::Up(-12));
        assert_eq!(file_real_effect(-2147483648, 1, false), RealEffect::Down);
        assert_eq!(file_real_effect(-5, 1, false), RealEffect::Up(-5));
    }

    #[test]
    fn process_effects_follow_keepalived() {
        use Effect::*;
        assert_eq!(process_effect(false, 0, false), Fault);
        assert_eq!(process_effect(true, 0, false), Priority(0));
        assert_eq!(process_effect(true, 0, true), Fault);
        assert_eq!(process_effect(true, 10, false), Priority(10));
        assert_eq!(process_effect(false, 10, false), Priority(0));
        assert_eq!(process_effect(false, -10, false), Priority(-10));
        assert_eq!(process_effect(true, -10, false), Priority(0));
        assert_eq!(process_effect(true, 10, true), Priority(-10));
        assert_eq!(process_effect(false, -10, true), Priority(10));
    }

    fn tp(text: &str) -> TrackProcess {
        let l = crate::config::load_str(
            &format!("vrrp_track_process p {{\n{text}\n}}\n"),
            Path::new("p.conf"),
        );
        assert!(!l.has_errors());
        l.config.vrrp.processes["p"].clone()
    }

    fn proc(comm: &str, cmd: &[&str]) -> Proc {
        Proc {
            comm: comm.into(),
            cmdline: cmd.iter().flat_map(|w| w.bytes().chain([0])).collect(),
        }
    }

    #[test]
    fn process_matching_by_name_command_and_parameters() {
        let nginx = proc("nginx", &["/usr/sbin/nginx", "-g", "daemon off;"]);
        assert!(matches(&tp("process nginx"), &nginx));
        assert!(
            !matches(&tp("process ngin"), &nginx),
            "exact, not a pattern"
        );
        assert!(!matches(&tp("process nginx\nfull_command"), &nginx));
        assert!(matches(
            &tp("process /usr/sbin/nginx\nfull_command"),
            &nginx
        ));
        assert!(matches(
            &tp("process /usr/sbin/nginx -g \"daemon off;\""),
            &nginx
        ));
        assert!(
            !matches(&tp("process /usr/sbin/nginx -g"), &nginx),
            "exact parameters"
        );
        assert!(matches(
            &tp("process /usr/sbin/nginx -g\nparam_match partial"),
            &nginx
        ));
        assert!(!matches(
            &tp("process /usr/sbin/nginx -g daem\nparam_match partial"),
            &nginx
        ));
        assert!(matches(
            &tp("process /usr/sbin/nginx -g daem\nparam_match initial"),
            &nginx
        ));
        // param_match without parameters: the command must have none.
        assert!(!matches(
            &tp("process /usr/sbin/nginx\nparam_match"),
            &nginx
        ));
        assert!(matches(
            &tp("process /usr/sbin/nginx\nparam_match"),
            &proc("nginx", &["/usr/sbin/nginx"])
        ));
    }

    #[test]
    fn quorum_and_delays() {
        let t = tp("process x\nquorum 2\nquorum_max 3\nfork_delay 2\nterminate_delay 1");
        assert!(!has_quorum(&t, 1));
        assert!(has_quorum(&t, 2) && has_quorum(&t, 3));
        assert!(!has_quorum(&t, 4));
        let s = Duration::from_secs;
        let mut q = Quorum::new(false);
        assert!(!q.observe(&t, s(0), true), "gained: waits fork_delay");
        assert!(!q.observe(&t, s(1), true));
        assert!(q.observe(&t, s(2), true));
        assert!(q.up);
        assert!(!q.observe(&t, s(3), false), "lost: waits terminate_delay");
        assert!(
            !q.observe(&t, s(3) + Duration::from_millis(500), true),
            "back in time"
        );
        assert!(!q.observe(&t, s(5), false), "a new loss waits again");
        assert!(q.observe(&t, s(6), false));
        assert!(!q.up);
        // No delay: at once.
        let t = tp("process x");
        let mut q = Quorum::new(true);
        assert!(q.observe(&t, s(0), false));
    }

    #[test]
    fn this_test_process_is_found_in_proc() {
        let me = std::fs::read("/proc/self/cmdline").unwrap();
        let procs = scan_proc(true);
        assert!(procs.iter().any(|p| p.cmdline == me));
        assert!(procs.iter().all(|p| !p.comm.is_empty()));
        assert_eq!(
            parse_stat(b"42 (a (b) c) Z 1 2"),
            Some(("a (b) c".to_string(), true))
        );
    }
}
