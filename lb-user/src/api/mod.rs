//! The agent's control API: HTTP/1.1 with JSON bodies over a root-only Unix
//! socket (default `/run/lb/lb.sock`).
//!
//! The request and response types below are the only definition of the wire
//! format: the server ([`server`]) and the CLI's client ([`client`]) both use
//! them. Every path is versioned (`/v1/…`). Errors are answered with a
//! non-2xx status and an [`ErrorReply`] body.
//!
//! | method | path             | body / reply                                     | what                                     |
//! |--------|------------------|--------------------------------------------------|------------------------------------------|
//! | GET    | `/v1/status`     | [`Status`]                                       | services, reals and where each came from |
//! | POST   | `/v1/reload`     | [`ReloadReply`]                                  | re-read keepalived.conf (as SIGHUP)      |
//! | GET    | `/v1/checks`     | [`views::Checks`]                                | health checkers (`lb list --checks`)     |
//! | GET    | `/v1/vrrp`       | [`views::Vrrp`]                                  | VRRP instances (`lb list --vrrp`)        |
//! | GET    | `/v1/runtime`    | [`crate::runtime::Record`]                       | the saved runtime layer                  |
//! | POST   | `/v1/runtime`    | [`crate::runtime::Change`] / [`ChangeReply`]     | a runtime change (`lb adm`)              |
//! | POST   | `/v1/drain`      | [`crate::drain::DrainRequest`] / [`DrainReply`]  | start a drain (`lb drain`)               |
//! | GET    | `/v1/drain`      | [`crate::drain::DrainList`]                      | drains running and recently ended        |
//! | GET    | `/v1/dump`       | [`crate::dump::Data`]                            | state dump (`lb dump`, SIGUSR1)          |
//! | GET    | `/v1/dump/stats` | [`crate::dump::Stats`]                           | statistics (`lb dump --stats`, SIGUSR2)  |
//! | POST   | `/v1/stop`       | [`StopRequest`] / [`StopReply`]                  | stop the agent (`lb stop`)               |
//! | GET    | `/v1/bgp`        | [`crate::bgp::View`]                             | BGP announcement (`lb list --bgp`)       |
//! | POST   | `/v1/bgp/drain`  | [`crate::bgp::View`]                             | withdraw every VIP (`lb bgp drain`)      |
//! | POST   | `/v1/bgp/undrain`| [`crate::bgp::View`]                             | announce again (`lb bgp undrain`)        |
//!
//! `POST /v1/reload` answers 200 when the file was applied, 422 when it was
//! refused (the diagnostics say why; the running state is kept) and 500 when
//! it parsed but could not be written to the data plane (the previous state
//! was restored). `POST /v1/runtime` answers as [`ChangeReply`] says. The
//! Prometheus metrics are not on this socket: `lb run --metrics-listen`
//! serves them over TCP ([`crate::metrics`]).

pub mod client;
pub mod server;
pub mod views;

use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
pub const STATUS: &str = "/v1/status";
/// `POST /v1/reload`.
pub const RELOAD: &str = "/v1/reload";
/// `GET /v1/checks`.
pub const CHECKS: &str = "/v1/checks";
/// `GET /v1/vrrp`.
pub const VRRP: &str = "/v1/vrrp";
/// `POST /v1/runtime` (a [`crate::runtime::Change`]), `GET /v1/runtime`
/// (the saved runtime layer, a [`crate::runtime::Record`]).
pub const RUNTIME: &str = "/v1/runtime";

/// `POST /v1/drain` (a [`crate::drain::DrainRequest`]), `GET /v1/drain`
/// (a [`crate::drain::DrainList`]).
pub const DRAIN: &str = "/v1/drain";

/// `POST /v1/drain`, 200: the drain started, or the one already running
/// for that real (`joined`). Refusals are a [`ChangeReply`] with the
/// status of `POST /v1/runtime` (404 no such service / real).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DrainReply {
    /// The real was already being drained: this is that drain (its
    /// timeout is kept).
    pub joined: bool,
    pub drain: crate::drain::DrainInfo,
}

