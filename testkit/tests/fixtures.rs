//! Data-plane fixtures run through BPF_PROG_TEST_RUN: each names its input,
//! the expected verdict, the exact expected output bytes and counters. The
//! maps are filled through the agent's own code. Needs root (BPF).
use lb_testkit::*;

const VIP: &str = "10.0.0.100";
const RIP1: &str = "10.0.0.11";
const RIP2: &str = "10.0.0.12";
const CLIENT: &str = "192.0.2.7";
const MAC1: [u8; 6] = [0x02, 0x11, 0, 0, 0, 0x11];
const MAC2: [u8; 6] = [0x02, 0x12, 0, 0, 0, 0x12];

fn conf(algo: &str, w1: u32, w2: u32, extra: &str) -> String {
    format!(
        "virtual_server {VIP} 80 {{\n lb_algo {algo}\n lb_kind DR\n protocol TCP\n {extra}\n \
         real_server {RIP1} 80 {{ weight {w1} }}\n real_server {RIP2} 80 {{ weight {w2} }}\n}}\n\
         virtual_server {VIP} 53 {{\n lb_algo rr\n lb_kind DR\n protocol UDP\n \
         real_server {RIP1} 53 {{ weight 1 }}\n real_server {RIP2} 53 {{ weight 1 }}\n}}\n\
         virtual_server 2001:db8::100 80 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n \
         real_server 2001:db8::11 80 {{ weight 1 }}\n real_server 2001:db8::12 80 {{ weight 1 }}\n}}\n"
    )
}

fn harness(algo: &str, w1: u32, w2: u32, extra: &str) -> Harness {
    let mut h = Harness::new(4096).expect("harness (needs root and a BPF-capable kernel)");
    h.neighbour(RIP1, MAC1, false);
    h.neighbour(RIP2, MAC2, false);
    h.neighbour("2001:db8::11", MAC1, false);
    h.neighbour("2001:db8::12", MAC2, false);
    h.apply(&conf(algo, w1, w2, extra)).expect("apply");
    h
}

fn syn(sport: u16) -> Vec<u8> {
    tcp(Eth::inbound(), CLIENT, sport, VIP, 80, Flags::Syn, b"")
}

/// A data segment of the client's connection from `sport`.
fn ack(sport: u16) -> Vec<u8> {
    tcp(Eth::inbound(), CLIENT, sport, VIP, 80, Flags::Ack, b"x")
}

/// Runs `pkt` and checks the verdict and that the output is exactly `want`.
fn expect(h: &Harness, what: &str, pkt: &[u8], verdict: u32, want: &[u8]) {
    let (v, out) = h
        .run(pkt)
        .unwrap_or_else(|e| panic!("{what}: test run failed: {e:#}"));
    assert_eq!(verdict_name(v), verdict_name(verdict), "{what}: verdict");
    assert!(
        out == want,
        "{what}: output bytes differ\n{}",
        hex_diff(&out, want)
    );
}

/// Runs `pkt`, expects XDP_TX DR-rewritten toward a real; returns which (1 or 2).
fn forwarded_to(h: &Harness, pkt: &[u8]) -> u8 {
    let (v, out) = h.run(pkt).expect("test run");
    assert_eq!(verdict_name(v), "XDP_TX");
    assert_eq!(&out[6..12], &MAC_A, "source MAC is the egress interface's");
    assert_eq!(
        &out[12..],
        &dr_rewrite(pkt, MAC1, MAC_A)[12..],
        "DR leaves everything after the MACs untouched but the TTL"
    );
    match &out[..6] {
        m if m == MAC1 => 1,
        m if m == MAC2 => 2,
        m => panic!("unexpected destination MAC {m:02x?}"),
    }
}

