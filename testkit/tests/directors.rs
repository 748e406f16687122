//! Identical Maglev (`mh`) scheduling on every director, through
//! BPF_PROG_TEST_RUN: the same mh service is loaded into two independent
//! data planes — two "directors", each a [`Harness`] of its own (program,
//! maps, interfaces) in its own thread and network namespace — with the
//! reals configured in different orders, given different real ids and
//! reached through different interfaces. 2,000 different flows must pick
//! the same real address on both. The maps are filled through the agent's
//! own code (`Tables::sync`). Needs root (BPF).
use lb_testkit::*;
use lb_user::{
    config::{Proto, ServiceAddr},
    state::svc_key,
};

/// What one director did: per flow of [`flows`], the address of the real
/// its SYN went to; and its Maglev table as the data plane reads it from
/// `LB_MAGLEV`, each slot as the real's (address words, port) from
/// `LB_REALS` — the agent's real ids translated, since they differ.
struct Director {
    picks: Vec<String>,
    table: Vec<([u32; 4], u16)>,
}

const VIP: &str = "10.0.0.100";
/// The service's reals: address, MAC (how the output names the real) and
/// weight.
const REALS: [(&str, [u8; 6], u32); 6] = [
    ("10.0.0.11", [0x02, 0x11, 0, 0, 0, 0x11], 1),
    ("10.0.0.12", [0x02, 0x12, 0, 0, 0, 0x12], 2),
    ("10.0.0.13", [0x02, 0x13, 0, 0, 0, 0x13], 3),
    ("10.0.0.14", [0x02, 0x14, 0, 0, 0, 0x14], 1),
    ("10.0.0.15", [0x02, 0x15, 0, 0, 0, 0x15], 2),
    ("10.0.0.16", [0x02, 0x16, 0, 0, 0, 0x16], 1),
];
/// How many different flows each director schedules.
const FLOWS: usize = 2_000;

/// The mh service (`mh-port`: the source port is hashed too) with the reals
/// of `REALS` at indices `order`, in that order.
fn service(order: &[usize]) -> String {
    let mut s =
        format!("virtual_server {VIP} 80 {{\n lb_algo mh\n lb_kind DR\n protocol TCP\n mh-port\n");
    for &i in order {
        let (ip, _, w) = REALS[i];
        s += &format!(" real_server {ip} 80 {{ weight {w} }}\n");
    }
    s + "}\n"
}

/// Another mh service with three reals of its own: on director B it is
/// configured first, so it takes the first real ids and the first Maglev
/// table, and the shared service's reals get other ids than on A.
const OTHER: &str = "virtual_server 10.0.0.200 80 {\n lb_algo mh\n lb_kind DR\n \
     protocol TCP\n real_server 10.0.0.31 80 { weight 1 }\n \
     real_server 10.0.0.32 80 { weight 1 }\n real_server 10.0.0.33 80 { weight 1 }\n}\n";

/// The 2,000 flows: 200 clients, 10 source ports each.
fn flows() -> Vec<(String, u16)> {
    (0..FLOWS)
        .map(|k| {
            let c = k / 10;
            (
                format!("198.51.{}.{}", 100 + c / 200, 1 + c % 200),
                20_000 + 7 * (k % 10) as u16 + c as u16,
            )
        })
        .collect()
}

/// One director: `configs` applied in turn (as successive reloads or
/// `lb adm` changes would), the reals reached through interface `b` when
/// `via_b`, those in `unreachable` not resolved.
fn director(configs: Vec<String>, via_b: bool, unreachable: &'static [&'static str]) -> Director {
    std::thread::spawn(move || {
        let mut h = Harness::new(8192).expect("harness (needs root and a BPF-capable kernel)");
        for (ip, mac, _) in REALS {
            if !unreachable.contains(&ip) {
                h.neighbour(ip, mac, via_b);
            }
        }
        for (k, ip) in ["10.0.0.31", "10.0.0.32", "10.0.0.33"].iter().enumerate() {
            h.neighbour(ip, [0x02, 0x30, 0, 0, 0, k as u8], via_b);
        }
        for c in &configs {
            h.apply(c).expect("apply");
        }
        let want = if via_b { "XDP_REDIRECT" } else { "XDP_TX" };
        let picks = flows()
            .iter()
            .map(|(client, port)| {
                let pkt = tcp(Eth::inbound(), client, *port, VIP, 80, Flags::Syn, b"");
                let (v, out) = h.run(&pkt).expect("test run");
                assert_eq!(verdict_name(v), want, "{client}:{port}");
                let (ip, _, _) = REALS
                    .iter()
                    .find(|(_, m, _)| out[..6] == m[..])
                    .unwrap_or_else(|| panic!("{client}:{port}: not sent to a real's MAC"));
                ip.to_string()
            })
            .collect();
        Director {
            picks,
            table: maglev_of(&h),
        }
    })
    .join()
    .expect("director thread")
}

