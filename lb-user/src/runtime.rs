//! The runtime layer: virtual services and real servers changed while the
//! agent runs, through the API (`lb adm`, ipvsadm's command line; the web
//! console later), kept apart from the configuration file.
//!
//! Rules (README, *Runtime changes*), as keepalived and ipvsadm behave when
//! an operator uses ipvsadm beside keepalived:
//! - a service created at runtime (its address, port and protocol not in
//!   the file) survives reloads of the file, and agent restarts (saved under
//!   the state directory, [`save`] / [`load`]);
//! - a runtime change to a service the file defines (edited, deleted, reals
//!   added, changed or removed) lasts until the next reload re-applies the
//!   file, or the next start (it is not saved);
//! - a service created at runtime that a later reload's file defines too is
//!   replaced by the file's.
//!
//! Each change is checked as ipvs checks the same request, with ipvs's
//! errors ([`ChangeError`], the messages of libipvs's `ipvs_strerror`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use crate::config::{
    check, syntax::Loc, Config, Fwd, Proto, RealServer, Sched, ServiceAddr, VirtualServer,
};

/// The file name of the saved runtime layer inside the state directory.
pub const STATE_FILE: &str = "runtime.json";
/// `format` of the saved runtime layer.
pub const FORMAT: &str = "lb-runtime/1";
/// Default state directory (`lb run --state-dir`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lb";

/// The location runtime-made services and reals carry in the model, so
/// that [`is_runtime`] tells them from the file's.
pub fn runtime_loc() -> Loc {
    Loc {
        file: Arc::new(PathBuf::from(RUNTIME_MARK)),
        line: 0,
        col: 0,
    }
}

const RUNTIME_MARK: &str = "<runtime>";

/// Whether a model location is [`runtime_loc`].
pub fn is_runtime(loc: &Loc) -> bool {
    loc.line == 0 && loc.file.as_os_str() == RUNTIME_MARK
}

/// A virtual service as ipvsadm's `-A` / `-E` send it: every field set
/// (ipvsadm fills what the line leaves out: scheduler `wlc`, not
/// persistent, the whole client address).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceSpec {
    pub service: ServiceAddr,
    pub sched: Sched,
    /// sh / mh hash the client's port too (`-b sh-port` / `mh-port`).
    #[serde(default)]
    pub hash_port: bool,
    /// `-b sh-fallback` / `mh-fallback` given (lb always falls back; kept
    /// for listings).
    #[serde(default)]
    pub hash_fallback: bool,
    /// Persistence timeout, seconds (`-p`); `None`: not persistent.
    #[serde(default)]
    pub persistence_timeout: Option<u32>,
    /// Persistence granularity as a prefix length (`-M`); `None`: the whole
    /// client address.
    #[serde(default)]
    pub persistence_prefix: Option<u8>,
}

/// A real server as ipvsadm's `-a` / `-e` send it: every field set
/// (ipvsadm's defaults: `-g`, weight 1, no thresholds). For DR and TUN the
/// port is the service's (ipvsadm sets it so).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RealSpec {
    pub addr: IpAddr,
    pub port: u16,
    pub fwd: Fwd,
    /// 0 to 65,535; 0: no new connections.
    pub weight: u32,
    /// Connections (active + inactive) at which the real takes no more; 0: none.
    #[serde(default)]
    pub u_threshold: u32,
    /// Connections below which an overloaded real takes new ones again.
    #[serde(default)]
    pub l_threshold: u32,
    /// Its health checker (lb's own: ipvs has none). Absent in JSON when
    /// none, so saved layers and clients from before checkers still work.
    /// In [`Change::EditReal`] absence means "keep the real's checkers as
    /// they are" (ipvsadm's `-e` knows nothing of checkers);
    /// [`Change::SetCheck`] replaces or removes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckSpec>,
}

/// A health checker for a real of the runtime layer: keepalived's
/// `TCP_CHECK` or `HTTP_GET` with one url, run by the agent exactly as the
/// same checker written in keepalived.conf. Unset timings take
/// keepalived's defaults for the checker (`delay_loop` 60 s,
/// `connect_timeout` 5 s, `retry` 1, `delay_before_retry` 1 s for
/// TCP_CHECK and 3 s for HTTP_GET; see [`crate::health::Schedule`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckSpec {
    #[serde(flatten)]
    pub kind: CheckSpecKind,
    /// Port probed (`connect_port`); `None`: the real's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_port: Option<u16>,
    /// `connect_timeout`, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u32>,
    /// `delay_loop`: time between probes, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_loop_ms: Option<u32>,
    /// `retry`: failed probes retried before the checker goes down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u32>,
    /// `delay_before_retry`, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_before_retry_ms: Option<u32>,
}

/// What a [`CheckSpec`] probes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum CheckSpecKind {
    /// `TCP_CHECK`: a TCP connection is accepted within the timeout.
    #[serde(rename = "TCP_CHECK")]
    Tcp,
    /// `HTTP_GET` with one `url { path PATH; status_code STATUS }`: an
    /// HTTP/1.0 GET of `path` answered with exactly `status`.
    #[serde(rename = "HTTP_GET")]
    Http {
        /// Absolute path of the request (starts with '/').
        path: String,
        /// Expected status code, 100 to 599 (keepalived's range).
        #[serde(default = "default_status")]
        status: u16,
    },
}

fn default_status() -> u16 {
    200
}

impl CheckSpec {
    /// A TCP_CHECK with keepalived's default timing.
    pub fn tcp() -> Self {
        Self::of_kind(CheckSpecKind::Tcp)
    }

    /// An HTTP_GET of `path` expecting `status`, keepalived's default timing.
    pub fn http(path: &str, status: u16) -> Self {
        Self::of_kind(CheckSpecKind::Http {
            path: path.into(),
            status,
        })
    }

    fn of_kind(kind: CheckSpecKind) -> Self {
        CheckSpec {
            kind,
            connect_port: None,
            connect_timeout_ms: None,
            delay_loop_ms: None,
            retry: None,
            delay_before_retry_ms: None,
        }
    }

