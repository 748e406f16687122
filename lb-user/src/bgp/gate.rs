//! Whether each VIP is announced: pure functions of the table, the health
//! verdicts and the agent's state, without I/O (tested without a daemon).
//!
//! The rule (issue 18): a VIP is announced while at least one of its
//! services has a real that takes new connections and the data plane is
//! attached (the first table written, plus `announce_delay`); it is
//! withdrawn when its last real fails, before a deliberate stop, and while
//! the director is drained for maintenance.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use crate::{
    config::{bgp::Bgp, Config, RealKey},
    health::Health,
};

/// What the data plane can do for one VIP: its services, and those with a
/// real that takes new connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VipHealth {
    /// Services (any port and protocol) on the VIP.
    pub services: u32,
    /// Services with at least one real that takes new connections: up by
    /// its checkers with a weight above 0, or the sorry server a lost
    /// quorum put in place.
    pub serving: u32,
}

/// Per VIP, its services and how many of them serve, from the table the
/// data plane gets (`cfg`, after the quorum rule) and the checkers'
/// verdicts (`health`).
pub fn vip_health(
    cfg: &Config,
    health: &dyn Fn(&RealKey) -> Health,
) -> BTreeMap<IpAddr, VipHealth> {
    let mut out: BTreeMap<IpAddr, VipHealth> = BTreeMap::new();
    for vs in &cfg.services {
        let serving = vs.reals.iter().any(|r| {
            r.sorry
                || match health(&(vs.key, r.addr, r.port)) {
                    Health::Up { weight } => weight.unwrap_or(r.weight) > 0,
                    Health::Down { .. } => false,
                }
        });
        let e = out.entry(vs.key.addr).or_default();
        e.services += 1;
        e.serving += u32::from(serving);
    }
    out
}

/// The agent's state as far as announcing goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// How long ago XDP was attached with the first table written (`None`:
    /// not attached).
    pub attached_for: Option<Duration>,
    /// The director is drained for maintenance (`lb bgp drain`).
    pub drained: bool,
    /// The agent is stopping on purpose (SIGTERM, `lb stop`).
    pub stopping: bool,
    /// Connection sync is still waiting for a peer's table (at most
    /// `sync::BULK_TIMEOUT`): a returning director is announced only once
    /// the flows the others track are in its tables.
    pub syncing: bool,
}

/// Why a VIP is not announced, in the order the rule checks them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The agent is stopping.
    Stopping,
    /// `lb bgp drain`.
    Drained,
    /// The data plane is not attached yet.
    NotAttached,
    /// Attached for less than `announce_delay`.
    Settling,
    /// Connection sync waits for a peer's table (bulk copy).
    Syncing,
    /// No service on the VIP any more (a reload removed it): withdrawn
    /// and then forgotten.
    NotConfigured,
    /// No next hop of the VIP's family (`next_hop` / `next_hop6`).
    NoNextHop,
    /// None of its services has a real that takes connections.
    NoHealthyReal,
}

impl Reason {
    /// The words `lb list --bgp` prints.
    pub fn text(self) -> &'static str {
        match self {
            Reason::Stopping => "agent stopping",
            Reason::Drained => "director drained",
            Reason::NotAttached => "data plane not attached",
            Reason::Settling => "announce_delay running",
            Reason::Syncing => "waiting for a peer's connection table",
            Reason::NotConfigured => "no longer configured",
            Reason::NoNextHop => "no next hop for its family",
            Reason::NoHealthyReal => "no healthy real",
        }
    }
}

/// The verdict for one VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Announce with this next hop.
    Announce(IpAddr),
    Withdraw(Reason),
}

