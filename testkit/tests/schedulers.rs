//! Scheduler fixtures (BPF_PROG_TEST_RUN): the choice sequence of lc, wlc,
//! sed and nq with ipvs's formulas, connection counts released on FIN/RST,
//! sh and mh following their tables, with fallback and minimal disruption;
//! fo, ovf, lblc and lblcr choice sequences, lblc / lblcr entries and their
//! expiry, dh's table without fallback, twos's two weighted draws.
use lb_testkit::*;
use lb_user::{sched, state::addr_words};

const VIP: &str = "10.0.0.100";
const REALS: [(&str, [u8; 6]); 4] = [
    ("10.0.0.11", [0x02, 0x11, 0, 0, 0, 0x11]),
    ("10.0.0.12", [0x02, 0x12, 0, 0, 0, 0x12]),
    ("10.0.0.13", [0x02, 0x13, 0, 0, 0, 0x13]),
    ("10.0.0.14", [0x02, 0x14, 0, 0, 0, 0x14]),
];

fn conf(algo: &str, weights: &[u32], extra: &str) -> String {
    let mut s = format!(
        "virtual_server {VIP} 80 {{\n lb_algo {algo}\n lb_kind DR\n protocol TCP\n {extra}\n"
    );
    for (i, w) in weights.iter().enumerate() {
        s += &format!(" real_server {} 80 {{ weight {w} }}\n", REALS[i].0);
    }
    s + "}\n"
}

fn harness(algo: &str, weights: &[u32], extra: &str) -> Harness {
    let mut h = Harness::new(4096).expect("harness (needs root)");
    for (ip, mac) in REALS {
        h.neighbour(ip, mac, false);
    }
    h.apply(&conf(algo, weights, extra)).expect("apply");
    h
}

/// Which real (1-based) a packet from `client:port` to `vip` with `flags`
/// went to; `None` when it was dropped for want of a real.
fn send_to(h: &Harness, client: &str, port: u16, vip: &str, flags: Flags) -> Option<usize> {
    let pkt = tcp(Eth::inbound(), client, port, vip, 80, flags, b"");
    let (v, out) = h.run(&pkt).expect("run");
    if verdict_name(v) == "XDP_DROP" {
        return None;
    }
    assert_eq!(verdict_name(v), "XDP_TX");
    Some(
        1 + REALS
            .iter()
            .position(|(_, m)| out[..6] == m[..])
            .expect("a real's MAC"),
    )
}

/// Which real (1-based) a packet from `client:port` with `flags` went to.
fn send(h: &Harness, client: &str, port: u16, flags: Flags) -> usize {
    send_to(h, client, port, VIP, flags).expect("forwarded to a real")
}

fn syn(h: &Harness, port: u16) -> usize {
    send(h, "192.0.2.7", port, Flags::Syn)
}

fn conns(h: &Harness, real: usize) -> (u64, u64) {
    let id = h
        .tables
        .real_id(&svc(), REALS[real - 1].0.parse().unwrap(), 80)
        .unwrap();
    let c = h.dp.real_conns(id).unwrap();
    (c.active, c.inactive)
}

fn svc() -> lb_user::config::ServiceAddr {
    lb_user::config::ServiceAddr {
        addr: VIP.parse().unwrap(),
        port: 80,
        proto: lb_user::config::Proto::Tcp,
    }
}

#[test]
fn lc_counts_active_times_256_plus_inactive() {
    let h = harness("lc", &[1, 1], "");
    // SYNs count as inactive: 1, 2, then the tie goes to the first.
    assert_eq!([syn(&h, 1), syn(&h, 2), syn(&h, 3)], [1, 2, 1]);
    // Flow 1 established: R1 = 1 active + 1 inactive = 257 > R2's 1.
    assert_eq!(send(&h, "192.0.2.7", 1, Flags::Ack), 1);
    assert_eq!((conns(&h, 1), conns(&h, 2)), ((1, 1), (0, 1)));
    assert_eq!([syn(&h, 4), syn(&h, 5)], [2, 2]);
    // FIN releases the active count: R1 = 2 inactive < R2's 3.
    assert_eq!(send(&h, "192.0.2.7", 1, Flags::Fin), 1);
    assert_eq!(conns(&h, 1), (0, 2));
    assert_eq!(syn(&h, 6), 1);
    // RST on a SYN_RECV flow keeps it inactive (CLOSE).
    assert_eq!(send(&h, "192.0.2.7", 6, Flags::Rst), 1);
    assert_eq!(conns(&h, 1), (0, 3));
}

