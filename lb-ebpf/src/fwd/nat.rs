//! NAT: client → real rewrites the destination to the real; the real's
//! replies (and ICMP errors about them) are translated back to the virtual
//! service with the reverse table this module keeps.

use aya_ebpf::programs::XdpContext;
use lb_common::{FlowKey, Real, RevNat, Service, FAMILY_V4, PROTO_TCP, PROTO_UDP};
use lb_ebpf::{
    csum::Delta,
    packet::{read_addr, read_u16_raw, write_addr, write_u16_raw, OutOfBounds},
    parse::{Packet, IPV4_HLEN, IPV6_HLEN, KIND_FRAG, KIND_ICMP, KIND_L4},
};

use super::route;
use crate::{
    code::{self, Code},
    conntrack::{self, NS},
    maps::LB_NAT_REV,
    sched,
};

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
) -> Result<(), OutOfBounds> {
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

/// An IPv6 UDP datagram (or first fragment) with checksum 0: invalid
/// (RFC 8200 section 8.1; the receiving kernel drops it, `udp6_csum_init`),
/// and an incremental update would turn the 0 into a non-zero wrong value.
/// IPv4's 0 ("no checksum", RFC 768) stays 0 ([`rewrite`]).
#[inline(always)]
fn v6_udp_without_checksum(ctx: &XdpContext, pkt: &Packet) -> bool {
    pkt.family != FAMILY_V4
        && pkt.proto == PROTO_UDP
        && pkt.kind == KIND_L4
        && read_u16_raw(ctx, pkt.l4 + 6) == Ok(0)
}

/// Client → real: destination becomes the real, routed to it.
#[inline(never)]
pub fn to_real(ctx: &XdpContext, pkt: &Packet, real: &Real) -> Code {
    if v6_udp_without_checksum(ctx, pkt) {
        return code::DROP_UDP_ZERO_CSUM;
    }
    let r = if pkt.kind == KIND_ICMP {
        icmp_nat(
            ctx,
            pkt,
            true,
            &pkt.dst,
            &real.addr,
            pkt.dport_be,
            real.port_be,
        )
    } else {
        rewrite(ctx, pkt, true, &real.addr, real.port_be)
    };
    if r.is_err() {
        return code::DROP_NO_EGRESS;
    }
    let c = route(ctx, pkt, &pkt.src, &real.addr, false);
    // Too big: the addresses put back, so that the error quotes the packet
    // as the client sent it (undoing the rewrite keeps the lookup after it,
    // within the 512-byte stack of Debian 12's 6.1 verifier).
    if c & code::SEND_TOO_BIG != 0 && rewrite(ctx, pkt, true, &pkt.dst, pkt.dport_be).is_err() {
        return code::DROP_TOO_BIG;
    }
    c
}

/// Real → client: source becomes the virtual service, routed to the client.
#[inline(never)]
fn to_client(ctx: &XdpContext, pkt: &Packet, vaddr: &[u32; 4], vport_be: u16) -> Code {
    if v6_udp_without_checksum(ctx, pkt) {
        return code::DROP_UDP_ZERO_CSUM;
    }
    if let Err(c) = super::ttl::hop(ctx, pkt, true) {
        return c;
    }
    // For an ICMP error the client is the quoted packet's source (pkt.dst).
    let client = pkt.dst;
    let r = if pkt.kind == KIND_ICMP {
        icmp_nat(ctx, pkt, false, &pkt.src, vaddr, pkt.sport_be, vport_be)
    } else {
        rewrite(ctx, pkt, false, vaddr, vport_be)
    };
    if r.is_err() {
        return code::DROP_NO_EGRESS;
    }
    let c = route(ctx, pkt, vaddr, &client, true);
    // Too big: as in `to_real`, the error quotes the reply as the real sent it.
    if c & code::SEND_TOO_BIG != 0 && rewrite(ctx, pkt, false, &pkt.src, pkt.sport_be).is_err() {
        return code::DROP_TOO_BIG;
    }
    c
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
) -> Result<(), OutOfBounds> {
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

/// Records how to translate the real's replies of this flow back.
#[inline(never)]
pub fn track(pkt: &Packet, svc: &Service, pick: &sched::Pick, now: u64) {
    let key = FlowKey {
        src: pick.real.addr,
        dst: pkt.src,
        sport_be: pick.real.port_be,
        dport_be: pkt.sport_be,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    let v = RevNat {
        vaddr: pkt.dst,
        vport_be: pkt.dport_be,
        family: pkt.family,
        _pad: 0,
        svc_id: svc.svc_id,
        real_id: pick.real_id,
        real_gen: pick.gen,
        last_ns: now,
    };
    let _ = LB_NAT_REV.insert(key, v, 0);
}

/// A packet from a NAT real to a client (or an ICMP error about one),
/// translated back to the virtual service and sent on; `None` when it is
/// not one.
#[inline(always)]
pub fn reply(ctx: &XdpContext, pkt: &Packet, now: u64) -> Option<Code> {
    match reply_code(ctx, pkt, now) {
        NOT_A_REPLY => None,
        c => Some(c),
    }
}

/// [`reply_code`]'s answer for a packet that is no NAT reply (no code has
/// every bit set).
const NOT_A_REPLY: Code = Code::MAX;

/// [`reply`] as a function of its own in the object, with plain types only
/// in its signature (bpf-linker's BTF for a Rust enum there is rejected).
#[inline(never)]
fn reply_code(ctx: &XdpContext, pkt: &Packet, now: u64) -> Code {
    reply_inner(ctx, pkt, now).unwrap_or(NOT_A_REPLY)
}

#[inline(always)]
fn reply_inner(ctx: &XdpContext, pkt: &Packet, now: u64) -> Option<Code> {
    let key = conntrack::flow_key(pkt);
    let rev = LB_NAT_REV.get_ptr_mut(key)?;
    // SAFETY: valid for this program run; racing writers store whole fields.
    let rev = unsafe { &mut *rev };
    let tcp = pkt.proto == PROTO_TCP;
    let limit = conntrack::with_timeouts(|t| if tcp { t.tcp_s } else { t.udp_s });
    let idle = now.saturating_sub(rev.last_ns);
    if idle >= limit as u64 * NS {
        return None;
    }
    sched::real_if_valid(rev.real_id, rev.real_gen)?;
    if idle > NS {
        rev.last_ns = now;
    }
    let (vaddr, vport, svc_id, real_id) = (rev.vaddr, rev.vport_be, rev.svc_id, rev.real_id);
    let c = to_client(ctx, pkt, &vaddr, vport);
    if code::is_drop(c) {
        return Some(c);
    }
    let event = if pkt.kind == KIND_ICMP {
        code::EV_ICMP_FORWARDED
    } else {
        code::EV_NAT_REVERSE
    };
    Some(code::forwarded_out(c | event, svc_id, real_id))
}
