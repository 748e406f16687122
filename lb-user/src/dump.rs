//! keepalived's dump signals: SIGUSR1 writes the agent's state (services,
//! reals, checkers, VRRP) to [`DATA_FILE`], SIGUSR2 its statistics to
//! [`STATS_FILE`], as keepalived writes `/tmp/keepalived.data` and
//! `/tmp/keepalived.stats`. `lb dump [--stats]` gets the same through the
//! API (`GET /v1/dump`, `GET /v1/dump/stats`); `--json` prints the reply.
//!
//! /tmp is world-writable: the files are written by [`write_private`], which
//! never opens the target path itself (a file or symbolic link planted there
//! cannot redirect or corrupt the write).

use std::{
    ffi::OsString,
    fmt::Write as _,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use crate::{
    api::{server::Api, views, Status},
    list, list_json, reconciler,
};

/// Where SIGUSR1 writes (keepalived: `/tmp/keepalived.data`).
pub const DATA_FILE: &str = "/tmp/lb.data";
/// Where SIGUSR2 writes (keepalived: `/tmp/keepalived.stats`).
pub const STATS_FILE: &str = "/tmp/lb.stats";

/// `GET /v1/dump`, SIGUSR1: the agent's whole state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Data {
    /// Services, reals and where each came from (`lb status`).
    pub status: Status,
    /// Health checkers (`lb list --checks`).
    pub checks: views::Checks,
    /// VRRP instances (`lb list --vrrp`).
    pub vrrp: views::Vrrp,
}

impl Data {
    /// The text of `/tmp/lb.data` and `lb dump`.
    pub fn render(&self) -> String {
        format!(
            "------< lb agent >------\n{}\n------< Health checkers >------\n{}\n------< VRRP >------\n{}",
            self.status.render(),
            self.checks.render(),
            self.vrrp.render()
        )
    }
}

/// `GET /v1/dump/stats`, SIGUSR2: the counters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Services and reals with their counters (`lb list --stats --json`);
    /// `null` when the maps could not be read.
    pub table: Option<list_json::Table>,
    /// The data plane's global counters (`lb counters --json`).
    pub counters: Option<list_json::GlobalCounters>,
    /// Health changes applied since the start.
    pub health_changes: u64,
    /// Health checkers: probes, state, last probe's duration.
    pub checks: views::Checks,
    /// VRRP instances with their advert counters.
    pub vrrp: views::Vrrp,
}

impl Stats {
    /// The text of `/tmp/lb.stats` and `lb dump --stats`.
    pub fn render(&self) -> String {
        let mut s = String::from("------< Virtual services >------\n");
        match &self.table {
            None => s.push_str("(the maps could not be read)\n"),
            Some(t) => {
                let _ = writeln!(
                    s,
                    "{:<40} {:>12} {:>14} {:>14} {:>16} {:>16}",
                    "service / real", "conns", "in_packets", "out_packets", "in_bytes", "out_bytes"
                );
                let row = |s: &mut String, name: String, c: &list_json::Counters| {
                    let _ = writeln!(
                        s,
                        "{name:<40} {:>12} {:>14} {:>14} {:>16} {:>16}",
                        c.conns, c.in_packets, c.out_packets, c.in_bytes, c.out_bytes
                    );
                };
                for svc in &t.services {
                    let addr = sock(&svc.address, svc.port);
                    row(&mut s, format!("{} {addr}", svc.protocol), &svc.stats);
                    for r in &svc.reals {
                        row(
                            &mut s,
                            format!("  -> {}", sock(&r.address, r.port)),
                            &r.stats,
                        );
                    }
                }
            }
        }
        s.push_str("------< Data plane >------\n");
        match &self.counters {
            None => s.push_str("(the maps could not be read)\n"),
            Some(c) => {
                for (name, v) in &c.counters {
                    let _ = writeln!(s, "{name:<18} {v:>14}");
                }
            }
        }
        let _ = writeln!(s, "health changes {}", self.health_changes);
        s.push_str("------< Health checkers >------\n");
        for c in &self.checks.checkers {
            let _ = writeln!(
                s,
                "{} {} {}#{}: {} probes, {}, last probe {}",
                c.service,
                c.real,
                c.check,
                c.index,
                c.probes,
                if c.up { "UP" } else { "DOWN" },
                c.last_duration_s
                    .map(|d| format!("{:.3} ms", d * 1e3))
                    .unwrap_or_else(|| "none yet".into())
            );
        }
        s.push_str("------< VRRP >------\n");
        for i in &self.vrrp.instances {
            let _ = writeln!(
                s,
                "{} ({} vrid {}): {}; adverts sent {} received {}; became master {}, released master {}, transitions {}; priority 0 sent {} received {}",
                i.name,
                i.interface,
                i.vrid,
                i.state,
                i.adverts_sent,
                i.adverts_received,
                i.became_master,
                i.released_master,
                i.transitions,
                i.priority_zero_sent,
                i.priority_zero_received
            );
            if !i.dropped.is_empty() {
                let d: Vec<String> = i.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(s, "  dropped: {}", d.join(", "));
            }
        }
        s
    }
}

