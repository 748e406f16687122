//! Quorum, hysteresis and the sorry server, as keepalived applies them.
//!
//! The weights of a virtual service's reals that are up are summed. Below
//! `quorum - hysteresis` the quorum is lost (`quorum_down` runs); from
//! `quorum + hysteresis` on it is gained again (`quorum_up` runs). While it
//! is lost and a `sorry_server` is configured, the sorry server alone takes
//! the service's traffic. Reals going up / down run their `notify_up` /
//! `notify_down`. The result is the configuration the data plane gets.

use std::collections::BTreeMap;

use super::Health;
use crate::{
    config::{Config, RealKey, RealServer, ServiceAddr},
    util::process::Program,
};

/// Something that happened, with the program to run for it (if configured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    QuorumUp(ServiceAddr, Option<Program>),
    QuorumDown(ServiceAddr, Option<Program>),
    RealUp(RealKey, Option<Program>),
    RealDown(RealKey, Option<Program>),
}

/// Quorum and real states remembered between evaluations.
#[derive(Default)]
pub struct Quorum {
    up: BTreeMap<ServiceAddr, bool>,
    real_up: BTreeMap<RealKey, bool>,
}

impl Quorum {
    /// The configuration to apply and the events since the last evaluation.
    pub fn evaluate(
        &mut self,
        cfg: &Config,
        health: &dyn Fn(&RealKey) -> Health,
    ) -> (Config, Vec<Event>) {
        let mut out = cfg.clone();
        let mut events = Vec::new();
        let mut seen_real = BTreeMap::new();
        let mut seen_vs = BTreeMap::new();
        for vs in out.services.iter_mut() {
            let mut alive = 0u64;
            for r in &vs.reals {
                let key = (vs.key, r.addr, r.port);
                let (up, weight) = match health(&key) {
                    Health::Up { weight } => (true, weight.unwrap_or(r.weight)),
                    Health::Down { .. } => (false, 0),
                };
                if up {
                    alive += weight as u64;
                }
                match self.real_up.get(&key) {
                    Some(&was) if was != up => events.push(if up {
                        Event::RealUp(key, r.notify_up.clone())
                    } else {
                        Event::RealDown(key, r.notify_down.clone())
                    }),
                    _ => {}
                }
                seen_real.insert(key, up);
            }
            let q = vs.quorum as u64;
            let h = vs.hysteresis as u64;
            let was = self.up.get(&vs.key).copied();
            let now_up = match was {
                // First evaluation: the plain threshold.
                None => alive >= q,
                Some(true) => alive >= q.saturating_sub(h),
                Some(false) => alive >= q + h,
            };
            match (was, now_up) {
                (Some(false), true) => events.push(Event::QuorumUp(vs.key, vs.quorum_up.clone())),
                (Some(true) | None, false) => {
                    events.push(Event::QuorumDown(vs.key, vs.quorum_down.clone()))
                }
                _ => {}
            }
            seen_vs.insert(vs.key, now_up);
            if !now_up {
                if let Some((addr, port)) = vs.sorry_server {
                    vs.reals = vec![RealServer {
                        addr,
                        port,
                        weight: 1,
                        fwd: None,
                        u_threshold: 0,
                        l_threshold: 0,
                        checks: Vec::new(),
                        timing: Default::default(),
                        inhibit_on_failure: None,
                        notify_up: None,
                        notify_down: None,
                        sorry: true,
                        loc: vs.loc.clone(),
                    }];
                }
            }
        }
        self.real_up = seen_real;
        self.up = seen_vs;
        (out, events)
    }

    /// Whether the quorum of `svc` is held (`None` before its first evaluation).
    pub fn is_up(&self, svc: &ServiceAddr) -> Option<bool> {
        self.up.get(svc).copied()
    }

