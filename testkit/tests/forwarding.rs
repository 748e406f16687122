//! Fixtures (BPF_PROG_TEST_RUN) for NAT, TUN, too-big replies, fragments,
//! ICMP errors and the decapsulation program. Expected packets are built
//! independently with etherparse (checksums computed in full), so the data
//! plane's incremental checksum updates are checked against recomputation.
use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder};
use lb_testkit::*;

const VIP: &str = "10.0.0.100";
const VIP6: &str = "2001:db8::100";
const CLIENT: &str = "192.0.2.7";
const CLIENT6: &str = "2001:db8:c::7";
const R1: &str = "10.1.0.11";
const R2: &str = "10.1.0.12";
const R1_6: &str = "2001:db8:1::11";
const R2_6: &str = "2001:db8:1::12";
const MAC1: [u8; 6] = [0x02, 0x11, 0, 0, 0, 0x11];
const MAC2: [u8; 6] = [0x02, 0x12, 0, 0, 0, 0x12];

fn harness(conf: &str) -> Harness {
    let mut h = Harness::new(4096).expect("harness (needs root and a BPF-capable kernel)");
    h.routed(MAC1, MAC2).expect("routes");
    h.apply(conf).expect("apply");
    h
}

fn nat_conf(algo: &str) -> String {
    format!(
        "virtual_server {VIP} 80 {{\n lb_algo {algo}\n lb_kind NAT\n protocol TCP\n \
         real_server {R1} 8080 {{ weight 1 }}\n real_server {R2} 8080 {{ weight 1 }}\n}}\n\
         virtual_server {VIP} 53 {{\n lb_algo rr\n lb_kind NAT\n protocol UDP\n \
         real_server {R1} 5353 {{ weight 1 }}\n}}\n\
         virtual_server {VIP6} 80 {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n \
         real_server {R1_6} 8080 {{ weight 1 }}\n}}\n"
    )
}

fn tun_conf() -> String {
    format!(
        "virtual_server {VIP} 80 {{\n lb_algo rr\n lb_kind TUN\n protocol TCP\n \
         real_server {R1} 80 {{ weight 1 }}\n}}\n\
         virtual_server {VIP6} 80 {{\n lb_algo rr\n lb_kind TUN\n protocol TCP\n \
         real_server {R1_6} 80 {{ weight 1 }}\n}}\n"
    )
}

fn eth(src: [u8; 6], dst: [u8; 6]) -> Eth {
    Eth {
        src,
        dst,
        vlan: None,
    }
}

fn check(what: &str, got: (u32, Vec<u8>), verdict: u32, want: &[u8]) {
    assert_eq!(
        verdict_name(got.0),
        verdict_name(verdict),
        "{what}: verdict"
    );
    assert!(
        got.1 == want,
        "{what}: output bytes differ\n{}",
        hex_diff(&got.1, want)
    );
}

/// `pkt` goes out of the ingress interface, DR-rewritten toward `mac`.
fn dr_sent(h: &Harness, what: &str, pkt: &[u8], mac: [u8; 6]) {
    check(
        what,
        h.run(pkt).unwrap(),
        XDP_TX,
        &dr_rewrite(pkt, mac, MAC_A),
    );
}

fn counters(h: &Harness) -> lb_common::GlobalStats {
    h.dp.global_sum().expect("counters")
}

