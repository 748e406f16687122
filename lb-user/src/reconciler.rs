//! The reconciler: the one task that writes the configuration maps.
//!
//! It owns the [`Dataplane`] handles, the agent's view of the tables
//! ([`Tables`]), the health monitor and the [`Desired`] state. Every other
//! task reaches it through a [`Handle`] with typed messages ([`Msg`]) and
//! gets its answer on a oneshot channel; nothing it does waits on a socket,
//! a program or a file, so a health verdict reaches the maps within
//! milliseconds whatever the API, the neighbour watch or a reload is doing.
//!
//! Health changes are taken before any other message (`biased` select).
//! The connection sweep (`crate::sweep`) runs in its own task on its own map
//! handles: it writes only the per-real connection-count corrections, which
//! are derived from the connection table, not from intent.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    api,
    config::Config,
    config::RealKey,
    dataplane::Dataplane,
    desired::{Desired, FileLayer},
    health::{monitor::Monitor, quorum::Event},
    runtime,
    state::{Tables, TablesError, L2},
    util,
};

/// A request to the reconciler.
pub enum Msg {
    /// A new configuration file, already parsed and validated, with the
    /// neighbour entries of its reals resolved by the caller. Answers with
    /// the error that made the data plane refuse it (the previous file is
    /// then restored).
    ApplyFile {
        file: Box<FileLayer>,
        /// `None`: the neighbour lookup failed; the known entries are kept.
        l2: Option<BTreeMap<IpAddr, L2>>,
        reply: oneshot::Sender<Result<(), ApplyError>>,
    },
    /// The neighbour table changed.
    Neighbours(BTreeMap<IpAddr, L2>),
    /// The MACs frames for this host are sent to changed (an interface's
    /// address, a VMAC or VLAN device added or removed).
    HostMacs(Vec<[u8; 6]>),
    /// A runtime change (`lb adm`, `POST /v1/runtime`), with the neighbour
    /// entries of the reals it adds. Answers with the runtime layer to save
    /// (`None`: the change did not alter what is saved).
    Change {
        change: runtime::Change,
        l2: BTreeMap<IpAddr, L2>,
        reply: oneshot::Sender<Result<Saved, runtime::ChangeError>>,
    },
    /// The saved part of the runtime layer with its generation (`GET
    /// /v1/runtime`, and the save after a reload that changed it).
    Runtime(oneshot::Sender<Saved>),
    /// Services and reals with their sources (`GET /v1/status`).
    Status(oneshot::Sender<Vec<api::ServiceStatus>>),
    /// The health checkers' states (`GET /v1/checks`, `lb list --checks`).
    Checks(oneshot::Sender<api::views::Checks>),
    /// A real as the table the agent runs has it (file and runtime layer,
    /// before health), as `lb adm -e` would send it: a drain edits its
    /// weight and follows it.
    Real {
        key: RealKey,
        reply: oneshot::Sender<Result<runtime::RealSpec, runtime::ChangeError>>,
    },
    /// The configuration the agent runs: the file with the runtime layer
    /// on top, before health (`GET /v1/export`).
    Effective(oneshot::Sender<Box<Config>>),
    /// Stop: returns the `omega` events (quorum_down, notify_down) to run.
    Shutdown(oneshot::Sender<Vec<Event>>),
}

/// The runtime layer after a change, numbered so that saves happen in order
/// (a save of an older generation is skipped).
#[derive(Clone, Debug)]
pub struct Saved {
    pub generation: u64,
    pub record: runtime::Record,
}

/// The data plane refused a configuration.
#[derive(Debug, thiserror::Error)]
#[error("writing the configuration to the data plane")]
pub struct ApplyError(#[source] pub TablesError);

/// The reconciler has stopped (the agent is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the agent is shutting down")]
pub struct Stopped;

/// Counters of the reconciler's work, published after each change.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Health changes written to the maps.
    pub health_changes: u64,
    /// Time from the checker's notification to the maps written, last one.
    pub last_health_apply: Option<Duration>,
    /// When the file was last applied.
    pub file_applied: Option<Instant>,
}

/// What other tasks follow without asking: the addresses to keep resolved,
/// the real generations the sweep needs, the counters.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// Every real / sorry-server address, and the DR subset.
    pub real_addrs: (Vec<IpAddr>, Vec<IpAddr>),
    /// Real id → generation, for the connection sweep.
    pub real_gens: BTreeMap<u32, u32>,
    /// The neighbour entries in use.
    pub l2: BTreeMap<IpAddr, L2>,
    /// Services and reals by address and by id, for connection sync.
    pub sync_index: std::sync::Arc<crate::sync::Index>,
    pub stats: Stats,
    /// Per VIP, its services and those with a real that takes connections
    /// (what BGP announcement is gated on, `crate::bgp`).
    pub vips: BTreeMap<IpAddr, crate::bgp::gate::VipHealth>,
    /// The `lb_bgp` block of the configuration in force.
    pub bgp: Option<std::sync::Arc<crate::config::bgp::Bgp>>,
}

