//! Reloading the configuration file (SIGHUP, `lb reload`, `POST /v1/reload`).
//!
//! The file is read and parsed on a blocking thread, its reals' neighbours
//! are resolved, and only then is the reconciler asked to apply it: a slow
//! disk or a huge file never holds the reconciler. Reloads are serialised;
//! a refused file changes nothing (keepalived keeps its running
//! configuration too), and every diagnostic goes back to whoever asked, with
//! its location, as `lb check-config` prints it.
//!
//! A file rewritten while it is read is never applied half written: every
//! file is read again after [`config::SETTLE`] and used only if none changed
//! (see [`config::load_stable`]). A file without any virtual server is
//! applied, as keepalived does, but a reload that so removes every running
//! service is logged as a warning naming the file.

use std::{path::PathBuf, sync::Arc, time::Instant};

use tokio::sync::Mutex;

use super::{notify, watch};
use crate::{
    api::{Diagnostic, ReloadOutcome, ReloadReply},
    config,
    desired::FileLayer,
    reconciler, vrrp,
};

/// Everything a reload needs; cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    pub path: PathBuf,
    /// A missing file is an empty configuration (see
    /// [`super::Options::config_optional`]).
    pub optional: bool,
    pub core: reconciler::Handle,
    pub vrrp: vrrp::engine::Handle,
    pub nl: rtnetlink::Handle,
    pub attached: Vec<(u32, [u8; 6])>,
    /// One reload at a time.
    pub serial: Arc<Mutex<()>>,
    /// Saves the runtime layer when a reload changed it.
    pub changer: super::change::Changer,
    /// The connection-sync settings the agent started with (`lvs_sync_daemon`,
    /// `lb_sync_auth_key`): the running sync keeps them until a restart.
    pub sync_at_start: SyncSettings,
    /// The latest reload's reply and when it ended (the web console's
    /// configuration page).
    pub last: Arc<std::sync::Mutex<Option<(std::time::SystemTime, ReloadReply)>>>,
}

/// `lvs_sync_daemon` and `lb_sync_auth_key` as a comparable value (without
/// their locations).
pub type SyncSettings = Option<(
    String,
    Option<String>,
    Option<u8>,
    Option<u16>,
    u16,
    u8,
    std::net::IpAddr,
    Option<String>,
)>;

/// [`SyncSettings`] of a configuration.
pub fn sync_settings(cfg: &config::Config) -> SyncSettings {
    let g = &cfg.vrrp.globals;
    g.lvs_sync.as_ref().map(|s| {
        (
            s.iface.clone(),
            s.instance.clone(),
            s.syncid,
            s.maxlen,
            s.port,
            s.ttl,
            s.group,
            g.sync_auth_key.as_ref().map(|(k, _)| k.clone()),
        )
    })
}

/// Reads and parses `path` off the async threads, once it is stable (see
/// [`config::load_stable`]), logging each diagnostic.
pub async fn read(path: PathBuf) -> config::Loaded {
    let p = path.clone();
    let load = move || config::load_stable(&p, config::SETTLE, config::SETTLE_TRIES);
    let loaded = match tokio::task::spawn_blocking(load).await {
        Ok(l) => l,
        Err(e) => {
            // The parser panicked: report it as an error of the file.
            config::Loaded::failed(&path, format!("reading the file failed: {e}"))
        }
    };
    log(&loaded);
    loaded
}

/// [`read`], except that with `optional` a file that does not exist is an
/// empty configuration (logged once at info).
pub async fn read_optional(path: PathBuf, optional: bool) -> config::Loaded {
    if optional
        && matches!(std::fs::symlink_metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        tracing::info!(
            "no configuration file {}: an empty table (add services with `lb adm`)",
            path.display()
        );
        return config::Loaded::empty();
    }
    read(path).await
}

/// Logs every diagnostic at its severity.
pub fn log(loaded: &config::Loaded) {
    for d in &loaded.diags {
        match d.severity {
            config::Severity::Warning => tracing::warn!("{d}"),
            config::Severity::Error => tracing::error!("{d}"),
        }
    }
}