#[test]
fn nat_tcp_v4_both_directions_exact_bytes() {
    let h = harness(&nat_conf("rr"));
    let syn = tcp(Eth::inbound(), CLIENT, 40000, VIP, 80, Flags::Syn, b"");
    // DNAT: to the real's address and port, out of interface b toward its MAC.
    let want = tcp(eth(MAC_B, MAC1), CLIENT, 40000, R1, 8080, Flags::Syn, b"");
    check(
        "SYN to VIP",
        h.run(&syn).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
    // The real's answer, arriving on b: source back to VIP:80, to the client.
    let reply = tcp(
        eth(MAC1, MAC_B),
        R1,
        8080,
        CLIENT,
        40000,
        Flags::Ack,
        b"hello",
    );
    let want = tcp(
        eth(MAC_A, CLIENT_MAC),
        VIP,
        80,
        CLIENT,
        40000,
        Flags::Ack,
        b"hello",
    );
    check(
        "reply from real",
        h.run_on_b(&reply).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
    // Data from the client keeps the real.
    let data = tcp(Eth::inbound(), CLIENT, 40000, VIP, 80, Flags::Ack, b"GET /");
    let want = tcp(
        eth(MAC_B, MAC1),
        CLIENT,
        40000,
        R1,
        8080,
        Flags::Ack,
        b"GET /",
    );
    check(
        "data to VIP",
        h.run(&data).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
    let g = counters(&h);
    assert_eq!((g.new_flows, g.nat_reverse, g.redirect), (1, 1, 3));
    let svc = h.dp.svc_stats_sum(0).unwrap();
    assert_eq!((svc.conns, svc.packets, svc.out_packets), (1, 2, 1));
    assert_eq!(svc.out_bytes, reply.len() as u64);
    // A packet from the real that belongs to no flow goes to the kernel.
    let stray = tcp(eth(MAC1, MAC_B), R1, 8080, CLIENT, 40001, Flags::Ack, b"x");
    check("stray reply", h.run_on_b(&stray).unwrap(), XDP_PASS, &stray);
}

#[test]
fn nat_udp_checksums_zero_kept_and_updated() {
    let h = harness(&nat_conf("rr"));
    let q = udp(Eth::inbound(), CLIENT, 5000, VIP, 53, b"query");
    let want = udp(eth(MAC_B, MAC1), CLIENT, 5000, R1, 5353, b"query");
    check(
        "UDP to VIP",
        h.run(&q).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
    // IPv4 UDP without a checksum stays without one.
    let mut q0 = udp(Eth::inbound(), CLIENT, 5001, VIP, 53, b"query");
    q0[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let mut want0 = udp(eth(MAC_B, MAC1), CLIENT, 5001, R1, 5353, b"query");
    want0[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    check(
        "UDP without checksum",
        h.run(&q0).unwrap(),
        XDP_REDIRECT,
        &routed(&want0),
    );
    let a = udp(eth(MAC1, MAC_B), R1, 5353, CLIENT, 5000, b"answer");
    let want = udp(eth(MAC_A, CLIENT_MAC), VIP, 53, CLIENT, 5000, b"answer");
    check(
        "UDP reply",
        h.run_on_b(&a).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
}

#[test]
fn nat_tcp_v6_both_directions() {
    let h = harness(&nat_conf("rr"));
    let syn = tcp(Eth::inbound(), CLIENT6, 40000, VIP6, 80, Flags::Syn, b"");
    let want = tcp(
        eth(MAC_B, MAC1),
        CLIENT6,
        40000,
        R1_6,
        8080,
        Flags::Syn,
        b"",
    );
    check(
        "IPv6 SYN",
        h.run(&syn).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
    let reply = tcp(
        eth(MAC1, MAC_B),
        R1_6,
        8080,
        CLIENT6,
        40000,
        Flags::Ack,
        b"hi",
    );
    let want = tcp(
        eth(MAC_A, CLIENT_MAC),
        VIP6,
        80,
        CLIENT6,
        40000,
        Flags::Ack,
        b"hi",
    );
    check(
        "IPv6 reply",
        h.run_on_b(&reply).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
}

/// The [`lb_common::NeighHandoff`] record XDP writes in front of a packet
/// for the neighbour path (tc + bpf_redirect_neigh): the BPF_PROG_TEST_RUN
/// output starts with the metadata.
fn handoff(ifindex: u32, nexthop: &str) -> Vec<u8> {
    let addr: std::net::Ipv4Addr = nexthop.parse().unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(&lb_common::NEIGH_HANDOFF_MAGIC.to_ne_bytes());
    out.extend_from_slice(&ifindex.to_ne_bytes());
    out.extend_from_slice(&2u32.to_ne_bytes()); // AF_INET
    out.extend_from_slice(&addr.octets());
    out.extend_from_slice(&[0; 12]);
    out
}

/// `record` followed by `frame`.
fn with_meta(record: Vec<u8>, frame: &[u8]) -> Vec<u8> {
    let mut out = record;
    out.extend_from_slice(frame);
    out
}

#[test]
fn nat_unresolved_next_hop_is_handed_to_the_neighbour_path() {
    let mut h = harness(&nat_conf("rr"));
    h.apply(&nat_conf("rr").replace(R2, "10.1.0.13")).unwrap();
    // rr: first R1, then 10.1.0.13 which has no neighbour entry.
    let first = tcp(Eth::inbound(), CLIENT, 41000, VIP, 80, Flags::Syn, b"");
    assert_eq!(h.run(&first).unwrap().0, XDP_REDIRECT);
    let second = tcp(Eth::inbound(), CLIENT, 41001, VIP, 80, Flags::Syn, b"");
    let rewritten = tcp(
        Eth::inbound(),
        CLIENT,
        41001,
        "10.1.0.13",
        8080,
        Flags::Syn,
        b"",
    );
    let want = with_meta(handoff(h.b.ifindex, "10.1.0.13"), &routed(&rewritten));
    check("no neighbour", h.run(&second).unwrap(), XDP_PASS, &want);
    let g = counters(&h);
    assert_eq!((g.pass_no_neigh, g.neigh_handoff), (1, 1));
}

/// Issue 15, input 1: the reply to a client address the director never
/// resolved (a second address of a client on its own subnet) is translated
/// and handed to the neighbour path, toward the client itself.
#[test]
fn nat_reply_to_an_unresolved_client_is_handed_to_the_neighbour_path() {
    let h = harness(&nat_conf("rr"));
    let client2 = "192.0.2.8";
    let syn = tcp(Eth::inbound(), client2, 42000, VIP, 80, Flags::Syn, b"");
    let want = tcp(eth(MAC_B, MAC1), client2, 42000, R1, 8080, Flags::Syn, b"");
    check(
        "SYN from 192.0.2.8",
        h.run(&syn).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
    let reply = tcp(
        eth(MAC1, MAC_B),
        R1,
        8080,
        client2,
        42000,
        Flags::Ack,
        b"hi",
    );
    let translated = tcp(eth(MAC1, MAC_B), VIP, 80, client2, 42000, Flags::Ack, b"hi");
    let want = with_meta(handoff(h.a.ifindex, client2), &routed(&translated));
    check(
        "reply to an unresolved client",
        h.run_on_b(&reply).unwrap(),
        XDP_PASS,
        &want,
    );
    let g = counters(&h);
    assert_eq!((g.pass_no_neigh, g.neigh_handoff, g.nat_reverse), (1, 1, 1));
    // Counted for the service's outgoing traffic like any translated reply.
    assert_eq!(h.dp.svc_stats_sum(0).unwrap().out_packets, 1);
}

/// The egress interface toward the real has no XDP program of ours (a
/// veth outside the devmap here): the packet is handed over with the FIB's next hop.
#[test]
fn nat_egress_without_xdp_is_handed_to_the_neighbour_path() {
    let h = harness(&nat_conf("rr").replace(R1, "10.9.0.5"));
    for args in [
        &[
            "link",
            "add",
            "lbtdummy",
            "type",
            "veth",
            "peer",
            "name",
            "lbtdummy-p",
        ][..],
        &["link", "set", "lbtdummy-p", "up"],
        &["link", "set", "lbtdummy", "up"],
        &["addr", "add", "10.9.0.1/24", "dev", "lbtdummy"],
        &[
            "neigh",
            "replace",
            "10.9.0.5",
            "lladdr",
            "02:00:00:00:09:05",
            "dev",
            "lbtdummy",
            "nud",
            "permanent",
        ],
    ] {
        let st = std::process::Command::new("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip {args:?}");
    }
    // SAFETY: a valid C string; the lookup is in this thread's namespace.
    let dummy = unsafe { libc::if_nametoindex(c"lbtdummy".as_ptr()) };
    assert_ne!(dummy, 0);
    let syn = tcp(Eth::inbound(), CLIENT, 43000, VIP, 80, Flags::Syn, b"");
    let rewritten = tcp(
        Eth::inbound(),
        CLIENT,
        43000,
        "10.9.0.5",
        8080,
        Flags::Syn,
        b"",
    );
    let want = with_meta(handoff(dummy, "10.9.0.5"), &routed(&rewritten));
    check("egress without XDP", h.run(&syn).unwrap(), XDP_PASS, &want);
    let g = counters(&h);
    assert_eq!((g.pass_no_devmap, g.neigh_handoff), (1, 1));
}

/// `frame` as a router forwards it: TTL / hop limit one less.
fn routed(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    decrement_ttl(&mut f);
    f
}

/// An IPIP / IPv6-in-IPv6 frame as TUN must emit it around `inner`, whose
/// TTL / hop limit the director decrements first, as ipvs does.
fn tun_sent(inner: &[u8], src: &str, dst: &str) -> Vec<u8> {
    encapsulated(&routed(inner), src, dst)
}

/// An IPIP / IPv6-in-IPv6 frame around `inner`, from the director (interface
/// b) to MAC1.
fn encapsulated(inner: &[u8], src: &str, dst: &str) -> Vec<u8> {
    let ip = &inner[14..];
    let mut out = Vec::new();
    out.extend_from_slice(&MAC1);
    out.extend_from_slice(&MAC_B);
    match (src.parse().unwrap(), dst.parse().unwrap()) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut h =
                Ipv4Header::new(ip.len() as u16, 64, IpNumber(4), s.octets(), d.octets()).unwrap();
            h.dscp = etherparse::Ipv4Dscp::try_new(ip[1] >> 2).unwrap();
            h.ecn = etherparse::Ipv4Ecn::try_new(ip[1] & 3).unwrap();
            h.header_checksum = h.calc_header_checksum();
            h.write(&mut out).unwrap();
        }
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            let h = Ipv6Header {
                traffic_class: (u16::from_be_bytes([ip[0], ip[1]]) >> 4) as u8,
                flow_label: Ipv6FlowLabel::try_new(
                    u32::from_be_bytes([0, ip[1], ip[2], ip[3]]) & 0xfffff,
                )
                .unwrap(),
                payload_length: ip.len() as u16,
                next_header: IpNumber(41),
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
            };
            h.write(&mut out).unwrap();
        }
        _ => unreachable!(),
    }
    out.extend_from_slice(ip);
    out
}

#[test]
fn tun_v4_and_v6_encapsulation_exact_bytes() {
    let h = harness(&tun_conf());
    let syn = tcp(Eth::inbound(), CLIENT, 40000, VIP, 80, Flags::Syn, b"");
    // Outer source: the director's address toward the real (10.1.0.1).
    let want = tun_sent(&syn, "10.1.0.1", R1);
    check("IPIP", h.run(&syn).unwrap(), XDP_REDIRECT, &want);
    let syn6 = tcp(Eth::inbound(), CLIENT6, 40000, VIP6, 80, Flags::Syn, b"");
    let want6 = tun_sent(&syn6, "2001:db8:1::1", R1_6);
    check("IPv6-in-IPv6", h.run(&syn6).unwrap(), XDP_REDIRECT, &want6);
    assert_eq!(counters(&h).encap, 2);
}

/// TUN toward a real whose neighbour is not resolved: encapsulated (the
/// received MACs kept) and handed to the neighbour path.
#[test]
fn tun_unresolved_real_is_handed_to_the_neighbour_path() {
    let h = harness(&tun_conf().replace(R1, "10.1.0.13"));
    let syn = tcp(Eth::inbound(), CLIENT, 40000, VIP, 80, Flags::Syn, b"");
    let mut frame = tun_sent(&syn, "10.1.0.1", "10.1.0.13");
    frame[..12].copy_from_slice(&syn[..12]);
    let want = with_meta(handoff(h.b.ifindex, "10.1.0.13"), &frame);
    check("TUN, no neighbour", h.run(&syn).unwrap(), XDP_PASS, &want);
    let g = counters(&h);
    assert_eq!((g.pass_no_neigh, g.neigh_handoff, g.encap), (1, 1, 1));
}

/// Ethernet padding of a short frame (bytes past the IP total length) is not
/// carried into the tunnel.
#[test]
fn tun_leaves_ethernet_padding_out_of_the_tunnel() {
    let h = harness(&tun_conf());
    let syn = tcp(Eth::inbound(), CLIENT, 40000, VIP, 80, Flags::Syn, b"");
    assert_eq!(syn.len(), 54);
    let mut padded = syn.clone();
    padded.extend_from_slice(&[0xee; 6]); // to the 60-byte Ethernet minimum
    let want = tun_sent(&syn, "10.1.0.1", R1);
    check("padded SYN", h.run(&padded).unwrap(), XDP_REDIRECT, &want);
}

/// An IPv4 header with a wrong checksum is not balanced and creates no
/// state: passed, so the kernel drops it (ip_rcv) as it does before ipvs.
#[test]
fn ipv4_header_checksum_wrong_is_passed_without_state() {
    let h = harness(&nat_conf("rr"));
    let mut bad = tcp(Eth::inbound(), CLIENT, 44000, VIP, 80, Flags::Syn, b"");
    bad[24] ^= 0x01; // header checksum, low byte
    check("bad IPv4 checksum", h.run(&bad).unwrap(), XDP_PASS, &bad);
    let g = counters(&h);
    assert_eq!((g.pass_bad_csum, g.new_flows), (1, 0));
    assert_eq!(h.dp.svc_stats_sum(0).unwrap().conns, 0);
    // The same packet with its checksum intact is balanced.
    let good = tcp(Eth::inbound(), CLIENT, 44000, VIP, 80, Flags::Syn, b"");
    assert_eq!(h.run(&good).unwrap().0, XDP_REDIRECT);
    assert_eq!(counters(&h).new_flows, 1);
}

/// IPv6 UDP with checksum 0 is invalid (RFC 8200 section 8.1): NAT drops it
/// with its reason instead of sending it on with a wrong non-zero checksum.
#[test]
fn nat_ipv6_udp_checksum_zero_is_dropped() {
    let conf = format!(
        "{}virtual_server {VIP6} 53 {{\n lb_algo rr\n lb_kind NAT\n protocol UDP\n \
         real_server {R1_6} 5353 {{ weight 1 }}\n}}\n",
        nat_conf("rr")
    );
    let h = harness(&conf);
    let mut dgram = udp(Eth::inbound(), CLIENT6, 5000, VIP6, 53, b"query");
    // UDP checksum: Ethernet 14 + IPv6 40 + 6.
    dgram[60] = 0;
    dgram[61] = 0;
    check(
        "IPv6 UDP checksum 0",
        h.run(&dgram).unwrap(),
        XDP_DROP,
        &routed(&dgram),
    );
    assert_eq!(counters(&h).drop_udp_zero_csum, 1);
    // With its checksum it is translated (the checksum recomputed in full matches).
    let ok = udp(Eth::inbound(), CLIENT6, 5000, VIP6, 53, b"query");
    let want = udp(eth(MAC_B, MAC1), CLIENT6, 5000, R1_6, 5353, b"query");
    check(
        "IPv6 UDP",
        h.run(&ok).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
}

#[test]
fn fib_without_forwarding_drops_and_says_why() {
    let h = harness(&tun_conf());
    std::process::Command::new("sysctl")
        .args([
            "-qw",
            "net.ipv4.conf.all.forwarding=0",
            "net.ipv4.conf.lbta.forwarding=0",
        ])
        .status()
        .unwrap();
    let syn = tcp(Eth::inbound(), CLIENT, 40000, VIP, 80, Flags::Syn, b"");
    // Dropped after the TTL was decremented (its bytes go nowhere).
    check(
        "forwarding off",
        h.run(&syn).unwrap(),
        XDP_DROP,
        &routed(&syn),
    );
    assert_eq!(counters(&h).drop_fwd_disabled, 1);
}

#[test]
fn tun_too_big_sends_fragmentation_needed_and_packet_too_big() {
    let h = harness(&tun_conf());
    // IPv6 first: an MTU below 1280 disables IPv6 on the link.
    h.set_mtu_b(1300).unwrap();
    let payload6 = vec![0x62u8; 1300];
    let big6 = tcp(
        Eth::inbound(),
        CLIENT6,
        40000,
        VIP6,
        80,
        Flags::Ack,
        &payload6,
    );
    let (v, out) = h.run(&big6).unwrap();
    assert_eq!(verdict_name(v), "XDP_TX", "{:?}", counters(&h));
    // ICMPv6 packet too big with MTU 1300 - 40 from the VIP, quoting the IPv6
    // header (hop limit decremented) and 64 bytes.
    let mut sent6 = big6.clone();
    decrement_ttl(&mut sent6);
    let quote = &sent6[14..14 + 40 + 64];
    let mut want = Vec::new();
    PacketBuilder::ethernet2(MAC_A, CLIENT_MAC)
        .ipv6(
            VIP6.parse::<std::net::Ipv6Addr>().unwrap().octets(),
            CLIENT6.parse::<std::net::Ipv6Addr>().unwrap().octets(),
            255,
        )
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1260 })
        .write(&mut want, quote)
        .unwrap();
    assert!(out == want, "too big v6\n{}", hex_diff(&out, &want));

    h.set_mtu_b(1000).unwrap();
    // 1040-byte IP packet, DF set (etherparse's default): 1060 > 1000 with the tunnel.
    let payload = vec![0x61u8; 1000];
    let big = tcp(Eth::inbound(), CLIENT, 40000, VIP, 80, Flags::Ack, &payload);
    let (v, out) = h.run(&big).unwrap();
    assert_eq!(verdict_name(v), "XDP_TX", "{:?}", counters(&h));
    // Expected: ICMP type 3 code 4, next-hop MTU 1000 - 20, from the VIP,
    // quoting the IP header (TTL decremented, as ipvs checks the MTU after
    // decrement_ttl) and 64 bytes of the packet.
    let mut sent = big.clone();
    decrement_ttl(&mut sent);
    let quote = &sent[14..14 + 20 + 64];
    let mut want = Vec::new();
    PacketBuilder::ethernet2(MAC_A, CLIENT_MAC)
        .ipv4([10, 0, 0, 100], [192, 0, 2, 7], 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 980 },
        ))
        .write(&mut want, quote)
        .unwrap();
    // The balancer's header: TOS 0xc0 (as the kernel's ICMP errors), DF clear.
    want[15] = 0xc0;
    want[20] = 0;
    let mut h4 = Ipv4Header::from_slice(&want[14..]).unwrap().0;
    h4.header_checksum = h4.calc_header_checksum();
    want[24..26].copy_from_slice(&h4.header_checksum.to_be_bytes());
    assert!(out == want, "too big v4\n{}", hex_diff(&out, &want));
    // Without DF the packet cannot be reported nor fragmented here: dropped, counted.
    let mut nodf = big.clone();
    nodf[20] = 0;
    let mut ih = Ipv4Header::from_slice(&nodf[14..]).unwrap().0;
    ih.header_checksum = ih.calc_header_checksum();
    nodf[24..26].copy_from_slice(&ih.header_checksum.to_be_bytes());
    assert_eq!(h.run(&nodf).unwrap().0, XDP_DROP);
    let g = counters(&h);
    assert_eq!((g.icmp_too_big_sent, g.drop_too_big), (2, 1));
}

/// Splits a UDP datagram to VIP:53 (from `sport`) into a first fragment
/// carrying the UDP header and `split` payload bytes, and the rest.
fn udp_fragments(sport: u16, id: u16, payload: &[u8], split: usize) -> (Vec<u8>, Vec<u8>) {
    let whole = udp(Eth::inbound(), CLIENT, sport, VIP, 53, payload);
    let l4 = &whole[14 + 20..];
    let cut = 8 + split;
    assert_eq!(cut % 8, 0);
    let frag = |data: &[u8], offset: usize, more: bool| {
        let mut h = Ipv4Header::new(
            data.len() as u16,
            64,
            IpNumber(17),
            [192, 0, 2, 7],
            [10, 0, 0, 100],
        )
        .unwrap();
        h.dont_fragment = false;
        h.more_fragments = more;
        h.identification = id;
        h.fragment_offset = etherparse::IpFragOffset::try_new((offset / 8) as u16).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut out = Vec::new();
        out.extend_from_slice(&MAC_A);
        out.extend_from_slice(&CLIENT_MAC);
        out.extend_from_slice(&0x0800u16.to_be_bytes());
        h.write(&mut out).unwrap();
        out.extend_from_slice(data);
        out
    };
    (frag(&l4[..cut], 0, true), frag(&l4[cut..], cut, false))
}

fn dr_conf() -> String {
    format!(
        "virtual_server {VIP} 53 {{\n lb_algo rr\n lb_kind DR\n protocol UDP\n \
         real_server {R1} 53 {{ weight 1 }}\n real_server {R2} 53 {{ weight 1 }}\n}}\n\
         virtual_server {VIP} 80 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n \
         real_server {R1} 80 {{ weight 1 }}\n real_server {R2} 80 {{ weight 1 }}\n}}\n\
         virtual_server {VIP6} 53 {{\n lb_algo rr\n lb_kind DR\n protocol UDP\n \
         real_server {R1_6} 53 {{ weight 1 }}\n real_server {R2_6} 53 {{ weight 1 }}\n}}\n\
         virtual_server {VIP6} 80 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n \
         real_server {R1_6} 80 {{ weight 1 }}\n real_server {R2_6} 80 {{ weight 1 }}\n}}\n"
    )
}

fn dr_harness() -> Harness {
    let mut h = Harness::new(4096).expect("harness");
    h.neighbour(R1, MAC1, false);
    h.neighbour(R2, MAC2, false);
    h.neighbour(R1_6, MAC1, false);
    h.neighbour(R2_6, MAC2, false);
    h.apply(&dr_conf()).expect("apply");
    h
}

#[test]
fn fragments_follow_the_first_one_in_and_out_of_order() {
    let h = dr_harness();
    let payload = vec![7u8; 64];
    // In order: first fragment scheduled (rr → R1), the rest follows it.
    let (first, rest) = udp_fragments(6000, 0x1111, &payload, 16);
    dr_sent(&h, "first fragment", &first, MAC1);
    dr_sent(&h, "later fragment", &rest, MAC1);
    // Second datagram from another port: rr → R2, fragments follow R2.
    let (first2, rest2) = udp_fragments(6001, 0x2222, &payload, 16);
    // Out of order: the later fragment first goes to the kernel (counted).
    check(
        "early later fragment",
        h.run(&rest2).unwrap(),
        XDP_PASS,
        &rest2,
    );
    dr_sent(&h, "first fragment 2", &first2, MAC2);
    dr_sent(&h, "later fragment 2", &rest2, MAC2);
    let g = counters(&h);
    assert_eq!((g.frag_first, g.frag_forwarded, g.pass_fragment), (2, 2, 1));
}

/// An IPv6 UDP datagram to VIP6:53 split after the UDP header and `split`
/// bytes: (first fragment, rest), fragment header directly after the IPv6 header.
fn udp6_fragments(sport: u16, id: u32, payload: &[u8], split: usize) -> (Vec<u8>, Vec<u8>) {
    let whole = udp(Eth::inbound(), CLIENT6, sport, VIP6, 53, payload);
    let l4 = &whole[14 + 40..];
    let cut = 8 + split;
    assert_eq!(cut % 8, 0);
    let frag = |data: &[u8], offset: usize, more: bool| {
        let mut out = Vec::new();
        out.extend_from_slice(&MAC_A);
        out.extend_from_slice(&CLIENT_MAC);
        out.extend_from_slice(&0x86ddu16.to_be_bytes());
        let h = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: (8 + data.len()) as u16,
            next_header: IpNumber(44),
            hop_limit: 64,
            source: CLIENT6.parse::<std::net::Ipv6Addr>().unwrap().octets(),
            destination: VIP6.parse::<std::net::Ipv6Addr>().unwrap().octets(),
        };
        h.write(&mut out).unwrap();
        let off_flags = ((offset / 8) as u16) << 3 | more as u16;
        out.extend_from_slice(&[17, 0]);
        out.extend_from_slice(&off_flags.to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(data);
        out
    };
    (frag(&l4[..cut], 0, true), frag(&l4[cut..], cut, false))
}

#[test]
fn ipv6_fragments_follow_the_first_one() {
    let h = dr_harness();
    let payload = vec![5u8; 64];
    // rr: the first datagram goes to R1, the second to R2; ids differ.
    let (first, rest) = udp6_fragments(7000, 0xabcdef01, &payload, 16);
    let (first2, rest2) = udp6_fragments(7001, 0xabcdef02, &payload, 16);
    check(
        "v6 later fragment first",
        h.run(&rest2).unwrap(),
        XDP_PASS,
        &rest2,
    );
    dr_sent(&h, "v6 first fragment", &first, MAC1);
    dr_sent(&h, "v6 first fragment 2", &first2, MAC2);
    dr_sent(&h, "v6 later fragment", &rest, MAC1);
    dr_sent(&h, "v6 later fragment 2", &rest2, MAC2);
    let g = counters(&h);
    assert_eq!((g.frag_first, g.frag_forwarded, g.pass_fragment), (2, 2, 1));
}

#[test]
fn icmpv6_packet_too_big_follows_its_flow() {
    let h = dr_harness();
    for p in [40000, 40001] {
        h.run(&tcp(Eth::inbound(), CLIENT6, p, VIP6, 80, Flags::Syn, b""))
            .unwrap();
    }
    let reply = tcp(
        Eth::inbound(),
        VIP6,
        80,
        CLIENT6,
        40001,
        Flags::Ack,
        b"data",
    );
    let mut err = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, MAC_A)
        .ipv6(
            "2001:db8:c::fe"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            VIP6.parse::<std::net::Ipv6Addr>().unwrap().octets(),
            64,
        )
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut err, &reply[14..14 + 48])
        .unwrap();
    dr_sent(&h, "ICMPv6 to R2", &err, MAC2);
    assert_eq!(counters(&h).icmp_forwarded, 1);
}

#[test]
fn nat_fragments_rewrite_the_address_only() {
    let h = harness(&nat_conf("rr"));
    let payload = vec![9u8; 64];
    let (first, rest) = udp_fragments(6000, 0x3333, &payload, 16);
    let (v, _) = h.run(&first).unwrap();
    assert_eq!(verdict_name(v), "XDP_REDIRECT");
    let (v, out) = h.run(&rest).unwrap();
    assert_eq!(verdict_name(v), "XDP_REDIRECT");
    // Expected: same fragment, destination R1, header checksum recomputed.
    let mut want = routed(&rest);
    want[..6].copy_from_slice(&MAC1);
    want[6..12].copy_from_slice(&MAC_B);
    want[14 + 16..14 + 20].copy_from_slice(&[10, 1, 0, 11]);
    let mut ih = Ipv4Header::from_slice(&want[14..]).unwrap().0;
    ih.header_checksum = ih.calc_header_checksum();
    want[24..26].copy_from_slice(&ih.header_checksum.to_be_bytes());
    assert!(out == want, "{}", hex_diff(&out, &want));
}

/// An ICMPv4 error from `from` (a router) to `to` quoting `quoted` (a frame).
fn icmp_error(
    e: Eth,
    from: [u8; 4],
    to: [u8; 4],
    ty: etherparse::Icmpv4Type,
    quoted: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(e.src, e.dst)
        .ipv4(from, to, 64)
        .icmpv4(ty)
        .write(&mut out, &quoted[14..14 + 28])
        .unwrap();
    out
}

fn frag_needed(mtu: u16) -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
    )
}

