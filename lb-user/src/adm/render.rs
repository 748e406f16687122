//! ipvsadm's listings, byte for byte: `-L` (with `-n`, `--stats`,
//! `--rate`, `--exact`, `--thresholds`, `--persistent-conn`, `--nosort`,
//! one service with `-t` / `-u`), `-c`, `--timeout` and `-S` (the rules
//! ipvsadm-save writes), from a snapshot of the data plane's tables.

use std::{cmp::Ordering, fmt::Write as _, net::IpAddr, time::Duration};

use lb_common::{Stats, Timeouts, FWD_NAT, FWD_TUN, PROTO_UDP, SVC_F_FALLBACK, SVC_F_HASH_PORT};

use super::names;
use crate::{
    config::{Proto, Sched, ServiceAddr},
    list::{self, ConnRow, RealRow, Snapshot, SvcRow},
};

/// How to list (ipvsadm's `FMT_*` flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub numeric: bool,
    pub stats: bool,
    pub rate: bool,
    pub thresholds: bool,
    pub persistent_conn: bool,
    pub nosort: bool,
    pub exact: bool,
    /// `-S`: the rules that rebuild the table.
    pub rule: bool,
}

fn proto_of(p: u8) -> Proto {
    if p == PROTO_UDP {
        Proto::Udp
    } else {
        Proto::Tcp
    }
}

/// `ADDR:PORT` as ipvsadm prints it: numeric with `-n`, else the host and
/// service names where they exist (IPv6 in brackets either way).
fn addrport(addr: IpAddr, port: u16, proto: Proto, numeric: bool) -> String {
    let (host, service) = if numeric {
        (addr.to_string(), port.to_string())
    } else {
        (names::host_name(addr), names::port_name(port, proto))
    };
    match addr {
        IpAddr::V4(_) => format!("{host}:{service}"),
        IpAddr::V6(_) => format!("[{host}]:{service}"),
    }
}

/// ipvsadm's large numbers: exact below 100 million, then K / M / G / T
/// (`--exact`: always exact, at least 9 wide).
pub fn largenum(out: &mut String, i: u64, exact: bool) {
    let _ = if exact {
        let len = i.to_string().len();
        write!(out, "{:>w$}", i, w = if len <= 8 { 9 } else { len + 1 })
    } else if i < 100_000_000 {
        write!(out, "{i:>9}")
    } else if i < 1_000_000_000 {
        write!(out, "{:>8}K", i / 1_000)
    } else if i < 100_000_000_000 {
        write!(out, "{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        write!(out, "{:>8}G", i / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", i / 1_000_000_000_000)
    };
}

/// The first line of `-L`: ipvs's version and the connection table size.
pub fn header(size: u32) -> String {
    format!("IP Virtual Server version 1.2.1 (size={size})\n")
}