    /// The checker of the configuration model this spec stands for (what a
    /// keepalived.conf with the same `TCP_CHECK` / `HTTP_GET` block gives).
    pub fn to_check(&self) -> check::Check {
        let ms = |v: Option<u32>| v.map(|m| std::time::Duration::from_millis(m.into()));
        check::Check {
            kind: match &self.kind {
                CheckSpecKind::Tcp => check::CheckKind::Tcp,
                CheckSpecKind::Http { path, status } => check::CheckKind::Http {
                    urls: vec![check::Url {
                        path: path.clone(),
                        status: vec![(*status, *status)],
                        digest: None,
                    }],
                    virtualhost: None,
                    tls: false,
                    sni: false,
                    http11: false,
                },
            },
            fast_recovery: false,
            connect_ip: None,
            connect_port: self.connect_port,
            bindto: None,
            timing: check::Timing {
                delay_loop: ms(self.delay_loop_ms),
                connect_timeout: ms(self.connect_timeout_ms),
                retry: self.retry,
                delay_before_retry: ms(self.delay_before_retry_ms),
                warmup: None,
            },
        }
    }

    /// The spec of a model checker, when one stands for it exactly (a
    /// TCP_CHECK or an HTTP_GET of one url with one status, no other
    /// option, timings in whole milliseconds): `to_check` gives `c` back.
    pub fn of(c: &check::Check) -> Option<Self> {
        let ms = |d: Option<std::time::Duration>| -> Option<Option<u32>> {
            match d {
                None => Some(None),
                Some(d) if d.subsec_nanos() % 1_000_000 == 0 => {
                    u32::try_from(d.as_millis()).ok().map(Some)
                }
                Some(_) => None,
            }
        };
        let kind = match &c.kind {
            check::CheckKind::Tcp => CheckSpecKind::Tcp,
            check::CheckKind::Http { urls, .. } => match urls.as_slice() {
                [u] => match u.status.as_slice() {
                    [(a, b)] if a == b => CheckSpecKind::Http {
                        path: u.path.clone(),
                        status: *a,
                    },
                    _ => return None,
                },
                _ => return None,
            },
            _ => return None,
        };
        let spec = CheckSpec {
            kind,
            connect_port: c.connect_port,
            connect_timeout_ms: ms(c.timing.connect_timeout)?,
            delay_loop_ms: ms(c.timing.delay_loop)?,
            retry: c.timing.retry,
            delay_before_retry_ms: ms(c.timing.delay_before_retry)?,
        };
        (spec.to_check() == *c).then_some(spec)
    }

    /// What neither keepalived nor the agent would run, as the message of
    /// [`ChangeError::Refused`].
    fn invalid(&self) -> Option<String> {
        if let CheckSpecKind::Http { path, status } = &self.kind {
            if !path.starts_with('/') {
                return Some(format!(
                    "HTTP_GET path '{}': must start with '/'",
                    path.escape_debug()
                ));
            }
            if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Some(format!(
                    "HTTP_GET path '{}': no spaces or control characters (percent-encode them)",
                    path.escape_debug()
                ));
            }
            if !(100..=599).contains(status) {
                return Some(format!("HTTP_GET status {status}: expected 100 to 599"));
            }
        }
        if self.connect_port == Some(0) {
            return Some("checker connect_port 0: expected 1 to 65535".into());
        }
        for (what, v) in [
            ("connect_timeout", self.connect_timeout_ms),
            ("delay_loop", self.delay_loop_ms),
        ] {
            if v == Some(0) {
                return Some(format!("checker {what} 0 ms: must be greater than 0"));
            }
        }
        // keepalived's connect_timeout is at most UINT_MAX µs.
        if self
            .connect_timeout_ms
            .is_some_and(|t| u64::from(t) * 1000 > u64::from(u32::MAX))
        {
            return Some(format!(
                "checker connect_timeout {} ms: at most 4294967 ms (keepalived's limit)",
                self.connect_timeout_ms.unwrap_or_default()
            ));
        }
        None
    }
}

/// One change of the table: the ipvsadm commands that change it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// `-A`: a new service (no reals yet).
    AddService { spec: ServiceSpec },
    /// `-E`: replace a service's scheduler and persistence.
    EditService { spec: ServiceSpec },
    /// `-D`.
    DeleteService { service: ServiceAddr },
    /// `-C`: every service, the file's included (until the next reload).
    Flush,
    /// `-a`.
    AddReal {
        service: ServiceAddr,
        real: RealSpec,
    },
    /// `-e`: replace the real's forwarding, weight and thresholds; its
    /// checkers too when `real.check` is given, else they are kept.
    EditReal {
        service: ServiceAddr,
        real: RealSpec,
    },
    /// Give a real this checker in place of the ones it has (`None`: no
    /// checker; the real then counts as up).
    SetCheck {
        service: ServiceAddr,
        addr: IpAddr,
        port: u16,
        #[serde(default)]
        check: Option<CheckSpec>,
    },
    /// `-d`.
    DeleteReal {
        service: ServiceAddr,
        addr: IpAddr,
        port: u16,
    },
    /// `-Z`: zero the counters of one service (and its reals) or of all.
    Zero { service: Option<ServiceAddr> },
    /// `--set TCP TCPFIN UDP`: idle timeouts in seconds; 0 leaves one as it is.
    SetTimeouts {
        tcp_s: u32,
        tcp_fin_s: u32,
        udp_s: u32,
    },
}

/// Why a change was refused. The first five are ipvs's answers to the same
/// request, with libipvs's messages (what ipvsadm prints).
#[derive(Clone, Debug, thiserror::Error, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum ChangeError {
    #[error("Service already exists")]
    ServiceExists,
    #[error("No such service")]
    NoSuchService,
    #[error("Service not defined")]
    ServiceNotDefined,
    #[error("Destination already exists")]
    DestinationExists,
    #[error("No such destination")]
    NoSuchDestination,
    /// A lower threshold above the upper one (the kernel's ERANGE, which
    /// ipvsadm prints with strerror).
    #[error("Numerical result out of range")]
    OutOfRange,
    /// A real of the other address family than its service (ipvs:
    /// EAFNOSUPPORT).
    #[error("Operation not supported with specified address family")]
    AddressFamily,
    /// Valid for ipvs, not for lb (named), or refused by the data plane
    /// (its limits); nothing changed.
    #[error("{0}")]
    Refused(String),
}

