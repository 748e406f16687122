//! The setup pages (admin): virtual services and their reals, changed
//! through the same runtime layer as `lb adm` (`POST /v1/runtime`), so a
//! form is validated exactly as the ipvsadm command line is and its result
//! is saved in the state directory, kept across reloads and restarts.
//!
//! Every change is logged with the user who made it and their address.
//! "Drain" sets a real's weight to 0 (ipvs's quiesce: its connections go
//! on, new ones go to the others) and "enable" gives back the weight it
//! had. The first-run wizard makes one DR or NAT service with two reals
//! and their health checks in one step.

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Redirect, Response},
    Extension, Form,
};
use maud::{html, Markup};
use serde::Deserialize;

use super::{
    pages::{self, layout, respond},
    session::Session,
    users::Role,
    Client, Web,
};
use crate::{
    api::{server::Api, ServiceStatus},
    config::{Fwd, Proto, RealKey, Sched, ServiceAddr},
    runtime::{Change, ChangeError, CheckSpec, RealSpec, ServiceSpec},
};

/// A form field the change cannot be made from.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// `TCP 10.0.0.1:80` / `UDP [2001:db8::1]:53` (as the pages write it).
pub fn parse_service(text: &str) -> Result<ServiceAddr, FieldError> {
    let (proto, sock) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| bad("service", format!("{text:?} is not PROTO ADDRESS:PORT")))?;
    let proto = Proto::from_name(proto).ok_or_else(|| bad("service", "protocol TCP or UDP"))?;
    let sock: std::net::SocketAddr = sock
        .parse()
        .map_err(|_| bad("service", format!("{sock:?} is not ADDRESS:PORT")))?;
    Ok(ServiceAddr {
        addr: sock.ip(),
        port: sock.port(),
        proto,
    })
}

fn parse_ip(field: &'static str, text: &str) -> Result<IpAddr, FieldError> {
    let ip: IpAddr = text.trim().parse().map_err(|_| {
        bad(
            field,
            format!("{:?} is not an IPv4 or IPv6 address", text.trim()),
        )
    })?;
    // Stricter than ipvsadm (the console is for people who may not know
    // LVS): addresses no service or real server can have.
    let why = match ip {
        _ if ip.is_unspecified() => Some("the unspecified address"),
        _ if ip.is_loopback() => Some("a loopback address"),
        _ if ip.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        _ => None,
    };
    match why {
        Some(w) => Err(bad(field, format!("{ip} is {w}"))),
        None => Ok(ip),
    }
}

fn parse_port(field: &'static str, text: &str) -> Result<u16, FieldError> {
    match text.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(
            field,
            format!("{:?} is not a port (1 to 65535)", text.trim()),
        )),
    }
}

fn parse_fwd(text: &str) -> Result<Fwd, FieldError> {
    match text {
        "dr" | "" => Ok(Fwd::Dr),
        "nat" => Ok(Fwd::Nat),
        "tun" => Ok(Fwd::Tun),
        _ => Err(bad("fwd", "dr, nat or tun")),
    }
}

fn parse_sched(text: &str) -> Result<Sched, FieldError> {
    Sched::ALL
        .iter()
        .find(|(n, _)| *n == text)
        .map(|(_, s)| *s)
        .ok_or_else(|| bad("sched", format!("{text:?} is not an ipvs scheduler")))
}

fn parse_proto(text: &str) -> Result<Proto, FieldError> {
    match text {
        "tcp" | "" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(bad("proto", "tcp or udp")),
    }
}

/// The new / edit service form.
#[derive(Debug, Default, Deserialize)]
pub struct ServiceForm {
    #[serde(default)]
    pub proto: String,
    #[serde(default)]
    pub vip: String,
    #[serde(default)]
    pub port: String,
    #[serde(default)]
    pub sched: String,
    #[serde(default)]
    pub fwd: String,
    /// Seconds; empty: not persistent.
    #[serde(default)]
    pub persistence: String,
}

