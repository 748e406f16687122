//! `lb run`: load and attach the XDP program, apply the configuration, keep
//! the reals' MAC addresses current, reload on SIGHUP, detach on SIGTERM/SIGINT.

use std::{
    collections::BTreeMap, net::IpAddr, os::unix::fs::PermissionsExt, path::PathBuf, time::Duration,
};

use anyhow::{anyhow, Context as _};
use aya::programs::XdpMode;
use lb_common::Timeouts;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixListener,
    signal::unix::{signal, SignalKind},
};

use crate::{
    config::{self, Config},
    dataplane::{self, Dataplane, LoadOptions},
    health::{self, monitor::Monitor, quorum::Quorum, Health},
    neigh,
    state::{Tables, L2},
    sweep, vrrp,
};

/// How often expired connections are released from the per-real counts.
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Settings of one agent.
#[derive(Clone, Debug)]
pub struct Options {
    pub ifaces: Vec<String>,
    pub config: PathBuf,
    pub bpffs: PathBuf,
    pub socket: PathBuf,
    pub mode: XdpMode,
    pub conntrack_size: u32,
    pub timeouts: Timeouts,
}

fn iface_info(name: &str) -> anyhow::Result<(u32, [u8; 6])> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(anyhow!("no interface named {name}"));
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
        .with_context(|| format!("reading the MAC address of {name}"))?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(anyhow!("{name} has no Ethernet address ({})", text.trim()));
    }
    for (i, p) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(p, 16)?;
    }
    Ok((idx, mac))
}

/// Loads the configuration file; errors are printed and returned as one error.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    let loaded = config::load(path);
    for d in &loaded.diags {
        match d.severity {
            config::Severity::Warning => tracing::warn!("{d}"),
            config::Severity::Error => tracing::error!("{d}"),
        }
    }
    if loaded.has_errors() {
        let n = loaded.errors().count();
        return Err(anyhow!(
            "{}: {n} error(s) in the configuration",
            path.display()
        ));
    }
    Ok(loaded.config)
}

struct Agent {
    opts: Options,
    dp: Dataplane,
    tables: Tables,
    config: Config,
    /// Attached interfaces: (ifindex, MAC).
    ifindexes: Vec<(u32, [u8; 6])>,
    l2: BTreeMap<IpAddr, L2>,
    handle: rtnetlink::Handle,
    unresolved: Vec<IpAddr>,
    monitor: Monitor,
    quorum: Quorum,
    vrrp: vrrp::engine::Handle,
}

