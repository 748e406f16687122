//! `lb run --metrics-listen ADDR:PORT`: Prometheus metrics on `/metrics`.
//!
//! Each scrape builds a fresh [`Registry`] (prometheus-client) from what the
//! agent has at that moment: the pinned maps (read on a blocking thread,
//! with handles of its own), the reconciler's services and checkers and the
//! VRRP engine's instances (asked through their handles, each answer bounded
//! by [`ASK_TIMEOUT`]). Nothing here holds a lock or a task of theirs: the
//! reconciler answers health verdicts before any question (its `biased`
//! loop), and a slow or stuck scraper only holds its own connection task.
//!
//! Names and labels (README "Prometheus metrics"):
//! - `lb_ipvs_*` are node_exporter's ipvs collector's `node_ipvs_*`
//!   (collector/ipvs_linux.go) with the same labels (`local_address`,
//!   `local_port`, `remote_address`, `remote_port`, `proto`, `local_mark`),
//!   plus per-service and per-backend traffic counters and health;
//! - the VRRP metrics are those of the keepalived exporter
//!   github.com/mehdy/keepalived-exporter with `keepalived_` replaced by
//!   `lb_` (labels `iname`, `intf`, `vrid`, `state`; `lb_vrrp_state` with
//!   `ip_address`), plus priority, transitions and drops by reason;
//! - the data plane's own counters (`lb counters`), the connection table and
//!   `lb_build_info`.
//!
//! Counters end in `_total`, durations are seconds. A client that asks for
//! OpenMetrics (Prometheus does) gets prometheus-client's encoding as it
//! is; any other gets the classic text format 0.0.4 ([`to_classic`]), which
//! `promtool check metrics` reads.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::net::TcpListener;

use crate::{
    api::{server::Api, views, ServiceStatus},
    list,
};

/// The path served.
pub const PATH: &str = "/metrics";
/// Connections served at once (a scraper or two, and an operator's curl).
pub const MAX_CONNECTIONS: usize = 32;
/// Longest wait for the reconciler's or the VRRP engine's answer; past it
/// the scrape goes on without their metrics.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// The OpenMetrics content type prometheus-client writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format.
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(String, String)>;

