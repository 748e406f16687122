//! Connection synchronisation between directors: ipvs's sync daemon
//! (`lvs_sync_daemon` in keepalived.conf) for lb.
//!
//! One task per agent, both directions at once (as keepalived runs ipvs's
//! master and backup daemons together):
//! - **send**: the data plane reports every new flow and every TCP state
//!   change in a ring buffer (`LB_SYNC_EVENTS`, lb-ebpf's sync.rs); every
//!   [`POLL`] the task drains it, names each flow by addresses and ports
//!   ([`Index`]), adds the persistence template of a persistent service,
//!   and multicasts the batch as ipvs sync protocol v1 messages
//!   ([`wire`]). Established flows are sent again every [`REFRESH`] so a
//!   peer's copy of a long, quiet connection does not expire.
//! - **receive**: messages from the peer are checked (size, version, sync
//!   id, signature when a key is set) and each conn installed in this
//!   director's tables with this director's real of that address and
//!   port: connection table, NAT reverse entry, persistence template. A
//!   takeover then forwards them to the same real without scheduling.
//!   Dropped messages and conns are counted by reason, never installed.
//! - **bulk copy** (lb's addition): at start the task asks the peer for its
//!   whole table and holds VRRP in BACKUP until the copy is in or
//!   [`BULK_TIMEOUT`] passes; it answers the same request from a peer.
//!
//! Nothing here blocks the agent: map walks for a bulk copy run on the
//! blocking pool, installs on a thread of their own behind a bounded queue
//! (a flood fills the socket's buffer, not the agent's workers), and bulk
//! copies are sent at most every [`BULK_SPACING`] whatever the number of
//! requests (an unauthenticated request cannot make this director send
//! its table in a loop).

pub mod wire;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, RingBuf};
use lb_common::{
    persist_client, Conn, FlowKey, Persist, PersistKey, RevNat, SyncEvent, Timeouts,
    CT_ESTABLISHED, CT_NONE, FWD_NAT, NS_PER_SEC, SVC_F_PERSISTENT,
};
use tokio::{net::UdpSocket, sync::watch};

use crate::{
    config::{vrrp::LvsSync, Config},
    dataplane::Dataplane,
    reconciler,
    state::{addr_words, words_addr},
    util::monotonic_ns,
};
use wire::{Control, Message, SyncConn};

/// How often the ring buffer is drained and the batch sent.
pub const POLL: Duration = Duration::from_millis(10);
/// How long a starting director waits for its peer's bulk copy.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a pending bulk request is repeated.
const BULK_RETRY: Duration = Duration::from_secs(1);
/// How often established flows are sent again.
pub const REFRESH: Duration = Duration::from_secs(120);
/// Receive buffer of the sync socket (a bulk copy arrives in a burst).
const RCVBUF: usize = 8 << 20;
/// Received batches waiting for the installer thread; when full, the task
/// stops reading the socket (the kernel's buffer holds the rest).
const INSTALL_QUEUE: usize = 256;
/// Bulk copies are sent at most this often: requests that arrive meanwhile
/// (a flood of them, or two peers starting) share the next one.
const BULK_SPACING: Duration = Duration::from_secs(2);
/// Requests answered by one bulk copy, at most.
const BULK_PENDING_MAX: usize = 16;

/// Work for the installer thread.
enum Job {
    Install {
        conns: Vec<SyncConn>,
        ix: Arc<Index>,
        timeouts: Timeouts,
    },
    /// Answered once every batch queued before it is installed.
    Marker(tokio::sync::oneshot::Sender<()>),
}

/// Installs received conns on its own thread: map updates are system
/// calls, and a flood of messages must not take the agent's workers from
/// VRRP, the checkers or the API.
fn spawn_installer(
    dp: Arc<std::sync::Mutex<Dataplane>>,
    tx: watch::Sender<Status>,
) -> std::io::Result<tokio::sync::mpsc::Sender<Job>> {
    let (jobs, mut rx) = tokio::sync::mpsc::channel::<Job>(INSTALL_QUEUE);
    std::thread::Builder::new()
        .name("lb-sync-install".into())
        .spawn(move || {
            while let Some(job) = rx.blocking_recv() {
                match job {
                    Job::Marker(done) => {
                        let _ = done.send(());
                    }
                    Job::Install {
                        conns,
                        ix,
                        timeouts,
                    } => {
                        let now = monotonic_ns();
                        let mut installed = 0u64;
                        let mut skipped: BTreeMap<&'static str, u64> = BTreeMap::new();
                        {
                            let mut dp = dp.lock().unwrap_or_else(|e| e.into_inner());
                            for c in &conns {
                                match install(&mut dp, &ix, &timeouts, c, now) {
                                    Ok(()) => installed += 1,
                                    Err(s) => *skipped.entry(s.reason()).or_default() += 1,
                                }
                            }
                        }
                        tx.send_modify(|st| {
                            st.installed += installed;
                            for (k, v) in &skipped {
                                *st.dropped.entry(k.to_string()).or_default() += v;
                            }
                        });
                    }
                }
            }
        })?;
    Ok(jobs)
}