impl ServiceForm {
    /// The ipvsadm `-A` / `-E` request of the form.
    pub fn spec(&self) -> Result<ServiceSpec, FieldError> {
        let persistence_timeout = match self.persistence.trim() {
            "" | "0" => None,
            t => Some(
                t.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad("persistence", "seconds, or empty for none"))?,
            ),
        };
        let sched = if self.sched.is_empty() {
            Sched::Wlc
        } else {
            parse_sched(&self.sched)?
        };
        Ok(ServiceSpec {
            service: ServiceAddr {
                addr: parse_ip("vip", &self.vip)?,
                port: parse_port("port", &self.port)?,
                proto: parse_proto(&self.proto)?,
            },
            sched,
            hash_port: false,
            hash_fallback: false,
            persistence_timeout,
            persistence_prefix: None,
        })
    }
}

/// The add-real form.
#[derive(Debug, Default, Deserialize)]
pub struct RealForm {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub addr: String,
    #[serde(default)]
    pub port: String,
    #[serde(default)]
    pub weight: String,
    #[serde(default)]
    pub fwd: String,
    /// `none`, `tcp` or `http`.
    #[serde(default)]
    pub check: String,
    #[serde(default)]
    pub check_path: String,
}

/// A real of the form: its service and spec. For DR and TUN the real's
/// port is the service's (ipvsadm sets it so; an empty port field takes
/// it for NAT too).
pub fn real_of(
    service: ServiceAddr,
    addr: &str,
    port: &str,
    weight: &str,
    fwd: &str,
) -> Result<RealSpec, FieldError> {
    let fwd = parse_fwd(fwd)?;
    let port = match (fwd, port.trim()) {
        (Fwd::Nat, p) if !p.is_empty() => parse_port("port", p)?,
        _ => service.port,
    };
    let weight = match weight.trim() {
        "" => 1,
        w => w
            .parse::<u32>()
            .ok()
            .filter(|w| *w <= 65535)
            .ok_or_else(|| bad("weight", "0 to 65535"))?,
    };
    let addr = parse_ip("addr", addr)?;
    if addr == service.addr {
        return Err(bad(
            "addr",
            "a real server cannot be the virtual address itself",
        ));
    }
    Ok(RealSpec {
        addr,
        port,
        fwd,
        weight,
        u_threshold: 0,
        l_threshold: 0,
        check: None,
    })
}

/// A real named in a row's buttons.
#[derive(Debug, Default, Deserialize)]
pub struct RealRef {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub addr: String,
    #[serde(default)]
    pub port: String,
}

impl RealRef {
    fn key(&self) -> Result<RealKey, FieldError> {
        Ok((
            parse_service(&self.service)?,
            parse_ip("addr", &self.addr)?,
            parse_port("port", &self.port)?,
        ))
    }
}

/// A service named in a button.
#[derive(Debug, Default, Deserialize)]
pub struct ServiceRef {
    #[serde(default)]
    pub service: String,
}

/// A message shown at the top of the setup page after a change.
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    #[serde(default)]
    pub done: String,
}

fn back(done: &str) -> Response {
    let q = serde_urlencoded::to_string([("done", format!("Done: {done}."))]).unwrap_or_default();
    Redirect::to(&format!("/setup?{q}")).into_response()
}

fn refused(session: &Session, what: &str, e: impl std::fmt::Display) -> Response {
    pages::error(
        StatusCode::UNPROCESSABLE_ENTITY,
        Some(session),
        "Not changed",
        &format!("{what}: {e}"),
    )
}

/// Applies `change` as `session`'s user, logging it.
async fn apply(
    web: &Web,
    session: &Session,
    client: Client,
    what: &str,
    change: Change,
) -> Result<(), ChangeError> {
    let r = web.api.changer.apply(change).await;
    match &r {
        Ok(()) => {
            tracing::info!(user = %session.user, client = %client.0.ip(), "web console: {what}")
        }
        Err(e) => {
            tracing::info!(user = %session.user, client = %client.0.ip(), "web console: {what}: refused: {e}")
        }
    }
    r
}