impl Agent {
    /// Reals whose neighbour entry is kept resolved: DR needs their MAC; for
    /// NAT and TUN the FIB needs the kernel's neighbour entry (the kernel
    /// cannot resolve it from a tunnelled packet it is handed, whose source
    /// is one of its own addresses).
    fn real_addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .config
            .services
            .iter()
            .flat_map(|s| {
                s.reals
                    .iter()
                    .map(|r| r.addr)
                    .chain(s.sorry_server.map(|(a, _)| a))
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Re-reads neighbours and applies the configuration if anything changed.
    async fn refresh(&mut self, force: bool) -> anyhow::Result<()> {
        let (found, missing) =
            neigh::resolve(&self.handle, &self.ifindexes, &self.real_addrs()).await?;
        // Only DR reals depend on the neighbour table (NAT / TUN reals may be
        // behind a router, whose entry the FIB finds).
        let dr: std::collections::BTreeSet<IpAddr> = self
            .config
            .services
            .iter()
            .filter(|s| s.fwd == config::Fwd::Dr)
            .flat_map(|s| s.reals.iter().map(|r| r.addr))
            .collect();
        let missing: Vec<IpAddr> = missing.into_iter().filter(|ip| dr.contains(ip)).collect();
        if missing != self.unresolved {
            for ip in &missing {
                tracing::warn!(%ip, "real server MAC unknown (not on a subnet of an attached interface, or no ARP/ND reply yet); it gets no traffic until resolved");
            }
            self.unresolved = missing;
        }
        if force || found != self.l2 {
            for (ip, l2) in &found {
                if self.l2.get(ip) != Some(l2) {
                    tracing::info!(%ip, ifindex = l2.ifindex, mac = %fmt_mac(&l2.mac), "real server reachable");
                }
            }
            self.l2 = found;
            self.apply()?;
        }
        Ok(())
    }

    /// Writes the configuration, neighbours and checker verdicts to the maps.
    /// Quorum and sorry server decide the configuration the data plane gets.
    fn apply(&mut self) -> anyhow::Result<()> {
        let l2 = self.l2.clone();
        let health = self.monitor.snapshot();
        let of = |k: &(config::ServiceAddr, IpAddr, u16)| {
            health
                .get(k)
                .copied()
                .unwrap_or(Health::Up { weight: None })
        };
        let (effective, events) = self.quorum.evaluate(&self.config, &of);
        for e in events {
            // Runs in the background; the handle is not needed.
            let _ = health::handle_event(e);
        }
        self.tables.sync(
            &mut self.dp,
            &effective,
            &|ip| l2.get(&ip).copied(),
            &|svc, ip, port| {
                health
                    .get(&(*svc, ip, port))
                    .copied()
                    .unwrap_or(Health::Up { weight: None })
            },
        )
    }

    /// NAT and TUN route with the kernel's FIB, which answers only where IP
    /// forwarding is enabled on the ingress interface (and NAT passes
    /// packets with unresolved next hops to the kernel to forward).
    fn check_forwarding(&self) {
        let routed = self
            .config
            .services
            .iter()
            .any(|s| s.fwd != config::Fwd::Dr);
        if !routed {
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

    async fn reload(&mut self) -> String {
        match load_config(&self.opts.config) {
            Ok(cfg) => {
                let old = std::mem::replace(&mut self.config, cfg);
                // Unchanged checkers keep running with their state.
                self.monitor.apply(&self.config);
                match self.refresh(true).await {
                    Ok(()) => {
                        // Unchanged VRRP instances keep their state too.
                        self.vrrp.reload(self.config.vrrp.clone()).await;
                        tracing::info!(
                            services = self.config.services.len(),
                            "configuration reloaded"
                        );
                        self.check_forwarding();
                        "ok: configuration reloaded".into()
                    }
                    Err(e) => {
                        tracing::error!("applying the new configuration failed: {e:#}; restoring the previous one");
                        self.config = old;
                        self.monitor.apply(&self.config);
                        let _ = self.refresh(true).await;
                        format!("error: {e:#}")
                    }
                }
            }
            Err(e) => {
                tracing::error!("reload refused, running configuration kept: {e:#}");
                format!("error: {e:#}")
            }
        }
    }

    fn status(&self) -> String {
        let mut s = format!(
            "config {}\nifaces {}\n",
            self.opts.config.display(),
            self.opts.ifaces.join(" ")
        );
        for vs in &self.config.services {
            s.push_str(&format!("service {} {}\n", vs.key, vs.sched.name()));
            for r in &vs.reals {
                let st = match (vs.fwd, self.l2.get(&r.addr)) {
                    (config::Fwd::Nat, _) => "nat (next hop from the FIB)".to_string(),
                    (config::Fwd::Tun, _) => match crate::state::source_toward(r.addr) {
                        Some(src) => format!("tunnel from {src}"),
                        None => "tunnel: no route".into(),
                    },
                    (_, Some(l)) => format!("mac {} ifindex {}", fmt_mac(&l.mac), l.ifindex),
                    (_, None) => "unresolved".into(),
                };
                s.push_str(&format!(
                    "  real {} weight {} {st}\n",
                    config::fmt_sock(r.addr, r.port),
                    r.weight
                ));
            }
        }
        s
    }
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs the agent until SIGTERM / SIGINT.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let config = load_config(&opts.config)?;
    dataplane::prepare_pin_dir(&opts.bpffs)?;
    let mut ebpf = dataplane::load(&LoadOptions {
        pin_dir: Some(opts.bpffs.clone()),
        conntrack_size: opts.conntrack_size,
        ..Default::default()
    })?;
    spawn_ebpf_logger(&mut ebpf);
    let mut dp = Dataplane::from_ebpf(&mut ebpf)?;
    dp.set_timeouts(opts.timeouts)?;
    let mut ifindexes = Vec::new();
    for name in &opts.ifaces {
        let (idx, mac) = iface_info(name)?;
        dp.add_iface(idx)?;
        ifindexes.push((idx, mac));
    }
    let tables = Tables::recover(&dp).context("reading the pinned tables")?;
    let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(conn);
    let handle_vrrp = handle.clone();
    let (mut monitor, mut health_rx) = Monitor::new();
    monitor.apply(&config);
    let mut agent = Agent {
        opts: opts.clone(),
        dp,
        tables,
        config,
        ifindexes,
        l2: BTreeMap::new(),
        handle,
        unresolved: Vec::new(),
        monitor,
        quorum: Quorum::default(),
        vrrp: vrrp::engine::spawn(Default::default(), handle_vrrp.clone()).await?,
    };
    agent.refresh(true).await?;
    for name in &opts.ifaces {
        dataplane::attach(&mut ebpf, name, opts.mode)?;
        tracing::info!(iface = %name, mode = ?opts.mode, "XDP attached");
    }
    // VRRP last: by the time this node takes the virtual addresses, the
    // data plane forwards what they attract.
    agent.vrrp.reload(agent.config.vrrp.clone()).await;

    let _ = std::fs::remove_file(&opts.socket);
    if let Some(dir) = opts.socket.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let listener = UnixListener::bind(&opts.socket)
        .with_context(|| format!("binding {}", opts.socket.display()))?;
    std::fs::set_permissions(&opts.socket, std::fs::Permissions::from_mode(0o600))?;

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut next_sweep = std::time::Instant::now();
    agent.check_forwarding();
    tracing::info!(services = agent.config.services.len(), socket = %opts.socket.display(), bpffs = %opts.bpffs.display(), "running");
    loop {
        tokio::select! {
            _ = hup.recv() => { agent.reload().await; }
            _ = term.recv() => break,
            _ = int.recv() => break,
            Some(_real) = health_rx.recv() => {
                // A checker changed state: the maps follow at once.
                while health_rx.try_recv().is_ok() {}
                if let Err(e) = agent.apply() {
                    tracing::error!("applying a health change failed: {e:#}");
                }
            }
            _ = tick.tick() => {
                if let Err(e) = agent.refresh(false).await {
                    tracing::warn!("neighbour refresh failed: {e:#}");
                }
                if std::time::Instant::now() >= next_sweep {
                    let gens = agent.tables.real_gens();
                    match sweep::sweep(&mut agent.dp, &gens) {
                        Ok(r) => {
                            tracing::debug!(live = r.live, expired = r.expired, took = ?r.took, "connection sweep");
                            // A sweep costs at most a tenth of the agent's time.
                            next_sweep = std::time::Instant::now() + SWEEP_INTERVAL.max(r.took * 10);
                        }
                        Err(e) => tracing::warn!("connection sweep failed: {e:#}"),
                    }
                }
            }
            Ok((stream, _)) = listener.accept() => {
                let (r, mut w) = stream.into_split();
                let mut line = String::new();
                let mut reader = BufReader::new(r);
                if reader.read_line(&mut line).await.is_ok() {
                    let reply = match line.trim() {
                        "reload" => agent.reload().await,
                        "status" => agent.status(),
                        "checks" => agent.monitor.render(),
                        "vrrp" => agent.vrrp.render().await,
                        other => format!("error: unknown command '{other}' (reload, status, checks, vrrp)"),
                    };
                    let _ = w.write_all(reply.as_bytes()).await;
                    let _ = w.write_all(b"\n").await;
                }
            }
        }
    }
    // VRRP first: priority 0 tells the backups to take over now, and the
    // virtual addresses leave this node. Clients keep sending here until the
    // new master's gratuitous ARP reaches them: XDP stays attached and
    // forwards them meanwhile (DR / TUN reals answer the clients directly).
    let drain = agent.vrrp.stop().await;
    if !drain.is_zero() {
        tracing::info!(?drain, "forwarding while the backup takes over");
        tokio::time::sleep(drain).await;
    }
    // omega: quorum_down and notify_down on shutdown.
    let running: Vec<_> = agent
        .quorum
        .omega(&agent.config)
        .into_iter()
        .filter_map(health::handle_event)
        .collect();
    for r in running {
        // Each program is bounded by its own timeout; waited for here so
        // that stopping the runtime does not kill it.
        let _ = r.await;
    }
    tracing::info!(
        "stopping: detaching XDP (maps stay pinned in {})",
        opts.bpffs.display()
    );
    let _ = std::fs::remove_file(&opts.socket);
    drop(ebpf);
    Ok(())
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

/// Sends one command to a running agent and returns its reply.
pub async fn control(socket: &std::path::Path, cmd: &str) -> anyhow::Result<String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "connecting to {} (is `lb run` running with this --socket?)",
                socket.display()
            )
        })?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("{cmd}\n").as_bytes()).await?;
    w.shutdown().await?;
    let mut out = String::new();
    let mut reader = BufReader::new(r);
    while reader.read_line(&mut out).await? > 0 {}
    Ok(out)
}