/// A service as connection sync sees it.
#[derive(Clone, Debug, Default)]
pub struct SvcEntry {
    pub id: u32,
    /// `SVC_F_*`.
    pub flags: u32,
    pub persist_timeout_s: u32,
    pub persist_prefix: u32,
    /// Real id by (address, port).
    pub reals: HashMap<(IpAddr, u16), u32>,
}

/// A real as connection sync sees it.
#[derive(Clone, Debug)]
pub struct RealEntry {
    pub addr: IpAddr,
    pub port: u16,
    /// `FWD_*`.
    pub fwd: u32,
    pub gen: u32,
    pub svc_id: u32,
}

/// Services and reals by address and by id (published by the reconciler
/// after each change).
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// By (VIP, port, IP protocol).
    pub services: HashMap<(IpAddr, u16, u8), SvcEntry>,
    pub by_id: HashMap<u32, (IpAddr, u16, u8)>,
    pub reals: HashMap<u32, RealEntry>,
}

/// The sync settings in effect.
#[derive(Clone)]
pub struct Settings {
    pub iface: String,
    pub ifindex: u32,
    /// The VRRP instance held while the bulk copy comes; `None`: no VRRP
    /// (active-active directors).
    pub instance: Option<String>,
    pub syncid: u8,
    /// Largest message (UDP payload bytes).
    pub maxlen: usize,
    pub port: u16,
    pub ttl: u8,
    pub group: IpAddr,
    pub key: Option<ring::hmac::Key>,
}

/// Why sync could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{loc}: error: lvs_sync_daemon: no interface named {iface} on this host")]
    NoIface {
        loc: crate::config::Loc,
        iface: String,
    },
    #[error("{loc}: error: lvs_sync_daemon: no vrrp_instance named {instance}")]
    NoInstance {
        loc: crate::config::Loc,
        instance: String,
    },
    #[error("lvs_sync_daemon: {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lvs_sync_daemon: opening the data plane's maps")]
    Maps(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SyncError {
    let what = what.into();
    move |source| SyncError::Io { what, source }
}

impl Settings {
    /// The settings `config` asks for, `None` when sync is off. The sync id
    /// defaults to the instance's virtual_router_id and maxlen to the
    /// interface's MTU less 28, as keepalived and ipvs do.
    pub fn from_config(config: &Config) -> Option<Result<Settings, SyncError>> {
        let s: &LvsSync = config.vrrp.globals.lvs_sync.as_ref()?;
        Some((|| {
            let no_iface = || SyncError::NoIface {
                loc: s.loc.clone(),
                iface: s.iface.clone(),
            };
            let c = std::ffi::CString::new(s.iface.as_str()).map_err(|_| no_iface())?;
            // SAFETY: a valid C string.
            let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
            if ifindex == 0 {
                return Err(no_iface());
            }
            let vrid = match &s.instance {
                Some(name) => Some(
                    config
                        .vrrp
                        .instances
                        .iter()
                        .find(|i| &i.name == name)
                        .ok_or_else(|| SyncError::NoInstance {
                            loc: s.loc.clone(),
                            instance: name.clone(),
                        })?
                        .vrid,
                ),
                None => None,
            };
            let maxlen = match s.maxlen {
                Some(m) => m as usize,
                None => crate::util::netdev::mtu(&s.iface)
                    .map_err(io(format!("reading the MTU of {}", s.iface)))?
                    .saturating_sub(28)
                    .clamp(wire::HEADER_LEN as u32 + wire::CONN_V6_LEN as u32, 65507)
                    as usize,
            };
            Ok(Settings {
                iface: s.iface.clone(),
                ifindex,
                instance: s.instance.clone(),
                // ipvsadm's --syncid default is 0.
                syncid: s.syncid.or(vrid).unwrap_or(0),
                maxlen,
                port: s.port,
                ttl: s.ttl,
                group: s.group,
                key: config
                    .vrrp
                    .globals
                    .sync_auth_key
                    .as_ref()
                    .map(|(k, _)| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.as_bytes())),
            })
        })())
    }
}