/// A service the runtime layer holds.
#[derive(Clone, Debug)]
struct Entry {
    vs: VirtualServer,
    /// The file defines this service: a runtime change to it, dropped at
    /// the next reload (and not saved).
    over_file: bool,
}

/// The runtime layer.
#[derive(Clone, Debug, Default)]
pub struct Runtime {
    services: BTreeMap<ServiceAddr, Entry>,
    /// File services deleted at runtime (until the next reload).
    deleted: BTreeSet<ServiceAddr>,
}

/// Where a service of the merged table comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    File,
    /// Created at runtime.
    Runtime,
    /// Defined by the file, changed at runtime (until the next reload).
    RuntimeOverFile,
}

impl Runtime {
    /// The table the agent runs: the file's services, with runtime changes
    /// on top; VRRP and the other blocks are the file's.
    pub fn merge(&self, file: &Config) -> Config {
        let mut services = Vec::with_capacity(file.services.len() + self.services.len());
        let mut in_file = BTreeSet::new();
        for vs in &file.services {
            in_file.insert(vs.key);
            if self.deleted.contains(&vs.key) {
                continue;
            }
            match self.services.get(&vs.key) {
                Some(e) => services.push(e.vs.clone()),
                None => services.push(vs.clone()),
            }
        }
        for (k, e) in &self.services {
            if !in_file.contains(k) {
                services.push(e.vs.clone());
            }
        }
        Config {
            services,
            vrrp: file.vrrp.clone(),
            nodes: file.nodes.clone(),
            bgp: file.bgp.clone(),
        }
    }

    /// Where the service `key` of the merged table comes from.
    pub fn layer(&self, key: &ServiceAddr) -> Layer {
        match self.services.get(key) {
            Some(Entry {
                over_file: true, ..
            }) => Layer::RuntimeOverFile,
            Some(_) => Layer::Runtime,
            None => Layer::File,
        }
    }

    /// Whether nothing was changed at runtime.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.deleted.is_empty()
    }

    /// Applies `change` to the table `file` + this layer, as ipvs would
    /// apply it to its table. [`Change::Zero`] and [`Change::SetTimeouts`]
    /// change no service: only their service is checked here.
    pub fn apply(&mut self, file: &Config, change: &Change) -> Result<(), ChangeError> {
        validate(change)?;
        let in_file = |k: &ServiceAddr| file.services.iter().any(|v| v.key == *k);
        let merged = self.merge(file);
        let current = |k: &ServiceAddr| merged.services.iter().find(|v| v.key == *k).cloned();
        match change {
            Change::AddService { spec } => {
                if current(&spec.service).is_some() {
                    return Err(ChangeError::ServiceExists);
                }
                self.put(new_service(spec), in_file(&spec.service));
            }
            Change::EditService { spec } => {
                let mut vs = current(&spec.service).ok_or(ChangeError::NoSuchService)?;
                vs.sched = spec.sched;
                vs.hash_port = spec.hash_port;
                vs.hash_fallback = spec.hash_fallback;
                vs.persistence_timeout = spec.persistence_timeout;
                vs.persistence_prefix = spec.persistence_prefix;
                self.put(vs, in_file(&spec.service));
            }
            Change::DeleteService { service } => {
                current(service).ok_or(ChangeError::NoSuchService)?;
                self.services.remove(service);
                if in_file(service) {
                    self.deleted.insert(*service);
                }
            }
            Change::Flush => {
                self.services.clear();
                self.deleted = file.services.iter().map(|v| v.key).collect();
            }
            Change::AddReal { service, real } => {
                let mut vs = current(service).ok_or(ChangeError::ServiceNotDefined)?;
                check_family(service, real.addr)?;
                if vs
                    .reals
                    .iter()
                    .any(|r| (r.addr, r.port) == (real.addr, real.port))
                {
                    return Err(ChangeError::DestinationExists);
                }
                vs.reals.push(new_real(real));
                self.put(vs, in_file(service));
            }
            Change::EditReal { service, real } => {
                let mut vs = current(service).ok_or(ChangeError::ServiceNotDefined)?;
                let r = vs
                    .reals
                    .iter_mut()
                    .find(|r| (r.addr, r.port) == (real.addr, real.port))
                    .ok_or(ChangeError::NoSuchDestination)?;
                r.fwd = Some(real.fwd);
                r.weight = real.weight;
                r.u_threshold = real.u_threshold;
                r.l_threshold = real.l_threshold;
                // ipvsadm's -e (and any client that knows nothing of
                // checkers) sends none: the real's checkers stay. Decided
                // here rather than in each client, which would have to read
                // the real first and could race another change.
                if let Some(c) = &real.check {
                    r.checks = vec![c.to_check()];
                }
                self.put(vs, in_file(service));
            }
            Change::SetCheck {
                service,
                addr,
                port,
                check,
            } => {
                let mut vs = current(service).ok_or(ChangeError::ServiceNotDefined)?;
                let r = vs
                    .reals
                    .iter_mut()
                    .find(|r| !r.sorry && (r.addr, r.port) == (*addr, *port))
                    .ok_or(ChangeError::NoSuchDestination)?;
                r.checks = check.iter().map(CheckSpec::to_check).collect();
                self.put(vs, in_file(service));
            }
            Change::DeleteReal {
                service,
                addr,
                port,
            } => {
                let mut vs = current(service).ok_or(ChangeError::ServiceNotDefined)?;
                let before = vs.reals.len();
                vs.reals.retain(|r| (r.addr, r.port) != (*addr, *port));
                if vs.reals.len() == before {
                    return Err(ChangeError::NoSuchDestination);
                }
                self.put(vs, in_file(service));
            }
            Change::Zero { service } => {
                if let Some(s) = service {
                    current(s).ok_or(ChangeError::NoSuchService)?;
                }
            }
            Change::SetTimeouts { .. } => {}
        }
        Ok(())
    }

    fn put(&mut self, vs: VirtualServer, over_file: bool) {
        self.deleted.remove(&vs.key);
        self.services.insert(vs.key, Entry { vs, over_file });
    }

    /// A reload re-applies the file: runtime changes to the file's services
    /// are dropped, and services created at runtime that the new file
    /// defines give way to the file's. Returns those (to be logged).
    pub fn file_reloaded(&mut self, new_file: &Config) -> Vec<ServiceAddr> {
        self.deleted.clear();
        self.services.retain(|_, e| !e.over_file);
        let mut replaced = Vec::new();
        for vs in &new_file.services {
            if self.services.remove(&vs.key).is_some() {
                replaced.push(vs.key);
            }
        }
        replaced
    }

    /// What is saved: the services created at runtime.
    pub fn record(&self) -> Record {
        Record {
            format: FORMAT.into(),
            services: self
                .services
                .values()
                .filter(|e| !e.over_file)
                .map(|e| ServiceRecord::of(&e.vs))
                .collect(),
        }
    }

    /// The layer a saved [`Record`] describes, applied over `file` (a
    /// saved service the file now defines gives way to the file's).
    pub fn from_record(rec: &Record, file: &Config) -> (Self, Vec<ServiceAddr>) {
        let mut rt = Runtime::default();
        let mut replaced = Vec::new();
        for s in &rec.services {
            if file.services.iter().any(|v| v.key == s.spec.service) {
                replaced.push(s.spec.service);
                continue;
            }
            let mut vs = new_service(&s.spec);
            vs.reals = s.reals.iter().map(new_real).collect();
            rt.services.insert(
                vs.key,
                Entry {
                    vs,
                    over_file: false,
                },
            );
        }
        (rt, replaced)
    }
}

