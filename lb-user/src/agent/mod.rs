//! `lb run`: the agent. It takes its locks, loads and attaches the XDP
//! program (or takes over the attachment a previous agent left pinned,
//! [`attach`]), starts its tasks and runs until SIGTERM / SIGINT / SIGQUIT
//! or `lb stop` (`POST /v1/stop`), which detach, unless a stop asked to keep
//! forwarding.
//!
//! Tasks (each its own, exchanging typed messages; none can stall another):
//! - the reconciler (`crate::reconciler`), the only writer of the
//!   configuration maps, with the health monitor's verdicts;
//! - the neighbour watch and the connection sweep ([`watch`]);
//! - the VRRP engine (`crate::vrrp::engine`);
//! - connection sync (`crate::sync`), when `lvs_sync_daemon` is set;
//! - BGP announcement of the VIPs (`crate::bgp`), driving gobgpd when
//!   `lb_bgp` is set;
//! - the API server (`crate::api::server`), one task per connection;
//! - the metrics server (`crate::metrics`), when `--metrics-listen` is set;
//! - this function's loop: signals (SIGHUP reloads through [`reload`];
//!   SIGUSR1 / SIGUSR2 write the dumps of `crate::dump`).

pub mod attach;
pub mod change;
pub mod drain;
pub mod exclusive;
pub mod notify;
pub mod paths;
pub mod reload;
pub mod watch;

use std::{path::PathBuf, sync::Arc, time::Instant};

use aya::programs::XdpMode;
use lb_common::Timeouts;
use thiserror::Error;
use tokio::{
    net::UnixListener,
    signal::unix::{signal, SignalKind},
};

use crate::{
    api,
    dataplane::{self, Dataplane, LoadOptions},
    desired::FileLayer,
    health, reconciler,
    state::Tables,
    vrrp,
};

/// Settings of one agent.
#[derive(Clone, Debug)]
pub struct Options {
    pub ifaces: Vec<String>,
    /// The configuration file (keepalived.conf syntax).
    pub config: PathBuf,
    /// A missing `config` is an empty configuration (no `-f` given: the
    /// by-hand workflow, `lb run` then `lb adm`), not an error.
    pub config_optional: bool,
    /// Where the runtime layer is saved (`runtime.json`), mode 0700.
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub socket: PathBuf,
    pub mode: XdpMode,
    pub conntrack_size: u32,
    pub timeouts: Timeouts,
    /// Where to serve Prometheus metrics (`None`: not served).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The web console (`None`: not served).
    pub web: Option<crate::web::Options>,
}

