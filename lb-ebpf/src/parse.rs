//! Header parsing, with packet access through the bounds-checked helpers of
//! packet.rs.
//!
//! Parsing reads packet memory only. A packet the balancer does not handle is
//! reported as a [`Skip`] reason and passed to the kernel untouched.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use crate::packet::{
    frame_len, ingress_ifindex, read_addr, read_u16_raw, read_u32_raw, read_u8, OutOfBounds,
};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
const FRAG_HLEN: usize = 8;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
pub const ICMP_HLEN: usize = 8;
/// IPv6 next-header values that are extension headers (hop-by-hop, routing,
/// fragment, ESP, AH, destination options, mobility, HIP, shim6).
const IPV6_EXT: [u8; 9] = [0, 43, 44, 50, 51, 60, 135, 139, 140];
const IPV6_FRAG: u8 = 44;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Why a packet is not handled by the balancer (it is passed to the kernel).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NotIp,
    OtherProto,
    IpOptions,
    Malformed,
    /// IPv4 header checksum wrong: the kernel's ip_rcv drops it (and counts
    /// it in InCsumErrors) before routing, hence before ipvs; passed so it
    /// does, without state here.
    BadChecksum,
    /// Ethernet destination broadcast or multicast: the kernel marks it
    /// PACKET_BROADCAST / PACKET_MULTICAST and ipvs leaves anything not
    /// PACKET_HOST alone (`ip_vs_in_hook`).
    NotUnicast,
}

/// A header that ends past the frame is malformed.
impl From<OutOfBounds> for Skip {
    #[inline(always)]
    fn from(_: OutOfBounds) -> Self {
        Skip::Malformed
    }
}

/// A TCP / UDP packet (whole, or the first fragment of a datagram).
pub const KIND_L4: u8 = 0;
/// A later fragment: no transport header, ports are 0.
pub const KIND_FRAG: u8 = 1;
/// An ICMP / ICMPv6 error quoting a TCP / UDP packet. The addresses and
/// ports describe the flow the quoted packet answers: source = the quoted
/// destination, and so on (see [`Packet::inner_l3`]).
pub const KIND_ICMP: u8 = 2;

/// What the forwarding path needs to know about a packet.
pub struct Packet {
    pub kind: u8,
    pub family: u8,
    /// Transport protocol (of the quoted packet for [`KIND_ICMP`]).
    pub proto: u8,
    /// IPv4 MF set or IPv6 fragment header with M set, offset 0.
    pub first_frag: bool,
    /// Source and destination addresses, network order (IPv4 in word 0).
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    /// TCP flags (0 for UDP, fragments and ICMP).
    pub tcp_flags: u8,
    /// Frame length as received.
    pub len: u32,
    /// Offset of the (outer) IP header.
    pub l3: usize,
    /// Offset of the transport (or ICMP) header; unused for [`KIND_FRAG`].
    pub l4: usize,
    /// Offset of the quoted IP header ([`KIND_ICMP`] only).
    pub inner_l3: usize,
    /// IP packet length (header + payload) from the IP header.
    pub ip_len: usize,
    /// Fragment identification (fragments only).
    pub frag_id: u32,
    /// Interface the packet arrived on (read once: see
    /// [`ingress_ifindex`](crate::packet::ingress_ifindex)).
    pub ingress: u32,
}

/// Offset of the IP header (after at most one 802.1Q tag) and the ethertype.
#[inline(always)]
pub fn l3_of(ctx: &XdpContext) -> Result<(usize, u16), Skip> {
    let mut ethertype = u16::from_be(read_u16_raw(ctx, 12).map_err(|_| Skip::NotIp)?);
    if ethertype == ETH_P_8021Q {
        ethertype = u16::from_be(read_u16_raw(ctx, 16).map_err(|_| Skip::NotIp)?);
        return Ok((ETH_HLEN + 4, ethertype));
    }
    Ok((ETH_HLEN, ethertype))
}