#[test]
fn icmp_errors_follow_their_flow_to_the_real() {
    let h = dr_harness();
    // Two flows: rr gives 40000 → R1, 40001 → R2.
    for p in [40000, 40001] {
        h.run(&tcp(Eth::inbound(), CLIENT, p, VIP, 80, Flags::Syn, b""))
            .unwrap();
    }
    // A router on the way back reports that the real's reply (VIP:80 →
    // client:40001) was too big: the error goes to R2, untouched otherwise.
    let reply = tcp(Eth::inbound(), VIP, 80, CLIENT, 40001, Flags::Ack, b"data");
    let err = icmp_error(
        Eth::inbound(),
        [192, 0, 2, 254],
        [10, 0, 0, 100],
        frag_needed(1400),
        &reply,
    );
    dr_sent(&h, "ICMP to R2", &err, MAC2);
    // About a flow nobody tracks: to the kernel.
    let other = tcp(Eth::inbound(), VIP, 80, CLIENT, 49999, Flags::Ack, b"data");
    let err2 = icmp_error(
        Eth::inbound(),
        [192, 0, 2, 254],
        [10, 0, 0, 100],
        frag_needed(1400),
        &other,
    );
    check("ICMP unknown flow", h.run(&err2).unwrap(), XDP_PASS, &err2);
    assert_eq!(counters(&h).icmp_forwarded, 1);
}