#[test]
fn wlc_divides_by_weight() {
    let h = harness("wlc", &[3, 1], "");
    assert_eq!(
        [syn(&h, 1), syn(&h, 2), syn(&h, 3), syn(&h, 4), syn(&h, 5)],
        [1, 2, 1, 1, 1]
    );
}

/// Opens an established connection from `port`; returns its real.
fn open(h: &Harness, port: u16) -> usize {
    let r = syn(h, port);
    assert_eq!(send(h, "192.0.2.7", port, Flags::Ack), r);
    r
}

#[test]
fn sed_counts_active_plus_one_over_weight() {
    let h = harness("sed", &[3, 1], "");
    assert_eq!(
        [open(&h, 1), open(&h, 2), open(&h, 3), open(&h, 4)],
        [1, 1, 1, 2]
    );
}

#[test]
fn nq_prefers_an_idle_real() {
    let h = harness("nq", &[3, 1], "");
    assert_eq!([open(&h, 1), open(&h, 2), open(&h, 3)], [1, 2, 1]);
}

/// Real (1-based) the table of `algo` gives `client` (port hashed when `port` != 0).
fn from_table(h: &Harness, algo: &str, client: &str, port: u16, n: usize) -> usize {
    let members: Vec<sched::Member> = (0..n)
        .map(|i| {
            let addr = REALS[i].0.parse().unwrap();
            sched::Member {
                id: h.tables.real_id(&svc(), addr, 80).unwrap(),
                weight: 1,
                addr,
                port: 80,
            }
        })
        .collect();
    let (a, _) = addr_words(client.parse().unwrap());
    let id = if algo == "sh" {
        let pairs: Vec<(u32, u32)> = members.iter().map(|m| (m.id, m.weight)).collect();
        sched::sh_table(&pairs)[lb_common::hash::sh_bucket(&a, port.to_be(), 0) as usize]
    } else {
        let t = sched::maglev_table(&members, lb_common::MH_TABLE_SIZE as usize);
        t[(lb_common::hash::mh_hash(&a, port.to_be()) % lb_common::MH_TABLE_SIZE) as usize]
    };
    1 + members.iter().position(|m| m.id == id).unwrap()
}

#[test]
fn sh_follows_ipvs_buckets_and_falls_back() {
    let mut h = harness("sh", &[1, 1, 1], "");
    for c in 1..=20u8 {
        let client = format!("198.51.100.{c}");
        let want = from_table(&h, "sh", &client, 0, 3);
        // Every connection of a client lands on its bucket's real.
        for port in [1000, 2000, 3000] {
            assert_eq!(send(&h, &client, port, Flags::Syn), want, "{client}");
        }
    }
    // A real that becomes unavailable: its clients fall back to others,
    // the others' clients stay.
    h.forget(REALS[0].0);
    h.apply(&conf("sh", &[1, 1, 1], "")).unwrap();
    for c in 1..=20u8 {
        let client = format!("198.51.100.{c}");
        let got = send(&h, &client, 4000, Flags::Syn);
        assert_ne!(got, 1);
    }
}

#[test]
fn sh_port_hashes_the_source_port() {
    let h = harness("sh", &[1, 1, 1], "sh-port");
    let mut seen = std::collections::BTreeSet::new();
    for port in 1000..1030 {
        let want = from_table(&h, "sh", "192.0.2.7", port, 3);
        assert_eq!(send(&h, "192.0.2.7", port, Flags::Syn), want);
        seen.insert(want);
    }
    assert!(seen.len() > 1, "one client spreads over reals by port");
}