#[test]
fn dr_tcp_v4_new_flow_exact_bytes_and_counters() {
    let h = harness("rr", 1, 1, "");
    let pkt = syn(40000);
    expect(
        &h,
        "SYN to VIP",
        &pkt,
        XDP_TX,
        &dr_rewrite(&pkt, MAC1, MAC_A),
    );
    let g = h.dp.global_sum().unwrap();
    assert_eq!(
        (g.tx, g.new_flows, g.pass, g.drop, g.aborted),
        (1, 1, 0, 0, 0)
    );
    let svc = h.dp.svc_stats_sum(0).unwrap();
    assert_eq!(
        (svc.conns, svc.packets, svc.bytes),
        (1, 1, pkt.len() as u64)
    );
    let r1 = h.dp.real_stats_sum(0).unwrap();
    assert_eq!((r1.conns, r1.packets, r1.bytes), (1, 1, pkt.len() as u64));
}

#[test]
fn established_flow_stays_and_is_not_a_new_connection() {
    let h = harness("rr", 1, 1, "");
    assert_eq!(forwarded_to(&h, &syn(40000)), 1);
    let ack = tcp(
        Eth::inbound(),
        CLIENT,
        40000,
        VIP,
        80,
        Flags::Ack,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    for _ in 0..5 {
        expect(
            &h,
            "data on established flow",
            &ack,
            XDP_TX,
            &dr_rewrite(&ack, MAC1, MAC_A),
        );
    }
    let g = h.dp.global_sum().unwrap();
    assert_eq!((g.tx, g.new_flows), (6, 1));
    let r1 = h.dp.real_stats_sum(0).unwrap();
    assert_eq!((r1.conns, r1.packets), (1, 6));
    assert_eq!(h.dp.real_stats_sum(1).unwrap().packets, 0);
}

#[test]
fn rr_alternates() {
    let h = harness("rr", 1, 1, "");
    let seq: Vec<u8> = (0..6).map(|i| forwarded_to(&h, &syn(41000 + i))).collect();
    assert_eq!(seq, [1, 2, 1, 2, 1, 2]);
}

#[test]
fn wrr_three_to_one_interleaves() {
    let h = harness("wrr", 3, 1, "");
    let seq: Vec<u8> = (0..8).map(|i| forwarded_to(&h, &syn(42000 + i))).collect();
    assert_eq!(seq, [1, 1, 2, 1, 1, 1, 2, 1]);
}

#[test]
fn weight_zero_takes_no_new_flows_but_keeps_established() {
    let mut h = harness("rr", 1, 1, "");
    assert_eq!(forwarded_to(&h, &syn(43000)), 1);
    assert_eq!(forwarded_to(&h, &syn(43001)), 2);
    h.apply(&conf("rr", 1, 0, "")).unwrap();
    for i in 0..4 {
        assert_eq!(
            forwarded_to(&h, &syn(43100 + i)),
            1,
            "new flows avoid the weight-0 real"
        );
    }
    let ack = ack(43001);
    assert_eq!(
        forwarded_to(&h, &ack),
        2,
        "established flow stays on its weight-0 real"
    );
}

#[test]
fn removed_real_flows_are_rescheduled() {
    let mut h = harness("rr", 1, 1, "");
    assert_eq!(forwarded_to(&h, &syn(44000)), 1);
    assert_eq!(forwarded_to(&h, &syn(44001)), 2);
    let only1 = format!(
        "virtual_server {VIP} 80 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server {RIP1} 80 {{ weight 1 }}\n}}\n"
    );
    h.apply(&only1).unwrap();
    assert_eq!(
        forwarded_to(&h, &ack(44001)),
        1,
        "flow of the removed real moves on its next packet"
    );
    assert_eq!(
        forwarded_to(&h, &ack(44000)),
        1,
        "flow of the remaining real untouched"
    );
    let g = h.dp.global_sum().unwrap();
    assert_eq!(g.resched, 1);
}

#[test]
fn added_real_does_not_move_established_flows() {
    let mut h = harness("rr", 1, 1, "");
    let flows: Vec<(u16, u8)> = (0..6)
        .map(|i| (45000 + i, forwarded_to(&h, &syn(45000 + i))))
        .collect();
    h.neighbour("10.0.0.13", [2, 0x13, 0, 0, 0, 0x13], false);
    let three = conf("wrr", 5, 1, "").replace(
        &format!("real_server {RIP2} 80 {{ weight 1 }}"),
        &format!("real_server {RIP2} 80 {{ weight 1 }}\n real_server 10.0.0.13 80 {{ weight 9 }}"),
    );
    h.apply(&three).unwrap();
    for (port, real) in flows {
        let ack = ack(port);
        assert_eq!(
            forwarded_to(&h, &ack),
            real,
            "flow {port} kept its real after weights changed"
        );
    }
}

#[test]
fn persistence_keeps_client_on_one_real() {
    let h = harness("rr", 1, 1, "persistence_timeout 60");
    let first = forwarded_to(&h, &syn(46000));
    for i in 1..8 {
        assert_eq!(
            forwarded_to(&h, &syn(46000 + i)),
            first,
            "same client, new connection"
        );
    }
    let other = tcp(Eth::inbound(), "192.0.2.8", 46000, VIP, 80, Flags::Syn, b"");
    assert_ne!(
        forwarded_to(&h, &other),
        first,
        "another client takes the next real"
    );
}

#[test]
fn udp_v4_is_forwarded_and_tracked() {
    let h = harness("rr", 1, 1, "");
    let d = udp(Eth::inbound(), CLIENT, 5353, VIP, 53, b"query");
    expect(&h, "UDP to VIP", &d, XDP_TX, &dr_rewrite(&d, MAC1, MAC_A));
    expect(
        &h,
        "same UDP flow",
        &d,
        XDP_TX,
        &dr_rewrite(&d, MAC1, MAC_A),
    );
    let d2 = udp(Eth::inbound(), CLIENT, 5354, VIP, 53, b"query");
    expect(
        &h,
        "next UDP flow",
        &d2,
        XDP_TX,
        &dr_rewrite(&d2, MAC2, MAC_A),
    );
}

#[test]
fn ipv6_tcp_dr() {
    let h = harness("rr", 1, 1, "");
    let p = tcp(
        Eth::inbound(),
        "2001:db8::7",
        40000,
        "2001:db8::100",
        80,
        Flags::Syn,
        b"",
    );
    expect(&h, "IPv6 SYN", &p, XDP_TX, &dr_rewrite(&p, MAC1, MAC_A));
    let p2 = tcp(
        Eth::inbound(),
        "2001:db8::7",
        40001,
        "2001:db8::100",
        80,
        Flags::Syn,
        b"",
    );
    expect(
        &h,
        "IPv6 second flow",
        &p2,
        XDP_TX,
        &dr_rewrite(&p2, MAC2, MAC_A),
    );
}

#[test]
fn vlan_tagged_frame_keeps_its_tag() {
    let h = harness("rr", 1, 1, "");
    let eth = Eth {
        vlan: Some(42),
        ..Eth::inbound()
    };
    let p = tcp(eth, CLIENT, 40000, VIP, 80, Flags::Syn, b"");
    expect(&h, "802.1Q SYN", &p, XDP_TX, &dr_rewrite(&p, MAC1, MAC_A));
    let p6 = tcp(
        eth,
        "2001:db8::7",
        40000,
        "2001:db8::100",
        80,
        Flags::Syn,
        b"",
    );
    expect(
        &h,
        "802.1Q IPv6 SYN",
        &p6,
        XDP_TX,
        &dr_rewrite(&p6, MAC1, MAC_A),
    );
}

#[test]
fn real_behind_other_interface_is_redirected() {
    let mut h = harness("rr", 1, 1, "");
    h.neighbour(RIP1, MAC1, true);
    h.neighbour(RIP2, MAC2, true);
    h.apply(&conf("rr", 1, 1, "")).unwrap();
    let p = syn(47000);
    expect(
        &h,
        "SYN to a real on the second interface",
        &p,
        XDP_REDIRECT,
        &dr_rewrite(&p, MAC1, MAC_B),
    );
    assert_eq!(h.dp.global_sum().unwrap().redirect, 1);
}

#[test]
fn unresolved_real_gets_no_traffic() {
    let mut h = harness("rr", 1, 1, "");
    h.forget(RIP2);
    h.apply(&conf("rr", 1, 1, "")).unwrap();
    for i in 0..4 {
        assert_eq!(forwarded_to(&h, &syn(48000 + i)), 1);
    }
}

#[test]
fn no_available_real_drops_and_counts() {
    let h = harness("rr", 0, 0, "");
    let p = syn(49000);
    expect(&h, "SYN with every weight 0", &p, XDP_DROP, &p);
    let g = h.dp.global_sum().unwrap();
    assert_eq!((g.drop, g.drop_no_real), (1, 1));
}

#[test]
fn traffic_not_for_a_service_passes_untouched() {
    let h = harness("rr", 1, 1, "");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "other address",
            tcp(
                Eth::inbound(),
                CLIENT,
                40000,
                "10.0.0.1",
                80,
                Flags::Syn,
                b"",
            ),
        ),
        (
            "other port on the VIP",
            tcp(Eth::inbound(), CLIENT, 40000, VIP, 22, Flags::Syn, b""),
        ),
        (
            "UDP to the TCP port",
            udp(Eth::inbound(), CLIENT, 40000, VIP, 80, b"x"),
        ),
        (
            "director's own IPv6",
            tcp(
                Eth::inbound(),
                "2001:db8::7",
                40000,
                "2001:db8::1",
                80,
                Flags::Syn,
                b"",
            ),
        ),
    ];
    for (what, p) in &cases {
        expect(&h, what, p, XDP_PASS, p);
    }
    let g = h.dp.global_sum().unwrap();
    assert_eq!(
        (g.pass, g.pass_not_vip, g.tx),
        (cases.len() as u64, cases.len() as u64, 0)
    );
}

