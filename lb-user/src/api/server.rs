//! The API server: axum routes served by hyper, one task per connection.
//!
//! No client can hold the agent: each connection runs in its own task, the
//! request head must arrive within [`HEADER_TIMEOUT`] (an idle keep-alive
//! connection is closed after the same time), a connection lives at most
//! [`CONNECTION_LIFETIME`], at most [`MAX_CONNECTIONS`] are served at once
//! (further ones are closed at once) and request bodies are capped at
//! [`MAX_BODY`]. Handlers only exchange messages with the reconciler and the
//! VRRP engine.

use std::{
    future::Future,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::UnixListener, sync::Semaphore};

use super::{views, ChangeReply, DrainReply, ErrorReply, ReloadOutcome, Status};
use crate::{
    agent::{change::Changer, reload::Reloader},
    dump, reconciler,
    runtime::{self, ChangeError},
    vrrp,
};

/// Longest wait for a request's head, and for the next request on an idle
/// keep-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest any one connection is served.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Largest request body accepted, bytes.
pub const MAX_BODY: usize = 1 << 20;

/// What the handlers reach.
pub struct Api {
    pub core: reconciler::Handle,
    pub reloader: Reloader,
    pub changer: Changer,
    pub vrrp: vrrp::engine::Handle,
    pub started: Instant,
    pub config: PathBuf,
    pub ifaces: Vec<String>,
    pub bpffs: PathBuf,
    /// Connection sync, when on.
    pub sync: Option<crate::sync::Handle>,
    /// Stop requests (`POST /v1/stop`) to the agent's main loop.
    pub stop: tokio::sync::mpsc::Sender<super::StopRequest>,
    /// BGP announcement of the VIPs (`lb_bgp`).
    pub bgp: crate::bgp::Handle,
}

impl Api {
    /// The VRRP engine's state with connection sync's (`GET /v1/vrrp`).
    pub async fn vrrp_info(&self) -> views::Vrrp {
        let mut v = self.vrrp.info().await;
        v.sync = self.sync.as_ref().map(|s| s.status());
        v
    }
}

type Shared = Arc<Api>;

struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorReply { error: self.1 })).into_response()
    }
}

impl From<reconciler::Stopped> for Failure {
    fn from(e: reconciler::Stopped) -> Self {
        Failure(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

async fn status(State(api): State<Shared>) -> Result<Json<Status>, Failure> {
    Ok(Json(dump::status(&api).await?))
}

async fn reload(State(api): State<Shared>) -> Response {
    let reply = api.reloader.reload().await;
    let code = match reply.outcome {
        ReloadOutcome::Applied => StatusCode::OK,
        ReloadOutcome::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        ReloadOutcome::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Json(reply)).into_response()
}

async fn change(
    State(api): State<Shared>,
    body: Result<Json<runtime::Change>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(change) = match body {
        Ok(b) => b,
        Err(e) => {
            return Failure(
                StatusCode::BAD_REQUEST,
                format!("not a runtime change: {e}"),
            )
            .into_response()
        }
    };
    match api.changer.apply(change).await {
        Ok(()) => Json(ChangeReply {
            ok: true,
            error: None,
            message: "applied".into(),
        })
        .into_response(),
        Err(e) => refused(e),
    }
}

/// A refused change (or drain) as [`ChangeReply`], with its status: 409
/// what it creates exists, 404 what it names does not, 422 refused.
fn refused(e: ChangeError) -> Response {
    let code = match e {
        ChangeError::ServiceExists | ChangeError::DestinationExists => StatusCode::CONFLICT,
        ChangeError::NoSuchService
        | ChangeError::ServiceNotDefined
        | ChangeError::NoSuchDestination => StatusCode::NOT_FOUND,
        ChangeError::AddressFamily | ChangeError::OutOfRange | ChangeError::Refused(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
    };
    (
        code,
        Json(ChangeReply {
            ok: false,
            message: e.to_string(),
            error: Some(e),
        }),
    )
        .into_response()
}

async fn drain_start(
    State(api): State<Shared>,
    body: Result<Json<crate::drain::DrainRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return Failure(StatusCode::BAD_REQUEST, format!("not a drain request: {e}"))
                .into_response()
        }
    };
    match crate::agent::drain::start(&api.changer.drains, &api.changer, api.bpffs.clone(), req)
        .await
    {
        Ok((drain, joined)) => Json(DrainReply { joined, drain }).into_response(),
        Err(e) => refused(e),
    }
}

async fn stop(
    State(api): State<Shared>,
    body: Result<Json<super::StopRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return Failure(StatusCode::BAD_REQUEST, format!("not a stop request: {e}"))
                .into_response()
        }
    };
    if api.stop.try_send(req).is_err() {
        return Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is already stopping".into(),
        )
        .into_response();
    }
    let what = if req.keep_forwarding {
        format!(
            "XDP stays attached on {} (forwarding continues until the next agent takes over)",
            api.ifaces.join(", ")
        )
    } else {
        format!("XDP is detached from {}", api.ifaces.join(", "))
    };
    let message = if req.defer {
        format!(
            "the next SIGTERM within {} s stops the agent, and {what}",
            super::STOP_DEFER_WINDOW_S
        )
    } else {
        format!("stopping: {what}")
    };
    Json(super::StopReply {
        pid: std::process::id(),
        stopping: !req.defer,
        keep_forwarding: req.keep_forwarding,
        message,
    })
    .into_response()
}

