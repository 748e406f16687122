//! Fuzzing the data plane through BPF_PROG_TEST_RUN: seed frames for every
//! forwarding path (DR v4/v6 TCP/UDP, NAT both ways v4/v6, TUN v4/v6, ICMP
//! errors, fragments, too-big replies, traffic not for a VIP), mutated at
//! random (bits flipped, bytes overwritten, frames cut short or padded,
//! wholly random frames), each run checked by [`check_output`]:
//!
//! - the verdict is one of XDP_PASS / DROP / TX / REDIRECT, never ABORTED;
//! - the run was counted once, with one reason per pass and per drop
//!   ([`crate::check_counted`] on the counters before and after each run);
//! - every frame that leaves (TX, REDIRECT, or a PASS that changed the frame)
//!   is IP, every IP length fits the frame, an added tunnel header has a
//!   valid checksum and the exact length of what it carries, and each
//!   checksum that was valid on input (IPv4 header, TCP / UDP / ICMPv6 with
//!   their pseudo-header, ICMPv4, the IPv4 header quoted in an ICMP error)
//!   is valid on output, and each that was wrong stays wrong (an incremental
//!   update, RFC 1624, must not launder a corrupt packet); a reply the
//!   program built itself (too-big) must be valid throughout.
//!
//! Shared by the test `mutated_packets_are_each_counted_once` (a few
//! thousand frames) and `cargo xtask fuzz` (millions, binary `lb-fuzz`).

use std::{collections::BTreeMap, fmt::Write as _};

use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder};

use crate::{
    tcp, udp, verdict_name, Eth, Flags, Harness, CLIENT_MAC, MAC_A, MAC_B, XDP_ABORTED, XDP_DROP,
    XDP_PASS, XDP_REDIRECT, XDP_TX,
};

const VIP: &str = "10.0.0.100";
const VIP6: &str = "2001:db8::100";
const CLIENT: &str = "192.0.2.7";
const CLIENT6: &str = "2001:db8:c::7";
const R1: &str = "10.1.0.11";
const R2: &str = "10.1.0.12";
const R1_6: &str = "2001:db8:1::11";
const R2_6: &str = "2001:db8:1::12";
/// DR reals, on the clients' segment (interface a).
const DR_REAL: &str = "10.0.0.11";
const DR_REAL6: &str = "2001:db8::11";
const MAC1: [u8; 6] = [0x02, 0x11, 0, 0, 0, 0x11];
const MAC2: [u8; 6] = [0x02, 0x12, 0, 0, 0, 0x12];
/// MTU of interface b (the reals' side): TUN packets above it get a too-big reply.
const MTU_B: u32 = 1280;

/// The services every fuzz run balances (keepalived.conf).
fn conf() -> String {
    format!(
        "virtual_server {VIP} 8000 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n \
         real_server {DR_REAL} 8000 {{ weight 1 }}\n}}\n\
         virtual_server {VIP} 5300 {{\n lb_algo rr\n lb_kind DR\n protocol UDP\n \
         real_server {DR_REAL} 5300 {{ weight 1 }}\n}}\n\
         virtual_server {VIP6} 8000 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n \
         real_server {DR_REAL6} 8000 {{ weight 1 }}\n}}\n\
         virtual_server {VIP} 80 {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n \
         real_server {R1} 8080 {{ weight 1 }}\n}}\n\
         virtual_server {VIP} 53 {{\n lb_algo rr\n lb_kind NAT\n protocol UDP\n \
         real_server {R1} 5353 {{ weight 1 }}\n}}\n\
         virtual_server {VIP} 54 {{\n lb_algo rr\n lb_kind NAT\n protocol UDP\n \
         real_server 10.9.9.9 54 {{ weight 1 }}\n}}\n\
         virtual_server {VIP6} 80 {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n \
         real_server {R1_6} 8080 {{ weight 1 }}\n}}\n\
         virtual_server {VIP} 443 {{\n lb_algo rr\n lb_kind TUN\n protocol TCP\n \
         real_server {R2} 443 {{ weight 1 }}\n}}\n\
         virtual_server {VIP6} 443 {{\n lb_algo rr\n lb_kind TUN\n protocol TCP\n \
         real_server {R2_6} 443 {{ weight 1 }}\n}}\n"
    )
}

/// A seed frame: the path it exercises, the interface it arrives on
/// (`false`: a, the clients'; `true`: b, the reals') and the verdict the
/// unchanged frame must get.
#[derive(Clone, Debug)]
pub struct Seed {
    pub path: &'static str,
    pub frame: Vec<u8>,
    pub on_b: bool,
    pub verdict: u32,
}