/// Sets byte `i` of a packet and fixes nothing else.
fn with_byte(mut p: Vec<u8>, i: usize, v: u8) -> Vec<u8> {
    p[i] = v;
    p
}

type Counter = fn(&lb_common::GlobalStats) -> u64;

#[test]
fn malformed_and_unsupported_input_passes_untouched() {
    let h = harness("rr", 1, 1, "");
    let good = syn(50000);
    let l3 = 14;
    let mut cases: Vec<(String, Vec<u8>, Counter)> = Vec::new();
    // Truncation at every offset from a full Ethernet header on.
    for n in 14..good.len() {
        cases.push(
            (format!("truncated to {n} bytes"), good[..n].to_vec(), |g| {
                g.pass_malformed + g.pass_not_ip
            }),
        );
    }
    for ihl in [0u8, 4] {
        cases.push((
            format!("IHL {ihl}"),
            with_byte(good.clone(), l3, 0x40 | ihl),
            |g| g.pass_malformed,
        ));
    }
    cases.push((
        "IP version 5".into(),
        with_byte(good.clone(), l3, 0x55),
        |g| g.pass_malformed,
    ));
    // Total length beyond the frame and below the header size.
    let mut long = good.clone();
    long[l3 + 2..l3 + 4].copy_from_slice(&200u16.to_be_bytes());
    cases.push(("total length > frame".into(), long, |g| g.pass_malformed));
    let mut short = good.clone();
    short[l3 + 2..l3 + 4].copy_from_slice(&19u16.to_be_bytes());
    cases.push(("total length < 20".into(), short, |g| g.pass_malformed));
    let mut tiny = good.clone();
    tiny[l3 + 2..l3 + 4].copy_from_slice(&30u16.to_be_bytes());
    // (A valid header checksum: a wrong one stops at pass_bad_csum first.)
    fix_ipv4_checksum(&mut tiny, l3);
    cases.push(("total length cuts the TCP header".into(), tiny, |g| {
        g.pass_malformed
    }));
    // IPv4 with options (IHL 6, one NOP word), consistent lengths and checksum.
    let mut opts = good[..l3 + 20].to_vec();
    opts.extend_from_slice(&[1, 1, 1, 0]);
    opts.extend_from_slice(&good[l3 + 20..]);
    opts[l3] = 0x46;
    let tl = (opts.len() - l3) as u16;
    opts[l3 + 2..l3 + 4].copy_from_slice(&tl.to_be_bytes());
    fix_ipv4_checksum(&mut opts, l3);
    cases.push(("IPv4 options".into(), opts, |g| g.pass_ip_options));
    // Later fragments (middle and last) whose first fragment was never seen
    // (first fragments are balanced: see the fragment fixtures).
    for (what, ff) in [("later fragment", 0x2010u16), ("last fragment", 0x0010)] {
        let mut f = good.clone();
        f[l3 + 6..l3 + 8].copy_from_slice(&ff.to_be_bytes());
        fix_ipv4_checksum(&mut f, l3);
        cases.push((what.into(), f, |g| g.pass_fragment));
    }
    // Unknown protocols to the VIP (ICMP, GRE, SCTP).
    for proto in [1u8, 47, 132] {
        let mut p = good.clone();
        p[l3 + 9] = proto;
        fix_ipv4_checksum(&mut p, l3);
        cases.push((format!("IP protocol {proto} to VIP"), p, |g| {
            g.pass_other_proto
        }));
    }
    // TCP data offset below 5 and beyond the segment.
    cases.push((
        "TCP doff 4".into(),
        with_byte(good.clone(), l3 + 20 + 12, 0x40),
        |g| g.pass_malformed,
    ));
    cases.push((
        "TCP doff 15".into(),
        with_byte(good.clone(), l3 + 20 + 12, 0xf0),
        |g| g.pass_malformed,
    ));
    // UDP length that disagrees with the IP payload.
    let mut u = udp(Eth::inbound(), CLIENT, 5353, VIP, 53, b"query");
    u[l3 + 20 + 4..l3 + 20 + 6].copy_from_slice(&500u16.to_be_bytes());
    cases.push(("UDP length > payload".into(), u, |g| g.pass_malformed));
    // IPv6 with a hop-by-hop header and with a fragment header.
    let v6 = tcp(
        Eth::inbound(),
        "2001:db8::7",
        40000,
        "2001:db8::100",
        80,
        Flags::Syn,
        b"",
    );
    cases.push((
        "IPv6 hop-by-hop".into(),
        with_byte(v6.clone(), 14 + 6, 0),
        |g| g.pass_ip_options,
    ));
    // The TCP header read as a fragment header: a later fragment of
    // protocol 156 (the source port's first byte).
    cases.push((
        "IPv6 fragment header".into(),
        with_byte(v6.clone(), 14 + 6, 44),
        |g| g.pass_fragment + g.pass_other_proto,
    ));
    for n in 14..v6.len() {
        cases.push((format!("IPv6 truncated to {n}"), v6[..n].to_vec(), |g| {
            g.pass_malformed + g.pass_not_ip
        }));
    }
    // Not IP at all: ARP, and a double-tagged frame.
    let mut arp = good[..42].to_vec();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    cases.push(("ARP".into(), arp, |g| g.pass_not_ip));
    let qinq = tcp(
        Eth {
            vlan: Some(7),
            ..Eth::inbound()
        },
        CLIENT,
        40000,
        VIP,
        80,
        Flags::Syn,
        b"",
    );
    let mut qinq2 = qinq[..12].to_vec();
    qinq2.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    qinq2.extend_from_slice(&qinq[12..]);
    cases.push(("two VLAN tags".into(), qinq2, |g| g.pass_not_ip));

    for (what, p, counter) in &cases {
        let before = h.dp.global_sum().unwrap();
        expect(&h, what, p, XDP_PASS, p);
        let after = h.dp.global_sum().unwrap();
        assert_eq!(
            counter(&after),
            counter(&before) + 1,
            "{what}: reason counter"
        );
        assert_eq!(after.pass, before.pass + 1, "{what}: pass counter");
    }
    let g = h.dp.global_sum().unwrap();
    assert_eq!(
        (g.aborted, g.tx, g.new_flows),
        (0, 0, 0),
        "nothing malformed was forwarded"
    );
}

