//! Forwarding methods, one module each, and the routing they share.
//!
//! - DR (dr.rs) rewrites the Ethernet addresses (MACs from the agent's
//!   neighbour resolution); of the IP packet only the TTL / hop limit
//!   changes (ttl.rs: every method decrements it, as ipvs does).
//! - NAT (nat.rs) rewrites the destination (client → real) or the source
//!   (real's reply → client) address and port, updates the IPv4 header and
//!   TCP / UDP checksums incrementally, and routes the result with the
//!   kernel's FIB (a packet too big for the egress has its addresses put
//!   back and gets an ICMP error quoting it as it was sent). It also keeps
//!   the reverse table the replies are translated with.
//! - TUN (tun.rs) prepends an IPv4 (IPv6 for IPv6 services) header to the
//!   real and routes it with the FIB; a packet too big for the egress MTU gets
//!   an ICMP fragmentation-needed / packet-too-big back to the client instead
//!   (too_big.rs).
//!
//! Next hops come from `bpf_fib_lookup`. When the neighbour is not resolved
//! yet, or the egress interface has no XDP attached, the (already rewritten)
//! packet is handed to lb's tc program with its egress and next hop, which
//! sends it through the kernel's neighbour subsystem (neigh.rs).
//!
//! Every function here returns the packet's [`Code`]; none counts.

mod dr;
pub mod nat;
pub mod neigh;
pub mod too_big;
mod ttl;
mod tun;

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibLookup, xdp_action::XDP_DROP},
    helpers::generated::{bpf_fib_lookup, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use lb_common::{Real, FAMILY_V4, FWD_NAT, FWD_TUN};
use lb_ebpf::{
    packet::{ptr_at, read_u16_raw, OutOfBounds},
    parse::{Packet, ETH_HLEN, KIND_L4},
};

use crate::{
    code::{self, Code},
    maps::LB_DEVMAP,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const FIB_SUCCESS: i64 = 0;
const FIB_FWD_DISABLED: i64 = 5;
const FIB_NO_NEIGH: i64 = 7;
const FIB_FRAG_NEEDED: i64 = 8;
/// TTL / hop limit of headers the balancer builds.
const TTL: u8 = 64;

/// Sends `pkt` to `real` by the real's forwarding method, its TTL / hop
/// limit decremented (ttl.rs). A packet too big for the tunnel, or whose TTL
/// ran out, comes back as [`code::SEND_TOO_BIG`] (a drop, unless the
/// caller answers with [`too_big::icmp_error`]: a separate call keeps the BPF
/// stack of the deepest call chain under 512 bytes).
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real: &Real) -> Code {
    if let Err(c) = ttl::hop(ctx, pkt, false) {
        return c;
    }
    match real.fwd {
        FWD_NAT => nat::to_real(ctx, pkt, real),
        FWD_TUN => tun::encap(ctx, pkt, real),
        _ => dr::direct_route(ctx, pkt, real),
    }
}

#[inline(always)]
fn write_macs(ctx: &XdpContext, dst: &[u8; 6], src: &[u8; 6]) -> Code {
    let Ok(eth) = ptr_at::<[u8; 12]>(ctx, 0) else {
        return code::DROP_NO_EGRESS;
    };
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(dst);
    macs[6..].copy_from_slice(src);
    // SAFETY: the 12 address bytes are inside the packet (ptr_at checked).
    unsafe { eth.write_unaligned(macs) };
    code::TX
}

/// XDP_TX when the egress is the ingress interface, else XDP_REDIRECT
/// through the devmap (a drop when that fails). The MACs are written.
#[inline(always)]
fn transmit(ingress: u32, egress: u32) -> Code {
    if egress == ingress {
        return code::TX;
    }
    // On a devmap miss the low bits of the flags are the action returned.
    match LB_DEVMAP.redirect(egress, XDP_DROP as u64) {
        Ok(_) => code::REDIRECT,
        _ => code::DROP_NO_EGRESS,
    }
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
    let rc = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, &mut p, size_of::<FibLookup>() as i32, 0) };
    (rc, p)
}

