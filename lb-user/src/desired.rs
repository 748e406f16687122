//! The desired state: what every source of intent asks of the data plane,
//! kept apart per source, and the one function that merges them.
//!
//! Sources, from the bottom up:
//! - the configuration file (keepalived.conf syntax), replaced whole by a
//!   reload;
//! - the runtime layer (`crate::runtime`): services and reals changed
//!   through the API (`lb adm`), on top of the file;
//! - health verdicts of the checkers (a real up, down, or with a dynamic
//!   weight), and the quorum rule built on them (keepalived's `quorum`,
//!   `hysteresis`, `sorry_server`);
//! - the neighbour table: where each real is reachable (DR needs its MAC).
//!
//! VRRP state does not enter the tables: it decides which node holds the
//! virtual addresses, and the data plane forwards whatever reaches it.
//!
//! Sources never write maps. [`Desired::effective`] merges them into the one
//! configuration the reconciler writes (`crate::reconciler`), and
//! [`Desired::status`] says, for every service and real, which source its
//! presence and weight come from.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    api,
    config::{Config, Fwd, RealKey, RealServer, ServiceAddr},
    health::{
        quorum::{Event, Quorum},
        Health,
    },
    runtime::{self, Layer, Runtime},
    state::L2,
    util::fmt_sock,
};

/// The configuration file as last applied.
#[derive(Clone, Debug)]
pub struct FileLayer {
    pub path: PathBuf,
    pub config: Config,
    pub applied_at: Instant,
}

/// The forwarding method a service's reals use: one name when they agree
/// (ipvs keeps it per real; `lb adm -a … -m` sets it so), `mixed` when
/// they do not, the service's `lb_kind` when it has none.
fn forwarding(vs: &crate::config::VirtualServer) -> String {
    let mut methods: Vec<&str> = vs
        .reals
        .iter()
        .map(|r| r.fwd_in(vs).keepalived_name())
        .collect();
    methods.sort_unstable();
    methods.dedup();
    match methods.as_slice() {
        [] => vs.fwd.keepalived_name().into(),
        [one] => (*one).into(),
        _ => "mixed".into(),
    }
}

/// Every source's contribution.
pub struct Desired {
    pub file: FileLayer,
    /// Changes made through the API, on top of the file.
    runtime: Runtime,
    /// The file with the runtime layer merged: what the checkers and the
    /// quorum work on.
    base: Config,
    /// Health of the reals that have checkers; the others are up.
    pub health: BTreeMap<RealKey, Health>,
    /// Where each real address is reachable (from the neighbour table).
    pub l2: BTreeMap<IpAddr, L2>,
    /// Quorum state of each service, remembered between merges (hysteresis).
    quorum: Quorum,
}

impl Desired {
    pub fn new(file: FileLayer, runtime: Runtime) -> Self {
        let base = runtime.merge(&file.config);
        Desired {
            file,
            runtime,
            base,
            health: BTreeMap::new(),
            l2: BTreeMap::new(),
            quorum: Quorum::default(),
        }
    }

    /// The file with the runtime layer on top.
    pub fn base(&self) -> &Config {
        &self.base
    }

    /// The runtime layer.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Replaces the file layer (a reload): runtime changes to the file's
    /// services are dropped, see [`Runtime::file_reloaded`]. Returns the
    /// runtime-made services the new file replaced.
    pub fn set_file(&mut self, file: FileLayer) -> Vec<ServiceAddr> {
        let replaced = self.runtime.file_reloaded(&file.config);
        self.file = file;
        self.base = self.runtime.merge(&self.file.config);
        replaced
    }

    /// Puts back a file and runtime layer saved before a change the data
    /// plane refused.
    pub fn restore(&mut self, file: FileLayer, runtime: Runtime) {
        self.file = file;
        self.runtime = runtime;
        self.base = self.runtime.merge(&self.file.config);
    }

    /// Applies a runtime change (see [`Runtime::apply`]).
    pub fn change(&mut self, change: &runtime::Change) -> Result<(), runtime::ChangeError> {
        self.runtime.apply(&self.file.config, change)?;
        self.base = self.runtime.merge(&self.file.config);
        Ok(())
    }

    /// A real's health as the checkers see it (reals without checkers are up).
    pub fn health_of(&self, k: &RealKey) -> Health {
        self.health
            .get(k)
            .copied()
            .unwrap_or(Health::Up { weight: None })
    }

    /// The configuration the data plane gets: the file's services, with the
    /// sorry server alone where the quorum is lost. Returns the quorum and
    /// real events (quorum_up/down, notify_up/down) since the last merge.
    pub fn effective(&mut self) -> (Config, Vec<Event>) {
        let health = &self.health;
        let of = |k: &RealKey| {
            health
                .get(k)
                .copied()
                .unwrap_or(Health::Up { weight: None })
        };
        self.quorum.evaluate(&self.base, &of)
    }