/// The other tasks' side of the reconciler.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Msg>,
    published: watch::Receiver<Published>,
}

impl Handle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Applies a new configuration file (see [`Msg::ApplyFile`]).
    pub async fn apply_file(
        &self,
        file: FileLayer,
        l2: Option<BTreeMap<IpAddr, L2>>,
    ) -> Result<Result<(), ApplyError>, Stopped> {
        self.ask(|reply| Msg::ApplyFile {
            file: Box::new(file),
            l2,
            reply,
        })
        .await
    }

    /// Hands over a changed neighbour table.
    pub async fn neighbours(&self, l2: BTreeMap<IpAddr, L2>) -> Result<(), Stopped> {
        self.tx.send(Msg::Neighbours(l2)).await.map_err(|_| Stopped)
    }

    /// Hands over a changed set of this host's MACs ([`Msg::HostMacs`]).
    pub async fn host_macs(&self, macs: Vec<[u8; 6]>) -> Result<(), Stopped> {
        self.tx.send(Msg::HostMacs(macs)).await.map_err(|_| Stopped)
    }

    /// Applies a runtime change (see [`Msg::Change`]).
    pub async fn change(
        &self,
        change: runtime::Change,
        l2: BTreeMap<IpAddr, L2>,
    ) -> Result<Result<Saved, runtime::ChangeError>, Stopped> {
        self.ask(|reply| Msg::Change { change, l2, reply }).await
    }

    /// The saved part of the runtime layer, with its generation.
    pub async fn runtime(&self) -> Result<Saved, Stopped> {
        self.ask(Msg::Runtime).await
    }

    /// Services and reals with their sources.
    pub async fn services(&self) -> Result<Vec<api::ServiceStatus>, Stopped> {
        self.ask(Msg::Status).await
    }

    /// The health checkers' states (`GET /v1/checks`).
    pub async fn checks(&self) -> Result<api::views::Checks, Stopped> {
        self.ask(Msg::Checks).await
    }

    /// A real's forwarding, weight and thresholds ([`Msg::Real`]); ipvs's
    /// errors for `lb adm -e` when the service or the real is not there.
    pub async fn real(
        &self,
        key: RealKey,
    ) -> Result<Result<runtime::RealSpec, runtime::ChangeError>, Stopped> {
        self.ask(|reply| Msg::Real { key, reply }).await
    }

    /// The file with the runtime layer on top ([`Msg::Effective`]).
    pub async fn effective(&self) -> Result<Box<Config>, Stopped> {
        self.ask(Msg::Effective).await
    }

    /// Stops the reconciler; returns the omega events to run.
    pub async fn shutdown(&self) -> Result<Vec<Event>, Stopped> {
        self.ask(Msg::Shutdown).await
    }

    /// What the reconciler publishes (addresses, generations, counters).
    pub fn published(&self) -> watch::Receiver<Published> {
        self.published.clone()
    }
}

struct Reconciler {
    dp: Dataplane,
    tables: Tables,
    desired: Desired,
    monitor: Monitor,
    /// The last merge written to the maps.
    effective: Config,
    stats: Stats,
    published: watch::Sender<Published>,
    /// Bumped by each runtime change.
    generation: u64,
    /// Per VIP health of the last write ([`Published::vips`]).
    vips: BTreeMap<IpAddr, crate::bgp::gate::VipHealth>,
}

