//! Announcing the VIPs over BGP through GoBGP (`lb_bgp`, README
//! "Scale-out (ECMP + BGP)").
//!
//! One task owns everything BGP: it follows what the reconciler publishes
//! (per VIP, whether one of its services has a real that takes
//! connections; the `lb_bgp` block of the configuration in force), decides
//! with [`gate::decide`] which VIPs are announced, and brings the daemon
//! there through [`gobgp::Client`]: it starts the daemon's BGP instance and
//! adds the configured peers when the daemon lacks them (a daemon started
//! without a configuration, or restarted), then adds and withdraws the host
//! routes. It reads the daemon's state every `poll_interval`, so a
//! restarted daemon gets its paths back and the session states stay
//! current. Every request is bounded by `timeout`; failures are logged (on
//! change, not on every try) and retried with a doubling back-off (1 s to
//! 30 s). Nothing else waits on the daemon: the reconciler only publishes,
//! and the API reads the task's last [`View`].
//!
//! Deliberate stops withdraw first ([`Handle::stop`]); the agent then keeps
//! XDP attached for `withdraw_grace` while the routers move the flows. A
//! drain (`lb bgp drain`) withdraws every VIP and is kept in the state
//! directory (`bgp-drained`), so a director restarted during maintenance
//! stays out until `lb bgp undrain`.

pub mod gate;
pub mod gobgp;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot, watch};

use crate::{config::bgp::Bgp, reconciler::Published};
use gate::{Facts, Reason, Verdict, VipHealth};

/// The file in the state directory whose presence means drained.
pub const DRAIN_FILE: &str = "bgp-drained";
/// First and longest wait before retrying a failed daemon.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One VIP as `lb list --bgp` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VipView {
    pub vip: IpAddr,
    /// Services on the VIP, and those with a real that takes connections.
    pub services: u32,
    pub serving: u32,
    /// What the rule wants.
    pub want: bool,
    /// `None` when wanted; else why not.
    pub reason: Option<Reason>,
    /// A local path of the VIP is in the daemon's RIB (as last read).
    pub announced: bool,
    /// The next hop of the daemon's path, when announced.
    pub next_hop: Option<IpAddr>,
}

/// One of the daemon's peers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerView {
    pub address: IpAddr,
    pub asn: u32,
    pub state: gobgp::Session,
    /// The session is established.
    pub up: bool,
    /// A `neighbor` of `lb_bgp` (false: from the daemon's own configuration).
    pub configured: bool,
}

/// The announcement state (`GET /v1/bgp`, `lb list --bgp`, the metrics).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct View {
    /// `lb_bgp` is in the configuration in force.
    pub configured: bool,
    pub daemon: Option<String>,
    /// The daemon's gRPC address.
    pub api: Option<String>,
    pub local_as: Option<u32>,
    /// The last request to the daemon succeeded.
    pub daemon_up: bool,
    /// The last failure, while failing.
    pub error: Option<String>,
    /// Seconds since the daemon last answered every request of a round.
    pub last_ok_ago_s: Option<f64>,
    pub drained: bool,
    pub stopping: bool,
    pub vips: Vec<VipView>,
    pub peers: Vec<PeerView>,
    /// Problems of the settings seen at run time (a next hop that is not an
    /// address of this director), one sentence each.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Paths added, paths withdrawn, failed rounds, since the start.
    pub announcements: u64,
    pub withdrawals: u64,
    pub errors: u64,
}

/// Saving or reading the drain mark failed.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error("writing {path}")]
    Save {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the BGP task has stopped")]
    Stopped,
    #[error("no lb_bgp block in the configuration in force: nothing to drain or undrain")]
    NotConfigured,
}

/// How a deliberate stop went (`Handle::stop`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// VIPs were withdrawn: the agent forwards for this long (the
    /// settings' `withdraw_grace`) while the routers move the flows.
    pub grace: Option<Duration>,
    /// The daemon did not confirm the withdrawal (not answering, or
    /// refusing): routes may stay or come back, so the agent leaves XDP
    /// attached (as `--keep-forwarding`) for them to reach a director that
    /// forwards.
    pub keep_attached: bool,
}

/// How long a stop retries a withdrawal the daemon did not take.
pub const STOP_RETRY: Duration = Duration::from_secs(10);

