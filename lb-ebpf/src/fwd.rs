//! Forwarding methods.
//!
//! - DR rewrites only the Ethernet addresses (MACs from the agent's
//!   neighbour resolution); the IP packet is left byte for byte intact.
//! - NAT rewrites the destination (client → real) or the source (real's
//!   reply → client) address and port, updates the IPv4 header and TCP / UDP
//!   checksums incrementally, and routes the result with the kernel's FIB.
//! - TUN prepends an IPv4 (IPv6 for IPv6 services) header to the real and
//!   routes it with the FIB; a packet too big for the egress MTU gets an ICMP
//!   fragmentation-needed / packet-too-big back to the client instead.
//!
//! Next hops come from `bpf_fib_lookup`. When the neighbour is not resolved
//! yet, or the egress interface has no XDP attached, the (already rewritten)
//! packet goes to the kernel, which resolves and forwards it.

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibLookup,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    },
    helpers::generated::{bpf_csum_diff, bpf_fib_lookup, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    Real, FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_IPIP, PROTO_IPV6, PROTO_TCP,
    PROTO_UDP,
};
use lb_ebpf::{
    csum::{self, Delta},
    parse::{
        data_end, frame_len, ptr_at, read_addr, read_u16_raw, read_u32_raw, write_addr,
        write_u16_raw, write_u32_raw, Packet, Skip, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, ICMP_HLEN,
        IPV4_HLEN, IPV6_HLEN, KIND_FRAG, KIND_ICMP, KIND_L4,
    },
};

use crate::{maps::LB_DEVMAP, stats::count};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const FIB_SUCCESS: i64 = 0;
const FIB_FWD_DISABLED: i64 = 5;
const FIB_NO_NEIGH: i64 = 7;
const FIB_FRAG_NEEDED: i64 = 8;
/// TTL / hop limit of headers the balancer builds.
const TTL: u8 = 64;
/// Bytes of the offending packet quoted in a too-big error after its IP header.
const QUOTE_L4: usize = 64;

/// Result of a forwarding step that failed: the packet's verdict.
type Verdict = u32;

/// DR: destination MAC <- the real's MAC, source MAC <- the egress interface's
/// MAC; XDP_TX when the real is behind the ingress interface, else
/// XDP_REDIRECT through the devmap. XDP_DROP when the egress is unknown.
#[inline(always)]
pub fn direct_route(ctx: &XdpContext, pkt: &Packet, real: &Real) -> u32 {
    if write_macs(ctx, &real.mac, &real.src_mac).is_err() {
        return XDP_DROP;
    }
    if real.ifindex == pkt.ingress {
        return XDP_TX;
    }
    // On a devmap miss the low bits of the flags are the verdict returned.
    match LB_DEVMAP.redirect(real.ifindex, XDP_DROP as u64) {
        Ok(v) => v,
        Err(_) => XDP_DROP,
    }
}

#[inline(always)]
fn write_macs(ctx: &XdpContext, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), Skip> {
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(dst);
    macs[6..].copy_from_slice(src);
    // SAFETY: the 12 address bytes are inside the packet (ptr_at checked).
    unsafe { eth.write_unaligned(macs) };
    Ok(())
}

/// Looks up the next hop of `dst` for a packet of `tot_len` bytes arriving
/// on the ingress interface: (return code, parameters with MACs, ifindex, MTU).
#[inline(always)]
fn fib(
    ctx: &XdpContext,
    ingress: u32,
    family: u8,
    src: &[u32; 4],
    dst: &[u32; 4],
    tot_len: usize,
) -> (i64, FibLookup) {
    // SAFETY: all-zero is a valid bpf_fib_lookup (plain integers and unions of them).
    let mut p: FibLookup = unsafe { core::mem::zeroed() };
    p.family = if family == FAMILY_V4 {
        AF_INET
    } else {
        AF_INET6
    };
    p.ifindex = ingress;
    p.__bindgen_anon_1.tot_len = tot_len as u16;
    if family == FAMILY_V4 {
        p.__bindgen_anon_3.ipv4_src = src[0];
        p.__bindgen_anon_4.ipv4_dst = dst[0];
    } else {
        p.__bindgen_anon_3.ipv6_src = *src;
        p.__bindgen_anon_4.ipv6_dst = *dst;
    }
    // SAFETY: p is a valid, writable bpf_fib_lookup of the size given.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            &mut p,
            core::mem::size_of::<FibLookup>() as i32,
            0,
        )
    };
    (rc, p)
}

