//! The VRRP engine of `lb run`: one task owning every instance's state
//! machine, its sockets, tracked scripts and interfaces, the virtual
//! addresses and the notifications. The agent talks to it through
//! [`Handle`].

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{anyhow, Context as _};
use socket2::Socket;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    addr,
    machine::{Action, Machine, Settings, State},
    net::{self, Link, Received},
    packet::{Advert, Version, AUTH_NONE, AUTH_PASS},
};
use crate::config::vrrp::{Initial, Instance, Notify, Script, Vrrp};

/// How often tracked interfaces are looked at.
const LINK_POLL: Duration = Duration::from_millis(100);

enum Command {
    Render(oneshot::Sender<String>),
    Reload(Box<Vrrp>, oneshot::Sender<()>),
    Stop(oneshot::Sender<Duration>),
}

/// The agent's side of the engine.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Handle {
    /// `lb list --vrrp`.
    pub async fn render(&self) -> String {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Render(tx)).await.is_err() {
            return "VRRP engine stopped\n".into();
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

/// One interface's receiving socket, read by its own task.
struct Receiver {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
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
    garp_at: Vec<Instant>,
    garp_refresh_at: Option<Instant>,
    vips_held: bool,
    since: SystemTime,
}

struct ScriptState {
    cfg: Script,
    up: bool,
    ok_run: u32,
    fail_run: u32,
    last: Option<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Engine {
    cfg: Vrrp,
    nl: rtnetlink::Handle,
    start: Instant,
    insts: Vec<Inst>,
    scripts: BTreeMap<String, ScriptState>,
    receivers: BTreeMap<(u32, bool), Receiver>,
    pkt_tx: mpsc::Sender<(u32, bool, Received)>,
    script_tx: mpsc::Sender<(String, bool)>,
    /// Packets no instance takes, per interface name and reason.
    unclaimed: BTreeMap<(String, &'static str), u64>,
    /// Removes the held addresses if the agent dies (started with the first instance).
    guard: Option<super::guard::Guard>,
    /// The state each sync group was last notified in (all members in it).
    group_notified: BTreeMap<usize, State>,
}

fn name(s: State) -> &'static str {
    match s {
        State::Init => "INIT",
        State::Backup => "BACKUP",
        State::Master => "MASTER",
        State::Fault => "FAULT",
    }
}

/// Starts the engine (no-op configuration allowed) and returns its handle.
/// Virtual addresses of every instance are removed first: a previous run
/// killed without cleanup may have left them.
pub async fn spawn(cfg: Vrrp, nl: rtnetlink::Handle) -> anyhow::Result<Handle> {
    let (pkt_tx, mut pkt_rx) = mpsc::channel(1024);
    let (script_tx, mut script_rx) = mpsc::channel(256);
    let mut e = Engine {
        cfg: Vrrp::default(),
        nl,
        start: Instant::now(),
        insts: Vec::new(),
        scripts: BTreeMap::new(),
        receivers: BTreeMap::new(),
        pkt_tx,
        script_tx,
        unclaimed: BTreeMap::new(),
        guard: None,
        group_notified: BTreeMap::new(),
    };
    e.apply(cfg).await?;
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(LINK_POLL);
        loop {
            let deadline = e.next_deadline();
            // Tracking (scripts, links) is re-evaluated when it may have
            // changed, not on every packet.
            let track = tokio::select! {
                Some((ifindex, v6, pkt)) = pkt_rx.recv() => { e.on_packet(ifindex, v6, pkt).await; false }
                Some((script, ok)) = script_rx.recv() => { e.on_script(&script, ok); true }
                _ = tokio::time::sleep_until(deadline) => { e.on_timers().await; false }
                _ = poll.tick() => true,
                cmd = rx.recv() => match cmd {
                    Some(Command::Render(r)) => { let _ = r.send(e.render()); false }
                    Some(Command::Reload(cfg, r)) => {
                        if let Err(err) = e.apply(*cfg).await {
                            tracing::error!("VRRP reload: {err:#}");
                        }
                        e.evaluate().await;
                        let _ = r.send(());
                        false
                    }
                    Some(Command::Stop(r)) => {
                        let drain = e.takeover_time();
                        e.stop_all().await;
                        let _ = r.send(drain);
                        return;
                    }
                    None => { e.stop_all().await; return; }
                },
            };
            if track {
                e.evaluate().await;
            }
        }
    });
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
            for g in i.garp_at.iter().chain(i.garp_refresh_at.iter()) {
                d = d.min(*g);
            }
        }
        d
    }

    /// Replaces the configuration: instances whose settings are unchanged
    /// keep running; the others stop (as on shutdown) and start anew.
    async fn apply(&mut self, cfg: Vrrp) -> anyhow::Result<()> {
        // Scripts: keep the state of unchanged ones.
        let mut scripts = BTreeMap::new();
        for (n, s) in &cfg.scripts {
            match self.scripts.remove(n) {
                Some(old) if old.cfg == *s => {
                    scripts.insert(n.clone(), old);
                }
                _ => {
                    scripts.insert(n.clone(), self.start_script(s.clone()));
                }
            }
        }
        self.scripts = scripts;
        // Instances whose identity (what goes on the wire and the addresses)
        // is unchanged keep running with their state; priority, tracking,
        // preemption and notifications are updated in place.
        let stop: Vec<usize> = (0..self.insts.len())
            .filter(|&k| {
                !cfg.instances
                    .iter()
                    .any(|c| same_identity(c, &self.insts[k].cfg))
            })
            .collect();
        for &k in &stop {
            self.stop_index(k).await;
        }
        let mut kept: Vec<Inst> = std::mem::take(&mut self.insts)
            .into_iter()
            .enumerate()
            .filter(|(k, _)| !stop.contains(k))
            .map(|(_, i)| i)
            .collect();
        for k in &mut kept {
            if let Some(c) = cfg.instances.iter().find(|c| same_identity(c, &k.cfg)) {
                if *c != k.cfg {
                    tracing::info!(instance = %c.name, "VRRP instance updated in place");
                }
                k.cfg = c.clone();
                let st = &mut k.machine.settings;
                st.priority = c.priority;
                st.preempt = c.preempt;
                st.preempt_delay = c.preempt_delay;
                st.initial_master = c.initial == Initial::Master;
            }
        }
        self.cfg = cfg.clone();
        if !cfg.instances.is_empty() && self.guard.is_none() {
            match super::guard::Guard::spawn() {
                Ok(g) => self.guard = Some(g),
                Err(e) => {
                    tracing::warn!("no VIP guard (addresses stay if the agent is killed): {e:#}")
                }
            }
        }
        for c in &cfg.instances {
            if kept.iter().any(|k| k.cfg.name == c.name) {
                continue;
            }
            match self.new_inst(c).await {
                Ok(i) => kept.push(i),
                Err(e) => tracing::error!(instance = %c.name, "VRRP instance not started: {e:#}"),
            }
        }
        // Keep the configuration's order; groups by index.
        kept.sort_by_key(|k| cfg.instances.iter().position(|c| c.name == k.cfg.name));
        for k in &mut kept {
            k.group = cfg
                .groups
                .iter()
                .position(|g| g.members.contains(&k.cfg.name));
        }
        self.insts = kept;
        // Sockets: one receiver per interface and family in use.
        let mut want = BTreeMap::new();
        for i in &self.insts {
            want.insert((i.link.index, i.cfg.is_ipv6()), i.link.clone());
        }
        self.receivers.retain(|k, _| want.contains_key(k));
        for ((index, v6), link) in want {
            if self.receivers.contains_key(&(index, v6)) {
                continue;
            }
            let s = net::rx_socket(&link, v6, true)
                .with_context(|| format!("VRRP socket on {}", link.name))?;
            // SAFETY: the socket owns its descriptor, which stays open for
            // as long as the AsyncFd owns the socket.
            let fd = unsafe { AsyncFd::register(s) }
                .map_err(|e| anyhow!("registering the VRRP socket: {e}"))?;
            let tx = self.pkt_tx.clone();
            let task = tokio::spawn(async move {
                loop {
                    let Ok(mut g) = fd.readable().await else {
                        return;
                    };
                    loop {
                        match net::recv(fd.get_ref(), v6) {
                            Ok(p) => {
                                if tx.send((index, v6, p)).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                g.clear_ready();
                                break;
                            }
                            Err(e) => tracing::debug!("VRRP receive: {e}"),
                        }
                    }
                }
            });
            self.receivers.insert((index, v6), Receiver { task });
        }
        Ok(())
    }

    fn start_script(&self, s: Script) -> ScriptState {
        let tx = self.script_tx.clone();
        let cfg = s.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(cfg.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let out = crate::health::probe::misc(&cfg.argv, cfg.timeout, false, cfg.user).await;
                let ok = matches!(out, crate::health::Outcome::Up);
                if tx.send((cfg.name.clone(), ok)).await.is_err() {
                    return;
                }
            }
        });
        ScriptState {
            up: !s.init_fail,
            ok_run: 0,
            fail_run: 0,
            last: None,
            cfg: s,
            task,
        }
    }

    async fn new_inst(&mut self, c: &Instance) -> anyhow::Result<Inst> {
        let link = net::link(&c.iface)?;
        let src = match (c.unicast_src, c.is_ipv6()) {
            (Some(s), _) => s,
            (None, false) => IpAddr::V4(
                link.v4
                    .ok_or_else(|| anyhow!("{} has no IPv4 address to send from", c.iface))?,
            ),
            (None, true) => IpAddr::V6(
                link.v6_ll
                    .ok_or_else(|| anyhow!("{} has no link-local IPv6 address", c.iface))?,
            ),
        };
        let tx = net::tx_socket(&link, src)
            .with_context(|| format!("VRRP sending socket on {} from {src}", c.iface))?;
        // A previous run killed without cleanup may have left the addresses.
        for v in c.vips.iter().chain(&c.excluded) {
            let idx = self.vip_index(&link, v)?;
            if addr::del(&self.nl, idx, v).await.unwrap_or(false) {
                tracing::warn!(instance = %c.name, vip = %v.addr, "removed a virtual address left from an earlier run");
            }
        }
        let machine = Machine::new(Settings {
            priority: c.priority,
            advert_cs: c.advert_cs,
            adopt_interval: c.version == Version::V3,
            preempt: c.preempt,
            preempt_delay: c.preempt_delay,
            addr: src,
            initial_master: c.initial == Initial::Master,
        });
        tracing::info!(instance = %c.name, iface = %c.iface, vrid = c.vrid, priority = c.priority, %src, "VRRP instance configured");
        Ok(Inst {
            cfg: c.clone(),
            link,
            src,
            tx,
            machine,
            faults: Vec::new(),
            group: None,
            rejects: BTreeMap::new(),
            garp_at: Vec::new(),
            garp_refresh_at: None,
            vips_held: false,
            since: SystemTime::now(),
        })
    }

    fn vip_index(&self, link: &Link, v: &crate::config::vrrp::Vip) -> anyhow::Result<u32> {
        match &v.dev {
            None => Ok(link.index),
            Some(d) => Ok(net::link(d)?.index),
        }
    }

    fn on_script(&mut self, name: &str, ok: bool) {
        let Some(s) = self.scripts.get_mut(name) else {
            return;
        };
        s.last = Some(ok);
        if ok {
            s.ok_run += 1;
            s.fail_run = 0;
            if !s.up && s.ok_run >= s.cfg.rise {
                s.up = true;
                tracing::info!(script = %name, "VRRP script succeeded: good");
            }
        } else {
            s.fail_run += 1;
            s.ok_run = 0;
            if s.up && s.fail_run >= s.cfg.fall {
                s.up = false;
                tracing::warn!(script = %name, "VRRP script failed: bad");
            }
        }
    }

    /// Tracking → (faults, priority) of instance `i` on its own.
    fn tracked(&self, i: usize) -> (Vec<String>, u8) {
        let inst = &self.insts[i];
        let mut faults = Vec::new();
        let base = inst.cfg.priority as i32;
        let mut prio = base;
        if !net::link_up(&inst.cfg.iface) {
            faults.push(format!("interface {} down", inst.cfg.iface));
        }
        let mut apply = |what: String, up: bool, w: i32| {
            if w == 0 && !up {
                faults.push(what);
            } else if w > 0 && up || w < 0 && !up {
                prio += w;
            }
        };
        for t in &inst.cfg.track_interfaces {
            let up = net::link_up(&t.name);
            apply(
                format!("tracked interface {} down", t.name),
                up,
                t.weight.unwrap_or(0),
            );
        }
        let group_scripts = inst
            .group
            .map(|g| self.cfg.groups[g].track_scripts.as_slice())
            .unwrap_or(&[]);
        for t in inst.cfg.track_scripts.iter().chain(group_scripts) {
            if let Some(s) = self.scripts.get(&t.name) {
                apply(
                    format!("script {} failed", t.name),
                    s.up,
                    t.weight.unwrap_or(s.cfg.weight),
                );
            }
        }
        // The address owner's priority does not move (keepalived).
        let prio = if base == 255 { 255 } else { prio.clamp(1, 254) };
        (faults, prio as u8)
    }

    /// Re-evaluates tracking for every instance and acts on changes.
    async fn evaluate(&mut self) {
        let now = self.now();
        let own: Vec<(Vec<String>, u8)> = (0..self.insts.len()).map(|i| self.tracked(i)).collect();
        for i in 0..self.insts.len() {
            let (mut faults, prio) = own[i].clone();
            if let Some(g) = self.insts[i].group {
                for (j, o) in self.insts.iter().enumerate() {
                    if j != i && o.group == Some(g) && !own[j].0.is_empty() {
                        faults.push(format!("sync group member {} in fault", o.cfg.name));
                    }
                }
            }
            let iname = self.insts[i].cfg.name.clone();
            let m = &mut self.insts[i].machine;
            let mut actions = Vec::new();
            match (faults.is_empty(), m.state) {
                (true, State::Init) => {
                    m.priority = prio;
                    actions = m.start(now);
                }
                (false, st) if st != State::Fault => {
                    for f in &faults {
                        tracing::warn!(instance = %iname, "{f}: entering FAULT");
                    }
                    actions = m.set_fault(now, true);
                }
                (true, State::Fault) => {
                    tracing::info!(instance = %iname, "fault cleared");
                    m.priority = prio;
                    actions = m.set_fault(now, false);
                }
                _ => {}
            }
            let m = &mut self.insts[i].machine;
            if m.state != State::Fault && m.state != State::Init && m.priority != prio {
                tracing::info!(instance = %iname, from = m.priority, to = prio, "priority changed by tracking");
                actions.extend(m.set_priority(now, prio));
            }
            self.insts[i].faults = faults;
            self.act(i, actions, true).await;
        }
    }

    async fn on_packet(&mut self, ifindex: u32, v6: bool, p: Received) {
        let iface = self
            .insts
            .iter()
            .find(|i| i.link.index == ifindex)
            .map(|i| i.cfg.iface.clone())
            .unwrap_or_default();
        if self.insts.iter().any(|i| i.src == p.src) {
            return; // our own advert (another instance's socket)
        }
        let advert = match Advert::decode(&p.msg, p.src, p.dst, p.ttl) {
            Ok(a) => a,
            Err(r) => {
                // Counted on the instance when its VRID can be read.
                let vrid = p.msg.get(1).copied();
                match self.insts.iter_mut().find(|i| {
                    i.link.index == ifindex && i.cfg.is_ipv6() == v6 && Some(i.cfg.vrid) == vrid
                }) {
                    Some(i) => {
                        *i.rejects.entry(r.name()).or_default() += 1;
                        tracing::debug!(instance = %i.cfg.name, from = %p.src, "VRRP packet dropped: {}", r.name());
                    }
                    None => *self.unclaimed.entry((iface, r.name())).or_default() += 1,
                }
                return;
            }
        };
        let Some(idx) = self.insts.iter().position(|i| {
            i.link.index == ifindex && i.cfg.is_ipv6() == v6 && i.cfg.vrid == advert.vrid
        }) else {
            *self.unclaimed.entry((iface, "vrid")).or_default() += 1;
            return;
        };
        let skip_addr = self.cfg.globals.skip_check_adv_addr && !self.cfg.globals.strict;
        let now = self.now();
        let inst = &mut self.insts[idx];
        let reject = |inst: &mut Inst, why: &'static str| {
            *inst.rejects.entry(why).or_default() += 1;
            tracing::debug!(instance = %inst.cfg.name, from = %p.src, "VRRP packet dropped: {why}");
        };
        if advert.version != inst.cfg.version {
            return reject(inst, "version");
        }
        if !inst.cfg.unicast_peers.is_empty() && !inst.cfg.unicast_peers.contains(&p.src) {
            return reject(inst, "unknown-peer");
        }
        if advert.version == Version::V2 {
            let (ty, data) = match inst.cfg.auth {
                Some(a) => (AUTH_PASS, a),
                None => (AUTH_NONE, [0; 8]),
            };
            if advert.auth_type != ty || (ty == AUTH_PASS && advert.auth != data) {
                return reject(inst, "auth");
            }
            if advert.interval_cs != inst.cfg.advert_cs {
                return reject(inst, "interval");
            }
        }
        if !skip_addr && advert.priority != 0 {
            let mut want: Vec<IpAddr> = inst.cfg.vips.iter().map(|v| v.addr).collect();
            let mut got = advert.addrs.clone();
            want.sort();
            got.sort();
            if want != got {
                return reject(inst, "addresses");
            }
        }
        let before = inst.machine.counters.other_master_seen;
        let was_master = inst.machine.state == State::Master;
        let actions = inst
            .machine
            .on_advert(now, p.src, advert.priority, advert.interval_cs);
        if inst.machine.counters.other_master_seen > before && was_master {
            tracing::warn!(instance = %inst.cfg.name, other = %p.src, priority = advert.priority, own = inst.machine.priority,
                "SPLIT BRAIN: another master is advertising; resolved by priority, then address");
        }
        self.act(idx, actions, true).await;
    }

    async fn on_timers(&mut self) {
        let now = self.now();
        let at = Instant::now();
        for i in 0..self.insts.len() {
            if self.insts[i].machine.deadline().is_some_and(|d| d <= now) {
                let a = self.insts[i].machine.on_timer(now);
                self.act(i, a, true).await;
            }
            let due: Vec<Instant> = self.insts[i]
                .garp_at
                .iter()
                .copied()
                .filter(|t| *t <= at)
                .collect();
            if !due.is_empty() {
                self.insts[i].garp_at.retain(|t| *t > at);
                let n = self.insts[i].cfg.garp_master_repeat;
                self.garp_burst(i, n).await;
            }
            if self.insts[i].garp_refresh_at.is_some_and(|t| t <= at) {
                let n = self.insts[i].cfg.garp_master_refresh_repeat;
                self.insts[i].garp_refresh_at =
                    self.insts[i].cfg.garp_master_refresh.map(|r| at + r);
                self.garp_burst(i, n).await;
            }
        }
    }

    fn send_advert(&mut self, i: usize, priority: u8) {
        let inst = &mut self.insts[i];
        let (auth_type, auth) = match inst.cfg.auth {
            Some(a) => (AUTH_PASS, a),
            None => (AUTH_NONE, [0; 8]),
        };
        let advert = Advert {
            version: inst.cfg.version,
            vrid: inst.cfg.vrid,
            priority,
            interval_cs: inst.cfg.advert_cs,
            addrs: inst.cfg.vips.iter().map(|v| v.addr).collect(),
            auth_type,
            auth,
        };
        let dsts: Vec<IpAddr> = if inst.cfg.unicast_peers.is_empty() {
            vec![if inst.cfg.is_ipv6() {
                IpAddr::V6(net::GROUP_V6)
            } else {
                IpAddr::V4(net::GROUP_V4)
            }]
        } else {
            inst.cfg.unicast_peers.clone()
        };
        for d in dsts {
            let msg = advert.encode(inst.src, d);
            if let Err(e) = inst.tx.send_to(&msg, &net::dest(d, inst.link.index)) {
                *inst.rejects.entry("send-error").or_default() += 1;
                tracing::warn!(instance = %inst.cfg.name, to = %d, "sending the advertisement failed: {e}");
            }
        }
    }

    /// Sends `count` gratuitous ARPs / NAs for every VIP of instance `i`;
    /// spaced bursts run in their own task so adverts are not delayed.
    async fn garp_burst(&mut self, i: usize, count: u32) {
        let inst = &self.insts[i];
        let mut targets = Vec::new();
        for v in &inst.cfg.vips {
            match &v.dev {
                None => targets.push((inst.link.clone(), v.addr)),
                Some(d) => match net::link(d) {
                    Ok(l) => targets.push((l, v.addr)),
                    Err(e) => tracing::warn!(instance = %inst.cfg.name, vip = %v.addr, "{e}"),
                },
            }
        }
        let gap = if inst.cfg.is_ipv6() {
            self.cfg.globals.gna_interval
        } else {
            self.cfg.globals.garp_interval
        };
        let name = inst.cfg.name.clone();
        let burst = async move {
            for n in 0..count {
                for (link, addr) in &targets {
                    let r = match addr {
                        IpAddr::V4(a) => net::send_garp(link, *a),
                        IpAddr::V6(a) => net::send_na(link, *a),
                    };
                    if let Err(e) = r {
                        tracing::warn!(instance = %name, vip = %addr, "gratuitous ARP / NA failed: {e}");
                    }
                }
                if n + 1 < count && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
            }
        };
        if gap.is_zero() {
            burst.await;
        } else {
            tokio::spawn(burst);
        }
    }

    async fn set_vips(&mut self, i: usize, on: bool) {
        if self.insts[i].vips_held == on {
            return;
        }
        let inst = &self.insts[i];
        for v in inst.cfg.vips.iter().chain(&inst.cfg.excluded) {
            let idx = match self.vip_index(&inst.link, v) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(instance = %inst.cfg.name, vip = %v.addr, "{e:#}");
                    continue;
                }
            };
            let r = if on {
                addr::add(&self.nl, idx, v).await
            } else {
                addr::del(&self.nl, idx, v).await.map(|_| ())
            };
            if let Err(e) = r {
                tracing::error!(instance = %inst.cfg.name, "{e:#}");
            }
            if let Some(g) = &mut self.guard {
                g.held(idx, v, on);
            }
        }
        self.insts[i].vips_held = on;
    }

    /// Carries out a machine's actions; `follow`: move the sync group along.
    fn act<'a>(
        &'a mut self,
        i: usize,
        actions: Vec<Action>,
        follow: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            for a in actions {
                match a {
                    Action::Advertise { priority } => self.send_advert(i, priority),
                    Action::BecomeMaster => {
                        self.set_vips(i, true).await;
                        let n = self.insts[i].cfg.garp_master_repeat;
                        self.garp_burst(i, n).await;
                        let at = Instant::now();
                        let inst = &mut self.insts[i];
                        if !inst.cfg.garp_master_delay.is_zero() {
                            inst.garp_at = vec![at + inst.cfg.garp_master_delay];
                        }
                        inst.garp_refresh_at = inst.cfg.garp_master_refresh.map(|r| at + r);
                        self.changed(i, State::Master, follow).await;
                    }
                    Action::BecomeBackup => {
                        self.release(i);
                        self.set_vips(i, false).await;
                        self.changed(i, State::Backup, follow).await;
                    }
                    Action::BecomeFault => {
                        self.release(i);
                        self.set_vips(i, false).await;
                        self.changed(i, State::Fault, follow).await;
                    }
                }
            }
        })
    }

    fn release(&mut self, i: usize) {
        let inst = &mut self.insts[i];
        inst.garp_at.clear();
        inst.garp_refresh_at = None;
    }

    async fn changed(&mut self, i: usize, st: State, follow: bool) {
        let inst = &mut self.insts[i];
        inst.since = SystemTime::now();
        let prio = inst.machine.priority;
        match st {
            State::Master => {
                tracing::warn!(instance = %inst.cfg.name, priority = prio, "entering MASTER state")
            }
            _ => {
                tracing::warn!(instance = %inst.cfg.name, priority = prio, master = ?inst.machine.master, "entering {} state", name(st))
            }
        }
        let n = inst.cfg.notify.clone();
        let iname = inst.cfg.name.clone();
        self.notify(&n, "INSTANCE", &iname, st, prio);
        let Some(g) = self.insts[i].group else {
            return;
        };
        // keepalived's sync group: the members go MASTER / BACKUP together
        // (FAULT spreads through evaluate()).
        if follow && matches!(st, State::Master | State::Backup) {
            let now = self.now();
            for j in 0..self.insts.len() {
                if j != i && self.insts[j].group == Some(g) {
                    let a = self.insts[j].machine.follow_group(now, st == State::Master);
                    self.act(j, a, false).await;
                }
            }
        }
        self.group_check(g);
    }

    /// Notifies a sync group once all its members are in one new state.
    fn group_check(&mut self, g: usize) {
        let mut states = self
            .insts
            .iter()
            .filter(|o| o.group == Some(g))
            .map(|o| o.machine.state);
        let Some(first) = states.next() else {
            return;
        };
        if states.all(|s| s == first) && self.group_notified.get(&g) != Some(&first) {
            self.group_notified.insert(g, first);
            let gr = self.cfg.groups[g].clone();
            tracing::warn!(group = %gr.name, "sync group entering {} state", name(first));
            self.notify(&gr.notify, "GROUP", &gr.name, first, 0);
        }
    }

    /// Runs the notify programs and sends mail for a state change.
    fn notify(&self, n: &Notify, kind: &str, who: &str, st: State, prio: u8) {
        let user = self.cfg.globals.script_user;
        for (what, argv) in notify_programs(n, kind, who, st, prio) {
            crate::health::run_script_as(argv, what, user);
        }
        let sname = if st == State::Init { "STOP" } else { name(st) };
        let g = &self.cfg.globals;
        if g.smtp_server.is_some()
            && !g.notification_email.is_empty()
            && n.smtp_alert != Some(false)
        {
            let subject = format!(
                "[{}] VRRP {} {who} - Entering {sname} state",
                g.router_id.clone().unwrap_or_else(hostname),
                if kind == "GROUP" { "Group" } else { "Instance" },
            );
            let g = Arc::new(g.clone());
            tokio::spawn(async move {
                if let Err(e) = super::smtp::send(&g, &subject, &format!("=> {subject} <=")).await {
                    tracing::warn!("mail notification failed: {e:#}");
                }
            });
        }
    }

    /// After our priority-0 goodbye a backup takes over within its skew
    /// time (under one advert interval), then sends gratuitous ARP: the
    /// longest interval of the instances this node is master of, plus a
    /// margin for the clients' caches to follow.
    fn takeover_time(&self) -> Duration {
        self.insts
            .iter()
            .filter(|i| i.machine.state == State::Master)
            .map(|i| {
                Duration::from_millis(i.cfg.advert_cs as u64 * 10) + Duration::from_millis(200)
            })
            .max()
            .unwrap_or_default()
    }

    async fn stop_all(&mut self) {
        for i in 0..self.insts.len() {
            self.stop_index(i).await;
        }
        for g in 0..self.cfg.groups.len() {
            self.group_check(g); // every member is INIT (stopped) now: STOP
        }
        if let Some(g) = self.guard.take() {
            g.finish();
        }
    }

    async fn stop_index(&mut self, i: usize) {
        let a = self.insts[i].machine.shutdown();
        for x in a {
            if let Action::Advertise { priority } = x {
                self.send_advert(i, priority);
            }
        }
        self.release(i);
        self.set_vips(i, false).await;
        let inst = &self.insts[i];
        tracing::info!(instance = %inst.cfg.name, "VRRP instance stopped");
        let (n, iname, prio) = (
            inst.cfg.notify.clone(),
            inst.cfg.name.clone(),
            inst.machine.priority,
        );
        self.notify(&n, "INSTANCE", &iname, State::Init, prio);
    }

    fn render(&self) -> String {
        let mut s = String::new();
        if self.insts.is_empty() {
            return "no VRRP instances configured\n".into();
        }
        let _ = writeln!(
            s,
            "{:<12} {:<7} {:>4} {:<8} {:>9} {:<6} {:<26} {:>7} {:>9} {:>9}",
            "Instance",
            "State",
            "VRID",
            "Iface",
            "Prio(cfg)",
            "Vers",
            "Master",
            "Advert",
            "Sent",
            "Received"
        );
        for i in &self.insts {
            let m = &i.machine;
            let master = match (m.state, m.master) {
                (State::Master, _) => format!("{} (this node)", i.src),
                (_, Some(a)) => a.to_string(),
                (_, None) => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<12} {:<7} {:>4} {:<8} {:>9} {:<6} {:<26} {:>6.2}s {:>9} {:>9}",
                i.cfg.name,
                name(m.state),
                i.cfg.vrid,
                i.cfg.iface,
                format!("{}({})", m.priority, i.cfg.priority),
                match i.cfg.version {
                    Version::V2 => "v2",
                    Version::V3 => "v3",
                },
                master,
                m.master_adver_cs as f64 / 100.0,
                m.counters.adverts_sent,
                m.counters.adverts_received,
            );
            let vips: Vec<String> = i
                .cfg
                .vips
                .iter()
                .map(|v| format!("{}/{}", v.addr, v.prefix))
                .collect();
            let _ = writeln!(
                s,
                "  vips {} {}; became master {}; priority 0 sent {} received {}; other master seen {}",
                vips.join(" "),
                if i.vips_held { "(held)" } else { "(not held)" },
                m.counters.became_master,
                m.counters.priority_zero_sent,
                m.counters.priority_zero_received,
                m.counters.other_master_seen,
            );
            if !i.rejects.is_empty() {
                let r: Vec<String> = i.rejects.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(s, "  dropped: {}", r.join(", "));
            }
            if !i.faults.is_empty() {
                let _ = writeln!(s, "  fault: {}", i.faults.join("; "));
            }
            let since = i.since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
            let _ = writeln!(s, "  in this state for {since}s");
        }
        for g in &self.cfg.groups {
            let _ = writeln!(s, "sync group {}: {}", g.name, g.members.join(" "));
        }
        for sc in self.scripts.values() {
            let _ = writeln!(
                s,
                "script {}: {} (last run {}; weight {})",
                sc.cfg.name,
                if sc.up { "good" } else { "bad" },
                match sc.last {
                    None => "pending",
                    Some(true) => "ok",
                    Some(false) => "failed",
                },
                sc.cfg.weight
            );
        }
        if !self.unclaimed.is_empty() {
            let r: Vec<String> = self
                .unclaimed
                .iter()
                .map(|((ifc, k), v)| format!("{ifc} {k} {v}"))
                .collect();
            let _ = writeln!(s, "dropped, no instance: {}", r.join(", "));
        }
        s
    }
}

