//! TTL / hop limit: the director forwards as a router does.
//!
//! ipvs decrements the TTL (IPv4, with the header checksum) or the hop limit
//! (IPv6) of every packet it sends to a real that is not local, whatever the
//! method (DR, NAT, TUN: `decrement_ttl` in `__ip_vs_get_out_rt`,
//! net/netfilter/ipvs/ip_vs_xmit.c); for TUN that is the inner packet's,
//! before encapsulation. A packet that arrives with 0 or 1 is not forwarded:
//! the sender gets an ICMP time exceeded (RFC 792 type 11 code 0, RFC 4443
//! type 3 code 0; `icmp_send` there, from the VIP the packet was sent to).
//! NAT replies cross the kernel's `ip_forward` under ipvs, which does the
//! same.

use aya_ebpf::programs::XdpContext;
use lb_common::FAMILY_V4;
use lb_ebpf::{
    csum::Delta,
    packet::{read_u16_raw, read_u32_raw, write_u16_raw, write_u32_raw, OutOfBounds},
    parse::{Packet, KIND_ICMP},
};

use crate::code::{self, Code};

/// Decrements the TTL / hop limit of `pkt`. `Err` when it was 0 or 1: a
/// [`code::time_exceeded`] (the caller answers with the ICMP error), or,
/// for an ICMP error itself (no error is sent about one, RFC 1812 4.3.2.7)
/// or a packet `to_client` (a NAT reply: the error would go to the real, from
/// an address XDP does not know), a drop with its reason.
#[inline(always)]
pub fn hop(ctx: &XdpContext, pkt: &Packet, to_client: bool) -> Result<(), Code> {
    match hop_code(ctx, pkt, to_client as u8) {
        HOP_OK => Ok(()),
        c => Err(c),
    }
}

/// [`hop_code`]'s answer when the packet may go on (no code has every bit set).
const HOP_OK: Code = Code::MAX;

/// [`hop`] as a function of its own in the object (plain types in its
/// signature), so that LLVM does not share its header offsets with the
/// caller's rewrites: an offset derived from another (`l3 + 10` from
/// `l3 + 8`) loses the bounds the verifier needs.
#[inline(never)]
fn hop_code(ctx: &XdpContext, pkt: &Packet, to_client: u8) -> Code {
    match decrement(ctx, pkt) {
        Ok(true) => HOP_OK,
        Ok(false) if pkt.kind != KIND_ICMP && to_client == 0 => code::time_exceeded(),
        Ok(false) => code::DROP_TTL,
        Err(OutOfBounds) => code::DROP_NO_EGRESS,
    }
}

/// `Ok(false)`: 0 or 1, left as it is.
#[inline(always)]
fn decrement(ctx: &XdpContext, pkt: &Packet) -> Result<bool, OutOfBounds> {
    if pkt.family == FAMILY_V4 {
        // TTL, protocol and header checksum: one 32-bit word, read and
        // written once (separate accesses at l3 + 8 and l3 + 10 let LLVM
        // derive one offset from the other, which the verifier rejects).
        let off = pkt.l3 + 8;
        let w = read_u32_raw(ctx, off)?.to_ne_bytes();
        let ttl = w[0];
        if ttl <= 1 {
            return Ok(false);
        }
        let old = u16::from_ne_bytes([w[0], w[1]]);
        let new = u16::from_ne_bytes([ttl - 1, w[1]]);
        let mut d = Delta::new();
        d.u16(old, new);
        let c = d.apply(u16::from_ne_bytes([w[2], w[3]])).to_ne_bytes();
        write_u32_raw(ctx, off, u32::from_ne_bytes([ttl - 1, w[1], c[0], c[1]]))?;
    } else {
        // Payload length (bytes 4-5) stays; next header, hop limit: bytes 6-7.
        let off = pkt.l3 + 6;
        let old = read_u16_raw(ctx, off)?;
        let b = old.to_ne_bytes();
        if b[1] <= 1 {
            return Ok(false);
        }
        write_u16_raw(ctx, off, u16::from_ne_bytes([b[0], b[1] - 1]))?;
    }
    Ok(true)
}