fn iface_info(name: &str) -> Result<(u32, [u8; 6]), AgentError> {
    let bad = |why: String| AgentError::Iface {
        name: name.into(),
        why,
    };
    let c = std::ffi::CString::new(name).map_err(|e| bad(e.to_string()))?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(AgentError::NoIface(name.into()));
    }
    // In this network namespace (not sysfs's: see util::netdev).
    let mac = crate::util::netdev::hw_addr(name).map_err(|e| bad(e.to_string()))?;
    Ok((idx, mac))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the agent did not start, or stopped.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The configuration file has errors (they were logged with their
    /// locations): exit 64, EX_USAGE.
    #[error("{file}: {errors} error(s) in the configuration")]
    ConfigRefused { file: String, errors: usize },
    #[error("no interface named {0}")]
    NoIface(String),
    /// The console's error is the whole message (no source chain: it
    /// would be printed twice).
    #[error("web console: {0}")]
    Web(crate::web::WebError),
    #[error("interface {name}: {why}")]
    Iface { name: String, why: String },
    #[error(transparent)]
    Path(#[from] paths::PathError),
    #[error("restoring the runtime layer")]
    State(#[source] crate::runtime::StateError),
    #[error(transparent)]
    Lock(#[from] exclusive::LockError),
    #[error(transparent)]
    Dataplane(#[from] dataplane::DataplaneError),
    #[error(transparent)]
    Attach(#[from] attach::AttachError),
    #[error("reading the pinned tables")]
    Recover(#[source] crate::state::TablesError),
    #[error(transparent)]
    Apply(#[from] reconciler::ApplyError),
    #[error("resolving the reals' neighbours")]
    Neighbours(#[source] BoxError),
    #[error("reading this host's MAC addresses")]
    HostMacs(#[source] BoxError),
    #[error("starting VRRP")]
    Vrrp(#[source] BoxError),
    #[error(transparent)]
    Sync(crate::sync::SyncError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the reconciler stopped unexpectedly")]
    ReconcilerStopped,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

/// Undoes a start that failed: pins this start created (not those an
/// earlier agent left, which hold established flows), the pin directory if
/// it created it.
struct StartGuard {
    bpffs: PathBuf,
    had_pins: bool,
    created_dir: bool,
    armed: bool,
}

impl StartGuard {
    fn new(bpffs: PathBuf, created_dir: bool) -> Self {
        let had_pins = lb_common::maps::ALL.iter().any(|m| bpffs.join(m).exists());
        StartGuard {
            bpffs,
            had_pins,
            created_dir,
            armed: true,
        }
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if !self.armed || self.had_pins {
            return;
        }
        for m in lb_common::maps::ALL {
            let _ = std::fs::remove_file(self.bpffs.join(m));
        }
        if self.created_dir {
            let _ = std::fs::remove_dir(&self.bpffs);
        }
        tracing::info!(bpffs = %self.bpffs.display(), "start failed: removed the maps it had pinned");
    }
}

/// Removes the socket's directory again, with the lock file in it, when
/// this start created the directory and then failed (a refused second
/// agent, a failed load): a failed start leaves nothing behind. A directory
/// that was there is left with its lock file.
struct SocketDirGuard {
    /// The directory, when this start created it.
    dir: Option<PathBuf>,
    lock: PathBuf,
    armed: bool,
}

impl Drop for SocketDirGuard {
    fn drop(&mut self) {
        if let (true, Some(dir)) = (self.armed, &self.dir) {
            let _ = std::fs::remove_file(&self.lock);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The signals the agent handles: SIGHUP reloads, SIGTERM / SIGINT /
/// SIGQUIT stop cleanly, SIGUSR1 / SIGUSR2 write the dumps (keepalived's
/// signals; [`crate::dump`]). SIGPIPE is ignored (Rust's runtime) and
/// SIGWINCH's default action is to ignore it.
const HANDLED: [libc::c_int; 6] = [
    libc::SIGHUP,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn mask_handled(how: libc::c_int) {
    // SAFETY: a zeroed sigset_t is initialised by sigemptyset; only the
    // calling thread's mask changes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in HANDLED {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Holds the [`HANDLED`] signals pending from the first instruction of
/// `lb run` (called first thing in `main`, before any thread exists) until
/// [`run`] has its handlers in place and the program is loaded: a
/// `systemctl reload` right after the start is then a reload, not the
/// default action (exit), and a signal cannot interrupt the kernel's
/// verifier (which gives up with EAGAIN when a signal is pending) or the
/// creation of the maps. Programs the agent starts get an empty mask (the
/// standard library resets it in the child).
pub fn hold_signals() {
    mask_handled(libc::SIG_BLOCK);
}

/// Runs the agent until SIGTERM / SIGINT.
pub async fn run(opts: Options) -> Result<(), AgentError> {
    // Signals first: a SIGHUP (`systemctl reload`) or SIGTERM that arrives
    // while the agent starts waits for the loop instead of killing it.
    let mut hup = signal(SignalKind::hangup()).map_err(io("installing the SIGHUP handler"))?;
    let mut term = signal(SignalKind::terminate()).map_err(io("installing the SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("installing the SIGINT handler"))?;
    let mut quit = signal(SignalKind::quit()).map_err(io("installing the SIGQUIT handler"))?;
    let mut usr1 =
        signal(SignalKind::user_defined1()).map_err(io("installing the SIGUSR1 handler"))?;
    let mut usr2 =
        signal(SignalKind::user_defined2()).map_err(io("installing the SIGUSR2 handler"))?;
    // Signals whose default action is to terminate and that mean nothing to
    // the agent: logged, never fatal (a stray `kill -ALRM` must not drop
    // XDP and leave the socket behind). Handlers are reset in the programs
    // the agent starts, unlike an ignored disposition.
    for (sig, name) in [
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
    ] {
        let mut stream = signal(SignalKind::from_raw(sig))
            .map_err(io(format!("installing the {name} handler")))?;
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                tracing::info!(
                    "{name} received: ignored (SIGTERM stops the agent, SIGHUP reloads)"
                );
            }
        });
    }
    let started = Instant::now();

    let loaded = reload::read_optional(opts.config.clone(), opts.config_optional).await;
    if loaded.has_errors() {
        return Err(AgentError::ConfigRefused {
            file: opts.config.display().to_string(),
            errors: loaded.errors().count(),
        });
    }
    let config = loaded.config;
    // The web console's options, certificate, users file and address are
    // checked before anything is attached or announced: a bad one fails
    // the start with nothing to undo.
    let web_bound = match opts.web.clone() {
        Some(w) => Some(crate::web::bind(w).await.map_err(AgentError::Web)?),
        None => None,
    };
    // The runtime layer a previous agent saved (`lb adm` changes).
    paths::private_dir(&opts.state_dir)?;
    let runtime = match crate::runtime::load(&opts.state_dir) {
        Ok(None) => crate::runtime::Runtime::default(),
        Ok(Some(rec)) => {
            let (rt, replaced) = crate::runtime::Runtime::from_record(&rec, &config);
            for k in &replaced {
                tracing::warn!("{} now defines service {k}, saved from a runtime change: the file's replaces it", opts.config.display());
            }
            if !replaced.is_empty() {
                // Saved without them, or a file that stops defining them
                // would bring them back at a later start.
                crate::runtime::save(&opts.state_dir, &rt.record()).map_err(AgentError::State)?;
            }
            tracing::info!(
                services = rec.services.len(),
                "runtime layer restored from {}",
                opts.state_dir.display()
            );
            rt
        }
        Err(e @ crate::runtime::StateError::Corrupt { .. }) => {
            tracing::error!(
                "{}; starting without runtime changes",
                crate::util::chain(&e)
            );
            crate::runtime::Runtime::default()
        }
        Err(e) => return Err(AgentError::State(e)),
    };
    let config_with_runtime = runtime.merge(&config);
    // Every interface must exist before anything is created.
    let mut attached = Vec::new();
    for name in &opts.ifaces {
        attached.push(iface_info(name)?);
    }

    // One agent per control socket and per pin directory, before either is
    // touched.
    let created_socket_dir = paths::socket_dir(&opts.socket)?;
    let mut socket_guard = SocketDirGuard {
        dir: created_socket_dir
            .then(|| opts.socket.parent().map(PathBuf::from))
            .flatten(),
        lock: exclusive::socket_lock_path(&opts.socket),
        armed: true,
    };
    let socket_lock = exclusive::socket(&opts.socket)?;
    // The lock is held: a socket at the path is a stale one; anything else
    // is refused, never deleted.
    paths::clear_stale_socket(&opts.socket)?;
    let created_dir = paths::pin_dir(&opts.bpffs)?;
    let pin_lock = exclusive::pin_dir(&opts.bpffs)?;
    let mut guard = StartGuard::new(opts.bpffs.clone(), created_dir);

    let mut ebpf = dataplane::load(&LoadOptions {
        pin_dir: Some(opts.bpffs.clone()),
        conntrack_size: opts.conntrack_size,
        ..Default::default()
    })?;
    // The handlers are in place; signals held since `hold_signals` (and
    // those that came during the map creation and the verifier, which a
    // pending signal interrupts with EAGAIN) are delivered now.
    mask_handled(libc::SIG_UNBLOCK);
    spawn_ebpf_logger(&mut ebpf);
    let mut dp = Dataplane::from_ebpf(&mut ebpf)?;
    dp.set_timeouts(opts.timeouts)?;
    for (idx, _) in &attached {
        dp.add_iface(*idx)?;
    }
    let tables = Tables::recover(&dp).map_err(AgentError::Recover)?;
    // One netlink socket per task: two dumps at once on one socket fail
    // with EBUSY.
    let netlink = || -> Result<rtnetlink::Handle, AgentError> {
        let (conn, nl, _) = rtnetlink::new_connection().map_err(io("opening rtnetlink"))?;
        tokio::spawn(conn);
        Ok(nl)
    };
    let nl = netlink()?;
    // Before the attach: frames to other hosts' MACs are never balanced.
    let macs = watch::host_macs(&nl, &attached)
        .await
        .map_err(|e| AgentError::HostMacs(e.into()))?;
    watch::log_host_macs(&macs);
    if let Err(e) = dp.set_host_macs(&macs) {
        tracing::error!("{}", crate::util::chain(&e));
    }
    let addrs = crate::desired::Desired::real_addrs(&config_with_runtime);
    let l2 = watch::resolve(&nl, &attached, &addrs, &mut Vec::new())
        .await
        .map_err(|e| AgentError::Neighbours(e.into()))?;
    let vrrp_cfg = config.vrrp.clone();
    // Connection sync (lvs_sync_daemon): its interface and instance must
    // exist before anything is attached.
    let sync_settings = crate::sync::Settings::from_config(&config)
        .transpose()
        .map_err(AgentError::Sync)?;
    let sync_at_start = reload::sync_settings(&config);
    let n_services = config_with_runtime.services.len();
    check_forwarding(&config_with_runtime);
    let file = FileLayer {
        path: opts.config.clone(),
        config,
        applied_at: Instant::now(),
    };
    // Attach before the first write: a start that fails here leaves the
    // tables an earlier agent pinned as they were (its flows resume on them).
    // Meanwhile the data plane forwards with those tables, or passes
    // everything while they are empty.
    // XDP and tc, attached anew or taken over from a previous agent (its
    // program replaced in place): see `attach`.
    let mut links = Vec::new();
    for (name, (idx, _)) in opts.ifaces.iter().zip(&attached) {
        let a = attach::attach(&mut ebpf, &nl, &opts.bpffs, name, *idx, opts.mode).await?;
        if a.how == attach::How::Fresh {
            tracing::info!(iface = %name, mode = ?opts.mode, "XDP and tc (neighbour path) attached");
        }
        links.push(a);
    }
    let mut tables = tables;
    tables.sync = sync_settings.is_some();
    let (core, mut core_task) = reconciler::spawn(dp, tables, file, runtime, l2)?;
    let vrrp = vrrp::engine::spawn(Default::default(), nl.clone())
        .await
        .map_err(|e| AgentError::Vrrp(e.into()))?;
    // With sync, the instances start held until the peer's table is in;
    // the table is asked for once they exist (their timers then start
    // before a fast answer can release them).
    if sync_settings.as_ref().is_some_and(|s| s.instance.is_some()) {
        vrrp.hold(true).await;
    }
    // VRRP last: by the time this node takes the virtual addresses, the
    // data plane forwards what they attract.
    vrrp.reload(vrrp_cfg).await;
    let sync = match sync_settings {
        Some(s) => Some(
            crate::sync::spawn(s, opts.bpffs.clone(), core.clone(), vrrp.clone())
                .await
                .map_err(AgentError::Sync)?,
        ),
        None => None,
    };

    let listener = UnixListener::bind(&opts.socket)
        .map_err(io(format!("binding {}", opts.socket.display())))?;
    std::fs::set_permissions(
        &opts.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(io(format!("setting the mode of {}", opts.socket.display())))?;
    let metrics_listener = match opts.metrics_listen {
        Some(addr) => Some(
            crate::metrics::bind(addr)
                .await
                .map_err(io(format!("binding the metrics address {addr}")))?,
        ),
        None => None,
    };
    guard.armed = false;
    socket_guard.armed = false;
    // Started: from now on the attachments outlive this agent whatever
    // ends it (SIGKILL, a crash, an error); only an explicit stop detaches.
    attach::remove_unserved(&opts.bpffs, &opts.ifaces);
    for a in &mut links {
        a.started();
    }
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel(4);
    // XDP is attached and the first table written: VIPs may be announced.
    // With sync, not before a peer's table is in (or none answered).
    let bgp = crate::bgp::spawn(
        core.published(),
        opts.state_dir.clone(),
        sync.as_ref().map(|(h, _)| h.tables_ready()),
    );

    let changer = change::Changer {
        core: core.clone(),
        nl: netlink()?,
        attached: attached.clone(),
        state_dir: opts.state_dir.clone(),
        saved: Default::default(),
        drains: Default::default(),
    };
    let reloader = reload::Reloader {
        path: opts.config.clone(),
        optional: opts.config_optional,
        core: core.clone(),
        vrrp: vrrp.clone(),
        nl: netlink()?,
        attached: attached.clone(),
        serial: Default::default(),
        changer: changer.clone(),
        sync_at_start,
        last: Default::default(),
    };
    let api = Arc::new(api::server::Api {
        core: core.clone(),
        reloader: reloader.clone(),
        changer,
        vrrp: vrrp.clone(),
        started,
        config: opts.config.clone(),
        ifaces: opts.ifaces.clone(),
        bpffs: opts.bpffs.clone(),
        sync: sync.as_ref().map(|(h, _)| h.clone()),
        stop: stop_tx,
        bgp: bgp.clone(),
    });
    let metrics = metrics_listener.map(|l| tokio::spawn(crate::metrics::serve(l, api.clone())));
    let web = web_bound.map(|b| tokio::spawn(crate::web::serve(b, api.clone())));
    let server = tokio::spawn(api::server::serve(listener, api.clone()));
    let neighbours = watch::spawn_neighbours(netlink()?, attached, macs, core.clone());
    let sweeper = watch::spawn_sweep(opts.bpffs.clone(), core.clone());

    tracing::info!(services = n_services, socket = %opts.socket.display(), bpffs = %opts.bpffs.display(), "running");
    // systemd's Type=notify: XDP is attached and the file applied.
    notify::ready(&format!(
        "running: {n_services} virtual server(s), XDP on {} ({:?})",
        opts.ifaces.join(", "),
        opts.mode
    ));
    // Until when a stop keeps forwarding (`lb stop --keep-forwarding --defer`).
    let mut keep_until: Option<Instant> = None;
    let keep_forwarding = loop {
        let keep_on_signal = || keep_until.is_some_and(|t| Instant::now() < t);
        tokio::select! {
            _ = hup.recv() => {
                // In its own task: the loop keeps answering signals.
                let r = reloader.clone();
                tokio::spawn(async move {
                    let reply = r.reload().await;
                    if reply.outcome != api::ReloadOutcome::Applied {
                        tracing::warn!("SIGHUP: {}", reply.message);
                    }
                });
            }
            _ = term.recv() => break keep_on_signal(),
            _ = int.recv() => break keep_on_signal(),
            _ = quit.recv() => break keep_on_signal(),
            Some(req) = stop_rx.recv() => {
                if !req.defer {
                    tracing::info!(keep_forwarding = req.keep_forwarding, "stop asked through the control socket");
                    break req.keep_forwarding;
                }
                keep_until = req.keep_forwarding.then(|| {
                    Instant::now() + std::time::Duration::from_secs(api::STOP_DEFER_WINDOW_S)
                });
                tracing::info!(keep_forwarding = req.keep_forwarding, "the next SIGTERM (within {} s) stops the agent {}", api::STOP_DEFER_WINDOW_S, if req.keep_forwarding { "leaving XDP attached" } else { "detaching XDP" });
            }
            _ = usr1.recv() => crate::dump::spawn_write(api.clone(), crate::dump::Kind::Data, crate::dump::DATA_FILE.into()),
            _ = usr2.recv() => crate::dump::spawn_write(api.clone(), crate::dump::Kind::Stats, crate::dump::STATS_FILE.into()),
            r = &mut core_task => {
                server.abort();
                tracing::error!("the reconciler stopped: {r:?}");
                return Err(AgentError::ReconcilerStopped);
            }
        }
    };
    notify::stopping(if keep_forwarding {
        "stopping: releasing the virtual addresses, leaving XDP attached"
    } else {
        "stopping: releasing the virtual addresses, detaching XDP"
    });
    server.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(w) = web {
        w.abort();
    }
    neighbours.abort();
    sweeper.abort();
    if let Some((_, task)) = &sync {
        task.abort();
    }
    // BGP first: the routers stop sending new flows here and move the
    // established ones to the other directors (which pick the same reals
    // for `mh`); XDP keeps forwarding what still arrives for
    // `withdraw_grace`. A stop that keeps forwarding keeps the routes too:
    // the next agent takes them over with the attachment.
    // Bounded: each request to the daemon has its own timeout, and a
    // daemon that answers nothing is given up on after the first.
    let withdrawn = tokio::time::timeout(BGP_STOP_LIMIT, bgp.stop(!keep_forwarding)).await;
    let bgp_stop = match withdrawn {
        Ok(out) => out,
        Err(_) => {
            // Unconfirmed: routes may stay; keep forwarding for them.
            tracing::error!(
                "BGP: the withdrawal did not finish within {BGP_STOP_LIMIT:?}: stopping with XDP attached"
            );
            crate::bgp::StopOutcome {
                grace: None,
                keep_attached: bgp.view().configured,
            }
        }
    };
    if let Some(grace) = bgp_stop.grace.filter(|g| !g.is_zero()) {
        tracing::info!(?grace, "forwarding while the routers withdraw the routes");
        tokio::time::sleep(grace).await;
    }
    // A withdrawal the daemon did not confirm stops like --keep-forwarding
    // (VRRP still goes): the routes that may remain lead to a director
    // that forwards.
    let keep_forwarding = keep_forwarding || bgp_stop.keep_attached;
    // VRRP next: priority 0 tells the backups to take over now, and the
    // virtual addresses leave this node. Clients keep sending here until the
    // new master's gratuitous ARP reaches them: XDP stays attached and
    // forwards them meanwhile (DR / TUN reals answer the clients directly).
    // With --keep-forwarding XDP stays anyway: no wait.
    let drain = vrrp.stop().await;
    if !drain.is_zero() && !keep_forwarding {
        tracing::info!(?drain, "forwarding while the backup takes over");
        tokio::time::sleep(drain).await;
    }
    // omega: quorum_down and notify_down on shutdown.
    let running: Vec<_> = core
        .shutdown()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(health::handle_event)
        .collect();
    for r in running {
        // Each program is bounded by its own timeout; waited for here so
        // that stopping the runtime does not kill it.
        let _ = r.await;
    }
    if keep_forwarding {
        tracing::info!(
            "stopping: leaving XDP and tc attached on {} (links pinned in {}): forwarding continues with the tables as they are until the next agent takes over",
            opts.ifaces.join(", "),
            opts.bpffs.display()
        );
    } else {
        tracing::info!(
            "stopping: detaching XDP (maps stay pinned in {})",
            opts.bpffs.display()
        );
    }
    // The socket goes before its lock: a next agent never loses its socket
    // to this one.
    let _ = std::fs::remove_file(&opts.socket);
    let _ = std::fs::remove_file(&socket_lock.path);
    for a in links {
        if keep_forwarding {
            a.keep();
            continue;
        }
        let (name, idx, clsact) = (a.iface.clone(), a.ifindex, a.clsact_created);
        a.detach();
        if clsact {
            if let Err(e) = dataplane::remove_clsact(&nl, idx).await {
                tracing::warn!(iface = %name, "removing the clsact qdisc lb added: {e}");
            }
        }
    }
    drop(ebpf);
    drop(pin_lock);
    drop(socket_lock);
    Ok(())
}

/// Longest the stop waits for the BGP withdrawal (before `withdraw_grace`).
const BGP_STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// NAT and TUN route with the kernel's FIB, which answers only where IP
/// forwarding is enabled on the ingress interface (and NAT passes packets
/// with unresolved next hops to the kernel to forward).
fn check_forwarding(config: &crate::config::Config) {
    if config.services.iter().all(|s| {
        s.reals
            .iter()
            .all(|r| r.fwd_in(s) == crate::config::Fwd::Dr)
    }) {
        return;
    }
    for (path, what) in [
        ("/proc/sys/net/ipv4/ip_forward", "net.ipv4.ip_forward"),
        (
            "/proc/sys/net/ipv6/conf/all/forwarding",
            "net.ipv6.conf.all.forwarding",
        ),
    ] {
        if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "0") {
            tracing::warn!(
                "{what} is 0: NAT and TUN need the director to forward (sysctl -w {what}=1)"
            );
        }
    }
}

/// Forwards the XDP program's aya-log records to tracing, when the program
/// was built with logging (LB_EBPF_LOG=1); the release program has none.
fn spawn_ebpf_logger(ebpf: &mut aya::Ebpf) {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => {
            // SAFETY: the logger owns its ring-buffer fd and keeps it open
            // for as long as the AsyncFd owns the logger.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    logger,
                    tokio::io::Interest::READABLE,
                )
            };
            let Ok(mut fd) = registered else {
                return;
            };
            tokio::spawn(async move {
                loop {
                    let Ok(mut guard) = fd.readable_mut().await else {
                        return;
                    };
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            });
        }
        Err(e) => tracing::debug!("XDP program built without logging ({e})"),
    }
}