/// What `lb list --vrrp`, `GET /v1/vrrp` and the metrics show.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Status {
    pub iface: String,
    pub group: String,
    pub port: u16,
    pub syncid: u8,
    pub authenticated: bool,
    /// `waiting for the peer's table`, `in sync`, `no answer from a peer`.
    pub state: String,
    /// Conns in the last bulk copy received, and how long it took (ms).
    pub bulk_received: u64,
    pub bulk_ms: Option<u64>,
    /// Bulk copies this director sent to a peer.
    pub bulk_served: u64,
    pub sent_conns: u64,
    pub sent_messages: u64,
    pub received_conns: u64,
    pub received_messages: u64,
    /// Conns installed in this director's tables.
    pub installed: u64,
    /// Dropped messages / conns by reason.
    pub dropped: BTreeMap<String, u64>,
    /// How long the oldest event of the last batch waited before it was
    /// sent (ms): the sender's lag.
    pub send_lag_ms: f64,
    /// Milliseconds since the last message from a peer.
    pub last_received_ms: Option<u64>,
}

/// The running sync task's view for other tasks.
#[derive(Clone)]
pub struct Handle {
    status: watch::Receiver<Status>,
    received_at: Arc<std::sync::Mutex<Option<Instant>>>,
    ready: watch::Receiver<bool>,
}

impl Handle {
    /// `true` once this director's tables are in place: a peer's bulk copy
    /// is installed, or none answered within [`BULK_TIMEOUT`]. The BGP task
    /// announces nothing before (README "Scale-out").
    pub fn tables_ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    pub fn status(&self) -> Status {
        let mut s = self.status.borrow().clone();
        s.last_received_ms = self
            .received_at
            .lock()
            .ok()
            .and_then(|t| *t)
            .map(|t| t.elapsed().as_millis() as u64);
        s
    }
}

/// Opens the multicast socket: bound to the group's port and to the
/// interface, joined to the group there, loopback off (a director does
/// not hear itself), TTL / hop limit as configured.
fn socket(s: &Settings) -> Result<UdpSocket, SyncError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if s.group.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(io("opening the sync socket"))?;
    sock.set_reuse_address(true).map_err(io("SO_REUSEADDR"))?;
    sock.bind_device(Some(s.iface.as_bytes()))
        .map_err(io(format!("binding the sync socket to {}", s.iface)))?;
    let _ = sock.set_recv_buffer_size(RCVBUF);
    match s.group {
        IpAddr::V4(g) => {
            sock.bind(&SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), s.port).into())
                .map_err(io(format!("binding port {}", s.port)))?;
            sock.join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(s.ifindex))
                .map_err(io(format!("joining {g} on {}", s.iface)))?;
            // The socket is bound to the interface: multicast leaves there.
            sock.set_multicast_loop_v4(false)
                .map_err(io("IP_MULTICAST_LOOP"))?;
            sock.set_multicast_ttl_v4(s.ttl.into())
                .map_err(io("IP_MULTICAST_TTL"))?;
        }
        IpAddr::V6(g) => {
            sock.set_only_v6(true).map_err(io("IPV6_V6ONLY"))?;
            sock.bind(&SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), s.port).into())
                .map_err(io(format!("binding port {}", s.port)))?;
            sock.join_multicast_v6(&g, s.ifindex)
                .map_err(io(format!("joining {g} on {}", s.iface)))?;
            sock.set_multicast_if_v6(s.ifindex)
                .map_err(io("IPV6_MULTICAST_IF"))?;
            sock.set_multicast_loop_v6(false)
                .map_err(io("IPV6_MULTICAST_LOOP"))?;
            sock.set_multicast_hops_v6(s.ttl.into())
                .map_err(io("IPV6_MULTICAST_HOPS"))?;
        }
    }
    sock.set_nonblocking(true).map_err(io("O_NONBLOCK"))?;
    UdpSocket::from_std(sock.into()).map_err(io("registering the sync socket"))
}