#[test]
fn icmp_errors_are_translated_for_nat() {
    let h = harness(&nat_conf("rr"));
    h.run(&tcp(
        Eth::inbound(),
        CLIENT,
        40000,
        VIP,
        80,
        Flags::Syn,
        b"",
    ))
    .unwrap();
    // From the client side: about the reply VIP:80 → client:40000.
    let reply = tcp(Eth::inbound(), VIP, 80, CLIENT, 40000, Flags::Ack, b"data");
    let err = icmp_error(
        Eth::inbound(),
        [192, 0, 2, 254],
        [10, 0, 0, 100],
        frag_needed(1400),
        &reply,
    );
    // Expected: outer destination R1, quoted source R1:8080 (the quote holds
    // the IP header and 8 bytes: ports and sequence number), checksums of
    // both IP headers and of the ICMP message right.
    let real_reply = tcp(Eth::inbound(), R1, 8080, CLIENT, 40000, Flags::Ack, b"data");
    let quoted = real_reply[14..14 + 28].to_vec();
    let mut want = Vec::new();
    PacketBuilder::ethernet2(MAC_B, MAC1)
        .ipv4([192, 0, 2, 254], [10, 1, 0, 11], 64)
        .icmpv4(frag_needed(1400))
        .write(&mut want, &quoted)
        .unwrap();
    check(
        "ICMP to NAT real",
        h.run(&err).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
    // From the real: port unreachable about client:40000 → R1:8080.
    let req = tcp(Eth::inbound(), CLIENT, 40000, R1, 8080, Flags::Ack, b"data");
    let unreach = etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::Port,
    );
    let err = icmp_error(
        eth(MAC1, MAC_B),
        [10, 1, 0, 11],
        [192, 0, 2, 7],
        unreach.clone(),
        &req,
    );
    let vreq = tcp(Eth::inbound(), CLIENT, 40000, VIP, 80, Flags::Ack, b"data");
    let quoted = vreq[14..14 + 28].to_vec();
    let mut want = Vec::new();
    PacketBuilder::ethernet2(MAC_A, CLIENT_MAC)
        .ipv4([10, 0, 0, 100], [192, 0, 2, 7], 64)
        .icmpv4(unreach)
        .write(&mut want, &quoted)
        .unwrap();
    check(
        "ICMP from NAT real",
        h.run_on_b(&err).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
    assert_eq!(counters(&h).icmp_forwarded, 2);
}

#[test]
fn icmpv6_errors_are_translated_for_nat() {
    let h = harness(&nat_conf("rr"));
    h.run(&tcp(
        Eth::inbound(),
        CLIENT6,
        40000,
        VIP6,
        80,
        Flags::Syn,
        b"",
    ))
    .unwrap();
    let v6 = |a: &str| a.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let router = "2001:db8:c::fe";
    // About the reply VIP6:80 → client: to the real, as if about its own reply.
    let reply = tcp(
        Eth::inbound(),
        VIP6,
        80,
        CLIENT6,
        40000,
        Flags::Ack,
        b"data",
    );
    let mut err = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, MAC_A)
        .ipv6(v6(router), v6(VIP6), 64)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut err, &reply[14..14 + 48])
        .unwrap();
    let real_reply = tcp(
        Eth::inbound(),
        R1_6,
        8080,
        CLIENT6,
        40000,
        Flags::Ack,
        b"data",
    );
    let mut want = Vec::new();
    PacketBuilder::ethernet2(MAC_B, MAC1)
        .ipv6(v6(router), v6(R1_6), 64)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut want, &real_reply[14..14 + 48])
        .unwrap();
    check(
        "ICMPv6 to NAT real",
        h.run(&err).unwrap(),
        XDP_REDIRECT,
        &routed(&want),
    );
}

