//! `lb list`: the table in the layouts of `ipvsadm -Ln`, `--stats`, `--rate`
//! and `-Lnc`, read from the pinned maps.

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr, time::Duration};

use lb_common::{
    Stats, CT_CLOSE, CT_ESTABLISHED, CT_FIN_WAIT, CT_SYN_RECV, CT_UDP, FWD_DR, FWD_NAT, FWD_TUN,
    NS_PER_SEC, PROTO_TCP, PROTO_UDP, REAL_F_INUSE, SVC_F_PERSISTENT,
};

use aya::maps::MapError;

use crate::{
    adm::render::{self, Format},
    dataplane::Dataplane,
    state::words_addr,
};

/// The tables could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Map(#[from] MapError),
    /// What the data plane's own readers report.
    #[error(transparent)]
    Dataplane(Box<dyn std::error::Error + Send + Sync>),
}

fn dataplane(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Dataplane(e.into())
}

/// One real server as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct RealRow {
    pub id: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub fwd: u32,
    pub weight: u32,
    pub active: u64,
    pub inactive: u64,
    pub stats: Stats,
    /// ipvs's connection thresholds (`-x` / `-y`); 0: none.
    pub u_threshold: u32,
    pub l_threshold: u32,
    /// Live persistence templates pointing at it (ipvs's persistconns).
    pub persist_conns: u64,
    /// The agent's running drain of it (`lb drain`), when `lb list` asked
    /// ([`mark_drains`]); never set for `lb adm`, whose listings stay
    /// ipvsadm's byte for byte.
    pub draining: Option<crate::drain::DrainInfo>,
}

/// One virtual service as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct SvcRow {
    pub id: u32,
    pub proto: u8,
    pub addr: IpAddr,
    pub port: u16,
    pub sched: u32,
    /// `SVC_F_*`.
    pub flags: u32,
    pub persistent: Option<u32>,
    /// Persistence granularity as a prefix length (`None`: whole address).
    pub persist_prefix: Option<u8>,
    pub stats: Stats,
    pub reals: Vec<RealRow>,
}

/// One tracked connection as listed by `-c`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnRow {
    pub proto: u8,
    pub expire_s: u64,
    pub state: u32,
    pub src: (IpAddr, u16),
    pub vip: (IpAddr, u16),
    pub dst: (IpAddr, u16),
}

/// A snapshot of the tables.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub conn_table_size: u32,
    pub services: Vec<SvcRow>,
    pub conns: Vec<ConnRow>,
}

/// Where callers found it before it moved to [`crate::util`].
pub use crate::util::monotonic_ns;