fn sock(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// `GET /v1/status`: asks the reconciler for the services.
pub async fn status(api: &Api) -> Result<Status, reconciler::Stopped> {
    let services = api.core.services().await?;
    let stats = api.core.published().borrow().stats;
    Ok(Status {
        pid: std::process::id(),
        uptime_s: api.started.elapsed().as_secs(),
        config: if api.config.exists() {
            api.config.display().to_string()
        } else {
            format!(
                "none ({} does not exist: the table is the runtime layer's)",
                api.config.display()
            )
        },
        config_applied_s: stats
            .file_applied
            .map(|t| t.elapsed().as_secs())
            .unwrap_or_default(),
        ifaces: api.ifaces.clone(),
        bpffs: api.bpffs.display().to_string(),
        services,
        health_changes: stats.health_changes,
        last_health_apply_ms: stats.last_health_apply.map(|d| d.as_secs_f64() * 1e3),
    })
}

/// The state dump (SIGUSR1, `GET /v1/dump`).
pub async fn data(api: &Api) -> Result<Data, reconciler::Stopped> {
    Ok(Data {
        status: status(api).await?,
        checks: api.core.checks().await?,
        vrrp: api.vrrp_info().await,
    })
}

/// The statistics (SIGUSR2, `GET /v1/dump/stats`); the maps are read on a
/// blocking thread with handles of their own.
pub async fn stats(api: &Api) -> Result<Stats, reconciler::Stopped> {
    let (table, counters) = match list::read_pinned(api.bpffs.clone()).await {
        Ok((snap, g)) => (
            Some(list_json::Table::new(&snap, false)),
            Some(list_json::GlobalCounters::from(&g)),
        ),
        Err(e) => {
            tracing::warn!("statistics: reading the maps: {e}");
            (None, None)
        }
    };
    // The watch's guard is not held across the awaits below.
    let health_changes = api.core.published().borrow().stats.health_changes;
    Ok(Stats {
        table,
        counters,
        health_changes,
        checks: api.core.checks().await?,
        vrrp: api.vrrp_info().await,
    })
}

/// Why a dump file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path} has no parent directory")]
    NoDir { path: String },
    #[error("creating a temporary file in {dir}")]
    Create {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {tmp}")]
    Write {
        tmp: String,
        #[source]
        source: std::io::Error,
    },
    /// In a sticky directory (/tmp) a file another user owns cannot be
    /// replaced without CAP_FOWNER: the operator removes it.
    #[error("replacing {path} (in a sticky directory such as /tmp, a file another user owns can only be replaced with CAP_FOWNER: remove it)")]
    Rename {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `bytes` to `path` so that nothing planted at `path` or beside it
/// takes the write: a new file (O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600)
/// in the same directory, written and synced, then renamed over `path`.
/// rename(2) replaces a symbolic link at `path` without following it (and
/// a hard link's other names keep their content); in a sticky directory it
/// replaces another user's file only with CAP_FOWNER.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| WriteError::NoDir {
            path: path.display().to_string(),
        })?;
    let name = path.file_name().unwrap_or_default();
    let mut last = None;
    // O_EXCL refuses a name someone else took; another name is tried.
    for _ in 0..16 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".{}.{}.{nanos:x}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp: PathBuf = dir.join(tmp_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                last = Some(e);
                continue;
            }
            Err(source) => {
                return Err(WriteError::Create {
                    dir: dir.display().to_string(),
                    source,
                })
            }
        };
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        drop(file);
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(WriteError::Write {
                tmp: tmp.display().to_string(),
                source,
            });
        }
        if let Err(source) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(WriteError::Rename {
                path: path.display().to_string(),
                source,
            });
        }
        return Ok(());
    }
    Err(WriteError::Create {
        dir: dir.display().to_string(),
        source: last.unwrap_or_else(|| std::io::Error::other("no free temporary name")),
    })
}

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SIGUSR1: [`Data`] to [`DATA_FILE`].
    Data,
    /// SIGUSR2: [`Stats`] to [`STATS_FILE`].
    Stats,
}