#[test]
fn mh_follows_the_maglev_table_and_removal_moves_only_that_reals_clients() {
    let mut h = harness("mh", &[1, 1, 1], "mh-port");
    let mut before = Vec::new();
    for port in 1000..1200u16 {
        let want = from_table(&h, "mh", "192.0.2.7", port, 3);
        assert_eq!(send(&h, "192.0.2.7", port, Flags::Syn), want);
        before.push(want);
    }
    // Remove real 3; new connections (new ports → new flows) map anew.
    h.apply(&conf("mh", &[1, 1], "mh-port")).unwrap();
    let mut moved_others = 0;
    for port in 21000..21200u16 {
        let want = from_table(&h, "mh", "192.0.2.7", port, 2);
        assert_eq!(send(&h, "192.0.2.7", port, Flags::Syn), want);
    }
    // Same hashes as before, compared slot by slot through the table.
    for (i, port) in (1000..1200u16).enumerate() {
        let after = from_table(&h, "mh", "192.0.2.7", port, 2);
        if before[i] != 3 && after != before[i] {
            moved_others += 1;
        }
        assert_ne!(after, 3);
    }
    assert!(
        moved_others <= 200 / 20,
        "{moved_others} of 200 flows of kept reals moved"
    );
}

#[test]
fn sweep_releases_idle_flows_and_keeps_live_ones() {
    let mut h = harness("lc", &[1, 1], "");
    // Flow 1 established on R1 (overhead 256); flows 2 and 3 stay SYN_RECV on R2.
    assert_eq!(open(&h, 1), 1);
    assert_eq!([syn(&h, 2), syn(&h, 3)], [2, 2]);
    assert_eq!((conns(&h, 1), conns(&h, 2)), ((1, 0), (0, 2)));
    // A sweep with nothing expired changes nothing.
    let gens = h.tables.real_gens();
    let r = lb_user::sweep::sweep(&mut h.dp, &gens).unwrap();
    assert_eq!((r.live, r.expired), (3, 0));
    assert_eq!((conns(&h, 1), conns(&h, 2)), ((1, 0), (0, 2)));
    // SYN_RECV flows time out at once: the sweep releases them, and only them.
    h.dp.set_timeouts(lb_common::Timeouts {
        tcp_syn_s: 0,
        ..Default::default()
    })
    .unwrap();
    let r = lb_user::sweep::sweep(&mut h.dp, &gens).unwrap();
    assert_eq!((r.live, r.expired), (1, 2));
    assert_eq!((conns(&h, 1), conns(&h, 2)), ((1, 0), (0, 0)));
    // The data plane keeps counting on top of the correction.
    h.dp.set_timeouts(lb_common::Timeouts::default()).unwrap();
    assert_eq!(syn(&h, 4), 2);
    assert_eq!(conns(&h, 2), (0, 1));
}

/// Opens established connections from ports `ports`; returns their reals.
fn open_all(h: &Harness, ports: std::ops::RangeInclusive<u16>) -> Vec<usize> {
    ports.map(|p| open(h, p)).collect()
}

/// Closes (FIN) the connections from `ports`, each on the real it had.
fn close_all(h: &Harness, ports: &[u16], real: usize) {
    for &p in ports {
        assert_eq!(send(h, "192.0.2.7", p, Flags::Fin), real);
    }
}

/// A SYN from port `port` that must be dropped (no real).
fn dropped(h: &Harness, port: u16) -> bool {
    send_to(h, "192.0.2.7", port, VIP, Flags::Syn).is_none()
}