/// Starts the reconciler on the maps of `dp` (ids recovered from the pins in
/// `tables`), with `file` as the first configuration, `runtime` the runtime
/// layer restored from the state directory, and `l2` the reals'
/// neighbours. The first write happens before this returns, so a data plane
/// attached afterwards forwards from its first packet.
pub fn spawn(
    dp: Dataplane,
    tables: Tables,
    file: FileLayer,
    runtime: runtime::Runtime,
    l2: BTreeMap<IpAddr, L2>,
) -> Result<(Handle, tokio::task::JoinHandle<()>), ApplyError> {
    let (mut monitor, health_rx) = Monitor::new();
    let (published, published_rx) = watch::channel(Published::default());
    let mut desired = Desired::new(file, runtime);
    // A restarted agent: checkers start from the verdicts in the pinned
    // tables (empty on a first start).
    monitor.recover(tables.recovered_health());
    monitor.apply(desired.base());
    // The first write already carries the checkers' initial verdicts (the
    // recovered ones, or keepalived's: down with `alpha`).
    desired.health = monitor.snapshot();
    desired.l2 = l2;
    let mut r = Reconciler {
        dp,
        tables,
        desired,
        monitor,
        effective: Config::default(),
        stats: Stats::default(),
        published,
        generation: 0,
        vips: BTreeMap::new(),
    };
    r.write().map_err(ApplyError)?;
    for line in crate::changes::describe(&Config::default(), r.desired.base()) {
        tracing::debug!("start: {line}");
    }
    r.stats.file_applied = Some(Instant::now());
    r.publish();
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(r.run(rx, health_rx));
    Ok((
        Handle {
            tx,
            published: published_rx,
        },
        task,
    ))
}