/// Sends a packet whose L3 is final along the FIB result `p` (rc SUCCESS):
/// MACs from the FIB, XDP_TX or redirect; the kernel when the egress
/// interface has no XDP of ours.
#[inline(always)]
fn send(ctx: &XdpContext, ingress: u32, p: &FibLookup) -> Code {
    if p.ifindex != ingress && LB_DEVMAP.get(p.ifindex).is_none() {
        return neigh::hand_over(ctx, p, code::PASS_NO_DEVMAP);
    }
    let c = write_macs(ctx, &p.dmac, &p.smac);
    if code::is_drop(c) {
        return c;
    }
    transmit(ingress, p.ifindex)
}

/// Removes the 802.1Q tag of a frame whose IP header is at `l3` (nothing
/// to do when it is untagged): the client's VLAN means nothing on another
/// interface. A frame sent out of its ingress interface keeps it; one for
/// an egress that is itself a VLAN device goes through the neighbour path,
/// whose device adds its own tag. Packet offsets taken before (`Packet`)
/// are stale after it.
#[inline(always)]
fn untag(ctx: &XdpContext, l3: usize) -> Result<(), OutOfBounds> {
    if l3 == ETH_HLEN {
        return Ok(());
    }
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    // SAFETY: inside the packet (checked).
    let macs = unsafe { eth.read_unaligned() };
    // SAFETY: ctx is this program's context; pointers are derived after.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, 4) } != 0 {
        return Err(OutOfBounds);
    }
    let eth = ptr_at::<[u8; 12]>(ctx, 0)?;
    // SAFETY: inside the packet (checked).
    unsafe { eth.write_unaligned(macs) };
    Ok(())
}

/// Routes a NAT packet whose addresses are final toward `dst`. Too big for
/// the egress MTU (the FIB answers "fragmentation needed" before it looks
/// at the neighbour): with DF set (IPv6 always) it comes back as
/// [`code::too_big`], and the caller puts the addresses back and answers
/// with an ICMP fragmentation needed / packet too big quoting the packet as
/// it was sent (the sender matches the error by the addresses it used).
/// IPv4 without DF: a request (`to_client` false) is passed, so the
/// kernel's router fragments it (its source is the client's); a reply,
/// whose source is now the director's own VIP, the kernel would drop as a
/// martian, so it is dropped here and counted (drop_too_big). An ICMP error
/// never gets an ICMP error about it (RFC 1122 3.2.2).
#[inline(always)]
fn route(ctx: &XdpContext, pkt: &Packet, src: &[u32; 4], dst: &[u32; 4], to_client: bool) -> Code {
    let (rc, p) = fib(ctx, pkt.ingress, pkt.family, src, dst, pkt.ip_len);
    if rc == FIB_FRAG_NEEDED {
        let df = pkt.family != FAMILY_V4
            || read_u16_raw(ctx, pkt.l3 + 6).map(|f| u16::from_be(f) & 0x4000 != 0) == Ok(true);
        if !df && !to_client {
            return code::PASS_NO_NEIGH;
        }
        if !df || pkt.kind != KIND_L4 {
            return code::DROP_TOO_BIG;
        }
        // SAFETY: the kernel wrote mtu_result for this return code.
        return code::too_big(unsafe { p.__bindgen_anon_1.mtu_result } as usize);
    }
    if ((rc == FIB_SUCCESS && p.ifindex != pkt.ingress) || rc == FIB_NO_NEIGH)
        && untag(ctx, pkt.l3).is_err()
    {
        return code::DROP_NO_EGRESS;
    }
    match rc {
        FIB_SUCCESS => send(ctx, pkt.ingress, &p),
        // The kernel resolves the neighbour and sends it (neigh.rs).
        FIB_NO_NEIGH => neigh::hand_over(ctx, &p, code::PASS_NO_NEIGH),
        _ => unroutable(rc),
    }
}

/// Why a FIB lookup failed; the packet is dropped.
#[inline(always)]
fn unroutable(rc: i64) -> Code {
    if rc == FIB_FWD_DISABLED {
        code::DROP_FWD_DISABLED
    } else {
        code::DROP_UNROUTABLE
    }
}