fn eth(src: [u8; 6], dst: [u8; 6]) -> Eth {
    Eth {
        src,
        dst,
        vlan: None,
    }
}

fn v4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>()
        .expect("test address")
        .octets()
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>()
        .expect("test address")
        .octets()
}

/// An ICMPv4 error from `from` to `to` quoting the first 28 IP bytes of `quoted`.
fn icmp4_error(e: Eth, from: &str, to: &str, quoted: &[u8]) -> Vec<u8> {
    let ty = etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
    );
    let mut out = Vec::new();
    PacketBuilder::ethernet2(e.src, e.dst)
        .ipv4(v4(from), v4(to), 64)
        .icmpv4(ty)
        .write(&mut out, &quoted[14..14 + 28])
        .expect("icmp error");
    out
}

/// An ICMPv6 packet-too-big from `from` to `to` quoting 48 IP bytes of `quoted`.
fn icmp6_error(e: Eth, from: &str, to: &str, quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(e.src, e.dst)
        .ipv6(v6(from), v6(to), 64)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut out, &quoted[14..14 + 48])
        .expect("icmpv6 error");
    out
}

/// A UDP datagram from the client to `VIP:dport` cut into two IPv4
/// fragments after the UDP header and 16 payload bytes.
fn udp4_fragments(dport: u16) -> (Vec<u8>, Vec<u8>) {
    let whole = udp(Eth::inbound(), CLIENT, 6000, VIP, dport, &[9u8; 64]);
    let l4 = &whole[14 + 20..];
    let cut = 24;
    let frag = |data: &[u8], offset: usize, more: bool| {
        let mut h = Ipv4Header::new(data.len() as u16, 64, IpNumber(17), v4(CLIENT), v4(VIP))
            .expect("header");
        h.dont_fragment = false;
        h.more_fragments = more;
        h.identification = 0x4242;
        h.fragment_offset = etherparse::IpFragOffset::try_new((offset / 8) as u16).expect("offset");
        h.header_checksum = h.calc_header_checksum();
        let mut out = Vec::new();
        out.extend_from_slice(&MAC_A);
        out.extend_from_slice(&CLIENT_MAC);
        out.extend_from_slice(&0x0800u16.to_be_bytes());
        h.write(&mut out).expect("write");
        out.extend_from_slice(data);
        out
    };
    (frag(&l4[..cut], 0, true), frag(&l4[cut..], cut, false))
}

/// The same for IPv6 (fragment header right after the fixed header), to VIP6:8000 over TCP.
fn tcp6_fragments() -> (Vec<u8>, Vec<u8>) {
    let whole = tcp(
        Eth::inbound(),
        CLIENT6,
        6001,
        VIP6,
        8000,
        Flags::Ack,
        &[5u8; 64],
    );
    let l4 = &whole[14 + 40..];
    let cut = 40;
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
            source: v6(CLIENT6),
            destination: v6(VIP6),
        };
        h.write(&mut out).expect("write");
        let off_flags = ((offset / 8) as u16) << 3 | u16::from(more);
        out.extend_from_slice(&[6, 0]);
        out.extend_from_slice(&off_flags.to_be_bytes());
        out.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
        out.extend_from_slice(data);
        out
    };
    (frag(&l4[..cut], 0, true), frag(&l4[cut..], cut, false))
}

