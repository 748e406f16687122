//! Runs the checkers concurrently (one tokio task each, so a slow check never
//! delays another) and reports state changes to the agent, which applies
//! them to the data plane. On reload, a checker whose real and settings are
//! unchanged keeps running with its state (no flapping).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{combine, probe, CheckState, Health, Outcome, Schedule};
use crate::{
    api::views::{Checker, Checks, ProbeResult},
    config::{
        check::{Check, CheckKind},
        Config, RealKey,
    },
    util::fmt_sock,
};

/// One checker: its real and its position among the real's checkers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckId {
    pub real: RealKey,
    pub index: usize,
}

struct Running {
    spec: (Check, Schedule, bool),
    task: JoinHandle<()>,
}

/// The checkers of the current configuration and their states.
pub struct Monitor {
    start: Instant,
    running: BTreeMap<CheckId, Running>,
    states: Arc<Mutex<BTreeMap<CheckId, (String, CheckState)>>>,
    inhibit: BTreeMap<RealKey, bool>,
    /// Each real's health as the pinned tables showed it at start (true:
    /// up), used by the checkers the first [`Monitor::apply`] starts.
    recovered: BTreeMap<RealKey, bool>,
    tx: mpsc::UnboundedSender<RealKey>,
}

impl Monitor {
    /// A monitor whose state changes arrive on the returned receiver.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<RealKey>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Monitor {
                start: Instant::now(),
                running: BTreeMap::new(),
                states: Arc::default(),
                inhibit: BTreeMap::new(),
                recovered: BTreeMap::new(),
                tx,
            },
            rx,
        )
    }

    /// Has the checkers of the first [`Monitor::apply`] start from the
    /// health a previous agent left in the pinned tables (true: up) instead
    /// of keepalived's initial state (up, or down with `alpha`): a
    /// restarted agent keeps a healthy real in and a failed one out until
    /// their checkers have run. Reals not in `recovered` start as
    /// keepalived starts them.
    pub fn recover(&mut self, recovered: BTreeMap<RealKey, bool>) {
        self.recovered = recovered;
    }

    /// Starts, keeps or stops checkers to match `cfg`.
    pub fn apply(&mut self, cfg: &Config) {
        let mut wanted = BTreeMap::new();
        self.inhibit.clear();
        for vs in &cfg.services {
            for r in &vs.reals {
                let key = (vs.key, r.addr, r.port);
                self.inhibit
                    .insert(key, r.inhibit_on_failure.unwrap_or(vs.inhibit_on_failure));
                for (index, c) in r.checks.iter().enumerate() {
                    let s = Schedule::resolve(c, r.timing, vs.timing);
                    // keepalived clears alpha for FILE_CHECK: the file's
                    // state is known at once.
                    let alpha = vs.alpha && !matches!(c.kind, CheckKind::File(_));
                    wanted.insert(CheckId { real: key, index }, (c.clone(), s, alpha));
                }
            }
        }
        let gone: Vec<CheckId> = self
            .running
            .iter()
            .filter(|(id, r)| wanted.get(*id) != Some(&r.spec))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(r) = self.running.remove(&id) {
                r.task.abort();
            }
            self.states.lock().expect("states").remove(&id);
        }
        let recovered = std::mem::take(&mut self.recovered);
        let mut from_tables = (0, 0);
        for (id, spec) in wanted {
            if self.running.contains_key(&id) {
                continue;
            }
            let up = recovered.get(&id.real).copied();
            if id.index == 0 {
                match up {
                    Some(true) => from_tables.0 += 1,
                    Some(false) => from_tables.1 += 1,
                    None => {}
                }
            }
            let task = self.spawn(id.clone(), spec.clone(), up);
            self.running.insert(id, Running { spec, task });
        }
        if from_tables != (0, 0) {
            tracing::info!(
                up = from_tables.0,
                down = from_tables.1,
                "checked reals start from the health the pinned tables show (a previous agent's verdicts)"
            );
        }
    }

    /// Starts checker `id`, up or down as `recovered` says (else as
    /// keepalived starts it: down with `alpha`, otherwise up).
    fn spawn(
        &self,
        id: CheckId,
        (check, sched, alpha): (Check, Schedule, bool),
        recovered: Option<bool>,
    ) -> JoinHandle<()> {
        let states = self.states.clone();
        let tx = self.tx.clone();
        let start = self.start;
        let name = describe(&check);
        let to = probe::target(&check, id.real.1, id.real.2);
        // keepalived's warmup: a random delay up to `warmup` before the first probe.
        let first = if sched.warmup.is_zero() {
            Duration::ZERO
        } else {
            // Spread by checker and time: enough to keep checkers from
            // starting in step, which is all warmup is for.
            use std::hash::{BuildHasher, Hash, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            id.hash(&mut h);
            start.elapsed().as_nanos().hash(&mut h);
            let nanos = h.finish() % sched.warmup.as_nanos().max(1) as u64;
            Duration::from_nanos(nanos)
        };
        let mut state = CheckState::new(alpha, start.elapsed(), first);
        if let Some(up) = recovered {
            state.up = up;
        }
        states
            .lock()
            .expect("states")
            .insert(id.clone(), (name, state.clone()));
        tokio::spawn(async move {
            let mut state = state;
            loop {
                let now = start.elapsed();
                if state.next > now {
                    tokio::time::sleep(state.next - now).await;
                }
                let began = Instant::now();
                let outcome = match &check.kind {
                    // A number out of range leaves the state as it is
                    // (keepalived ignores it).
                    CheckKind::File(f) => match probe::file(f).await {
                        Some(o) => o,
                        None => {
                            tracing::warn!(file = %f.path.display(), "track_file: number out of range; ignored");
                            state.next = start.elapsed() + sched.delay_loop;
                            continue;
                        }
                    },
                    _ => probe::run(&check, to, sched.connect_timeout).await,
                };
                state.last_duration = Some(began.elapsed());
                let changed = state.record(&sched, start.elapsed(), outcome.clone());
                if let Some(e) = states.lock().expect("states").get_mut(&id) {
                    e.1 = state.clone();
                }
                if changed {
                    let real = fmt_sock(id.real.1, id.real.2);
                    match &outcome {
                        Outcome::Down(err) => {
                            tracing::warn!(service = %id.real.0, %real, check = id.index, error = %err, "real server DOWN")
                        }
                        _ => {
                            tracing::info!(service = %id.real.0, %real, check = id.index, weight = ?state.weight, "real server UP")
                        }
                    }
                    if tx.send(id.real).is_err() {
                        return;
                    }
                }
            }
        })
    }

    /// A real's health; reals without checkers are up.
    pub fn health(&self, real: &RealKey) -> Health {
        let states = self.states.lock().expect("states");
        let inhibit = self.inhibit.get(real).copied().unwrap_or(false);
        combine(
            states
                .range(
                    CheckId {
                        real: *real,
                        index: 0,
                    }..=CheckId {
                        real: *real,
                        index: usize::MAX,
                    },
                )
                .map(|(_, (_, s))| s),
            inhibit,
        )
    }

    /// All healths, for applying a configuration.
    pub fn snapshot(&self) -> BTreeMap<RealKey, Health> {
        self.inhibit.keys().map(|k| (*k, self.health(k))).collect()
    }

    /// `GET /v1/checks`: each checker's state, last result, last change and
    /// the duration of its last probe (`lb list --checks` renders it).
    pub fn info(&self) -> Checks {
        let now = self.start.elapsed();
        let states = self.states.lock().expect("states");
        let checkers = states
            .iter()
            .map(|(id, (name, s))| Checker {
                service: id.real.0.to_string(),
                protocol: id.real.0.proto.name().to_string(),
                service_address: id.real.0.addr.to_string(),
                service_port: id.real.0.port,
                real: fmt_sock(id.real.1, id.real.2),
                real_address: id.real.1.to_string(),
                real_port: id.real.2,
                check: name.clone(),
                index: id.index,
                up: s.up,
                probes: s.probes,
                last_change_ago_s: s.last_change.map(|c| now.saturating_sub(c).as_secs_f64()),
                last: s.last.as_ref().map(|o| match o {
                    Outcome::Up => ProbeResult::Ok,
                    Outcome::UpWeight(w) => ProbeResult::OkWeight { weight: *w },
                    Outcome::Down(e) => ProbeResult::Failed { error: e.clone() },
                }),
                last_duration_s: s.last_duration.map(|d| d.as_secs_f64()),
            })
            .collect();
        Checks { checkers }
    }

    /// `lb list --checks` (the text of [`Monitor::info`]).
    pub fn render(&self) -> String {
        self.info().render()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for r in self.running.values() {
            r.task.abort();
        }
    }
}