/// Handles SIGUSR1 / SIGUSR2: gathers the dump and writes its text to
/// `path` (in its own task: the agent's signal loop does not wait).
pub fn spawn_write(api: std::sync::Arc<Api>, kind: Kind, path: PathBuf) {
    tokio::spawn(async move {
        let text = match kind {
            Kind::Data => data(&api).await.map(|d| d.render()),
            Kind::Stats => stats(&api).await.map(|s| s.render()),
        };
        let Ok(text) = text else {
            return; // shutting down
        };
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || write_private(&p, text.as_bytes())).await;
        match r {
            Ok(Ok(())) => tracing::info!(file = %path.display(), "{kind:?} dump written"),
            Ok(Err(e)) => tracing::warn!("{kind:?} dump: {}", crate::util::chain(&e)),
            Err(e) => tracing::warn!("{kind:?} dump: {e}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lb-dump-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_mode_0600_and_replaces() {
        let d = tmpdir("plain");
        let p = d.join("lb.data");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A symbolic link planted at the path (to a file the attacker wants
    /// overwritten) is replaced; its target is untouched.
    #[test]
    fn a_planted_symlink_does_not_redirect_the_write() {
        let d = tmpdir("link");
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let p = d.join("lb.data");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_private(&p, b"dump").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_file(), "the link was replaced by a file");
        assert_eq!(std::fs::read(&p).unwrap(), b"dump");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A hard link planted at the path keeps the other name's content: the
    /// write goes to a new inode.
    #[test]
    fn a_planted_hard_link_keeps_its_content() {
        let d = tmpdir("hard");
        let victim = d.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let p = d.join("lb.stats");
        std::fs::hard_link(&victim, &p).unwrap();
        write_private(&p, b"dump").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_ne!(
            std::fs::metadata(&victim).unwrap().ino(),
            std::fs::metadata(&p).unwrap().ino()
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_directory_at_the_path_is_an_error() {
        let d = tmpdir("dir");
        let p = d.join("lb.data");
        std::fs::create_dir(&p).unwrap();
        assert!(matches!(
            write_private(&p, b"x"),
            Err(WriteError::Rename { .. })
        ));
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "temporary removed"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stats_render_lists_exact_counters() {
        let s = Stats {
            table: Some(list_json::Table {
                conn_table_size: 10,
                services: vec![list_json::Service {
                    protocol: "TCP".into(),
                    address: "10.0.0.1".into(),
                    port: 80,
                    scheduler: "rr".into(),
                    scheduler_flags: vec![],
                    persistent_timeout_s: None,
                    persistence_prefix: None,
                    stats: list_json::Counters {
                        conns: 123_456_789_012,
                        ..Default::default()
                    },
                    rates: None,
                    reals: vec![],
                }],
                rate_interval_s: None,
                connections: None,
            }),
            counters: None,
            health_changes: 3,
            checks: Default::default(),
            vrrp: Default::default(),
        };
        let t = s.render();
        assert!(t.contains("TCP 10.0.0.1:80"), "{t}");
        assert!(t.contains("123456789012"), "{t}");
        assert!(t.contains("health changes 3"), "{t}");
    }
}