#[test]
fn tcp_states_follow_syn_ack_fin_rst() {
    let h = harness("rr", 1, 1, "");
    let states = |h: &Harness| -> Vec<u32> {
        let mut v: Vec<u32> =
            h.dp.conntrack
                .iter()
                .filter_map(Result::ok)
                .map(|(_, c)| c.state)
                .collect();
        v.sort();
        v
    };
    forwarded_to(&h, &syn(51000));
    assert_eq!(states(&h), [lb_common::CT_SYN_RECV]);
    forwarded_to(
        &h,
        &tcp(Eth::inbound(), CLIENT, 51000, VIP, 80, Flags::Ack, b""),
    );
    assert_eq!(states(&h), [lb_common::CT_ESTABLISHED]);
    forwarded_to(
        &h,
        &tcp(Eth::inbound(), CLIENT, 51000, VIP, 80, Flags::Fin, b""),
    );
    assert_eq!(states(&h), [lb_common::CT_FIN_WAIT]);
    forwarded_to(
        &h,
        &tcp(Eth::inbound(), CLIENT, 51000, VIP, 80, Flags::Rst, b""),
    );
    assert_eq!(states(&h), [lb_common::CT_CLOSE]);
}

#[test]
fn expired_flow_is_scheduled_again() {
    let mut h = harness("rr", 1, 1, "");
    h.dp.set_timeouts(lb_common::Timeouts {
        udp_s: 1,
        ..Default::default()
    })
    .unwrap();
    let d = udp(Eth::inbound(), CLIENT, 6000, VIP, 53, b"q");
    assert_eq!(forwarded_to(&h, &d), 1);
    assert_eq!(forwarded_to(&h, &d), 1);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(
        forwarded_to(&h, &d),
        2,
        "idle past the UDP timeout: a new flow"
    );
    assert_eq!(h.dp.global_sum().unwrap().expired, 1);
}