/// The conn for data-plane event `ev` (and the template of a persistent
/// service), or nothing when the service or real is gone (or reused).
fn from_event(
    ix: &Index,
    t: &Timeouts,
    ev: &SyncEvent,
    out: &mut Vec<SyncConn>,
    templates: &mut HashSet<(IpAddr, u32)>,
) {
    let (Some(&(vaddr, vport, proto)), Some(real)) =
        (ix.by_id.get(&ev.svc_id), ix.reals.get(&ev.real_id))
    else {
        return;
    };
    if real.gen != ev.real_gen || real.svc_id != ev.svc_id {
        return;
    }
    let client = words_addr(ev.key.src, ev.key.family);
    out.push(SyncConn {
        template: false,
        proto,
        fwd: real.fwd,
        state: ev.state,
        client,
        cport: u16::from_be(ev.key.sport_be),
        vaddr,
        vport,
        daddr: real.addr,
        dport: real.port,
        timeout_s: t.for_state(ev.state),
    });
    if let Some(svc) = ix.services.get(&(vaddr, vport, proto)) {
        if svc.flags & SVC_F_PERSISTENT != 0 {
            let net = words_addr(
                persist_client(&ev.key.src, ev.key.family, svc.flags, svc.persist_prefix),
                ev.key.family,
            );
            if templates.insert((net, svc.id)) {
                out.push(SyncConn {
                    template: true,
                    proto,
                    fwd: real.fwd,
                    state: CT_NONE,
                    client: net,
                    cport: 0,
                    vaddr,
                    vport,
                    daddr: real.addr,
                    dport: real.port,
                    timeout_s: svc.persist_timeout_s,
                });
            }
        }
    }
}

/// Why a received conn was not installed (a `dropped` reason).
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    UnknownService,
    UnknownReal,
    Map,
}

impl Skip {
    fn reason(&self) -> &'static str {
        match self {
            Skip::UnknownService => "unknown service",
            Skip::UnknownReal => "unknown real",
            Skip::Map => "map update failed",
        }
    }
}

/// `last_ns` for an entry the peer says has `left_s` seconds of its
/// `full_s` to live.
fn last_for(now: u64, full_s: u32, left_s: u32) -> u64 {
    now.saturating_sub((full_s.saturating_sub(left_s.min(full_s)) as u64) * NS_PER_SEC)
}

/// Installs a peer's conn in this director's tables.
pub fn install(
    dp: &mut Dataplane,
    ix: &Index,
    t: &Timeouts,
    c: &SyncConn,
    now: u64,
) -> Result<(), Skip> {
    let svc = ix
        .services
        .get(&(c.vaddr, c.vport, c.proto))
        .ok_or(Skip::UnknownService)?;
    let &real_id = svc
        .reals
        .get(&(c.daddr, c.dport))
        .ok_or(Skip::UnknownReal)?;
    let real = ix.reals.get(&real_id).ok_or(Skip::UnknownReal)?;
    let (client, family) = addr_words(c.client);
    if c.template {
        let key = PersistKey {
            client: persist_client(&client, family, svc.flags, svc.persist_prefix),
            svc_id: svc.id,
            family,
            _pad: [0; 3],
        };
        let p = Persist {
            real_id,
            real_gen: real.gen,
            last_ns: last_for(now, svc.persist_timeout_s, c.timeout_s),
        };
        return dp.persist.insert(key, p, 0).map_err(|_| Skip::Map);
    }
    let (vaddr, _) = addr_words(c.vaddr);
    let key = FlowKey {
        src: client,
        dst: vaddr,
        sport_be: c.cport.to_be(),
        dport_be: c.vport.to_be(),
        proto: c.proto,
        family,
        _pad: [0; 2],
    };
    let conn = Conn {
        real_id,
        real_gen: real.gen,
        svc_id: svc.id,
        state: c.state,
        last_ns: last_for(now, t.for_state(c.state), c.timeout_s),
    };
    dp.conntrack.insert(key, conn, 0).map_err(|_| Skip::Map)?;
    if real.fwd == FWD_NAT {
        let (raddr, _) = addr_words(real.addr);
        let rkey = FlowKey {
            src: raddr,
            dst: client,
            sport_be: real.port.to_be(),
            dport_be: c.cport.to_be(),
            proto: c.proto,
            family,
            _pad: [0; 2],
        };
        let rev = RevNat {
            vaddr,
            vport_be: c.vport.to_be(),
            family,
            _pad: 0,
            svc_id: svc.id,
            real_id,
            real_gen: real.gen,
            last_ns: now,
        };
        dp.nat_rev.insert(rkey, rev, 0).map_err(|_| Skip::Map)?;
    }
    Ok(())
}