/// Parses Ethernet (with at most one 802.1Q tag), IPv4 / IPv6 and the TCP / UDP
/// ports, fragments, and ICMP errors quoting TCP / UDP, into `out` (the
/// balancer keeps it in a per-CPU map: the BPF stack is 512 bytes for the
/// whole call chain).
#[inline(always)]
pub fn parse(ctx: &XdpContext, out: &mut Packet) -> Result<(), Skip> {
    match parse_into(ctx, out) {
        0 => Ok(()),
        1 => Err(Skip::NotIp),
        2 => Err(Skip::OtherProto),
        3 => Err(Skip::IpOptions),
        5 => Err(Skip::BadChecksum),
        6 => Err(Skip::NotUnicast),
        _ => Err(Skip::Malformed),
    }
}

/// [`parse`] as a function of its own in the object, so that its stack is
/// not part of the forwarding call chain. Only plain types cross the call:
/// bpf-linker emits BTF the kernel rejects for Rust enums in a signature.
#[inline(never)]
fn parse_into(ctx: &XdpContext, out: &mut Packet) -> u32 {
    match parse_inline(ctx, out) {
        Ok(()) => 0,
        Err(Skip::NotIp) => 1,
        Err(Skip::OtherProto) => 2,
        Err(Skip::IpOptions) => 3,
        Err(Skip::Malformed) => 4,
        Err(Skip::BadChecksum) => 5,
        Err(Skip::NotUnicast) => 6,
    }
}

#[inline(always)]
fn parse_inline(ctx: &XdpContext, p: &mut Packet) -> Result<(), Skip> {
    // Written field by field into the caller's (per-CPU map) memory: no
    // packet-sized copies.
    p.ingress = ingress_ifindex(ctx);
    p.len = frame_len(ctx) as u32;
    p.kind = KIND_L4;
    p.first_frag = false;
    p.sport_be = 0;
    p.dport_be = 0;
    p.tcp_flags = 0;
    p.inner_l3 = 0;
    p.frag_id = 0;
    let (l3, ethertype) = l3_of(ctx)?;
    // Not IP (ARP's broadcasts among them) is counted as such first.
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return Err(Skip::NotIp);
    }
    // Group bit of the destination MAC (IEEE 802): broadcast or multicast.
    // Read as 16 bits: a 1-byte read at offset 0 compiles to a `data >=
    // data_end` test the verifier learns no packet range from.
    let dst_first = read_u16_raw(ctx, 0).map_err(|_| Skip::NotIp)?;
    if dst_first.to_ne_bytes()[0] & 1 != 0 {
        return Err(Skip::NotUnicast);
    }
    p.l3 = l3;
    match ethertype {
        ETH_P_IP => parse_v4(ctx, p),
        ETH_P_IPV6 => parse_v6(ctx, p),
        _ => Err(Skip::NotIp),
    }
}