/// The column titles of `-L` for `f`.
pub fn title(f: &Format) -> String {
    if f.stats {
        format!(
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
            "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        )
    } else if f.rate {
        format!(
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
            "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        )
    } else if f.thresholds {
        format!(
            "{:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port\n",
            "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        )
    } else if f.persistent_conn {
        format!(
            "{:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port\n",
            "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
        )
    } else if f.rule {
        String::new()
    } else {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n".into()
    }
}

/// ipvs's order of addresses: word by word, as the difference of the
/// host-order words taken as a signed int (libipvs's comparison, whose
/// wrap-around is kept so that the order is ipvsadm's).
fn cmp_addr(a: IpAddr, b: IpAddr) -> Ordering {
    let words = |x: IpAddr| -> Vec<u32> {
        match x {
            IpAddr::V4(v) => vec![u32::from(v)],
            IpAddr::V6(v) => v
                .octets()
                .chunks(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        }
    };
    for (x, y) in words(a).into_iter().zip(words(b)) {
        let r = x.wrapping_sub(y) as i32;
        if r != 0 {
            return r.cmp(&0);
        }
    }
    Ordering::Equal
}

fn family(a: IpAddr) -> u8 {
    // AF_INET before AF_INET6.
    if a.is_ipv4() {
        2
    } else {
        10
    }
}

fn cmp_services(a: &SvcRow, b: &SvcRow) -> Ordering {
    family(a.addr)
        .cmp(&family(b.addr))
        .then(a.proto.cmp(&b.proto))
        .then_with(|| cmp_addr(a.addr, b.addr))
        .then(a.port.cmp(&b.port))
}

fn cmp_reals(a: &RealRow, b: &RealRow) -> Ordering {
    cmp_addr(a.addr, b.addr).then(a.port.cmp(&b.port))
}

/// The scheduler flags of a service as ipvsadm names them
/// (`sh-fallback`, `sh-port`; `mh-…`; `flag-N` for other schedulers).
pub(crate) fn sched_flag_names(sched: u32, flags: u32) -> Vec<&'static str> {
    let (one, two) = match Sched::from_id(sched) {
        Some(Sched::Sh) => ("sh-fallback", "sh-port"),
        Some(Sched::Mh) => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    let mut v = Vec::new();
    if flags & SVC_F_FALLBACK != 0 {
        v.push(one);
    }
    if flags & SVC_F_HASH_PORT != 0 {
        v.push(two);
    }
    v
}

fn sched_flags(s: &SvcRow) -> Option<String> {
    let v = sched_flag_names(s.sched, s.flags);
    (!v.is_empty()).then(|| v.join(","))
}

fn fwd_switch(f: u32) -> &'static str {
    match f {
        FWD_NAT => "-m",
        FWD_TUN => "-i",
        _ => "-g",
    }
}

/// The persistence mask as ipvsadm prints it: dotted for IPv4, a prefix
/// length for IPv6; `None` for the whole address.
fn mask_text(s: &SvcRow) -> Option<String> {
    let p = s.persist_prefix?;
    match s.addr {
        IpAddr::V4(_) if p < 32 => {
            let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            Some(std::net::Ipv4Addr::from(m).to_string())
        }
        IpAddr::V6(_) if p < 128 => Some(p.to_string()),
        _ => None,
    }
}

/// Rates of one service or real between two samples.
#[derive(Clone, Copy, Default)]
struct Rates {
    cps: u64,
    inpps: u64,
    outpps: u64,
    inbps: u64,
    outbps: u64,
}

fn rates(a: &Stats, b: &Stats, dt: Duration) -> Rates {
    let secs = dt.as_secs_f64().max(1e-3);
    let r = |x: u64, y: u64| (y.saturating_sub(x) as f64 / secs).round() as u64;
    Rates {
        cps: r(a.conns, b.conns),
        inpps: r(a.packets, b.packets),
        outpps: r(a.out_packets, b.out_packets),
        inbps: r(a.bytes, b.bytes),
        outbps: r(a.out_bytes, b.out_bytes),
    }
}

/// Renders services of `snap` (all, or the one `only` names) in format
/// `f`; `before` / `dt` give the earlier sample for `--rate`.
pub fn services(
    snap: &Snapshot,
    f: &Format,
    only: Option<&ServiceAddr>,
    before: Option<(&Snapshot, Duration)>,
) -> String {
    let mut out = String::new();
    let mut list: Vec<&SvcRow> = snap
        .services
        .iter()
        .filter(|s| {
            only.is_none_or(|o| o.addr == s.addr && o.port == s.port && o.proto.number() == s.proto)
        })
        .collect();
    if !f.nosort {
        list.sort_by(|a, b| cmp_services(a, b));
    }
    for s in list {
        service(&mut out, s, f, before);
    }
    out
}

fn service(out: &mut String, s: &SvcRow, f: &Format, before: Option<(&Snapshot, Duration)>) {
    let proto = proto_of(s.proto);
    let vname = addrport(s.addr, s.port, proto, f.numeric);
    let svc_name = if f.rule {
        format!(
            "{} {}",
            if proto == Proto::Tcp { "-t" } else { "-u" },
            vname
        )
    } else {
        let mut n = format!("{}  {}", list::proto_name(s.proto), vname);
        if s.addr.is_ipv4() {
            n.truncate(33);
        }
        n
    };
    let prev = before.and_then(|(b, dt)| b.services.iter().find(|p| p.id == s.id).map(|p| (p, dt)));
    if f.rule {
        let _ = write!(out, "-A {svc_name} -s {}", list::sched_name(s.sched));
        if let Some(fl) = sched_flags(s) {
            let _ = write!(out, " -b {fl}");
        }
        if let Some(t) = s.persistent {
            let _ = write!(out, " -p {t}");
            if let Some(m) = mask_text(s) {
                let _ = write!(out, " -M {m}");
            }
        }
    } else if f.stats {
        let _ = write!(out, "{svc_name:<33}");
        for v in [
            s.stats.conns,
            s.stats.packets,
            s.stats.out_packets,
            s.stats.bytes,
            s.stats.out_bytes,
        ] {
            largenum(out, v, f.exact);
        }
    } else if f.rate {
        let r = prev.map_or_else(Rates::default, |(p, dt)| rates(&p.stats, &s.stats, dt));
        let _ = write!(out, "{svc_name:<33}");
        for v in [r.cps, r.inpps, r.outpps, r.inbps, r.outbps] {
            largenum(out, v, f.exact);
        }
    } else {
        let _ = write!(out, "{svc_name} {}", list::sched_name(s.sched));
        if let Some(fl) = sched_flags(s) {
            let _ = write!(out, " ({fl})");
        }
        if let Some(t) = s.persistent {
            let _ = write!(out, " persistent {t}");
            if let Some(m) = mask_text(s) {
                let _ = write!(out, " mask {m}");
            }
        }
    }
    out.push('\n');
    let mut reals: Vec<&RealRow> = s.reals.iter().collect();
    if !f.nosort {
        reals.sort_by(|a, b| cmp_reals(a, b));
    }
    for r in reals {
        let mut dname = addrport(r.addr, r.port, proto, f.numeric);
        if !f.rule && r.addr.is_ipv4() {
            dname.truncate(28);
        }
        if f.rule {
            // As ipvsadm 1.31 writes it: the tunnel type for -i, never
            // the thresholds.
            let _ = writeln!(
                out,
                "-a {svc_name} -r {dname} {} -w {}{}",
                fwd_switch(r.fwd),
                r.weight,
                if r.fwd == FWD_TUN {
                    " --tun-type ipip"
                } else {
                    ""
                }
            );
        } else if f.stats {
            let _ = write!(out, "  -> {dname:<28}");
            for v in [
                r.stats.conns,
                r.stats.packets,
                r.stats.out_packets,
                r.stats.bytes,
                r.stats.out_bytes,
            ] {
                largenum(out, v, f.exact);
            }
            out.push('\n');
        } else if f.rate {
            let pr = prev
                .and_then(|(p, dt)| p.reals.iter().find(|x| x.id == r.id).map(|x| (x.stats, dt)));
            let rt = pr.map_or_else(Rates::default, |(a, dt)| rates(&a, &r.stats, dt));
            let _ = write!(
                out,
                "  -> {dname:<28} {:>8} {:>8} {:>8}",
                rt.cps, rt.inpps, rt.outpps
            );
            largenum(out, rt.inbps, f.exact);
            largenum(out, rt.outbps, f.exact);
            out.push('\n');
        } else if f.thresholds {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                r.u_threshold, r.l_threshold, r.active, r.inactive
            );
        } else if f.persistent_conn {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                r.weight, r.persist_conns, r.active, r.inactive
            );
        } else {
            let _ = write!(
                out,
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                list::fwd_name(r.fwd),
                r.weight,
                r.active,
                r.inactive
            );
            // `lb list` only (lb adm never sets it): the drain's marker.
            if let Some(d) = &r.draining {
                let _ = write!(out, " {}", d.marker());
            }
            out.push('\n');
        }
    }
}

/// `-Lc`: the connection entries (and persistence templates, state NONE
/// with client port 0, as ipvs lists them).
pub fn conns(snap: &Snapshot, f: &Format) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if f.persistent_conn {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        );
    } else {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        );
    }
    let mut conns: Vec<&ConnRow> = snap.conns.iter().collect();
    conns.sort_by_key(|c| (c.vip, c.src, c.dst));
    for c in conns {
        out.push_str(&conn_line(c, f.numeric));
    }
    out
}

