//! The overview's numbers: a sampler that reads the data plane's counters
//! every [`PERIOD`] and keeps the last [`KEEP`] samples, from which rates
//! (connections and bytes per second) and the per-service charts come.
//!
//! The sampler reads the pinned maps on a blocking thread with handles of
//! its own (as the metrics do) and publishes through a `watch` channel:
//! pages never wait for the maps.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::watch;

use crate::{
    api::{server::Api, views, ServiceStatus, WeightSource},
    config::{Fwd, Proto},
    list,
    util::fmt_sock,
};

/// Time between two samples.
pub const PERIOD: Duration = Duration::from_secs(2);
/// Samples kept: 5 minutes.
pub const KEEP: usize = 150;

/// Counters of one service or real at one sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Connections scheduled since the start.
    pub conns: u64,
    /// Bytes forwarded (both directions for NAT).
    pub bytes: u64,
    pub active: u64,
    pub inactive: u64,
}

/// One sample: totals by service (`TCP 10.0.0.1:80`) and by (service,
/// real `IP:PORT`).
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub at: Option<Instant>,
    pub services: BTreeMap<String, Totals>,
    pub reals: BTreeMap<(String, String), Totals>,
    /// `lb counters`: the data plane's global counters by name.
    pub counters: Vec<(&'static str, &'static str, u64)>,
}

/// The service key of a listed row, as [`crate::config::ServiceAddr`]'s
/// Display writes it (`TCP 10.0.0.1:80`, `UDP [2001:db8::1]:53`).
pub fn service_key(proto: u8, addr: IpAddr, port: u16) -> String {
    let name = Proto::from_number(proto).map_or("?", Proto::name);
    format!("{name} {}", fmt_sock(addr, port))
}

/// A [`Sample`] of a table snapshot and the global counters.
pub fn sample(snap: &list::Snapshot, global: &lb_common::GlobalStats, at: Instant) -> Sample {
    let mut s = Sample {
        at: Some(at),
        ..Default::default()
    };
    for svc in &snap.services {
        let key = service_key(svc.proto, svc.addr, svc.port);
        let mut t = Totals {
            conns: svc.stats.conns,
            bytes: svc.stats.bytes + svc.stats.out_bytes,
            ..Default::default()
        };
        for r in &svc.reals {
            t.active += r.active;
            t.inactive += r.inactive;
            s.reals.insert(
                (key.clone(), fmt_sock(r.addr, r.port)),
                Totals {
                    conns: r.stats.conns,
                    bytes: r.stats.bytes + r.stats.out_bytes,
                    active: r.active,
                    inactive: r.inactive,
                },
            );
        }
        s.services.insert(key, t);
    }
    s.counters = lb_common::GlobalStats::FIELDS
        .iter()
        .zip(global.values())
        .map(|((n, what), v)| (*n, *what, v))
        .collect();
    s
}

/// Per second between two totals `dt` apart (0 when a counter went back:
/// the service was re-made or zeroed).
fn rate(now: u64, before: u64, dt: f64) -> f64 {
    if dt <= 0.0 || now < before {
        0.0
    } else {
        (now - before) as f64 / dt
    }
}

/// The samples kept.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub samples: VecDeque<Sample>,
    /// The last read's error, if it failed.
    pub error: Option<String>,
}

impl History {
    fn push(&mut self, s: Sample) {
        if self.samples.len() == KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
        self.error = None;
    }

    fn last_two(&self) -> Option<(&Sample, &Sample, f64)> {
        let n = self.samples.len();
        if n < 2 {
            return None;
        }
        let (a, b) = (&self.samples[n - 2], &self.samples[n - 1]);
        let dt = b.at?.duration_since(a.at?).as_secs_f64();
        Some((a, b, dt))
    }

    /// (connections/s, bytes/s) of a service over the last period.
    pub fn service_rate(&self, key: &str) -> (f64, f64) {
        self.last_two()
            .and_then(|(a, b, dt)| {
                let (x, y) = (a.services.get(key)?, b.services.get(key)?);
                Some((rate(y.conns, x.conns, dt), rate(y.bytes, x.bytes, dt)))
            })
            .unwrap_or_default()
    }

    /// (connections/s, bytes/s) of a real of a service.
    pub fn real_rate(&self, svc: &str, real: &str) -> (f64, f64) {
        let k = (svc.to_string(), real.to_string());
        self.last_two()
            .and_then(|(a, b, dt)| {
                let (x, y) = (a.reals.get(&k)?, b.reals.get(&k)?);
                Some((rate(y.conns, x.conns, dt), rate(y.bytes, x.bytes, dt)))
            })
            .unwrap_or_default()
    }