/// Checks an IPv4 header without options at `l3`: (total length, protocol).
#[inline(always)]
pub fn ipv4_header(ctx: &XdpContext, l3: usize) -> Result<(usize, u8), Skip> {
    let vihl = read_u8(ctx, l3)?;
    if vihl >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let ihl = (vihl & 0x0f) as usize;
    if ihl < 5 {
        return Err(Skip::Malformed);
    }
    if ihl > 5 {
        return Err(Skip::IpOptions);
    }
    let tot_len = u16::from_be(read_u16_raw(ctx, l3 + 2)?) as usize;
    if tot_len < IPV4_HLEN {
        return Err(Skip::Malformed);
    }
    Ok((tot_len, read_u8(ctx, l3 + 9)?))
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, p: &mut Packet) -> Result<(), Skip> {
    let l3 = p.l3;
    let avail = frame_len(ctx);
    if l3 + IPV4_HLEN > avail {
        return Err(Skip::Malformed);
    }
    let (tot_len, proto) = ipv4_header(ctx, l3)?;
    if l3 + tot_len > avail {
        return Err(Skip::Malformed);
    }
    ipv4_checksum_ok(ctx, l3)?;
    let frag = u16::from_be(read_u16_raw(ctx, l3 + 6)?);
    let more = frag & 0x2000 != 0;
    let offset = frag & 0x1fff;
    p.family = FAMILY_V4;
    p.proto = proto;
    p.first_frag = more && offset == 0;
    p.src = [read_u32_raw(ctx, l3 + 12)?, 0, 0, 0];
    p.dst = [read_u32_raw(ctx, l3 + 16)?, 0, 0, 0];
    p.l4 = l3 + IPV4_HLEN;
    p.ip_len = tot_len;
    if more || offset != 0 {
        p.frag_id = u16::from_be(read_u16_raw(ctx, l3 + 4)?) as u32;
    }
    if offset != 0 {
        if proto != PROTO_TCP && proto != PROTO_UDP {
            return Err(Skip::OtherProto);
        }
        p.kind = KIND_FRAG;
        return Ok(());
    }
    if proto == PROTO_ICMP && !p.first_frag {
        return icmp_error(ctx, p, tot_len - IPV4_HLEN);
    }
    let (s, d, f) = parse_l4(ctx, proto, p.l4, tot_len - IPV4_HLEN, p.first_frag)?;
    p.sport_be = s;
    p.dport_be = d;
    p.tcp_flags = f;
    Ok(())
}

/// The 20-byte IPv4 header at `l3` sums to 0xffff (RFC 791, RFC 1071), as
/// ip_rcv_core checks with ip_fast_csum.
#[inline(always)]
fn ipv4_checksum_ok(ctx: &XdpContext, l3: usize) -> Result<(), Skip> {
    let mut s = 0u64;
    let mut i = 0;
    while i < IPV4_HLEN / 4 {
        s += read_u32_raw(ctx, l3 + i * 4)? as u64;
        i += 1;
    }
    if crate::csum::fold(s) != 0xffff {
        return Err(Skip::BadChecksum);
    }
    Ok(())
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, p: &mut Packet) -> Result<(), Skip> {
    let l3 = p.l3;
    let avail = frame_len(ctx);
    if l3 + IPV6_HLEN > avail {
        return Err(Skip::Malformed);
    }
    if read_u8(ctx, l3)? >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let payload = u16::from_be(read_u16_raw(ctx, l3 + 4)?) as usize;
    if l3 + IPV6_HLEN + payload > avail {
        return Err(Skip::Malformed);
    }
    p.family = FAMILY_V6;
    p.proto = read_u8(ctx, l3 + 6)?;
    p.src = read_addr(ctx, l3 + 8, FAMILY_V6)?;
    p.dst = read_addr(ctx, l3 + 24, FAMILY_V6)?;
    p.l4 = l3 + IPV6_HLEN;
    p.ip_len = IPV6_HLEN + payload;
    let mut l4_len = payload;
    if p.proto == IPV6_FRAG {
        // Only a fragment header directly after the fixed header is handled.
        if l4_len < FRAG_HLEN {
            return Err(Skip::Malformed);
        }
        let next = read_u8(ctx, p.l4)?;
        let off_flags = u16::from_be(read_u16_raw(ctx, p.l4 + 2)?);
        let id = read_u32_raw(ctx, p.l4 + 4)?;
        let offset = off_flags >> 3;
        let more = off_flags & 1 != 0;
        p.l4 += FRAG_HLEN;
        l4_len -= FRAG_HLEN;
        p.proto = next;
        if IPV6_EXT.contains(&next) {
            return Err(Skip::IpOptions);
        }
        if more || offset != 0 {
            p.frag_id = u32::from_be(id);
            p.first_frag = offset == 0;
        }
        if offset != 0 {
            if next != PROTO_TCP && next != PROTO_UDP {
                return Err(Skip::OtherProto);
            }
            p.kind = KIND_FRAG;
            return Ok(());
        }
    } else if IPV6_EXT.contains(&p.proto) {
        return Err(Skip::IpOptions);
    }
    if p.proto == PROTO_ICMPV6 && !p.first_frag {
        return icmp_error(ctx, p, l4_len);
    }
    let (s, d, f) = parse_l4(ctx, p.proto, p.l4, l4_len, p.first_frag)?;
    p.sport_be = s;
    p.dport_be = d;
    p.tcp_flags = f;
    Ok(())
}

