//! Graceful drain of a real server (`lb drain`, `POST /v1/drain`): its
//! weight goes to 0 (new connections stop, as `lb adm -e -w 0`), the agent
//! waits until its connections end or a timeout passes, then removes it
//! (as `lb adm -d`).
//!
//! This module is the pure part: the drain's state machine ([`Drain`]),
//! the wire types of the API ([`DrainRequest`], [`DrainInfo`],
//! [`DrainList`]), the command line's reading of the service and real
//! ([`target`]) and the progress line. The agent's task that follows the
//! maps and applies the changes is [`crate::agent::drain`].
//!
//! What "drained" means: no ESTABLISHED TCP connection left (ipvs's
//! ActiveConn, what `lb list` shows); for a UDP service, no UDP flow left
//! (ipvs counts those as InActConn, so ActiveConn alone would say "drained"
//! at once). Connections closing (FIN_WAIT, CLOSE) are not waited for: once
//! the real is removed their next packets are rescheduled, as ipvs does
//! for a removed destination.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    config::{Proto, RealKey, ServiceAddr},
    util::fmt_sock,
};

/// How long a drain waits by default (`lb drain --timeout`), seconds.
pub const DEFAULT_TIMEOUT_S: u64 = 300;
/// How often the agent reads the real's connection counts.
pub const POLL: Duration = Duration::from_secs(1);

/// Why a drain stopped before removing its real.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Cancel {
    /// The configuration was reloaded (the file's weights apply again).
    Reload,
    /// The real's weight was set to a non-zero value (`lb adm -e -w N`).
    Weight { weight: u32 },
    /// The real (or its service) left the table through another change
    /// (`lb adm -d`, `-D`, `-C`).
    RealGone,
}

impl std::fmt::Display for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cancel::Reload => f.write_str("cancelled by a reload of the configuration"),
            Cancel::Weight { weight } => {
                write!(f, "cancelled: the real's weight was set to {weight}")
            }
            Cancel::RealGone => {
                f.write_str("cancelled: the real was removed from the table by another change")
            }
        }
    }
}

/// How a drain ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// No connection was left; the real was removed.
    Drained,
    /// The timeout passed with connections left; the real was removed
    /// (their next packets are rescheduled to other reals).
    TimedOut,
    /// Stopped before the removal; the real stays (see [`Cancel`]).
    Cancelled(Cancel),
    /// The removal was refused (the message says why); the real stays at
    /// weight 0.
    Failed { error: String },
}

/// Where a drain is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    /// Weight 0, waiting for the connections to end.
    Draining,
    /// The real is being removed; the outcome once it is.
    Removing { outcome: Outcome },
    /// Over.
    Done { outcome: Outcome },
}

/// What the agent reads about the real at each poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The real's weight in the table the agent runs (file + runtime
    /// layer, before health): not 0 means someone gave it traffic again.
    pub weight: u32,
    /// TCP connections in ESTABLISHED (ipvs's ActiveConn).
    pub active: u64,
    /// The other tracked connections and UDP flows (ipvs's InActConn).
    pub inactive: u64,
}

/// What the agent does after an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Poll again after [`POLL`].
    Wait,
    /// Remove the real now (the phase is [`Phase::Removing`]).
    Remove,
    /// The drain is over: stop polling.
    Stop,
}

/// One drain: the state machine the agent's task drives. Times are
/// monotonic ([`Instant`]); the wall-clock start is kept for the API.
#[derive(Clone, Debug)]
pub struct Drain {
    /// Numbers drains within one agent, so a client following one never
    /// mistakes an older drain of the same real for it.
    pub id: u64,
    pub real: RealKey,
    pub started: Instant,
    /// Seconds since the Unix epoch at the start.
    pub started_unix_s: u64,
    /// `None`: wait for ever (`--timeout 0`).
    pub timeout: Option<Duration>,
    /// The real's weight before the drain set it to 0.
    pub weight_before: u32,
    pub phase: Phase,
    pub active: u64,
    pub inactive: u64,
    /// When the drain ended (phase [`Phase::Done`]).
    pub ended: Option<Instant>,
}