    /// Events to run on shutdown (`omega`).
    pub fn omega(&self) -> Vec<Event> {
        self.quorum.omega(&self.base)
    }

    /// Addresses whose neighbour entries the data plane needs, and the subset
    /// that DR services reach by MAC (only those are unusable unresolved).
    pub fn real_addrs(config: &Config) -> (Vec<IpAddr>, Vec<IpAddr>) {
        let mut all: Vec<IpAddr> = config
            .services
            .iter()
            .flat_map(|s| {
                s.reals
                    .iter()
                    .map(|r| r.addr)
                    .chain(s.sorry_server.map(|(a, _)| a))
            })
            .collect();
        all.sort();
        all.dedup();
        let mut dr: Vec<IpAddr> = config
            .services
            .iter()
            .flat_map(|s| {
                s.reals
                    .iter()
                    .filter(|r| r.fwd_in(s) == Fwd::Dr)
                    .map(|r| r.addr)
            })
            .collect();
        dr.sort();
        dr.dedup();
        (all, dr)
    }

    /// How `real` is reached by a service forwarding with `fwd`.
    fn reach(&self, fwd: Fwd, real: IpAddr) -> (String, bool) {
        match (fwd, self.l2.get(&real)) {
            (Fwd::Nat, _) => ("nat (next hop from the FIB)".into(), true),
            (Fwd::Tun, _) => match crate::state::source_toward(real) {
                Some(src) => (format!("tunnel from {src}"), true),
                None => ("tunnel: no route".into(), false),
            },
            (Fwd::Dr, Some(l)) => (
                format!("mac {} ifindex {}", crate::util::fmt_mac(&l.mac), l.ifindex),
                true,
            ),
            (Fwd::Dr, None) => ("unresolved".into(), false),
        }
    }

    /// Every service and real with the source of its presence and weight.
    /// `effective` is the last merge written to the data plane.
    pub fn status(&self, effective: &Config) -> Vec<api::ServiceStatus> {
        let eff: BTreeMap<ServiceAddr, _> = effective.services.iter().map(|v| (v.key, v)).collect();
        let mut out = Vec::new();
        for vs in &self.base.services {
            let running = eff.get(&vs.key);
            // Quorum lost with a sorry server: the merge replaced the reals.
            let sorry_only = running.is_some_and(|r| r.reals.iter().any(|x| x.sorry));
            let quorum_up = self.quorum.is_up(&vs.key).unwrap_or(true);
            let mut reals: Vec<api::RealStatus> = vs
                .reals
                .iter()
                .map(|r| self.real_status(vs.key, r.fwd_in(vs), r, sorry_only))
                .collect();
            if sorry_only {
                let s = &running.expect("sorry_only implies running").reals[0];
                let (reach, reachable) = self.reach(vs.fwd, s.addr);
                reals.push(api::RealStatus {
                    addr: fmt_sock(s.addr, s.port),
                    weight: s.weight,
                    configured_weight: s.weight,
                    weight_source: api::WeightSource::QuorumLost,
                    in_service: reachable,
                    reach,
                    origin: api::Origin::SorryServer {
                        at: vs.loc.to_string(),
                    },
                });
            }
            out.push(api::ServiceStatus {
                service: vs.key.to_string(),
                scheduler: vs.sched.name().into(),
                forwarding: forwarding(vs),
                origin: match self.runtime.layer(&vs.key) {
                    Layer::File => api::Origin::File {
                        at: vs.loc.to_string(),
                    },
                    Layer::Runtime => api::Origin::Runtime,
                    Layer::RuntimeOverFile => api::Origin::RuntimeOverFile {
                        at: self
                            .file
                            .config
                            .services
                            .iter()
                            .find(|f| f.key == vs.key)
                            .map(|f| f.loc.to_string())
                            .unwrap_or_default(),
                    },
                },
                quorum_up,
                reals,
            });
        }
        out
    }

    /// Whether `r`'s configured weight was set at runtime (a runtime real,
    /// or the file's real with another weight given by `lb adm -e`).
    fn weight_from_runtime(&self, svc: ServiceAddr, r: &RealServer) -> bool {
        if runtime::is_runtime(&r.loc) {
            return true;
        }
        self.runtime.layer(&svc) == Layer::RuntimeOverFile
            && self
                .file
                .config
                .services
                .iter()
                .filter(|v| v.key == svc)
                .flat_map(|v| v.reals.iter())
                .find(|f| (f.addr, f.port) == (r.addr, r.port))
                .is_some_and(|f| f.weight != r.weight)
    }