/// `POST /setup/service`.
pub async fn add_service(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    Extension(client): Extension<Client>,
    Form(f): Form<ServiceForm>,
) -> Response {
    let spec = match f.spec() {
        Ok(s) => s,
        Err(e) => return refused(&session, "add service", e),
    };
    let fwd = parse_fwd(&f.fwd).unwrap_or(Fwd::Dr);
    let what = format!("add service {} ({})", spec.service, spec.sched.name());
    let key = spec.service;
    match apply(&web, &session, client, &what, Change::AddService { spec }).await {
        Ok(()) => {
            web.fwd_default
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, fwd);
            back(&what)
        }
        Err(e) => refused(&session, "add service", e),
    }
}

/// `POST /setup/service/edit`.
pub async fn edit_service(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    Extension(client): Extension<Client>,
    Form(f): Form<ServiceForm>,
) -> Response {
    let spec = match f.spec() {
        Ok(s) => s,
        Err(e) => return refused(&session, "edit service", e),
    };
    // The form sets the scheduler and the persistence timeout; the rest
    // (hash flags, persistence granularity) stays as the service has it.
    let current =
        match tokio::time::timeout(crate::metrics::ASK_TIMEOUT, web.api.core.effective()).await {
            Ok(Ok(cfg)) => cfg.services.iter().find(|v| v.key == spec.service).cloned(),
            _ => {
                return refused(
                    &session,
                    "edit service",
                    "the agent's reconciler did not answer",
                )
            }
        };
    let Some(current) = current else {
        return refused(&session, "edit service", ChangeError::NoSuchService);
    };
    let spec = ServiceSpec {
        hash_port: current.hash_port,
        hash_fallback: current.hash_fallback,
        persistence_prefix: current.persistence_prefix,
        ..spec
    };
    let what = format!("edit service {} ({})", spec.service, spec.sched.name());
    match apply(&web, &session, client, &what, Change::EditService { spec }).await {
        Ok(()) => back(&what),
        Err(e) => refused(&session, "edit service", e),
    }
}

/// `POST /setup/service/remove`.
pub async fn remove_service(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    Extension(client): Extension<Client>,
    Form(f): Form<ServiceRef>,
) -> Response {
    let service = match parse_service(&f.service) {
        Ok(s) => s,
        Err(e) => return refused(&session, "remove service", e),
    };
    let what = format!("remove service {service}");
    match apply(
        &web,
        &session,
        client,
        &what,
        Change::DeleteService { service },
    )
    .await
    {
        Ok(()) => back(&what),
        Err(e) => refused(&session, "remove service", e),
    }
}

/// `POST /setup/real`.
pub async fn add_real(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    Extension(client): Extension<Client>,
    Form(f): Form<RealForm>,
) -> Response {
    let made = parse_service(&f.service)
        .and_then(|s| Ok((s, real_of(s, &f.addr, &f.port, &f.weight, &f.fwd)?)));
    let (service, real) = match made {
        Ok(x) => x,
        Err(e) => return refused(&session, "add real server", e),
    };
    let real = match with_check(real, &f.check, &f.check_path) {
        Ok(r) => r,
        Err(e) => return refused(&session, "add real server", e),
    };
    let what = format!(
        "add real {} to {service} ({}, weight {})",
        crate::util::fmt_sock(real.addr, real.port),
        real.fwd.keepalived_name(),
        real.weight
    );
    match apply(
        &web,
        &session,
        client,
        &what,
        Change::AddReal { service, real },
    )
    .await
    {
        Ok(()) => back(&what),
        Err(e) => refused(&session, "add real server", e),
    }
}

/// Time between two probes of a checker made in the console,
/// milliseconds (keepalived's `delay_loop` default, 60 s, is slow for a
/// console user to see a real come back).
pub const CHECK_INTERVAL_MS: u32 = 5000;
/// Connect timeout of a checker made in the console, milliseconds.
pub const CHECK_TIMEOUT_MS: u32 = 3000;

/// `real` with the health check the form asks for: `none`, `tcp`
/// (TCP_CHECK) or `http` (HTTP_GET of `path`, default `/`, expecting
/// 200), probed every [`CHECK_INTERVAL_MS`]; the runtime layer validates
/// the path.
fn with_check(real: RealSpec, check: &str, path: &str) -> Result<RealSpec, FieldError> {
    let spec = match check {
        "" | "none" => return Ok(real),
        "tcp" => CheckSpec::tcp(),
        "http" => CheckSpec::http(
            if path.trim().is_empty() {
                "/"
            } else {
                path.trim()
            },
            200,
        ),
        _ => return Err(bad("check", "none, tcp or http")),
    };
    Ok(RealSpec {
        check: Some(CheckSpec {
            delay_loop_ms: Some(CHECK_INTERVAL_MS),
            connect_timeout_ms: Some(CHECK_TIMEOUT_MS),
            ..spec
        }),
        ..real
    })
}

