//! The JSON model of `lb list --json` (and its `--stats`, `--rate`, `-c`
//! variants) and `lb counters --json`, built from the same [`Snapshot`] the
//! text layouts of [`crate::list`] render.
//!
//! One schema for every variant (README "JSON output"): the object always
//! has the same keys; what a flag adds (`rates`, `connections`) is `null`
//! without it. Field names are stable snake_case (new ones may be added,
//! none renamed); numbers are exact (no K/M/G); addresses are strings;
//! durations are seconds with the suffix `_s`, as `lb check-config --dump`.

use std::{collections::BTreeMap, time::Duration};

use lb_common::{GlobalStats, Stats, FWD_DR, FWD_NAT, FWD_TUN, SVC_F_PERSISTENT};
use serde::{Deserialize, Serialize};

use crate::list::{proto_name, sched_name, state_name, Snapshot};

/// A service's or real's counters since it was created (ipvsadm
/// `--stats`). `out_*` count NAT replies; DR and TUN replies bypass the
/// director.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// New connections scheduled.
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

impl From<Stats> for Counters {
    fn from(s: Stats) -> Self {
        Counters {
            conns: s.conns,
            in_packets: s.packets,
            out_packets: s.out_packets,
            in_bytes: s.bytes,
            out_bytes: s.out_bytes,
        }
    }
}

/// Rates over the `--rate` interval, per second (ipvsadm `--rate`, not
/// rounded).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Rates {
    pub conns_per_s: f64,
    pub in_packets_per_s: f64,
    pub out_packets_per_s: f64,
    pub in_bytes_per_s: f64,
    pub out_bytes_per_s: f64,
}

impl Rates {
    fn between(a: Stats, b: Stats, dt: Duration) -> Self {
        let secs = dt.as_secs_f64().max(1e-3);
        let r = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        Rates {
            conns_per_s: r(a.conns, b.conns),
            in_packets_per_s: r(a.packets, b.packets),
            out_packets_per_s: r(a.out_packets, b.out_packets),
            in_bytes_per_s: r(a.bytes, b.bytes),
            out_bytes_per_s: r(a.out_bytes, b.out_bytes),
        }
    }
}

/// One real server of a service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Real {
    pub address: String,
    pub port: u16,
    /// `DR`, `NAT` or `TUN` (ipvsadm's Route, Masq, Tunnel).
    pub forward: String,
    /// Weight in the data plane (0: no new connections).
    pub weight: u32,
    /// Established connections (ipvsadm ActiveConn).
    pub active_conns: u64,
    /// Other tracked connections (ipvsadm InActConn).
    pub inactive_conns: u64,
    /// ipvs's upper / lower connection thresholds (`-x` / `-y`; 0: none).
    pub u_threshold: u32,
    pub l_threshold: u32,
    /// Live persistence templates pointing at it (ipvsadm PersistConn).
    pub persist_conns: u64,
    pub stats: Counters,
    /// `null` without `--rate`.
    pub rates: Option<Rates>,
    /// The agent is draining it (`lb drain`); `null` when not, or when no
    /// agent answered.
    #[serde(default)]
    pub draining: Option<Draining>,
}

/// A real's running drain, as `lb list --json` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Draining {
    /// Wall-clock start, seconds since the Unix epoch.
    pub started_unix_s: u64,
    pub elapsed_s: f64,
    /// `null`: no timeout.
    pub timeout_s: Option<u64>,
}

/// One virtual service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Service {
    /// `TCP` or `UDP`.
    pub protocol: String,
    pub address: String,
    pub port: u16,
    /// ipvs scheduler name (`rr`, `wlc`, `mh`, …).
    pub scheduler: String,
    /// ipvsadm's scheduler flags (`sh-fallback`, `sh-port`, `mh-…`).
    pub scheduler_flags: Vec<String>,
    /// Persistence timeout, seconds; `null`: not persistent.
    pub persistent_timeout_s: Option<u32>,
    /// Persistence granularity as a prefix length (`-M`); `null`: the
    /// whole client address.
    pub persistence_prefix: Option<u8>,
    pub stats: Counters,
    /// `null` without `--rate`.
    pub rates: Option<Rates>,
    /// The reals in service (those whose checkers failed are left out, as
    /// ipvsadm lists only the destinations keepalived kept).
    pub reals: Vec<Real>,
}

/// One tracked connection (`-c`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Connection {
    pub protocol: String,
    /// Seconds until it expires unless traffic renews it.
    pub expire_s: u64,
    /// `SYN_RECV`, `ESTABLISHED`, `FIN_WAIT`, `CLOSE` or `UDP` (ipvsadm's
    /// names).
    pub state: String,
    pub source_address: String,
    pub source_port: u16,
    pub virtual_address: String,
    pub virtual_port: u16,
    pub destination_address: String,
    pub destination_port: u16,
}