impl Drain {
    /// A drain that has just set the real's weight to 0.
    pub fn new(
        id: u64,
        real: RealKey,
        timeout_s: u64,
        weight_before: u32,
        now: Instant,
        started_unix_s: u64,
    ) -> Self {
        Drain {
            id,
            real,
            started: now,
            started_unix_s,
            timeout: (timeout_s > 0).then(|| Duration::from_secs(timeout_s)),
            weight_before,
            phase: Phase::Draining,
            active: 0,
            inactive: 0,
            ended: None,
        }
    }

    /// The connections waited for: ESTABLISHED TCP connections, or every
    /// flow of a UDP service (see the module's documentation).
    pub fn pending(&self) -> u64 {
        match self.real.0.proto {
            Proto::Tcp => self.active,
            Proto::Udp => self.active + self.inactive,
        }
    }

    /// Whether the drain still runs (draining or removing).
    pub fn running(&self) -> bool {
        !matches!(self.phase, Phase::Done { .. })
    }

    /// One poll: `obs` is `None` when the real is no longer in the table.
    /// Counts are taken before the timeout is looked at, so a real that
    /// drained in its last second counts as drained.
    pub fn observe(&mut self, obs: Option<Observation>, now: Instant) -> Step {
        if self.phase != Phase::Draining {
            return if matches!(self.phase, Phase::Removing { .. }) {
                Step::Remove
            } else {
                Step::Stop
            };
        }
        let Some(obs) = obs else {
            self.finish(Outcome::Cancelled(Cancel::RealGone), now);
            return Step::Stop;
        };
        if obs.weight != 0 {
            self.finish(
                Outcome::Cancelled(Cancel::Weight { weight: obs.weight }),
                now,
            );
            return Step::Stop;
        }
        self.active = obs.active;
        self.inactive = obs.inactive;
        let outcome = if self.pending() == 0 {
            Outcome::Drained
        } else if self
            .timeout
            .is_some_and(|t| now.saturating_duration_since(self.started) >= t)
        {
            Outcome::TimedOut
        } else {
            return Step::Wait;
        };
        self.phase = Phase::Removing { outcome };
        Step::Remove
    }

    /// A poll that could not read the counts (the maps, the reconciler):
    /// the timeout still applies, so a drain never outlives it.
    pub fn unreadable(&mut self, now: Instant) -> Step {
        match &self.phase {
            Phase::Draining => {}
            Phase::Removing { .. } => return Step::Remove,
            Phase::Done { .. } => return Step::Stop,
        }
        if self
            .timeout
            .is_some_and(|t| now.saturating_duration_since(self.started) >= t)
        {
            self.phase = Phase::Removing {
                outcome: Outcome::TimedOut,
            };
            return Step::Remove;
        }
        Step::Wait
    }

    /// The removal's result: `Err` carries the refusal's message.
    pub fn removed(&mut self, result: Result<(), String>, now: Instant) {
        let Phase::Removing { outcome } = &self.phase else {
            return;
        };
        let outcome = match result {
            Ok(()) => outcome.clone(),
            Err(error) => Outcome::Failed { error },
        };
        self.finish(outcome, now);
    }

    /// Cancels a drain that is still waiting; `false` when it is past that
    /// (removing the real, or over).
    pub fn cancel(&mut self, why: Cancel, now: Instant) -> bool {
        if self.phase != Phase::Draining {
            return false;
        }
        self.finish(Outcome::Cancelled(why), now);
        true
    }

    fn finish(&mut self, outcome: Outcome, now: Instant) {
        self.phase = Phase::Done { outcome };
        self.ended = Some(now);
    }

    /// The API's view at `now`.
    pub fn info(&self, now: Instant) -> DrainInfo {
        let (svc, addr, port) = self.real;
        DrainInfo {
            id: self.id,
            service: svc.to_string(),
            protocol: svc.proto.name().into(),
            service_address: svc.addr,
            service_port: svc.port,
            real: fmt_sock(addr, port),
            real_address: addr,
            real_port: port,
            phase: self.phase.clone(),
            started_unix_s: self.started_unix_s,
            elapsed_s: self
                .ended
                .unwrap_or(now)
                .saturating_duration_since(self.started)
                .as_secs_f64(),
            timeout_s: self.timeout.map(|t| t.as_secs()),
            active_conns: self.active,
            inactive_conns: self.inactive,
            weight_before: self.weight_before,
        }
    }
}

