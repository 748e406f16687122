//! The running instances against the configuration: on start and reload,
//! unchanged instances keep their state, the others stop and start anew;
//! tracked scripts, receiving sockets and the virtual addresses follow.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use tokio::io::unix::AsyncFd;

use super::{Engine, Error, Inst, ScriptState, Task};
use crate::{
    config::{
        route::{RouteKind, VirtualRoute, VirtualRule},
        vrrp::{Initial, Instance, Script, Version, Vip, Vrrp},
    },
    util::{process, Chain},
    vrrp::{
        addr, guard,
        machine::{Action, Machine, Settings, State},
        net::{self, Link},
        route, vmac,
    },
};

impl Engine {
    /// Replaces the configuration: instances whose settings are unchanged
    /// keep running; the others stop (as on shutdown) and start anew.
    pub(super) async fn apply(&mut self, cfg: Vrrp) -> Result<(), Error> {
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
        self.apply_trackers(&cfg, !self.applied).await;
        self.applied = true;
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
                st.lower_prio_no_advert = c.lower_prio_no_advert;
                st.higher_prio_send_advert = c.higher_prio_send_advert;
            }
        }
        self.cfg = cfg.clone();
        if !cfg.instances.is_empty() && self.guard.is_none() {
            match guard::Guard::spawn() {
                Ok(g) => self.guard = Some(g),
                Err(e) => {
                    tracing::warn!(
                        "no VIP guard (addresses stay if the agent is killed): {}",
                        Chain(&e)
                    )
                }
            }
        }
        for c in &cfg.instances {
            if kept.iter().any(|k| k.cfg.name == c.name) {
                continue;
            }
            match self.new_inst(c).await {
                Ok(i) => kept.push(i),
                Err(e) => {
                    tracing::error!(instance = %c.name, "VRRP instance not started: {}", Chain(&e))
                }
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
            let task = self.receive(&link, v6)?;
            self.receivers.insert((index, v6), task);
        }
        Ok(())
    }

    /// Starts reading `link`'s VRRP packets of one family into the engine.
    fn receive(&self, link: &Link, v6: bool) -> Result<Task, Error> {
        let index = link.index;
        let s = net::rx_socket(link, v6, true).map_err(|source| Error::Socket {
            iface: link.name.clone(),
            source,
        })?;
        // SAFETY: the socket owns its descriptor, which stays open for
        // as long as the AsyncFd owns the socket.
        let fd = unsafe { AsyncFd::register(s) }.map_err(|e| Error::Register(e.into_parts().1))?;
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
        Ok(Task(task))
    }

    pub(super) fn start_script(&self, s: Script) -> ScriptState {
        let tx = self.script_tx.clone();
        let cfg = s.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(cfg.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let out = process::run_bounded(&cfg.program, cfg.timeout).await;
                let ok = matches!(out, Ok(st) if st.code() == Some(0));
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
            _task: Task(task),
        }
    }

    pub(super) async fn new_inst(&mut self, c: &Instance) -> Result<Inst, Error> {
        let link = net::link(&c.iface).map_err(Error::Link)?;
        let src = match (c.unicast_src, c.is_ipv6()) {
            (Some(s), _) => s,
            (None, false) => IpAddr::V4(link.v4.ok_or_else(|| Error::NoIpv4 {
                iface: c.iface.clone(),
            })?),
            (None, true) => IpAddr::V6(link.v6_ll.ok_or_else(|| Error::NoLinkLocal {
                iface: c.iface.clone(),
            })?),
        };
        let tx = net::tx_socket(&link, src).map_err(|source| Error::TxSocket {
            iface: c.iface.clone(),
            src,
            source,
        })?;
        let vmac = match &c.vmac {
            Some(v) => Some(vmac::create(&self.nl, &link, v).await.map_err(Box::new)?),
            None => None,
        };
        let vip_link = vmac.as_ref().map_or(&link, |(l, _)| l);
        // A previous run killed without cleanup may have left the addresses.
        for v in c.vips.iter().chain(&c.excluded) {
            let idx = self.vip_index(vip_link, v)?;
            if addr::del(&self.nl, idx, v).await.unwrap_or(false) {
                tracing::warn!(instance = %c.name, vip = %v.addr, "removed a virtual address left from an earlier run");
            }
        }
        let mut machine = Machine::new(Settings {
            priority: c.priority,
            advert_cs: c.advert_cs,
            adopt_interval: c.version == Version::V3,
            preempt: c.preempt,
            preempt_delay: c.preempt_delay,
            addr: src,
            initial_master: c.initial == Initial::Master,
            lower_prio_no_advert: c.lower_prio_no_advert,
            higher_prio_send_advert: c.higher_prio_send_advert,
        });
        machine.held = self.held;
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
            vmac,
            last_state: State::Init,
            transitions: 0,
            released_master: 0,
        })
    }

    pub(super) fn vip_index(&self, link: &Link, v: &Vip) -> Result<u32, Error> {
        match &v.dev {
            None => Ok(link.index),
            Some(d) => Ok(net::link(d).map_err(Error::Link)?.index),
        }
    }

    pub(super) async fn set_vips(&mut self, i: usize, on: bool) {
        if self.insts[i].vips_held == on {
            return;
        }
        if !on {
            // Routes may use the addresses (src): they go first.
            self.set_routes(i, false).await;
        }
        let inst = &self.insts[i];
        for v in inst.cfg.vips.iter().chain(&inst.cfg.excluded) {
            let idx = match self.vip_index(inst.vip_link(), v) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(instance = %inst.cfg.name, vip = %v.addr, "{}", Chain(&e));
                    continue;
                }
            };
            let r = if on {
                addr::add(&self.nl, idx, v).await
            } else {
                addr::del(&self.nl, idx, v).await.map(|_| ())
            };
            if let Err(e) = r {
                tracing::error!(instance = %inst.cfg.name, "{}", Chain(&e));
            }
            if let Some(g) = &mut self.guard {
                g.held(idx, v, on);
            }
        }
        self.insts[i].vips_held = on;
        if on {
            self.set_routes(i, true).await;
        }
    }

    /// Adds or removes the instance's `virtual_routes` and `virtual_rules`. A unicast route
    /// with neither `dev` nor `via` goes through the instance's interface.
    async fn set_routes(&mut self, i: usize, on: bool) {
        let inst = &self.insts[i];
        for r in &inst.cfg.virtual_routes {
            let oif = match &r.dev {
                Some(d) => match net::link(d) {
                    Ok(l) => Some(l.index),
                    Err(e) => {
                        tracing::error!(instance = %inst.cfg.name, route = %r.loc, "{}", Chain(&e));
                        continue;
                    }
                },
                None if r.kind == RouteKind::Unicast && r.via.is_none() => Some(inst.link.index),
                None => None,
            };
            let res = if on {
                route::add(&self.nl, r, oif).await
            } else {
                route::del(&self.nl, r, oif).await
            };
            if let Err(e) = res {
                tracing::error!(instance = %inst.cfg.name, "{}", Chain(&e));
            }
        }
        for r in &inst.cfg.virtual_rules {
            let res = if on {
                route::add_rule(&self.nl, r).await
            } else {
                route::del_rule(&self.nl, r).await
            };
            if let Err(e) = res {
                tracing::error!(instance = %inst.cfg.name, "{}", Chain(&e));
            }
        }
    }

    /// After our priority-0 goodbye a backup takes over within its skew
    /// time (under one advert interval), then sends gratuitous ARP: the
    /// longest interval of the instances this node is master of, plus a
    /// margin for the clients' caches to follow.
    pub(super) fn takeover_time(&self) -> Duration {
        self.insts
            .iter()
            .filter(|i| i.machine.state == State::Master)
            .map(|i| {
                Duration::from_millis(i.cfg.advert_cs as u64 * 10) + Duration::from_millis(200)
            })
            .max()
            .unwrap_or_default()
    }

    pub(super) async fn stop_all(&mut self) {
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

    pub(super) async fn stop_index(&mut self, i: usize) {
        let a = self.insts[i].machine.shutdown();
        for x in a {
            if let Action::Advertise { priority } = x {
                self.send_advert(i, priority);
            }
        }
        self.release(i);
        self.set_vips(i, false).await;
        if let Some((link, saved)) = self.insts[i].vmac.take() {
            if let Err(e) = vmac::remove(&self.nl, &link, &saved).await {
                tracing::error!(instance = %self.insts[i].cfg.name, "{}", Chain(&e));
            }
        }
        let inst = &self.insts[i];
        tracing::info!(instance = %inst.cfg.name, "VRRP instance stopped");
        let (n, iname, prio) = (
            inst.cfg.notify.clone(),
            inst.cfg.name.clone(),
            inst.machine.priority,
        );
        self.notify(&n, "INSTANCE", &iname, State::Init, prio);
    }
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
        && a.vmac == b.vmac
        && same_routes(&a.virtual_routes, &b.virtual_routes)
        && a.virtual_rules.len() == b.virtual_rules.len()
        && a.virtual_rules.iter().zip(&b.virtual_rules).all(|(x, y)| {
            VirtualRule {
                loc: y.loc.clone(),
                ..x.clone()
            } == *y
        })
}

/// The same routes, wherever their lines are in the file.
fn same_routes(a: &[VirtualRoute], b: &[VirtualRoute]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            VirtualRoute {
                loc: y.loc.clone(),
                ..x.clone()
            } == *y
        })
}