/// Why [`read_pinned`] could not read the maps.
#[derive(Debug, thiserror::Error)]
pub enum PinnedError {
    #[error(transparent)]
    Open(#[from] crate::dataplane::DataplaneError),
    #[error(transparent)]
    Read(#[from] Error),
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// The table (without connections) and the global counters of the maps
/// pinned in `bpffs`, read on a blocking thread with handles of its own
/// (the agent's dumps and metrics).
pub async fn read_pinned(
    bpffs: std::path::PathBuf,
) -> Result<(Snapshot, lb_common::GlobalStats), PinnedError> {
    tokio::task::spawn_blocking(move || {
        let dp = Dataplane::from_pins(&bpffs)?;
        let snap = snapshot(&dp, false)?;
        let global = dp.global_sum()?;
        Ok((snap, global))
    })
    .await?
}

/// The connection counts (ActiveConn, InActConn) of the real `key` in the
/// maps, also while its checks fail (which `lb list` leaves out); `None`
/// when the maps have no such real. Reads the services and reals only
/// (not the connection table): cheap enough for a drain's poll.
pub fn real_counts(
    dp: &Dataplane,
    key: &crate::config::RealKey,
) -> Result<Option<(u64, u64)>, Error> {
    let (svc, addr, port) = key;
    let mut svc_id = None;
    for item in dp.services.iter() {
        let (k, s) = item?;
        if k.proto == svc.proto.number()
            && u16::from_be(k.port_be) == svc.port
            && words_addr(k.addr, k.family) == svc.addr
        {
            svc_id = Some(s.svc_id);
            break;
        }
    }
    let Some(svc_id) = svc_id else {
        return Ok(None);
    };
    for (id, r) in dp.reals.iter().enumerate() {
        let r = r?;
        if r.flags & REAL_F_INUSE == 0
            || r.svc_id != svc_id
            || u16::from_be(r.port_be) != *port
            || words_addr(r.addr, r.family) != *addr
        {
            continue;
        }
        let c = dp.real_conns(id as u32).map_err(dataplane)?;
        return Ok(Some((c.active, c.inactive)));
    }
    Ok(None)
}

/// Sets [`RealRow::draining`] from the agent's drains (`GET /v1/drain`).
pub fn mark_drains(snap: &mut Snapshot, drains: &crate::drain::DrainList) {
    for s in &mut snap.services {
        let Some(proto) = crate::config::Proto::from_number(s.proto) else {
            continue;
        };
        let svc = crate::config::ServiceAddr {
            addr: s.addr,
            port: s.port,
            proto,
        };
        for r in &mut s.reals {
            r.draining = drains.running_of(&svc, r.addr, r.port).cloned();
        }
    }
}

/// Asks the agent on `socket` for its drains, bounded by one second; `None`
/// when no agent answers (`lb list` reads the maps without one).
pub async fn agent_drains(socket: &std::path::Path) -> Option<crate::drain::DrainList> {
    if !socket.exists() {
        return None;
    }
    tokio::time::timeout(
        Duration::from_secs(1),
        crate::api::client::get(socket, crate::api::DRAIN),
    )
    .await
    .ok()?
    .ok()
}

/// Reads services, reals, counters and (live) connections from the maps.
pub fn snapshot(dp: &Dataplane, with_conns: bool) -> Result<Snapshot, Error> {
    let timeouts = dp.timeouts_in_effect();
    let now = monotonic_ns();
    let mut reals_by_svc: BTreeMap<u32, Vec<RealRow>> = BTreeMap::new();
    let mut real_addr: BTreeMap<u32, (IpAddr, u16, u32)> = BTreeMap::new();
    for (id, r) in dp.reals.iter().enumerate() {
        let r = r?;
        // Reals whose checkers failed are left out, as ipvsadm lists only
        // the destinations keepalived kept.
        if r.flags & REAL_F_INUSE == 0 || r.flags & lb_common::REAL_F_DOWN != 0 {
            continue;
        }
        let id = id as u32;
        let addr = words_addr(r.addr, r.family);
        real_addr.insert(id, (addr, u16::from_be(r.port_be), r.gen));
        // The data plane's counts (minus what the agent's sweep found expired).
        let conns = dp.real_conns(id).map_err(dataplane)?;
        reals_by_svc.entry(r.svc_id).or_default().push(RealRow {
            id,
            addr,
            port: u16::from_be(r.port_be),
            fwd: r.fwd,
            weight: r.weight,
            active: conns.active,
            inactive: conns.inactive,
            stats: dp.real_stats_sum(id).map_err(dataplane)?,
            u_threshold: r.u_threshold,
            l_threshold: r.l_threshold,
            persist_conns: 0,
            draining: None,
        });
    }
    let mut conns = Vec::new();
    let mut services = Vec::new();
    let mut vip_of: BTreeMap<u32, (IpAddr, u16)> = BTreeMap::new();
    for item in dp.services.iter() {
        let (k, s) = item?;
        let addr = words_addr(k.addr, k.family);
        vip_of.insert(s.svc_id, (addr, u16::from_be(k.port_be)));
        services.push(SvcRow {
            id: s.svc_id,
            proto: k.proto,
            addr,
            port: u16::from_be(k.port_be),
            sched: s.sched,
            flags: s.flags,
            persistent: (s.flags & SVC_F_PERSISTENT != 0).then_some(s.persist_timeout_s),
            persist_prefix: (s.flags & lb_common::SVC_F_PERSIST_NET != 0)
                .then_some(s.persist_prefix.min(128) as u8),
            stats: dp.svc_stats_sum(s.svc_id).map_err(dataplane)?,
            reals: reals_by_svc.remove(&s.svc_id).unwrap_or_default(),
        });
    }
    services.sort_by_key(|s| s.id);

    // Persistence templates: counted per real (ipvs's persistconns) and,
    // with -c, listed as ipvs lists them (state NONE, client port 0).
    let persist_of: BTreeMap<u32, u32> = services
        .iter()
        .filter_map(|s| s.persistent.map(|t| (s.id, t)))
        .collect();
    let mut templates: BTreeMap<u32, u64> = BTreeMap::new();
    if !persist_of.is_empty() {
        for item in dp.persist.iter() {
            let Ok((k, p)) = item else { continue };
            let Some(&timeout_s) = persist_of.get(&k.svc_id) else {
                continue;
            };
            let age = now.saturating_sub(p.last_ns);
            let ttl = u64::from(timeout_s) * NS_PER_SEC;
            if age >= ttl {
                continue;
            }
            let Some(&(raddr, rport, gen)) = real_addr.get(&p.real_id) else {
                continue;
            };
            if gen != p.real_gen {
                continue;
            }
            *templates.entry(p.real_id).or_default() += 1;
            if with_conns {
                let Some(svc) = services.iter().find(|s| s.id == k.svc_id) else {
                    continue;
                };
                conns.push(ConnRow {
                    proto: svc.proto,
                    expire_s: (ttl - age) / NS_PER_SEC,
                    state: lb_common::CT_NONE,
                    src: (words_addr(k.client, k.family), 0),
                    vip: (svc.addr, svc.port),
                    dst: (raddr, rport),
                });
            }
        }
    }
    for s in &mut services {
        for r in &mut s.reals {
            r.persist_conns = templates.get(&r.id).copied().unwrap_or(0);
        }
    }

    // Connection listing (-c): live entries (not idle past their state's
    // timeout) whose real still holds the generation they were scheduled to.
    if with_conns {
        for item in dp.conntrack.iter() {
            let Ok((k, c)) = item else { continue };
            let Some(left_ns) = timeouts.time_left_ns(c.state, c.last_ns, now) else {
                continue;
            };
            let Some(&(raddr, rport, gen)) = real_addr.get(&c.real_id) else {
                continue;
            };
            if gen != c.real_gen {
                continue;
            }
            let vip = vip_of
                .get(&c.svc_id)
                .copied()
                .unwrap_or((words_addr(k.dst, k.family), u16::from_be(k.dport_be)));
            conns.push(ConnRow {
                proto: k.proto,
                expire_s: left_ns / NS_PER_SEC,
                state: c.state,
                src: (words_addr(k.src, k.family), u16::from_be(k.sport_be)),
                vip,
                dst: (raddr, rport),
            });
        }
    }
    Ok(Snapshot {
        conn_table_size: dp.conntrack_size(),
        services,
        conns,
    })
}

/// Two snapshots (without connections) one second apart and the time
/// between them, for `--rate`.
pub fn rate_samples(dp: &Dataplane) -> Result<(Snapshot, Snapshot, Duration), Error> {
    let a = snapshot(dp, false)?;
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let b = snapshot(dp, false)?;
    Ok((a, b, t.elapsed()))
}

pub(crate) fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_TCP => "TCP",
        PROTO_UDP => "UDP",
        _ => "???",
    }
}

pub(crate) fn sched_name(s: u32) -> &'static str {
    crate::config::Sched::from_id(s).map_or("?", |s| s.name())
}

