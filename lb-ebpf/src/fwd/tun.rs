//! TUN: the IP packet is encapsulated in IPv4 (IPIP) or IPv6
//! (IPv6-in-IPv6) to the real and routed with the FIB.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{Real, FAMILY_V4, FAMILY_V6, PROTO_IPIP, PROTO_IPV6};
use lb_ebpf::{
    csum,
    packet::{ptr_at, read_u32_raw, write_addr, write_u16_raw, write_u32_raw, OutOfBounds},
    parse::{Packet, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPV4_HLEN, IPV6_HLEN, KIND_L4},
};

use super::{fib, send, unroutable, FIB_FRAG_NEEDED, FIB_NO_NEIGH, FIB_SUCCESS, TTL};
use crate::code::{self, Code};

/// Encapsulates from the real's `tun_src` to the real, DF set. Too big for
/// the path's MTU: [`code::too_big`] with the MTU left for the inner packet
/// (the caller sends the ICMP error), or a drop for what cannot get one.
#[inline(never)]
pub fn encap(ctx: &XdpContext, pkt: &Packet, real: &Real) -> Code {
    let fam = pkt.family;
    let (outer, proto) = if fam == FAMILY_V4 {
        (IPV4_HLEN, PROTO_IPIP)
    } else {
        (IPV6_HLEN, PROTO_IPV6)
    };
    let inner_len = pkt.ip_len;
    let tot = inner_len + outer;
    let (rc, p) = fib(ctx, pkt.ingress, fam, &real.tun_src, &real.addr, tot);
    if rc == FIB_FRAG_NEEDED {
        // SAFETY: the kernel wrote mtu_result for this return code.
        let mtu = unsafe { p.__bindgen_anon_1.mtu_result } as usize;
        if pkt.kind != KIND_L4 {
            return code::DROP_TOO_BIG;
        }
        return code::too_big(mtu.saturating_sub(outer));
    }
    if rc != FIB_SUCCESS && rc != FIB_NO_NEIGH {
        return unroutable(rc);
    }
    // Ethernet padding of a short frame (bytes past the IP packet) stays
    // out of the tunnel: the outer length covers the inner packet only.
    // Lengths as scalars (the frame length parse recorded): arithmetic on
    // `data_end - data` becomes packet-pointer math the verifier refuses.
    let (have, want) = (pkt.len as usize, pkt.l3 + inner_len);
    // SAFETY: ctx is this program's context; pointers are derived after.
    if have > want && unsafe { bpf_xdp_adjust_tail(ctx.ctx, want as i32 - have as i32) } != 0 {
        return code::DROP_NO_EGRESS;
    }
    // Inner bytes needed for the outer header, read before the head moves.
    let Ok(first) = read_u32_raw(ctx, pkt.l3) else {
        return code::DROP_NO_EGRESS;
    };
    // The received MACs, for a frame handed to the kernel (below).
    let Ok(macs) = ptr_at::<[u8; 12]>(ctx, 0) else {
        return code::DROP_NO_EGRESS;
    };
    // SAFETY: inside the packet (checked).
    let macs = unsafe { macs.read_unaligned() };
    let delta = (ETH_HLEN + outer) as i32 - pkt.l3 as i32;
    // SAFETY: ctx is this program's context; all packet pointers are re-derived after.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } != 0 {
        return code::DROP_NO_EGRESS;
    }
    if build_outer(ctx, fam, proto, first, tot, &real.tun_src, &real.addr).is_err() {
        return code::DROP_NO_EGRESS;
    }
    if rc == FIB_NO_NEIGH {
        // The kernel's neighbour path writes the Ethernet header; until then
        // the frame keeps the received one (to this host, unicast), not the
        // bytes the head moved over.
        let Ok(eth) = ptr_at::<[u8; 12]>(ctx, 0) else {
            return code::DROP_NO_EGRESS;
        };
        // SAFETY: inside the packet (checked).
        unsafe { eth.write_unaligned(macs) };
        return super::neigh::hand_over(ctx, &p, code::PASS_NO_NEIGH) | code::EV_ENCAP;
    }
    send(ctx, pkt.ingress, &p) | code::EV_ENCAP
}

/// Writes Ethernet type and the outer header at the start of the frame.
#[inline(always)]
fn build_outer(
    ctx: &XdpContext,
    fam: u8,
    proto: u8,
    inner_first: u32,
    tot: usize,
    src: &[u32; 4],
    dst: &[u32; 4],
) -> Result<(), OutOfBounds> {
    let l3 = ETH_HLEN;
    if fam == FAMILY_V4 {
        write_u16_raw(ctx, 12, ETH_P_IP.to_be())?;
        // Version 4, IHL 5, the inner TOS (byte 1 of the inner header), DF,
        // words as they sit in memory (network-order bytes).
        let tos = inner_first.to_ne_bytes()[1];
        let mem: [u32; 5] = [
            u32::from_ne_bytes([0x45, tos, (tot >> 8) as u8, tot as u8]),
            u32::from_ne_bytes([0, 0, 0x40, 0]),
            u32::from_ne_bytes([TTL, proto, 0, 0]),
            src[0],
            dst[0],
        ];
        let c = csum::ipv4_header(&mem);
        let mut i = 0;
        while i < 5 {
            write_u32_raw(ctx, l3 + i * 4, mem[i])?;
            i += 1;
        }
        write_u16_raw(ctx, l3 + 10, c)?;
    } else {
        write_u16_raw(ctx, 12, ETH_P_IPV6.to_be())?;
        // Version, traffic class and flow label of the inner header.
        write_u32_raw(ctx, l3, inner_first)?;
        let plen = (tot - IPV6_HLEN) as u16;
        write_u32_raw(
            ctx,
            l3 + 4,
            u32::from_ne_bytes([(plen >> 8) as u8, plen as u8, proto, TTL]),
        )?;
        write_addr(ctx, l3 + 8, src, FAMILY_V6)?;
        write_addr(ctx, l3 + 24, dst, FAMILY_V6)?;
    }
    Ok(())
}