#[test]
fn fo_sends_every_new_connection_to_the_heaviest_available_real() {
    let mut h = harness("fo", &[1, 3, 2], "");
    assert_eq!(open_all(&h, 1..=6), [2; 6]);
    // Its load does not matter; only weight and availability.
    assert_eq!(conns(&h, 2), (6, 0));
    // Ties go to the first in configuration order (ipvs: weight > highest).
    h.apply(&conf("fo", &[2, 1, 2], "")).unwrap();
    assert_eq!([syn(&h, 7), syn(&h, 8)], [1, 1]);
    // The heaviest becomes unavailable: the next heaviest takes over.
    h.forget(REALS[0].0);
    h.apply(&conf("fo", &[2, 1, 2], "")).unwrap();
    assert_eq!([syn(&h, 9), syn(&h, 10)], [3, 3]);
    // Weight 0 everywhere: no real.
    h.apply(&conf("fo", &[0, 0, 0], "")).unwrap();
    assert!(dropped(&h, 11));
}

#[test]
fn ovf_fills_the_heaviest_real_until_its_active_connections_exceed_its_weight() {
    let h = harness("ovf", &[2, 1, 3], "");
    // R3 (weight 3) takes connections while active <= 3, i.e. four of them,
    // then R1 (weight 2) three, then R2 (weight 1) two; then none is left.
    assert_eq!(open_all(&h, 1..=9), [3, 3, 3, 3, 1, 1, 1, 2, 2]);
    assert_eq!(
        (conns(&h, 1), conns(&h, 2), conns(&h, 3)),
        ((3, 0), (2, 0), (4, 0))
    );
    assert!(dropped(&h, 10));
    // Only active connections count: SYN_RECV flows do not fill a real.
    let h = harness("ovf", &[1, 1], "");
    assert_eq!([syn(&h, 1), syn(&h, 2), syn(&h, 3)], [1, 1, 1]);
    assert_eq!(conns(&h, 1), (0, 3));
    // Closing one of R3's connections makes room on it again.
    let h2 = harness("ovf", &[2, 1, 3], "");
    assert_eq!(open_all(&h2, 1..=5), [3, 3, 3, 3, 1]);
    close_all(&h2, &[1], 3);
    assert_eq!(open(&h2, 6), 3);
}

#[test]
fn twos_with_one_weighted_real_always_takes_it() {
    let h = harness("twos", &[0, 5, 0], "");
    for port in 1..=50 {
        assert_eq!(syn(&h, port), 2);
    }
    let h = harness("twos", &[0, 0, 0], "");
    assert!(dropped(&h, 1));
}

#[test]
fn twos_takes_the_less_loaded_of_two_weighted_draws() {
    // R1 carries one established connection (overhead 256) before twos
    // starts; then 600 SYNs (overhead 1 each) never bring another real near
    // 256, so R1 is taken only when both draws land on it. As ipvs, a draw
    // is uniform in [0, 4] over weights 1:1:1:1, so R1 (the first) is drawn
    // with probability 2/5: both draws 4/25, 96 of 600 expected (sd 9).
    // Without the comparison it would get 240; with uniform draws, 37.5.
    let mut h = harness("fo", &[2, 1, 1, 1], "");
    assert_eq!(open(&h, 1), 1);
    h.apply(&conf("twos", &[1, 1, 1, 1], "")).unwrap();
    let mut count = [0usize; 4];
    for port in 2..602 {
        count[syn(&h, port) - 1] += 1;
    }
    assert!(
        (51..=141).contains(&count[0]),
        "R1 taken {} of 600",
        count[0]
    );
    // The others share the rest, about 168 each; every choice is counted.
    for r in 2..=4 {
        assert!((100..=240).contains(&count[r - 1]), "{count:?}");
        assert_eq!(conns(&h, r), (0, count[r - 1] as u64));
    }
    assert_eq!(conns(&h, 1), (1, count[0] as u64));
}

/// The service (VIP `vip`, port 80, TCP) of the multi-VIP fixtures.
fn svc_of(vip: &str) -> lb_user::config::ServiceAddr {
    lb_user::config::ServiceAddr {
        addr: vip.parse().unwrap(),
        port: 80,
        proto: lb_user::config::Proto::Tcp,
    }
}

