//! Fragments: the first fragment of a datagram (which carries the ports) is
//! balanced like any packet and remembered by (source, destination,
//! protocol, identification); later fragments follow it to the same real.
//! A later fragment seen before its first one goes to the kernel, counted.

use aya_ebpf::programs::XdpContext;
use lb_common::{FragKey, FragVal, FRAG_TIMEOUT_S};
use lb_ebpf::parse::Packet;

use crate::{
    code::{self, Code},
    conntrack::NS,
    fwd,
    maps::LB_FRAGS,
    sched,
};

#[inline(always)]
fn key(pkt: &Packet) -> FragKey {
    FragKey {
        src: pkt.src,
        dst: pkt.dst,
        id: pkt.frag_id,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    }
}

/// Remembers the real of a first fragment (the caller counts
/// [`code::EV_FRAG_FIRST`]).
#[inline(never)]
pub fn track(pkt: &Packet, svc_id: u32, pick: &sched::Pick, now: u64) {
    let v = FragVal {
        real_id: pick.real_id,
        real_gen: pick.gen,
        svc_id,
        _pad: 0,
        last_ns: now,
    };
    let _ = LB_FRAGS.insert(key(pkt), v, 0);
}

/// A fragment other than the first.
#[inline(never)]
pub fn later_fragment(ctx: &XdpContext, pkt: &Packet, now: u64) -> Code {
    // SAFETY: read-only copy of the value.
    let v = match unsafe { LB_FRAGS.get(key(pkt)) } {
        Some(v) if now.saturating_sub(v.last_ns) < FRAG_TIMEOUT_S as u64 * NS => *v,
        _ => return code::PASS_FRAGMENT,
    };
    let Some(real) = sched::real_if_valid(v.real_id, v.real_gen) else {
        return code::PASS_FRAGMENT;
    };
    // Too big for a tunnel: dropped (only a first fragment gets an ICMP error).
    let c = fwd::forward(ctx, pkt, real);
    if code::is_drop(c) {
        return c;
    }
    code::forwarded(c | code::EV_FRAG_FORWARDED, v.svc_id, v.real_id)
}