/// `lb list --json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Table {
    /// Connection-table capacity (ipvsadm's `size=`).
    pub conn_table_size: u32,
    pub services: Vec<Service>,
    /// The interval the rates were measured over, seconds; `null` without
    /// `--rate`.
    pub rate_interval_s: Option<f64>,
    /// `null` without `-c`.
    pub connections: Option<Vec<Connection>>,
}

fn forward_name(f: u32) -> &'static str {
    match f {
        FWD_DR => "DR",
        FWD_NAT => "NAT",
        FWD_TUN => "TUN",
        _ => "?",
    }
}

impl Table {
    /// The table of `snap`; its connections when `with_conns` (the
    /// snapshot must have been taken with them).
    pub fn new(snap: &Snapshot, with_conns: bool) -> Self {
        let services = snap
            .services
            .iter()
            .map(|s| Service {
                protocol: proto_name(s.proto).into(),
                address: s.addr.to_string(),
                port: s.port,
                scheduler: sched_name(s.sched).into(),
                scheduler_flags: crate::adm::render::sched_flag_names(s.sched, s.flags)
                    .into_iter()
                    .map(String::from)
                    .collect(),
                persistent_timeout_s: s.persistent.filter(|_| s.flags & SVC_F_PERSISTENT != 0),
                persistence_prefix: s.persist_prefix,
                stats: s.stats.into(),
                rates: None,
                reals: s
                    .reals
                    .iter()
                    .map(|r| Real {
                        address: r.addr.to_string(),
                        port: r.port,
                        forward: forward_name(r.fwd).into(),
                        weight: r.weight,
                        active_conns: r.active,
                        inactive_conns: r.inactive,
                        u_threshold: r.u_threshold,
                        l_threshold: r.l_threshold,
                        persist_conns: r.persist_conns,
                        stats: r.stats.into(),
                        rates: None,
                        draining: r.draining.as_ref().map(|d| Draining {
                            started_unix_s: d.started_unix_s,
                            elapsed_s: d.elapsed_s,
                            timeout_s: d.timeout_s,
                        }),
                    })
                    .collect(),
            })
            .collect();
        let connections = with_conns.then(|| {
            let mut conns = snap.conns.clone();
            conns.sort_by_key(|c| (c.vip, c.src));
            conns
                .iter()
                .map(|c| Connection {
                    protocol: proto_name(c.proto).into(),
                    expire_s: c.expire_s,
                    state: state_name(c.state, c.proto).into(),
                    source_address: c.src.0.to_string(),
                    source_port: c.src.1,
                    virtual_address: c.vip.0.to_string(),
                    virtual_port: c.vip.1,
                    destination_address: c.dst.0.to_string(),
                    destination_port: c.dst.1,
                })
                .collect()
        });
        Table {
            conn_table_size: snap.conn_table_size,
            services,
            rate_interval_s: None,
            connections,
        }
    }

    /// The table of `after` with the rates since `before`, taken `dt`
    /// earlier (`lb list --rate --json`).
    pub fn with_rates(before: &Snapshot, after: &Snapshot, dt: Duration) -> Self {
        let mut t = Table::new(after, false);
        t.rate_interval_s = Some(dt.as_secs_f64());
        for (s, row) in t.services.iter_mut().zip(&after.services) {
            let prev = before.services.iter().find(|p| p.id == row.id);
            s.rates = Some(Rates::between(
                prev.map(|p| p.stats).unwrap_or_default(),
                row.stats,
                dt,
            ));
            for (r, rrow) in s.reals.iter_mut().zip(&row.reals) {
                let pr = prev
                    .and_then(|p| p.reals.iter().find(|x| x.id == rrow.id))
                    .map(|x| x.stats);
                r.rates = Some(Rates::between(pr.unwrap_or_default(), rrow.stats, dt));
            }
        }
        t
    }
}

/// `lb counters --json`: every global counter of the data plane, summed
/// over CPUs, by name (the names `lb counters` prints: `pass`, `tx`,
/// `drop_no_real`, …).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GlobalCounters {
    pub counters: BTreeMap<String, u64>,
}