    fn real_status(
        &self,
        svc: ServiceAddr,
        fwd: Fwd,
        r: &RealServer,
        sorry_only: bool,
    ) -> api::RealStatus {
        let (reach, reachable) = self.reach(fwd, r.addr);
        let (weight, source, up) = if sorry_only {
            (0, api::WeightSource::QuorumLost, false)
        } else {
            match self.health_of(&(svc, r.addr, r.port)) {
                Health::Up { weight: None } if self.weight_from_runtime(svc, r) => {
                    (r.weight, api::WeightSource::Runtime, true)
                }
                Health::Up { weight: None } => (r.weight, api::WeightSource::Config, true),
                Health::Up { weight: Some(w) } => (w, api::WeightSource::DynamicCheck, true),
                Health::Down { inhibit } => (0, api::WeightSource::HealthDown { inhibit }, false),
            }
        };
        api::RealStatus {
            addr: fmt_sock(r.addr, r.port),
            weight,
            configured_weight: r.weight,
            weight_source: source,
            in_service: up && reachable && weight > 0,
            reach,
            origin: if runtime::is_runtime(&r.loc) {
                api::Origin::Runtime
            } else {
                api::Origin::File {
                    at: r.loc.to_string(),
                }
            },
        }
    }

    /// Seconds since the file was applied.
    pub fn file_age(&self) -> Duration {
        self.file.applied_at.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "virtual_server 10.0.0.1 80 {
  lb_algo rr
  lb_kind NAT
  protocol TCP
  quorum 2
  sorry_server 10.0.9.9 80
  real_server 10.0.1.1 80 {
    weight 1
  }
  real_server 10.0.1.2 80 {
    weight 3
    inhibit_on_failure
  }
}
";

    fn desired() -> Desired {
        let loaded = crate::config::load_str(CONF, std::path::Path::new("/etc/k.conf"));
        assert!(!loaded.has_errors(), "{:?}", loaded.diags);
        Desired::new(
            FileLayer {
                path: "/etc/k.conf".into(),
                config: loaded.config,
                applied_at: Instant::now(),
            },
            Runtime::default(),
        )
    }

    fn key(d: &Desired, i: usize) -> RealKey {
        let vs = &d.base().services[0];
        (vs.key, vs.reals[i].addr, vs.reals[i].port)
    }

    #[test]
    fn status_names_the_source_of_every_weight() {
        let mut d = desired();
        d.health.insert(key(&d, 0), Health::Up { weight: Some(7) });
        d.health.insert(key(&d, 1), Health::Down { inhibit: true });
        let (eff, _) = d.effective();
        let st = d.status(&eff);
        assert_eq!(st.len(), 1);
        let s = &st[0];
        assert_eq!(s.service, "TCP 10.0.0.1:80");
        assert_eq!(
            s.origin,
            api::Origin::File {
                at: "/etc/k.conf:1:1".into()
            }
        );
        assert!(s.quorum_up, "7 ≥ quorum 2");
        let r: Vec<_> = s
            .reals
            .iter()
            .map(|r| {
                (
                    r.addr.as_str(),
                    r.weight,
                    r.weight_source.clone(),
                    r.in_service,
                )
            })
            .collect();
        assert_eq!(
            r,
            vec![
                ("10.0.1.1:80", 7, api::WeightSource::DynamicCheck, true),
                (
                    "10.0.1.2:80",
                    0,
                    api::WeightSource::HealthDown { inhibit: true },
                    false
                ),
            ]
        );
        assert_eq!(
            s.reals[1].origin,
            api::Origin::File {
                at: "/etc/k.conf:10:3".into()
            }
        );
    }

    #[test]
    fn a_lost_quorum_shows_the_sorry_server_in_place_of_the_reals() {
        let mut d = desired();
        d.health.insert(key(&d, 0), Health::Down { inhibit: false });
        d.health.insert(key(&d, 1), Health::Down { inhibit: false });
        let (eff, events) = d.effective();
        assert!(
            events.iter().any(|e| matches!(e, Event::QuorumDown(..))),
            "{events:?}"
        );
        let s = &d.status(&eff)[0];
        assert!(!s.quorum_up);
        let r: Vec<_> = s
            .reals
            .iter()
            .map(|r| (r.addr.as_str(), r.weight_source.clone(), r.in_service))
            .collect();
        assert_eq!(
            r,
            vec![
                ("10.0.1.1:80", api::WeightSource::QuorumLost, false),
                ("10.0.1.2:80", api::WeightSource::QuorumLost, false),
                ("10.0.9.9:80", api::WeightSource::QuorumLost, true),
            ]
        );
        assert!(matches!(s.reals[2].origin, api::Origin::SorryServer { .. }));
        // Back: the file's reals again, from their configured weights.
        d.health.clear();
        let (eff, _) = d.effective();
        let s = &d.status(&eff)[0];
        assert!(s.quorum_up);
        assert_eq!(s.reals.len(), 2);
        assert_eq!(s.reals[1].weight, 3);
        assert_eq!(s.reals[1].weight_source, api::WeightSource::Config);
    }
}
