//! ICMP errors the director sends back to a client, built in XDP from the
//! offending packet: "fragmentation needed" / ICMPv6 "packet too big" for a
//! packet too big to encapsulate (TUN), and "time exceeded" for a packet
//! whose TTL / hop limit ran out (ttl.rs). One builder for both.

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
/// ... in a time exceeded: RFC 792's "64 bits of data" (every TCP / UDP
/// packet has them; the quote has a fixed length, as the checksum is summed
/// over a constant number of bytes).
const QUOTE_L4_TTL: usize = 8;

/// One ICMP error: its type, code and second header word (network order).
#[derive(Clone, Copy)]
struct Kind {
    ty: u8,
    code: u8,
    rest: u32,
    /// Verdict when it cannot be sent.
    drop: Code,
    /// Event when it is.
    sent: Code,
}

/// Turns the packet into an ICMP "fragmentation needed" (IPv4, DF set only)
/// or ICMPv6 "packet too big" carrying `mtu`, or, for `mtu` 0
/// ([`code::time_exceeded`]), an ICMP / ICMPv6 time exceeded; sent back where
/// it came from, from the address it was sent to, on its VLAN if it had one.
#[inline(never)]
pub fn icmp_error(ctx: &XdpContext, pkt: &Packet, mtu: usize) -> Code {
    let v4 = pkt.family == FAMILY_V4;
    if mtu == 0 {
        let (ty, code) = if v4 { (11, 0) } else { (3, 0) };
        let k = Kind {
            ty,
            code,
            rest: 0,
            drop: code::DROP_TTL,
            sent: code::EV_ICMP_TIME_EXCEEDED_SENT,
        };
        return send::<QUOTE_L4_TTL>(ctx, pkt, k);
    }
    if v4 {
        let df = read_u16_raw(ctx, pkt.l3 + 6).map(|f| u16::from_be(f) & 0x4000 != 0);
        if df != Ok(true) {
            return code::DROP_TOO_BIG;
        }
    }
    let (ty, code, rest) = if v4 {
        // Type 3 code 4, unused, next-hop MTU.
        (3, 4, ((mtu as u32) & 0xffff).to_be())
    } else {
        (2, 0, (mtu as u32).to_be())
    };
    let k = Kind {
        ty,
        code,
        rest,
        drop: code::DROP_TOO_BIG,
        sent: code::EV_ICMP_TOO_BIG_SENT,
    };
    send::<QUOTE_L4>(ctx, pkt, k)
}

/// Builds and sends error `k` quoting the IP header and `Q` bytes after it.
#[inline(always)]
fn send<const Q: usize>(ctx: &XdpContext, pkt: &Packet, k: Kind) -> Code {
    let fam = pkt.family;
    let (ip_hlen, icmp_proto) = if fam == FAMILY_V4 {
        (IPV4_HLEN, PROTO_ICMP)
    } else {
        (IPV6_HLEN, PROTO_ICMPV6)
    };
    let quote = ip_hlen + Q;
    if pkt.ip_len < quote {
        return k.drop;
    }
    // MACs and, on a VLAN, the 802.1Q tag (bytes 12..16): the error goes
    // back on the client's VLAN (path MTU discovery for tagged clients).
    let l2 = match ptr_at::<[u8; 16]>(ctx, 0) {
        // SAFETY: inside the packet (checked).
        Ok(p) => unsafe { p.read_unaligned() },
        Err(OutOfBounds) => return k.drop,
    };
    let hdr = ip_hlen + ICMP_HLEN;
    // Built untagged (constant offsets: the verifier follows them), the tag
    // pushed back in front afterwards.
    let delta = (ETH_HLEN + hdr) as i32 - pkt.l3 as i32;
    // SAFETY: ctx is this program's context; pointers are re-derived after.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } != 0 {
        return k.drop;
    }
    let want = ETH_HLEN + hdr + quote;
    let have = frame_len(ctx);
    // SAFETY: as above.
    if have < want || unsafe { bpf_xdp_adjust_tail(ctx.ctx, want as i32 - have as i32) } != 0 {
        return k.drop;
    }
    if build::<Q>(ctx, fam, icmp_proto, &l2, pkt, &k, quote).is_err() {
        return k.drop;
    }
    if pkt.l3 != ETH_HLEN && retag(ctx, &l2).is_err() {
        return k.drop;
    }
    code::TX | k.sent
}

#[inline(always)]
fn build<const Q: usize>(
    ctx: &XdpContext,
    fam: u8,
    icmp_proto: u8,
    l2: &[u8; 16],
    pkt: &Packet,
    k: &Kind,
    quote: usize,
) -> Result<(), OutOfBounds> {
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&l2[6..12]);
    swapped[6..].copy_from_slice(&l2[..6]);
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
        l3 + IPV4_HLEN
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
        l3 + IPV6_HLEN
    };
    // Type, code, checksum 0 for now; the second word.
    write_u32_raw(ctx, icmp, u32::from_ne_bytes([k.ty, k.code, 0, 0]))?;
    write_u32_raw(ctx, icmp + 4, k.rest)?;
    // Checksum over the ICMP message (and the IPv6 pseudo-header).
    let sum = if fam == FAMILY_V4 {
        sum_bytes::<{ ICMP_HLEN + IPV4_HLEN }, Q>(ctx, icmp)?
    } else {
        sum_bytes::<{ ICMP_HLEN + IPV6_HLEN }, Q>(ctx, icmp)?
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

/// Puts the received 802.1Q tag (bytes 12..16 of `l2`) back between the
/// MACs and the ethertype of the error built untagged.
#[inline(always)]
fn retag(ctx: &XdpContext, l2: &[u8; 16]) -> Result<(), OutOfBounds> {
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    // SAFETY: inside the packet (checked).
    let macs = unsafe { eth.read_unaligned() };
    // SAFETY: ctx is this program's context; pointers are re-derived after.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -4) } != 0 {
        return Err(OutOfBounds);
    }
    let head = ptr_at::<[u8; 16]>(ctx, 0)?;
    let mut h = [0u8; 16];
    h[..12].copy_from_slice(&macs);
    h[12..].copy_from_slice(&l2[12..]);
    // SAFETY: inside the packet (checked).
    unsafe { head.write_unaligned(h) };
    Ok(())
}

/// One's complement sum (unfolded) of `H + Q` packet bytes at `off` (a
/// multiple of 4).
#[inline(always)]
fn sum_bytes<const H: usize, const Q: usize>(
    ctx: &XdpContext,
    off: usize,
) -> Result<u64, OutOfBounds> {
    let n = H + Q;
    let start = ctx.data();
    if start + off + n > data_end(ctx) {
        return Err(OutOfBounds);
    }
    // SAFETY: [start + off, + N) lies inside the packet (checked above); the
    // helper only reads it.
    let s = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            (start + off) as *mut u32,
            n as u32,
            0,
        )
    };
    Ok(s as u32 as u64)
}