fn labels<const N: usize>(pairs: [(&str, String); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Everything one scrape reads.
#[derive(Default)]
pub struct Inputs {
    /// The maps; `None` when they could not be read.
    pub table: Option<list::Snapshot>,
    pub global: Option<lb_common::GlobalStats>,
    pub services: Option<Vec<ServiceStatus>>,
    pub checks: Option<views::Checks>,
    pub vrrp: Option<views::Vrrp>,
    /// Health changes the reconciler applied since the start.
    pub health_changes: u64,
    /// The agent's drains (`lb drain`).
    pub drains: crate::drain::DrainList,
    /// BGP announcement (`lb_bgp`); `None` or not configured: no `lb_bgp_*`.
    pub bgp: Option<crate::bgp::View>,
}

/// A registry with one family per metric; label sets are added per sample.
struct Out(Registry);

impl Out {
    fn counter(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let f: Family<Labels, Counter> = Family::default();
        for (l, v) in samples {
            f.get_or_create(&l).inc_by(v);
        }
        self.0.register(name, help, f);
    }

    fn gauge(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, i64)>) {
        let f: Family<Labels, Gauge> = Family::default();
        for (l, v) in samples {
            f.get_or_create(&l).set(v);
        }
        self.0.register(name, help, f);
    }

    fn gauge_f(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let f: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
        for (l, v) in samples {
            f.get_or_create(&l).set(v);
        }
        self.0.register(name, help, f);
    }
}

/// `IP:PORT` / `[IPv6]:PORT` as the API writes it → (address, port).
fn split_sock(s: &str) -> Option<(IpAddr, u16)> {
    s.parse::<SocketAddr>().ok().map(|a| (a.ip(), a.port()))
}

fn service_labels(proto: &str, addr: IpAddr, port: u16) -> Labels {
    labels([
        ("local_address", addr.to_string()),
        ("local_port", port.to_string()),
        ("proto", proto.to_string()),
        // node_exporter's label for fwmark services; lb has none.
        ("local_mark", String::new()),
    ])
}

fn backend_labels(proto: &str, vip: IpAddr, vport: u16, real: IpAddr, rport: u16) -> Labels {
    labels([
        ("local_address", vip.to_string()),
        ("local_port", vport.to_string()),
        ("remote_address", real.to_string()),
        ("remote_port", rport.to_string()),
        ("proto", proto.to_string()),
        ("local_mark", String::new()),
    ])
}

/// keepalived's numbering of VRRP states (vrrp.h), which the exporter's
/// `keepalived_vrrp_state` reports.
fn state_number(s: &str) -> i64 {
    match s {
        "INIT" => 0,
        "BACKUP" => 1,
        "MASTER" => 2,
        "FAULT" => 3,
        _ => -1,
    }
}

/// The keepalived exporter's counter for an advert dropped for `reason`
/// (lb's reason names: [`crate::vrrp::packet::Reject`],
/// [`crate::vrrp::validate::Mismatch`]).
const DROP_METRICS: [(&str, &str, &str); 6] = [
    (
        "ttl",
        "ip_ttl_errors",
        "Adverts received with an IP TTL other than 255",
    ),
    (
        "length",
        "packet_length_errors",
        "Adverts received with a bad length",
    ),
    (
        "type",
        "invalid_type_received",
        "Adverts received with an invalid VRRP type",
    ),
    (
        "auth",
        "authentication_failure",
        "Adverts received failing authentication",
    ),
    (
        "interval",
        "advertisements_interval_errors",
        "Adverts received with another advert interval",
    ),
    (
        "addresses",
        "address_list_errors",
        "Adverts received with another address list",
    ),
];

/// Builds the registry of one scrape.
pub fn registry(inp: &Inputs) -> Registry {
    let mut o = Out(Registry::with_prefix("lb"));
    o.gauge(
        "build_info",
        "The lb agent's version, value 1",
        [(
            labels([("version", env!("CARGO_PKG_VERSION").to_string())]),
            1,
        )],
    );
    o.counter(
        "health_changes",
        "Health changes the agent applied to the data plane",
        [(vec![], inp.health_changes)],
    );
    if let Some(snap) = &inp.table {
        ipvs(&mut o, snap);
    }
    if let Some(services) = &inp.services {
        o.gauge(
            "ipvs_backend_up",
            "Whether the real server takes new connections (1) or is out of scheduling after failed checks or a lost quorum (0)",
            services.iter().flat_map(|s| {
                let (proto, vip) = s.service.split_once(' ').unwrap_or(("", ""));
                let vip = split_sock(vip);
                s.reals.iter().filter_map(move |r| {
                    let (va, vp) = vip?;
                    let (ra, rp) = split_sock(&r.addr)?;
                    Some((backend_labels(proto, va, vp, ra, rp), i64::from(r.in_service)))
                })
            }),
        );
    }
    if let Some(services) = &inp.services {
        o.gauge(
            "ipvs_backend_draining",
            "Whether the agent is draining the real server (lb drain: weight 0, waiting for its connections to end before removing it)",
            services.iter().flat_map(|s| {
                let (proto, vip) = s.service.split_once(' ').unwrap_or(("", ""));
                let vip = split_sock(vip);
                let svc = vip.zip(crate::config::Proto::from_name(proto)).map(
                    |((addr, port), proto)| crate::config::ServiceAddr { addr, port, proto },
                );
                s.reals.iter().filter_map(move |r| {
                    let (va, vp) = vip?;
                    let (ra, rp) = split_sock(&r.addr)?;
                    let draining = svc
                        .as_ref()
                        .is_some_and(|k| inp.drains.running_of(k, ra, rp).is_some());
                    Some((backend_labels(proto, va, vp, ra, rp), i64::from(draining)))
                })
            }),
        );
    }
    if let Some(c) = &inp.checks {
        checks(&mut o, c);
    }
    if let Some(v) = &inp.vrrp {
        vrrp(&mut o, v);
    }
    if let Some(b) = inp.bgp.as_ref().filter(|b| b.configured) {
        bgp(&mut o, b);
    }
    if let Some(g) = &inp.global {
        dataplane(&mut o, g);
    }
    o.0
}

/// `lb_bgp_*`: per VIP whether the daemon has its route, per peer whether
/// the session is up, the daemon and the drain.
fn bgp(o: &mut Out, b: &crate::bgp::View) {
    o.gauge(
        "bgp_announced",
        "Whether the BGP daemon announces the VIP (1) or not (0), as last read from its RIB",
        b.vips
            .iter()
            .map(|v| (labels([("vip", v.vip.to_string())]), i64::from(v.announced))),
    );
    o.gauge(
        "bgp_wanted",
        "Whether the VIP should be announced (a healthy real, XDP attached, not drained, not stopping)",
        b.vips
            .iter()
            .map(|v| (labels([("vip", v.vip.to_string())]), i64::from(v.want))),
    );
    o.gauge(
        "bgp_session_up",
        "Whether the BGP daemon's session with the peer is established",
        b.peers.iter().map(|p| {
            (
                labels([
                    ("peer", p.address.to_string()),
                    ("peer_as", p.asn.to_string()),
                ]),
                i64::from(p.up),
            )
        }),
    );
    o.gauge(
        "bgp_daemon_up",
        "Whether the BGP daemon answered the agent's last requests",
        [(vec![], i64::from(b.daemon_up))],
    );
    o.gauge(
        "bgp_drained",
        "Whether the director is drained (lb bgp drain): every VIP withdrawn",
        [(vec![], i64::from(b.drained))],
    );
    o.counter(
        "bgp_announcements",
        "Routes the agent added to the BGP daemon",
        [(vec![], b.announcements)],
    );
    o.counter(
        "bgp_withdrawals",
        "Routes the agent withdrew from the BGP daemon",
        [(vec![], b.withdrawals)],
    );
    o.counter(
        "bgp_errors",
        "Rounds of requests to the BGP daemon that failed",
        [(vec![], b.errors)],
    );
}

fn ipvs(o: &mut Out, snap: &list::Snapshot) {
    let mut total = lb_common::Stats::default();
    for s in &snap.services {
        total.add(&s.stats);
    }
    o.counter(
        "ipvs_connections",
        "The total number of connections made",
        [(vec![], total.conns)],
    );
    o.counter(
        "ipvs_incoming_packets",
        "The total number of incoming packets",
        [(vec![], total.packets)],
    );
    o.counter(
        "ipvs_outgoing_packets",
        "The total number of outgoing packets (NAT replies; DR and TUN replies bypass the director)",
        [(vec![], total.out_packets)],
    );
    o.counter(
        "ipvs_incoming_bytes",
        "The total amount of incoming data, bytes",
        [(vec![], total.bytes)],
    );
    o.counter(
        "ipvs_outgoing_bytes",
        "The total amount of outgoing data, bytes (NAT replies)",
        [(vec![], total.out_bytes)],
    );
    let svc = |f: fn(&lb_common::Stats) -> u64| {
        snap.services.iter().map(move |s| {
            (
                service_labels(list::proto_name(s.proto), s.addr, s.port),
                f(&s.stats),
            )
        })
    };
    o.counter(
        "ipvs_service_connections",
        "Connections made to the virtual service",
        svc(|s| s.conns),
    );
    o.counter(
        "ipvs_service_incoming_packets",
        "Packets received for the virtual service",
        svc(|s| s.packets),
    );
    o.counter(
        "ipvs_service_outgoing_packets",
        "NAT reply packets of the virtual service",
        svc(|s| s.out_packets),
    );
    o.counter(
        "ipvs_service_incoming_bytes",
        "Bytes received for the virtual service",
        svc(|s| s.bytes),
    );
    o.counter(
        "ipvs_service_outgoing_bytes",
        "NAT reply bytes of the virtual service",
        svc(|s| s.out_bytes),
    );
    let backends = || {
        snap.services.iter().flat_map(|s| {
            s.reals.iter().map(move |r| {
                (
                    backend_labels(list::proto_name(s.proto), s.addr, s.port, r.addr, r.port),
                    r,
                )
            })
        })
    };
    o.gauge(
        "ipvs_backend_connections_active",
        "The current active connections by local and remote address",
        backends().map(|(l, r)| (l, r.active as i64)),
    );
    o.gauge(
        "ipvs_backend_connections_inactive",
        "The current inactive connections by local and remote address",
        backends().map(|(l, r)| (l, r.inactive as i64)),
    );
    o.gauge(
        "ipvs_backend_weight",
        "The current backend weight by local and remote address",
        backends().map(|(l, r)| (l, i64::from(r.weight))),
    );
    o.counter(
        "ipvs_backend_connections",
        "Connections scheduled to the backend",
        backends().map(|(l, r)| (l, r.stats.conns)),
    );
    o.counter(
        "ipvs_backend_incoming_packets",
        "Packets forwarded to the backend",
        backends().map(|(l, r)| (l, r.stats.packets)),
    );
    o.counter(
        "ipvs_backend_outgoing_packets",
        "NAT reply packets from the backend",
        backends().map(|(l, r)| (l, r.stats.out_packets)),
    );
    o.counter(
        "ipvs_backend_incoming_bytes",
        "Bytes forwarded to the backend",
        backends().map(|(l, r)| (l, r.stats.bytes)),
    );
    o.counter(
        "ipvs_backend_outgoing_bytes",
        "NAT reply bytes from the backend",
        backends().map(|(l, r)| (l, r.stats.out_bytes)),
    );
    let live: u64 = snap
        .services
        .iter()
        .flat_map(|s| &s.reals)
        .map(|r| r.active + r.inactive)
        .sum();
    o.gauge(
        "conntrack_entries",
        "Live connections in the connection table (the reals' active and inactive counts)",
        [(vec![], live as i64)],
    );
    o.gauge(
        "conntrack_capacity",
        "Connections the connection table holds (lb run --conntrack-size)",
        [(vec![], i64::from(snap.conn_table_size))],
    );
}

fn checks(o: &mut Out, c: &views::Checks) {
    let l = |c: &views::Checker| {
        let mut l = labels([
            ("local_address", c.service_address.clone()),
            ("local_port", c.service_port.to_string()),
            ("remote_address", c.real_address.clone()),
            ("remote_port", c.real_port.to_string()),
            ("proto", c.protocol.clone()),
            ("check", c.check.clone()),
        ]);
        l.push(("index".into(), c.index.to_string()));
        l
    };
    o.gauge(
        "check_up",
        "Whether the health checker passes (1) or failed (0)",
        c.checkers.iter().map(|c| (l(c), i64::from(c.up))),
    );
    o.counter(
        "check_probes",
        "Probes the health checker ran",
        c.checkers.iter().map(|c| (l(c), c.probes)),
    );
    o.gauge_f(
        "check_last_duration_seconds",
        "How long the health checker's last probe took",
        c.checkers
            .iter()
            .filter_map(|c| c.last_duration_s.map(|d| (l(c), d))),
    );
}

/// Connection sync's counters and state (`lvs_sync_daemon`).
fn sync(o: &mut Out, s: &crate::sync::Status) {
    let none = || vec![];
    o.gauge(
        "sync_in_sync",
        "Connection sync: 1 once the peer's table is in (or none answered), 0 while waiting for it (VRRP held in BACKUP)",
        [(none(), i64::from(s.state != "waiting for the peer's table"))],
    );
    for (name, help, v) in [
        (
            "sync_sent_conns",
            "Connection sync: conns (flows and persistence templates) sent",
            s.sent_conns,
        ),
        (
            "sync_sent_messages",
            "Connection sync: messages sent",
            s.sent_messages,
        ),
        (
            "sync_received_conns",
            "Connection sync: conns received",
            s.received_conns,
        ),
        (
            "sync_received_messages",
            "Connection sync: valid messages received",
            s.received_messages,
        ),
        (
            "sync_installed_conns",
            "Connection sync: received conns installed in this director's tables",
            s.installed,
        ),
        (
            "sync_bulk_served",
            "Connection sync: bulk copies of the table sent to a starting peer",
            s.bulk_served,
        ),
        (
            "sync_bulk_received_conns",
            "Connection sync: conns in the peer's last bulk copy",
            s.bulk_received,
        ),
    ] {
        o.counter(name, help, [(none(), v)]);
    }
    o.counter(
        "sync_dropped",
        "Connection sync: messages or conns dropped, by reason (malformed, unsigned, bad signature, other sync id, unknown service, unknown real, ...)",
        s.dropped.iter().map(|(k, v)| (labels([("reason", k.clone())]), *v)),
    );
    o.gauge_f(
        "sync_send_lag_seconds",
        "Connection sync: how long the oldest event of the last batch waited before it was sent",
        [(none(), s.send_lag_ms / 1000.0)],
    );
    if let Some(ms) = s.last_received_ms {
        o.gauge_f(
            "sync_last_received_seconds",
            "Connection sync: seconds since the last message from a peer",
            [(none(), ms as f64 / 1000.0)],
        );
    }
}

fn vrrp(o: &mut Out, v: &views::Vrrp) {
    if let Some(s) = &v.sync {
        sync(o, s);
    }
    o.gauge(
        "up",
        "Whether the VRRP engine answers (keepalived exporter's keepalived_up)",
        [(vec![], i64::from(v.running))],
    );
    let common = |i: &views::VrrpInstance| {
        labels([
            ("iname", i.name.clone()),
            ("intf", i.interface.clone()),
            ("vrid", i.vrid.to_string()),
            ("state", i.state.clone()),
        ])
    };
    let per =
        |f: fn(&views::VrrpInstance) -> u64| v.instances.iter().map(move |i| (common(i), f(i)));
    o.gauge(
        "vrrp_state",
        "State of the VRRP instance per virtual address: 0 INIT, 1 BACKUP, 2 MASTER, 3 FAULT",
        v.instances.iter().flat_map(|i| {
            i.vips.iter().map(move |a| {
                let addr = a.split_once('/').map_or(a.as_str(), |(x, _)| x);
                (
                    labels([
                        ("iname", i.name.clone()),
                        ("intf", i.interface.clone()),
                        ("vrid", i.vrid.to_string()),
                        ("ip_address", addr.to_string()),
                    ]),
                    state_number(&i.state),
                )
            })
        }),
    );
    o.counter(
        "advertisements_received",
        "Advertisements received",
        per(|i| i.adverts_received),
    );
    o.counter(
        "advertisements_sent",
        "Advertisements sent",
        per(|i| i.adverts_sent),
    );
    o.counter("become_master", "Became master", per(|i| i.became_master));
    o.counter(
        "release_master",
        "Released master",
        per(|i| i.released_master),
    );
    o.counter(
        "priority_zero_received",
        "Priority zero received",
        per(|i| i.priority_zero_received),
    );
    o.counter(
        "priority_zero_sent",
        "Priority zero sent",
        per(|i| i.priority_zero_sent),
    );
    for (reason, name, help) in DROP_METRICS {
        o.counter(
            name,
            help,
            v.instances
                .iter()
                .map(|i| (common(i), i.dropped.get(reason).copied().unwrap_or(0))),
        );
    }
    let id = |i: &views::VrrpInstance| {
        labels([
            ("iname", i.name.clone()),
            ("intf", i.interface.clone()),
            ("vrid", i.vrid.to_string()),
        ])
    };
    o.gauge(
        "vrrp_priority",
        "Priority in effect (configured, adjusted by tracking)",
        v.instances.iter().map(|i| (id(i), i64::from(i.priority))),
    );
    o.gauge(
        "vrrp_configured_priority",
        "Configured priority",
        v.instances
            .iter()
            .map(|i| (id(i), i64::from(i.configured_priority))),
    );
    o.counter(
        "vrrp_transitions",
        "State changes of the VRRP instance",
        v.instances.iter().map(|i| (id(i), i.transitions)),
    );
    o.counter(
        "vrrp_adverts_dropped",
        "Received adverts dropped, by reason (and adverts that could not be sent: send-error)",
        v.instances.iter().flat_map(|i| {
            i.dropped.iter().map(move |(r, n)| {
                let mut l = id(i);
                l.push(("reason".into(), r.clone()));
                (l, *n)
            })
        }),
    );
    o.gauge(
        "script_status",
        "Tracked script status: 1 GOOD, 0 BAD (keepalived exporter's keepalived_script_status)",
        v.scripts
            .iter()
            .map(|s| (labels([("name", s.name.clone())]), i64::from(s.good))),
    );
}

fn dataplane(o: &mut Out, g: &lb_common::GlobalStats) {
    let fields = || lb_common::GlobalStats::FIELDS.iter().zip(g.values());
    let verdicts = ["pass", "tx", "redirect", "drop", "aborted"];
    o.counter(
        "xdp_verdicts",
        "Packets by XDP verdict",
        fields()
            .filter(|((n, _), _)| verdicts.contains(n))
            .map(|((n, _), v)| (labels([("verdict", n.to_string())]), v)),
    );
    o.counter(
        "xdp_passed",
        "Packets passed to the kernel, by reason",
        fields().filter_map(|((n, _), v)| {
            n.strip_prefix("pass_")
                .map(|r| (labels([("reason", r.to_string())]), v))
        }),
    );
    o.counter(
        "xdp_dropped",
        "Packets dropped, by reason",
        fields().filter_map(|((n, _), v)| {
            n.strip_prefix("drop_")
                .map(|r| (labels([("reason", r.to_string())]), v))
        }),
    );
    o.counter(
        "xdp_events",
        "Other data-plane events (lb counters: new_flows, resched, nat_reverse, ...)",
        fields()
            .filter(|((n, _), _)| {
                !verdicts.contains(n) && !n.starts_with("pass_") && !n.starts_with("drop_")
            })
            .map(|((n, _), v)| (labels([("event", n.to_string())]), v)),
    );
}

/// The classic text format (0.0.4) of prometheus-client's OpenMetrics
/// text: a counter family is named with its `_total` suffix there, `# UNIT`
/// and `# EOF` do not exist.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Reads the maps (on a blocking thread) and asks the reconciler and the
/// VRRP engine, each bounded by [`ASK_TIMEOUT`].
pub async fn gather(api: &Api) -> Inputs {
    let maps = list::read_pinned(api.bpffs.clone());
    let services = tokio::time::timeout(ASK_TIMEOUT, api.core.services());
    let checks = tokio::time::timeout(ASK_TIMEOUT, api.core.checks());
    let vrrp = tokio::time::timeout(ASK_TIMEOUT, api.vrrp_info());
    let (maps, services, checks, vrrp) = tokio::join!(maps, services, checks, vrrp);
    let (table, global) = match maps {
        Ok((s, g)) => (Some(s), Some(g)),
        Err(e) => {
            tracing::warn!("metrics: reading the maps: {e}");
            (None, None)
        }
    };
    Inputs {
        table,
        global,
        services: services.ok().and_then(Result::ok),
        checks: checks.ok().and_then(Result::ok),
        vrrp: vrrp.ok(),
        health_changes: api.core.published().borrow().stats.health_changes,
        drains: api.changer.drains.list(),
        bgp: Some(api.bgp.view()),
    }
}

/// Whether the scraper takes OpenMetrics (Prometheus asks for it first).
fn wants_openmetrics(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

async fn metrics(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let inputs = gather(&api).await;
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &registry(&inputs)) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}\n"),
        )
            .into_response();
    }
    if wants_openmetrics(&headers) {
        ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
    } else {
        ([(header::CONTENT_TYPE, CLASSIC)], to_classic(&text)).into_response()
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "lb serves its metrics on /metrics\n")
}