/// `POST /v1/runtime`: 200 when the change is applied and saved; 409 when
/// what it creates exists, 404 when what it names does not, 422 when lb or
/// its data plane refuses it (`error` says which, with ipvs's message).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeReply {
    pub ok: bool,
    pub error: Option<crate::runtime::ChangeError>,
    /// One line for the operator (ipvsadm's message on an error).
    pub message: String,
}
/// `GET /v1/dump`.
pub const DUMP: &str = "/v1/dump";
/// `GET /v1/export`: the configuration the agent runs (the file with the
/// runtime layer on top) as a keepalived.conf, `text/plain`
/// ([`crate::config::export`]).
pub const EXPORT: &str = "/v1/export";
/// `POST /v1/stop` (a [`StopRequest`]): 200 with a [`StopReply`].
pub const STOP: &str = "/v1/stop";
/// `GET /v1/bgp`: the announcement state ([`crate::bgp::View`]).
pub const BGP: &str = "/v1/bgp";
/// `POST /v1/bgp/drain`: withdraw every VIP and keep them withdrawn (kept
/// across restarts) until `POST /v1/bgp/undrain`; both answer the
/// [`crate::bgp::View`] after the daemon was told.
pub const BGP_DRAIN: &str = "/v1/bgp/drain";
/// `POST /v1/bgp/undrain`.
pub const BGP_UNDRAIN: &str = "/v1/bgp/undrain";

/// `POST /v1/stop`: how the agent is to stop.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StopRequest {
    /// Leave XDP and the tc program attached (their links stay pinned):
    /// forwarding continues with the tables as they are until the next
    /// agent takes the attachment over. Otherwise the stop detaches, as
    /// SIGTERM does.
    pub keep_forwarding: bool,
    /// Do not stop now: the stop the next SIGTERM / SIGINT / SIGQUIT begins
    /// (`systemctl restart`, a package upgrade's try-restart), within
    /// [`STOP_DEFER_WINDOW_S`] seconds, keeps forwarding as asked.
    pub defer: bool,
}

/// How long a deferred [`StopRequest`] holds, seconds: a later SIGTERM
/// detaches again.
pub const STOP_DEFER_WINDOW_S: u64 = 120;

/// The reply to `POST /v1/stop`, sent before the agent begins to stop.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StopReply {
    /// The agent's process id (the CLI waits for it to end).
    pub pid: u32,
    /// Whether the agent stops now (false: deferred).
    pub stopping: bool,
    pub keep_forwarding: bool,
    /// One line for the operator.
    pub message: String,
}
/// `GET /v1/dump/stats`.
pub const DUMP_STATS: &str = "/v1/dump/stats";

/// Body of every non-2xx reply.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorReply {
    pub error: String,
}

/// One problem found in a configuration file, located as
/// `FILE:LINE:COLUMN` (1-based).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Diagnostic {
    /// `"error"` or `"warning"`.
    pub severity: String,
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// The keyword the problem is about, if any.
    pub keyword: Option<String>,
    pub message: String,
    /// The whole line as `lb check-config` prints it (the config's own
    /// rendering, so the two never differ).
    pub text: String,
}

impl From<&crate::config::Diag> for Diagnostic {
    fn from(d: &crate::config::Diag) -> Self {
        Diagnostic {
            severity: match d.severity {
                crate::config::Severity::Error => "error",
                crate::config::Severity::Warning => "warning",
            }
            .into(),
            file: d.loc.file.display().to_string(),
            line: d.loc.line,
            column: d.loc.col,
            keyword: d.keyword.clone(),
            message: d.message.clone(),
            text: d.to_string(),
        }
    }
}

/// What became of a reload.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new file is running.
    Applied,
    /// The file has errors: nothing changed.
    Refused,
    /// The file is valid but the data plane refused it (e.g. more services
    /// than the maps hold): the previous configuration was restored.
    Failed,
}

/// `POST /v1/reload`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReloadReply {
    pub outcome: ReloadOutcome,
    /// The file that was read.
    pub file: String,
    /// Every error and warning, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// Virtual services and VRRP instances running after the reload.
    pub services: usize,
    pub vrrp_instances: usize,
    /// One line for the operator.
    pub message: String,
}

/// Where a piece of the running state came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Origin {
    /// A statement of the configuration file, at `FILE:LINE:COLUMN`.
    File { at: String },
    /// The service's `sorry_server`, serving while its quorum is lost.
    SorryServer { at: String },
    /// Made at runtime through the API (`lb adm`); kept across reloads.
    Runtime,
    /// The file's service at `at`, changed at runtime: the file applies
    /// again at the next reload.
    RuntimeOverFile { at: String },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File { at } => write!(f, "file {at}"),
            Origin::SorryServer { at } => write!(f, "sorry_server {at}"),
            Origin::Runtime => f.write_str("runtime"),
            Origin::RuntimeOverFile { at } => {
                write!(f, "runtime, over file {at} until the next reload")
            }
        }
    }
}

