//! Header parsing with a bounds check before every access.
//!
//! Everything here reads packet memory only; nothing is written. A packet the
//! balancer does not handle is reported as a [`Skip`] reason and passed to the
//! kernel untouched.

use aya_ebpf::programs::XdpContext;
use core::mem::size_of;
use lb_common::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
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
    Fragment,
    IpOptions,
    Malformed,
}

/// What the forwarding path needs to know about a packet.
pub struct Packet {
    pub family: u8,
    pub proto: u8,
    /// Source and destination addresses, network order (IPv4 in word 0).
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// Frame length as received.
    pub len: u32,
}

/// `data_end`, loaded afresh each time.
///
/// Verifier workaround: the verifier learns a packet pointer's range only from
/// a pointer comparison with `data_end`. If LLVM can relate two bounds checks
/// (e.g. a length check on scalars that implies a later pointer check), it
/// drops the later one and the verifier rejects the access. A volatile load
/// gives every check its own `data_end` that LLVM cannot reason about.
#[inline(always)]
pub fn data_end(ctx: &XdpContext) -> usize {
    // SAFETY: ctx points to the kernel's xdp_md for this program run.
    unsafe { core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize }
}

/// Number of bytes in the frame.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    data_end(ctx) - ctx.data()
}

/// Bounds-checked pointer to a `T` at `off` bytes into the packet.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*const T, Skip> {
    let start = ctx.data();
    let end = data_end(ctx);
    if start + off + size_of::<T>() > end {
        return Err(Skip::Malformed);
    }
    Ok((start + off) as *const T)
}

#[inline(always)]
fn read_u8(ctx: &XdpContext, off: usize) -> Result<u8, Skip> {
    // SAFETY: ptr_at checked that the byte lies inside the packet.
    Ok(unsafe { *ptr_at::<u8>(ctx, off)? })
}

/// Reads a 16-bit field as stored (network order).
#[inline(always)]
fn read_u16_raw(ctx: &XdpContext, off: usize) -> Result<u16, Skip> {
    // SAFETY: bounds checked by ptr_at; packet data has no alignment guarantee.
    Ok(unsafe { ptr_at::<u16>(ctx, off)?.read_unaligned() })
}

/// Reads a 32-bit field as stored (network order is kept: the value is only
/// compared with and copied to other network-order fields).
#[inline(always)]
fn read_u32_raw(ctx: &XdpContext, off: usize) -> Result<u32, Skip> {
    // SAFETY: bounds checked by ptr_at; packet data has no alignment guarantee.
    Ok(unsafe { ptr_at::<u32>(ctx, off)?.read_unaligned() })
}

/// Parses Ethernet (with at most one 802.1Q tag), IPv4 / IPv6 and the TCP / UDP ports.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, Skip> {
    let len = frame_len(ctx) as u32;
    let mut l3 = ETH_HLEN;
    // Ethertype is read in network order and converted once.
    let mut ethertype = u16::from_be(read_u16_raw(ctx, 12).map_err(|_| Skip::NotIp)?);
    if ethertype == ETH_P_8021Q {
        ethertype = u16::from_be(read_u16_raw(ctx, 16).map_err(|_| Skip::NotIp)?);
        l3 = ETH_HLEN + 4;
    }
    match ethertype {
        ETH_P_IP => parse_v4(ctx, l3, len),
        ETH_P_IPV6 => parse_v6(ctx, l3, len),
        _ => Err(Skip::NotIp),
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, l3: usize, len: u32) -> Result<Packet, Skip> {
    let avail = frame_len(ctx);
    if l3 + IPV4_HLEN > avail {
        return Err(Skip::Malformed);
    }
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
    if tot_len < IPV4_HLEN || l3 + tot_len > avail {
        return Err(Skip::Malformed);
    }
    // More-fragments flag or a non-zero offset: a fragment.
    let frag = u16::from_be(read_u16_raw(ctx, l3 + 6)?);
    if frag & 0x3fff != 0 {
        return Err(Skip::Fragment);
    }
    let proto = read_u8(ctx, l3 + 9)?;
    let src = read_u32_raw(ctx, l3 + 12)?;
    let dst = read_u32_raw(ctx, l3 + 16)?;
    let l4 = l3 + IPV4_HLEN;
    let l4_len = tot_len - IPV4_HLEN;
    let (sport_be, dport_be, tcp_flags) = parse_l4(ctx, proto, l4, l4_len)?;
    Ok(Packet {
        family: FAMILY_V4,
        proto,
        src: [src, 0, 0, 0],
        dst: [dst, 0, 0, 0],
        sport_be,
        dport_be,
        tcp_flags,
        len,
    })
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, l3: usize, len: u32) -> Result<Packet, Skip> {
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
    let next = read_u8(ctx, l3 + 6)?;
    if next == IPV6_FRAG {
        return Err(Skip::Fragment);
    }
    if IPV6_EXT.contains(&next) {
        return Err(Skip::IpOptions);
    }
    let mut src = [0u32; 4];
    let mut dst = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        src[i] = read_u32_raw(ctx, l3 + 8 + i * 4)?;
        dst[i] = read_u32_raw(ctx, l3 + 24 + i * 4)?;
        i += 1;
    }
    let (sport_be, dport_be, tcp_flags) = parse_l4(ctx, next, l3 + IPV6_HLEN, payload)?;
    Ok(Packet {
        family: FAMILY_V6,
        proto: next,
        src,
        dst,
        sport_be,
        dport_be,
        tcp_flags,
        len,
    })
}

/// Ports (network order) and TCP flags; the transport header must lie
/// entirely inside both the frame and the IP payload length.
#[inline(always)]
fn parse_l4(ctx: &XdpContext, proto: u8, l4: usize, l4_len: usize) -> Result<(u16, u16, u8), Skip> {
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
        // The UDP length must agree with the IP payload.
        let ulen = u16::from_be(read_u16_raw(ctx, l4 + 4)?) as usize;
        if ulen < UDP_HLEN || ulen > l4_len {
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
