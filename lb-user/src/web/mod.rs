//! The web console (`lb run --web-listen ADDR:PORT`): server-rendered pages
//! for the live state and for setting up services, in the spirit of Piranha
//! (Red Hat's LVS console on port 3636), served by the agent.
//!
//! - [`users`]: the users file `lb passwd` writes (Argon2id hashes, roles
//!   `admin` / `view`);
//! - [`session`]: sessions, CSRF tokens, the login rate limit;
//! - [`auth`]: the login / logout handlers and the guard every other route
//!   sits behind;
//! - [`live`]: the sampler behind the overview's rates and charts;
//! - [`pages`]: the read-only pages; [`setup`]: the forms that change the
//!   table, through the same runtime layer as `lb adm` (`POST /v1/runtime`).
//!
//! Transport: TLS (rustls) with `--web-cert` / `--web-key`; plain HTTP only
//! on a loopback address unless `--web-insecure` is given. Connections are
//! served as the control socket's are (one task each, the TLS handshake and
//! the request head within [`HEADER_TIMEOUT`], at most [`MAX_CONNECTIONS`]
//! at once): a slow browser or a stuck client holds nothing of the agent.

pub mod auth;
pub mod live;
pub mod pages;
pub mod session;
pub mod setup;
pub mod users;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{
    routing::{get, post},
    Router,
};
use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    api::server::{serve_connection, Api, HEADER_TIMEOUT},
    config::{Fwd, RealKey, ServiceAddr},
};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest form accepted, bytes.
pub const MAX_FORM: usize = 64 * 1024;

/// `lb run`'s web options.
#[derive(Clone, Debug)]
pub struct Options {
    pub listen: SocketAddr,
    /// PEM certificate chain and private key: serve HTTPS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The users file (`lb passwd --file`).
    pub users: PathBuf,
    /// Serve plain HTTP on an address other than loopback.
    pub insecure: bool,
}

/// Starting the console failed.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("--web-listen {0}: plain HTTP is served on a loopback address only; give --web-cert and --web-key for HTTPS, or --web-insecure")]
    PlainNotLoopback(SocketAddr),
    #[error("--web-cert and --web-key go together")]
    HalfTls,
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("binding the web console's address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Users(#[from] users::UsersError),
}

fn pem_error(path: &Path, e: impl std::fmt::Display) -> WebError {
    WebError::Pem {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The rustls server configuration of a PEM certificate chain and key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, WebError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, e))?;
    if chain.is_empty() {
        return Err(pem_error(cert, "no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A bound console, ready to serve.
pub struct Bound {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    opts: Options,
}

/// Checks the options, reads the certificate and the users file and binds
/// the address (at the agent's start, so that each fails the start with a
/// clear error).
pub async fn bind(opts: Options) -> Result<Bound, WebError> {
    let tls = match (&opts.cert, &opts.key) {
        (Some(c), Some(k)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(c, k)?))),
        (None, None) => None,
        _ => return Err(WebError::HalfTls),
    };
    if tls.is_none() && !opts.listen.ip().is_loopback() {
        if !opts.insecure {
            return Err(WebError::PlainNotLoopback(opts.listen));
        }
        tracing::warn!(
            "web console on {} over plain HTTP (--web-insecure): passwords and sessions cross the network in clear",
            opts.listen
        );
    }
    // A users file that is not trusted fails the start; a missing one is
    // named in the log (nobody can log in until `lb passwd` makes it).
    match users::load(&opts.users)? {
        u if u.is_empty() => tracing::warn!(
            "web console: no user in {}; add one with `lb passwd --file {} USER`",
            opts.users.display(),
            opts.users.display()
        ),
        u => tracing::debug!("web console: {} user(s)", u.len()),
    }
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| WebError::Bind {
            addr: opts.listen,
            source,
        })?;
    Ok(Bound {
        listener,
        tls,
        opts,
    })
}

/// What the console's handlers reach.
pub struct Web {
    pub api: Arc<Api>,
    pub sessions: session::Sessions,
    pub limit: session::LoginLimit,
    pub users: PathBuf,
    /// Served over TLS (cookies get `Secure`).
    pub tls: bool,
    pub history: watch::Receiver<Arc<live::History>>,
    /// Reals drained in the console (weight 0) and the weight they had,
    /// given back by "enable".
    pub drained: Mutex<HashMap<RealKey, u32>>,
    /// The forwarding method chosen when the console made a service, the
    /// default of its first real.
    pub fwd_default: Mutex<HashMap<ServiceAddr, Fwd>>,
    /// One connection-table read at a time.
    pub conn_reads: Arc<tokio::sync::Semaphore>,
    /// Password hashes computed at once ([`auth::HASHES_AT_ONCE`]).
    pub hashing: Arc<tokio::sync::Semaphore>,
}

/// The client's address, for the rate limit and the log.
#[derive(Clone, Copy, Debug)]
pub struct Client(pub SocketAddr);

/// The routes.
pub fn router(web: Arc<Web>) -> Router {
    let guarded = Router::new()
        .route("/", get(pages::overview))
        .route("/live.json", get(pages::live_json))
        .route("/static/lb.js", get(pages::script))
        .route("/checks", get(pages::checks))
        .route("/vrrp", get(pages::vrrp))
        .route("/connections", get(pages::connections))
        .route("/config", get(pages::config))
        .route("/config/reload", post(setup::reload))
        .route("/setup", get(setup::page))
        .route("/setup/wizard", get(setup::wizard).post(setup::wizard_post))
        .route("/setup/export", get(setup::export))
        .route("/setup/service", post(setup::add_service))
        .route("/setup/service/edit", post(setup::edit_service))
        .route("/setup/service/remove", post(setup::remove_service))
        .route("/setup/real", post(setup::add_real))
        .route("/setup/real/drain", post(setup::drain_real))
        .route("/setup/real/enable", post(setup::enable_real))
        .route("/setup/real/remove", post(setup::remove_real))
        .route("/logout", post(auth::logout))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            auth::guard,
        ));
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .merge(guarded)
        .layer(axum::middleware::from_fn(auth::body_deadline))
        .layer(axum::middleware::from_fn_with_state(
            web.clone(),
            auth::headers,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM))
        .with_state(web)
}

/// Serves the console until the task is aborted; `bpffs` feeds the
/// overview's sampler.
pub async fn serve(bound: Bound, api: Arc<Api>) {
    let (history, sampler) = live::spawn(api.bpffs.clone());
    let web = Arc::new(Web {
        api,
        sessions: Default::default(),
        limit: Default::default(),
        users: bound.opts.users.clone(),
        tls: bound.tls.is_some(),
        history,
        drained: Default::default(),
        fwd_default: Default::default(),
        conn_reads: Arc::new(tokio::sync::Semaphore::new(1)),
        hashing: Arc::new(tokio::sync::Semaphore::new(auth::HASHES_AT_ONCE)),
    });
    let scheme = if web.tls { "https" } else { "http" };
    tracing::info!("web console on {scheme}://{}", bound.opts.listen);
    let router = router(web);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let _sampler = AbortOnDrop(sampler);
    loop {
        let (stream, peer) = match bound.listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("web console: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "web console: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let router = router.clone().layer(axum::Extension(Client(peer)));
        match &bound.tls {
            None => serve_connection(stream, router, permit, "web console"),
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, router, permit, "web console"),
                        Ok(Err(e)) => tracing::debug!(%peer, "web console: TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%peer, "web console: TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