/// Sends a packet whose L3 is final along the FIB result `p` (rc SUCCESS):
/// MACs from the FIB, XDP_TX or redirect; the kernel when the egress
/// interface has no XDP of ours.
#[inline(always)]
fn send(ctx: &XdpContext, ingress: u32, p: &FibLookup) -> Verdict {
    if p.ifindex != ingress && LB_DEVMAP.get(p.ifindex).is_none() {
        count(|g| &mut g.pass_no_devmap);
        return XDP_PASS;
    }
    if write_macs(ctx, &p.dmac, &p.smac).is_err() {
        return XDP_DROP;
    }
    if p.ifindex == ingress {
        return XDP_TX;
    }
    match LB_DEVMAP.redirect(p.ifindex, XDP_DROP as u64) {
        Ok(v) => v,
        Err(_) => XDP_DROP,
    }
}

/// Routes a packet whose addresses are final toward `dst`.
#[inline(always)]
fn route(ctx: &XdpContext, pkt: &Packet, src: &[u32; 4], dst: &[u32; 4]) -> Verdict {
    let (rc, p) = fib(ctx, pkt.ingress, pkt.family, src, dst, pkt.ip_len);
    match rc {
        FIB_SUCCESS => send(ctx, pkt.ingress, &p),
        FIB_NO_NEIGH | FIB_FRAG_NEEDED => {
            // The kernel resolves the neighbour (or fragments / reports) and forwards.
            count(|g| &mut g.pass_no_neigh);
            XDP_PASS
        }
        _ => unroutable(rc),
    }
}

/// Counts a failed FIB lookup; the packet is dropped.
#[inline(always)]
fn unroutable(rc: i64) -> Verdict {
    if rc == FIB_FWD_DISABLED {
        count(|g| &mut g.drop_fwd_disabled);
    } else {
        count(|g| &mut g.drop_unroutable);
    }
    XDP_DROP
}

/// Offset of the source (or destination) address in the IP header.
#[inline(always)]
fn addr_off(family: u8, dst: bool) -> usize {
    match (family == FAMILY_V4, dst) {
        (true, false) => 12,
        (true, true) => 16,
        (false, false) => 8,
        (false, true) => 24,
    }
}

#[inline(always)]
fn words(family: u8) -> usize {
    if family == FAMILY_V4 {
        1
    } else {
        4
    }
}

/// Rewrites one side (`dst`: destination, else source) of a TCP / UDP packet
/// (or fragment) to `addr:port_be`, with incremental checksum updates.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &Packet,
    dst: bool,
    addr: &[u32; 4],
    port_be: u16,
) -> Result<(), Skip> {
    let fam = pkt.family;
    let aoff = pkt.l3 + addr_off(fam, dst);
    let old = read_addr(ctx, aoff, fam)?;
    let mut d = Delta::new();
    d.addr(&old, addr, words(fam));
    write_addr(ctx, aoff, addr, fam)?;
    if fam == FAMILY_V4 {
        let c = read_u16_raw(ctx, pkt.l3 + 10)?;
        write_u16_raw(ctx, pkt.l3 + 10, d.apply(c))?;
    }
    if pkt.kind == KIND_FRAG {
        // No transport header in a later fragment.
        return Ok(());
    }
    let poff = pkt.l4 + if dst { 2 } else { 0 };
    let old_port = read_u16_raw(ctx, poff)?;
    d.u16(old_port, port_be);
    write_u16_raw(ctx, poff, port_be)?;
    let coff = pkt.l4 + if pkt.proto == PROTO_TCP { 16 } else { 6 };
    let c = read_u16_raw(ctx, coff)?;
    if pkt.proto == PROTO_UDP && c == 0 && fam == FAMILY_V4 {
        // IPv4 UDP without checksum stays without one.
        return Ok(());
    }
    let mut n = d.apply(c);
    if pkt.proto == PROTO_UDP && n == 0 {
        n = 0xffff;
    }
    write_u16_raw(ctx, coff, n)
}