/// Seed frames for every path, in an order that sets up the state later
/// ones need (a NAT reply after the connection it belongs to).
pub fn seeds() -> Vec<Seed> {
    let s = |path, frame, on_b, verdict| Seed {
        path,
        frame,
        on_b,
        verdict,
    };
    let i = Eth::inbound;
    let from_real = eth(MAC1, MAC_B);
    let nat_reply = tcp(from_real, R1, 8080, CLIENT, 40000, Flags::Ack, b"hi");
    let nat_reply6 = tcp(from_real, R1_6, 8080, CLIENT6, 40000, Flags::Ack, b"hi");
    // What the client received from the VIP, quoted back by a router.
    let to_client = tcp(
        eth(MAC_A, CLIENT_MAC),
        VIP,
        80,
        CLIENT,
        40000,
        Flags::Ack,
        b"",
    );
    let to_client6 = tcp(
        eth(MAC_A, CLIENT_MAC),
        VIP6,
        80,
        CLIENT6,
        40000,
        Flags::Ack,
        &[0u8; 8],
    );
    // What the real received from the client (after DNAT), quoted back by the real.
    let to_real = tcp(i(), CLIENT, 40000, R1, 8080, Flags::Ack, b"data");
    let (f4a, f4b) = udp4_fragments(5300);
    let (f6a, f6b) = tcp6_fragments();
    let mut tagged = i();
    tagged.vlan = Some(7);
    vec![
        s(
            "dr-tcp4",
            tcp(i(), CLIENT, 41000, VIP, 8000, Flags::Syn, b""),
            false,
            XDP_TX,
        ),
        s(
            "dr-tcp4",
            tcp(i(), CLIENT, 41000, VIP, 8000, Flags::Ack, b"data"),
            false,
            XDP_TX,
        ),
        s(
            "dr-tcp4-vlan",
            tcp(tagged, CLIENT, 41001, VIP, 8000, Flags::Syn, b""),
            false,
            XDP_TX,
        ),
        s(
            "dr-udp4",
            udp(i(), CLIENT, 41002, VIP, 5300, b"query"),
            false,
            XDP_TX,
        ),
        s(
            "dr-tcp6",
            tcp(i(), CLIENT6, 41003, VIP6, 8000, Flags::Syn, b""),
            false,
            XDP_TX,
        ),
        s(
            "nat-tcp4-in",
            tcp(i(), CLIENT, 40000, VIP, 80, Flags::Syn, b""),
            false,
            XDP_REDIRECT,
        ),
        s(
            "nat-tcp4-in",
            tcp(i(), CLIENT, 40000, VIP, 80, Flags::Ack, b"GET /"),
            false,
            XDP_REDIRECT,
        ),
        s("nat-tcp4-out", nat_reply.clone(), true, XDP_REDIRECT),
        s(
            "nat-udp4-in",
            udp(i(), CLIENT, 40001, VIP, 53, b"query"),
            false,
            XDP_REDIRECT,
        ),
        s(
            "nat-udp4-out",
            udp(from_real, R1, 5353, CLIENT, 40001, b"answer"),
            true,
            XDP_REDIRECT,
        ),
        s(
            "nat-udp4-no-route",
            udp(i(), CLIENT, 40002, VIP, 54, b"query"),
            false,
            XDP_DROP,
        ),
        s(
            "nat-tcp6-in",
            tcp(i(), CLIENT6, 40000, VIP6, 80, Flags::Syn, b""),
            false,
            XDP_REDIRECT,
        ),
        s("nat-tcp6-out", nat_reply6, true, XDP_REDIRECT),
        s(
            "tun4",
            tcp(i(), CLIENT, 40003, VIP, 443, Flags::Syn, b""),
            false,
            XDP_REDIRECT,
        ),
        s(
            "tun6",
            tcp(i(), CLIENT6, 40004, VIP6, 443, Flags::Syn, b""),
            false,
            XDP_REDIRECT,
        ),
        s(
            "tun4-too-big",
            tcp(i(), CLIENT, 40003, VIP, 443, Flags::Ack, &[1u8; 1400]),
            false,
            XDP_TX,
        ),
        s(
            "tun6-too-big",
            tcp(i(), CLIENT6, 40004, VIP6, 443, Flags::Ack, &[1u8; 1400]),
            false,
            XDP_TX,
        ),
        s(
            "icmp4-error-nat",
            icmp4_error(i(), "192.0.2.1", VIP, &to_client),
            false,
            XDP_REDIRECT,
        ),
        s(
            "icmp4-error-from-real",
            icmp4_error(from_real, R1, CLIENT, &to_real),
            true,
            XDP_REDIRECT,
        ),
        s(
            "icmp6-error-nat",
            icmp6_error(i(), "2001:db8:c::1", VIP6, &to_client6),
            false,
            XDP_REDIRECT,
        ),
        s("frag4", f4a, false, XDP_TX),
        s("frag4", f4b, false, XDP_TX),
        s("frag6", f6a, false, XDP_TX),
        s("frag6", f6b, false, XDP_TX),
        s(
            "not-vip",
            tcp(i(), CLIENT, 40005, "10.0.0.1", 80, Flags::Syn, b""),
            false,
            XDP_PASS,
        ),
        s(
            "not-vip6",
            udp(i(), CLIENT6, 40006, "2001:db8::1", 53, b"q"),
            false,
            XDP_PASS,
        ),
    ]
}