/// Values the API could carry that neither ipvs nor lb's data plane
/// takes (`lb adm` refuses them before they are sent; other clients reach
/// this).
fn validate(change: &Change) -> Result<(), ChangeError> {
    let refuse = |m: String| Err(ChangeError::Refused(m));
    match change {
        Change::AddService { spec } | Change::EditService { spec } => {
            if let Some(t) = spec.persistence_timeout {
                if t == 0 || t > MAX_PERSISTENCE_S {
                    return refuse(format!(
                        "persistence timeout {t}: expected 1 to {MAX_PERSISTENCE_S} seconds"
                    ));
                }
            }
            if spec.service.port == 0 {
                return refuse(
                    "port 0 (every port of the address) is not supported: lb's data plane selects a service by address, protocol and port; add one service per port".into(),
                );
            }
            let width = if spec.service.addr.is_ipv4() { 32 } else { 128 };
            if spec.persistence_prefix.is_some_and(|p| p > width) {
                return refuse(format!("persistence prefix longer than /{width}"));
            }
        }
        Change::AddReal { real, .. } | Change::EditReal { real, .. } => {
            if real.weight > crate::config::MAX_WEIGHT {
                return refuse(format!(
                    "weight {}: lb's schedulers take 0 to {}",
                    real.weight,
                    crate::config::MAX_WEIGHT
                ));
            }
            if real.u_threshold > i32::MAX as u32 || real.l_threshold > i32::MAX as u32 {
                return refuse("thresholds go up to 2147483647, as in ipvs".into());
            }
            if real.l_threshold > real.u_threshold {
                return Err(ChangeError::OutOfRange);
            }
            if let Some(why) = real.check.as_ref().and_then(CheckSpec::invalid) {
                return refuse(why);
            }
        }
        Change::SetCheck { check: Some(c), .. } => {
            if let Some(why) = c.invalid() {
                return refuse(why);
            }
        }
        Change::SetTimeouts {
            tcp_s,
            tcp_fin_s,
            udp_s,
        } if [tcp_s, tcp_fin_s, udp_s]
            .iter()
            .any(|t| **t > MAX_PERSISTENCE_S) =>
        {
            return refuse(format!("timeouts go up to {MAX_PERSISTENCE_S} seconds"));
        }
        _ => {}
    }
    Ok(())
}

/// Longest persistence and idle timeout, seconds (ipvsadm's 31 days).
pub const MAX_PERSISTENCE_S: u32 = 86_400 * 31;

fn check_family(service: &ServiceAddr, real: IpAddr) -> Result<(), ChangeError> {
    if service.addr.is_ipv4() != real.is_ipv4() {
        return Err(ChangeError::AddressFamily);
    }
    Ok(())
}

/// A service made at runtime: what ipvs has, and nothing of keepalived's
/// (no quorum: ipvs has none, so a service without reals yet is not
/// "quorum lost"; no sorry server, no checkers).
fn new_service(spec: &ServiceSpec) -> VirtualServer {
    VirtualServer {
        key: spec.service,
        sched: spec.sched,
        // Each real carries its own method; this is ipvsadm's default.
        fwd: Fwd::Dr,
        hash_port: spec.hash_port,
        hash_fallback: spec.hash_fallback,
        persistence_timeout: spec.persistence_timeout,
        persistence_prefix: spec.persistence_prefix,
        timing: check::Timing::default(),
        alpha: false,
        inhibit_on_failure: false,
        sorry_server: None,
        quorum: 0,
        hysteresis: 0,
        quorum_up: None,
        quorum_down: None,
        omega: false,
        reals: Vec::new(),
        loc: runtime_loc(),
    }
}

/// The real `key` of `table` as `lb adm -e` would send it (its forwarding
/// method resolved against the service's); ipvs's errors for `-e` when the
/// service (`Service not defined`) or the real (`No such destination`) is
/// not there. The sorry server is not a real of the service.
pub fn real_spec(table: &Config, key: &crate::config::RealKey) -> Result<RealSpec, ChangeError> {
    let (svc, addr, port) = key;
    let vs = table
        .services
        .iter()
        .find(|v| v.key == *svc)
        .ok_or(ChangeError::ServiceNotDefined)?;
    let r = vs
        .reals
        .iter()
        .find(|r| !r.sorry && (r.addr, r.port) == (*addr, *port))
        .ok_or(ChangeError::NoSuchDestination)?;
    Ok(RealSpec::of(r, vs))
}

impl RealSpec {
    /// The spec of real `r` of service `vs` (its forwarding method resolved).
    pub fn of(r: &RealServer, vs: &VirtualServer) -> Self {
        RealSpec {
            addr: r.addr,
            port: r.port,
            fwd: r.fwd_in(vs),
            weight: r.weight,
            u_threshold: r.u_threshold,
            l_threshold: r.l_threshold,
            // One checker a spec stands for exactly; otherwise (none,
            // several, options a spec lacks) none, which an EditReal sent
            // back reads as "keep them".
            check: match r.checks.as_slice() {
                [c] => CheckSpec::of(c),
                _ => None,
            },
        }
    }
}

