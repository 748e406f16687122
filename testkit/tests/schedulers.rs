//! Scheduler fixtures (BPF_PROG_TEST_RUN): the choice sequence of lc, wlc,
//! sed and nq with ipvs's formulas, connection counts released on FIN/RST,
//! sh and mh following their tables, with fallback and minimal disruption.
use lb_testkit::*;
use lb_user::{config::fmt_sock, sched, state::addr_words};

const VIP: &str = "10.0.0.100";
const REALS: [(&str, [u8; 6]); 3] = [
    ("10.0.0.11", [0x02, 0x11, 0, 0, 0, 0x11]),
    ("10.0.0.12", [0x02, 0x12, 0, 0, 0, 0x12]),
    ("10.0.0.13", [0x02, 0x13, 0, 0, 0, 0x13]),
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

/// Which real (1-based) a packet from `client:port` with `flags` went to.
fn send(h: &Harness, client: &str, port: u16, flags: Flags) -> usize {
    let pkt = tcp(Eth::inbound(), client, port, VIP, 80, flags, b"");
    let (v, out) = h.run(&pkt).expect("run");
    assert_eq!(verdict_name(v), "XDP_TX");
    1 + REALS
        .iter()
        .position(|(_, m)| out[..6] == m[..])
        .expect("a real's MAC")
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
                name: fmt_sock(addr, 80),
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