/// Builds the harness every fuzz run uses: routes and neighbours for NAT and
/// TUN, DR reals on interface a, interface b's MTU at [`MTU_B`], the
/// services of [`conf`]; `flows` conntrack entries.
pub fn harness(flows: u32) -> anyhow::Result<Harness> {
    let mut h = Harness::new(flows)?;
    h.routed(MAC1, MAC2)?;
    h.neighbour(DR_REAL, MAC1, false);
    h.neighbour(DR_REAL6, MAC1, false);
    h.apply(&conf())?;
    h.set_mtu_b(MTU_B)?;
    Ok(h)
}

/// xorshift64: deterministic, so a failing seed reproduces.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// How a frame was made from its seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutation {
    Unchanged,
    BitFlips,
    ByteWrites,
    Truncated,
    FlippedAndTruncated,
    Padded,
    Random,
}

/// A frame derived from `seed` by one [`Mutation`].
pub fn mutate(rng: &mut Rng, seed: &[u8]) -> (Mutation, Vec<u8>) {
    let mut p = seed.to_vec();
    // Header bytes get most mutations: that is where the parser decides.
    let hot = |rng: &mut Rng, len: usize| rng.below(len.min(96));
    let m = match rng.below(16) {
        0 => Mutation::Unchanged,
        1..=4 => {
            for _ in 0..1 + rng.below(3) {
                let at = hot(rng, p.len());
                p[at] ^= 1 << rng.below(8);
            }
            Mutation::BitFlips
        }
        5..=7 => {
            for _ in 0..1 + rng.below(4) {
                let at = hot(rng, p.len());
                p[at] = rng.next_u64() as u8;
            }
            Mutation::ByteWrites
        }
        8..=9 => {
            p.truncate(14 + rng.below(p.len() - 13));
            Mutation::Truncated
        }
        10..=11 => {
            let at = hot(rng, p.len());
            p[at] ^= 1 << rng.below(8);
            p.truncate(14 + rng.below(p.len() - 13));
            Mutation::FlippedAndTruncated
        }
        12..=13 => {
            let n = 1 + rng.below(64);
            p.extend((0..n).map(|_| rng.next_u64() as u8));
            Mutation::Padded
        }
        _ => {
            // Random bytes behind a plausible Ethernet header.
            let n = 14 + rng.below(200);
            p = (0..n).map(|_| rng.next_u64() as u8).collect();
            p[..6].copy_from_slice(&MAC_A);
            let et: u16 = match rng.below(4) {
                0 => 0x0800,
                1 => 0x86dd,
                2 => 0x8100,
                _ => rng.next_u64() as u16,
            };
            p[12..14].copy_from_slice(&et.to_be_bytes());
            if et == 0x0800 && p.len() > 14 {
                p[14] = 0x45;
            } else if et == 0x86dd && p.len() > 14 {
                p[14] = 0x60;
            }
            Mutation::Random
        }
    };
    // Half the header mutants get a valid IPv4 header checksum again: else
    // nearly every one stops at the checksum check (pass_bad_csum) and the
    // paths behind it see few mutants.
    if matches!(m, Mutation::BitFlips | Mutation::ByteWrites)
        && rng.below(2) == 0
        && p.len() >= 34
        && p[12..14] == [0x08, 0x00]
        && p[14] == 0x45
    {
        crate::fix_ipv4_checksum(&mut p, 14);
    }
    (m, p)
}

// ---------------------------------------------------------------------------
// Checking one output.

/// One IP header found in a frame.
#[derive(Clone, Debug)]
struct Ip {
    v6: bool,
    /// Offset of the end of the packet by its length field.
    declared_end: usize,
    /// The packet's length by its length field (header included).
    len: usize,
    /// IPv4 header checksum valid (None for IPv6).
    hdr_ok: Option<bool>,
    /// A fragment (IPv4 MF / offset, IPv6 fragment header).
    fragment: bool,
}

/// What [`view`] finds in a frame.
#[derive(Clone, Debug)]
struct View {
    /// Outermost first; more than one for IPIP / IPv6-in-IPv6.
    ips: Vec<Ip>,
    /// Transport protocol of the innermost packet.
    proto: u8,
    /// Transport checksum valid (None: not computable, e.g. a fragment or
    /// a frame shorter than the IP length).
    l4_ok: Option<bool>,
    /// Header checksum of an IPv4 header quoted by an ICMP error.
    quoted_hdr_ok: Option<bool>,
}

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

/// Ones'-complement sum of `data` added to `acc` (not folded).
fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// A checksum over `acc` verifies when the folded sum is all ones.
fn verifies(acc: u64) -> bool {
    fold(acc) == 0xffff
}