    /// The service's connections/s and bytes/s over the samples kept,
    /// oldest first, as (seconds before the last sample, cps, bps).
    pub fn series(&self, key: &str) -> Vec<(f64, f64, f64)> {
        let Some(last) = self.samples.back().and_then(|s| s.at) else {
            return Vec::new();
        };
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .filter_map(|(a, b)| {
                let (ta, tb) = (a.at?, b.at?);
                let dt = tb.duration_since(ta).as_secs_f64();
                let (x, y) = (a.services.get(key)?, b.services.get(key)?);
                Some((
                    last.duration_since(tb).as_secs_f64(),
                    rate(y.conns, x.conns, dt),
                    rate(y.bytes, x.bytes, dt),
                ))
            })
            .collect()
    }
}

/// Starts the sampler; the receiver always holds the latest history.
pub fn spawn(bpffs: PathBuf) -> (watch::Receiver<Arc<History>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Arc::new(History::default()));
    let task = tokio::spawn(async move {
        let mut hist = History::default();
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match list::read_pinned(bpffs.clone()).await {
                Ok((snap, global)) => hist.push(sample(&snap, &global, Instant::now())),
                Err(e) => hist.error = Some(e.to_string()),
            }
            if tx.send(Arc::new(hist.clone())).is_err() {
                return;
            }
        }
    });
    (rx, task)
}

/// How a real stands, as the overview shows it: `down` when its checks
/// failed, `draining` at configured weight 0 (drained in the console or
/// by `lb adm -e -w 0`; `in_service` is false at weight 0, so it cannot
/// tell) or while `lb drain` runs, else `up` when in service.
pub fn health(r: &crate::api::RealStatus, draining: bool) -> &'static str {
    if matches!(r.weight_source, WeightSource::HealthDown { .. }) {
        "down"
    } else if draining || r.configured_weight == 0 {
        "draining"
    } else if r.in_service {
        "up"
    } else {
        "down"
    }
}

/// One real of the overview.
#[derive(Clone, Debug, Serialize)]
pub struct RealView {
    /// `IP:PORT`.
    pub real: String,
    /// `Route`, `Masq` or `Tunnel` (ipvsadm's names).
    pub fwd: String,
    pub weight: u32,
    /// `up`, `down` or `draining`.
    pub health: String,
    pub active: u64,
    pub inactive: u64,
    /// Connections scheduled to it since the start.
    pub conns: u64,
    /// Connections per second over the last [`PERIOD`].
    pub cps: f64,
    /// Bytes per second over the last [`PERIOD`].
    pub bps: f64,
}

/// One service of the overview.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceView {
    /// `TCP 10.0.0.1:80`.
    pub service: String,
    pub scheduler: String,
    /// `DR`, `NAT` or `TUN`.
    pub forwarding: String,
    pub origin: String,
    pub quorum_up: bool,
    pub active: u64,
    pub inactive: u64,
    pub conns: u64,
    pub cps: f64,
    pub bps: f64,
    /// (seconds ago, connections/s, bytes/s), oldest first.
    pub series: Vec<(f64, f64, f64)>,
    pub reals: Vec<RealView>,
}

/// The overview (`GET /` and `GET /live.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub services: Vec<ServiceView>,
    pub vrrp: Vec<views::VrrpInstance>,
    /// Connection sync, when on.
    pub sync: Option<crate::sync::Status>,
    /// Data-plane counters that are not zero: (name, what it counts, value).
    pub counters: Vec<(String, String, u64)>,
    /// Why the numbers are missing, if they are.
    pub error: Option<String>,
}