/// ipvsadm's names of the forwarding methods.
pub(crate) fn fwd_name(f: u32) -> &'static str {
    match f {
        FWD_DR => "Route",
        FWD_NAT => "Masq",
        FWD_TUN => "Tunnel",
        _ => "?",
    }
}

/// ipvs's names of the connection states (`CT_NONE`: a persistence
/// template).
pub(crate) fn state_name(s: u32, proto: u8) -> &'static str {
    if s == lb_common::CT_NONE {
        return "NONE";
    }
    if proto == PROTO_UDP {
        return "UDP";
    }
    match s {
        CT_SYN_RECV => "SYN_RECV",
        CT_ESTABLISHED => "ESTABLISHED",
        CT_FIN_WAIT => "FIN_WAIT",
        CT_CLOSE => "CLOSE",
        CT_UDP => "UDP",
        _ => "NONE",
    }
}

fn numeric() -> Format {
    Format {
        numeric: true,
        ..Default::default()
    }
}

fn table(snap: &Snapshot, f: &Format, before: Option<(&Snapshot, Duration)>) -> String {
    let mut out = render::header(snap.conn_table_size);
    out.push_str(&render::title(f));
    out.push_str(&render::services(snap, f, None, before));
    out
}

/// `ipvsadm -Ln` (the renderer of `lb adm`).
pub fn render_table(snap: &Snapshot) -> String {
    table(snap, &numeric(), None)
}

/// `ipvsadm -Ln --stats` (Out* count NAT replies; DR and TUN replies bypass the director).
pub fn render_stats(snap: &Snapshot, exact: bool) -> String {
    let f = Format {
        stats: true,
        exact,
        ..numeric()
    };
    table(snap, &f, None)
}

/// Rates between two snapshots taken `dt` apart (`ipvsadm -Ln --rate`).
pub fn render_rate(before: &Snapshot, after: &Snapshot, dt: Duration, exact: bool) -> String {
    let f = Format {
        rate: true,
        exact,
        ..numeric()
    };
    table(after, &f, Some((before, dt)))
}