#[test]
fn decap_strips_tunnels_to_configured_vips_only() {
    enter_private_netns().unwrap();
    let ebpf = lb_user::decap::load(&[VIP.parse().unwrap(), VIP6.parse().unwrap()]).expect("decap");
    let prog: &aya::programs::Xdp = ebpf
        .program(lb_user::decap::PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    let run = |p: &[u8]| run_xdp(prog, p, 1, 1).map(|(v, o, _)| (v, o)).unwrap();
    let inner = tcp(Eth::inbound(), CLIENT, 40000, VIP, 80, Flags::Syn, b"");
    let outer = encapsulated(&inner, "10.1.0.1", R1);
    let mut want = inner.clone();
    want[..12].copy_from_slice(&outer[..12]);
    check("IPIP to VIP", run(&outer), XDP_PASS, &want);
    let inner6 = tcp(Eth::inbound(), CLIENT6, 40000, VIP6, 80, Flags::Syn, b"");
    let outer6 = encapsulated(&inner6, "2001:db8:1::1", R1_6);
    let mut want6 = inner6.clone();
    want6[..12].copy_from_slice(&outer6[..12]);
    check("IPv6-in-IPv6 to VIP", run(&outer6), XDP_PASS, &want6);
    // Another inner destination, and plain traffic: untouched.
    let other = encapsulated(
        &tcp(Eth::inbound(), CLIENT, 1, "10.0.0.99", 80, Flags::Syn, b""),
        "10.1.0.1",
        R1,
    );
    check("IPIP to another address", run(&other), XDP_PASS, &other);
    check("plain TCP", run(&inner), XDP_PASS, &inner);
    // Truncated tunnel packets never crash or get stripped.
    for n in 14..outer.len() {
        check(
            &format!("IPIP truncated to {n}"),
            run(&outer[..n]),
            XDP_PASS,
            &outer[..n],
        );
    }
    let s = lb_user::decap::stats(&ebpf).unwrap();
    assert_eq!((s.decapsulated, s.pass_not_vip), (2, 1));
}

/// Every packet is counted once, with one reason for each pass and each drop
/// (the harness checks every run), and every output keeps valid checksums
/// and lengths: the fuzz library (`lb_testkit::fuzz`, also run by `cargo
/// xtask fuzz` with millions of frames) on a few thousand deterministic
/// mutations of seeds for DR, NAT both ways, TUN, ICMP errors, fragments,
/// too-big replies and traffic not for a VIP.
#[test]
fn mutated_packets_are_each_counted_once() {
    let h = fuzz::harness(4096).expect("harness");
    let sum = fuzz::run(&h, 4000, 0x9e37_79b9_7f4a_7c15, |_| {}).expect("fuzz run");
    assert_eq!(sum.failed(), 0, "{}", sum.report());
    let g = counters(&h);
    assert_eq!(g.pass + g.tx + g.redirect + g.drop + g.aborted, sum.frames);
    assert_eq!(g.aborted, 0);
    // The inputs and their mutations take many paths.
    let kinds = [
        g.pass_not_vip,
        g.pass_malformed,
        g.pass_other_proto,
        g.pass_fragment,
        g.drop_unroutable,
        g.nat_reverse,
        g.frag_forwarded,
        g.encap,
        g.icmp_too_big_sent,
        g.pass_bad_csum,
    ];
    assert!(kinds.iter().all(|&n| n > 0), "{g:?}");
}

/// `frame` (untagged or one 802.1Q tag) with TTL / hop limit `ttl`, IPv4
/// header checksum recomputed.
fn with_ttl(frame: &[u8], ttl: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    set_ttl(&mut f, ttl);
    f
}

/// The director's own IPv4 ICMP error header as the kernel's: TOS 0xc0,
/// DF clear, checksum recomputed (IP header at `l3` of `frame`).
fn as_director_sends(frame: &mut [u8], l3: usize) {
    frame[l3 + 1] = 0xc0;
    frame[l3 + 6] = 0;
    let mut h = Ipv4Header::from_slice(&frame[l3..]).unwrap().0;
    h.header_checksum = h.calc_header_checksum();
    frame[l3 + 10..l3 + 12].copy_from_slice(&h.header_checksum.to_be_bytes());
}

/// ICMP time exceeded from the VIP to the client about `orig` (untagged,
/// from [`Eth::inbound`]), quoting its IP header and 8 bytes (RFC 792).
fn time_exceeded(orig: &[u8]) -> Vec<u8> {
    let mut want = Vec::new();
    if orig[14] >> 4 == 4 {
        PacketBuilder::ethernet2(MAC_A, CLIENT_MAC)
            .ipv4([10, 0, 0, 100], [192, 0, 2, 7], 64)
            .icmpv4(etherparse::Icmpv4Type::TimeExceeded(
                etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
            ))
            .write(&mut want, &orig[14..14 + 20 + 8])
            .unwrap();
        as_director_sends(&mut want, 14);
    } else {
        PacketBuilder::ethernet2(MAC_A, CLIENT_MAC)
            .ipv6(
                VIP6.parse::<std::net::Ipv6Addr>().unwrap().octets(),
                CLIENT6.parse::<std::net::Ipv6Addr>().unwrap().octets(),
                255,
            )
            .icmpv6(etherparse::Icmpv6Type::TimeExceeded(
                etherparse::icmpv6::TimeExceededCode::HopLimitExceeded,
            ))
            .write(&mut want, &orig[14..14 + 40 + 8])
            .unwrap();
    }
    want
}

/// NAT and TUN are router paths, and ipvs decrements the TTL on DR too: a
/// packet arriving with TTL / hop limit 1 (or 0) is not forwarded; the
/// client gets an ICMP time exceeded from the VIP (RFC 792 type 11 code 0,
/// RFC 4443 type 3 code 0). With 2 it leaves with 1.
#[test]
fn ttl_one_gets_time_exceeded_on_every_method() {
    let h = harness(&nat_conf("rr"));
    for (what, ttl) in [("NAT TTL 1", 1), ("NAT TTL 0", 0)] {
        let syn = with_ttl(
            &tcp(Eth::inbound(), CLIENT, 45000, VIP, 80, Flags::Syn, b""),
            ttl,
        );
        check(what, h.run(&syn).unwrap(), XDP_TX, &time_exceeded(&syn));
    }
    let syn6 = with_ttl(
        &tcp(Eth::inbound(), CLIENT6, 45000, VIP6, 80, Flags::Syn, b""),
        1,
    );
    check(
        "NAT hop limit 1",
        h.run(&syn6).unwrap(),
        XDP_TX,
        &time_exceeded(&syn6),
    );
    // TTL 2: forwarded with 1.
    let syn = with_ttl(
        &tcp(Eth::inbound(), CLIENT, 45001, VIP, 80, Flags::Syn, b""),
        2,
    );
    let want = with_ttl(
        &tcp(eth(MAC_B, MAC2), CLIENT, 45001, R2, 8080, Flags::Syn, b""),
        1,
    );
    check("NAT TTL 2", h.run(&syn).unwrap(), XDP_REDIRECT, &want);
    assert_eq!(counters(&h).icmp_time_exceeded_sent, 3);

    let t = harness(&tun_conf());
    let syn = with_ttl(
        &tcp(Eth::inbound(), CLIENT, 45002, VIP, 80, Flags::Syn, b""),
        1,
    );
    check(
        "TUN TTL 1",
        t.run(&syn).unwrap(),
        XDP_TX,
        &time_exceeded(&syn),
    );

    let d = dr_harness();
    let syn = with_ttl(
        &tcp(Eth::inbound(), CLIENT, 45003, VIP, 80, Flags::Syn, b""),
        1,
    );
    check(
        "DR TTL 1",
        d.run(&syn).unwrap(),
        XDP_TX,
        &time_exceeded(&syn),
    );
}

/// No ICMP error about an ICMP error, and none toward a NAT real (its
/// reply with TTL 1 is dropped with the reason).
#[test]
fn ttl_one_without_an_error_is_dropped_with_its_reason() {
    let h = harness(&nat_conf("rr"));
    let syn = tcp(Eth::inbound(), CLIENT, 46000, VIP, 80, Flags::Syn, b"");
    assert_eq!(h.run(&syn).unwrap().0, XDP_REDIRECT);
    let reply = with_ttl(
        &tcp(eth(MAC1, MAC_B), R1, 8080, CLIENT, 46000, Flags::Ack, b"hi"),
        1,
    );
    check(
        "NAT reply TTL 1",
        h.run_on_b(&reply).unwrap(),
        XDP_DROP,
        &reply,
    );
    let quoted = tcp(
        eth(MAC_A, CLIENT_MAC),
        VIP,
        80,
        CLIENT,
        46000,
        Flags::Ack,
        b"",
    );
    let err = with_ttl(
        &icmp_error(
            Eth::inbound(),
            [192, 0, 2, 7],
            [10, 0, 0, 100],
            frag_needed(1400),
            &quoted,
        ),
        1,
    );
    check("ICMP error TTL 1", h.run(&err).unwrap(), XDP_DROP, &err);
    let g = counters(&h);
    assert_eq!((g.drop_ttl, g.icmp_time_exceeded_sent), (2, 0));
}

/// PMTU discovery for a client on a VLAN: the too-big error goes back with
/// the client's 802.1Q tag.
#[test]
fn too_big_to_a_tagged_client_keeps_the_tag() {
    let h = harness(&tun_conf());
    h.set_mtu_b(1000).unwrap();
    let tagged = Eth {
        vlan: Some(42),
        ..Eth::inbound()
    };
    let big = tcp(tagged, CLIENT, 40000, VIP, 80, Flags::Ack, &[0x61u8; 1000]);
    let (v, out) = h.run(&big).unwrap();
    assert_eq!(verdict_name(v), "XDP_TX", "{:?}", counters(&h));
    // Quoted as it would have been sent: TTL already decremented.
    let mut sent = big.clone();
    decrement_ttl(&mut sent);
    let mut want = Vec::new();
    PacketBuilder::ethernet2(MAC_A, CLIENT_MAC)
        .single_vlan(etherparse::VlanId::try_new(42).unwrap())
        .ipv4([10, 0, 0, 100], [192, 0, 2, 7], 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 980 },
        ))
        .write(&mut want, &sent[18..18 + 20 + 64])
        .unwrap();
    as_director_sends(&mut want, 18);
    assert!(out == want, "too big, tagged\n{}", hex_diff(&out, &want));
}