fn describe(c: &Check) -> String {
    match &c.kind {
        CheckKind::Tcp => "TCP_CHECK",
        CheckKind::Http { tls: false, .. } => "HTTP_GET",
        CheckKind::Http { tls: true, .. } => "SSL_GET",
        CheckKind::Misc { .. } => "MISC_CHECK",
        CheckKind::Udp { .. } => "UDP_CHECK",
        CheckKind::Dns { .. } => "DNS_CHECK",
        CheckKind::Smtp { .. } => "SMTP_CHECK",
        CheckKind::Ping => "PING_CHECK",
        CheckKind::File(_) => "FILE_CHECK",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 999 reals whose checks answer at once and one whose server never
    /// answers: the slow check delays nobody.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_check_delays_no_other() {
        let fast = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (fp, sp) = (
            fast.local_addr().unwrap().port(),
            silent.local_addr().unwrap().port(),
        );
        // The fast server accepts (and closes) at once; the silent one's
        // connection waits in its backlog, unanswered.
        std::thread::spawn(move || {
            for c in fast.incoming() {
                drop(c)
            }
        });
        // warmup 0: every checker probes at once (keepalived's default
        // spreads the first probes over delay_loop).
        let mut text = String::from(
            "virtual_server 10.9.0.1 80 {\n protocol TCP\n lb_algo rr\n lb_kind NAT\n warmup 0\n",
        );
        for i in 0..1000u32 {
            let check = if i == 0 {
                format!("HTTP_GET {{\n url {{ path / }}\n connect_ip 127.0.0.1\n connect_port {sp}\n connect_timeout 5\n }}")
            } else {
                format!("TCP_CHECK {{\n connect_ip 127.0.0.1\n connect_port {fp}\n }}")
            };
            text += &format!(
                " real_server 10.10.{}.{} 80 {{ {check} }}\n",
                i / 250,
                i % 250 + 1
            );
        }
        text += "}\n";
        let l = crate::config::load_str(&text, std::path::Path::new("many.conf"));
        assert!(!l.has_errors());
        let (mut m, _rx) = Monitor::new();
        let start = Instant::now();
        m.apply(&l.config);
        loop {
            let probed = m
                .states
                .lock()
                .unwrap()
                .values()
                .filter(|(_, s)| s.probes > 0)
                .count();
            if probed == 999 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "{probed} of 999 probed\n{}",
                m.render().lines().nth(1).unwrap_or("")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = start.elapsed();
        // The silent one is still waiting for its answer.
        let slow = m
            .states
            .lock()
            .unwrap()
            .values()
            .filter(|(_, s)| s.probes == 0)
            .count();
        assert_eq!(slow, 1);
        assert!(took < Duration::from_secs(3), "{took:?}");
        drop(silent);
    }
}