/// NAT, client → real: destination becomes the real, routed to it.
#[inline(never)]
pub fn nat_to_real(ctx: &XdpContext, pkt: &Packet, real: &Real) -> Verdict {
    if pkt.kind == KIND_ICMP {
        return icmp_nat(
            ctx,
            pkt,
            true,
            &pkt.dst,
            &real.addr,
            pkt.dport_be,
            real.port_be,
        )
        .map(|_| route(ctx, pkt, &pkt.src, &real.addr))
        .unwrap_or(XDP_DROP);
    }
    match rewrite(ctx, pkt, true, &real.addr, real.port_be) {
        Ok(()) => route(ctx, pkt, &pkt.src, &real.addr),
        Err(_) => XDP_DROP,
    }
}

/// NAT, real → client: source becomes the virtual service, routed to the client.
#[inline(never)]
pub fn nat_to_client(ctx: &XdpContext, pkt: &Packet, vaddr: &[u32; 4], vport_be: u16) -> Verdict {
    // For an ICMP error the client is the quoted packet's source (pkt.dst).
    let client = pkt.dst;
    let r = if pkt.kind == KIND_ICMP {
        icmp_nat(ctx, pkt, false, &pkt.src, vaddr, pkt.sport_be, vport_be)
    } else {
        rewrite(ctx, pkt, false, vaddr, vport_be)
    };
    match r {
        Ok(()) => route(ctx, pkt, vaddr, &client),
        Err(_) => XDP_DROP,
    }
}

/// Translates an ICMP error for NAT. `to_real`: an error from the client side
/// about a reply (outer destination and quoted source VIP:vport become the
/// real's); else an error from the real about a request (outer source and
/// quoted destination real:rport become VIP:vport). The quoted IPv4 header's
/// checksum and the ICMP checksum are updated; the quoted transport checksum
/// is left as it is (as ipvs does).
#[inline(always)]
fn icmp_nat(
    ctx: &XdpContext,
    pkt: &Packet,
    to_real: bool,
    old: &[u32; 4],
    new: &[u32; 4],
    old_port: u16,
    new_port: u16,
) -> Result<(), Skip> {
    let fam = pkt.family;
    let w = words(fam);
    // Outer header: destination (to_real) or source.
    let aoff = pkt.l3 + addr_off(fam, to_real);
    let outer_old = read_addr(ctx, aoff, fam)?;
    let mut outer = Delta::new();
    outer.addr(&outer_old, new, w);
    write_addr(ctx, aoff, new, fam)?;
    if fam == FAMILY_V4 {
        let c = read_u16_raw(ctx, pkt.l3 + 10)?;
        write_u16_raw(ctx, pkt.l3 + 10, outer.apply(c))?;
    }
    // Quoted header: the opposite side.
    let ioff = pkt.inner_l3 + addr_off(fam, !to_real);
    let mut inner = Delta::new();
    inner.addr(old, new, w);
    write_addr(ctx, ioff, new, fam)?;
    let mut icmp = inner;
    if fam == FAMILY_V4 {
        let c = read_u16_raw(ctx, pkt.inner_l3 + 10)?;
        let n = inner.apply(c);
        write_u16_raw(ctx, pkt.inner_l3 + 10, n)?;
        icmp.u16(c, n);
    } else {
        // ICMPv6's checksum covers the outer addresses too.
        icmp.merge(&outer);
    }
    let hlen = if fam == FAMILY_V4 {
        IPV4_HLEN
    } else {
        IPV6_HLEN
    };
    let poff = pkt.inner_l3 + hlen + if to_real { 0 } else { 2 };
    write_u16_raw(ctx, poff, new_port)?;
    icmp.u16(old_port, new_port);
    let c = read_u16_raw(ctx, pkt.l4 + 2)?;
    write_u16_raw(ctx, pkt.l4 + 2, icmp.apply(c))
}