async fn drains(State(api): State<Shared>) -> Json<crate::drain::DrainList> {
    Json(api.changer.drains.list())
}

async fn runtime_layer(State(api): State<Shared>) -> Result<Json<runtime::Record>, Failure> {
    Ok(Json(api.core.runtime().await?.record))
}

async fn checks(State(api): State<Shared>) -> Result<Json<views::Checks>, Failure> {
    Ok(Json(api.core.checks().await?))
}

async fn vrrp_instances(State(api): State<Shared>) -> Json<views::Vrrp> {
    Json(api.vrrp_info().await)
}

async fn dump_data(State(api): State<Shared>) -> Result<Json<dump::Data>, Failure> {
    Ok(Json(dump::data(&api).await?))
}

async fn dump_stats(State(api): State<Shared>) -> Result<Json<dump::Stats>, Failure> {
    Ok(Json(dump::stats(&api).await?))
}

/// `GET /v1/export`: the configuration the agent runs as a keepalived.conf
/// (text/plain); written on a blocking thread, since naming the accounts
/// of programs asks the system's user database.
async fn export(State(api): State<Shared>) -> Result<Response, Failure> {
    let cfg = api.core.effective().await?;
    let text = tokio::task::spawn_blocking(move || crate::config::export::keepalived_conf(&cfg))
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("export: {e}")))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn bgp_view(State(api): State<Shared>) -> Json<crate::bgp::View> {
    Json(api.bgp.view())
}

async fn bgp_drain(api: &Api, drained: bool) -> Result<Json<crate::bgp::View>, Failure> {
    api.bgp.drain(drained).await.map(Json).map_err(|e| {
        let code = match e {
            crate::bgp::BgpError::NotConfigured => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(code, crate::util::chain(&e))
    })
}

async fn bgp_drain_on(State(api): State<Shared>) -> Result<Json<crate::bgp::View>, Failure> {
    bgp_drain(&api, true).await
}

async fn bgp_drain_off(State(api): State<Shared>) -> Result<Json<crate::bgp::View>, Failure> {
    bgp_drain(&api, false).await
}

async fn not_found() -> Failure {
    Failure(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint (the API has {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
            super::STATUS,
            super::RELOAD,
            super::CHECKS,
            super::VRRP,
            super::RUNTIME,
            super::DRAIN,
            super::DUMP,
            super::DUMP_STATS,
            super::EXPORT,
            super::STOP,
            super::BGP,
            super::BGP_DRAIN,
            super::BGP_UNDRAIN
        ),
    )
}

/// Answers a connection over the cap with 503 and an [`ErrorReply`], so the
/// operator learns why: after the request's head (at most 8 KiB, read
/// within a second; its body is not read), as an HTTP client expects the
/// answer after its request — one sent before it is an error to hyper's
/// client, which `lb status` then printed instead of the reason.
async fn refuse_busy(mut stream: tokio::net::UnixStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = serde_json::to_string(&ErrorReply {
        error: format!(
            "the agent is serving {MAX_CONNECTIONS} control connections (the most it serves at once); try again"
        ),
    })
    .unwrap_or_default();
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 1024];
        while head.len() < 8 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        stream.write_all(reply.as_bytes()).await
    })
    .await;
}