/// The programs a state change runs, as keepalived: the state's own
/// (`notify_master` …, `notify_stop` on shutdown) as configured, and
/// `notify` with TYPE NAME STATE PRIORITY appended.
pub fn notify_programs(
    n: &Notify,
    kind: &str,
    who: &str,
    st: State,
    prio: u8,
) -> Vec<(String, Vec<String>)> {
    let specific = match st {
        State::Master => &n.master,
        State::Backup => &n.backup,
        State::Fault => &n.fault,
        State::Init => &n.stop,
    };
    let sname = if st == State::Init { "STOP" } else { name(st) };
    let mut out = Vec::new();
    if let Some(argv) = specific {
        out.push((
            format!("notify_{} {who}", sname.to_lowercase()),
            argv.clone(),
        ));
    }
    if let Some(argv) = &n.any {
        let mut a = argv.clone();
        a.extend([
            kind.to_string(),
            who.to_string(),
            sname.to_string(),
            prio.to_string(),
        ]);
        out.push((format!("notify {who}"), a));
    }
    out
}

/// Same instance on the wire: name, interface, VRID, version, interval,
/// authentication, addresses and peers.
fn same_identity(a: &Instance, b: &Instance) -> bool {
    a.name == b.name
        && a.iface == b.iface
        && a.vrid == b.vrid
        && a.version == b.version
        && a.advert_cs == b.advert_cs
        && a.auth == b.auth
        && a.vips == b.vips
        && a.excluded == b.excluded
        && a.unicast_src == b.unicast_src
        && a.unicast_peers == b.unicast_peers
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "lb".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_programs_get_keepalived_arguments() {
        let n = Notify {
            master: Some(vec!["/bin/to-master".into(), "x".into()]),
            stop: Some(vec!["/bin/stopped".into()]),
            any: Some(vec!["/bin/notify".into()]),
            ..Default::default()
        };
        let p = notify_programs(&n, "INSTANCE", "VI_1", State::Master, 150);
        assert_eq!(p[0].1, ["/bin/to-master", "x"]);
        assert_eq!(p[1].1, ["/bin/notify", "INSTANCE", "VI_1", "MASTER", "150"]);
        let p = notify_programs(&n, "GROUP", "G1", State::Init, 0);
        assert_eq!(p[0].1, ["/bin/stopped"]);
        assert_eq!(p[1].1, ["/bin/notify", "GROUP", "G1", "STOP", "0"]);
        // No notify_backup: only the generic one.
        let p = notify_programs(&n, "INSTANCE", "VI_1", State::Backup, 100);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].1[3], "BACKUP");
    }
}