impl Reconciler {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut health_rx: mpsc::UnboundedReceiver<RealKey>,
    ) {
        loop {
            tokio::select! {
                biased;
                Some(_) = health_rx.recv() => {
                    let t = Instant::now();
                    // Several checkers may have changed at once: one write.
                    while health_rx.try_recv().is_ok() {}
                    let health = self.monitor.snapshot();
                    if health == self.desired.health {
                        continue;
                    }
                    self.desired.health = health;
                    match self.write() {
                        Ok(()) => {
                            self.stats.health_changes += 1;
                            self.stats.last_health_apply = Some(t.elapsed());
                            self.publish();
                        }
                        Err(e) => tracing::error!("applying a health change failed: {}", util::chain(&e)),
                    }
                }
                msg = rx.recv() => match msg {
                    None => return,
                    Some(Msg::Shutdown(reply)) => {
                        let _ = reply.send(self.desired.omega());
                        return;
                    }
                    Some(m) => self.handle(m),
                },
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::ApplyFile { file, l2, reply } => {
                let _ = reply.send(self.apply_file(*file, l2));
            }
            Msg::Neighbours(l2) => {
                if l2 != self.desired.l2 {
                    self.desired.l2 = l2;
                    if let Err(e) = self.write() {
                        tracing::error!("applying a neighbour change failed: {}", util::chain(&e));
                    }
                    self.publish();
                }
            }
            Msg::HostMacs(macs) => {
                if let Err(e) = self.dp.set_host_macs(&macs) {
                    tracing::error!("{}", util::chain(&e));
                }
            }
            Msg::Status(reply) => {
                let _ = reply.send(self.desired.status(&self.effective));
            }
            Msg::Checks(reply) => {
                let _ = reply.send(self.monitor.info());
            }
            Msg::Change { change, l2, reply } => {
                let _ = reply.send(self.change(change, l2));
            }
            Msg::Real { key, reply } => {
                let _ = reply.send(runtime::real_spec(self.desired.base(), &key));
            }
            Msg::Runtime(reply) => {
                let _ = reply.send(Saved {
                    generation: self.generation,
                    record: self.desired.runtime().record(),
                });
            }
            Msg::Effective(reply) => {
                let _ = reply.send(Box::new(self.desired.base().clone()));
            }
            Msg::Shutdown(_) => unreachable!("handled by run"),
        }
    }

    /// Replaces the file layer; on a data-plane error the previous one is
    /// restored and written again.
    fn apply_file(
        &mut self,
        file: FileLayer,
        l2: Option<BTreeMap<IpAddr, L2>>,
    ) -> Result<(), ApplyError> {
        let (old_file, old_runtime) = (self.desired.file.clone(), self.desired.runtime().clone());
        let old_base = self.desired.base().clone();
        let old_l2 = self.desired.l2.clone();
        let path = file.path.display().to_string();
        let replaced = self.desired.set_file(file);
        if let Some(mut l2) = l2 {
            // Entries of reals the watch knows and the lookup missed stay.
            for (ip, e) in &old_l2 {
                l2.entry(*ip).or_insert(*e);
            }
            self.desired.l2 = l2;
        }
        // Unchanged checkers keep running with their state.
        self.monitor.apply(self.desired.base());
        self.desired.health = self.monitor.snapshot();
        let result = self.write();
        if let Err(e) = result {
            tracing::error!(
                "applying the new configuration failed: {}; restoring the previous one",
                util::chain(&e)
            );
            self.desired.l2 = old_l2;
            self.restore(old_file, old_runtime);
            return Err(ApplyError(e));
        }
        if !replaced.is_empty() {
            // What is saved changed: the next save must not be skipped.
            self.generation += 1;
        }
        for k in replaced {
            tracing::warn!(
                "reload: {path} now defines service {k}, made at runtime: the file's replaces it"
            );
        }
        for line in crate::changes::describe(&old_base, self.desired.base()) {
            tracing::info!("reload: {line}");
        }
        self.stats.file_applied = Some(Instant::now());
        self.publish();
        Ok(())
    }

    /// Puts back the file and runtime layers a refused write replaced, with
    /// their checkers, and writes them again.
    fn restore(&mut self, file: FileLayer, runtime: runtime::Runtime) {
        self.desired.restore(file, runtime);
        self.monitor.apply(self.desired.base());
        self.desired.health = self.monitor.snapshot();
        if let Err(e) = self.write() {
            tracing::error!("restoring the previous table failed: {}", util::chain(&e));
        }
        self.publish();
    }

    /// Applies a runtime change; the data plane refusing it (its limits)
    /// leaves everything as it was.
    fn change(
        &mut self,
        change: runtime::Change,
        l2: BTreeMap<IpAddr, L2>,
    ) -> Result<Saved, runtime::ChangeError> {
        let (file, old_runtime) = (self.desired.file.clone(), self.desired.runtime().clone());
        let old_base = self.desired.base().clone();
        self.desired.change(&change)?;
        let refused = |e: &dyn std::fmt::Display| runtime::ChangeError::Refused(e.to_string());
        match &change {
            runtime::Change::Zero { service } => {
                self.tables
                    .zero_stats(&mut self.dp, service.as_ref())
                    .map_err(|e| refused(&util::chain(&e)))?;
                tracing::info!(
                    "runtime: counters zeroed ({})",
                    service.map_or("every service".into(), |s| s.to_string())
                );
            }
            runtime::Change::SetTimeouts {
                tcp_s,
                tcp_fin_s,
                udp_s,
            } => {
                let mut t = self.dp.timeouts_in_effect();
                let old = t;
                // ipvs: 0 leaves a timeout as it is.
                for (v, new) in [
                    (&mut t.tcp_s, tcp_s),
                    (&mut t.tcp_fin_s, tcp_fin_s),
                    (&mut t.udp_s, udp_s),
                ] {
                    if *new != 0 {
                        *v = *new;
                    }
                }
                self.dp
                    .set_timeouts(t)
                    .map_err(|e| refused(&util::chain(&e)))?;
                tracing::info!(
                    "runtime: timeouts (tcp tcpfin udp) {} {} {} → {} {} {}",
                    old.tcp_s,
                    old.tcp_fin_s,
                    old.udp_s,
                    t.tcp_s,
                    t.tcp_fin_s,
                    t.udp_s
                );
            }
            _ => {
                for (ip, e) in l2 {
                    self.desired.l2.insert(ip, e);
                }
                self.monitor.apply(self.desired.base());
                self.desired.health = self.monitor.snapshot();
                if let Err(e) = self.write() {
                    let why = util::chain(&e);
                    tracing::warn!("runtime change refused by the data plane: {why}");
                    self.restore(file, old_runtime);
                    return Err(runtime::ChangeError::Refused(why));
                }
                for line in crate::changes::describe(&old_base, self.desired.base()) {
                    tracing::info!("runtime: {line}");
                }
                self.publish();
            }
        }
        self.generation += 1;
        Ok(Saved {
            generation: self.generation,
            record: self.desired.runtime().record(),
        })
    }

    /// Merges the sources and writes the difference to the maps; runs the
    /// quorum and real programs the merge produced.
    fn write(&mut self) -> Result<(), TablesError> {
        let (effective, events) = self.desired.effective();
        for e in events {
            // Runs in the background, bounded by its own timeout.
            let _ = crate::health::handle_event(e);
        }
        let l2 = &self.desired.l2;
        let desired = &self.desired;
        self.tables.sync(
            &mut self.dp,
            &effective,
            &|ip| l2.get(&ip).copied(),
            &|svc, ip, port| desired.health_of(&(*svc, ip, port)),
        )?;
        self.vips = crate::bgp::gate::vip_health(&effective, &|k| desired.health_of(k));
        self.effective = effective;
        Ok(())
    }

    fn publish(&self) {
        self.published.send_replace(Published {
            real_addrs: Desired::real_addrs(self.desired.base()),
            real_gens: self.tables.real_gens(),
            l2: self.desired.l2.clone(),
            sync_index: std::sync::Arc::new(self.tables.sync_index()),
            stats: self.stats,
            vips: self.vips.clone(),
            bgp: self.desired.base().bgp.clone().map(std::sync::Arc::new),
        });
    }
}
