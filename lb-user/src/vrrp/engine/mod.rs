//! The VRRP engine of `lb run`: one task owning every instance's state
//! machine, its sockets, tracked scripts and interfaces, the virtual
//! addresses and the notifications. The agent talks to it through
//! [`Handle`].
//!
//! By concern: [`events`] is the task loop and what each input (packet,
//! timer, tracked script, command) does; [`reconcile`] brings the running
//! instances in line with a (new) configuration and adds or removes the
//! virtual addresses; [`announce`] sends advertisements and gratuitous ARP /
//! NA; [`notify`] runs the notify programs and mails; [`render`] is the
//! structured state of `GET /v1/vrrp` (`lb list --vrrp`). Received adverts are checked against their instance
//! by [`super::validate`], beside the packet codec.

mod announce;
mod events;
mod notify;
mod reconcile;
mod render;
mod tracked;

use std::{
    collections::BTreeMap,
    io,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use socket2::Socket;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

pub use notify::notify_programs;

use super::{
    guard,
    machine::{Machine, State},
    net::{Link, Received},
};
use crate::config::vrrp::{Instance, Script, Vrrp};

/// Why the engine could not start (or an instance or a socket could not).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("VRRP socket on {iface}")]
    Socket {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("registering the VRRP socket")]
    Register(#[source] io::Error),
    /// An interface that cannot be read (the message names it).
    #[error(transparent)]
    Link(io::Error),
    #[error("{iface} has no IPv4 address to send from")]
    NoIpv4 { iface: String },
    #[error("{iface} has no link-local IPv6 address")]
    NoLinkLocal { iface: String },
    #[error("VRRP sending socket on {iface} from {src}")]
    TxSocket {
        iface: String,
        src: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Vmac(#[from] Box<crate::vrrp::vmac::Error>),
}

/// How often tracked interfaces are looked at.
const LINK_POLL: Duration = Duration::from_millis(100);

enum Command {
    Info(oneshot::Sender<crate::api::views::Vrrp>),
    Reload(Box<Vrrp>, oneshot::Sender<()>),
    Stop(oneshot::Sender<Duration>),
    /// Hold every instance in BACKUP (`true`) or release them.
    Hold(bool),
}

/// The agent's side of the engine.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Handle {
    /// `GET /v1/vrrp` (`lb list --vrrp` renders it): every instance's
    /// state, priorities, master, counters and drops. An engine that has
    /// stopped answers with `running: false`.
    pub async fn info(&self) -> crate::api::views::Vrrp {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Info(tx)).await.is_err() {
            return Default::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Applies a new configuration: unchanged instances keep their state.
    pub async fn reload(&self, cfg: Vrrp) {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::Reload(Box::new(cfg), tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Holds every instance in BACKUP (`true`: a master keeps nothing, a
    /// backup does not take over) until released (`false`), when those
    /// that would have taken over meanwhile do. Connection sync holds the
    /// director until the peer's bulk copy of the flow table is in.
    pub async fn hold(&self, hold: bool) {
        let _ = self.tx.send(Command::Hold(hold)).await;
    }

    /// Clean shutdown: masters send priority 0 and release their addresses;
    /// notify_stop runs. Returns how long the backups may take to take
    /// over (zero when this node was master of nothing): the data plane
    /// should keep forwarding that long for clients that still send here.
    pub async fn stop(&self) -> Duration {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Stop(tx)).await.is_ok() {
            return rx.await.unwrap_or_default();
        }
        Duration::ZERO
    }
}

/// A task of the engine's (an interface's receiving socket, a tracked
/// script's runs), stopped when dropped.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Inst {
    cfg: Instance,
    link: Link,
    src: IpAddr,
    tx: Socket,
    machine: Machine,
    /// Why the instance is in FAULT (empty: not faulty on its own).
    faults: Vec<String>,
    group: Option<usize>,
    rejects: BTreeMap<&'static str, u64>,
    /// Pending gratuitous ARP / NA bursts.
    /// Second sets of gratuitous ARPs / NAs due: (when, how many).
    garp_at: Vec<(Instant, u32)>,
    garp_refresh_at: Option<Instant>,
    vips_held: bool,
    since: SystemTime,
    /// The VMAC interface (`use_vmac`) and the base's sysctls to restore.
    vmac: Option<(Link, Vec<crate::vrrp::vmac::Saved>)>,
    /// The state last entered (for the counters below).
    last_state: State,
    /// State changes since the instance started.
    transitions: u64,
    /// Times it left MASTER (keepalived's `release_master`).
    released_master: u64,
}

impl Inst {
    /// Where the virtual addresses without `dev` live: the VMAC interface
    /// when there is one, else the instance's interface.
    fn vip_link(&self) -> &Link {
        self.vmac.as_ref().map_or(&self.link, |(l, _)| l)
    }
}

struct ScriptState {
    cfg: Script,
    up: bool,
    ok_run: u32,
    fail_run: u32,
    last: Option<bool>,
    _task: Task,
}

struct Engine {
    cfg: Vrrp,
    nl: rtnetlink::Handle,
    start: Instant,
    insts: Vec<Inst>,
    scripts: BTreeMap<String, ScriptState>,
    /// One receiving socket per interface and family in use.
    receivers: BTreeMap<(u32, bool), Task>,
    pkt_tx: mpsc::Sender<(u32, bool, Received)>,
    script_tx: mpsc::Sender<(String, bool)>,
    /// Tracked files and processes, and where their tasks report.
    files: BTreeMap<String, tracked::FileState>,
    procs: BTreeMap<String, tracked::ProcState>,
    track_tx: mpsc::Sender<tracked::Tracked>,
    /// Whether a configuration was applied (init_file overwrites only at start).
    applied: bool,
    /// Packets no instance takes, per interface name and reason.
    unclaimed: BTreeMap<(String, &'static str), u64>,
    /// Removes the held addresses if the agent dies (started with the first instance).
    guard: Option<guard::Guard>,
    /// The state each sync group was last notified in (all members in it).
    group_notified: BTreeMap<usize, State>,
    /// Instances are held in BACKUP (`Handle::hold`).
    held: bool,
}

/// What the engine's task receives.
struct Inbox {
    packets: mpsc::Receiver<(u32, bool, Received)>,
    scripts: mpsc::Receiver<(String, bool)>,
    tracked: mpsc::Receiver<tracked::Tracked>,
    commands: mpsc::Receiver<Command>,
}

/// Starts the engine (no-op configuration allowed) and returns its handle.
/// Virtual addresses of every instance are removed first: a previous run
/// killed without cleanup may have left them.
pub async fn spawn(cfg: Vrrp, nl: rtnetlink::Handle) -> Result<Handle, Error> {
    let (pkt_tx, packets) = mpsc::channel(1024);
    let (script_tx, scripts) = mpsc::channel(256);
    let (track_tx, tracked) = tracked::channel();
    let mut e = Engine {
        cfg: Vrrp::default(),
        nl,
        start: Instant::now(),
        insts: Vec::new(),
        scripts: BTreeMap::new(),
        receivers: BTreeMap::new(),
        pkt_tx,
        script_tx,
        files: BTreeMap::new(),
        procs: BTreeMap::new(),
        track_tx,
        applied: false,
        unclaimed: BTreeMap::new(),
        guard: None,
        group_notified: BTreeMap::new(),
        held: false,
    };
    e.apply(cfg).await?;
    let (tx, commands) = mpsc::channel(16);
    let inbox = Inbox {
        packets,
        scripts,
        tracked,
        commands,
    };
    tokio::spawn(events::run(e, inbox));
    Ok(Handle { tx })
}

impl Engine {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn next_deadline(&self) -> Instant {
        let mut d = Instant::now() + Duration::from_secs(3600);
        for i in &self.insts {
            if let Some(t) = i.machine.deadline() {
                d = d.min(self.start + t);
            }
            for g in i
                .garp_at
                .iter()
                .map(|(t, _)| t)
                .chain(i.garp_refresh_at.iter())
            {
                d = d.min(*g);
            }
        }
        d
    }
}