#[test]
fn persistence_template_lives_while_its_connection_does() {
    let h = harness("rr", 1, 1, "persistence_timeout 3");
    let ack = ack(52000);
    let first = forwarded_to(&h, &syn(52000));
    // The connection stays busy for longer than the persistence timeout (its
    // entry, and so the template, is refreshed about once a second)…
    for _ in 0..12 {
        std::thread::sleep(std::time::Duration::from_millis(350));
        assert_eq!(forwarded_to(&h, &ack), first);
    }
    // …so the client's template is still alive for its next connection,
    // although rr alone would now pick the other real.
    assert_eq!(forwarded_to(&h, &syn(52001)), first);
    // Once everything is idle past the timeout, the client is scheduled afresh.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert_ne!(forwarded_to(&h, &syn(52002)), first);
}

#[test]
fn syn_reusing_a_closed_port_is_a_new_connection() {
    let h = harness("rr", 1, 1, "");
    assert_eq!(forwarded_to(&h, &syn(53000)), 1);
    let rst = tcp(Eth::inbound(), CLIENT, 53000, VIP, 80, Flags::Rst, b"");
    assert_eq!(forwarded_to(&h, &rst), 1, "RST follows its flow");
    // The client reuses the port: ipvs schedules it again (conn_reuse_mode).
    assert_eq!(forwarded_to(&h, &syn(53000)), 2);
    let g = h.dp.global_sum().unwrap();
    assert_eq!(g.new_flows, 2);
    let svc = h.dp.svc_stats_sum(0).unwrap();
    assert_eq!((svc.conns, svc.packets), (2, 3));
}