/// Parses Ethernet (up to two VLAN tags), IPv4 / IPv6 (hop-by-hop, routing,
/// destination-options and fragment headers, IPIP and IPv6 tunnels up to
/// two deep) and computes the validity of every checksum it can.
fn view(p: &[u8]) -> Option<View> {
    if p.len() < 14 {
        return None;
    }
    let mut off = 12;
    let mut et = be16(p, off);
    for _ in 0..2 {
        if (et == 0x8100 || et == 0x88a8) && p.len() >= off + 6 {
            off += 4;
            et = be16(p, off);
        }
    }
    off += 2;
    let mut version = match et {
        0x0800 => 4,
        0x86dd => 6,
        _ => return None,
    };
    let mut ips = Vec::new();
    let mut end_limit = p.len();
    for _depth in 0..3 {
        let (ip, proto, l4_off, pseudo) = match version {
            4 => {
                if p.len() < off + 20 || p[off] >> 4 != 4 {
                    return None;
                }
                let ihl = usize::from(p[off] & 15) * 4;
                if ihl < 20 || p.len() < off + ihl {
                    return None;
                }
                let total = usize::from(be16(p, off + 2));
                let frag = be16(p, off + 6);
                let ip = Ip {
                    v6: false,
                    declared_end: off + total,
                    len: total,
                    hdr_ok: Some(verifies(sum(0, &p[off..off + ihl]))),
                    fragment: frag & 0x3fff != 0,
                };
                let proto = p[off + 9];
                let mut pseudo = sum(0, &p[off + 12..off + 20]);
                pseudo += u64::from(proto);
                (ip, proto, off + ihl, (pseudo, total.saturating_sub(ihl)))
            }
            _ => {
                if p.len() < off + 40 || p[off] >> 4 != 6 {
                    return None;
                }
                let plen = usize::from(be16(p, off + 4));
                let mut next = p[off + 6];
                let mut at = off + 40;
                let mut fragment = false;
                for _ in 0..4 {
                    match next {
                        0 | 43 | 60 if p.len() >= at + 8 => {
                            next = p[at];
                            at += (usize::from(p[at + 1]) + 1) * 8;
                        }
                        44 if p.len() >= at + 8 => {
                            next = p[at];
                            fragment = true;
                            at += 8;
                        }
                        _ => break,
                    }
                }
                let ip = Ip {
                    v6: true,
                    declared_end: off + 40 + plen,
                    len: 40 + plen,
                    hdr_ok: None,
                    fragment,
                };
                let l4_len = (off + 40 + plen).saturating_sub(at);
                let mut pseudo = sum(0, &p[off + 8..off + 40]);
                pseudo += u64::from(next) + l4_len as u64;
                (ip, next, at, (pseudo, l4_len))
            }
        };
        let declared_end = ip.declared_end;
        let fragment = ip.fragment;
        let is_v6 = ip.v6;
        ips.push(ip);
        let inner_version = if proto == 4 { 4 } else { 6 };
        let inner_hlen = if proto == 4 { 20 } else { 40 };
        if matches!(proto, 4 | 41)
            && !fragment
            && declared_end <= end_limit
            && p.len() >= l4_off + inner_hlen
            && p[l4_off] >> 4 == inner_version
        {
            version = inner_version;
            off = l4_off;
            end_limit = declared_end;
            continue;
        }
        let end = declared_end;
        let computable = !fragment && end <= p.len() && l4_off <= end;
        let seg = if computable { &p[l4_off..end] } else { &[][..] };
        let (pseudo_sum, l4_len) = pseudo;
        let pseudo_sum = if is_v6 {
            pseudo_sum
        } else {
            pseudo_sum + l4_len as u64
        };
        let l4_ok = match proto {
            6 if computable && seg.len() >= 20 => Some(verifies(sum(pseudo_sum, seg))),
            // IPv4 UDP checksum 0: none was computed (RFC 768), and stays so.
            17 if computable && seg.len() >= 8 && !is_v6 && be16(seg, 6) == 0 => Some(true),
            17 if computable && seg.len() >= 8 => Some(verifies(sum(pseudo_sum, seg))),
            1 if computable && seg.len() >= 8 && !is_v6 => Some(verifies(sum(0, seg))),
            58 if computable && seg.len() >= 8 && is_v6 => Some(verifies(sum(pseudo_sum, seg))),
            _ => None,
        };
        // An ICMPv4 error quoting an IPv4 header (destination unreachable,
        // source quench, redirect, time exceeded, parameter problem).
        let quoted_hdr_ok = match proto {
            1 if !is_v6 && !fragment && p.len() >= l4_off + 28 => {
                let q = l4_off + 8;
                let ty = p[l4_off];
                let ihl = usize::from(p[q] & 15) * 4;
                if matches!(ty, 3 | 4 | 5 | 11 | 12)
                    && p[q] >> 4 == 4
                    && ihl >= 20
                    && p.len() >= q + ihl
                {
                    Some(verifies(sum(0, &p[q..q + ihl])))
                } else {
                    None
                }
            }
            _ => None,
        };
        return Some(View {
            ips,
            proto,
            l4_ok,
            quoted_hdr_ok,
        });
    }
    None
}