/// A tagged client's packet redirected to another interface leaves without
/// the client's VLAN tag (DR and NAT); out of the ingress interface it
/// keeps it.
#[test]
fn redirect_to_another_interface_removes_the_vlan_tag() {
    let tagged = Eth {
        vlan: Some(42),
        ..Eth::inbound()
    };
    let h = harness(&nat_conf("rr"));
    let syn = tcp(tagged, CLIENT, 47000, VIP, 80, Flags::Syn, b"");
    let want = with_ttl(
        &tcp(eth(MAC_B, MAC1), CLIENT, 47000, R1, 8080, Flags::Syn, b""),
        63,
    );
    check("NAT, tagged", h.run(&syn).unwrap(), XDP_REDIRECT, &want);

    let mut d = Harness::new(4096).expect("harness");
    d.neighbour(R1, MAC1, true);
    d.neighbour(R2, MAC2, false);
    d.apply(&format!(
        "virtual_server {VIP} 80 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n \
         real_server {R1} 80 {{ weight 1 }}\n real_server {R2} 80 {{ weight 1 }}\n}}\n"
    ))
    .unwrap();
    // rr: R1 behind interface b (untagged there), then R2 behind a (tag kept).
    let syn = tcp(tagged, CLIENT, 47001, VIP, 80, Flags::Syn, b"");
    let untagged = tcp(Eth::inbound(), CLIENT, 47001, VIP, 80, Flags::Syn, b"");
    check(
        "DR via b, tagged",
        d.run(&syn).unwrap(),
        XDP_REDIRECT,
        &dr_rewrite(&untagged, MAC1, MAC_B),
    );
    let syn = tcp(tagged, CLIENT, 47002, VIP, 80, Flags::Syn, b"");
    check(
        "DR via a, tagged",
        d.run(&syn).unwrap(),
        XDP_TX,
        &dr_rewrite(&syn, MAC2, MAC_A),
    );
}