/// Every live flow and template of this director's tables, as conns with
/// the time each has left (a bulk copy; `established_only` for the
/// periodic refresh). Runs on the blocking pool: one map walk.
pub fn dump(dp: &Dataplane, ix: &Index, established_only: bool) -> Vec<SyncConn> {
    let t = dp.timeouts_in_effect();
    let now = monotonic_ns();
    let mut out = Vec::new();
    for item in dp.conntrack.iter() {
        let Ok((k, c)) = item else { continue };
        let Some(left) = t.time_left_ns(c.state, c.last_ns, now) else {
            continue;
        };
        if established_only && c.state != CT_ESTABLISHED {
            continue;
        }
        let (Some(&(vaddr, vport, proto)), Some(real)) =
            (ix.by_id.get(&c.svc_id), ix.reals.get(&c.real_id))
        else {
            continue;
        };
        if real.gen != c.real_gen {
            continue;
        }
        out.push(SyncConn {
            template: false,
            proto,
            fwd: real.fwd,
            state: c.state,
            client: words_addr(k.src, k.family),
            cport: u16::from_be(k.sport_be),
            vaddr,
            vport,
            daddr: real.addr,
            dport: real.port,
            timeout_s: left.div_ceil(NS_PER_SEC) as u32,
        });
    }
    for item in dp.persist.iter() {
        let Ok((k, p)) = item else { continue };
        let Some(&(vaddr, vport, proto)) = ix.by_id.get(&k.svc_id) else {
            continue;
        };
        let (Some(svc), Some(real)) = (
            ix.services.get(&(vaddr, vport, proto)),
            ix.reals.get(&p.real_id),
        ) else {
            continue;
        };
        let age = now.saturating_sub(p.last_ns);
        let full = svc.persist_timeout_s as u64 * NS_PER_SEC;
        if real.gen != p.real_gen || age >= full {
            continue;
        }
        out.push(SyncConn {
            template: true,
            proto,
            fwd: real.fwd,
            state: CT_NONE,
            client: words_addr(k.client, k.family),
            cport: 0,
            vaddr,
            vport,
            daddr: real.addr,
            dport: real.port,
            timeout_s: (full - age).div_ceil(NS_PER_SEC) as u32,
        });
    }
    out
}

/// Starts connection sync: the socket, the ring buffer, the task. The
/// caller holds `vrrp` in BACKUP first (`Handle::hold(true)`); the task
/// releases it once the peer's bulk copy is installed or [`BULK_TIMEOUT`]
/// passes.
pub async fn spawn(
    settings: Settings,
    bpffs: PathBuf,
    core: reconciler::Handle,
    vrrp: crate::vrrp::engine::Handle,
) -> Result<(Handle, tokio::task::JoinHandle<()>), SyncError> {
    let sock = socket(&settings)?;
    let ring_map = MapData::from_pin(bpffs.join(lb_common::maps::SYNC_EVENTS))
        .map_err(|e| SyncError::Maps(Box::new(e)))?;
    let ring =
        RingBuf::try_from(Map::from_map_data(ring_map).map_err(|e| SyncError::Maps(Box::new(e)))?)
            .map_err(|e| SyncError::Maps(Box::new(e)))?;
    let dp = Dataplane::from_pins(&bpffs).map_err(|e| SyncError::Maps(Box::new(e)))?;
    let status = Status {
        iface: settings.iface.clone(),
        group: settings.group.to_string(),
        port: settings.port,
        syncid: settings.syncid,
        authenticated: settings.key.is_some(),
        state: "waiting for the peer's table".into(),
        ..Default::default()
    };
    let (tx, rx) = watch::channel(status);
    let received_at = Arc::new(std::sync::Mutex::new(None));
    let (ready_tx, ready) = watch::channel(false);
    let dp = Arc::new(std::sync::Mutex::new(dp));
    let jobs =
        spawn_installer(dp.clone(), tx.clone()).map_err(io("starting the installer thread"))?;
    tracing::info!(
        iface = %settings.iface, group = %settings.group, port = settings.port, syncid = settings.syncid,
        maxlen = settings.maxlen, authenticated = settings.key.is_some(),
        "connection sync on (ipvs sync protocol v1); asking the peer for its table"
    );
    let task = Task {
        s: settings,
        sock,
        ring,
        dp,
        core,
        vrrp,
        tx,
        received_at: received_at.clone(),
        nonce: rand_nonce(),
        jobs,
        ready: Arc::new(ready_tx),
    };
    let join = tokio::spawn(task.run());
    Ok((
        Handle {
            status: rx,
            received_at,
            ready,
        },
        join,
    ))
}