/// Two dh services (10.0.0.100 and 10.0.0.101) over the reals with `weights`.
fn dh_conf(weights: &[u32]) -> String {
    let mut s = String::new();
    for vip in ["10.0.0.100", "10.0.0.101"] {
        s += &format!("virtual_server {vip} 80 {{\n lb_algo dh\n lb_kind DR\n protocol TCP\n");
        for (i, w) in weights.iter().enumerate() {
            s += &format!(" real_server {} 80 {{ weight {w} }}\n", REALS[i].0);
        }
        s += "}\n";
    }
    s
}

/// Real (1-based) ipvs's dh table of the reals `in_table` (1-based) gives `vip`.
fn dh_expected(h: &Harness, vip: &str, in_table: &[usize]) -> usize {
    let ids: Vec<u32> = in_table
        .iter()
        .map(|&r| {
            h.tables
                .real_id(&svc_of(vip), REALS[r - 1].0.parse().unwrap(), 80)
                .unwrap()
        })
        .collect();
    let (a, _) = addr_words(vip.parse().unwrap());
    let id = sched::dh_table(&ids)[lb_common::hash::dh_bucket(&a) as usize];
    in_table[ids.iter().position(|&x| x == id).unwrap()]
}

#[test]
fn dh_sends_every_connection_to_a_destination_to_its_buckets_real() {
    let mut h = Harness::new(4096).expect("harness (needs root)");
    for (ip, mac) in REALS {
        h.neighbour(ip, mac, false);
    }
    h.apply(&dh_conf(&[1, 1, 1])).unwrap();
    for vip in ["10.0.0.100", "10.0.0.101"] {
        let want = dh_expected(&h, vip, &[1, 2, 3]);
        // Every client, every port: the destination's bucket.
        for c in 1..=10u8 {
            for port in [1000, 2000] {
                let client = format!("198.51.100.{c}");
                assert_eq!(
                    send_to(&h, &client, port, vip, Flags::Syn),
                    Some(want),
                    "{vip}"
                );
            }
        }
    }
    // The table ignores weights (one bucket per real per turn, as ipvs):
    // weights 5:1:1 give the same buckets.
    h.apply(&dh_conf(&[5, 1, 1])).unwrap();
    let want = dh_expected(&h, VIP, &[1, 2, 3]);
    assert_eq!(
        send_to(&h, "198.51.100.50", 3000, VIP, Flags::Syn),
        Some(want)
    );
    // Weight 0 keeps the real in the table: its destinations have no real
    // (no fallback, as ipvs).
    let mut weights = [1, 1, 1];
    weights[want - 1] = 0;
    h.apply(&dh_conf(&weights)).unwrap();
    assert_eq!(send_to(&h, "198.51.100.50", 3001, VIP, Flags::Syn), None);
    // A real whose checker failed leaves the table (keepalived removes it
    // from ipvs): the buckets are dealt again over the others.
    h.health.insert(
        REALS[want - 1].0.parse().unwrap(),
        lb_user::health::Health::Down { inhibit: false },
    );
    h.apply(&dh_conf(&[1, 1, 1])).unwrap();
    let rest: Vec<usize> = (1..=3).filter(|&r| r != want).collect();
    let again = dh_expected(&h, VIP, &rest);
    assert_eq!(
        send_to(&h, "198.51.100.50", 3002, VIP, Flags::Syn),
        Some(again)
    );
}

/// The locality entry of `vip` (service at `vip`:80) as (members 1-based, lastmod).
fn locality(h: &Harness, vip: &str) -> Option<(Vec<usize>, u64)> {
    let svc_id = h
        .tables
        .service_ids()
        .find(|(k, _)| **k == svc_of(vip))
        .unwrap()
        .1;
    let (dst, family) = addr_words(vip.parse().unwrap());
    let key = lb_common::LocalityKey {
        dst,
        svc_id,
        family,
        _pad: [0; 3],
    };
    let e = h.dp.locality.get(&key, 0).ok()?;
    let members = e.members[..e.len as usize]
        .iter()
        .map(|&m| {
            1 + (0..REALS.len())
                .position(|r| {
                    h.tables
                        .real_id(&svc_of(vip), REALS[r].0.parse().unwrap(), 80)
                        == Some(m as u32)
                })
                .expect("a member is a real of the service")
        })
        .collect();
    Some((members, e.lastmod_ns))
}

