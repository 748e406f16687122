//! Connection thresholds and the persistence netmask (BPF_PROG_TEST_RUN).
//!
//! ipvs's upper / lower connection thresholds (`uthreshold` / `lthreshold`,
//! `ipvsadm -x / -y`): a real whose active + inactive connections reach
//! the upper threshold gets no new connection from any scheduler until they
//! fall below the lower one (3/4 of the upper without one); its established
//! flows keep flowing; with every real overloaded a new connection has no
//! real. And ipvs's persistence netmask (`persistence_granularity`,
//! `ipvsadm -M`): clients of one network share a persistence template.
//!
//! Connections are released the way the agent releases them: RST (state
//! CLOSE), a close timeout of 0 s, and the agent's sweep.
use lb_testkit::*;
use lb_user::{sched, state::addr_words};

const VIP: &str = "10.0.0.100";
const CLIENT: &str = "192.0.2.7";
const REALS: [(&str, [u8; 6]); 3] = [
    ("10.0.0.11", [0x02, 0x11, 0, 0, 0, 0x11]),
    ("10.0.0.12", [0x02, 0x12, 0, 0, 0, 0x12]),
    ("10.0.0.13", [0x02, 0x13, 0, 0, 0, 0x13]),
];

/// A real of a fixture: weight and the `real_server` block's extra lines.
struct R(u32, &'static str);

fn conf(algo: &str, reals: &[R], extra: &str) -> String {
    let mut s = format!(
        "virtual_server {VIP} 80 {{\n lb_algo {algo}\n lb_kind DR\n protocol TCP\n {extra}\n"
    );
    for (i, R(w, more)) in reals.iter().enumerate() {
        s += &format!(
            " real_server {} 80 {{\n  weight {w}\n  {more}\n }}\n",
            REALS[i].0
        );
    }
    s + "}\n"
}

fn harness(algo: &str, reals: &[R], extra: &str) -> Harness {
    let mut h = Harness::new(4096).expect("harness (needs root)");
    for (ip, mac) in REALS {
        h.neighbour(ip, mac, false);
    }
    h.apply(&conf(algo, reals, extra)).expect("apply");
    h
}

/// Which real (1-based) a packet from `client:port` with `flags` went to;
/// `None` when it was dropped for want of a real (checked with the counter).
fn send_from(h: &Harness, client: &str, port: u16, flags: Flags) -> Option<usize> {
    let pkt = tcp(Eth::inbound(), client, port, VIP, 80, flags, b"");
    let before = h.dp.global_sum().unwrap().drop_no_real;
    let (v, out) = h.run(&pkt).expect("run");
    let no_real = h.dp.global_sum().unwrap().drop_no_real - before;
    if v == XDP_DROP {
        assert_eq!(no_real, 1, "dropped for another reason than no real");
        return None;
    }
    assert_eq!(verdict_name(v), "XDP_TX");
    assert_eq!(no_real, 0);
    let r = REALS
        .iter()
        .position(|(_, m)| out[..6] == m[..])
        .expect("a real's MAC");
    // Direct routing: only the MAC addresses change.
    assert_eq!(
        out,
        dr_rewrite(&pkt, REALS[r].1, MAC_A),
        "{}",
        hex_diff(&out, &pkt)
    );
    Some(r + 1)
}

/// A new connection (SYN) from `CLIENT:port`: its real, or `None`.
fn syn(h: &Harness, port: u16) -> Option<usize> {
    send_from(h, CLIENT, port, Flags::Syn)
}

/// SYNs from each of `ports`: their reals (0: no real).
fn syns(h: &Harness, ports: std::ops::RangeInclusive<u16>) -> Vec<usize> {
    ports.map(|p| syn(h, p).unwrap_or(0)).collect()
}

/// Connections in effect (active + inactive) of real `real` (1-based).
fn total(h: &Harness, real: usize) -> u64 {
    let svc = lb_user::config::ServiceAddr {
        addr: VIP.parse().unwrap(),
        port: 80,
        proto: lb_user::config::Proto::Tcp,
    };
    let id = h
        .tables
        .real_id(&svc, REALS[real - 1].0.parse().unwrap(), 80)
        .unwrap();
    let c = h.dp.real_conns(id).unwrap();
    c.active + c.inactive
}

/// Ends the connections from `ports` (which went to `real`) as the agent
/// sees them end: RST, then the sweep with a 0 s close timeout.
fn release(h: &mut Harness, ports: &[u16], real: usize) {
    for &p in ports {
        assert_eq!(send_from(h, CLIENT, p, Flags::Rst), Some(real), "port {p}");
    }
    h.dp.set_timeouts(lb_common::Timeouts {
        tcp_close_s: 0,
        ..Default::default()
    })
    .unwrap();
    let gens = h.tables.real_gens();
    lb_user::sweep::sweep(&mut h.dp, &gens).unwrap();
}

#[test]
fn rr_passes_over_a_real_at_its_upper_threshold_until_below_three_quarters() {
    let mut h = harness("rr", &[R(1, "uthreshold 4"), R(1, "")], "");
    // R1 takes every other connection until it holds 4.
    assert_eq!(syns(&h, 1..=8), [1, 2, 1, 2, 1, 2, 1, 2]);
    assert_eq!(total(&h, 1), 4);
    // At 4 it is overloaded: everything goes to R2.
    assert_eq!(syns(&h, 9..=12), [2, 2, 2, 2]);
    // Its established flows keep flowing (exact bytes checked in send_from).
    assert_eq!(send_from(&h, CLIENT, 1, Flags::Ack), Some(1));
    assert_eq!(send_from(&h, CLIENT, 1, Flags::Ack), Some(1));
    // 3 is not below 3/4 × 4: still overloaded.
    release(&mut h, &[3], 1);
    assert_eq!(total(&h, 1), 3);
    assert_eq!(syns(&h, 13..=14), [2, 2]);
    // 2 is: it takes new connections again, until it holds 4 again.
    release(&mut h, &[5], 1);
    assert_eq!(syns(&h, 15..=18), [1, 2, 1, 2]);
    assert_eq!(syns(&h, 19..=20), [2, 2]);
}

#[test]
fn wrr_with_a_lower_threshold_waits_until_below_it() {
    let mut h = harness("wrr", &[R(3, "uthreshold 3\n  lthreshold 1"), R(1, "")], "");
    let mut on_r1 = Vec::new();
    let mut port = 1;
    while total(&h, 1) < 3 {
        if syn(&h, port) == Some(1) {
            on_r1.push(port);
        }
        port += 1;
        assert!(port < 20, "R1 never reached 3 connections");
    }
    assert_eq!(syns(&h, 30..=33), [2, 2, 2, 2]);
    // 2, then 1 connection: not below the lower threshold 1 yet.
    release(&mut h, &on_r1[..1], 1);
    assert_eq!(syns(&h, 34..=35), [2, 2]);
    release(&mut h, &on_r1[1..2], 1);
    assert_eq!(total(&h, 1), 1);
    assert_eq!(syns(&h, 36..=37), [2, 2]);
    // 0 < 1: R1 (weight 3) takes new connections again.
    release(&mut h, &on_r1[2..3], 1);
    let next = syns(&h, 38..=41);
    assert!(next.contains(&1), "{next:?}");
}

#[test]
fn lc_and_wlc_leave_an_overloaded_real_out_of_the_scan() {
    for algo in ["lc", "wlc"] {
        let mut h = harness(algo, &[R(1, "uthreshold 1"), R(1, "")], "");
        // A tie would go to R1; overloaded at 1 connection, it is passed over.
        assert_eq!(syns(&h, 1..=4), [1, 2, 2, 2], "{algo}");
        assert_eq!(send_from(&h, CLIENT, 1, Flags::Ack), Some(1), "{algo}");
        release(&mut h, &[1], 1);
        assert_eq!(syn(&h, 5), Some(1), "{algo}");
    }
}

#[test]
fn fo_takes_the_next_heaviest_real_while_the_heaviest_is_overloaded() {
    let mut h = harness("fo", &[R(3, "uthreshold 2"), R(1, "")], "");
    assert_eq!(syns(&h, 1..=4), [1, 1, 2, 2]);
    // 1 connection: below 3/4 × 2.
    release(&mut h, &[1], 1);
    assert_eq!(syns(&h, 5..=6), [1, 2]);
}

#[test]
fn every_real_overloaded_means_no_real_and_established_flows_go_on() {
    let h = harness("rr", &[R(1, "uthreshold 1"), R(1, "uthreshold 1")], "");
    assert_eq!(syns(&h, 1..=2), [1, 2]);
    // send_from checks the drop and its counter, drop_no_real.
    assert_eq!(syns(&h, 3..=5), [0, 0, 0]);
    assert_eq!(send_from(&h, CLIENT, 1, Flags::Ack), Some(1));
    assert_eq!(send_from(&h, CLIENT, 2, Flags::Ack), Some(2));
}

/// Real (1-based, of `n`) the table of `algo` (sh or mh) gives `client`.
fn from_table(h: &Harness, algo: &str, client: &str, n: usize) -> usize {
    let svc = lb_user::config::ServiceAddr {
        addr: VIP.parse().unwrap(),
        port: 80,
        proto: lb_user::config::Proto::Tcp,
    };
    let members: Vec<sched::Member> = (0..n)
        .map(|i| {
            let addr = REALS[i].0.parse().unwrap();
            sched::Member {
                id: h.tables.real_id(&svc, addr, 80).unwrap(),
                weight: 1,
                addr,
                port: 80,
            }
        })
        .collect();
    let (a, _) = addr_words(client.parse().unwrap());
    let id = if algo == "sh" {
        let pairs: Vec<(u32, u32)> = members.iter().map(|m| (m.id, m.weight)).collect();
        sched::sh_table(&pairs)[lb_common::hash::sh_bucket(&a, 0, 0) as usize]
    } else {
        let t = sched::maglev_table(&members, lb_common::MH_TABLE_SIZE as usize);
        t[(lb_common::hash::mh_hash(&a, 0) % lb_common::MH_TABLE_SIZE) as usize]
    };
    1 + members.iter().position(|m| m.id == id).unwrap()
}

/// sh / mh: a client whose hashed real is overloaded falls back to another
/// one (ipvs's sh-fallback / mh-fallback; lb always falls back), clients
/// of the other reals stay where they are, and the first real takes its
/// clients again once below its threshold.
fn hashing_falls_back_past_an_overloaded_real(algo: &str) {
    let mut h = harness(algo, &[R(1, "uthreshold 2"), R(1, "")], "");
    let clients: Vec<String> = (1..=40).map(|c| format!("198.51.100.{c}")).collect();
    let of = |h: &Harness, want: usize| -> Vec<String> {
        clients
            .iter()
            .filter(|c| from_table(h, algo, c, 2) == want)
            .cloned()
            .collect()
    };
    let (on_r1, on_r2) = (of(&h, 1), of(&h, 2));
    assert!(on_r1.len() >= 3 && !on_r2.is_empty(), "{algo}: table split");
    // Without overload every client gets its table's real.
    assert_eq!(send_from(&h, &on_r1[0], 1000, Flags::Syn), Some(1));
    assert_eq!(send_from(&h, &on_r1[1], 1000, Flags::Syn), Some(1));
    // R1 holds 2 = its threshold: its clients fall back to R2.
    assert_eq!(
        send_from(&h, &on_r1[2], 1000, Flags::Syn),
        Some(2),
        "{algo}"
    );
    assert_eq!(
        send_from(&h, &on_r1[0], 1001, Flags::Syn),
        Some(2),
        "{algo}"
    );
    assert_eq!(
        send_from(&h, &on_r2[0], 1000, Flags::Syn),
        Some(2),
        "{algo}"
    );
    // Its established flow stays.
    assert_eq!(send_from(&h, &on_r1[0], 1000, Flags::Ack), Some(1));
    // Below 3/4 × 2 again: R1's clients come back to it.
    for (c, port) in [(&on_r1[0], 1000), (&on_r1[1], 1000)] {
        assert_eq!(send_from(&h, c, port, Flags::Rst), Some(1));
    }
    release(&mut h, &[], 1);
    assert_eq!(
        send_from(&h, &on_r1[2], 2000, Flags::Syn),
        Some(1),
        "{algo}"
    );
}

#[test]
fn sh_falls_back_past_an_overloaded_real() {
    hashing_falls_back_past_an_overloaded_real("sh");
}

#[test]
fn mh_falls_back_past_an_overloaded_real() {
    hashing_falls_back_past_an_overloaded_real("mh");
}

#[test]
fn dh_has_no_real_when_its_bucket_is_overloaded() {
    // One real: every bucket is R1's; dh has no fallback (ipvs).
    let h = harness("dh", &[R(1, "uthreshold 1")], "");
    assert_eq!(syns(&h, 1..=3), [1, 0, 0]);
    assert_eq!(send_from(&h, CLIENT, 1, Flags::Ack), Some(1));
}

#[test]
fn a_persistence_template_still_leads_to_its_overloaded_real() {
    // ipvs's ip_vs_sched_persist follows a template whose real is
    // available, overloaded or not; only new templates avoid it.
    let h = harness(
        "rr",
        &[R(1, "uthreshold 1"), R(1, "")],
        "persistence_timeout 300",
    );
    assert_eq!(syn(&h, 1), Some(1));
    assert_eq!(syn(&h, 2), Some(1));
    assert_eq!(send_from(&h, "198.51.100.9", 1, Flags::Syn), Some(2));
    assert_eq!(send_from(&h, "198.51.100.10", 1, Flags::Syn), Some(2));
}

#[test]
fn clients_of_one_network_share_a_template_with_a_netmask() {
    let persistent = "persistence_timeout 300";
    // /24: the two clients in 192.0.2.0/24 share R1; another network goes
    // on with the round robin.
    let h = harness(
        "rr",
        &[R(1, ""), R(1, "")],
        &format!("{persistent}\n persistence_granularity 255.255.255.0"),
    );
    assert_eq!(send_from(&h, "192.0.2.7", 1, Flags::Syn), Some(1));
    assert_eq!(send_from(&h, "192.0.2.99", 1, Flags::Syn), Some(1));
    assert_eq!(send_from(&h, "198.51.100.7", 1, Flags::Syn), Some(2));
    assert_eq!(send_from(&h, "198.51.100.200", 1, Flags::Syn), Some(2));
    assert_eq!(send_from(&h, "192.0.2.250", 2, Flags::Syn), Some(1));
    // /32 and no granularity: each address has its own template.
    for g in ["\n persistence_granularity 255.255.255.255", ""] {
        let h = harness("rr", &[R(1, ""), R(1, "")], &format!("{persistent}{g}"));
        assert_eq!(send_from(&h, "192.0.2.7", 1, Flags::Syn), Some(1));
        assert_eq!(send_from(&h, "192.0.2.99", 1, Flags::Syn), Some(2));
        assert_eq!(send_from(&h, "192.0.2.7", 2, Flags::Syn), Some(1));
        assert_eq!(send_from(&h, "192.0.2.99", 2, Flags::Syn), Some(2));
    }
}

#[test]
fn ipv6_clients_of_one_64_share_a_template() {
    let vip = "2001:db8::100";
    let reals = [("2001:db8::11", REALS[0].1), ("2001:db8::12", REALS[1].1)];
    let mut h = Harness::new(4096).expect("harness (needs root)");
    for (ip, mac) in reals {
        h.neighbour(ip, mac, false);
    }
    let mut text = format!(
        "virtual_server {vip} 80 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n persistence_timeout 300\n persistence_granularity 64\n"
    );
    for (ip, _) in reals {
        text += &format!(" real_server {ip} 80 {{ weight 1 }}\n");
    }
    h.apply(&(text + "}\n")).expect("apply");
    let to = |client: &str, port: u16| -> usize {
        let pkt = tcp(Eth::inbound(), client, port, vip, 80, Flags::Syn, b"");
        let (v, out) = h.run(&pkt).expect("run");
        assert_eq!(verdict_name(v), "XDP_TX");
        let r = reals
            .iter()
            .position(|(_, m)| out[..6] == m[..])
            .expect("a real's MAC");
        assert_eq!(out, dr_rewrite(&pkt, reals[r].1, MAC_A));
        r + 1
    };
    assert_eq!(to("2001:db8:c::7", 1), 1);
    assert_eq!(to("2001:db8:c::ffff:1", 1), 1);
    assert_eq!(to("2001:db8:c:1::7", 1), 2);
    assert_eq!(to("2001:db8:c:0:1::9", 2), 1);
    assert_eq!(to("2001:db8:c:1::8", 2), 2);
}
