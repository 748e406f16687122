//! The VRRP state machine of one instance (RFC 5798 §6.4, with keepalived's
//! nopreempt and preempt_delay). Pure: time comes in as an argument and the
//! machine answers with actions and its next deadline, so it is replayed in
//! tests with a controllable clock.

use std::{net::IpAddr, time::Duration};

/// Instance states, as keepalived names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Init,
    Backup,
    Master,
    Fault,
}

impl State {
    /// As keepalived names it in logs, notifications and listings.
    pub fn name(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// What the machine asks its owner to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority (0: "I am leaving").
    Advertise { priority: u8 },
    /// Take the virtual addresses (and send gratuitous ARP / NA).
    BecomeMaster,
    /// Release the virtual addresses.
    BecomeBackup,
    /// Release the virtual addresses; stay silent until the fault clears.
    BecomeFault,
    /// Another master with a lower priority was heard while master (a healed
    /// split brain): send gratuitous ARPs / NAs again so the clients that
    /// learned the other master's MAC last come back (keepalived's
    /// `garp_lower_prio_repeat`, with a second set `garp_lower_prio_delay`
    /// later).
    Reannounce,
}

/// Settings of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Configured priority (1–255; 255 = address owner).
    pub priority: u8,
    /// Own advertisement interval, centiseconds.
    pub advert_cs: u16,
    /// v3 backups adopt the master's interval; v2 requires equal intervals.
    pub adopt_interval: bool,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Own primary address (ties between equal priorities: higher wins).
    pub addr: IpAddr,
    /// `state MASTER`: take over at once on start (keepalived), stepping
    /// down as soon as a higher master is heard.
    pub initial_master: bool,
    /// Do not answer a lower priority advert with an advert (RFC 5798
    /// 6.4.3: discard it); keepalived answers unless `lower_prio_no_advert`.
    pub lower_prio_no_advert: bool,
    /// Send one advert of our own before yielding to a higher priority
    /// master (keepalived's `higher_prio_send_advert`).
    pub higher_prio_send_advert: bool,
}

/// Counters of an instance (adverts rejected before the machine are counted
/// by the receiver).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub became_master: u64,
    pub priority_zero_received: u64,
    pub priority_zero_sent: u64,
    /// Adverts from another master while master (split brain), resolved by
    /// the RFC rule.
    pub other_master_seen: u64,
}

pub struct Machine {
    pub settings: Settings,
    pub state: State,
    /// Priority in effect (configured, adjusted by tracking).
    pub priority: u8,
    /// The master's interval (own when master), centiseconds.
    pub master_adver_cs: u16,
    /// Address of the current master when known.
    pub master: Option<IpAddr>,
    deadline: Option<Duration>,
    /// preempt_delay running since this time (a lower master was seen).
    preempt_from: Option<Duration>,
    pub counters: Counters,
    /// Held in BACKUP: connection sync's bulk copy from the peer is not in
    /// yet (`crate::sync`). Where the machine would take over (its
    /// Master_Down_Timer, `state MASTER`, the address owner, its sync
    /// group) it stays BACKUP and remembers it; [`Machine::release`] then
    /// takes over.
    pub held: bool,
    /// It would have become master while held.
    pending_master: bool,
}

fn cs(c: u64) -> Duration {
    Duration::from_millis(c * 10)
}

impl Machine {
    pub fn new(settings: Settings) -> Self {
        Machine {
            priority: settings.priority,
            master_adver_cs: settings.advert_cs,
            settings,
            state: State::Init,
            master: None,
            deadline: None,
            preempt_from: None,
            counters: Counters::default(),
            held: false,
            pending_master: false,
        }
    }

    /// When the machine next wants [`Machine::on_timer`].
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Skew_Time: (256 - Priority) × Master_Adver_Interval / 256, in
    /// microseconds as keepalived computes it.
    pub fn skew(&self) -> Duration {
        let interval_us = self.master_adver_cs as u64 * 10_000;
        Duration::from_micros((256 - self.priority as u64) * interval_us / 256)
    }