enum Cmd {
    Drain {
        drained: bool,
        reply: oneshot::Sender<Result<View, BgpError>>,
    },
    Stop {
        withdraw: bool,
        reply: oneshot::Sender<StopOutcome>,
    },
}

/// The other tasks' side of the BGP task.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Cmd>,
    view: watch::Receiver<View>,
    /// `withdraw_grace` of the settings in force.
    settings_grace: Arc<std::sync::Mutex<Duration>>,
}

impl Handle {
    /// The latest state (never waits on the daemon).
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// Drains (`true`) or undrains the director; the state after the
    /// daemon was told (or after one failed try, retried in the
    /// background).
    pub async fn drain(&self, drained: bool) -> Result<View, BgpError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Drain { drained, reply })
            .await
            .map_err(|_| BgpError::Stopped)?;
        rx.await.map_err(|_| BgpError::Stopped)?
    }

    /// Stops the task. With `withdraw`, the VIPs are withdrawn first,
    /// retried for [`STOP_RETRY`] when the daemon does not take it.
    pub async fn stop(&self, withdraw: bool) -> StopOutcome {
        let grace = self.settings_grace.lock().map(|g| *g).unwrap_or_default();
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Stop { withdraw, reply }).await.is_err() {
            return StopOutcome::default();
        }
        let mut out = rx.await.unwrap_or_default();
        out.grace = out.grace.map(|_| grace);
        out
    }
}

/// Reads the drain mark of `state_dir`.
pub fn drained_at_start(state_dir: &Path) -> bool {
    state_dir.join(DRAIN_FILE).exists()
}

fn save_drain(state_dir: &Path, drained: bool) -> Result<(), BgpError> {
    let path = state_dir.join(DRAIN_FILE);
    let r = if drained {
        std::fs::write(
            &path,
            b"drained by `lb bgp drain`; `lb bgp undrain` removes this file\n",
        )
    } else {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    };
    r.map_err(|source| BgpError::Save {
        path: path.display().to_string(),
        source,
    })
}

struct Task {
    state_dir: PathBuf,
    published: watch::Receiver<Published>,
    view: watch::Sender<View>,
    settings: Option<Arc<Bgp>>,
    vips: BTreeMap<IpAddr, VipHealth>,
    /// VIPs this agent may have announced: the table's and those announced
    /// since (withdrawn, then forgotten, when the table loses them).
    owned: BTreeSet<IpAddr>,
    /// Local paths of the daemon as last read (VIP → next hops).
    paths: BTreeMap<IpAddr, Vec<IpAddr>>,
    peers: Vec<gobgp::Peer>,
    attached_at: Instant,
    drained: bool,
    stopping: bool,
    /// Not before this instant after a failure.
    retry_at: Option<Instant>,
    backoff: Duration,
    next_poll: Instant,
    error: Option<String>,
    last_ok: Option<Instant>,
    counts: (u64, u64, u64),
    /// The daemon's AS differs from local_as (logged once).
    as_mismatch_logged: Option<u32>,
    grace: Arc<std::sync::Mutex<Duration>>,
    /// See [`spawn`]; `None`: no connection sync.
    tables_ready: Option<watch::Receiver<bool>>,
    /// Settings a reload replaced (another `api`) or removed: their daemon
    /// still has the paths and peers this agent added, withdrawn and
    /// deleted there before they are forgotten.
    retiring: Vec<Arc<Bgp>>,
    /// Peers this agent added to the daemon (deleted when a reload drops
    /// them from `lb_bgp`; peers of the daemon's own configuration are
    /// never touched).
    added_peers: BTreeSet<IpAddr>,
    /// The daemon runs another AS than `local_as` (shown as the error).
    mismatch: Option<String>,
    /// Configured next hops that are not addresses of this director (as
    /// last checked; logged when the set changes).
    foreign: Vec<IpAddr>,
}