#[test]
fn lblc_keeps_a_destination_on_its_real_until_that_real_is_overloaded() {
    let h = harness("lblc", &[2, 2, 2], "");
    assert_eq!(locality(&h, VIP), None);
    // The first connection: wlc (all idle: the first). The real is kept
    // while its active connections do not exceed its weight; beyond, it is
    // overloaded while some real has fewer than half its weight active,
    // and wlc picks a new one. When every real is loaded, the last stays.
    assert_eq!(open_all(&h, 1..=10), [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]);
    assert_eq!(locality(&h, VIP).unwrap().0, [3]);
    // R2 drops to 2 active: R3 (4 > 2) is not overloaded while no real is
    // under half its weight (R2: 2 × 2 = 4, not < 2)...
    close_all(&h, &[4], 2);
    assert_eq!(open(&h, 11), 3);
    // ...and is once R1 has none active: wlc then picks R1 (3 inactive).
    close_all(&h, &[1, 2, 3], 1);
    assert_eq!(open(&h, 12), 1);
    assert_eq!(locality(&h, VIP).unwrap().0, [1]);
}

#[test]
fn lblc_forgets_an_entry_unused_for_its_lifetime() {
    let mut h = harness("lblc", &[1, 1, 1], "");
    assert_eq!(open(&h, 1), 1);
    // R1 (1 active, weight 1) is not overloaded: the entry keeps it.
    assert_eq!(open(&h, 2), 1);
    // Lifetime 1 s (ipvs: the lblc_expiration sysctl, a day by default):
    // after it, the next connection is scheduled by wlc afresh.
    h.dp.set_timeouts(lb_common::Timeouts {
        locality_s: 1,
        ..Default::default()
    })
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1300));
    assert_eq!(open(&h, 3), 2);
    assert_eq!(locality(&h, VIP).unwrap().0, [2]);
}

#[test]
fn lblcr_grows_a_set_and_uses_its_least_loaded_member() {
    // lblc, for comparison: R1 until overloaded, then R2; R1 back to 2
    // active is not used, R2 overloaded moves the destination to idle R3.
    let l = harness("lblc", &[2, 2, 2], "");
    assert_eq!(open_all(&l, 1..=6), [1, 1, 1, 2, 2, 2]);
    close_all(&l, &[1], 1);
    assert_eq!(open(&l, 7), 3);
    drop(l);
    // lblcr: the same while the set grows (R2 joins when R1 is overloaded)...
    let h = harness("lblcr", &[2, 2, 2], "");
    assert_eq!(open_all(&h, 1..=6), [1, 1, 1, 2, 2, 2]);
    assert_eq!(locality(&h, VIP).unwrap().0, [1, 2]);
    // ...but R1 (2 active after a FIN) is now the set's least loaded and
    // not overloaded: it is used.
    close_all(&h, &[1], 1);
    assert_eq!(open(&h, 7), 1);
    // The set's least loaded (R2) overloaded: R3, the least loaded of all,
    // joins the set and takes the next ones.
    assert_eq!(open_all(&h, 8..=9), [3, 3]);
    assert_eq!(locality(&h, VIP).unwrap().0, [1, 2, 3]);
}

#[test]
fn lblcr_drops_its_most_loaded_member_when_unchanged_for_its_lifetime() {
    let mut h = harness("lblcr", &[1, 1, 1], "");
    // R1, then R2 when R1 is overloaded (2 active > 1, R2 idle).
    assert_eq!(open_all(&h, 1..=3), [1, 1, 2]);
    let (set, lastmod) = locality(&h, VIP).unwrap();
    assert_eq!(set, [1, 2]);
    h.dp.set_timeouts(lb_common::Timeouts {
        locality_s: 3,
        ..Default::default()
    })
    .unwrap();
    // Used again within the lifetime (lastuse refreshed, set unchanged)...
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(syn(&h, 4), 2);
    assert_eq!(locality(&h, VIP).unwrap(), (vec![1, 2], lastmod));
    // ...and once the set is older than the lifetime, the most loaded
    // member (R1: 2 active, against R2's 1 active + 1 inactive) leaves it.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(syn(&h, 5), 2);
    let (set, newer) = locality(&h, VIP).unwrap();
    assert_eq!(set, [2]);
    assert!(newer > lastmod);
}