fn new_real(spec: &RealSpec) -> RealServer {
    RealServer {
        addr: spec.addr,
        port: spec.port,
        weight: spec.weight,
        fwd: Some(spec.fwd),
        u_threshold: spec.u_threshold,
        l_threshold: spec.l_threshold,
        checks: spec.check.iter().map(CheckSpec::to_check).collect(),
        timing: check::Timing::default(),
        inhibit_on_failure: None,
        notify_up: None,
        notify_down: None,
        sorry: false,
        loc: runtime_loc(),
    }
}

/// A saved service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceRecord {
    #[serde(flatten)]
    pub spec: ServiceSpec,
    pub reals: Vec<RealSpec>,
}

impl ServiceRecord {
    fn of(vs: &VirtualServer) -> Self {
        ServiceRecord {
            spec: ServiceSpec {
                service: vs.key,
                sched: vs.sched,
                hash_port: vs.hash_port,
                hash_fallback: vs.hash_fallback,
                persistence_timeout: vs.persistence_timeout,
                persistence_prefix: vs.persistence_prefix,
            },
            reals: vs.reals.iter().map(|r| RealSpec::of(r, vs)).collect(),
        }
    }
}

/// The saved runtime layer (`STATE_DIR/runtime.json`, format
/// `lb-runtime/1`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub format: String,
    pub services: Vec<ServiceRecord>,
}

/// Reading or writing the saved runtime layer failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {why}", path.display())]
    Io {
        path: PathBuf,
        why: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a saved runtime layer ({why}); moved aside to {}", path.display(), aside.display())]
    Corrupt {
        path: PathBuf,
        why: NotALayer,
        aside: PathBuf,
    },
    #[error("refusing {}: {why} (nothing another user can write is trusted)", path.display())]
    Untrusted { path: PathBuf, why: String },
}

/// Why a saved file is not a runtime layer ([`StateError::Corrupt`]).
#[derive(Debug, thiserror::Error)]
pub enum NotALayer {
    #[error(transparent)]
    Json(serde_json::Error),
    #[error("format '{0}', expected '{FORMAT}'")]
    Format(String),
}

fn io_err(path: &Path, why: &str) -> impl FnOnce(std::io::Error) -> StateError {
    let (path, why) = (path.to_owned(), why.to_owned());
    move |source| StateError::Io { path, why, source }
}