/// Starts the BGP task on what the reconciler publishes; the data plane is
/// attached and its first table written (the agent calls this after both).
/// `tables_ready`: with connection sync, `false` until a peer's table is in
/// (`sync::Handle::tables_ready`); nothing is announced before.
pub fn spawn(
    published: watch::Receiver<Published>,
    state_dir: PathBuf,
    tables_ready: Option<watch::Receiver<bool>>,
) -> Handle {
    let (tx, rx) = mpsc::channel(8);
    let (view_tx, view_rx) = watch::channel(View::default());
    let drained = drained_at_start(&state_dir);
    if drained {
        tracing::warn!(
            "BGP: the director is drained ({} in {}): no VIP is announced until `lb bgp undrain`",
            DRAIN_FILE,
            state_dir.display()
        );
    }
    let grace = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let now = Instant::now();
    let task = Task {
        state_dir,
        published,
        view: view_tx,
        settings: None,
        vips: BTreeMap::new(),
        owned: BTreeSet::new(),
        paths: BTreeMap::new(),
        peers: Vec::new(),
        attached_at: now,
        drained,
        stopping: false,
        retry_at: None,
        backoff: BACKOFF_MIN,
        next_poll: now,
        error: None,
        last_ok: None,
        counts: (0, 0, 0),
        as_mismatch_logged: None,
        grace: grace.clone(),
        tables_ready,
        retiring: Vec::new(),
        added_peers: BTreeSet::new(),
        mismatch: None,
        foreign: Vec::new(),
    };
    tokio::spawn(task.run(rx));
    Handle {
        tx,
        view: view_rx,
        settings_grace: grace,
    }
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        self.take_published();
        loop {
            self.round(false).await;
            let wake = self.wake_at();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => return,
                    Some(Cmd::Drain { reply, .. }) if self.settings.is_none() => {
                        let _ = reply.send(Err(BgpError::NotConfigured));
                    }
                    Some(Cmd::Drain { drained, reply }) => {
                        let r = save_drain(&self.state_dir, drained);
                        if r.is_ok() && drained != self.drained {
                            self.drained = drained;
                            tracing::info!("BGP: director {}", if drained { "drained: withdrawing every VIP" } else { "undrained: announcing the VIPs that serve" });
                            self.round(true).await;
                        }
                        let _ = reply.send(r.map(|()| self.view()));
                    }
                    Some(Cmd::Stop { withdraw, reply }) => {
                        let had = self.announced_any();
                        let mut out = StopOutcome::default();
                        if withdraw {
                            self.stopping = true;
                            let until = Instant::now() + STOP_RETRY;
                            loop {
                                self.round(true).await;
                                // Unconfirmed: a failed round after paths
                                // were seen, or paths still there.
                                out.keep_attached = self.announced_any() || (had && self.error.is_some());
                                if !out.keep_attached || Instant::now() >= until {
                                    break;
                                }
                                tokio::time::sleep(BACKOFF_MIN).await;
                            }
                            if out.keep_attached {
                                tracing::error!("BGP: the daemon did not confirm the withdrawal ({}) within {STOP_RETRY:?}: XDP stays attached so that the routes it may still announce (or announce again when it answers) reach a director that forwards; withdraw them by hand (`gobgp global rib del`) or start lb again", self.error.as_deref().unwrap_or("the paths are still there"));
                            } else if had {
                                tracing::info!("BGP: every VIP withdrawn before the stop");
                                out.grace = Some(Duration::ZERO);
                            }
                        } else if had {
                            tracing::info!("BGP: stopping with the VIPs announced (XDP keeps forwarding; the next agent takes the announcements over)");
                        }
                        let _ = reply.send(out);
                        return;
                    }
                },
                r = self.published.changed() => {
                    if r.is_err() {
                        return;
                    }
                    self.take_published();
                }
                // The tables are in place (sync): decide again at once.
                Ok(()) = async {
                    match self.tables_ready.as_mut() {
                        Some(r) if !*r.borrow() => r.changed().await,
                        _ => std::future::pending().await,
                    }
                } => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Takes the reconciler's latest table health and settings.
    fn take_published(&mut self) {
        let p = self.published.borrow_and_update().clone();
        self.vips = p.vips;
        if p.bgp != self.settings {
            match (&self.settings, &p.bgp) {
                (None, Some(b)) => {
                    tracing::info!(api = %b.api, local_as = b.local_as, "BGP: announcing through {} (lb_bgp)", b.daemon.name())
                }
                (Some(old), None) => {
                    tracing::info!("BGP: lb_bgp removed from the configuration: withdrawing the VIPs this agent announced and deleting the peers it added");
                    self.retiring.push(old.clone());
                }
                (Some(old), Some(new)) => {
                    if old.api != new.api {
                        tracing::info!(old = %old.api, new = %new.api, "BGP: lb_bgp names another daemon: withdrawing the VIPs and deleting the peers this agent added at the old one");
                        self.retiring.push(old.clone());
                    } else if old.local_as != new.local_as || old.router_id() != new.router_id() {
                        tracing::warn!("BGP: local_as / router_id changed: lb does not restart gobgpd's BGP instance; restart gobgpd (lb sets it up again) for the change to take effect");
                    } else {
                        tracing::info!("BGP: lb_bgp changed");
                    }
                }
                (None, None) => {}
            }
            self.settings = p.bgp;
            if let Ok(mut g) = self.grace.lock() {
                *g = self
                    .settings
                    .as_ref()
                    .map_or(Duration::ZERO, |b| b.withdraw_grace);
            }
            // New settings: ask the daemon now.
            self.retry_at = None;
            self.next_poll = Instant::now();
        }
        self.owned.extend(self.vips.keys().copied());
    }

    fn facts(&self) -> Facts {
        Facts {
            attached_for: Some(self.attached_at.elapsed()),
            drained: self.drained,
            stopping: self.stopping,
            syncing: self.tables_ready.as_ref().is_some_and(|r| !*r.borrow()),
        }
    }

    fn wake_at(&self) -> Instant {
        let mut at = self.next_poll;
        if let Some(r) = self.retry_at {
            at = at.max(r);
        }
        if let Some(b) = &self.settings {
            if let Some(d) = gate::next_change(&self.facts(), b) {
                at = at.min(Instant::now() + d);
            }
        }
        at
    }

    /// One round: read the daemon, correct it, publish the view. `force`
    /// ignores the back-off (a drain, a stop).
    async fn round(&mut self, force: bool) {
        if !self.retiring.is_empty() {
            self.retire().await;
        }
        let Some(b) = self.settings.clone() else {
            if self.retiring.is_empty() {
                self.paths.clear();
                self.peers.clear();
            }
            self.publish();
            return;
        };
        let now = Instant::now();
        if !force && self.retry_at.is_some_and(|t| now < t) {
            self.publish();
            return;
        }
        self.check_next_hops(&b);
        let client = gobgp::Client::of(&b);
        match self.converge(&b, &client).await {
            Ok(()) => {
                if let Some(e) = self.error.take() {
                    tracing::info!("BGP: {} answers again (was: {e})", b.daemon.name());
                }
                self.retry_at = None;
                self.backoff = BACKOFF_MIN;
                self.last_ok = Some(Instant::now());
            }
            Err(e) => {
                let text = crate::util::chain(&e);
                if self.error.as_deref() != Some(text.as_str()) {
                    tracing::warn!("BGP: {text}; retrying every {:?} at most", BACKOFF_MAX);
                }
                self.error = Some(text);
                self.counts.2 += 1;
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
        self.next_poll = Instant::now() + b.poll_interval;
        self.publish();
    }

    /// Whether a VIP of this agent is in the daemon's RIB (as last read),
    /// or a replaced daemon may still hold some.
    fn announced_any(&self) -> bool {
        self.paths.keys().any(|v| self.owned.contains(v)) || !self.retiring.is_empty()
    }

    /// Withdraws this agent's VIPs from the daemons of replaced or removed
    /// settings and deletes the peers it added there; those done are
    /// forgotten, a failure is logged once and retried next round.
    async fn retire(&mut self) {
        let mut left = Vec::new();
        for old in std::mem::take(&mut self.retiring) {
            let client = gobgp::Client::of(&old);
            let r: Result<usize, gobgp::GobgpError> = async {
                let mut n = 0;
                for fam in [
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                ] {
                    for vip in client.local_paths(fam).await?.into_keys() {
                        if self.owned.contains(&vip) {
                            client.withdraw(vip).await?;
                            tracing::info!(%vip, api = %old.api, "BGP: withdrawn (lb_bgp changed)");
                            self.counts.1 += 1;
                            n += 1;
                        }
                    }
                }
                for p in client.neighbors().await? {
                    let keep = self.settings.as_ref().is_some_and(|b| b.api == old.api && b.neighbors.iter().any(|n| n.addr == p.addr));
                    if self.added_peers.contains(&p.addr) && !keep {
                        client.del_neighbor(p.addr).await?;
                        tracing::info!(peer = %p.addr, api = %old.api, "BGP: neighbor lb had added deleted (lb_bgp changed)");
                    }
                }
                Ok(n)
            }
            .await;
            match r {
                Ok(_) => {
                    if self.settings.as_ref().is_none_or(|b| b.api != old.api) {
                        self.added_peers.clear();
                    }
                }
                Err(e) => {
                    let text = format!(
                        "retiring the daemon at {}: {}",
                        old.api,
                        crate::util::chain(&e)
                    );
                    if self.error.as_deref() != Some(text.as_str()) {
                        tracing::warn!("BGP: {text}; retrying");
                    }
                    self.error = Some(text);
                    left.push(old);
                }
            }
        }
        self.retiring = left;
    }

    async fn converge(&mut self, b: &Bgp, client: &gobgp::Client) -> Result<(), gobgp::GobgpError> {
        match client.global().await? {
            None => {
                let Some(id) = b.router_id() else {
                    return Ok(());
                };
                client.start(b.local_as, id).await?;
                tracing::info!(
                    local_as = b.local_as,
                    router_id = %id,
                    "BGP: started gobgpd's BGP instance (it had none)"
                );
            }
            Some(g) if g.asn != b.local_as => {
                let text = format!(
                    "gobgpd runs AS {} but lb_bgp says local_as {}: fix one of them (lb does not restart the daemon's BGP instance)",
                    g.asn, b.local_as
                );
                if self.as_mismatch_logged != Some(g.asn) {
                    tracing::error!("BGP: {text}");
                    self.as_mismatch_logged = Some(g.asn);
                }
                self.mismatch = Some(text);
            }
            Some(_) => {
                self.as_mismatch_logged = None;
                self.mismatch = None;
            }
        }
        let mut peers = client.neighbors().await?;
        for n in &b.neighbors {
            if !peers.iter().any(|p| p.addr == n.addr) {
                client.add_neighbor(n.addr, n.asn).await?;
                self.added_peers.insert(n.addr);
                tracing::info!(peer = %n.addr, asn = n.asn, "BGP: neighbor added to gobgpd");
                peers.push(gobgp::Peer {
                    addr: n.addr,
                    asn: n.asn,
                    session: gobgp::Session::Unknown,
                });
            }
        }
        // Peers this agent added that lb_bgp no longer names.
        let gone: Vec<IpAddr> = self
            .added_peers
            .iter()
            .filter(|a| !b.neighbors.iter().any(|n| n.addr == **a))
            .copied()
            .collect();
        for addr in gone {
            if peers.iter().any(|p| p.addr == addr) {
                client.del_neighbor(addr).await?;
                tracing::info!(peer = %addr, "BGP: neighbor removed from lb_bgp: deleted from gobgpd");
            }
            self.added_peers.remove(&addr);
            peers.retain(|p| p.addr != addr);
        }
        self.log_sessions(&peers);
        self.peers = peers;
        let verdicts = gate::decide(&self.vips, self.owned.iter().copied(), &self.facts(), b);
        let mut paths = BTreeMap::new();
        for fam in [
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        ] {
            if verdicts.keys().any(|v| v.is_ipv4() == fam.is_ipv4()) {
                paths.extend(client.local_paths(fam).await?);
            }
        }
        for (vip, v) in &verdicts {
            let have = paths.get(vip);
            match v {
                Verdict::Announce(nh) if have.is_none_or(|h| h != &vec![*nh]) => {
                    client.announce(*vip, *nh).await?;
                    tracing::info!(%vip, next_hop = %nh, "BGP: announced");
                    self.counts.0 += 1;
                    paths.insert(*vip, vec![*nh]);
                }
                Verdict::Withdraw(why) if have.is_some() => {
                    client.withdraw(*vip).await?;
                    tracing::info!(%vip, "BGP: withdrawn ({})", why.text());
                    self.counts.1 += 1;
                    paths.remove(vip);
                }
                _ => {}
            }
            if matches!(v, Verdict::Withdraw(Reason::NotConfigured)) && !paths.contains_key(vip) {
                self.owned.remove(vip);
            }
        }
        // Only ours are shown and counted.
        paths.retain(|v, _| self.owned.contains(v) || self.vips.contains_key(v));
        self.paths = paths;
        Ok(())
    }

    fn log_sessions(&self, now: &[gobgp::Peer]) {
        for p in now {
            let before = self
                .peers
                .iter()
                .find(|o| o.addr == p.addr)
                .map(|o| o.session);
            let up = p.session == gobgp::Session::Established;
            match before {
                Some(b) if (b == gobgp::Session::Established) != up => {
                    if up {
                        tracing::info!(peer = %p.addr, "BGP: session established");
                    } else {
                        tracing::warn!(peer = %p.addr, state = p.session.name(), "BGP: session down");
                    }
                }
                None if up => tracing::info!(peer = %p.addr, "BGP: session established"),
                _ => {}
            }
        }
    }

    fn view(&self) -> View {
        let b = self.settings.as_deref();
        let answering = self.error.is_none();
        let verdicts =
            b.map(|b| gate::decide(&self.vips, self.owned.iter().copied(), &self.facts(), b));
        let vips = self
            .owned
            .iter()
            .chain(self.vips.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|vip| {
                let h = self.vips.get(vip).copied().unwrap_or_default();
                let v = verdicts.as_ref().and_then(|m| m.get(vip)).copied();
                VipView {
                    vip: *vip,
                    services: h.services,
                    serving: h.serving,
                    want: matches!(v, Some(Verdict::Announce(_))),
                    reason: match v {
                        Some(Verdict::Withdraw(r)) => Some(r),
                        _ => None,
                    },
                    // Confirmed by the daemon's last answer: nothing is
                    // vouched for while it does not answer.
                    announced: answering && self.paths.contains_key(vip),
                    next_hop: self
                        .paths
                        .get(vip)
                        .filter(|_| answering)
                        .and_then(|h| h.first())
                        .copied(),
                }
            })
            .collect();
        View {
            configured: b.is_some(),
            daemon: b.map(|b| b.daemon.name().to_owned()),
            api: b.map(|b| b.api.to_string()),
            local_as: b.map(|b| b.local_as),
            daemon_up: b.is_some() && self.error.is_none() && self.last_ok.is_some(),
            error: self.error.clone().or_else(|| self.mismatch.clone()),
            last_ok_ago_s: self.last_ok.map(|t| t.elapsed().as_secs_f64()),
            drained: self.drained,
            stopping: self.stopping,
            vips,
            peers: self
                .peers
                .iter()
                .map(|p| PeerView {
                    address: p.addr,
                    asn: p.asn,
                    // The session as last read, while the daemon answers.
                    state: if answering {
                        p.session
                    } else {
                        gobgp::Session::Unknown
                    },
                    up: answering && p.session == gobgp::Session::Established,
                    configured: b.is_some_and(|b| b.neighbors.iter().any(|n| n.addr == p.addr)),
                })
                .collect(),
            warnings: self
                .foreign
                .iter()
                .filter(|_| b.is_some())
                .map(|h| foreign_text(*h))
                .collect(),
            announcements: self.counts.0,
            withdrawals: self.counts.1,
            errors: self.counts.2,
        }
    }

    /// Logs a change of [`foreign_next_hops`].
    fn check_next_hops(&mut self, b: &Bgp) {
        let now = foreign_next_hops(b);
        if now == self.foreign {
            return;
        }
        for h in now.iter().filter(|h| !self.foreign.contains(h)) {
            tracing::warn!(next_hop = %h, "BGP: {}", foreign_text(*h));
        }
        for h in self.foreign.iter().filter(|h| !now.contains(h)) {
            tracing::info!(next_hop = %h, "BGP: next hop {h} is an address of this director now");
        }
        self.foreign = now;
    }

    fn publish(&self) {
        self.view.send_replace(self.view());
    }
}

/// The configured next hops (`next_hop`, `next_hop6`) that are not
/// addresses of this director, in the agent's network namespace: a UDP
/// socket cannot bind them (`EADDRNOTAVAIL`). Announced, such a next hop
/// sends the VIPs' traffic to another machine or nowhere; lb warns and
/// still announces (a next hop elsewhere may be meant). With
/// `net.ipv4.ip_nonlocal_bind` (`net.ipv6.ip_nonlocal_bind`) set every
/// address binds and none is reported; an IPv6 address still in duplicate
/// address detection is reported until it is usable.
pub fn foreign_next_hops(b: &Bgp) -> Vec<IpAddr> {
    [b.next_hop.map(IpAddr::V4), b.next_hop6.map(IpAddr::V6)]
        .into_iter()
        .flatten()
        .filter(|h| {
            matches!(std::net::UdpSocket::bind((*h, 0)),
                Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL))
        })
        .collect()
}

fn foreign_text(h: IpAddr) -> String {
    format!("next hop {h} is not an address of this director: the routers would send the VIPs' traffic there, not here")
}

impl View {
    /// `lb list --bgp`.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        if !self.configured {
            let _ = writeln!(
                s,
                "BGP not configured (no lb_bgp block){}",
                if self.drained {
                    "; director drained"
                } else {
                    ""
                }
            );
            return s;
        }
        let _ = writeln!(
            s,
            "daemon {} at {} local AS {}: {}{}{}",
            self.daemon.as_deref().unwrap_or("?"),
            self.api.as_deref().unwrap_or("?"),
            self.local_as.map_or("?".into(), |a| a.to_string()),
            if self.daemon_up {
                "answering"
            } else {
                "NOT ANSWERING"
            },
            match &self.error {
                Some(e) => format!(" ({e})"),
                None => String::new(),
            },
            if self.drained {
                "; director DRAINED"
            } else {
                ""
            },
        );
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        let _ = writeln!(s, "{:<17} {:<11} {:<12} From", "Peer", "AS", "State");
        for p in &self.peers {
            let _ = writeln!(
                s,
                "{:<17} {:<11} {:<12} {}",
                p.address.to_string(),
                p.asn,
                p.state.name(),
                if p.configured { "lb_bgp" } else { "daemon" }
            );
        }
        let _ = writeln!(
            s,
            "{:<40} {:<10} {:<9} {:<17} Why not",
            "VIP", "Announced", "Serving", "Next hop"
        );
        for v in &self.vips {
            let _ = writeln!(
                s,
                "{:<40} {:<10} {:<9} {:<17} {}",
                v.vip.to_string(),
                if v.announced { "yes" } else { "no" },
                format!("{}/{}", v.serving, v.services),
                v.next_hop.map_or("-".into(), |h| h.to_string()),
                match (v.reason, v.want, v.announced) {
                    (Some(r), _, _) => r.text().to_owned(),
                    (None, true, false) => "pending (daemon not told yet)".into(),
                    _ => String::new(),
                }
            );
        }
        let _ = writeln!(
            s,
            "announced {} withdrawn {} failed rounds {}",
            self.announcements, self.withdrawals, self.errors
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(next_hops: &str) -> Bgp {
        let l = crate::config::load_str(
            &format!("lb_bgp {{\n  local_as 65001\n  router_id 1.1.1.1\n{next_hops}}}\n"),
            Path::new("k.conf"),
        );
        assert!(!l.has_errors(), "{:?}", l.diags);
        l.config.bgp.expect("the block")
    }

    /// Input: next hops on loopback and in TEST-NET-1 / the documentation
    /// prefix (on no interface). Output: only those are reported, and
    /// `lb list --bgp` shows them.
    #[test]
    fn a_next_hop_this_director_does_not_have_is_reported() {
        assert_eq!(
            foreign_next_hops(&settings("  next_hop 127.0.0.1\n  next_hop6 ::1\n")),
            Vec::<IpAddr>::new()
        );
        let far = settings("  next_hop 192.0.2.1\n  next_hop6 2001:db8::1\n");
        let want: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        assert_eq!(foreign_next_hops(&far), want);
        let view = View {
            configured: true,
            warnings: want.iter().map(|h| foreign_text(*h)).collect(),
            ..View::default()
        };
        assert!(view.render().contains(
            "\nwarning: next hop 192.0.2.1 is not an address of this director: the routers would send the VIPs' traffic there, not here\n"
        ));
    }
}