/// `POST /v1/drain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRequest {
    pub service: ServiceAddr,
    pub addr: IpAddr,
    pub port: u16,
    /// Seconds to wait for the connections to end; 0: for ever.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_S
}

/// One drain as the API shows it (`GET /v1/drain`, the reply of `POST
/// /v1/drain`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrainInfo {
    /// The drain's number in this agent.
    pub id: u64,
    /// `TCP IP:PORT`.
    pub service: String,
    pub protocol: String,
    pub service_address: IpAddr,
    pub service_port: u16,
    /// `IP:PORT` (IPv6 in brackets).
    pub real: String,
    pub real_address: IpAddr,
    pub real_port: u16,
    /// `{"state": "draining"}`, `{"state": "removing", "outcome": …}` or
    /// `{"state": "done", "outcome": {"result": "drained" | "timed_out" |
    /// "cancelled" (with "cause") | "failed" (with "error")}}`.
    #[serde(flatten)]
    pub phase: Phase,
    /// Wall-clock start, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Seconds from the start to now, or to the end once over.
    pub elapsed_s: f64,
    /// `null`: no timeout.
    pub timeout_s: Option<u64>,
    /// At the last poll.
    pub active_conns: u64,
    pub inactive_conns: u64,
    /// The weight the real had before the drain.
    pub weight_before: u32,
}

impl DrainInfo {
    /// Whether this drain is of `svc`'s real `addr:port`.
    pub fn is_of(&self, svc: &ServiceAddr, addr: IpAddr, port: u16) -> bool {
        self.protocol == svc.proto.name()
            && self.service_address == svc.addr
            && self.service_port == svc.port
            && self.real_address == addr
            && self.real_port == port
    }

    /// Whether it still runs.
    pub fn running(&self) -> bool {
        !matches!(self.phase, Phase::Done { .. })
    }

    /// One progress line: `draining TCP 10.0.0.1:80 real 10.0.0.2:80:
    /// active 3 inactive 1, 12s of 300s`.
    pub fn progress(&self) -> String {
        let of = self
            .timeout_s
            .map_or_else(|| " (no timeout)".to_string(), |t| format!(" of {t}s"));
        let state = match &self.phase {
            Phase::Draining => "draining",
            Phase::Removing { .. } => "removing",
            Phase::Done { .. } => "ended",
        };
        format!(
            "{state} {} real {}: active {} inactive {}, {:.0}s{of}",
            self.service, self.real, self.active_conns, self.inactive_conns, self.elapsed_s
        )
    }

    /// What became of it, one line (`lb drain`'s last line, the log).
    pub fn outcome_text(&self) -> String {
        let t = self.elapsed_s;
        match &self.phase {
            Phase::Draining => format!("draining for {t:.0}s"),
            Phase::Removing { .. } => format!("removing the real after {t:.0}s"),
            Phase::Done { outcome } => match outcome {
                Outcome::Drained => format!(
                    "drained after {t:.0}s (no active connection left); real removed"
                ),
                Outcome::TimedOut => format!(
                    "timed out after {t:.0}s with {} active / {} inactive connection(s) left; real removed",
                    self.active_conns, self.inactive_conns
                ),
                Outcome::Cancelled(c) => format!("{c} after {t:.0}s; the real stays"),
                Outcome::Failed { error } => format!(
                    "removing the real failed after {t:.0}s: {error}; it stays at weight 0"
                ),
            },
        }
    }

    /// The short marker `lb list` appends to the real's line.
    pub fn marker(&self) -> String {
        let of = self
            .timeout_s
            .map_or_else(|| "no timeout".to_string(), |t| format!("{t}s"));
        format!("draining {:.0}s/{of}", self.elapsed_s)
    }
}