impl Reloader {
    /// Re-reads the file and applies it; unchanged checkers and VRRP
    /// instances keep their state. systemd hears `RELOADING=1` before and
    /// `READY=1` with the outcome after ([`notify`]).
    pub async fn reload(&self) -> ReloadReply {
        let _one = self.serial.lock().await;
        notify::reloading();
        let reply = self.reload_serialised().await;
        if reply.outcome == ReloadOutcome::Applied {
            // The file's weights apply again: no drain goes on removing.
            self.changer.drains.cancel_all(crate::drain::Cancel::Reload);
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::SystemTime::now(), reply.clone()));
        notify::reloaded(&match reply.outcome {
            ReloadOutcome::Applied => format!("running: {}", reply.message),
            ReloadOutcome::Refused | ReloadOutcome::Failed => {
                format!("running (last reload not applied): {}", reply.message)
            }
        });
        reply
    }

    /// The latest reload (as [`Reloader::reload`] answered it) and when it
    /// ended, as local time `YYYY-MM-DD HH:MM:SS`; `None`: none yet.
    pub fn last_reload(&self) -> Option<(String, ReloadReply)> {
        let g = self.last.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref()
            .map(|(t, r)| (crate::util::local_time(*t), r.clone()))
    }

    async fn reload_serialised(&self) -> ReloadReply {
        let mut loaded = read_optional(self.path.clone(), self.optional).await;
        if !loaded.has_errors() && loaded.config.services.is_empty() {
            let running = self.core.services().await.map_or(0, |s| s.len());
            if running > 0 {
                let d = config::Diag::warning(
                    &config::Loc {
                        file: Arc::new(self.path.clone()),
                        line: 1,
                        col: 1,
                    },
                    None,
                    format!("no virtual server in the configuration: this reload removes all {running} running service(s) (applied, as keepalived does)"),
                );
                tracing::warn!("{d}");
                loaded.diags.push(d);
            }
        }
        if !loaded.has_errors() && sync_settings(&loaded.config) != self.sync_at_start {
            let loc = loaded
                .config
                .vrrp
                .globals
                .lvs_sync
                .as_ref()
                .map(|s| s.loc.clone())
                .unwrap_or_else(|| config::Loc {
                    file: Arc::new(self.path.clone()),
                    line: 1,
                    col: 1,
                });
            let d = config::Diag::warning(
                &loc,
                Some("lvs_sync_daemon"),
                "connection sync settings changed: they take effect at the next start of the agent; the running sync keeps those it started with",
            );
            tracing::warn!("{d}");
            loaded.diags.push(d);
            // A file the next start would refuse is refused now.
            if let Some(Err(e)) = crate::sync::Settings::from_config(&loaded.config) {
                let why = match &e {
                    crate::sync::SyncError::NoIface { iface, .. } => {
                        format!(
                            "no interface named {iface} on this host: the next start would fail"
                        )
                    }
                    other => format!("{}: the next start would fail", crate::util::chain(other)),
                };
                loaded
                    .diags
                    .push(config::Diag::error(&loc, Some("lvs_sync_daemon"), why));
            }
        }
        let diagnostics: Vec<Diagnostic> = loaded.diags.iter().map(Diagnostic::from).collect();
        let file = self.path.display().to_string();
        let reply = |outcome, services, vrrp_instances, message: String| ReloadReply {
            outcome,
            file: file.clone(),
            diagnostics: diagnostics.clone(),
            services,
            vrrp_instances,
            message,
        };
        if loaded.has_errors() {
            let n = loaded.errors().count();
            tracing::error!(
                "reload refused, running configuration kept: {}: {n} error(s) in the configuration",
                self.path.display()
            );
            return reply(
                ReloadOutcome::Refused,
                0,
                0,
                format!("{file}: {n} error(s); reload refused, the running configuration is kept"),
            );
        }
        let cfg = loaded.config;
        let addrs = crate::desired::Desired::real_addrs(&cfg);
        let l2 = match watch::resolve(&self.nl, &self.attached, &addrs, &mut Vec::new()).await {
            Ok(l2) => Some(l2),
            Err(e) => {
                tracing::warn!(
                    "neighbour lookup before the reload failed: {}; the neighbour watch follows up",
                    crate::util::chain(&e)
                );
                None
            }
        };
        let (services, instances) = (cfg.services.len(), cfg.vrrp.instances.len());
        let vrrp_cfg = cfg.vrrp.clone();
        super::check_forwarding(&cfg);
        let layer = FileLayer {
            path: self.path.clone(),
            config: cfg,
            applied_at: Instant::now(),
        };
        match self.core.apply_file(layer, l2).await {
            Err(stopped) => reply(ReloadOutcome::Failed, 0, 0, stopped.to_string()),
            Ok(Err(e)) => reply(
                ReloadOutcome::Failed,
                0,
                0,
                format!(
                    "{}; the previous configuration was restored",
                    crate::util::chain(&e)
                ),
            ),
            Ok(Ok(())) => {
                // Unchanged VRRP instances keep their state too.
                self.vrrp.reload(vrrp_cfg).await;
                // A runtime service the file now defines is gone: saved so,
                // or a restart would bring it back.
                if let Err(e) = self.changer.save_current().await {
                    tracing::error!("saving the runtime layer after the reload: {e}");
                }
                tracing::info!(services, "configuration reloaded");
                reply(
                    ReloadOutcome::Applied,
                    services,
                    instances,
                    format!("configuration reloaded: {services} virtual server(s), {instances} VRRP instance(s)"),
                )
            }
        }
    }
}
