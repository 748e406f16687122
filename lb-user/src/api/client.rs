//! The CLI's side of the API: one request per connection over the Unix
//! socket, bounded in time.

use std::{path::Path, time::Duration};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Bytes, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::{ChangeReply, DrainReply, ErrorReply, ReloadReply, Status};

/// Longest a request may take, connection to last byte (a reload parses the
/// file and resolves neighbours).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest reply accepted, bytes.
pub const MAX_REPLY: usize = 64 << 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {socket} (is `lb run` running with this --socket?)")]
    Connect {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the agent's reply is not what this lb expects (a different version?)")]
    Decode(#[source] serde_json::Error),
    #[error("the agent answered {status}: {error}")]
    Server { status: StatusCode, error: String },
}

/// Sends one request without a body; returns the status and the body.
pub async fn call(
    socket: &Path,
    method: Method,
    path: &str,
) -> Result<(StatusCode, Bytes), ClientError> {
    call_with(socket, method, path, None).await
}

/// Sends one request with an optional JSON body; returns the status and
/// the reply's body.
pub async fn call_with(
    socket: &Path,
    method: Method,
    path: &str,
    json: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| ClientError::Connect {
                socket: socket.display().to_string(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.into()))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "lb");
        if json.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(json.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.into()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.into()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT))?
}

fn decode<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, ClientError> {
    if !status.is_success() {
        let error = serde_json::from_slice::<ErrorReply>(body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
        return Err(ClientError::Server { status, error });
    }
    serde_json::from_slice(body).map_err(ClientError::Decode)
}

/// `GET /v1/status`.
pub async fn status(socket: &Path) -> Result<Status, ClientError> {
    let (s, b) = call(socket, Method::GET, super::STATUS).await?;
    decode(s, &b)
}

/// A `GET` of `path` (`/v1/checks`, `/v1/vrrp`, `/v1/dump`, …), decoded as
/// its reply type ([`super::views::Checks`], [`super::views::Vrrp`],
/// [`crate::dump::Data`], …).
pub async fn get<T: DeserializeOwned>(socket: &Path, path: &str) -> Result<T, ClientError> {
    let (s, b) = call(socket, Method::GET, path).await?;
    decode(s, &b)
}

/// `GET /v1/export`: the keepalived.conf of the configuration the agent
/// runs.
pub async fn export(socket: &Path) -> Result<String, ClientError> {
    let (s, b) = call(socket, Method::GET, super::EXPORT).await?;
    if !s.is_success() {
        return decode(s, &b);
    }
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// `POST /v1/reload`: the reply whether the file was applied or refused.
pub async fn reload(socket: &Path) -> Result<ReloadReply, ClientError> {
    let (s, b) = call(socket, Method::POST, super::RELOAD).await?;
    match s {
        StatusCode::OK | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::INTERNAL_SERVER_ERROR => {
            serde_json::from_slice(&b).or_else(|_| decode(s, &b))
        }
        _ => decode(s, &b),
    }
}

/// `POST /v1/stop`: the agent's answer, sent before it begins to stop.
pub async fn stop(socket: &Path, req: super::StopRequest) -> Result<super::StopReply, ClientError> {
    let body = serde_json::to_vec(&req).map_err(ClientError::Decode)?;
    let (s, b) = call_with(socket, Method::POST, super::STOP, Some(body)).await?;
    decode(s, &b)
}

/// `POST /v1/runtime`: the reply whether the change was applied or refused
/// (`Err` only when the agent could not be asked or answered otherwise).
pub async fn change(
    socket: &Path,
    change: &crate::runtime::Change,
) -> Result<ChangeReply, ClientError> {
    let body = serde_json::to_vec(change).map_err(ClientError::Decode)?;
    let (s, b) = call_with(socket, Method::POST, super::RUNTIME, Some(body)).await?;
    match s {
        StatusCode::OK
        | StatusCode::CONFLICT
        | StatusCode::NOT_FOUND
        | StatusCode::UNPROCESSABLE_ENTITY => serde_json::from_slice(&b).or_else(|_| decode(s, &b)),
        _ => decode(s, &b),
    }
}

/// `POST /v1/drain`: `Ok(Ok(reply))` when the drain runs, `Ok(Err(reply))`
/// when the agent refused it (no such service / real: ipvs's message).
pub async fn drain(
    socket: &Path,
    req: &crate::drain::DrainRequest,
) -> Result<Result<DrainReply, ChangeReply>, ClientError> {
    let body = serde_json::to_vec(req).map_err(ClientError::Decode)?;
    let (s, b) = call_with(socket, Method::POST, super::DRAIN, Some(body)).await?;
    match s {
        StatusCode::OK => decode(s, &b).map(Ok),
        StatusCode::CONFLICT | StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => {
            match serde_json::from_slice::<ChangeReply>(&b) {
                Ok(r) => Ok(Err(r)),
                Err(_) => decode(s, &b),
            }
        }
        _ => decode(s, &b),
    }
}

/// `POST /v1/bgp/drain` (`drained`) or `/v1/bgp/undrain`: the announcement
/// state after the daemon was told.
pub async fn bgp_drain(socket: &Path, drained: bool) -> Result<crate::bgp::View, ClientError> {
    let path = if drained {
        super::BGP_DRAIN
    } else {
        super::BGP_UNDRAIN
    };
    let (s, b) = call(socket, Method::POST, path).await?;
    decode(s, &b)
}