/// Binds `addr` (done at the agent's start, so that a taken port fails the
/// start with a clear error).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics` on `listener` until the task is aborted, with the
/// control API's protections: one task per connection, the request head
/// within [`HEADER_TIMEOUT`](crate::api::server::HEADER_TIMEOUT), each connection at most
/// [`CONNECTION_LIFETIME`](crate::api::server::CONNECTION_LIFETIME), at most [`MAX_CONNECTIONS`] at once (further
/// ones are closed at once).
pub async fn serve(listener: TcpListener, api: Arc<Api>) {
    let router = Router::new()
        .route(PATH, get(metrics))
        .fallback(not_found)
        .with_state(api);
    let names = crate::api::server::Names {
        listener: "metrics",
        connection: "metrics",
    };
    crate::api::server::accept_loop(listener, router, MAX_CONNECTIONS, names, |stream, peer| {
        tracing::warn!(%peer, "metrics: {MAX_CONNECTIONS} connections open; closing a new one");
        drop(stream);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::{RealRow, SvcRow};
    use lb_common::{Stats, FWD_DR, PROTO_TCP, SCHED_RR};
    use std::collections::BTreeMap;

    fn inputs() -> Inputs {
        let mut dropped = BTreeMap::new();
        dropped.insert("auth".to_string(), 4);
        Inputs {
            table: Some(list::Snapshot {
                conn_table_size: 1024,
                services: vec![SvcRow {
                    id: 0,
                    proto: PROTO_TCP,
                    addr: "10.0.0.100".parse().unwrap(),
                    port: 80,
                    sched: SCHED_RR,
                    flags: 0,
                    persistent: None,
                    persist_prefix: None,
                    stats: Stats {
                        conns: 20,
                        packets: 200,
                        bytes: 20_000,
                        ..Default::default()
                    },
                    reals: vec![RealRow {
                        id: 0,
                        addr: "10.0.1.1".parse().unwrap(),
                        port: 8080,
                        fwd: FWD_DR,
                        weight: 3,
                        active: 2,
                        inactive: 5,
                        stats: Stats {
                            conns: 20,
                            ..Default::default()
                        },
                        u_threshold: 0,
                        l_threshold: 0,
                        persist_conns: 0,
                        draining: None,
                    }],
                }],
                conns: vec![],
            }),
            global: Some(lb_common::GlobalStats {
                tx: 180,
                pass_not_vip: 9,
                drop_no_real: 1,
                new_flows: 20,
                ..Default::default()
            }),
            services: None,
            checks: Some(views::Checks {
                checkers: vec![views::Checker {
                    service: "TCP 10.0.0.100:80".into(),
                    protocol: "TCP".into(),
                    service_address: "10.0.0.100".into(),
                    service_port: 80,
                    real: "10.0.1.1:8080".into(),
                    real_address: "10.0.1.1".into(),
                    real_port: 8080,
                    check: "TCP_CHECK".into(),
                    index: 0,
                    up: true,
                    probes: 7,
                    last_change_ago_s: None,
                    last: Some(views::ProbeResult::Ok),
                    last_duration_s: Some(0.5),
                }],
            }),
            vrrp: Some(views::Vrrp {
                running: true,
                instances: vec![views::VrrpInstance {
                    name: "VI_1".into(),
                    interface: "eth0".into(),
                    vrid: 51,
                    state: "MASTER".into(),
                    priority: 150,
                    configured_priority: 150,
                    version: "v2".into(),
                    source_address: "10.0.0.2".into(),
                    master_address: Some("10.0.0.2".into()),
                    advert_interval_s: 1.0,
                    vips: vec!["10.0.0.100/32".into()],
                    vips_held: true,
                    adverts_sent: 11,
                    adverts_received: 0,
                    became_master: 1,
                    released_master: 0,
                    transitions: 2,
                    priority_zero_sent: 0,
                    priority_zero_received: 0,
                    other_master_seen: 0,
                    dropped,
                    faults: vec![],
                    in_state_s: 3,
                }],
                ..Default::default()
            }),
            health_changes: 2,
            drains: Default::default(),
            bgp: None,
        }
    }

    fn text() -> String {
        let mut s = String::new();
        encode(&mut s, &registry(&inputs())).unwrap();
        s
    }

    /// The names and label sets node_exporter's ipvs collector and the
    /// keepalived exporter use, with the `lb_` prefix.
    #[test]
    fn names_and_labels_follow_the_exporters() {
        let t = to_classic(&text());
        for want in [
            "lb_ipvs_connections_total 20\n",
            "lb_ipvs_incoming_packets_total 200\n",
            "lb_ipvs_incoming_bytes_total 20000\n",
            "lb_ipvs_backend_connections_active{local_address=\"10.0.0.100\",local_port=\"80\",remote_address=\"10.0.1.1\",remote_port=\"8080\",proto=\"TCP\",local_mark=\"\"} 2\n",
            "lb_ipvs_backend_connections_inactive{local_address=\"10.0.0.100\",local_port=\"80\",remote_address=\"10.0.1.1\",remote_port=\"8080\",proto=\"TCP\",local_mark=\"\"} 5\n",
            "lb_ipvs_backend_weight{local_address=\"10.0.0.100\",local_port=\"80\",remote_address=\"10.0.1.1\",remote_port=\"8080\",proto=\"TCP\",local_mark=\"\"} 3\n",
            "lb_conntrack_entries 7\n",
            "lb_conntrack_capacity 1024\n",
            "lb_vrrp_state{iname=\"VI_1\",intf=\"eth0\",vrid=\"51\",ip_address=\"10.0.0.100\"} 2\n",
            "lb_advertisements_sent_total{iname=\"VI_1\",intf=\"eth0\",vrid=\"51\",state=\"MASTER\"} 11\n",
            "lb_authentication_failure_total{iname=\"VI_1\",intf=\"eth0\",vrid=\"51\",state=\"MASTER\"} 4\n",
            "lb_vrrp_adverts_dropped_total{iname=\"VI_1\",intf=\"eth0\",vrid=\"51\",reason=\"auth\"} 4\n",
            "lb_vrrp_transitions_total{iname=\"VI_1\",intf=\"eth0\",vrid=\"51\"} 2\n",
            "lb_xdp_verdicts_total{verdict=\"tx\"} 180\n",
            "lb_xdp_passed_total{reason=\"not_vip\"} 9\n",
            "lb_xdp_dropped_total{reason=\"no_real\"} 1\n",
            "lb_xdp_events_total{event=\"new_flows\"} 20\n",
            "lb_check_last_duration_seconds{local_address=\"10.0.0.100\",local_port=\"80\",remote_address=\"10.0.1.1\",remote_port=\"8080\",proto=\"TCP\",check=\"TCP_CHECK\",index=\"0\"} 0.5\n",
            "lb_build_info{version=\"",
            "# TYPE lb_ipvs_connections_total counter\n",
            "# HELP lb_ipvs_connections_total The total number of connections made.\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }

    /// Input: two reals, one being drained. Output: the per-real
    /// `draining` gauge is 1 for it and 0 for the other.
    #[test]
    fn sync_state_counts_drops_and_lag() {
        let mut inp = inputs();
        let mut status = crate::sync::Status {
            state: "in sync".into(),
            sent_conns: 51,
            installed: 153,
            send_lag_ms: 12.5,
            last_received_ms: Some(250),
            ..Default::default()
        };
        status.dropped.insert("bad signature".into(), 3);
        inp.vrrp.as_mut().unwrap().sync = Some(status);
        let mut t = String::new();
        encode(&mut t, &registry(&inp)).unwrap();
        let t = to_classic(&t);
        for want in [
            "lb_sync_in_sync 1\n",
            "lb_sync_sent_conns_total 51\n",
            "lb_sync_installed_conns_total 153\n",
            "lb_sync_dropped_total{reason=\"bad signature\"} 3\n",
            "lb_sync_send_lag_seconds 0.0125\n",
            "lb_sync_last_received_seconds 0.25\n",
        ] {
            assert!(t.contains(want), "{want:?} missing in\n{t}");
        }
        // Waiting for the peer's table.
        inp.vrrp.as_mut().unwrap().sync.as_mut().unwrap().state =
            "waiting for the peer's table".into();
        let mut t = String::new();
        encode(&mut t, &registry(&inp)).unwrap();
        assert!(to_classic(&t).contains("lb_sync_in_sync 0\n"));
    }

    /// Per VIP announced / wanted, per peer the session, the daemon and
    /// the drain; nothing without `lb_bgp`.
    #[test]
    fn bgp_gauges_per_vip_and_peer() {
        let mut inp = inputs();
        let mut s = String::new();
        encode(&mut s, &registry(&inp)).unwrap();
        assert!(!s.contains("lb_bgp"), "{s}");
        inp.bgp = Some(crate::bgp::View {
            configured: true,
            daemon_up: true,
            vips: vec![
                crate::bgp::VipView {
                    vip: "10.0.0.100".parse().unwrap(),
                    services: 1,
                    serving: 1,
                    want: true,
                    reason: None,
                    announced: true,
                    next_hop: Some("10.0.0.2".parse().unwrap()),
                },
                crate::bgp::VipView {
                    vip: "10.0.0.101".parse().unwrap(),
                    services: 1,
                    serving: 0,
                    want: false,
                    reason: Some(crate::bgp::gate::Reason::NoHealthyReal),
                    announced: false,
                    next_hop: None,
                },
            ],
            peers: vec![crate::bgp::PeerView {
                address: "10.0.0.1".parse().unwrap(),
                asn: 65000,
                state: crate::bgp::gobgp::Session::Active,
                up: false,
                configured: true,
            }],
            withdrawals: 3,
            ..Default::default()
        });
        let mut s = String::new();
        encode(&mut s, &registry(&inp)).unwrap();
        for want in [
            "lb_bgp_announced{vip=\"10.0.0.100\"} 1\n",
            "lb_bgp_announced{vip=\"10.0.0.101\"} 0\n",
            "lb_bgp_wanted{vip=\"10.0.0.101\"} 0\n",
            "lb_bgp_session_up{peer=\"10.0.0.1\",peer_as=\"65000\"} 0\n",
            "lb_bgp_daemon_up 1\n",
            "lb_bgp_drained 0\n",
            "lb_bgp_withdrawals_total 3\n",
        ] {
            assert!(s.contains(want), "{want}\n{s}");
        }
    }

    #[test]
    fn draining_gauge_per_real() {
        use crate::api::{Origin, RealStatus, ServiceStatus, WeightSource};
        let real = |addr: &str| RealStatus {
            addr: addr.into(),
            weight: 0,
            configured_weight: 1,
            weight_source: WeightSource::Runtime,
            in_service: true,
            reach: String::new(),
            origin: Origin::Runtime,
        };
        let mut inp = inputs();
        inp.services = Some(vec![ServiceStatus {
            service: "TCP 10.0.0.100:80".into(),
            scheduler: "rr".into(),
            forwarding: "DR".into(),
            origin: Origin::Runtime,
            quorum_up: true,
            reals: vec![real("10.0.1.1:80"), real("10.0.1.2:80")],
        }]);
        let key = (
            crate::config::ServiceAddr {
                addr: "10.0.0.100".parse().unwrap(),
                port: 80,
                proto: crate::config::Proto::Tcp,
            },
            "10.0.1.2".parse().unwrap(),
            80,
        );
        let now = std::time::Instant::now();
        inp.drains.drains = vec![crate::drain::Drain::new(1, key, 300, 1, now, 0).info(now)];
        let mut t = String::new();
        encode(&mut t, &registry(&inp)).unwrap();
        let t = to_classic(&t);
        let line = |real: &str, v: u8| {
            format!("lb_ipvs_backend_draining{{local_address=\"10.0.0.100\",local_port=\"80\",remote_address=\"{real}\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"}} {v}\n")
        };
        assert!(t.contains(&line("10.0.1.2", 1)), "{t}");
        assert!(t.contains(&line("10.0.1.1", 0)), "{t}");
    }

    #[test]
    fn classic_format_has_no_openmetrics_lines() {
        let om = text();
        assert!(om.ends_with("# EOF\n"));
        assert!(om.contains("# TYPE lb_ipvs_connections counter\n"));
        let c = to_classic(&om);
        assert!(!c.contains("# EOF"));
        assert!(!c.contains("# UNIT"));
        // Gauges keep their names.
        assert!(c.contains("# TYPE lb_ipvs_backend_weight gauge\n"));
        // Every sample of a counter family carries its name.
        for l in c
            .lines()
            .filter(|l| l.starts_with("# TYPE ") && l.ends_with(" counter"))
        {
            assert!(l.split(' ').nth(2).unwrap().ends_with("_total"), "{l}");
        }
    }

    #[test]
    fn accept_header_decides_the_format() {
        let mut h = HeaderMap::new();
        assert!(!wants_openmetrics(&h));
        h.insert(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
                .parse()
                .unwrap(),
        );
        assert!(wants_openmetrics(&h));
    }
}