async fn set_weight(
    web: &Web,
    session: &Session,
    client: Client,
    key: RealKey,
    weight: Option<u32>,
) -> Response {
    let current = match web.api.core.real(key).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return refused(session, "change real server", e),
        Err(e) => return refused(session, "change real server", e),
    };
    let real_name = crate::util::fmt_sock(key.1, key.2);
    let (weight, what) = match weight {
        None => {
            if current.weight > 0 {
                web.drained
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, current.weight);
            }
            (0, format!("drain real {real_name} of {} (weight 0)", key.0))
        }
        Some(_) => {
            let w = web
                .drained
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key)
                .unwrap_or(if current.weight > 0 {
                    current.weight
                } else {
                    1
                });
            (
                w,
                format!("enable real {real_name} of {} (weight {w})", key.0),
            )
        }
    };
    let real = RealSpec { weight, ..current };
    match apply(
        web,
        session,
        client,
        &what,
        Change::EditReal {
            service: key.0,
            real,
        },
    )
    .await
    {
        Ok(()) => back(&what),
        Err(e) => refused(session, "change real server", e),
    }
}

/// `POST /setup/real/drain`.
pub async fn drain_real(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    Extension(client): Extension<Client>,
    Form(f): Form<RealRef>,
) -> Response {
    match f.key() {
        Ok(key) => set_weight(&web, &session, client, key, None).await,
        Err(e) => refused(&session, "drain real server", e),
    }
}

/// `POST /setup/real/enable`.
pub async fn enable_real(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    Extension(client): Extension<Client>,
    Form(f): Form<RealRef>,
) -> Response {
    match f.key() {
        Ok(key) => set_weight(&web, &session, client, key, Some(0)).await,
        Err(e) => refused(&session, "enable real server", e),
    }
}

/// `POST /setup/real/remove`.
pub async fn remove_real(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    Extension(client): Extension<Client>,
    Form(f): Form<RealRef>,
) -> Response {
    let key = match f.key() {
        Ok(k) => k,
        Err(e) => return refused(&session, "remove real server", e),
    };
    let what = format!(
        "remove real {} from {}",
        crate::util::fmt_sock(key.1, key.2),
        key.0
    );
    let change = Change::DeleteReal {
        service: key.0,
        addr: key.1,
        port: key.2,
    };
    match apply(&web, &session, client, &what, change).await {
        Ok(()) => {
            web.drained
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            back(&what)
        }
        Err(e) => refused(&session, "remove real server", e),
    }
}

/// `POST /config/reload`.
pub async fn reload(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    Extension(client): Extension<Client>,
) -> Response {
    let reply = web.api.reloader.reload().await;
    tracing::info!(user = %session.user, client = %client.0.ip(), "web console: reload: {}", reply.message);
    let code = match reply.outcome {
        crate::api::ReloadOutcome::Applied => StatusCode::OK,
        crate::api::ReloadOutcome::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        crate::api::ReloadOutcome::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    };
    respond(
        code,
        layout(
            "Reload",
            Some(&session),
            "/config",
            html! {
                p #reload-outcome class=(if code == StatusCode::OK { "ok" } else { "error" }) { (reply.message) }
                @if !reply.diagnostics.is_empty() {
                    ul.diagnostics { @for d in &reply.diagnostics { li class=(d.severity) { code { (d.text) } } } }
                }
                p { a href="/config" { "Back to the configuration" } }
            },
        ),
    )
}

fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

fn sched_select(selected: &str) -> Markup {
    html! {
        select name="sched" {
            @for (n, _) in Sched::ALL {
                option value=(n) selected[n == selected] { (n) }
            }
        }
    }
}