fn rand_nonce() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_ne_bytes(b) | 1
}

struct Task {
    s: Settings,
    sock: UdpSocket,
    ring: RingBuf<MapData>,
    dp: Arc<std::sync::Mutex<Dataplane>>,
    core: reconciler::Handle,
    vrrp: crate::vrrp::engine::Handle,
    tx: watch::Sender<Status>,
    received_at: Arc<std::sync::Mutex<Option<Instant>>>,
    nonce: u32,
    jobs: tokio::sync::mpsc::Sender<Job>,
    ready: Arc<watch::Sender<bool>>,
}

/// The wait for a peer's table is over: BGP may announce, and the VRRP
/// instance (when sync follows one) is released.
async fn release(ready: &watch::Sender<bool>, s: &Settings, vrrp: &crate::vrrp::engine::Handle) {
    ready.send_replace(true);
    if s.instance.is_some() {
        vrrp.hold(false).await;
    }
}

impl Task {
    /// What the end of the wait for a peer's table releases, for the log.
    fn released_what(&self) -> &'static str {
        if self.s.instance.is_some() {
            "VRRP released"
        } else {
            "tables in place"
        }
    }

    fn index(&self) -> Arc<Index> {
        self.core.published().borrow().sync_index.clone()
    }

    fn dropped(&self, why: &str) {
        self.tx
            .send_modify(|s| *s.dropped.entry(why.to_string()).or_default() += 1);
    }

    async fn send_all(&self, msgs: &[Vec<u8>]) -> usize {
        let to = SocketAddr::new(self.s.group, self.s.port);
        let mut sent = 0;
        for (i, m) in msgs.iter().enumerate() {
            match self.sock.send_to(m, to).await {
                Ok(_) => sent += 1,
                Err(e) => {
                    self.dropped("send failed");
                    tracing::debug!("sync send: {e}");
                }
            }
            // Pace long bursts (a bulk copy) so the peer's socket keeps up.
            if i % 64 == 63 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        sent
    }

    /// Walks the tables on the blocking pool and sends them.
    async fn send_table(&self, established_only: bool) -> u64 {
        let dp = self.dp.clone();
        let ix = self.index();
        let conns = tokio::task::spawn_blocking(move || {
            let dp = dp.lock().unwrap_or_else(|e| e.into_inner());
            dump(&dp, &ix, established_only)
        })
        .await
        .unwrap_or_default();
        let msgs = wire::encode_conns(self.s.syncid, &conns, self.s.maxlen, self.s.key.as_ref());
        let sent = self.send_all(&msgs).await;
        self.tx.send_modify(|st| {
            st.sent_conns += conns.len() as u64;
            st.sent_messages += sent as u64;
        });
        conns.len() as u64
    }

    async fn send_control(&self, c: Control) {
        let m = wire::encode_control(self.s.syncid, &c, self.s.key.as_ref());
        self.send_all(&[m]).await;
    }

    async fn run(mut self) {
        let started = Instant::now();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + REFRESH, REFRESH);
        let mut retry = tokio::time::interval(BULK_RETRY);
        let mut waiting = true;
        let mut timeouts = self
            .dp
            .lock()
            .map(|d| d.timeouts_in_effect())
            .unwrap_or_default();
        let mut buf = vec![0u8; 65536];
        let mut templates = HashSet::new();
        let mut last_drain = Instant::now();
        // Bulk copies asked for and not yet sent: the nonces, when it is due.
        let mut pending: Vec<u32> = Vec::new();
        let mut bulk_due: Option<tokio::time::Instant> = None;
        let mut last_bulk: Option<tokio::time::Instant> = None;
        // Requests already answered: a replayed request is not answered again.
        let mut served: std::collections::VecDeque<u32> = std::collections::VecDeque::new();
        let mut last_ask: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    let ix = self.index();
                    let mut batch = Vec::new();
                    templates.clear();
                    let mut n = 0u64;
                    while let Some(item) = self.ring.next() {
                        if item.len() < size_of::<SyncEvent>() {
                            continue;
                        }
                        // SAFETY: the record is a SyncEvent written by the
                        // data plane (size checked; read unaligned).
                        let ev: SyncEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                        from_event(&ix, &timeouts, &ev, &mut batch, &mut templates);
                        n += 1;
                    }
                    // An event waited at most since the last drain, plus the send.
                    let waited = std::mem::replace(&mut last_drain, Instant::now()).elapsed();
                    if n > 0 {
                        let msgs = wire::encode_conns(self.s.syncid, &batch, self.s.maxlen, self.s.key.as_ref());
                        let sent = self.send_all(&msgs).await;
                        self.tx.send_modify(|st| {
                            st.sent_conns += batch.len() as u64;
                            st.sent_messages += sent as u64;
                            st.send_lag_ms = (waited + last_drain.elapsed()).as_secs_f64() * 1000.0;
                        });
                    }
                }
                _ = retry.tick(), if waiting => {
                    if started.elapsed() >= BULK_TIMEOUT {
                        waiting = false;
                        self.tx.send_modify(|st| st.state = "no answer from a peer".into());
                        tracing::warn!("connection sync: no peer answered the table request in {BULK_TIMEOUT:?}; {}", self.released_what());
                        release(&self.ready, &self.s, &self.vrrp).await;
                    } else {
                        self.send_control(Control::BulkRequest { nonce: self.nonce }).await;
                    }
                }
                _ = async { tokio::time::sleep_until(bulk_due.unwrap_or_else(tokio::time::Instant::now)).await }, if bulk_due.is_some() => {
                    bulk_due = None;
                    let count = self.send_table(false).await;
                    for nonce in pending.drain(..) {
                        self.send_control(Control::BulkEnd { nonce, count: count as u32 }).await;
                        self.tx.send_modify(|st| st.bulk_served += 1);
                        if served.len() == 64 {
                            served.pop_front();
                        }
                        served.push_back(nonce);
                    }
                    last_bulk = Some(tokio::time::Instant::now());
                    tracing::info!(conns = count, "connection sync: sent this director's table to a starting peer");
                }
                _ = refresh.tick() => {
                    if let Ok(d) = self.dp.lock() {
                        timeouts = d.timeouts_in_effect();
                    }
                    self.send_table(true).await;
                }
                r = self.sock.recv_from(&mut buf) => {
                    let Ok((len, from)) = r else { continue };
                    if let Ok(mut t) = self.received_at.lock() {
                        *t = Some(Instant::now());
                    }
                    match wire::decode(&buf[..len], self.s.syncid, self.s.key.as_ref()) {
                        Err(e) => {
                            let why = match e {
                                wire::WireError::Unsigned => "unsigned",
                                wire::WireError::BadSignature => "bad signature",
                                wire::WireError::SyncId { .. } => "other sync id",
                                _ => "malformed",
                            };
                            self.dropped(why);
                            tracing::debug!(%from, "sync message dropped: {e}");
                        }
                        Ok(Message::Control(Control::BulkRequest { nonce })) => {
                            if nonce == self.nonce || pending.contains(&nonce) {
                                continue;
                            }
                            // A peer starting while this director waits for
                            // a table too (a pair started together): ask it
                            // now rather than at the next retry, so that
                            // neither takes over before the other is in.
                            if waiting && last_ask.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                                last_ask = Some(Instant::now());
                                self.send_control(Control::BulkRequest { nonce: self.nonce }).await;
                            }
                            if served.contains(&nonce) {
                                self.dropped("bulk request replayed");
                                continue;
                            }
                            if pending.len() >= BULK_PENDING_MAX {
                                self.dropped("bulk requests over the limit");
                                continue;
                            }
                            tracing::debug!(%from, nonce, "connection sync: a peer asks for the table");
                            pending.push(nonce);
                            if bulk_due.is_none() {
                                let now = tokio::time::Instant::now();
                                bulk_due = Some(last_bulk.map_or(now, |t| (t + BULK_SPACING).max(now)));
                            }
                        }
                        Ok(Message::Control(Control::BulkEnd { nonce, count })) => {
                            if nonce != self.nonce || !waiting {
                                continue;
                            }
                            waiting = false;
                            // Released once every conn received before the
                            // end marker is installed.
                            let (done, installed) = tokio::sync::oneshot::channel();
                            let _ = self.jobs.send(Job::Marker(done)).await;
                            let (tx, vrrp) = (self.tx.clone(), self.vrrp.clone());
                            let (ready, s, what) = (self.ready.clone(), self.s.clone(), self.released_what());
                            tokio::spawn(async move {
                                let _ = installed.await;
                                let ms = started.elapsed().as_millis() as u64;
                                tx.send_modify(|st| {
                                    st.state = "in sync".into();
                                    st.bulk_received = count.into();
                                    st.bulk_ms = Some(ms);
                                });
                                tracing::info!(%from, conns = count, ms, "connection sync: the peer's table is in; {what}");
                                release(&ready, &s, &vrrp).await;
                            });
                        }
                        Ok(Message::Conns(conns)) => {
                            self.tx.send_modify(|st| {
                                st.received_messages += 1;
                                st.received_conns += conns.len() as u64;
                            });
                            let job = Job::Install { conns, ix: self.index(), timeouts };
                            // A full queue holds this task (and the socket's
                            // buffer fills), never the agent's other tasks.
                            let _ = self.jobs.send(job).await;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{CT_SYN_RECV, FWD_DR, PROTO_TCP, SVC_F_PERSIST_NET};

    fn index() -> Index {
        let mut ix = Index::default();
        let vip: IpAddr = "10.0.0.100".parse().unwrap();
        let mut reals = HashMap::new();
        for (id, a) in [(3u32, "10.0.1.1"), (4, "10.0.1.2")] {
            let addr: IpAddr = a.parse().unwrap();
            reals.insert((addr, 80), id);
            ix.reals.insert(
                id,
                RealEntry {
                    addr,
                    port: 80,
                    fwd: FWD_DR,
                    gen: 7,
                    svc_id: 1,
                },
            );
        }
        ix.services.insert(
            (vip, 80, PROTO_TCP),
            SvcEntry {
                id: 1,
                flags: SVC_F_PERSISTENT | SVC_F_PERSIST_NET,
                persist_timeout_s: 300,
                persist_prefix: 24,
                reals,
            },
        );
        ix.by_id.insert(1, (vip, 80, PROTO_TCP));
        ix
    }

    fn event(real_id: u32, gen: u32, last: u8) -> SyncEvent {
        let (src, family) = addr_words(format!("192.0.2.{last}").parse().unwrap());
        let (dst, _) = addr_words("10.0.0.100".parse().unwrap());
        SyncEvent {
            key: FlowKey {
                src,
                dst,
                sport_be: 40000u16.to_be(),
                dport_be: 80u16.to_be(),
                proto: PROTO_TCP,
                family,
                _pad: [0; 2],
            },
            svc_id: 1,
            real_id,
            real_gen: gen,
            state: CT_SYN_RECV,
        }
    }

    #[test]
    fn events_become_conns_with_one_template_per_client_network() {
        let ix = index();
        let t = Timeouts::default();
        let mut out = Vec::new();
        let mut tpl = HashSet::new();
        from_event(&ix, &t, &event(3, 7, 9), &mut out, &mut tpl);
        from_event(&ix, &t, &event(3, 7, 10), &mut out, &mut tpl);
        // A reused slot (another generation) is not reported.
        from_event(&ix, &t, &event(4, 6, 11), &mut out, &mut tpl);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0].daddr, "10.0.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(out[0].cport, 40000);
        assert_eq!(out[0].timeout_s, t.for_state(CT_SYN_RECV));
        assert!(out[1].template);
        assert_eq!(
            out[1].client,
            "192.0.2.0".parse::<IpAddr>().unwrap(),
            "masked to /24"
        );
        assert_eq!(out[1].timeout_s, 300);
        assert!(!out[2].template);
    }

    #[test]
    fn the_time_left_carries_over() {
        let now = 1_000 * NS_PER_SEC;
        assert_eq!(last_for(now, 900, 900), now);
        assert_eq!(last_for(now, 900, 600), now - 300 * NS_PER_SEC);
        assert_eq!(
            last_for(now, 60, 900),
            now,
            "more than this director's timeout: full"
        );
    }
}