/// The verdict for every VIP of `vips` (the table's) and of `owned` (VIPs
/// announced before that the table may no longer have).
pub fn decide(
    vips: &BTreeMap<IpAddr, VipHealth>,
    owned: impl IntoIterator<Item = IpAddr>,
    facts: &Facts,
    bgp: &Bgp,
) -> BTreeMap<IpAddr, Verdict> {
    let mut out = BTreeMap::new();
    let all: std::collections::BTreeSet<IpAddr> = vips.keys().copied().chain(owned).collect();
    for vip in all {
        let v = if facts.stopping {
            Verdict::Withdraw(Reason::Stopping)
        } else if facts.drained {
            Verdict::Withdraw(Reason::Drained)
        } else {
            match (facts.attached_for, vips.get(&vip), bgp.next_hop_of(vip)) {
                (None, _, _) => Verdict::Withdraw(Reason::NotAttached),
                (Some(t), _, _) if t < bgp.announce_delay => Verdict::Withdraw(Reason::Settling),
                _ if facts.syncing => Verdict::Withdraw(Reason::Syncing),
                (_, None, _) => Verdict::Withdraw(Reason::NotConfigured),
                (_, _, None) => Verdict::Withdraw(Reason::NoNextHop),
                (_, Some(h), Some(_)) if h.serving == 0 => Verdict::Withdraw(Reason::NoHealthyReal),
                (_, Some(_), Some(nh)) => Verdict::Announce(nh),
            }
        };
        out.insert(vip, v);
    }
    out
}