/// Connections from ports `first..first + n`, each from the next online CPU
/// in turn (the thread moves before each run): which real each went to.
fn syns_across_cpus(h: &Harness, first: u16, n: u16) -> Vec<usize> {
    let cpus = online_cpus().unwrap();
    let seq = (0..n)
        .map(|i| {
            pin_to_cpu(cpus[i as usize % cpus.len()]).unwrap();
            syn(h, first + i)
        })
        .collect();
    pin_to_cpu(cpus[0]).unwrap();
    seq
}

#[test]
fn rr_keeps_one_order_whatever_cpu_a_connection_arrives_on() {
    // One cursor per service shared by every CPU (issue 15): 100 connections
    // alternating between CPUs go r1, r2, r1, r2, ... exactly. With a cursor
    // per CPU, CPU 0 and CPU 1 each started at r1: r1, r1, r2, r2, ...
    let cpus = online_cpus().unwrap();
    assert!(cpus.len() >= 2, "needs 2 CPUs to test anything: {cpus:?}");
    let h = harness("rr", &[1, 1], "");
    let seq = syns_across_cpus(&h, 1, 100);
    let want: Vec<usize> = (0..100).map(|i| 1 + i % 2).collect();
    assert_eq!(seq, want);
    assert_eq!(seq.iter().filter(|&&r| r == 1).count(), 50);
}

#[test]
fn wrr_keeps_one_weighted_order_whatever_cpu_a_connection_arrives_on() {
    let h = harness("wrr", &[5, 1, 1], "");
    // The smooth weighted ring of 5:1:1 (A A B A C A A), three times over,
    // every connection on the next CPU.
    let ring = [1, 1, 2, 1, 3, 1, 1];
    let want: Vec<usize> = ring.iter().copied().cycle().take(21).collect();
    assert_eq!(syns_across_cpus(&h, 1, 21), want);
}

#[test]
fn rr_continues_after_the_real_served_last_when_reals_change() {
    // ipvs's rr keeps a pointer to the destination it served last: the
    // next connection goes to the one after it, also when the list changes.
    let mut h = harness("rr", &[1, 1], "");
    assert_eq!([syn(&h, 1), syn(&h, 2)], [1, 2]);
    // r3 added after r2, which was served last: r3 comes next.
    h.apply(&conf("rr", &[1, 1, 1], "")).unwrap();
    assert_eq!([syn(&h, 3), syn(&h, 4), syn(&h, 5)], [3, 1, 2]);
    // r2 (served last) leaves: the one after it, r3, comes next.
    h.apply(&conf("rr", &[1, 0, 1], "")).unwrap();
    assert_eq!([syn(&h, 6), syn(&h, 7), syn(&h, 8)], [3, 1, 3]);
}

#[test]
fn wrr_restarts_its_ring_when_weights_change() {
    // ipvs's wrr restarts at the head of its list on every change
    // (ip_vs_wrr_dest_changed): the new ring is walked from its start.
    let mut h = harness("wrr", &[3, 1], "");
    assert_eq!([syn(&h, 1), syn(&h, 2), syn(&h, 3)], [1, 1, 2]);
    // 3:2 is A B A B A.
    h.apply(&conf("wrr", &[3, 2], "")).unwrap();
    assert_eq!(
        [syn(&h, 4), syn(&h, 5), syn(&h, 6), syn(&h, 7), syn(&h, 8)],
        [1, 2, 1, 2, 1]
    );
}