/// `GET /v1/drain`: drains running and those ended in the last
/// [`crate::agent::drain::KEEP_ENDED`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DrainList {
    pub drains: Vec<DrainInfo>,
}

impl DrainList {
    /// The running drain of a real, if any.
    pub fn running_of(&self, svc: &ServiceAddr, addr: IpAddr, port: u16) -> Option<&DrainInfo> {
        self.drains
            .iter()
            .find(|d| d.running() && d.is_of(svc, addr, port))
    }
}

/// A command line naming a service and a real that `lb drain` cannot read;
/// the messages are ipvsadm's for the same text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("You need to supply the 'service-address' option (-t or -u) for the 'drain' command")]
    NoService,
    #[error("Multiple service addresses: give one of -t and -u")]
    TwoServices,
    #[error("illegal virtual server address[:port] specified")]
    BadService,
    #[error("illegal real server address[:port] specified")]
    BadReal,
}

/// Reads `-t|-u VIP:PORT` and `-r REAL[:PORT]` as `lb adm -d` reads them
/// (ipvsadm's `parse_service`: IPv4, `[IPv6]:PORT`, host and service
/// names); the real's port defaults to the service's, as ipvsadm's.
pub fn target(tcp: Option<&str>, udp: Option<&str>, real: &str) -> Result<RealKey, TargetError> {
    let (text, proto) = match (tcp, udp) {
        (Some(t), None) => (t, Proto::Tcp),
        (None, Some(u)) => (u, Proto::Udp),
        (None, None) => return Err(TargetError::NoService),
        (Some(_), Some(_)) => return Err(TargetError::TwoServices),
    };
    let (addr, port) =
        crate::adm::args::parse_addr_port(text, proto).ok_or(TargetError::BadService)?;
    // ipvsadm: a service without a port is port 0, which lb has not.
    let port = port.filter(|p| *p != 0).ok_or(TargetError::BadService)?;
    let svc = ServiceAddr { addr, port, proto };
    let (raddr, rport) =
        crate::adm::args::parse_addr_port(real, proto).ok_or(TargetError::BadReal)?;
    if raddr.is_ipv4() != addr.is_ipv4() {
        return Err(TargetError::BadReal);
    }
    Ok((svc, raddr, rport.unwrap_or(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(proto: Proto) -> RealKey {
        (
            ServiceAddr {
                addr: "10.0.0.1".parse().unwrap(),
                port: 80,
                proto,
            },
            "10.0.0.2".parse().unwrap(),
            80,
        )
    }

    fn obs(weight: u32, active: u64, inactive: u64) -> Option<Observation> {
        Some(Observation {
            weight,
            active,
            inactive,
        })
    }

    /// Input: a TCP drain with a 10 s timeout sees 2, then 1, then 0
    /// established connections (inactive ones left). Output: waits twice,
    /// then removes; the removal succeeding makes it Drained.
    #[test]
    fn drains_when_the_established_connections_end() {
        let t0 = Instant::now();
        let mut d = Drain::new(1, key(Proto::Tcp), 10, 3, t0, 0);
        assert_eq!(d.observe(obs(0, 2, 5), t0), Step::Wait);
        assert_eq!(d.observe(obs(0, 1, 5), t0 + POLL), Step::Wait);
        assert_eq!(d.observe(obs(0, 0, 7), t0 + 2 * POLL), Step::Remove);
        assert_eq!(
            d.phase,
            Phase::Removing {
                outcome: Outcome::Drained
            }
        );
        assert!(d.running());
        // Removing: a late cancel is too late; another poll removes again.
        assert!(!d.cancel(Cancel::Reload, t0 + 2 * POLL));
        assert_eq!(d.observe(obs(0, 0, 0), t0 + 2 * POLL), Step::Remove);
        d.removed(Ok(()), t0 + 3 * POLL);
        assert_eq!(
            d.phase,
            Phase::Done {
                outcome: Outcome::Drained
            }
        );
        assert!(!d.running());
        assert_eq!(d.observe(obs(0, 0, 0), t0 + 4 * POLL), Step::Stop);
        let info = d.info(t0 + 10 * POLL);
        assert_eq!((info.active_conns, info.inactive_conns), (0, 7));
        assert_eq!(info.elapsed_s, 3.0, "stops counting at the end");
        assert_eq!(info.weight_before, 3);
    }

    /// Input: connections stay past the timeout. Output: the real is
    /// removed with TimedOut; a drained count in the last poll wins.
    #[test]
    fn times_out_with_connections_left() {
        let t0 = Instant::now();
        let mut d = Drain::new(1, key(Proto::Tcp), 3, 1, t0, 0);
        assert_eq!(d.observe(obs(0, 1, 0), t0 + 2 * POLL), Step::Wait);
        assert_eq!(d.observe(obs(0, 1, 0), t0 + 3 * POLL), Step::Remove);
        d.removed(Ok(()), t0 + 3 * POLL);
        assert_eq!(
            d.phase,
            Phase::Done {
                outcome: Outcome::TimedOut
            }
        );
        let mut d = Drain::new(2, key(Proto::Tcp), 3, 1, t0, 0);
        assert_eq!(d.observe(obs(0, 0, 4), t0 + 9 * POLL), Step::Remove);
        assert_eq!(
            d.phase,
            Phase::Removing {
                outcome: Outcome::Drained
            }
        );
    }

    /// Input: polls that cannot read the counts. Output: it waits, and
    /// the timeout still ends it.
    #[test]
    fn unreadable_counts_still_time_out() {
        let t0 = Instant::now();
        let mut d = Drain::new(1, key(Proto::Tcp), 3, 1, t0, 0);
        assert_eq!(d.unreadable(t0 + POLL), Step::Wait);
        assert_eq!(d.unreadable(t0 + 3 * POLL), Step::Remove);
        assert_eq!(
            d.phase,
            Phase::Removing {
                outcome: Outcome::TimedOut
            }
        );
        let mut d = Drain::new(2, key(Proto::Tcp), 0, 1, t0, 0);
        assert_eq!(d.unreadable(t0 + Duration::from_secs(1000)), Step::Wait);
    }

    /// Input: timeout 0. Output: no timeout, however long it waits.
    #[test]
    fn timeout_zero_waits_for_ever() {
        let t0 = Instant::now();
        let mut d = Drain::new(1, key(Proto::Tcp), 0, 1, t0, 0);
        assert_eq!(d.timeout, None);
        let later = t0 + Duration::from_secs(86_400 * 30);
        assert_eq!(d.observe(obs(0, 1, 0), later), Step::Wait);
        assert_eq!(d.info(later).timeout_s, None);
        assert!(d.info(later).marker().contains("no timeout"));
    }

    /// Input: a UDP service with flows (all counted as inactive). Output:
    /// it waits for them, where ActiveConn alone would be 0 at once.
    #[test]
    fn udp_waits_for_its_flows() {
        let t0 = Instant::now();
        let mut d = Drain::new(1, key(Proto::Udp), 10, 1, t0, 0);
        assert_eq!(d.observe(obs(0, 0, 2), t0), Step::Wait);
        assert_eq!(d.observe(obs(0, 0, 0), t0 + POLL), Step::Remove);
    }

    /// Input: the weight comes back, the real disappears, a reload, a
    /// failed removal. Output: the outcome names each; nothing is removed
    /// after a cancel.
    #[test]
    fn cancels_and_failures_are_named() {
        let t0 = Instant::now();
        let mut d = Drain::new(1, key(Proto::Tcp), 10, 1, t0, 0);
        assert_eq!(d.observe(obs(4, 1, 0), t0), Step::Stop);
        assert_eq!(
            d.phase,
            Phase::Done {
                outcome: Outcome::Cancelled(Cancel::Weight { weight: 4 })
            }
        );
        let mut d = Drain::new(2, key(Proto::Tcp), 10, 1, t0, 0);
        assert_eq!(d.observe(None, t0), Step::Stop);
        assert_eq!(
            d.phase,
            Phase::Done {
                outcome: Outcome::Cancelled(Cancel::RealGone)
            }
        );
        let mut d = Drain::new(3, key(Proto::Tcp), 10, 1, t0, 0);
        assert!(d.cancel(Cancel::Reload, t0));
        assert!(!d.cancel(Cancel::Reload, t0), "only once");
        assert_eq!(d.observe(obs(0, 0, 0), t0 + POLL), Step::Stop);
        let mut d = Drain::new(4, key(Proto::Tcp), 10, 1, t0, 0);
        assert_eq!(d.observe(obs(0, 0, 0), t0), Step::Remove);
        d.removed(Err("No such destination".into()), t0);
        assert_eq!(
            d.phase,
            Phase::Done {
                outcome: Outcome::Failed {
                    error: "No such destination".into()
                }
            }
        );
    }

    /// The API's JSON: the phase flattened into the object.
    #[test]
    fn info_serialises_with_its_state() {
        let t0 = Instant::now();
        let mut d = Drain::new(7, key(Proto::Tcp), 300, 1, t0, 1_700_000_000);
        let v = serde_json::to_value(d.info(t0)).unwrap();
        assert_eq!(v["state"], "draining");
        assert_eq!(v["service"], "TCP 10.0.0.1:80");
        assert_eq!(v["real"], "10.0.0.2:80");
        assert_eq!(v["timeout_s"], 300);
        d.observe(obs(0, 0, 0), t0);
        d.removed(Ok(()), t0);
        let v = serde_json::to_value(d.info(t0)).unwrap();
        assert_eq!(v["state"], "done");
        assert_eq!(v["outcome"]["result"], "drained");
        let back: DrainInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, d.info(t0));
        let c = Outcome::Cancelled(Cancel::Weight { weight: 2 });
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["result"], "cancelled");
        assert_eq!(v["cause"], "weight");
        assert_eq!(v["weight"], 2);
    }

    /// Input: the command lines an ipvsadm user writes. Output: the real's
    /// key, its port defaulting to the service's; ipvsadm's messages.
    #[test]
    fn service_and_real_read_as_ipvsadm_reads_them() {
        let (svc, a, p) = target(Some("10.0.0.1:80"), None, "10.0.0.2").unwrap();
        assert_eq!(svc.to_string(), "TCP 10.0.0.1:80");
        assert_eq!((a, p), ("10.0.0.2".parse().unwrap(), 80));
        let (svc, _, p) = target(None, Some("10.0.0.1:53"), "10.0.0.2:5353").unwrap();
        assert_eq!((svc.proto, p), (Proto::Udp, 5353));
        let (svc, a, p) = target(Some("[fd00::1]:443"), None, "[fd00::2]:8443").unwrap();
        assert_eq!(svc.to_string(), "TCP [fd00::1]:443");
        assert_eq!((a, p), ("fd00::2".parse().unwrap(), 8443));
        // An unbracketed IPv6 real takes the service's port.
        assert_eq!(
            target(Some("[fd00::1]:443"), None, "fd00::2").unwrap().2,
            443
        );
        assert_eq!(target(None, None, "10.0.0.2"), Err(TargetError::NoService));
        assert_eq!(
            target(Some("10.0.0.1:80"), Some("10.0.0.1:80"), "10.0.0.2"),
            Err(TargetError::TwoServices)
        );
        assert_eq!(
            target(Some("10.0.0.1"), None, "10.0.0.2"),
            Err(TargetError::BadService),
            "no port"
        );
        assert_eq!(
            target(Some("10.0.0.1:99999"), None, "10.0.0.2"),
            Err(TargetError::BadService)
        );
        assert_eq!(
            target(Some("10.0.0.1:80"), None, "10.0.0.2:x y"),
            Err(TargetError::BadReal)
        );
        assert_eq!(
            target(Some("10.0.0.1:80"), None, "[fd00::2]:80"),
            Err(TargetError::BadReal),
            "the other family"
        );
        assert_eq!(
            TargetError::BadReal.to_string(),
            "illegal real server address[:port] specified"
        );
    }
}