fn conn_line(c: &ConnRow, numeric: bool) -> String {
    let proto = proto_of(c.proto);
    let name = |(a, p): (IpAddr, u16)| addrport(a, p, proto, numeric);
    format!(
        "{:<3} {:<6} {:<11} {:<18} {:<18} {}\n",
        list::proto_name(c.proto),
        format!("{:02}:{:02}", c.expire_s / 60, c.expire_s % 60),
        list::state_name(c.state, c.proto),
        name(c.src),
        name(c.vip),
        name(c.dst)
    )
}

/// `-L --timeout`.
pub fn timeout(t: &Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp_s, t.tcp_fin_s, t.udp_s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real(addr: &str, port: u16, fwd: u32, weight: u32) -> RealRow {
        RealRow {
            id: 0,
            addr: addr.parse().unwrap(),
            port,
            fwd,
            weight,
            active: 2,
            inactive: 5,
            stats: Stats {
                conns: 7,
                packets: 150_000_000,
                bytes: 1_234,
                ..Default::default()
            },
            u_threshold: 0,
            l_threshold: 0,
            persist_conns: 0,
            draining: None,
        }
    }

    fn svc(addr: &str, port: u16, proto: u8, sched: u32, reals: Vec<RealRow>) -> SvcRow {
        SvcRow {
            id: 0,
            proto,
            addr: addr.parse().unwrap(),
            port,
            sched,
            flags: 0,
            persistent: None,
            persist_prefix: None,
            stats: Stats::default(),
            reals,
        }
    }

    fn snap() -> Snapshot {
        let mut web = svc(
            "12.0.0.20",
            80,
            lb_common::PROTO_TCP,
            lb_common::SCHED_WRR,
            vec![
                real("192.168.118.40", 80, FWD_NAT, 3),
                real("192.168.118.30", 80, FWD_NAT, 2),
            ],
        );
        web.persistent = Some(300);
        web.persist_prefix = Some(24);
        web.reals[0].u_threshold = 100;
        web.reals[0].l_threshold = 50;
        web.reals[1].persist_conns = 4;
        let mut mh = svc(
            "2001:db8::10",
            53,
            PROTO_UDP,
            lb_common::SCHED_MH,
            vec![real("2001:db8::2", 53, FWD_TUN, 1)],
        );
        mh.flags = SVC_F_HASH_PORT | SVC_F_FALLBACK;
        let low = svc(
            "10.0.0.1",
            80,
            lb_common::PROTO_TCP,
            lb_common::SCHED_RR,
            vec![],
        );
        let high = svc(
            "12.0.0.20",
            81,
            lb_common::PROTO_TCP,
            lb_common::SCHED_RR,
            vec![],
        );
        Snapshot {
            conn_table_size: 4096,
            services: vec![mh, low, web, high],
            conns: vec![],
        }
    }

    fn numeric() -> Format {
        Format {
            numeric: true,
            ..Default::default()
        }
    }

    #[test]
    fn addresses_compare_as_libipvs_compares_them() {
        // The difference of host-order words as a signed int: 200.0.0.1
        // comes before 1.0.0.1 (what ipvsadm prints).
        let a: IpAddr = "200.0.0.1".parse().unwrap();
        let b: IpAddr = "1.0.0.1".parse().unwrap();
        assert_eq!(cmp_addr(a, b), Ordering::Less);
        let c: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(cmp_addr(c, "10.0.0.2".parse().unwrap()), Ordering::Less);
    }

    #[test]
    fn list_in_ipvsadm_order_and_layout() {
        let f = numeric();
        let out = format!("{}{}", title(&f), services(&snap(), &f, None, None));
        assert_eq!(
            out,
            "Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.1:80 rr
TCP  12.0.0.20:80 wrr persistent 300 mask 255.255.255.0
  -> 192.168.118.30:80            Masq    2      2          5         
  -> 192.168.118.40:80            Masq    3      2          5         
TCP  12.0.0.20:81 rr
UDP  [2001:db8::10]:53 mh (mh-fallback,mh-port)
  -> [2001:db8::2]:53             Tunnel  1      2          5         
"
        );
    }

    #[test]
    fn save_writes_rules_that_rebuild_the_table() {
        let f = Format {
            numeric: true,
            rule: true,
            ..Default::default()
        };
        assert_eq!(
            services(&snap(), &f, None, None),
            "-A -t 10.0.0.1:80 -s rr
-A -t 12.0.0.20:80 -s wrr -p 300 -M 255.255.255.0
-a -t 12.0.0.20:80 -r 192.168.118.30:80 -m -w 2
-a -t 12.0.0.20:80 -r 192.168.118.40:80 -m -w 3
-A -t 12.0.0.20:81 -s rr
-A -u [2001:db8::10]:53 -s mh -b mh-fallback,mh-port
-a -u [2001:db8::10]:53 -r [2001:db8::2]:53 -i -w 1 --tun-type ipip
"
        );
    }

    #[test]
    fn thresholds_persistent_conns_and_stats_columns() {
        let s = snap();
        let only = ServiceAddr {
            addr: "12.0.0.20".parse().unwrap(),
            port: 80,
            proto: Proto::Tcp,
        };
        let f = Format {
            thresholds: true,
            ..numeric()
        };
        assert_eq!(
            format!("{}{}", title(&f), services(&s, &f, Some(&only), None)),
            "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  12.0.0.20:80 wrr persistent 300 mask 255.255.255.0
  -> 192.168.118.30:80            0          0          2          5         
  -> 192.168.118.40:80            100        50         2          5         
"
        );
        let f = Format {
            persistent_conn: true,
            ..numeric()
        };
        let out = services(&s, &f, Some(&only), None);
        assert!(
            out.contains(
                "  -> 192.168.118.30:80            2         4           2          5         \n"
            ),
            "{out}"
        );
        let f = Format {
            stats: true,
            ..numeric()
        };
        let out = services(&s, &f, Some(&only), None);
        assert!(
            out.contains(
                "  -> 192.168.118.30:80                   7  150000K        0     1234        0\n"
            ),
            "{out}"
        );
        let f = Format {
            stats: true,
            exact: true,
            ..numeric()
        };
        assert!(services(&s, &f, Some(&only), None).contains("        7 150000000        0"));
    }
}