fn fwd_select(selected: Fwd) -> Markup {
    html! {
        select name="fwd" {
            @for (v, f, label) in [("dr", Fwd::Dr, "DR (direct routing)"), ("nat", Fwd::Nat, "NAT (masquerading)"), ("tun", Fwd::Tun, "TUN (IP-in-IP tunnel)")] {
                option value=(v) selected[f == selected] { (label) }
            }
        }
    }
}

fn check_select() -> Markup {
    html! {
        label { "Health check "
            select name="check" {
                option value="none" { "none" }
                option value="tcp" { "TCP connect" }
                option value="http" selected { "HTTP GET" }
            }
        }
        label { "Path " input name="check_path" value="/" size="12"; }
    }
}

fn service_form(session: &Session) -> Markup {
    html! {
        form #new-service .card method="post" action="/setup/service" {
            h2 { "New virtual service" }
            (csrf(session))
            label { "Protocol " select name="proto" { option value="tcp" { "TCP" } option value="udp" { "UDP" } } }
            label { "Virtual address " input name="vip" placeholder="10.0.0.100" required; }
            label { "Port " input name="port" placeholder="80" size="6" required; }
            label { "Scheduler " (sched_select("wlc")) }
            label { "Forwarding " (fwd_select(Fwd::Dr)) }
            label { "Persistence (s) " input name="persistence" placeholder="none" size="6"; }
            button #save-service type="submit" { "Add service" }
        }
    }
}

fn real_hidden(session: &Session, service: &str, real: &str) -> Markup {
    let (addr, port) = match real.parse::<std::net::SocketAddr>() {
        Ok(s) => (s.ip().to_string(), s.port().to_string()),
        Err(_) => (real.to_string(), String::new()),
    };
    html! {
        (csrf(session))
        input type="hidden" name="service" value=(service);
        input type="hidden" name="addr" value=(addr);
        input type="hidden" name="port" value=(port);
    }
}