/// Why a real has the weight it has in the data plane.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum WeightSource {
    /// The configured `weight`.
    Config,
    /// The weight given at runtime (`lb adm -a` / `-e`).
    Runtime,
    /// A MISC_CHECK with `misc_dynamic` set it (keepalived's exit code − 2).
    DynamicCheck,
    /// Its checkers failed: removed from scheduling (ipvs removes the
    /// destination), or kept at weight 0 with `inhibit_on_failure`.
    HealthDown { inhibit: bool },
    /// The quorum is lost and the sorry server alone takes the traffic.
    QuorumLost,
}

impl std::fmt::Display for WeightSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightSource::Config => f.write_str("config"),
            WeightSource::Runtime => f.write_str("runtime"),
            WeightSource::DynamicCheck => f.write_str("health: dynamic weight (misc_dynamic)"),
            WeightSource::HealthDown { inhibit: true } => {
                f.write_str("health: down, kept at weight 0 (inhibit_on_failure)")
            }
            WeightSource::HealthDown { inhibit: false } => {
                f.write_str("health: down, out of scheduling")
            }
            WeightSource::QuorumLost => f.write_str("quorum lost: sorry server only"),
        }
    }
}

/// A real server as the data plane has it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RealStatus {
    /// `IP:PORT` (IPv6 in brackets).
    pub addr: String,
    /// Weight written to the data plane (0: no new connections).
    pub weight: u32,
    /// The configured weight.
    pub configured_weight: u32,
    pub weight_source: WeightSource,
    /// Whether the data plane schedules new connections to it.
    pub in_service: bool,
    /// How it is reached: `mac … ifindex …`, `nat (next hop from the FIB)`,
    /// `tunnel from …`, or `unresolved`.
    pub reach: String,
    pub origin: Origin,
}

/// A virtual service as the data plane has it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceStatus {
    /// `TCP IP:PORT`, `UDP [IPv6]:PORT`.
    pub service: String,
    /// ipvs scheduler name (`rr`, `wlc`, `mh`, …).
    pub scheduler: String,
    /// `DR`, `NAT` or `TUN`.
    pub forwarding: String,
    pub origin: Origin,
    /// Whether its quorum is held (keepalived's `quorum`, default 1: at
    /// least one real up).
    pub quorum_up: bool,
    pub reals: Vec<RealStatus>,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The agent's process id.
    pub pid: u32,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// The configuration file (`lb run -f`).
    pub config: String,
    /// Seconds since the configuration file was last applied.
    pub config_applied_s: u64,
    pub ifaces: Vec<String>,
    pub bpffs: String,
    pub services: Vec<ServiceStatus>,
    /// Health changes applied to the data plane since the start.
    pub health_changes: u64,
    /// Milliseconds the last health change took from the checker's verdict
    /// to the maps.
    pub last_health_apply_ms: Option<f64>,
}

impl Status {
    /// The text `lb status` prints.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "pid {} up {}s", self.pid, self.uptime_s);
        let _ = writeln!(
            s,
            "config {} (applied {}s ago)",
            self.config, self.config_applied_s
        );
        let _ = writeln!(s, "ifaces {}", self.ifaces.join(" "));
        let _ = writeln!(s, "bpffs {}", self.bpffs);
        let apply = self
            .last_health_apply_ms
            .map(|ms| format!(", last applied in {ms:.2} ms"))
            .unwrap_or_default();
        let _ = writeln!(s, "health changes {}{apply}", self.health_changes);
        for vs in &self.services {
            let quorum = if vs.quorum_up { "" } else { " QUORUM LOST" };
            let _ = writeln!(
                s,
                "service {} {} {}{quorum}  ({})",
                vs.service, vs.scheduler, vs.forwarding, vs.origin
            );
            for r in &vs.reals {
                let state = if r.in_service { "" } else { " out" };
                let _ = writeln!(
                    s,
                    "  real {} weight {}{state} [{}] {}  ({})",
                    r.addr, r.weight, r.weight_source, r.reach, r.origin
                );
            }
        }
        s
    }
}