/// Largest saved layer read back (a service record is ~150 bytes; 1,024
/// services of 16 reals fit many times over).
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// Reads the saved layer of `dir`; `Ok(None)` when there is none. A file
/// that is not one is moved aside (so that nothing is lost and the next
/// save does not overwrite it) and reported as [`StateError::Corrupt`]; a
/// file or directory another user could write is refused.
pub fn load(dir: &Path) -> Result<Option<Record>, StateError> {
    use std::os::unix::fs::MetadataExt as _;
    let path = dir.join(STATE_FILE);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path, "reading its metadata")(e)),
    };
    let untrusted = |why: String| StateError::Untrusted {
        path: path.clone(),
        why,
    };
    if !meta.file_type().is_file() {
        return Err(untrusted("not a regular file".into()));
    }
    let me = unsafe_geteuid();
    if meta.uid() != me {
        return Err(untrusted(format!("owned by uid {}", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(format!(
            "writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    if meta.len() > MAX_STATE_BYTES {
        return Err(untrusted(format!(
            "{} bytes, more than the {MAX_STATE_BYTES} a runtime layer can take",
            meta.len()
        )));
    }
    let text = std::fs::read(&path).map_err(io_err(&path, "reading it"))?;
    let parsed = serde_json::from_slice::<Record>(&text)
        .map_err(NotALayer::Json)
        .and_then(|r| {
            if r.format == FORMAT {
                Ok(r)
            } else {
                Err(NotALayer::Format(r.format))
            }
        });
    match parsed {
        Ok(r) => Ok(Some(r)),
        Err(why) => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let aside = dir.join(format!("{STATE_FILE}.corrupt-{stamp}"));
            std::fs::rename(&path, &aside).map_err(io_err(&path, "moving it aside"))?;
            Err(StateError::Corrupt { path, why, aside })
        }
    }
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Writes `rec` as `dir/runtime.json` atomically: a new file (mode 0600,
/// created exclusively, never through a link) is written and synced, then
/// renamed over the old one, and the directory is synced. A crash leaves
/// the old file or the new one, never a mix.
pub fn save(dir: &Path, rec: &Record) -> Result<(), StateError> {
    let mut text = serde_json::to_vec_pretty(rec).expect("a record always serialises");
    text.push(b'\n');
    crate::util::replace_file(&dir.join(STATE_FILE), &text)
        .map_err(|e| io_err(&e.path, e.step)(e.source))
}

/// The protocol word ipvsadm uses for `proto` (`-t` / `-u`).
pub fn proto_flag(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "-t",
        Proto::Udp => "-u",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Config {
        let l = crate::config::load_str(text, Path::new("/etc/k.conf"));
        assert!(!l.has_errors(), "{:?}", l.diags);
        l.config
    }

    const FILE: &str = "virtual_server 10.0.0.1 80 {
  lb_algo rr
  lb_kind NAT
  protocol TCP
  real_server 10.0.1.1 8080 {
    weight 2
    TCP_CHECK {
      connect_timeout 1
    }
  }
}
";

    fn svc(text: &str) -> ServiceAddr {
        let (proto, rest) = text.split_once(' ').unwrap();
        let sa: std::net::SocketAddr = rest.parse().unwrap();
        ServiceAddr {
            addr: sa.ip(),
            port: sa.port(),
            proto: if proto == "TCP" {
                Proto::Tcp
            } else {
                Proto::Udp
            },
        }
    }

    fn spec(s: &str, sched: Sched) -> ServiceSpec {
        ServiceSpec {
            service: svc(s),
            sched,
            hash_port: false,
            hash_fallback: false,
            persistence_timeout: None,
            persistence_prefix: None,
        }
    }

    fn real(a: &str, fwd: Fwd, weight: u32) -> RealSpec {
        let sa: std::net::SocketAddr = a.parse().unwrap();
        RealSpec {
            addr: sa.ip(),
            port: sa.port(),
            fwd,
            weight,
            u_threshold: 0,
            l_threshold: 0,
            check: None,
        }
    }

    #[test]
    fn ipvs_errors_for_what_exists_and_what_does_not() {
        let f = file(FILE);
        let mut rt = Runtime::default();
        let add = |s: &str| Change::AddService {
            spec: spec(s, Sched::Wlc),
        };
        assert_eq!(
            rt.apply(&f, &add("TCP 10.0.0.1:80")),
            Err(ChangeError::ServiceExists),
            "the file's service exists"
        );
        rt.apply(&f, &add("TCP 10.0.0.2:80")).unwrap();
        assert_eq!(
            rt.apply(&f, &add("TCP 10.0.0.2:80")),
            Err(ChangeError::ServiceExists)
        );
        // Same address and port, other protocol: another service.
        rt.apply(&f, &add("UDP 10.0.0.2:80")).unwrap();
        let gone = svc("TCP 10.0.0.9:80");
        assert_eq!(
            rt.apply(&f, &Change::DeleteService { service: gone }),
            Err(ChangeError::NoSuchService)
        );
        assert_eq!(
            rt.apply(
                &f,
                &Change::EditService {
                    spec: spec("TCP 10.0.0.9:80", Sched::Rr)
                }
            ),
            Err(ChangeError::NoSuchService)
        );
        assert_eq!(
            rt.apply(
                &f,
                &Change::AddReal {
                    service: gone,
                    real: real("10.0.1.5:80", Fwd::Dr, 1)
                }
            ),
            Err(ChangeError::ServiceNotDefined)
        );
        let s2 = svc("TCP 10.0.0.2:80");
        let r = real("10.0.1.5:80", Fwd::Nat, 3);
        rt.apply(
            &f,
            &Change::AddReal {
                service: s2,
                real: r.clone(),
            },
        )
        .unwrap();
        assert_eq!(
            rt.apply(
                &f,
                &Change::AddReal {
                    service: s2,
                    real: r.clone()
                }
            ),
            Err(ChangeError::DestinationExists)
        );
        assert_eq!(
            rt.apply(
                &f,
                &Change::DeleteReal {
                    service: s2,
                    addr: r.addr,
                    port: 81
                }
            ),
            Err(ChangeError::NoSuchDestination)
        );
        assert_eq!(
            rt.apply(
                &f,
                &Change::EditReal {
                    service: s2,
                    real: real("10.0.1.6:80", Fwd::Nat, 1)
                }
            ),
            Err(ChangeError::NoSuchDestination)
        );
        assert_eq!(
            rt.apply(
                &f,
                &Change::AddReal {
                    service: s2,
                    real: real("[2001:db8::1]:80", Fwd::Dr, 1)
                }
            ),
            Err(ChangeError::AddressFamily)
        );
        assert_eq!(
            rt.apply(
                &f,
                &Change::Zero {
                    service: Some(gone)
                }
            ),
            Err(ChangeError::NoSuchService)
        );
        let m = rt.merge(&f);
        let keys: Vec<String> = m.services.iter().map(|v| v.key.to_string()).collect();
        assert_eq!(
            keys,
            ["TCP 10.0.0.1:80", "TCP 10.0.0.2:80", "UDP 10.0.0.2:80"]
        );
        let r = &m.services[1].reals[0];
        assert_eq!((r.weight, r.fwd_in(&m.services[1])), (3, Fwd::Nat));
    }

    #[test]
    fn runtime_services_survive_a_reload_and_changes_to_file_services_do_not() {
        let f = file(FILE);
        let mut rt = Runtime::default();
        let s1 = svc("TCP 10.0.0.1:80");
        let s2 = svc("TCP 10.0.0.2:80");
        rt.apply(
            &f,
            &Change::AddService {
                spec: spec("TCP 10.0.0.2:80", Sched::Rr),
            },
        )
        .unwrap();
        // A runtime weight change of the file's real keeps its checker.
        rt.apply(
            &f,
            &Change::EditReal {
                service: s1,
                real: real("10.0.1.1:8080", Fwd::Nat, 9),
            },
        )
        .unwrap();
        let m = rt.merge(&f);
        assert_eq!(m.services[0].reals[0].weight, 9);
        assert_eq!(m.services[0].reals[0].checks.len(), 1, "checker kept");
        assert_eq!(rt.layer(&s1), Layer::RuntimeOverFile);
        assert_eq!(rt.layer(&s2), Layer::Runtime);
        // Only the runtime-made service is saved.
        let rec = rt.record();
        assert_eq!(rec.services.len(), 1);
        assert_eq!(rec.services[0].spec.service, s2);
        // Reload: the file is re-applied, the runtime service stays.
        assert!(rt.file_reloaded(&f).is_empty());
        let m = rt.merge(&f);
        assert_eq!(m.services[0].reals[0].weight, 2);
        assert_eq!(m.services.len(), 2);
        // Deleting the file's service lasts until the reload too.
        rt.apply(&f, &Change::DeleteService { service: s1 })
            .unwrap();
        assert_eq!(rt.merge(&f).services.len(), 1);
        rt.file_reloaded(&f);
        assert_eq!(rt.merge(&f).services.len(), 2);
        // A file that now defines the runtime service wins.
        let f2 = file(&format!(
            "{FILE}virtual_server 10.0.0.2 80 {{\n  lb_algo wrr\n  lb_kind DR\n  protocol TCP\n}}\n"
        ));
        assert_eq!(rt.file_reloaded(&f2), vec![s2]);
        let m = rt.merge(&f2);
        assert_eq!(m.services[1].sched, Sched::Wrr);
        assert!(rt.is_empty());
    }

    #[test]
    fn flush_empties_the_table_until_the_reload() {
        let f = file(FILE);
        let mut rt = Runtime::default();
        rt.apply(
            &f,
            &Change::AddService {
                spec: spec("TCP 10.0.0.2:80", Sched::Rr),
            },
        )
        .unwrap();
        rt.apply(&f, &Change::Flush).unwrap();
        assert!(rt.merge(&f).services.is_empty());
        // Re-adding the file's service after -C: a runtime one over it.
        rt.apply(
            &f,
            &Change::AddService {
                spec: spec("TCP 10.0.0.1:80", Sched::Sh),
            },
        )
        .unwrap();
        let m = rt.merge(&f);
        assert_eq!((m.services.len(), m.services[0].sched), (1, Sched::Sh));
        assert!(m.services[0].reals.is_empty());
        rt.file_reloaded(&f);
        assert_eq!(rt.merge(&f).services[0].sched, Sched::Rr);
    }

    #[test]
    fn a_saved_layer_comes_back_and_a_broken_one_is_moved_aside() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempdir();
        let f = file(FILE);
        let mut rt = Runtime::default();
        let s2 = svc("TCP 10.0.0.2:80");
        let mut sp = spec("TCP 10.0.0.2:80", Sched::Sh);
        sp.hash_port = true;
        sp.persistence_timeout = Some(300);
        sp.persistence_prefix = Some(24);
        rt.apply(&f, &Change::AddService { spec: sp.clone() })
            .unwrap();
        let mut r = real("10.0.1.7:80", Fwd::Tun, 5);
        r.u_threshold = 100;
        r.l_threshold = 50;
        rt.apply(
            &f,
            &Change::AddReal {
                service: s2,
                real: r.clone(),
            },
        )
        .unwrap();
        save(&dir, &rt.record()).unwrap();
        let path = dir.join(STATE_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let rec = load(&dir).unwrap().unwrap();
        assert_eq!(rec, rt.record());
        let (back, replaced) = Runtime::from_record(&rec, &f);
        assert!(replaced.is_empty());
        let m = back.merge(&f);
        assert_eq!(m.services[1].key, s2);
        assert_eq!(ServiceRecord::of(&m.services[1]).spec, sp);
        assert_eq!(ServiceRecord::of(&m.services[1]).reals, vec![r]);
        // Group-writable: refused, left in place.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(matches!(load(&dir), Err(StateError::Untrusted { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Not JSON: moved aside, nothing lost.
        std::fs::write(&path, b"{ half").unwrap();
        match load(&dir) {
            Err(StateError::Corrupt { aside, .. }) => {
                assert_eq!(std::fs::read(&aside).unwrap(), b"{ half");
                assert!(!path.exists());
            }
            other => panic!("{other:?}"),
        }
        assert!(load(&dir).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn add_checked(rt: &mut Runtime, f: &Config, check: Option<CheckSpec>) -> ServiceAddr {
        let s2 = svc("TCP 10.0.0.2:80");
        rt.apply(
            f,
            &Change::AddService {
                spec: spec("TCP 10.0.0.2:80", Sched::Rr),
            },
        )
        .unwrap();
        let mut r = real("10.0.1.7:80", Fwd::Dr, 1);
        r.check = check;
        rt.apply(
            f,
            &Change::AddReal {
                service: s2,
                real: r,
            },
        )
        .unwrap();
        s2
    }

    fn checks_of(rt: &Runtime, f: &Config, key: &str) -> Vec<check::Check> {
        let m = rt.merge(f);
        let vs = m.services.iter().find(|v| v.key == svc(key)).unwrap();
        vs.reals[0].checks.clone()
    }

    /// A runtime real's checker is the model's checker of the same
    /// keepalived.conf block, so the health monitor runs it as it runs a
    /// file's, with keepalived's default timing where none is given.
    #[test]
    fn a_runtime_checker_is_the_file_checker_of_the_same_block() {
        let f = file(FILE);
        let mut rt = Runtime::default();
        let mut http = CheckSpec::http("/health", 204);
        http.connect_port = Some(8080);
        http.connect_timeout_ms = Some(1500);
        add_checked(&mut rt, &f, Some(http.clone()));
        let from_file = file(
            "virtual_server 10.0.0.2 80 {
 lb_algo rr
 lb_kind DR
 protocol TCP
 real_server 10.0.1.7 80 {
  HTTP_GET {
   url {
    path /health
    status_code 204
   }
   connect_port 8080
   connect_timeout 1.5
  }
 }
}
",
        );
        let want = &from_file.services[0].reals[0].checks;
        assert_eq!(&checks_of(&rt, &f, "TCP 10.0.0.2:80"), want);
        let s = crate::health::Schedule::resolve(
            &want[0],
            check::Timing::default(),
            check::Timing::default(),
        );
        assert_eq!(
            (
                s.delay_loop.as_secs(),
                s.retry,
                s.delay_before_retry.as_secs()
            ),
            (60, 1, 3),
            "keepalived's HTTP_GET defaults"
        );
        // The spec comes back from the model, and is saved.
        let m = rt.merge(&f);
        assert_eq!(
            RealSpec::of(&m.services[1].reals[0], &m.services[1]).check,
            Some(http.clone())
        );
        assert_eq!(rt.record().services[0].reals[0].check, Some(http));
        // TCP_CHECK with every timing set.
        let mut rt = Runtime::default();
        let mut tcp = CheckSpec::tcp();
        tcp.delay_loop_ms = Some(500);
        tcp.retry = Some(0);
        tcp.delay_before_retry_ms = Some(200);
        add_checked(&mut rt, &f, Some(tcp.clone()));
        let c = &checks_of(&rt, &f, "TCP 10.0.0.2:80")[0];
        assert_eq!(c.kind, check::CheckKind::Tcp);
        assert_eq!(
            (
                c.timing.delay_loop,
                c.timing.retry,
                c.timing.delay_before_retry
            ),
            (
                Some(std::time::Duration::from_millis(500)),
                Some(0),
                Some(std::time::Duration::from_millis(200))
            )
        );
        assert_eq!(CheckSpec::of(c), Some(tcp));
    }

    /// `lb adm -e` knows nothing of checkers: an EditReal without one keeps
    /// the real's (a runtime real's and a file real's, which no spec can
    /// stand for); with one it replaces them; SetCheck removes them.
    #[test]
    fn edit_real_keeps_the_checker_unless_it_names_one() {
        let f = file(FILE);
        let mut rt = Runtime::default();
        let s2 = add_checked(&mut rt, &f, Some(CheckSpec::http("/", 200)));
        let before = checks_of(&rt, &f, "TCP 10.0.0.2:80");
        assert_eq!(before.len(), 1);
        let edit = |w: u32, check: Option<CheckSpec>| {
            let mut r = real("10.0.1.7:80", Fwd::Dr, w);
            r.check = check;
            Change::EditReal {
                service: s2,
                real: r,
            }
        };
        rt.apply(&f, &edit(0, None)).unwrap();
        assert_eq!(checks_of(&rt, &f, "TCP 10.0.0.2:80"), before, "kept");
        assert_eq!(rt.merge(&f).services[1].reals[0].weight, 0);
        rt.apply(&f, &edit(1, Some(CheckSpec::tcp()))).unwrap();
        assert_eq!(
            checks_of(&rt, &f, "TCP 10.0.0.2:80")[0].kind,
            check::CheckKind::Tcp
        );
        rt.apply(
            &f,
            &Change::SetCheck {
                service: s2,
                addr: "10.0.1.7".parse().unwrap(),
                port: 80,
                check: None,
            },
        )
        .unwrap();
        assert!(checks_of(&rt, &f, "TCP 10.0.0.2:80").is_empty());
        assert_eq!(
            rt.apply(
                &f,
                &Change::SetCheck {
                    service: s2,
                    addr: "10.0.1.8".parse().unwrap(),
                    port: 80,
                    check: None,
                }
            ),
            Err(ChangeError::NoSuchDestination)
        );
        // The file's real: its TCP_CHECK has connect_timeout 1 s, which a
        // spec can hold; a real_spec sent back (what `lb drain` does) keeps
        // it exactly, and so does one without a check.
        let s1 = svc("TCP 10.0.0.1:80");
        let key = (s1, "10.0.1.1".parse().unwrap(), 8080);
        let file_checks = f.services[0].reals[0].checks.clone();
        let mut sent = real_spec(&rt.merge(&f), &key).unwrap();
        assert!(sent.check.is_some());
        sent.weight = 0;
        rt.apply(
            &f,
            &Change::EditReal {
                service: s1,
                real: sent.clone(),
            },
        )
        .unwrap();
        assert_eq!(checks_of(&rt, &f, "TCP 10.0.0.1:80"), file_checks);
        sent.check = None;
        sent.weight = 3;
        rt.apply(
            &f,
            &Change::EditReal {
                service: s1,
                real: sent,
            },
        )
        .unwrap();
        assert_eq!(checks_of(&rt, &f, "TCP 10.0.0.1:80"), file_checks);
        // Two checkers, or one a spec cannot express: no spec, kept on -e.
        let f2 = file("virtual_server 10.0.0.3 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.0.1.9 80 {\n  TCP_CHECK {\n  }\n  HTTP_GET {\n   url {\n    path /\n    digest 0123456789abcdef0123456789abcdef\n   }\n  }\n }\n}\n");
        let k3 = (svc("TCP 10.0.0.3:80"), "10.0.1.9".parse().unwrap(), 80);
        let spec3 = real_spec(&f2, &k3).unwrap();
        assert_eq!(spec3.check, None);
        let mut rt = Runtime::default();
        rt.apply(
            &f2,
            &Change::EditReal {
                service: k3.0,
                real: spec3,
            },
        )
        .unwrap();
        assert_eq!(
            rt.merge(&f2).services[0].reals[0].checks,
            f2.services[0].reals[0].checks
        );
    }

    #[test]
    fn bad_checkers_are_refused_with_a_reason() {
        let f = file(FILE);
        let mut rt = Runtime::default();
        rt.apply(
            &f,
            &Change::AddService {
                spec: spec("TCP 10.0.0.2:80", Sched::Rr),
            },
        )
        .unwrap();
        let mut zero_timeout = CheckSpec::tcp();
        zero_timeout.connect_timeout_ms = Some(0);
        let mut port0 = CheckSpec::tcp();
        port0.connect_port = Some(0);
        for (c, want) in [
            (
                CheckSpec::http("health", 200),
                "HTTP_GET path 'health': must start with '/'",
            ),
            (
                CheckSpec::http("/a b", 200),
                "HTTP_GET path '/a b': no spaces or control characters (percent-encode them)",
            ),
            (
                CheckSpec::http("/", 99),
                "HTTP_GET status 99: expected 100 to 599",
            ),
            (
                CheckSpec::http("/", 600),
                "HTTP_GET status 600: expected 100 to 599",
            ),
            (
                zero_timeout,
                "checker connect_timeout 0 ms: must be greater than 0",
            ),
            (port0, "checker connect_port 0: expected 1 to 65535"),
        ] {
            let mut r = real("10.0.1.7:80", Fwd::Dr, 1);
            r.check = Some(c.clone());
            assert_eq!(
                rt.apply(
                    &f,
                    &Change::AddReal {
                        service: svc("TCP 10.0.0.2:80"),
                        real: r
                    }
                ),
                Err(ChangeError::Refused(want.into())),
                "{c:?}"
            );
            assert_eq!(
                rt.apply(
                    &f,
                    &Change::SetCheck {
                        service: svc("TCP 10.0.0.1:80"),
                        addr: "10.0.1.1".parse().unwrap(),
                        port: 8080,
                        check: Some(c),
                    }
                ),
                Err(ChangeError::Refused(want.into()))
            );
        }
        assert!(rt.merge(&f).services[1].reals.is_empty());
    }

    /// The JSON of a real without a checker is what it was before checkers
    /// existed, and a saved layer from then still loads.
    #[test]
    fn the_check_field_is_absent_when_there_is_none() {
        let r = real("10.0.1.7:80", Fwd::Nat, 2);
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("check").is_none(), "{v}");
        let old: RealSpec =
            serde_json::from_str(r#"{"addr":"10.0.1.7","port":80,"fwd":"NAT","weight":2}"#)
                .unwrap();
        assert_eq!(old, r);
        let mut r = r;
        r.check = Some(CheckSpec::http("/ok", 200));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["check"],
            serde_json::json!({"type": "HTTP_GET", "path": "/ok", "status": 200})
        );
        let back: RealSpec = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let tcp: CheckSpec =
            serde_json::from_str(r#"{"type":"TCP_CHECK","connect_timeout_ms":2000}"#).unwrap();
        assert_eq!(tcp.connect_timeout_ms, Some(2000));
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "lb-runtime-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
