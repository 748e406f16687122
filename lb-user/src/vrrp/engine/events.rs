//! The engine's task: the loop over its inputs and what each one does to
//! the instances (tracking, received adverts, timers, state changes and sync
//! groups).

use std::time::SystemTime;

use tokio::time::Instant;

use super::{Command, Engine, Inbox, LINK_POLL};
use crate::vrrp::{
    machine::{Action, State},
    net::{self, Received},
    packet::Advert,
    validate,
};

/// Runs until the agent stops the engine or drops its handle.
pub(super) async fn run(mut e: Engine, mut inbox: Inbox) {
    let mut poll = tokio::time::interval(LINK_POLL);
    loop {
        let deadline = e.next_deadline();
        // Tracking (scripts, links) is re-evaluated when it may have
        // changed, not on every packet.
        let track = tokio::select! {
            Some((ifindex, v6, pkt)) = inbox.packets.recv() => { e.on_packet(ifindex, v6, pkt).await; false }
            Some((script, ok)) = inbox.scripts.recv() => { e.on_script(&script, ok); true }
            Some(t) = inbox.tracked.recv() => { e.on_tracked(t); true }
            _ = tokio::time::sleep_until(deadline) => { e.on_timers().await; false }
            _ = poll.tick() => true,
            cmd = inbox.commands.recv() => match cmd {
                Some(Command::Info(r)) => { let _ = r.send(e.info()); false }
                Some(Command::Reload(cfg, r)) => {
                    if let Err(err) = e.apply(*cfg).await {
                        tracing::error!("VRRP reload: {}", crate::util::Chain(&err));
                    }
                    e.evaluate().await;
                    let _ = r.send(());
                    false
                }
                Some(Command::Hold(h)) => { e.set_hold(h).await; false }
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
}

impl Engine {
    pub(super) fn on_script(&mut self, name: &str, ok: bool) {
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
    pub(super) fn tracked(&self, i: usize) -> (Vec<String>, u8) {
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
        let group = inst.group.map(|g| &self.cfg.groups[g]);
        let (more, add) = self.tracked_objects(
            inst.cfg
                .track_files
                .iter()
                .chain(group.iter().flat_map(|g| &g.track_files)),
            inst.cfg
                .track_processes
                .iter()
                .chain(group.iter().flat_map(|g| &g.track_processes)),
        );
        faults.extend(more);
        prio += add;
        // The address owner's priority does not move (keepalived).
        let prio = if base == 255 { 255 } else { prio.clamp(1, 254) };
        (faults, prio as u8)
    }

    /// Re-evaluates tracking for every instance and acts on changes.
    pub(super) async fn evaluate(&mut self) {
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

    pub(super) async fn on_packet(&mut self, ifindex: u32, v6: bool, p: Received) {
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
        if let Err(why) = validate::check(&advert, &inst.cfg, p.src, !skip_addr) {
            *inst.rejects.entry(why.name()).or_default() += 1;
            tracing::debug!(instance = %inst.cfg.name, from = %p.src, "VRRP packet dropped: {}", why.name());
            return;
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

    /// [`super::Handle::hold`].
    pub(super) async fn set_hold(&mut self, hold: bool) {
        self.held = hold;
        let now = self.now();
        for i in 0..self.insts.len() {
            if hold {
                self.insts[i].machine.held = true;
            } else if self.insts[i].machine.held {
                let a = self.insts[i].machine.release(now);
                self.act(i, a, true).await;
            }
        }
        tracing::info!(
            held = hold,
            "VRRP instances {}",
            if hold {
                "held in BACKUP until the connection table is copied"
            } else {
                "released"
            }
        );
    }

    pub(super) async fn on_timers(&mut self) {
        let now = self.now();
        let at = Instant::now();
        for i in 0..self.insts.len() {
            if self.insts[i].machine.deadline().is_some_and(|d| d <= now) {
                let a = self.insts[i].machine.on_timer(now);
                self.act(i, a, true).await;
            }
            let due: Vec<u32> = self.insts[i]
                .garp_at
                .iter()
                .filter(|(t, _)| *t <= at)
                .map(|(_, n)| *n)
                .collect();
            if !due.is_empty() {
                self.insts[i].garp_at.retain(|(t, _)| *t > at);
                let n = due.into_iter().max().unwrap_or(0);
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

    /// Carries out a machine's actions; `follow`: move the sync group along.
    pub(super) fn act<'a>(
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
                            inst.garp_at = vec![(
                                at + inst.cfg.garp_master_delay,
                                inst.cfg.garp_master_repeat,
                            )];
                        }
                        inst.garp_refresh_at = inst.cfg.garp_master_refresh.map(|r| at + r);
                        self.changed(i, State::Master, follow).await;
                    }
                    Action::Reannounce => {
                        let n = self.insts[i].cfg.garp_lower_prio_repeat;
                        if n > 0 {
                            tracing::info!(instance = %self.insts[i].cfg.name, count = n,
                                "lower priority master heard: announcing the addresses again");
                            self.garp_burst(i, n).await;
                            let inst = &mut self.insts[i];
                            let delay = inst.cfg.garp_lower_prio_delay;
                            if !delay.is_zero() {
                                inst.garp_at.push((Instant::now() + delay, n));
                            }
                        }
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

    pub(super) fn release(&mut self, i: usize) {
        let inst = &mut self.insts[i];
        inst.garp_at.clear();
        inst.garp_refresh_at = None;
    }

    pub(super) async fn changed(&mut self, i: usize, st: State, follow: bool) {
        let inst = &mut self.insts[i];
        inst.since = SystemTime::now();
        if inst.last_state != st {
            inst.transitions += 1;
            if inst.last_state == State::Master {
                inst.released_master += 1;
            }
            inst.last_state = st;
        }
        let prio = inst.machine.priority;
        match st {
            State::Master => {
                tracing::warn!(instance = %inst.cfg.name, priority = prio, "entering MASTER state")
            }
            _ => {
                tracing::warn!(instance = %inst.cfg.name, priority = prio, master = ?inst.machine.master, "entering {} state", st.name())
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
    pub(super) fn group_check(&mut self, g: usize) {
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
            tracing::warn!(group = %gr.name, "sync group entering {} state", first.name());
            self.notify(&gr.notify, "GROUP", &gr.name, first, 0);
        }
    }
}