fn service_block(
    session: &Session,
    s: &ServiceStatus,
    default_fwd: Fwd,
    persistence: Option<u32>,
) -> Markup {
    html! {
        section.service data-service=(s.service) {
            div.head {
                h2 { (s.service) }
                span.tag { (s.scheduler) } span.tag { (s.forwarding) }
                span.origin { (s.origin) }
                form.inline method="post" action="/setup/service/remove" {
                    (csrf(session))
                    input type="hidden" name="service" value=(s.service);
                    button.remove-service.danger type="submit" { "Remove service" }
                }
            }
            table.reals {
                thead { tr { th { "Real server" } th { "Weight" } th { "State" } th { "From" } th { "Actions" } } }
                tbody {
                    @for r in &s.reals {
                        @let health = super::live::health(r, false);
                        tr.real data-real=(r.addr) {
                            td { (r.addr) } td.weight { (r.weight) }
                            td class=(format!("health {health}")) { (health) }
                            td { (r.origin) }
                            td.actions {
                                @if r.configured_weight > 0 {
                                    form.inline method="post" action="/setup/real/drain" {
                                        (real_hidden(session, &s.service, &r.addr))
                                        button.drain type="submit" { "Drain" }
                                    }
                                } @else {
                                    form.inline method="post" action="/setup/real/enable" {
                                        (real_hidden(session, &s.service, &r.addr))
                                        button.enable type="submit" { "Enable" }
                                    }
                                }
                                form.inline method="post" action="/setup/real/remove" {
                                    (real_hidden(session, &s.service, &r.addr))
                                    button.remove.danger type="submit" { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
            form.add-real method="post" action="/setup/real" {
                (csrf(session))
                input type="hidden" name="service" value=(s.service);
                label { "Real server " input name="addr" placeholder="10.1.0.2" required; }
                label { "Port " input name="port" placeholder="same" size="6"; }
                label { "Weight " input name="weight" value="1" size="5"; }
                label { "Forwarding " (fwd_select(default_fwd)) }
                (check_select())
                button.add-real type="submit" { "Add real server" }
            }
            details {
                summary { "Edit scheduler / persistence" }
                form.edit-service method="post" action="/setup/service/edit" {
                    (csrf(session))
                    @let key = parse_service(&s.service).ok();
                    input type="hidden" name="proto" value=(key.map_or("tcp", |k| if k.proto == Proto::Udp { "udp" } else { "tcp" }));
                    input type="hidden" name="vip" value=(key.map(|k| k.addr.to_string()).unwrap_or_default());
                    input type="hidden" name="port" value=(key.map(|k| k.port.to_string()).unwrap_or_default());
                    label { "Scheduler " (sched_select(&s.scheduler)) }
                    label { "Persistence (s) " input name="persistence" placeholder="none" size="6" value=(persistence.map(|p| p.to_string()).unwrap_or_default()); }
                    button.save-edit type="submit" { "Save" }
                    span.note { " Other settings (hash flags, persistence granularity) are kept." }
                }
            }
        }
    }
}

/// The method new reals of `s` get by default: that of its reals, else
/// the one chosen when the console made it, else DR.
fn default_fwd(web: &Web, s: &ServiceStatus) -> Fwd {
    let known = parse_service(&s.service).ok().and_then(|k| {
        web.fwd_default
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&k)
            .copied()
    });
    match (s.reals.is_empty(), s.forwarding.as_str(), known) {
        (false, "NAT", _) => Fwd::Nat,
        (false, "TUN", _) => Fwd::Tun,
        (false, _, _) => Fwd::Dr,
        (true, _, Some(f)) => f,
        (true, _, None) => Fwd::Dr,
    }
}

/// `GET /setup`.
pub async fn page(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    Query(done): Query<Done>,
) -> Response {
    if session.role != Role::Admin {
        return pages::error(
            StatusCode::FORBIDDEN,
            Some(&session),
            "Setup",
            "your role is read-only (view): the setup pages are for admins",
        );
    }
    let services = tokio::time::timeout(crate::metrics::ASK_TIMEOUT, web.api.core.services()).await;
    let effective = tokio::time::timeout(crate::metrics::ASK_TIMEOUT, web.api.core.effective())
        .await
        .ok()
        .and_then(Result::ok);
    let body = html! {
        @if !done.done.is_empty() { p #done .ok { (done.done) } }
        p {
            "Changes apply at once and are kept in the runtime layer (as with " code { "lb adm" } "). "
            a #wizard-link href="/setup/wizard" { "First-run wizard" } " · "
            a #export href="/setup/export" { "Export as keepalived.conf" }
        }
        (service_form(&session))
        @match services {
            Ok(Ok(list)) => {
                @for s in &list {
                    @let p = parse_service(&s.service).ok().and_then(|k| effective.as_ref()?.services.iter().find(|v| v.key == k)?.persistence_timeout);
                    (service_block(&session, s, default_fwd(&web, s), p))
                }
            },
            _ => p.error { "the agent's reconciler did not answer" },
        }
    };
    respond(
        StatusCode::OK,
        layout("Setup", Some(&session), "/setup", body),
    )
}

/// The wizard's form.
#[derive(Debug, Default, Deserialize)]
pub struct WizardForm {
    #[serde(default)]
    pub fwd: String,
    #[serde(default)]
    pub proto: String,
    #[serde(default)]
    pub vip: String,
    #[serde(default)]
    pub port: String,
    #[serde(default)]
    pub sched: String,
    #[serde(default)]
    pub real1: String,
    #[serde(default)]
    pub real2: String,
    #[serde(default)]
    pub real_port: String,
    #[serde(default)]
    pub check: String,
    #[serde(default)]
    pub check_path: String,
}

/// `GET /setup/wizard`.
pub async fn wizard(Extension(session): Extension<Session>) -> Response {
    if session.role != Role::Admin {
        return pages::error(
            StatusCode::FORBIDDEN,
            Some(&session),
            "Setup",
            "your role is read-only (view): the setup pages are for admins",
        );
    }
    let body = html! {
        form #wizard .card method="post" action="/setup/wizard" {
            (csrf(&session))
            h2 { "1. How the director reaches the real servers" }
            label.choice { input type="radio" name="fwd" value="dr" checked;
                b { " Direct routing (DR)" } ": the reals answer clients directly. Each real needs the virtual address on its loopback with "
                code { "arp_ignore=1, arp_announce=2" } "; the reals sit on the director's network." }
            label.choice { input type="radio" name="fwd" value="nat";
                b { " NAT" } ": replies go back through the director, which must be the reals' default gateway." }
            h2 { "2. The virtual service clients connect to" }
            label { "Protocol " select name="proto" { option value="tcp" { "TCP" } option value="udp" { "UDP" } } }
            label { "Virtual address " input name="vip" placeholder="10.0.0.100" required; }
            label { "Port " input name="port" value="80" size="6" required; }
            label { "Scheduler " (sched_select("rr")) }
            h2 { "3. Two real servers" }
            label { "First " input name="real1" placeholder="10.1.0.2" required; }
            label { "Second " input name="real2" placeholder="10.1.0.3" required; }
            label { "Port (NAT only) " input name="real_port" placeholder="same" size="6"; }
            h2 { "4. Health checks" }
            p.note { "A real whose check fails is taken out until it passes again." }
            (check_select())
            p { button #wizard-submit type="submit" { "Create the service" } }
        }
    };
    respond(
        StatusCode::OK,
        layout("First-run wizard", Some(&session), "/setup", body),
    )
}

/// `POST /setup/wizard`: the service, then its two reals; when a real is
/// refused the service is removed again (nothing half made is left).
pub async fn wizard_post(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    Extension(client): Extension<Client>,
    Form(f): Form<WizardForm>,
) -> Response {
    let sf = ServiceForm {
        proto: f.proto.clone(),
        vip: f.vip.clone(),
        port: f.port.clone(),
        sched: if f.sched.is_empty() {
            "rr".into()
        } else {
            f.sched.clone()
        },
        fwd: f.fwd.clone(),
        persistence: String::new(),
    };
    let made = sf.spec().and_then(|spec| {
        if f.fwd == "tun" {
            return Err(bad("fwd", "the wizard sets up DR or NAT"));
        }
        let reals = [&f.real1, &f.real2]
            .into_iter()
            .map(|a| real_of(spec.service, a, &f.real_port, "1", &f.fwd))
            .map(|r| r.and_then(|r| with_check(r, &f.check, &f.check_path)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((spec, reals))
    });
    let (spec, reals) = match made {
        Ok(x) => x,
        Err(e) => return refused(&session, "wizard", e),
    };
    let service = spec.service;
    let what = format!("wizard: add service {service}");
    if let Err(e) = apply(&web, &session, client, &what, Change::AddService { spec }).await {
        return refused(&session, "wizard", e);
    }
    for real in reals {
        let what = format!(
            "wizard: add real {} to {service}",
            crate::util::fmt_sock(real.addr, real.port)
        );
        if let Err(e) = apply(
            &web,
            &session,
            client,
            &what,
            Change::AddReal { service, real },
        )
        .await
        {
            let undo = format!("wizard: remove service {service} again");
            let _ = apply(
                &web,
                &session,
                client,
                &undo,
                Change::DeleteService { service },
            )
            .await;
            return refused(&session, "wizard", e);
        }
    }
    Redirect::to("/").into_response()
}

/// Keywords whose value is a secret (keepalived's VRRP `auth_pass`, lb's
/// `lb_sync_auth_key`): [`redact`] hides their values.
pub const SECRET_KEYWORDS: [&str; 2] = ["auth_pass", "lb_sync_auth_key"];

/// `conf` with the value of every [`SECRET_KEYWORDS`] line replaced, for
/// users who may read the configuration but not its keys (the view role).
pub fn redact(conf: &str) -> String {
    let mut out = String::with_capacity(conf.len());
    for line in conf.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        match line.split_whitespace().next() {
            Some(k) if SECRET_KEYWORDS.contains(&k) => {
                out.push_str(&format!("{indent}{k} (hidden: admins only)"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The effective configuration (file merged with the runtime layer) as
/// keepalived.conf ([`crate::config::export::keepalived_conf`], as
/// `GET /v1/export` gives it), or a comment saying why not.
pub async fn export_text(api: &Api) -> String {
    let cfg = match tokio::time::timeout(crate::metrics::ASK_TIMEOUT, api.core.effective()).await {
        Ok(Ok(c)) => c,
        _ => return "# the agent's reconciler did not answer\n".into(),
    };
    tokio::task::spawn_blocking(move || crate::config::export::keepalived_conf(&cfg))
        .await
        .unwrap_or_else(|e| format!("# export failed: {e}\n"))
}

/// `GET /setup/export`: the effective configuration as a keepalived.conf
/// download.
pub async fn export(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
) -> Response {
    if session.role != Role::Admin {
        return pages::error(
            StatusCode::FORBIDDEN,
            Some(&session),
            "Export",
            "your role is read-only (view): the export holds the VRRP and sync keys, it is for admins",
        );
    }
    tracing::info!(user = %session.user, "web console: exported the configuration");
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"keepalived.conf\"",
            ),
        ],
        export_text(&web.api).await,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_become_ipvsadm_requests() {
        let f = ServiceForm {
            proto: "tcp".into(),
            vip: "10.0.0.100".into(),
            port: "80".into(),
            sched: "rr".into(),
            fwd: "dr".into(),
            persistence: "300".into(),
        };
        let s = f.spec().unwrap();
        assert_eq!(s.service.to_string(), "TCP 10.0.0.100:80");
        assert_eq!((s.sched, s.persistence_timeout), (Sched::Rr, Some(300)));
        for (field, bad_form) in [
            (
                "vip",
                ServiceForm {
                    vip: "10.0.0".into(),
                    ..Default::default()
                },
            ),
            (
                "port",
                ServiceForm {
                    vip: "10.0.0.1".into(),
                    port: "0".into(),
                    ..Default::default()
                },
            ),
            (
                "sched",
                ServiceForm {
                    vip: "10.0.0.1".into(),
                    port: "1".into(),
                    sched: "xx".into(),
                    ..Default::default()
                },
            ),
            (
                "persistence",
                ServiceForm {
                    vip: "10.0.0.1".into(),
                    port: "1".into(),
                    persistence: "-1".into(),
                    ..Default::default()
                },
            ),
        ] {
            assert_eq!(bad_form.spec().unwrap_err().field, field);
        }
        let svc = s.service;
        let r = real_of(svc, "10.1.0.2", "8080", "", "dr").unwrap();
        assert_eq!(
            (r.port, r.weight, r.fwd),
            (80, 1, Fwd::Dr),
            "DR takes the service's port"
        );
        let r = real_of(svc, "10.1.0.2", "8080", "5", "nat").unwrap();
        assert_eq!((r.port, r.weight, r.fwd), (8080, 5, Fwd::Nat));
        assert_eq!(
            real_of(svc, "10.1.0.2", "", "70000", "dr")
                .unwrap_err()
                .field,
            "weight"
        );
        assert_eq!(real_of(svc, "x", "", "", "dr").unwrap_err().field, "addr");
        for nonsense in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "10.0.0.100",
        ] {
            assert_eq!(
                real_of(svc, nonsense, "", "", "dr").unwrap_err().field,
                "addr",
                "{nonsense}"
            );
        }
        let vip = |v: &str| {
            ServiceForm {
                vip: v.into(),
                port: "80".into(),
                ..Default::default()
            }
            .spec()
        };
        for nonsense in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "ff02::1",
        ] {
            assert_eq!(vip(nonsense).unwrap_err().field, "vip", "{nonsense}");
        }
    }

    #[test]
    fn secrets_are_hidden_from_the_view_role() {
        let conf = "vrrp_instance VI_1 {\n    authentication {\n        auth_type PASS\n        auth_pass S3cr3t\n    }\n}\nglobal_defs {\n  lb_sync_auth_key \"k e y\"\n}\n";
        let r = redact(conf);
        assert!(!r.contains("S3cr3t") && !r.contains("k e y"), "{r}");
        assert!(
            r.contains("        auth_pass (hidden: admins only)\n"),
            "{r}"
        );
        assert!(r.contains("auth_type PASS"));
        assert_eq!(r.lines().count(), conf.lines().count());
    }

    #[test]
    fn service_keys_round_trip() {
        for s in ["TCP 10.0.0.1:80", "UDP [2001:db8::1]:53"] {
            assert_eq!(parse_service(s).unwrap().to_string(), s);
        }
        assert!(parse_service("SCTP 10.0.0.1:80").is_err());
        assert!(parse_service("TCP 10.0.0.1").is_err());
    }
}
