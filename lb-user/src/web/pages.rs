//! The console's read-only pages, rendered on the server (maud): every
//! page works without JavaScript; the overview's script (`/static/lb.js`)
//! only refreshes its numbers and charts from `/live.json` every 2 s.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Extension, Json,
};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;

use super::{
    live::{self, Overview, ServiceView},
    session::Session,
    users::Role,
    Web,
};
use crate::{
    api::{views, Origin},
    list::ConnRow,
};

const STYLE: &str = include_str!("lb.css");
const SCRIPT: &str = include_str!("lb.js");

/// The navigation: (id, path, label).
const NAV: [(&str, &str, &str); 6] = [
    ("nav-overview", "/", "Overview"),
    ("nav-checks", "/checks", "Health checks"),
    ("nav-vrrp", "/vrrp", "VRRP"),
    ("nav-connections", "/connections", "Connections"),
    ("nav-config", "/config", "Configuration"),
    ("nav-setup", "/setup", "Setup"),
];

/// A whole page: head, navigation (when logged in), `body`.
pub fn layout(title: &str, session: Option<&Session>, here: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · lb" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    span.brand { "lb" }
                    @if let Some(s) = session {
                        nav {
                            @for (id, path, label) in NAV {
                                @if path != "/setup" || s.role == Role::Admin {
                                a id=(id) href=(path) class=[(path == here).then_some("here")] { (label) }
                                }
                            }
                        }
                        span.who {
                            span #user { (s.user) " (" (s.role) ")" }
                            form #logout method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button #logout-submit type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page with its status.
pub fn respond(code: StatusCode, page: Markup) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.into_string(),
    )
        .into_response()
}

/// An error page: `p#error` holds `message`.
pub fn error(code: StatusCode, session: Option<&Session>, title: &str, message: &str) -> Response {
    respond(
        code,
        layout(
            title,
            session,
            "",
            html! {
                p #error .error { (message) }
                p { a href="/" { "Back to the overview" } }
            },
        ),
    )
}

/// The login page; `no_users` names the users file when it has none.
pub fn login(
    code: StatusCode,
    token: &str,
    message: Option<&str>,
    no_users: Option<&std::path::Path>,
) -> Response {
    respond(
        code,
        layout(
            "Log in",
            None,
            "",
            html! {
                @if let Some(m) = message { p #error .error { (m) } }
                @if let Some(p) = no_users {
                    p .note { "No user yet: on the director, run "
                        code { "lb passwd --file " (p.display()) " admin" } "." }
                }
                form #login-form .card method="post" action="/login" {
                    input type="hidden" name="csrf" value=(token);
                    label { "User " input name="user" autocomplete="username" required autofocus; }
                    label { "Password " input name="password" type="password" autocomplete="current-password" required; }
                    button #login-submit type="submit" { "Log in" }
                }
            },
        ),
    )
}

/// `1234567` → `1.23 M`.
pub fn si(v: f64) -> String {
    let (v, unit) = if v >= 1e9 {
        (v / 1e9, " G")
    } else if v >= 1e6 {
        (v / 1e6, " M")
    } else if v >= 1e3 {
        (v / 1e3, " k")
    } else {
        (v, " ")
    };
    if unit == " " {
        format!("{v:.1}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// The SVG polyline points of a series of (seconds ago, value) over the
/// last [`live::KEEP`] samples, in a 300 × 60 box.
fn points(series: &[(f64, f64, f64)], pick: fn(&(f64, f64, f64)) -> f64) -> String {
    let span = (live::KEEP as f64) * live::PERIOD.as_secs_f64();
    let max = series.iter().map(pick).fold(0.0f64, f64::max).max(1.0);
    let mut s = String::new();
    for p in series {
        let x = 300.0 * (1.0 - p.0 / span);
        let y = 58.0 - 56.0 * pick(p) / max;
        let _ = write!(s, "{x:.1},{y:.1} ");
    }
    s
}

fn chart(svc: &ServiceView) -> Markup {
    html! {
        svg.chart data-service=(svc.service) viewBox="0 0 300 60" preserveAspectRatio="none" role="img" {
            title { "connections/s (blue) and bytes/s (grey), last 5 minutes" }
            polyline.bps points=(points(&svc.series, |p| p.2));
            polyline.cps points=(points(&svc.series, |p| p.1));
        }
    }
}

fn vrrp_rows(v: &[views::VrrpInstance]) -> Markup {
    html! {
        table.vrrp {
            thead { tr { th { "Instance" } th { "Interface" } th { "VRID" } th { "State" } th { "Priority" } th { "Master" } th { "Addresses" } } }
            tbody {
                @for i in v {
                    tr data-instance=(i.name) {
                        td { (i.name) } td { (i.interface) } td { (i.vrid) }
                        td class=(format!("state {}", i.state.to_lowercase())) { (i.state) }
                        td { (i.priority) @if i.priority != i.configured_priority { " (configured " (i.configured_priority) ")" } }
                        td { (i.master_address.as_deref().unwrap_or("unknown")) }
                        td { (i.vips.join(", ")) }
                    }
                }
            }
        }
    }
}

/// The overview's body.
pub fn overview_body(o: &Overview) -> Markup {
    html! {
        @if let Some(e) = &o.error { p.error { "Numbers unavailable: " (e) } }
        @if o.services.is_empty() {
            p.note { "No virtual service yet. " a href="/setup/wizard" { "Set one up" } "." }
        }
        @for s in &o.services {
            section.service data-service=(s.service) {
                div.head {
                    h2 { (s.service) }
                    span.tag { (s.scheduler) } span.tag { (s.forwarding) }
                    @if !s.quorum_up { span.tag.bad { "quorum lost" } }
                    span.origin { (s.origin) }
                }
                div.row {
                    dl.totals {
                        dt { "Active" } dd.active { (s.active) }
                        dt { "Inactive" } dd.inactive { (s.inactive) }
                        dt { "Connections" } dd.conns { (s.conns) }
                        dt { "Conn/s" } dd.cps { (si(s.cps)) }
                        dt { "Bytes/s" } dd.bps { (si(s.bps)) }
                    }
                    (chart(s))
                }
                table.reals {
                    thead { tr { th { "Real server" } th { "Forward" } th { "Weight" } th { "Health" } th { "ActiveConn" } th { "InActConn" } th { "Connections" } th { "Conn/s" } th { "Bytes/s" } } }
                    tbody {
                        @for r in &s.reals {
                            tr.real data-real=(r.real) {
                                td { (r.real) } td.fwd { (r.fwd) } td.weight { (r.weight) }
                                td class=(format!("health {}", r.health)) { (r.health) }
                                td.active { (r.active) } td.inactive { (r.inactive) }
                                td.conns { (r.conns) } td.cps { (si(r.cps)) } td.bps { (si(r.bps)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "VRRP" }
        @if o.vrrp.is_empty() { p.note { "No VRRP instance: this director holds its addresses alone." } }
        @else { (vrrp_rows(&o.vrrp)) }
        @if let Some(s) = &o.sync {
            p { "Connection sync: " (serde_json::to_string(s).unwrap_or_default()) }
        }
        h2 { "Data-plane counters" }
        table.counters {
            tbody {
                @for (n, what, v) in &o.counters {
                    tr { td { code { (n) } } td.num { (v) } td { (what) } }
                }
            }
        }
    }
}

/// `GET /`.
pub async fn overview(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
) -> Response {
    let hist = web.history.borrow().clone();
    let o = live::overview(&web.api, &hist).await;
    respond(
        StatusCode::OK,
        layout(
            "Overview",
            Some(&session),
            "/",
            html! {
                (overview_body(&o))
                script src="/static/lb.js" {}
            },
        ),
    )
}

/// `GET /live.json`: the overview as JSON ([`Overview`]).
pub async fn live_json(State(web): State<Arc<Web>>) -> Json<Overview> {
    let hist = web.history.borrow().clone();
    Json(live::overview(&web.api, &hist).await)
}

/// `GET /static/lb.js`.
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// Any other path.
pub async fn not_found(Extension(session): Extension<Session>) -> Response {
    error(
        StatusCode::NOT_FOUND,
        Some(&session),
        "Not found",
        "no such page",
    )
}

fn ago(s: Option<f64>) -> String {
    s.map_or("never".into(), |s| format!("{s:.0} s ago"))
}

/// `GET /checks`.
pub async fn checks(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
) -> Response {
    let checks = tokio::time::timeout(crate::metrics::ASK_TIMEOUT, web.api.core.checks()).await;
    let body = match checks {
        Ok(Ok(c)) => html! {
            @if c.checkers.is_empty() { p.note { "No health checker: reals without a checker are always up." } }
            table.checks {
                thead { tr { th { "Service" } th { "Real" } th { "Check" } th { "State" } th { "Last result" } th { "Took" } th { "Probes" } th { "Last change" } } }
                tbody {
                    @for c in &c.checkers {
                        tr.checker data-service=(c.service) data-real=(c.real) {
                            td { (c.service) } td { (c.real) } td { (c.check) }
                            td class=(if c.up { "state up" } else { "state down" }) { (if c.up { "up" } else { "down" }) }
                            td.result { @match &c.last {
                                None => "not probed yet",
                                Some(views::ProbeResult::Ok) => "ok",
                                Some(views::ProbeResult::OkWeight { weight }) => { "ok, weight " (weight) },
                                Some(views::ProbeResult::Failed { error }) => span.error { (error) },
                            } }
                            td { (c.last_duration_s.map_or(String::from("-"), |d| format!("{:.1} ms", d * 1e3))) }
                            td { (c.probes) } td { (ago(c.last_change_ago_s)) }
                        }
                    }
                }
            }
        },
        _ => html! { p #error .error { "the agent's reconciler did not answer" } },
    };
    respond(
        StatusCode::OK,
        layout("Health checks", Some(&session), "/checks", body),
    )
}

/// `GET /vrrp`.
pub async fn vrrp(State(web): State<Arc<Web>>, Extension(session): Extension<Session>) -> Response {
    let v = web.api.vrrp_info().await;
    let body = html! {
        @if v.instances.is_empty() { p.note { "No vrrp_instance in the configuration." } }
        (vrrp_rows(&v.instances))
        @if !v.instances.is_empty() {
            h2 { "Counters" }
            table {
                thead { tr { th { "Instance" } th { "Version" } th { "Advert" } th { "Sent" } th { "Received" } th { "Became master" } th { "Left master" } th { "Transitions" } th { "In state" } th { "Dropped" } th { "Faults" } } }
                tbody { @for i in &v.instances {
                    tr {
                        td { (i.name) } td { (i.version) } td { (i.advert_interval_s) " s" }
                        td { (i.adverts_sent) } td { (i.adverts_received) }
                        td { (i.became_master) } td { (i.released_master) } td.transitions { (i.transitions) }
                        td { (i.in_state_s) " s" }
                        td { @for (k, n) in &i.dropped { (k) " " (n) " " } }
                        td { (i.faults.join(", ")) }
                    }
                } }
            }
        }
        @if !v.sync_groups.is_empty() {
            h2 { "Sync groups" }
            ul { @for g in &v.sync_groups { li { (g.name) ": " (g.members.join(", ")) } } }
        }
        @if !v.scripts.is_empty() {
            h2 { "Tracked scripts" }
            ul { @for s in &v.scripts { li { (s.name) ": " (if s.good { "good" } else { "bad" }) ", weight " (s.weight) } } }
        }
        @if let Some(s) = &v.sync {
            h2 { "Connection sync" }
            pre { (serde_json::to_string_pretty(s).unwrap_or_default()) }
        }
    };
    respond(
        StatusCode::OK,
        layout("VRRP", Some(&session), "/vrrp", body),
    )
}

/// The connection page's filters (substrings of the shown columns).
#[derive(Debug, Default, Deserialize)]
pub struct ConnFilter {
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub real: String,
}

/// Rows shown at most.
pub const MAX_CONN_ROWS: usize = 1000;

fn sock(s: (std::net::IpAddr, u16)) -> String {
    crate::util::fmt_sock(s.0, s.1)
}

/// Whether `c` passes `f`.
pub fn conn_matches(c: &ConnRow, f: &ConnFilter) -> bool {
    let has = |text: String, want: &str| {
        text.to_ascii_lowercase()
            .contains(&want.trim().to_ascii_lowercase())
    };
    has(sock(c.src), &f.client)
        && has(live::service_key(c.proto, c.vip.0, c.vip.1), &f.service)
        && has(sock(c.dst), &f.real)
}

/// `GET /connections?client=&service=&real=`.
pub async fn connections(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    Query(f): Query<ConnFilter>,
) -> Response {
    let bpffs = web.api.bpffs.clone();
    // One read of the table at a time (it can hold millions of entries).
    let Ok(Ok(_one)) = tokio::time::timeout(
        Duration::from_secs(10),
        web.conn_reads.clone().acquire_owned(),
    )
    .await
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(&session),
            "Connections",
            "the connection table is being read for other requests: try again in a moment",
        );
    };
    let read = tokio::task::spawn_blocking(move || {
        let _one = _one;
        let dp = crate::dataplane::Dataplane::from_pins(&bpffs).map_err(|e| e.to_string())?;
        crate::list::snapshot(&dp, true)
            .map(|s| s.conns)
            .map_err(|e| e.to_string())
    });
    let rows = tokio::time::timeout(Duration::from_secs(10), read).await;
    let body = match rows {
        Ok(Ok(Ok(conns))) => {
            let hits: Vec<&ConnRow> = conns.iter().filter(|c| conn_matches(c, &f)).collect();
            html! {
                form.filter method="get" action="/connections" {
                    label { "Client " input name="client" value=(f.client) placeholder="10.0.0.5"; }
                    label { "Service " input name="service" value=(f.service) placeholder="TCP 10.0.0.100:80"; }
                    label { "Real " input name="real" value=(f.real) placeholder="10.1.0.2"; }
                    button #filter type="submit" { "Filter" }
                }
                p #conn-count { (hits.len()) " of " (conns.len()) " connection(s)"
                    @if hits.len() > MAX_CONN_ROWS { ", the first " (MAX_CONN_ROWS) " shown" } }
                table #conns {
                    thead { tr { th { "Pro" } th { "Expires" } th { "State" } th { "Client" } th { "Virtual" } th { "Real" } } }
                    tbody { @for c in hits.iter().take(MAX_CONN_ROWS) {
                        tr.conn {
                            td { (crate::config::Proto::from_number(c.proto).map_or("?", |p| p.name())) }
                            td { (c.expire_s) " s" }
                            td { (crate::list::state_name(c.state, c.proto)) }
                            td.client { (sock(c.src)) } td.vip { (sock(c.vip)) } td.real { (sock(c.dst)) }
                        }
                    } }
                }
            }
        }
        Ok(Ok(Err(e))) => html! { p #error .error { "reading the connection table: " (e) } },
        _ => html! { p #error .error { "reading the connection table took too long" } },
    };
    respond(
        StatusCode::OK,
        layout("Connections", Some(&session), "/connections", body),
    )
}

fn origin_class(o: &Origin) -> &'static str {
    match o {
        Origin::File { .. } | Origin::SorryServer { .. } => "file",
        Origin::Runtime | Origin::RuntimeOverFile { .. } => "runtime",
    }
}

/// `GET /config`.
pub async fn config(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
) -> Response {
    let services = tokio::time::timeout(crate::metrics::ASK_TIMEOUT, web.api.core.services()).await;
    let last = web.api.reloader.last_reload();
    let export = super::setup::export_text(&web.api).await;
    let export = if session.role == Role::Admin {
        export
    } else {
        super::setup::redact(&export)
    };
    let body = html! {
        p { "Configuration file " code { (web.api.config.display()) } "; changes made here or with "
            code { "lb adm" } " are the runtime layer, kept across reloads." }
        @if session.role == Role::Admin {
            form #reload-form method="post" action="/config/reload" {
                input type="hidden" name="csrf" value=(session.csrf);
                button #reload type="submit" { "Reload the file" }
            }
        }
        h2 { "Services and where they come from" }
        @match services {
            Ok(Ok(list)) => table.origins {
                thead { tr { th { "Service / real" } th { "Scheduler" } th { "Weight" } th { "From" } } }
                tbody { @for s in &list {
                    tr class=(format!("service {}", origin_class(&s.origin))) { td { b { (s.service) } } td { (s.scheduler) " " (s.forwarding) } td {} td.origin { (s.origin) } }
                    @for r in &s.reals {
                        tr class=(format!("real {}", origin_class(&r.origin))) { td { "\u{2003}" (r.addr) } td {} td { (r.weight) " (" (r.weight_source) ")" } td.origin { (r.origin) } }
                    }
                } }
            },
            _ => p.error { "the agent's reconciler did not answer" },
        }
        h2 { "Last reload" }
        @match &last {
            None => p.note { "No reload since the agent started." },
            Some((when, r)) => {
                p #reload-outcome { (format!("{:?}", r.outcome).to_lowercase()) ", " (when) ": " (r.message) }
                @if !r.diagnostics.is_empty() {
                    ul.diagnostics { @for d in &r.diagnostics {
                        li class=(d.severity) { code { (d.text) } }
                    } }
                }
            }
        }
        h2 { "Effective configuration" }
        p { "As keepalived.conf"
            @if session.role == Role::Admin { " (" a #export-link href="/setup/export" { "download" } ")" }
            @else { " (keys hidden: your role is view)" } "." }
        pre #effective { (export) }
    };
    respond(
        StatusCode::OK,
        layout("Configuration", Some(&session), "/config", body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_and_points() {
        assert_eq!(si(0.0), "0.0");
        assert_eq!(si(999.0), "999.0");
        assert_eq!(si(1234.0), "1.23 k");
        assert_eq!(si(2_500_000.0), "2.50 M");
        let p = points(&[(300.0, 1.0, 0.0), (0.0, 2.0, 0.0)], |p| p.1);
        assert_eq!(p, "0.0,30.0 300.0,2.0 ");
    }

    #[test]
    fn pages_escape_what_they_show() {
        let o = Overview {
            services: vec![ServiceView {
                service: "TCP 10.0.0.1:80".into(),
                scheduler: "rr".into(),
                forwarding: "DR".into(),
                origin: "<script>".into(),
                quorum_up: true,
                active: 1,
                inactive: 2,
                conns: 3,
                cps: 0.0,
                bps: 0.0,
                series: vec![],
                reals: vec![live::RealView {
                    real: "10.1.0.2:80".into(),
                    fwd: "Route".into(),
                    weight: 1,
                    health: "draining".into(),
                    active: 0,
                    inactive: 0,
                    conns: 0,
                    cps: 0.0,
                    bps: 0.0,
                }],
            }],
            vrrp: vec![],
            sync: None,
            counters: vec![],
            error: None,
        };
        let html = overview_body(&o).into_string();
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(html.contains(r#"data-service="TCP 10.0.0.1:80""#));
        // One class attribute per element (a second one is ignored by
        // browsers).
        for tag in html.split('<') {
            let tag = tag.split('>').next().unwrap_or_default();
            assert!(tag.matches(" class=").count() <= 1, "<{tag}>");
        }
    }
}