/// Builds the overview from the reconciler's services, the drains, the
/// VRRP engine and the sampler's history.
pub async fn overview(api: &Api, hist: &History) -> Overview {
    let ask = crate::metrics::ASK_TIMEOUT;
    let (services, vrrp) = tokio::join!(
        tokio::time::timeout(ask, api.core.services()),
        tokio::time::timeout(ask, api.vrrp_info()),
    );
    let mut error = hist.error.clone();
    let services: Vec<ServiceStatus> = match services {
        Ok(Ok(s)) => s,
        _ => {
            error = Some("the agent's reconciler did not answer".into());
            Vec::new()
        }
    };
    let drains = api.changer.drains.list();
    let last = hist.samples.back();
    let views = services
        .iter()
        .map(|s| {
            let totals = last
                .and_then(|l| l.services.get(&s.service))
                .copied()
                .unwrap_or_default();
            let (cps, bps) = hist.service_rate(&s.service);
            // The service's method (the status has no per-real one).
            let fwd = match s.forwarding.as_str() {
                "NAT" => Fwd::Nat,
                "TUN" => Fwd::Tun,
                _ => Fwd::Dr,
            }
            .ipvs_name();
            let reals = s
                .reals
                .iter()
                .map(|r| {
                    let t = last
                        .and_then(|l| l.reals.get(&(s.service.clone(), r.addr.clone())))
                        .copied()
                        .unwrap_or_default();
                    let (cps, bps) = hist.real_rate(&s.service, &r.addr);
                    let draining = drains.drains.iter().any(|d| {
                        matches!(d.phase, crate::drain::Phase::Draining)
                            && d.service == s.service
                            && d.real == r.addr
                    });
                    RealView {
                        real: r.addr.clone(),
                        fwd: fwd.into(),
                        weight: r.weight,
                        health: health(r, draining).into(),
                        active: t.active,
                        inactive: t.inactive,
                        conns: t.conns,
                        cps,
                        bps,
                    }
                })
                .collect();
            ServiceView {
                service: s.service.clone(),
                scheduler: s.scheduler.clone(),
                forwarding: s.forwarding.clone(),
                origin: s.origin.to_string(),
                quorum_up: s.quorum_up,
                active: totals.active,
                inactive: totals.inactive,
                conns: totals.conns,
                cps,
                bps,
                series: hist.series(&s.service),
                reals,
            }
        })
        .collect();
    let (vrrp, sync) = match vrrp {
        Ok(v) => (v.instances, v.sync),
        Err(_) => (Vec::new(), None),
    };
    Overview {
        services: views,
        vrrp,
        sync,
        counters: last
            .map(|l| {
                l.counters
                    .iter()
                    .filter(|(_, _, v)| *v != 0)
                    .map(|(n, w, v)| (n.to_string(), w.trim().to_string(), *v))
                    .collect()
            })
            .unwrap_or_default(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hist: &mut History, t: Instant, conns: u64, bytes: u64) {
        let mut s = Sample {
            at: Some(t),
            ..Default::default()
        };
        s.services.insert(
            "TCP 10.0.0.1:80".into(),
            Totals {
                conns,
                bytes,
                ..Default::default()
            },
        );
        hist.push(s);
    }

    #[test]
    fn rates_come_from_the_last_two_samples() {
        let mut h = History::default();
        let t = Instant::now();
        assert_eq!(h.service_rate("TCP 10.0.0.1:80"), (0.0, 0.0));
        at(&mut h, t, 10, 1000);
        at(&mut h, t + Duration::from_secs(2), 30, 5000);
        assert_eq!(h.service_rate("TCP 10.0.0.1:80"), (10.0, 2000.0));
        // Zeroed counters: no negative rate.
        at(&mut h, t + Duration::from_secs(4), 0, 0);
        assert_eq!(h.service_rate("TCP 10.0.0.1:80"), (0.0, 0.0));
        let series = h.series("TCP 10.0.0.1:80");
        assert_eq!(series, vec![(2.0, 10.0, 2000.0), (0.0, 0.0, 0.0)]);
        assert_eq!(h.service_rate("TCP 10.0.0.2:80"), (0.0, 0.0));
    }

    #[test]
    fn history_keeps_the_last_samples() {
        let mut h = History::default();
        let t = Instant::now();
        for i in 0..KEEP as u64 + 10 {
            at(&mut h, t + Duration::from_secs(2 * i), i, i);
        }
        assert_eq!(h.samples.len(), KEEP);
        assert_eq!(h.series("TCP 10.0.0.1:80").len(), KEEP - 1);
    }

    #[test]
    fn keys_match_the_services_display() {
        assert_eq!(
            service_key(6, "10.0.0.1".parse().unwrap(), 80),
            "TCP 10.0.0.1:80"
        );
        assert_eq!(
            service_key(17, "2001:db8::1".parse().unwrap(), 53),
            "UDP [2001:db8::1]:53"
        );
    }

    #[test]
    fn a_real_at_configured_weight_0_is_draining_unless_its_checks_failed() {
        let real = |configured_weight, weight_source, in_service| crate::api::RealStatus {
            addr: "10.1.0.2:80".into(),
            weight: if in_service { configured_weight } else { 0 },
            configured_weight,
            weight_source,
            in_service,
            reach: "mac 02:00:00:00:00:02 ifindex 2".into(),
            origin: crate::api::Origin::Runtime,
        };
        assert_eq!(health(&real(1, WeightSource::Runtime, true), false), "up");
        // Drained in the console (lb adm -e -w 0): weight 0, not in service.
        assert_eq!(
            health(&real(0, WeightSource::Runtime, false), false),
            "draining"
        );
        assert_eq!(
            health(&real(1, WeightSource::Runtime, true), true),
            "draining"
        );
        let down = WeightSource::HealthDown { inhibit: false };
        assert_eq!(health(&real(1, down.clone(), false), false), "down");
        assert_eq!(health(&real(0, down, false), false), "down");
        // Unresolved, say: out of service at a weight above 0.
        assert_eq!(health(&real(1, WeightSource::Config, false), false), "down");
    }
}