/// Frames to a broadcast or multicast MAC are not balanced (ipvs takes only
/// PACKET_HOST frames): passed untouched, with their reason, no state.
#[test]
fn broadcast_and_multicast_frames_are_passed() {
    let h = harness(&nat_conf("rr"));
    for (what, mac) in [
        ("broadcast", [0xff; 6]),
        ("IPv4 multicast MAC", [0x01, 0x00, 0x5e, 0, 0, 1]),
        ("IPv6 multicast MAC", [0x33, 0x33, 0, 0, 0, 1]),
    ] {
        let p = tcp(
            eth(CLIENT_MAC, mac),
            CLIENT,
            48000,
            VIP,
            80,
            Flags::Syn,
            b"",
        );
        check(what, h.run(&p).unwrap(), XDP_PASS, &p);
    }
    // A broadcast that is not IP (an ARP request) is counted as not IP.
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    check("ARP broadcast", h.run(&arp).unwrap(), XDP_PASS, &arp);
    let g = counters(&h);
    assert_eq!((g.pass_not_unicast, g.pass_not_ip, g.new_flows), (3, 1, 0));
}

/// issue 15, input 4: a frame to another host's unicast MAC (a NIC in
/// promiscuous mode, a bridge port) is not balanced: passed untouched with
/// its reason, no flow made. Frames to this host's MACs (the interface's,
/// a VRRP VMAC on it) are balanced as before.
#[test]
fn frames_to_another_hosts_mac_are_passed() {
    const VMAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x33];
    const OTHER: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x01];
    // A SYN to the VIP from client port `port`, sent to `mac`.
    let syn_to =
        |mac: [u8; 6], port: u16| tcp(eth(CLIENT_MAC, mac), CLIENT, port, VIP, 80, Flags::Syn, b"");
    let mut h = harness(&nat_conf("rr"));
    h.dp.set_host_macs(&[MAC_A, VMAC]).unwrap();
    let other = syn_to(OTHER, 48100);
    check("to another host", h.run(&other).unwrap(), XDP_PASS, &other);
    let g = counters(&h);
    assert_eq!((g.pass_other_host, g.new_flows), (1, 0), "{g:?}");
    assert!(h.dp.conntrack.keys().next().is_none(), "a flow was made");
    // An interface MAC one bit away is another host's too.
    let near = syn_to([0x02, 0, 0, 0, 0, 0xa0], 48101);
    check("near miss", h.run(&near).unwrap(), XDP_PASS, &near);
    for (what, mac, port) in [("interface MAC", MAC_A, 48102), ("VMAC", VMAC, 48103)] {
        let (v, _) = h.run(&syn_to(mac, port)).unwrap();
        assert_eq!(
            verdict_name(v),
            "XDP_REDIRECT",
            "{what}: {:?}",
            counters(&h)
        );
    }
    let g = counters(&h);
    assert_eq!((g.pass_other_host, g.new_flows), (2, 2), "{g:?}");
    // No set written (no agent): every destination is balanced, as before.
    h.dp.set_host_macs(&[]).unwrap();
    assert_eq!(
        verdict_name(h.run(&syn_to(OTHER, 48104)).unwrap().0),
        "XDP_REDIRECT"
    );
    // More MACs than the data plane compares: the check is off, and it says so.
    let many: Vec<[u8; 6]> = (0..40u8).map(|i| [0x02, 0x77, 0, 0, 0, i]).collect();
    assert!(h.dp.set_host_macs(&many).is_err());
    assert_eq!(
        verdict_name(h.run(&syn_to(OTHER, 48105)).unwrap().0),
        "XDP_REDIRECT"
    );
    assert_eq!(counters(&h).pass_other_host, 2);
}