impl From<&GlobalStats> for GlobalCounters {
    fn from(g: &GlobalStats) -> Self {
        GlobalCounters {
            counters: GlobalStats::FIELDS
                .iter()
                .zip(g.values())
                .map(|((name, _), v)| (name.to_string(), v))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::{ConnRow, RealRow, SvcRow};
    use lb_common::{CT_ESTABLISHED, PROTO_TCP, SCHED_MH};

    fn snap(conns: u64) -> Snapshot {
        let big = 123_456_789_012;
        Snapshot {
            conn_table_size: 4096,
            services: vec![SvcRow {
                id: 3,
                proto: PROTO_TCP,
                addr: "2001:db8::100".parse().unwrap(),
                port: 443,
                sched: SCHED_MH,
                flags: lb_common::SVC_F_HASH_PORT | SVC_F_PERSISTENT,
                persistent: Some(300),
                persist_prefix: None,
                stats: Stats {
                    conns,
                    packets: big,
                    bytes: big * 10,
                    out_packets: 7,
                    out_bytes: 700,
                },
                reals: vec![RealRow {
                    id: 9,
                    addr: "2001:db8::10".parse().unwrap(),
                    port: 8443,
                    fwd: FWD_NAT,
                    weight: 5,
                    active: 2,
                    inactive: 1,
                    stats: Stats {
                        conns,
                        ..Default::default()
                    },
                    u_threshold: 0,
                    l_threshold: 0,
                    persist_conns: 0,
                    draining: None,
                }],
            }],
            conns: vec![ConnRow {
                proto: PROTO_TCP,
                expire_s: 897,
                state: CT_ESTABLISHED,
                src: ("2001:db8::2".parse().unwrap(), 53356),
                vip: ("2001:db8::100".parse().unwrap(), 443),
                dst: ("2001:db8::10".parse().unwrap(), 8443),
            }],
        }
    }

    /// Every field and its value, as a script would read them: exact
    /// numbers, bare addresses (no brackets), names not ids.
    #[test]
    fn table_shape() {
        let v = serde_json::to_value(Table::new(&snap(3), false)).unwrap();
        let want = serde_json::json!({
            "conn_table_size": 4096,
            "services": [{
                "protocol": "TCP",
                "address": "2001:db8::100",
                "port": 443,
                "scheduler": "mh",
                "scheduler_flags": ["mh-port"],
                "persistent_timeout_s": 300,
                "persistence_prefix": null,
                "stats": {"conns": 3, "in_packets": 123456789012u64, "out_packets": 7,
                          "in_bytes": 1234567890120u64, "out_bytes": 700},
                "rates": null,
                "reals": [{
                    "address": "2001:db8::10",
                    "port": 8443,
                    "forward": "NAT",
                    "weight": 5,
                    "active_conns": 2,
                    "inactive_conns": 1,
                    "u_threshold": 0,
                    "l_threshold": 0,
                    "persist_conns": 0,
                    "stats": {"conns": 3, "in_packets": 0, "out_packets": 0,
                              "in_bytes": 0, "out_bytes": 0},
                    "rates": null,
                    "draining": null,
                }],
            }],
            "rate_interval_s": null,
            "connections": null,
        });
        assert_eq!(v, want);
    }

    #[test]
    fn connections_listed_with_c() {
        let v = serde_json::to_value(Table::new(&snap(0), true)).unwrap();
        assert_eq!(
            v["connections"],
            serde_json::json!([{
                "protocol": "TCP",
                "expire_s": 897,
                "state": "ESTABLISHED",
                "source_address": "2001:db8::2",
                "source_port": 53356,
                "virtual_address": "2001:db8::100",
                "virtual_port": 443,
                "destination_address": "2001:db8::10",
                "destination_port": 8443,
            }])
        );
    }

    #[test]
    fn rates_per_second() {
        let t = Table::with_rates(&snap(10), &snap(30), Duration::from_secs(2));
        assert_eq!(t.rate_interval_s, Some(2.0));
        let s = &t.services[0];
        assert_eq!(s.rates.unwrap().conns_per_s, 10.0);
        assert_eq!(s.rates.unwrap().in_packets_per_s, 0.0);
        assert_eq!(s.reals[0].rates.unwrap().conns_per_s, 10.0);
        // Round trip: the model reads back what it writes.
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Table>(&text).unwrap(), t);
    }

    #[test]
    fn global_counters_by_name() {
        let g = GlobalStats {
            pass: 4,
            drop_no_real: 2,
            ..Default::default()
        };
        let v = serde_json::to_value(GlobalCounters::from(&g)).unwrap();
        assert_eq!(v["counters"]["pass"], 4);
        assert_eq!(v["counters"]["drop_no_real"], 2);
        assert_eq!(v["counters"]["tx"], 0);
        assert_eq!(
            v["counters"].as_object().unwrap().len(),
            GlobalStats::FIELDS.len()
        );
    }
}