/// Why an output was wrong.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Failure {
    /// A short, stable name of the kind of failure (the summary groups by it).
    pub kind: &'static str,
    pub detail: String,
}

fn fail(kind: &'static str, detail: impl Into<String>) -> Result<(), Failure> {
    Err(Failure {
        kind,
        detail: detail.into(),
    })
}

/// Checks one run: `input` got `verdict` and left as `output` (see the
/// module documentation for the rules).
pub fn check_output(input: &[u8], verdict: u32, output: &[u8]) -> Result<(), Failure> {
    // A packet handed to the neighbour path carries lb's metadata record in
    // front of the frame (BPF_PROG_TEST_RUN returns it with the data): the
    // record must be whole and sane, and the frame behind it is checked as
    // any other output.
    let meta = size_of::<lb_common::NeighHandoff>();
    if verdict == XDP_PASS
        && output.len() >= meta
        && u32::from_ne_bytes(output[..4].try_into().unwrap()) == lb_common::NEIGH_HANDOFF_MAGIC
    {
        let word = |i: usize| u32::from_ne_bytes(output[i..i + 4].try_into().unwrap());
        let (ifindex, family) = (word(4), word(8));
        if ifindex == 0 || !(family == 2 || family == 10) {
            return fail(
                "neigh-meta",
                format!("neighbour hand-off record with ifindex {ifindex}, family {family}"),
            );
        }
        return check_output(input, verdict, &output[meta..]);
    }
    match verdict {
        XDP_ABORTED => return fail("aborted", "XDP_ABORTED"),
        XDP_DROP => return Ok(()),
        XDP_PASS if output == input => return Ok(()),
        XDP_PASS | XDP_TX | XDP_REDIRECT => {}
        v => return fail("verdict", format!("unknown verdict {v}")),
    }
    let what = verdict_name(verdict);
    let Some(out) = view(output) else {
        return fail("non-ip-out", format!("{what} of a frame that is not IP"));
    };
    for ip in &out.ips {
        if ip.declared_end > output.len() {
            return fail(
                "ip-length",
                format!(
                    "{what}: IP length ends at {} beyond the frame's {} bytes",
                    ip.declared_end,
                    output.len()
                ),
            );
        }
    }
    let Some(inp) = view(input) else {
        return fail("non-ip-in", format!("{what} of an input that is not IP"));
    };
    let added = out.ips.len().saturating_sub(inp.ips.len());
    for w in 0..added {
        let (outer, inner) = (&out.ips[w], &out.ips[w + 1]);
        if outer.hdr_ok == Some(false) {
            return fail(
                "tunnel-checksum",
                format!("{what}: outer IPv4 header checksum"),
            );
        }
        if outer.declared_end != inner.declared_end {
            return fail(
                "tunnel-length",
                format!(
                    "{what}: tunnel header covers {} bytes past the inner packet's end",
                    outer.declared_end as i64 - inner.declared_end as i64
                ),
            );
        }
    }
    let o = out.ips.last().expect("one IP header at least");
    let same =
        Some(&inp).filter(|i| i.proto == out.proto && i.ips.last().map(|x| x.v6) == Some(o.v6));
    match same {
        Some(i) => {
            let ii = i.ips.last().expect("one IP header at least");
            if ii.hdr_ok != o.hdr_ok {
                return fail(
                    "ipv4-checksum",
                    format!(
                        "{what}: IPv4 header checksum valid {:?} on input, {:?} on output",
                        ii.hdr_ok, o.hdr_ok
                    ),
                );
            }
            if ii.len != o.len {
                return fail(
                    "ip-length",
                    format!("{what}: IP packet of {} bytes left with {}", ii.len, o.len),
                );
            }
            if let (Some(a), Some(b)) = (i.l4_ok, out.l4_ok) {
                if a != b {
                    return fail(
                        "l4-checksum",
                        format!(
                            "{what}: protocol {} checksum valid {a} on input, {b} on output",
                            out.proto
                        ),
                    );
                }
            }
            if i.l4_ok.is_some() && out.l4_ok.is_none() && !o.fragment {
                return fail("l4-length", format!("{what}: transport segment cut short"));
            }
            if let (Some(a), Some(b)) = (i.quoted_hdr_ok, out.quoted_hdr_ok) {
                if a != b {
                    return fail(
                        "quoted-checksum",
                        format!(
                            "{what}: quoted IPv4 header checksum valid {a} on input, {b} on output"
                        ),
                    );
                }
            }
        }
        None => {
            // A packet the program built (a too-big reply): valid throughout.
            if o.hdr_ok == Some(false) {
                return fail(
                    "reply-checksum",
                    format!("{what}: built reply's IPv4 header checksum"),
                );
            }
            if out.l4_ok != Some(true) {
                return fail(
                    "reply-checksum",
                    format!(
                        "{what}: built reply's protocol {} checksum {:?}",
                        out.proto, out.l4_ok
                    ),
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// A run.

/// The result of a fuzz run.
#[derive(Default, Debug)]
pub struct Summary {
    pub frames: u64,
    /// Frames per verdict name.
    pub verdicts: BTreeMap<&'static str, u64>,
    /// Frames per seed path, then per verdict name.
    pub paths: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// Frames per mutation.
    pub mutations: BTreeMap<Mutation, u64>,
    /// Failures per kind: count and the first failing frame (with its path,
    /// mutation, interface and detail).
    pub failures: BTreeMap<&'static str, (u64, String)>,
    /// The global counters after the run (field name, value), nonzero only.
    pub counters: Vec<(&'static str, u64)>,
}

impl Summary {
    pub fn failed(&self) -> u64 {
        self.failures.values().map(|(n, _)| n).sum()
    }

    fn record(&mut self, kind: &'static str, first: impl FnOnce() -> String) {
        let e = self.failures.entry(kind).or_insert_with(|| (0, first()));
        e.0 += 1;
    }

    /// The human-readable report `cargo xtask fuzz` prints.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "frames: {}", self.frames);
        let _ = writeln!(s, "verdicts:");
        for (v, n) in &self.verdicts {
            let _ = writeln!(s, "  {v:<14} {n:>12}");
        }
        let _ = writeln!(s, "mutations:");
        for (m, n) in &self.mutations {
            let _ = writeln!(s, "  {:<22} {n:>12}", format!("{m:?}"));
        }
        let _ = writeln!(s, "paths (frames derived from each seed, by verdict):");
        for (p, vs) in &self.paths {
            let total: u64 = vs.values().sum();
            let by: Vec<String> = vs.iter().map(|(v, n)| format!("{v} {n}")).collect();
            let _ = writeln!(s, "  {p:<22} {total:>10}  {}", by.join(", "));
        }
        let _ = writeln!(s, "data-plane counters:");
        for (c, n) in &self.counters {
            let _ = writeln!(s, "  {c:<24} {n:>12}");
        }
        if self.failures.is_empty() {
            let _ = writeln!(s, "failures: 0");
        } else {
            let _ = writeln!(s, "failures: {}", self.failed());
            for (k, (n, first)) in &self.failures {
                let _ = writeln!(s, "  {k}: {n}\n    first: {first}");
            }
        }
        s
    }
}

fn hex(p: &[u8]) -> String {
    p.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `frames` frames (the seeds first, unchanged, then mutations) through
/// `h`'s balancer, checking every run; `progress` is called every 2^20 frames.
pub fn run(
    h: &Harness,
    frames: u64,
    seed: u64,
    mut progress: impl FnMut(&Summary),
) -> anyhow::Result<Summary> {
    let seeds = seeds();
    let mut rng = Rng::new(seed);
    let mut sum = Summary::default();
    // The counters after the previous run are the next one's "before": one
    // read of the per-CPU counters per frame.
    let mut before = h.dp.global_sum()?;
    for i in 0..frames {
        let (si, mutation, frame, on_b) = if (i as usize) < seeds.len() {
            let s = &seeds[i as usize];
            (i as usize, Mutation::Unchanged, s.frame.clone(), s.on_b)
        } else {
            let si = rng.below(seeds.len());
            let (m, f) = mutate(&mut rng, &seeds[si].frame);
            // Mostly the seed's own interface; sometimes the other one.
            let on_b = seeds[si].on_b ^ (rng.below(8) == 0);
            (si, m, f, on_b)
        };
        let seed = &seeds[si];
        let r = h.run_raw(&frame, on_b).and_then(|(v, out)| {
            let after = h.dp.global_sum()?;
            let counted = crate::check_counted(&before, &after, 1, v);
            before = after;
            counted.map(|()| (v, out))
        });
        sum.frames += 1;
        *sum.mutations.entry(mutation).or_default() += 1;
        let first = |detail: &str| {
            format!(
                "path {} ({mutation:?}, on {}): {detail}\n    frame: {}",
                seed.path,
                if on_b { "b" } else { "a" },
                hex(&frame)
            )
        };
        let (verdict, out) = match r {
            Ok(r) => r,
            Err(e) => {
                let d = format!("{e:#}");
                let kind = if d.contains("counted") {
                    "counters"
                } else {
                    "test-run"
                };
                sum.record(kind, || first(&d));
                continue;
            }
        };
        let vn = verdict_name(verdict);
        *sum.verdicts.entry(vn).or_default() += 1;
        *sum.paths
            .entry(seed.path)
            .or_default()
            .entry(vn)
            .or_default() += 1;
        if (i as usize) < seeds.len() && verdict != seed.verdict {
            let d = format!(
                "unchanged seed got {vn}, expected {}",
                verdict_name(seed.verdict)
            );
            sum.record("seed-verdict", || first(&d));
        }
        if let Err(f) = check_output(&frame, verdict, &out) {
            sum.record(f.kind, || {
                format!("{}\n    output: {}", first(&f.detail), hex(&out))
            });
        }
        if (i + 1) % (1 << 20) == 0 {
            progress(&sum);
        }
    }
    let g = h.dp.global_sum()?;
    sum.counters = lb_common::GlobalStats::FIELDS
        .iter()
        .zip(g.values())
        .filter(|(_, v)| *v != 0)
        .map(|((n, _), v)| (*n, v))
        .collect();
    let counted: u64 = ["pass", "tx", "redirect", "drop", "aborted"]
        .iter()
        .filter_map(|n| sum.counters.iter().find(|(c, _)| c == n).map(|(_, v)| v))
        .sum();
    let ran: u64 = sum.verdicts.values().sum();
    if counted != ran {
        let d = format!("{ran} runs, {counted} counted by the data plane");
        sum.record("counters", || d);
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_have_valid_checksums_and_pass_the_output_check_unchanged() {
        for s in seeds() {
            let v = view(&s.frame).unwrap_or_else(|| panic!("{}: not IP", s.path));
            let ip = v.ips.last().unwrap();
            assert_ne!(ip.hdr_ok, Some(false), "{}", s.path);
            if !ip.fragment {
                assert_eq!(v.l4_ok, Some(true), "{}", s.path);
            }
            check_output(&s.frame, XDP_TX, &s.frame).unwrap();
        }
    }

    #[test]
    fn a_corrupted_checksum_on_output_fails() {
        let s = &seeds()[0].frame;
        let mut out = s.clone();
        // Destination port changed without the checksum.
        out[14 + 20 + 3] ^= 1;
        assert_eq!(
            check_output(s, XDP_TX, &out).unwrap_err().kind,
            "l4-checksum"
        );
        let mut out = s.clone();
        out[14 + 8] -= 1; // TTL without the header checksum
        assert_eq!(
            check_output(s, XDP_TX, &out).unwrap_err().kind,
            "ipv4-checksum"
        );
        assert_eq!(
            check_output(s, XDP_ABORTED, &[]).unwrap_err().kind,
            "aborted"
        );
        // A tunnel header one byte too long (padding carried inside).
        let inner = &s[14..];
        let mut t = s[..14].to_vec();
        let mut h =
            Ipv4Header::new(inner.len() as u16 + 1, 64, IpNumber(4), [1; 4], [2; 4]).unwrap();
        h.header_checksum = h.calc_header_checksum();
        h.write(&mut t).unwrap();
        t.extend_from_slice(inner);
        t.push(0);
        assert_eq!(
            check_output(s, XDP_TX, &t).unwrap_err().kind,
            "tunnel-length"
        );
    }

    #[test]
    fn mutations_are_deterministic_and_keep_an_ethernet_header() {
        let s = &seeds()[0].frame;
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let (ma, fa) = mutate(&mut a, s);
            assert_eq!((ma, &fa), {
                let (mb, fb) = mutate(&mut b, s);
                (mb, &fb.clone())
            });
            assert!(fa.len() >= 14);
        }
    }
}