/// A NAT packet too big for the egress MTU, in either direction, is
/// answered with "fragmentation needed" quoting the packet as it was sent
/// (the sender matches the error by the addresses it used; the translated
/// packet handed to the kernel was lost: a reply's source is the VIP, a
/// martian there). A reply without DF is dropped and counted; a request
/// without DF is still passed for the kernel's router to fragment.
#[test]
fn nat_too_big_answers_the_sender_with_the_packet_it_sent() {
    let h = harness(&nat_conf("rr"));
    h.set_mtu_b(1000).unwrap();
    let payload = vec![0x61u8; 1000];
    // Client → VIP, 1040 bytes with DF (etherparse's default), real side MTU 1000.
    let big = tcp(Eth::inbound(), CLIENT, 40000, VIP, 80, Flags::Ack, &payload);
    let (v, out) = h.run(&big).unwrap();
    assert_eq!(verdict_name(v), "XDP_TX", "{:?}", counters(&h));
    let mut sent = big.clone();
    decrement_ttl(&mut sent);
    let want = icmp_error_v4(
        (MAC_A, CLIENT_MAC),
        ([10, 0, 0, 100], [192, 0, 2, 7]),
        frag_needed(1000),
        &sent[14..14 + 20 + 64],
    );
    assert!(out == want, "request too big\n{}", hex_diff(&out, &want));
    // The same without DF: rewritten for the real and passed (the kernel fragments).
    let mut nodf = big.clone();
    nodf[20] = 0;
    fix_ipv4_checksum(&mut nodf, 14);
    assert_eq!(verdict_name(h.run(&nodf).unwrap().0), "XDP_PASS");

    // The real's reply, too big for the client side (MTU 1000 on a).
    std::process::Command::new("ip")
        .args(["link", "set", "lbta", "mtu", "1000"])
        .status()
        .unwrap();
    let reply = tcp(
        eth(MAC1, MAC_B),
        R1,
        8080,
        CLIENT,
        40000,
        Flags::Ack,
        &payload,
    );
    let (v, out) = h.run_on_b(&reply).unwrap();
    assert_eq!(verdict_name(v), "XDP_TX", "{:?}", counters(&h));
    let mut sent = reply.clone();
    decrement_ttl(&mut sent);
    // Back to the real, from the address its packet was sent to.
    let want = icmp_error_v4(
        (MAC_B, MAC1),
        ([192, 0, 2, 7], [10, 1, 0, 11]),
        frag_needed(1000),
        &sent[14..14 + 20 + 64],
    );
    assert!(out == want, "reply too big\n{}", hex_diff(&out, &want));
    let mut nodf = reply.clone();
    nodf[20] = 0;
    fix_ipv4_checksum(&mut nodf, 14);
    assert_eq!(verdict_name(h.run_on_b(&nodf).unwrap().0), "XDP_DROP");
    let g = counters(&h);
    assert_eq!(
        (g.icmp_too_big_sent, g.drop_too_big, g.pass_no_neigh),
        (2, 1, 1),
        "{g:?}"
    );
}

/// An ICMPv4 error as the balancer builds it: `macs` (source, destination),
/// `addrs` (source, destination), TTL 64, TOS 0xc0, DF clear, quoting `quote`.
fn icmp_error_v4(
    macs: ([u8; 6], [u8; 6]),
    addrs: ([u8; 4], [u8; 4]),
    ty: etherparse::Icmpv4Type,
    quote: &[u8],
) -> Vec<u8> {
    let mut want = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(addrs.0, addrs.1, 64)
        .icmpv4(ty)
        .write(&mut want, quote)
        .unwrap();
    want[15] = 0xc0;
    want[20] = 0;
    fix_ipv4_checksum(&mut want, 14);
    want
}
