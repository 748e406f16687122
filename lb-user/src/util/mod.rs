//! Helpers shared by the agent's areas (health checking, VRRP, listing):
//! formatting, the data plane's clock, running configured programs (and
//! keepalived's script security for them) and printing an error with its
//! causes. Nothing here depends on another module of this crate.

pub mod netdev;
pub mod process;
pub mod security;

use std::{error::Error, fmt, net::IpAddr};

/// `IP:PORT`, with brackets for IPv6, as ipvsadm prints.
pub fn fmt_sock(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds, the clock of the data plane's
/// bpf_ktime_get_coarse_ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An error and its causes, `: `-separated (as anyhow's `{:#}`), for logs
/// and for the messages of failed probes.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// [`Chain`] as a string.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    Chain(e).to_string()
}

/// `t` as local time, `YYYY-MM-DD HH:MM:SS` (the C library's time zone,
/// as keepalived's logs print it); the Unix seconds when it cannot be
/// converted.
pub fn local_time(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: localtime_r writes only the tm it is given; a zeroed tm is a
    // valid value of the plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return format!("@{secs}");
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// A step of [`replace_file`] that failed, with the path it was about.
#[derive(Debug)]
pub struct ReplaceError {
    pub path: std::path::PathBuf,
    /// "creating it", "writing it", "renaming the new file over it",
    /// "syncing the directory".
    pub step: &'static str,
    pub source: std::io::Error,
}

/// Replaces `path` with `bytes` atomically: a new file `.NAME.PID.tmp` in
/// the same directory (mode 0600, created exclusively, never through a
/// link) is written and synced, renamed over `path`, and the directory is
/// synced. A crash leaves the old file or the new one, never a mix; on an
/// error the new file is removed.
pub fn replace_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), ReplaceError> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    fn fail(
        p: &std::path::Path,
        step: &'static str,
    ) -> impl FnOnce(std::io::Error) -> ReplaceError {
        let path = p.to_path_buf();
        move |source| ReplaceError { path, step, source }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(fail(&tmp, "creating it"))?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(&tmp, "writing it")(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(path, "renaming the new file over it")(e));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail(dir, "syncing the directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_sock("10.0.0.1".parse().unwrap(), 80), "10.0.0.1:80");
        assert_eq!(
            fmt_sock("2001:db8::1".parse().unwrap(), 80),
            "[2001:db8::1]:80"
        );
        assert_eq!(fmt_mac(&[0, 0x1b, 0x2c, 0xff, 1, 0xa]), "00:1b:2c:ff:01:0a");
    }

    #[test]
    fn chain_lists_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading the file")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&e), "reading the file: disk on fire");
    }
}