/// The shared service's live Maglev table in `h`'s maps, slot by slot.
fn maglev_of(h: &Harness) -> Vec<([u32; 4], u16)> {
    let key = svc_key(&ServiceAddr {
        addr: VIP.parse().unwrap(),
        port: 80,
        proto: Proto::Tcp,
    });
    let svc = h.dp.services.get(&key, 0).expect("the service's entry");
    assert_eq!(svc.ring_len, lb_common::MH_TABLE_SIZE);
    (0..svc.ring_len)
        .map(|pos| {
            let index = lb_common::maglev_index(svc.table_id, svc.ring_gen, pos);
            let id = h.dp.maglev.get(&index, 0).expect("a Maglev slot");
            let real = h.dp.reals.get(&id, 0).expect("the slot's real");
            (real.addr, u16::from_be(real.port_be))
        })
        .collect()
}

/// How many slots of two directors' tables hold different reals.
fn slots_differing(a: &Director, b: &Director) -> usize {
    assert_eq!(a.table.len(), b.table.len());
    (0..a.table.len())
        .filter(|&i| a.table[i] != b.table[i])
        .count()
}

/// Director A: the service alone, its reals in configuration order, one
/// load, interface `a`.
fn director_a(unreachable: &'static [&'static str]) -> Director {
    director(vec![service(&[0, 1, 2, 3, 4, 5])], false, unreachable)
}

/// Director B: another mh service first, then the shared service's reals
/// added one at a time in the opposite order (each step a new
/// configuration, as `lb adm -a` would), interface `b`.
fn director_b(unreachable: &'static [&'static str]) -> Director {
    let mut configs = vec![OTHER.to_string()];
    let mut order = Vec::new();
    for i in (0..REALS.len()).rev() {
        order.push(i);
        configs.push(format!("{OTHER}{}", service(&order)));
    }
    director(configs, true, unreachable)
}

#[test]
fn two_directors_send_2000_flows_to_the_same_reals() {
    let (da, db) = (director_a(&[]), director_b(&[]));
    // The whole table first: reals added in another order contest about
    // 0.1 % of the slots differently, which 2,000 flows alone may miss.
    assert_eq!(slots_differing(&da, &db), 0, "Maglev slots differ");
    let (a, b) = (&da.picks, &db.picks);
    let flows = flows();
    let differ: Vec<String> = (0..FLOWS)
        .filter(|&k| a[k] != b[k])
        .map(|k| format!("{}:{} A {} B {}", flows[k].0, flows[k].1, a[k], b[k]))
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {FLOWS} flows differ, e.g. {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
    // The flows spread over every real (not one real for all), by weight.
    for (ip, _, w) in REALS {
        let n = a.iter().filter(|r| *r == ip).count();
        let expect = FLOWS as f64 * w as f64 / 10.0;
        assert!(
            (n as f64 - expect).abs() < expect * 0.35,
            "{ip} (weight {w}) took {n} of {FLOWS} flows"
        );
    }
}

#[test]
fn a_real_one_director_cannot_reach_moves_only_its_own_flows() {
    // Director B has not resolved 10.0.0.13 (DR, no MAC yet): the real
    // keeps its slots in B's table, whose probe falls back past them, so
    // every other flow still lands where it lands on A.
    let (da, db) = (director_a(&[]), director_b(&["10.0.0.13"]));
    assert_eq!(slots_differing(&da, &db), 0, "Maglev slots differ");
    let (a, b) = (&da.picks, &db.picks);
    let mut own = 0;
    for k in 0..FLOWS {
        if a[k] == "10.0.0.13" {
            own += 1;
            assert_ne!(b[k], "10.0.0.13");
        } else {
            assert_eq!(a[k], b[k], "flow {k} of another real moved");
        }
    }
    assert!(own > 0, "the unreachable real had flows on A");
}