async fn method_not_allowed() -> Failure {
    Failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint (GET for status, checks, vrrp, runtime, drain, dump and bgp; POST for reload, runtime, drain, stop, bgp/drain and bgp/undrain)"
            .into(),
    )
}

/// The routes.
pub fn router(api: Shared) -> Router {
    Router::new()
        .route(super::STATUS, get(status))
        .route(super::RELOAD, post(reload))
        .route(super::CHECKS, get(checks))
        .route(super::VRRP, get(vrrp_instances))
        .route(super::RUNTIME, get(runtime_layer).post(change))
        .route(super::DRAIN, get(drains).post(drain_start))
        .route(super::DUMP, get(dump_data))
        .route(super::DUMP_STATS, get(dump_stats))
        .route(super::EXPORT, get(export))
        .route(super::STOP, post(stop))
        .route(super::BGP, get(bgp_view))
        .route(super::BGP_DRAIN, post(bgp_drain_on))
        .route(super::BGP_UNDRAIN, post(bgp_drain_off))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// Serves one accepted connection with `router` in its own task: its
/// request heads within [`HEADER_TIMEOUT`], the whole connection at most
/// [`CONNECTION_LIFETIME`]; `permit` (its slot under the connection cap)
/// is released when it ends. `what` names the listener in the log.
pub(crate) fn serve_connection<S>(
    stream: S,
    router: Router,
    permit: tokio::sync::OwnedSemaphorePermit,
    what: &'static str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    tokio::spawn(async move {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("{what} connection: {e}"),
            Err(_) => tracing::debug!("{what} connection closed after {CONNECTION_LIFETIME:?}"),
        }
        drop(permit);
    });
}

/// A connection [`Listener::accept_one`] took, and its peer.
pub type Accepted<L> = std::io::Result<(<L as Listener>::Stream, <L as Listener>::Peer)>;

/// A listener whose connections [`accept_loop`] serves: the control socket
/// (Unix) and the metrics port (TCP).
pub trait Listener: Sized {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// The peer's address, for the log.
    type Peer;
    /// The next connection.
    fn accept_one(&self) -> impl Future<Output = Accepted<Self>> + Send;
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;
    type Peer = tokio::net::unix::SocketAddr;
    fn accept_one(&self) -> impl Future<Output = Accepted<Self>> + Send {
        self.accept()
    }
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    type Peer = std::net::SocketAddr;
    fn accept_one(&self) -> impl Future<Output = Accepted<Self>> + Send {
        self.accept()
    }
}

/// How [`accept_loop`] names its listener in the log.
pub struct Names {
    /// Before an accept error ("control socket").
    pub listener: &'static str,
    /// Before a connection's error ("control").
    pub connection: &'static str,
}

/// Serves `listener` with `router` until the task is aborted: one task per
/// connection (`serve_connection`), at most `max` at once; a connection
/// over the cap is handed to `busy` (which logs it and answers or closes
/// it); a failed accept is logged and tried again 50 ms later.
pub async fn accept_loop<L: Listener>(
    listener: L,
    router: Router,
    max: usize,
    names: Names,
    busy: impl Fn(L::Stream, L::Peer),
) {
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let (stream, peer) = match listener.accept_one().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{}: accept failed: {e}", names.listener);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            busy(stream, peer);
            continue;
        };
        serve_connection(stream, router.clone(), permit, names.connection);
    }
}

/// Serves `listener` until the task is aborted.
pub async fn serve(listener: UnixListener, api: Shared) {
    let names = Names {
        listener: "control socket",
        connection: "control",
    };
    accept_loop(
        listener,
        router(api),
        MAX_CONNECTIONS,
        names,
        |stream, _| {
            tracing::warn!(
                "control socket: {MAX_CONNECTIONS} connections open; refusing a new one"
            );
            tokio::spawn(refuse_busy(stream));
        },
    )
    .await;
}