/// When the verdicts next change by themselves: the end of
/// `announce_delay` (`None`: only an input change changes them).
pub fn next_change(facts: &Facts, bgp: &Bgp) -> Option<Duration> {
    match facts.attached_for {
        Some(t) if t < bgp.announce_delay && !facts.stopping && !facts.drained => {
            Some(bgp.announce_delay - t)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, ServiceAddr};

    const CONF: &str = "
lb_bgp {
    local_as 65001
    neighbor 10.0.0.1 65000
    next_hop 10.0.0.2
    announce_delay 1
}
virtual_server 10.0.1.100 80 {
    lb_algo mh
    lb_kind DR
    protocol TCP
    real_server 10.0.0.11 80 {
        weight 1
    }
    real_server 10.0.0.12 80 {
        weight 1
    }
}
virtual_server 10.0.1.100 443 {
    lb_algo mh
    lb_kind DR
    protocol TCP
    real_server 10.0.0.13 443 {
        weight 0
    }
}
virtual_server 10.0.1.101 80 {
    lb_algo mh
    lb_kind DR
    protocol TCP
    real_server 10.0.0.14 80 {
        weight 1
    }
}
virtual_server fd00::100 80 {
    lb_algo mh
    lb_kind DR
    protocol TCP
    real_server fd00::11 80 {
        weight 1
    }
}
";

    fn config() -> Config {
        let l = load_str(CONF, std::path::Path::new("test.conf"));
        assert!(!l.has_errors(), "{:?}", l.diags);
        l.config
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn svc(addr: &str, port: u16) -> ServiceAddr {
        ServiceAddr {
            addr: ip(addr),
            port,
            proto: crate::config::Proto::Tcp,
        }
    }

    const UP: Facts = Facts {
        attached_for: Some(Duration::from_secs(5)),
        drained: false,
        stopping: false,
        syncing: false,
    };

    /// Input: every real up. Output: a VIP serves when one of its services
    /// has a real with weight > 0 (10.0.1.100:443's only real has weight 0).
    #[test]
    fn a_vip_serves_while_one_of_its_services_has_a_real() {
        let c = config();
        let h = vip_health(&c, &|_| Health::Up { weight: None });
        assert_eq!(
            h[&ip("10.0.1.100")],
            VipHealth {
                services: 2,
                serving: 1
            }
        );
        assert_eq!(
            h[&ip("10.0.1.101")],
            VipHealth {
                services: 1,
                serving: 1
            }
        );
        // Input: 10.0.0.11 down. Output: 10.0.0.12 still serves port 80.
        let h = vip_health(&c, &|k| {
            if k.1 == ip("10.0.0.11") {
                Health::Down { inhibit: false }
            } else {
                Health::Up { weight: None }
            }
        });
        assert_eq!(h[&ip("10.0.1.100")].serving, 1);
        // Input: both reals of port 80 down (one inhibited: weight 0).
        // Output: no service of the VIP serves.
        let h = vip_health(&c, &|k| {
            if k.0 == svc("10.0.1.100", 80) {
                Health::Down {
                    inhibit: k.1 == ip("10.0.0.12"),
                }
            } else {
                Health::Up { weight: None }
            }
        });
        assert_eq!(h[&ip("10.0.1.100")].serving, 0);
        // Input: a dynamic weight of 0 (MISC_CHECK) on 10.0.1.101's real.
        let h = vip_health(&c, &|k| {
            if k.0 == svc("10.0.1.101", 80) {
                Health::Up { weight: Some(0) }
            } else {
                Health::Up { weight: None }
            }
        });
        assert_eq!(h[&ip("10.0.1.101")].serving, 0);
        // Input: a weight-0 real made up by a dynamic weight of 3.
        let h = vip_health(&c, &|k| {
            if k.0 == svc("10.0.1.100", 443) {
                Health::Up { weight: Some(3) }
            } else {
                Health::Down { inhibit: false }
            }
        });
        assert_eq!(h[&ip("10.0.1.100")].serving, 1);
    }

    /// The sorry server a lost quorum puts in place serves.
    #[test]
    fn the_sorry_server_serves() {
        let l = load_str(
            "virtual_server 10.0.1.100 80 {\n lb_kind DR\n protocol TCP\n sorry_server 10.0.0.99 80\n real_server 10.0.0.11 80 {\n  weight 1\n  TCP_CHECK {\n  }\n }\n}\n",
            std::path::Path::new("test.conf"),
        );
        assert!(!l.has_errors(), "{:?}", l.diags);
        let mut q = crate::health::quorum::Quorum::default();
        let down = |_: &RealKey| Health::Down { inhibit: false };
        let (effective, _) = q.evaluate(&l.config, &down);
        let h = vip_health(&effective, &down);
        assert_eq!(h[&ip("10.0.1.100")].serving, 1);
    }

    /// Input: the table's health and the agent's state. Output: one verdict
    /// per VIP, the first reason of the rule's order winning.
    #[test]
    fn verdicts_follow_the_rule_in_order() {
        let c = config();
        let b = c.bgp.clone().unwrap();
        let mut h = vip_health(&c, &|_| Health::Up { weight: None });
        h.get_mut(&ip("10.0.1.101")).unwrap().serving = 0;
        let v = decide(&h, [], &UP, &b);
        assert_eq!(v[&ip("10.0.1.100")], Verdict::Announce(ip("10.0.0.2")));
        assert_eq!(
            v[&ip("10.0.1.101")],
            Verdict::Withdraw(Reason::NoHealthyReal)
        );
        // No next_hop6 in the block: the IPv6 VIP is never announced.
        assert_eq!(v[&ip("fd00::100")], Verdict::Withdraw(Reason::NoNextHop));

        let not_attached = Facts {
            attached_for: None,
            ..UP
        };
        let settling = Facts {
            attached_for: Some(Duration::from_millis(400)),
            ..UP
        };
        let drained = Facts {
            drained: true,
            ..UP
        };
        let stopping = Facts {
            stopping: true,
            drained: true,
            ..UP
        };
        let syncing = Facts {
            syncing: true,
            ..UP
        };
        for (facts, why) in [
            (not_attached, Reason::NotAttached),
            (settling, Reason::Settling),
            (syncing, Reason::Syncing),
            (drained, Reason::Drained),
            (stopping, Reason::Stopping),
        ] {
            let v = decide(&h, [], &facts, &b);
            assert!(
                v.values().all(|v| *v == Verdict::Withdraw(why)),
                "{facts:?}: {v:?}"
            );
        }
        // announce_delay 1 s: 0.6 s left after 0.4 s; none when attached
        // for longer, drained or not attached.
        assert_eq!(next_change(&settling, &b), Some(Duration::from_millis(600)));
        assert_eq!(next_change(&UP, &b), None);
        assert_eq!(next_change(&not_attached, &b), None);
    }

    /// A VIP announced before and no longer in the table is withdrawn.
    #[test]
    fn a_vip_removed_from_the_table_is_withdrawn() {
        let c = config();
        let b = c.bgp.clone().unwrap();
        let h = vip_health(&c, &|_| Health::Up { weight: None });
        let v = decide(&h, [ip("10.0.1.200")], &UP, &b);
        assert_eq!(
            v[&ip("10.0.1.200")],
            Verdict::Withdraw(Reason::NotConfigured)
        );
        assert_eq!(v.len(), 4);
    }
}