    /// What `omega` runs on shutdown: quorum_down where the quorum is up and
    /// notify_down for every real that is up.
    pub fn omega(&self, cfg: &Config) -> Vec<Event> {
        let mut events = Vec::new();
        for vs in cfg.services.iter().filter(|v| v.omega) {
            if self.up.get(&vs.key) == Some(&true) {
                events.push(Event::QuorumDown(vs.key, vs.quorum_down.clone()));
            }
            for r in &vs.reals {
                let key = (vs.key, r.addr, r.port);
                if self.real_up.get(&key) == Some(&true) {
                    events.push(Event::RealDown(key, r.notify_down.clone()));
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use std::{net::IpAddr, path::Path};

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "virtual_server 10.0.0.1 80 {{\n lb_kind DR\n quorum 3\n hysteresis 1\n \
             sorry_server 10.0.0.9 80\n quorum_up \"/bin/up 'a b'\"\n quorum_down /bin/down\n {extra}\n \
             real_server 10.0.0.2 80 {{ weight 2\n notify_down \"/bin/nd 2\" }}\n \
             real_server 10.0.0.3 80 {{ weight 2 }}\n}}\n"
        );
        let l = load_str(&text, Path::new("q.conf"));
        assert!(!l.has_errors(), "{:?}", l.diags);
        l.config
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn quorum_with_hysteresis_and_sorry_server() {
        let c = cfg("");
        let svc = c.services[0].key;
        let mut q = Quorum::default();
        let mut down: Vec<IpAddr> = vec![];
        let eval = |q: &mut Quorum, down: &Vec<IpAddr>| {
            q.evaluate(&c, &|k: &RealKey| {
                if down.contains(&k.1) {
                    Health::Down { inhibit: false }
                } else {
                    Health::Up { weight: None }
                }
            })
        };
        // 4 of quorum 3: up, both reals in the table.
        let (eff, ev) = eval(&mut q, &down);
        assert!(ev.is_empty());
        assert_eq!(eff.services[0].reals.len(), 2);
        // One down: 2 ≥ 3 - 1 keeps the quorum (hysteresis); notify_down runs.
        down.push(ip("10.0.0.2"));
        let (eff, ev) = eval(&mut q, &down);
        assert!(
            matches!(&ev[..], [Event::RealDown(k, Some(p))]
                if *k == (svc, ip("10.0.0.2"), 80) && p.argv == ["/bin/nd", "2"]),
            "{ev:?}"
        );
        assert_eq!(eff.services[0].reals.len(), 2);
        // Both down: 0 < 2, quorum lost: the sorry server alone.
        down.push(ip("10.0.0.3"));
        let (eff, ev) = eval(&mut q, &down);
        assert!(ev.iter().any(
            |e| matches!(e, Event::QuorumDown(s, Some(p)) if *s == svc && p.argv == ["/bin/down"])
        ));
        let r = &eff.services[0].reals;
        assert_eq!((r.len(), r[0].addr, r[0].port), (1, ip("10.0.0.9"), 80));
        assert!(
            r[0].sorry && r[0].checks.is_empty(),
            "marked, never checked"
        );
        assert!(
            !c.services[0].reals.iter().any(|x| x.sorry),
            "the file layer has none"
        );
        // One back: 2 < 3 + 1, still lost.
        down.retain(|a| *a != ip("10.0.0.3"));
        let (eff, ev) = eval(&mut q, &down);
        assert!(!ev.iter().any(|e| matches!(e, Event::QuorumUp(..))));
        assert_eq!(eff.services[0].reals[0].addr, ip("10.0.0.9"));
        // Both back: 4 ≥ 4, gained; quorum_up's words kept together.
        down.clear();
        let (eff, ev) = eval(&mut q, &down);
        assert!(ev.iter().any(
            |e| matches!(e, Event::QuorumUp(s, Some(p)) if *s == svc && p.argv == ["/bin/up", "a b"])
        ));
        assert_eq!(eff.services[0].reals.len(), 2);
        // omega is off here.
        assert!(q.omega(&c).is_empty());
    }

    #[test]
    fn omega_reports_what_is_up() {
        let c = cfg("omega");
        let mut q = Quorum::default();
        q.evaluate(&c, &|_: &RealKey| Health::Up { weight: None });
        let ev = q.omega(&c);
        assert_eq!(ev.len(), 3, "{ev:?}");
    }
}
