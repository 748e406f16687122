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
    io::Write as _,
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
    /// `-e`: replace the real's forwarding, weight and thresholds.
    EditReal {
        service: ServiceAddr,
        real: RealSpec,
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
    fn of(r: &RealServer, vs: &VirtualServer) -> Self {
        RealSpec {
            addr: r.addr,
            port: r.port,
            fwd: r.fwd_in(vs),
            weight: r.weight,
            u_threshold: r.u_threshold,
            l_threshold: r.l_threshold,
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
        checks: Vec::new(),
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
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    let text = serde_json::to_vec_pretty(rec).expect("a record always serialises");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io_err(&tmp, "creating it"))?;
    let written = f
        .write_all(&text)
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&tmp, "writing it")(e));
    }
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&path, "renaming the new file over it")(e));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "syncing the directory"))?;
    Ok(())
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