    /// Master_Down_Interval: 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        cs(3 * self.master_adver_cs as u64) + self.skew()
    }

    fn enter_master(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.state = State::Master;
        self.master = Some(self.settings.addr);
        self.master_adver_cs = self.settings.advert_cs;
        self.preempt_from = None;
        self.counters.became_master += 1;
        self.advertise(now, out);
        out.push(Action::BecomeMaster);
    }

    /// Takes over unless held (then waits in BACKUP, see [`Machine::held`]).
    fn take_over(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.held {
            self.pending_master = true;
            self.enter_backup(now, out);
        } else {
            self.enter_master(now, out);
        }
    }

    /// The hold ends. The address owner and a `state MASTER` instance that
    /// would have taken over meanwhile do so now; any other backup that
    /// would have listens one more Master_Down_Interval first: its peer,
    /// starting too, may have just been released with a higher priority
    /// (then its advert arrives first and nobody flaps).
    ///
    /// Every other backup restarts its Master_Down_Timer at the release:
    /// two directors started together are released within milliseconds of
    /// each other (each answers the other's request), and the timers then
    /// race from the same moment, which the higher priority (shorter skew)
    /// wins, whatever each director's own start took.
    pub fn release(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        self.held = false;
        let pending = std::mem::take(&mut self.pending_master);
        if self.state == State::Backup {
            if pending && (self.priority == 255 || self.settings.initial_master) {
                self.enter_master(now, &mut out);
            } else {
                self.deadline = Some(now + self.master_down_interval());
            }
        }
        out
    }

    fn enter_backup(&mut self, now: Duration, out: &mut Vec<Action>) {
        let was = self.state;
        self.state = State::Backup;
        self.deadline = Some(now + self.master_down_interval());
        if was != State::Backup {
            out.push(Action::BecomeBackup);
        }
    }

    fn advertise(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.counters.adverts_sent += 1;
        out.push(Action::Advertise {
            priority: self.priority,
        });
        self.deadline = Some(now + cs(self.settings.advert_cs as u64));
    }

    /// Startup: the address owner becomes master at once, others backup.
    pub fn start(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        self.master_adver_cs = self.settings.advert_cs;
        if self.priority == 255 || self.settings.initial_master {
            self.take_over(now, &mut out);
        } else {
            self.enter_backup(now, &mut out);
        }
        out
    }

    /// The deadline passed: advertise (master) or take over (backup).
    pub fn on_timer(&mut self, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Master => self.advertise(now, &mut out),
            State::Backup => self.take_over(now, &mut out),
            State::Init | State::Fault => self.deadline = None,
        }
        out
    }

    /// A valid advertisement for this instance from `src`.
    pub fn on_advert(
        &mut self,
        now: Duration,
        src: IpAddr,
        priority: u8,
        interval_cs: u16,
    ) -> Vec<Action> {
        self.counters.adverts_received += 1;
        let mut out = Vec::new();
        if priority == 0 {
            self.counters.priority_zero_received += 1;
        }
        match self.state {
            State::Backup => {
                if priority == 0 {
                    // The master is leaving: take over after Skew_Time.
                    self.deadline = Some(now + self.skew());
                    return out;
                }
                let lower = priority < self.priority;
                let hold = !self.settings.preempt || !lower || {
                    // preempt_delay: a lower master keeps its role this long.
                    let from = *self.preempt_from.get_or_insert(now);
                    now < from + self.settings.preempt_delay
                };
                if hold {
                    if !lower {
                        self.preempt_from = None;
                    }
                    // A master it yields to is heard: nothing to take over.
                    self.pending_master = false;
                    if self.settings.adopt_interval {
                        self.master_adver_cs = interval_cs.max(1);
                    }
                    self.master = Some(src);
                    self.deadline = Some(now + self.master_down_interval());
                }
                // Else: discarded; the Master_Down_Timer takes over.
            }
            State::Master => {
                if priority == 0 {
                    self.advertise(now, &mut out);
                    return out;
                }
                self.counters.other_master_seen += 1;
                let wins = priority > self.priority
                    || (priority == self.priority && src > self.settings.addr);
                if wins {
                    if self.settings.higher_prio_send_advert {
                        // The winner hears a lower priority advert and
                        // re-announces the addresses after ours.
                        self.counters.adverts_sent += 1;
                        out.push(Action::Advertise {
                            priority: self.priority,
                        });
                    }
                    if self.settings.adopt_interval {
                        self.master_adver_cs = interval_cs.max(1);
                    }
                    self.master = Some(src);
                    self.enter_backup(now, &mut out);
                } else {
                    // The other master steps down on our advert; the clients
                    // may have learned its MAC last: announce again.
                    if !self.settings.lower_prio_no_advert {
                        self.advertise(now, &mut out);
                    }
                    out.push(Action::Reannounce);
                }
            }
            State::Init | State::Fault => {}
        }
        out
    }

    /// Tracking changed the priority in effect.
    pub fn set_priority(&mut self, now: Duration, priority: u8) -> Vec<Action> {
        self.priority = priority.max(1);
        let mut out = Vec::new();
        if self.state == State::Master {
            // Let a higher backup see the new priority at once.
            self.advertise(now, &mut out);
        }
        out
    }

    /// A tracked interface or script failed (`true`) or recovered.
    pub fn set_fault(&mut self, now: Duration, fault: bool) -> Vec<Action> {
        let mut out = Vec::new();
        match (fault, self.state) {
            (true, State::Fault) | (false, State::Backup | State::Master) => {}
            (true, st) => {
                if st == State::Master {
                    self.counters.priority_zero_sent += 1;
                    out.push(Action::Advertise { priority: 0 });
                }
                self.state = State::Fault;
                self.deadline = None;
                out.push(Action::BecomeFault);
            }
            (false, _) => {
                let mut o = self.start(now);
                out.append(&mut o);
            }
        }
        out
    }

    /// A sync group moves this member with the others (keepalived's
    /// vrrp_sync_group): to MASTER, or to BACKUP waiting for the master.
    pub fn follow_group(&mut self, now: Duration, master: bool) -> Vec<Action> {
        let mut out = Vec::new();
        match (master, self.state) {
            (true, State::Backup) => self.take_over(now, &mut out),
            (false, State::Master) => {
                self.master = None;
                self.enter_backup(now, &mut out);
            }
            _ => {}
        }
        out
    }

    /// Clean shutdown: a master says priority 0 so backups take over after
    /// Skew_Time instead of Master_Down_Interval.
    pub fn shutdown(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state == State::Master {
            self.counters.priority_zero_sent += 1;
            out.push(Action::Advertise { priority: 0 });
            out.push(Action::BecomeBackup);
        }
        self.state = State::Init;
        self.deadline = None;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn settings(priority: u8, addr: &str) -> Settings {
        Settings {
            priority,
            advert_cs: 100,
            adopt_interval: true,
            preempt: true,
            preempt_delay: Duration::ZERO,
            addr: addr.parse().unwrap(),
            initial_master: false,
            lower_prio_no_advert: false,
            higher_prio_send_advert: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn timers_follow_the_rfc() {
        let m = Machine::new(settings(100, "10.0.0.2"));
        // Skew = (256 - 100) × 1 s / 256 = 0.609375 s; down = 3 s + skew.
        assert_eq!(m.skew(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
        let m = Machine::new(Settings {
            advert_cs: 10,
            ..settings(200, "10.0.0.2")
        });
        assert_eq!(
            m.master_down_interval(),
            Duration::from_micros(300_000 + 21_875)
        );
    }

    #[test]
    fn backup_takes_over_when_adverts_stop_and_yields_to_a_higher_master() {
        let mut m = Machine::new(settings(100, "10.0.0.2"));
        let down = Duration::from_micros(3_609_375);
        assert_eq!(m.start(ms(0)), [Action::BecomeBackup]);
        assert_eq!(m.deadline(), Some(down));
        // Adverts of a higher master keep resetting the timer.
        assert!(m.on_advert(ms(1000), ip("10.0.0.3"), 150, 100).is_empty());
        assert_eq!(m.deadline(), Some(ms(1000) + down));
        // They stop: at the deadline the backup advertises and takes the VIPs.
        assert_eq!(
            m.on_timer(ms(4600)),
            [Action::Advertise { priority: 100 }, Action::BecomeMaster]
        );
        assert_eq!((m.state, m.deadline()), (State::Master, Some(ms(5600))));
        assert_eq!(m.on_timer(ms(5600)), [Action::Advertise { priority: 100 }]);
        // The higher master returns: preemption.
        assert_eq!(
            m.on_advert(ms(6000), ip("10.0.0.3"), 150, 100),
            [Action::BecomeBackup]
        );
        assert_eq!(m.state, State::Backup);
        assert_eq!(m.master, Some(ip("10.0.0.3")));
    }

    #[test]
    fn priority_zero_means_take_over_after_skew() {
        let mut m = Machine::new(settings(100, "10.0.0.2"));
        m.start(ms(0));
        m.on_advert(ms(500), ip("10.0.0.3"), 150, 100);
        assert!(m.on_advert(ms(800), ip("10.0.0.3"), 0, 100).is_empty());
        assert_eq!(m.deadline(), Some(ms(800) + Duration::from_micros(609_375)));
        assert_eq!(m.on_timer(ms(1400))[1], Action::BecomeMaster);
        // A master that hears priority 0 answers at once.
        assert_eq!(
            m.on_advert(ms(1500), ip("10.0.0.9"), 0, 100),
            [Action::Advertise { priority: 100 }]
        );
        // Shutting down as master says priority 0.
        assert_eq!(
            m.shutdown(),
            [Action::Advertise { priority: 0 }, Action::BecomeBackup]
        );
    }

    #[test]
    fn preempt_nopreempt_and_preempt_delay() {
        // preempt: a higher backup ignores a lower master's adverts and takes over.
        let mut m = Machine::new(settings(200, "10.0.0.2"));
        m.start(ms(0));
        let down = Duration::from_micros(3_000_000 + 218_750);
        m.on_advert(ms(100), ip("10.0.0.3"), 100, 100);
        assert_eq!(
            m.deadline(),
            Some(down),
            "timer not reset by a lower master"
        );
        // nopreempt: it stays backup while the lower master advertises.
        let mut m = Machine::new(Settings {
            preempt: false,
            ..settings(200, "10.0.0.2")
        });
        m.start(ms(0));
        m.on_advert(ms(100), ip("10.0.0.3"), 100, 100);
        assert_eq!(m.deadline(), Some(ms(100) + down));
        // preempt_delay 5 s: the lower master keeps the role 5 s after first seen.
        let mut m = Machine::new(Settings {
            preempt_delay: Duration::from_secs(5),
            ..settings(200, "10.0.0.2")
        });
        m.start(ms(0));
        m.on_advert(ms(1000), ip("10.0.0.3"), 100, 100);
        m.on_advert(ms(5000), ip("10.0.0.3"), 100, 100);
        assert_eq!(m.deadline(), Some(ms(5000) + down));
        m.on_advert(ms(6000), ip("10.0.0.3"), 100, 100);
        assert_eq!(m.deadline(), Some(ms(5000) + down), "delay over: discarded");
    }

    #[test]
    fn two_masters_resolve_by_priority_then_address() {
        let mut a = Machine::new(settings(100, "10.0.0.2"));
        a.start(ms(0));
        a.on_timer(ms(3600));
        assert_eq!(a.state, State::Master);
        // Same priority, higher address: it wins, a steps down.
        assert_eq!(
            a.on_advert(ms(4000), ip("10.0.0.3"), 100, 100),
            [Action::BecomeBackup]
        );
        assert_eq!(a.counters.other_master_seen, 1);
        let mut b = Machine::new(settings(100, "10.0.0.3"));
        b.start(ms(0));
        b.on_timer(ms(3600));
        // Lower address with the same priority: b stays master, answers with
        // an advert and announces its addresses again (keepalived's default).
        assert_eq!(
            b.on_advert(ms(4000), ip("10.0.0.2"), 100, 100),
            [Action::Advertise { priority: 100 }, Action::Reannounce]
        );
        assert_eq!((b.state, b.counters.other_master_seen), (State::Master, 1));
        assert_eq!(b.deadline(), Some(ms(5000)), "advert timer restarted");
    }

    /// issue 13, input 4: a healed split brain. The loser with
    /// `higher_prio_send_advert` sends one advert before it steps down, so the
    /// winner (which re-announces on every lower priority advert) is the one
    /// the clients hear last; `lower_prio_no_advert` keeps the RFC's silence
    /// but still re-announces.
    #[test]
    fn a_healed_split_brain_ends_with_the_winner_announcing_last() {
        let mut loser = Machine::new(Settings {
            higher_prio_send_advert: true,
            ..settings(100, "10.0.0.2")
        });
        loser.start(ms(0));
        loser.on_timer(ms(3600));
        assert_eq!(
            loser.on_advert(ms(9000), ip("10.0.0.3"), 150, 100),
            [Action::Advertise { priority: 100 }, Action::BecomeBackup]
        );
        assert_eq!(loser.state, State::Backup);
        // Without the option the loser just steps down.
        let mut plain = Machine::new(settings(100, "10.0.0.2"));
        plain.start(ms(0));
        plain.on_timer(ms(3600));
        assert_eq!(
            plain.on_advert(ms(9000), ip("10.0.0.3"), 150, 100),
            [Action::BecomeBackup]
        );
        // The winner hears the loser's advert: it stays and re-announces.
        let mut winner = Machine::new(Settings {
            lower_prio_no_advert: true,
            ..settings(150, "10.0.0.3")
        });
        winner.start(ms(0));
        winner.on_timer(ms(3600));
        assert_eq!(
            winner.on_advert(ms(9000), ip("10.0.0.2"), 100, 100),
            [Action::Reannounce]
        );
        assert_eq!(winner.state, State::Master);
    }

    #[test]
    fn owner_starts_master_and_v3_backups_adopt_the_interval() {
        let mut o = Machine::new(settings(255, "10.0.0.2"));
        assert_eq!(o.start(ms(0))[1], Action::BecomeMaster);
        let mut b = Machine::new(settings(100, "10.0.0.3"));
        b.start(ms(0));
        b.on_advert(ms(0), ip("10.0.0.2"), 255, 10);
        assert_eq!(b.master_adver_cs, 10);
        // 3 × 0.1 s + (256 - 100) × 0.1 s / 256.
        assert_eq!(b.deadline(), Some(Duration::from_micros(300_000 + 60_937)));
    }

    #[test]
    fn fault_releases_and_recovery_starts_over() {
        let mut m = Machine::new(settings(100, "10.0.0.2"));
        m.start(ms(0));
        m.on_timer(ms(3600));
        assert_eq!(
            m.set_fault(ms(4000), true),
            [Action::Advertise { priority: 0 }, Action::BecomeFault]
        );
        assert_eq!((m.state, m.deadline()), (State::Fault, None));
        assert!(m.on_advert(ms(4100), ip("10.0.0.3"), 50, 100).is_empty());
        assert_eq!(m.set_fault(ms(5000), false), [Action::BecomeBackup]);
        // Tracking lowers the priority of a master: advertised at once.
        m.on_timer(ms(9000));
        assert_eq!(
            m.set_priority(ms(9100), 60),
            [Action::Advertise { priority: 60 }]
        );
    }

    #[test]
    fn state_master_takes_over_at_once_and_steps_down_for_a_higher_one() {
        let mut m = Machine::new(Settings {
            initial_master: true,
            ..settings(100, "10.0.0.2")
        });
        assert_eq!(
            m.start(ms(0)),
            [Action::Advertise { priority: 100 }, Action::BecomeMaster]
        );
        assert_eq!(
            m.on_advert(ms(200), ip("10.0.0.3"), 150, 100),
            [Action::BecomeBackup]
        );
    }

    #[test]
    fn track_weight_lets_a_backup_preempt_a_weakened_master() {
        // Replay of the namespace test: master 150 with weight -60, backup 100.
        let mut b = Machine::new(settings(100, "10.0.0.3"));
        b.start(ms(0));
        assert!(b.on_advert(ms(100), ip("10.0.0.2"), 150, 100).is_empty());
        // The master advertises 90 now: the backup discards those adverts
        // (preempt) and takes over when its master-down timer runs out.
        assert!(b.on_advert(ms(1100), ip("10.0.0.2"), 90, 100).is_empty());
        assert!(b.on_advert(ms(2100), ip("10.0.0.2"), 90, 100).is_empty());
        assert_eq!(b.deadline(), Some(ms(100) + b.master_down_interval()));
        let acts = b.on_timer(b.deadline().unwrap());
        assert_eq!(
            acts,
            [Action::Advertise { priority: 100 }, Action::BecomeMaster]
        );
        // The weakened master hears 100 > 90 and steps down.
        let mut a = Machine::new(settings(150, "10.0.0.2"));
        a.start(ms(0));
        a.on_timer(ms(3600));
        a.set_priority(ms(4000), 90);
        assert_eq!(
            a.on_advert(ms(4100), ip("10.0.0.3"), 100, 100),
            [Action::BecomeBackup]
        );
        // Healthy again: 150 > 100 preempts after the down interval.
        a.set_priority(ms(5000), 150);
        assert!(a.on_advert(ms(5100), ip("10.0.0.3"), 100, 100).is_empty());
        assert_eq!(a.on_timer(a.deadline().unwrap())[1], Action::BecomeMaster);
    }

    #[test]
    fn sync_group_members_follow() {
        let mut m = Machine::new(settings(100, "10.0.0.2"));
        m.start(ms(0));
        assert_eq!(
            m.follow_group(ms(10), true),
            [Action::Advertise { priority: 100 }, Action::BecomeMaster]
        );
        assert!(m.follow_group(ms(20), true).is_empty());
        assert_eq!(m.follow_group(ms(30), false), [Action::BecomeBackup]);
        assert_eq!(m.deadline(), Some(ms(30) + m.master_down_interval()));
    }

    #[test]
    fn a_held_backup_waits_and_takes_over_on_release() {
        let mut m = Machine::new(settings(150, "10.0.0.1"));
        m.held = true;
        assert_eq!(m.start(ms(0)), [Action::BecomeBackup]);
        // The Master_Down_Timer fires while held: still BACKUP.
        let d = m.deadline().unwrap();
        assert!(m.on_timer(d).is_empty());
        assert_eq!(m.state, State::Backup);
        // Released: one more Master_Down_Interval to hear a better peer.
        assert!(m.release(d + ms(5)).is_empty());
        let d2 = m.deadline().unwrap();
        assert_eq!(d2, d + ms(5) + m.master_down_interval());
        assert_eq!(m.on_timer(d2)[1], Action::BecomeMaster);
        assert_eq!(m.state, State::Master);
        // Held, then a higher master is heard: the release takes nothing.
        let mut b = Machine::new(settings(100, "10.0.0.2"));
        b.held = true;
        b.start(ms(0));
        let d = b.deadline().unwrap();
        b.on_timer(d);
        b.on_advert(d + ms(1), ip("10.0.0.1"), 150, 100);
        assert!(b.release(d + ms(2)).is_empty());
        assert_eq!(b.state, State::Backup);
        // The address owner is held too.
        let mut o = Machine::new(settings(255, "10.0.0.3"));
        o.held = true;
        assert_eq!(o.start(ms(0)), [Action::BecomeBackup]);
        assert_eq!(o.release(ms(1))[1], Action::BecomeMaster);
    }

    #[test]
    fn shutdown_of_a_master_sends_priority_zero() {
        let mut m = Machine::new(settings(255, "10.0.0.2"));
        assert_eq!(m.start(ms(0))[1], Action::BecomeMaster);
        assert_eq!(
            m.shutdown(),
            [Action::Advertise { priority: 0 }, Action::BecomeBackup]
        );
        assert_eq!((m.state, m.deadline()), (State::Init, None));
        assert_eq!(m.counters.priority_zero_sent, 1);
    }
}