/// Ports (network order) and TCP flags; the transport header must lie
/// entirely inside both the frame and the IP payload length.
#[inline(always)]
fn parse_l4(
    ctx: &XdpContext,
    proto: u8,
    l4: usize,
    l4_len: usize,
    fragment: bool,
) -> Result<(u16, u16, u8), Skip> {
    let hlen = match proto {
        PROTO_TCP => TCP_HLEN,
        PROTO_UDP => UDP_HLEN,
        _ => return Err(Skip::OtherProto),
    };
    if l4_len < hlen {
        return Err(Skip::Malformed);
    }
    let sport = read_u16_raw(ctx, l4)?;
    let dport = read_u16_raw(ctx, l4 + 2)?;
    if proto == PROTO_UDP {
        // The UDP length covers the whole datagram: it must agree with the IP
        // payload, or (first fragment) at least cover it.
        let ulen = u16::from_be(read_u16_raw(ctx, l4 + 4)?) as usize;
        if ulen < UDP_HLEN || (!fragment && ulen > l4_len) || (fragment && ulen < l4_len) {
            return Err(Skip::Malformed);
        }
        return Ok((sport, dport, 0));
    }
    let doff = (read_u8(ctx, l4 + 12)? >> 4) as usize * 4;
    if doff < TCP_HLEN || doff > l4_len {
        return Err(Skip::Malformed);
    }
    let flags = read_u8(ctx, l4 + 13)?;
    Ok((sport, dport, flags))
}

/// An ICMP / ICMPv6 error (destination unreachable, fragmentation needed /
/// packet too big, time exceeded) quoting a TCP or UDP packet without IP
/// options; anything else is not the balancer's.
#[inline(always)]
fn icmp_error(ctx: &XdpContext, p: &mut Packet, l4_len: usize) -> Result<(), Skip> {
    if l4_len < ICMP_HLEN {
        return Err(Skip::Malformed);
    }
    let ty = read_u8(ctx, p.l4)?;
    let is_error = if p.family == FAMILY_V4 {
        ty == 3 || ty == 11
    } else {
        ty == 1 || ty == 2 || ty == 3
    };
    if !is_error {
        return Err(Skip::OtherProto);
    }
    let inner = p.l4 + ICMP_HLEN;
    let (hlen, proto) = if p.family == FAMILY_V4 {
        let (_, proto) = ipv4_header(ctx, inner)?;
        if u16::from_be(read_u16_raw(ctx, inner + 6)?) & 0x1fff != 0 {
            return Err(Skip::OtherProto);
        }
        (IPV4_HLEN, proto)
    } else {
        if read_u8(ctx, inner)? >> 4 != 6 {
            return Err(Skip::Malformed);
        }
        (IPV6_HLEN, read_u8(ctx, inner + 6)?)
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Skip::OtherProto);
    }
    // The quote must hold the whole inner IP header and the two ports.
    if ICMP_HLEN + hlen + 4 > l4_len {
        return Err(Skip::Malformed);
    }
    let (src_off, dst_off) = if p.family == FAMILY_V4 {
        (12, 16)
    } else {
        (8, 24)
    };
    // The quoted packet went from the balanced side to the client: the flow
    // it belongs to runs the other way.
    p.dst = read_addr(ctx, inner + src_off, p.family)?;
    p.src = read_addr(ctx, inner + dst_off, p.family)?;
    p.dport_be = read_u16_raw(ctx, inner + hlen)?;
    p.sport_be = read_u16_raw(ctx, inner + hlen + 2)?;
    p.proto = proto;
    p.kind = KIND_ICMP;
    p.inner_l3 = inner;
    Ok(())
}