/// `lb counters`: one global counter a line, summed over CPUs, in columns
/// as wide as the longest name.
pub fn render_counters(g: &lb_common::GlobalStats) -> String {
    let fields = lb_common::GlobalStats::FIELDS;
    let width = fields.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out = String::new();
    for ((name, what), v) in fields.iter().zip(g.values()) {
        let _ = writeln!(out, "{name:<width$} {v:>14}  {}", what.trim());
    }
    out
}

/// `ipvsadm -Lnc` (with the persistence templates, as ipvs lists them).
pub fn render_conns(snap: &Snapshot) -> String {
    render::conns(snap, &numeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_line_up_whatever_the_name_length() {
        let g = lb_common::GlobalStats {
            pass: 7,
            icmp_time_exceeded_sent: 12345,
            ..Default::default()
        };
        let out = render_counters(&g);
        let w = "icmp_time_exceeded_sent".len();
        for line in out.lines() {
            // Name padded to the longest, one space, the value right-aligned in 14.
            let (name, rest) = line.split_at(w);
            assert!(!name.trim().is_empty() && rest.starts_with(' '), "{line:?}");
            assert!(rest[1..15].trim().parse::<u64>().is_ok(), "{line:?}");
            assert!(rest[15..].starts_with("  "), "{line:?}");
        }
        assert!(out.contains(&format!("{:<w$} {:>14}", "icmp_time_exceeded_sent", 12345)));
    }

    fn snap() -> Snapshot {
        Snapshot {
            conn_table_size: 4096,
            services: vec![SvcRow {
                id: 0,
                proto: PROTO_TCP,
                addr: "172.20.1.100".parse().unwrap(),
                port: 80,
                sched: lb_common::SCHED_RR,
                flags: 0,
                persistent: None,
                persist_prefix: None,
                stats: Stats {
                    conns: 3,
                    packets: 120,
                    bytes: 9000,
                    ..Default::default()
                },
                reals: vec![RealRow {
                    id: 0,
                    addr: "172.20.1.10".parse().unwrap(),
                    port: 80,
                    fwd: FWD_DR,
                    weight: 1,
                    active: 0,
                    inactive: 0,
                    stats: Stats {
                        conns: 3,
                        packets: 120,
                        bytes: 9000,
                        ..Default::default()
                    },
                    u_threshold: 0,
                    l_threshold: 0,
                    persist_conns: 0,
                    draining: None,
                }],
            }],
            conns: vec![],
        }
    }

    #[test]
    fn table_matches_ipvsadm_layout() {
        // The layout operators know from `ipvsadm -Ln` (column widths included).
        let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  172.20.1.100:80 rr\n\
\x20 -> 172.20.1.10:80               Route   1      0          0         \n";
        assert_eq!(render_table(&snap()), want);
    }

    #[test]
    fn persistent_flag_printed() {
        let mut s = snap();
        s.services[0].persistent = Some(60);
        s.services[0].sched = lb_common::SCHED_WRR;
        assert!(render_table(&s).contains("TCP  172.20.1.100:80 wrr persistent 60\n"));
    }

    #[test]
    fn stats_layout() {
        let out = render_stats(&snap(), false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1],
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
        );
        assert_eq!(
            lines[3],
            "TCP  172.20.1.100:80                     3      120        0     9000        0"
        );
        assert_eq!(
            lines[4],
            "  -> 172.20.1.10:80                      3      120        0     9000        0"
        );
    }

    #[test]
    fn largenum_units() {
        let mut s = String::new();
        render::largenum(&mut s, 123_456_789, false);
        assert_eq!(s, "  123456K");
        s.clear();
        render::largenum(&mut s, 5_000_000_000, false);
        assert_eq!(s, "    5000M");
    }

    #[test]
    fn conns_layout() {
        let mut s = snap();
        s.conns.push(ConnRow {
            proto: PROTO_TCP,
            expire_s: 897,
            state: CT_ESTABLISHED,
            src: ("10.0.0.2".parse().unwrap(), 53356),
            vip: ("172.20.1.100".parse().unwrap(), 80),
            dst: ("172.20.1.10".parse().unwrap(), 80),
        });
        let out = render_conns(&s);
        assert_eq!(
            out.lines().nth(2).unwrap(),
            "TCP 14:57  ESTABLISHED 10.0.0.2:53356     172.20.1.100:80    172.20.1.10:80"
        );
    }
}