/// [`encap`]'s answer for a packet too big for the tunnel: this bit or'ed
/// with the MTU left for the inner packet. The caller sends the ICMP error
/// with [`too_big`] (a separate call keeps the BPF stack of the deepest call
/// chain under 512 bytes).
pub const TOO_BIG: u32 = 0x8000_0000;

/// TUN: encapsulates the IP packet in IPv4 (IPIP) or IPv6 (IPv6-in-IPv6)
/// from the real's `tun_src` to the real, DF set; too big for the path's MTU
/// → [`TOO_BIG`] | MTU.
#[inline(never)]
pub fn encap(ctx: &XdpContext, pkt: &Packet, real: &Real) -> Verdict {
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
            count(|g| &mut g.drop_too_big);
            return XDP_DROP;
        }
        return TOO_BIG | (mtu.saturating_sub(outer) as u32 & 0xffff);
    }
    if rc != FIB_SUCCESS && rc != FIB_NO_NEIGH {
        return unroutable(rc);
    }
    // Inner bytes needed for the outer header, read before the head moves.
    let first = match read_u32_raw(ctx, pkt.l3) {
        Ok(v) => v,
        Err(_) => return XDP_DROP,
    };
    let delta = (ETH_HLEN + outer) as i32 - pkt.l3 as i32;
    // SAFETY: ctx is this program's context; all packet pointers are re-derived after.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } != 0 {
        count(|g| &mut g.drop_no_egress);
        return XDP_DROP;
    }
    if build_outer(ctx, fam, proto, first, tot, &real.tun_src, &real.addr).is_err() {
        return XDP_DROP;
    }
    count(|g| &mut g.encap);
    if rc == FIB_NO_NEIGH {
        count(|g| &mut g.pass_no_neigh);
        return XDP_PASS;
    }
    send(ctx, pkt.ingress, &p)
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
) -> Result<(), Skip> {
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

/// Turns the packet into an ICMP "fragmentation needed" (IPv4, DF set only)
/// or ICMPv6 "packet too big" carrying `mtu`, sent back where it came from,
/// from the address it was sent to.
#[inline(never)]
pub fn too_big(ctx: &XdpContext, pkt: &Packet, mtu: usize) -> Verdict {
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
            count(|g| &mut g.drop_too_big);
            return XDP_DROP;
        }
    }
    if pkt.ip_len < quote {
        count(|g| &mut g.drop_too_big);
        return XDP_DROP;
    }
    let macs = match ptr_at::<[u8; 12]>(ctx, 0) {
        // SAFETY: inside the packet (checked).
        Ok(p) => unsafe { p.read_unaligned() },
        Err(_) => return XDP_DROP,
    };
    let hdr = ip_hlen + ICMP_HLEN;
    let delta = (ETH_HLEN + hdr) as i32 - pkt.l3 as i32;
    // SAFETY: ctx is this program's context; pointers are re-derived after.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } != 0 {
        return XDP_DROP;
    }
    let want = ETH_HLEN + hdr + quote;
    let have = frame_len(ctx);
    // SAFETY: as above.
    if have < want || unsafe { bpf_xdp_adjust_tail(ctx.ctx, want as i32 - have as i32) } != 0 {
        return XDP_DROP;
    }
    match build_too_big(ctx, fam, icmp_proto, &macs, pkt, mtu, quote) {
        Ok(()) => {
            count(|g| &mut g.icmp_too_big_sent);
            XDP_TX
        }
        Err(_) => XDP_DROP,
    }
}

#[inline(always)]
fn build_too_big(
    ctx: &XdpContext,
    fam: u8,
    icmp_proto: u8,
    macs: &[u8; 12],
    pkt: &Packet,
    mtu: usize,
    quote: usize,
) -> Result<(), Skip> {
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
fn sum_bytes<const N: usize>(ctx: &XdpContext, off: usize) -> Result<u64, Skip> {
    let start = ctx.data();
    if start + off + N > data_end(ctx) {
        return Err(Skip::Malformed);
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
