//! ICMP "fragmentation needed" / ICMPv6 "packet too big" for a packet too big
//! to encapsulate (TUN), sent back to the client.

use aya_ebpf::{
    helpers::generated::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6};
use lb_ebpf::{
    csum,
    packet::{
        data_end, frame_len, ptr_at, read_u16_raw, write_addr, write_u16_raw, write_u32_raw,
        OutOfBounds,
    },
    parse::{Packet, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, ICMP_HLEN, IPV4_HLEN, IPV6_HLEN},
};

use super::TTL;
use crate::code::{self, Code};

/// Bytes of the offending packet quoted in a too-big error after its IP header.
const QUOTE_L4: usize = 64;

/// Turns the packet into an ICMP "fragmentation needed" (IPv4, DF set only)
/// or ICMPv6 "packet too big" carrying `mtu`, sent back where it came from,
/// from the address it was sent to.
#[inline(never)]
pub fn icmp_error(ctx: &XdpContext, pkt: &Packet, mtu: usize) -> Code {
    let fam = pkt.family;
    let (ip_hlen, icmp_proto) = if fam == FAMILY_V4 {
        (IPV4_HLEN, PROTO_ICMP)
    } else {
        (IPV6_HLEN, PROTO_ICMPV6)
    };
    let quote = ip_hlen + QUOTE_L4;
    if fam == FAMILY_V4 {
        let df = read_u16_raw(ctx, pkt.l3 + 6).map(|f| u16::from_be(f) & 0x4000 != 0);
        if df != Ok(true) {
            return code::DROP_TOO_BIG;
        }
    }
    if pkt.ip_len < quote {
        return code::DROP_TOO_BIG;
    }
    let macs = match ptr_at::<[u8; 12]>(ctx, 0) {
        // SAFETY: inside the packet (checked).
        Ok(p) => unsafe { p.read_unaligned() },
        Err(OutOfBounds) => return code::DROP_TOO_BIG,
    };
    let hdr = ip_hlen + ICMP_HLEN;
    let delta = (ETH_HLEN + hdr) as i32 - pkt.l3 as i32;
    // SAFETY: ctx is this program's context; pointers are re-derived after.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } != 0 {
        return code::DROP_TOO_BIG;
    }
    let want = ETH_HLEN + hdr + quote;
    let have = frame_len(ctx);
    // SAFETY: as above.
    if have < want || unsafe { bpf_xdp_adjust_tail(ctx.ctx, want as i32 - have as i32) } != 0 {
        return code::DROP_TOO_BIG;
    }
    match build(ctx, fam, icmp_proto, &macs, pkt, mtu, quote) {
        Ok(()) => code::TX | code::EV_ICMP_TOO_BIG_SENT,
        Err(OutOfBounds) => code::DROP_TOO_BIG,
    }
}

#[inline(always)]
fn build(
    ctx: &XdpContext,
    fam: u8,
    icmp_proto: u8,
    macs: &[u8; 12],
    pkt: &Packet,
    mtu: usize,
    quote: usize,
) -> Result<(), OutOfBounds> {
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    // SAFETY: inside the packet (checked).
    unsafe { eth.write_unaligned(swapped) };
    let l3 = ETH_HLEN;
    let msg_len = ICMP_HLEN + quote;
    // The error goes from the address the packet was sent to, back to its source.
    let (src, dst) = (&pkt.dst, &pkt.src);
    let icmp = if fam == FAMILY_V4 {
        write_u16_raw(ctx, 12, ETH_P_IP.to_be())?;
        let tot = IPV4_HLEN + msg_len;
        let mem: [u32; 5] = [
            u32::from_ne_bytes([0x45, 0xc0, (tot >> 8) as u8, tot as u8]),
            0,
            u32::from_ne_bytes([TTL, icmp_proto, 0, 0]),
            src[0],
            dst[0],
        ];
        let mut i = 0;
        while i < 5 {
            write_u32_raw(ctx, l3 + i * 4, mem[i])?;
            i += 1;
        }
        write_u16_raw(ctx, l3 + 10, csum::ipv4_header(&mem))?;
        let o = l3 + IPV4_HLEN;
        // Type 3 code 4, checksum 0 for now, unused, next-hop MTU.
        write_u32_raw(ctx, o, u32::from_ne_bytes([3, 4, 0, 0]))?;
        write_u32_raw(
            ctx,
            o + 4,
            u32::from_ne_bytes([0, 0, (mtu >> 8) as u8, mtu as u8]),
        )?;
        o
    } else {
        write_u16_raw(ctx, 12, ETH_P_IPV6.to_be())?;
        write_u32_raw(ctx, l3, u32::from_ne_bytes([0x60, 0, 0, 0]))?;
        write_u32_raw(
            ctx,
            l3 + 4,
            u32::from_ne_bytes([(msg_len >> 8) as u8, msg_len as u8, icmp_proto, 255]),
        )?;
        write_addr(ctx, l3 + 8, src, FAMILY_V6)?;
        write_addr(ctx, l3 + 24, dst, FAMILY_V6)?;
        let o = l3 + IPV6_HLEN;
        write_u32_raw(ctx, o, u32::from_ne_bytes([2, 0, 0, 0]))?;
        write_u32_raw(ctx, o + 4, (mtu as u32).to_be())?;
        o
    };
    // Checksum over the ICMP message (and the IPv6 pseudo-header).
    let sum = if fam == FAMILY_V4 {
        sum_bytes::<{ ICMP_HLEN + IPV4_HLEN + QUOTE_L4 }>(ctx, icmp)?
    } else {
        sum_bytes::<{ ICMP_HLEN + IPV6_HLEN + QUOTE_L4 }>(ctx, icmp)?
    };
    let mut s = sum;
    if fam == FAMILY_V6 {
        let mut i = 0;
        while i < 4 {
            s += src[i] as u64 + dst[i] as u64;
            i += 1;
        }
        s += (msg_len as u32).to_be() as u64;
        s += (icmp_proto as u32).to_be() as u64;
    }
    write_u16_raw(ctx, icmp + 2, !csum::fold(s))
}

/// One's complement sum (unfolded) of `N` packet bytes at `off` (N a multiple of 4).
#[inline(always)]
fn sum_bytes<const N: usize>(ctx: &XdpContext, off: usize) -> Result<u64, OutOfBounds> {
    let start = ctx.data();
    if start + off + N > data_end(ctx) {
        return Err(OutOfBounds);
    }
    // SAFETY: [start + off, + N) lies inside the packet (checked above); the
    // helper only reads it.
    let s = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            (start + off) as *mut u32,
            N as u32,
            0,
        )
    };
    Ok(s as u32 as u64)
}
