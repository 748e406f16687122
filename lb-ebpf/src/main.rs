//! XDP layer-4 load balancer, as a pipeline: parse → service lookup →
//! dispatch, then count.
//!
//! - parse (parse.rs): the headers into the per-CPU scratch [`Packet`];
//!   what the balancer does not handle is passed to the kernel untouched,
//!   as is a frame sent to another host's MAC (host_mac.rs).
//! - lookup: the virtual service of the packet's destination.
//! - dispatch: a TCP / UDP packet for a service is balanced (conntrack.rs,
//!   sched.rs) and forwarded by its real's method (fwd/); an ICMP error about
//!   a flow follows the flow; a later fragment follows its first one
//!   (frag.rs); a packet for no service may be a NAT real's reply
//!   (fwd/nat.rs); anything else is passed.
//!
//! Every step returns the packet's [`Code`] (code.rs): its verdict, the
//! reason for it and the events on its way. Only [`lb_xdp`] counts
//! (stats.rs), so each packet is counted once.
// Built for bpfel-unknown-none by lb-user's build.rs. On the host (cargo
// check / clippy --workspace) it compiles as an ordinary binary that only says so.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
// sched.rs's atomic fetch-and-add is written as the instruction (asm!).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

mod code;
mod conntrack;
mod frag;
mod fwd;
mod host_mac;
mod maps;
mod sched;
mod stats;
mod sync;

use aya_ebpf::{helpers::generated::bpf_ktime_get_coarse_ns, macros::xdp, programs::XdpContext};
use lb_common::{Service, SvcKey, CT_NONE, FLAG_NAT, FWD_NAT};
use lb_ebpf::{
    packet::frame_len,
    parse::{self, Packet, KIND_FRAG, KIND_ICMP},
};

use crate::{
    code::Code,
    conntrack::{Events, SCHED_ESTABLISHED, SCHED_NEW},
    maps::{LB_FLAGS, LB_SCRATCH, LB_SERVICES},
};

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    // As received: the service and real byte counters count this length.
    let len = frame_len(&ctx) as u32;
    let c = process(&ctx);
    stats::count(c, len);
    let verdict = code::action(c);
    // Debug builds only (LB_EBPF_LOG=1 at build time): one line per packet.
    #[cfg(feature = "log")]
    aya_log_ebpf::debug!(
        &ctx,
        "verdict {} reason {}",
        verdict,
        code::reason(c) as u32
    );
    verdict
}

/// parse → lookup → dispatch.
#[inline(always)]
fn process(ctx: &XdpContext) -> Code {
    let Some(scratch) = LB_SCRATCH.get_ptr_mut(0) else {
        // Cannot happen (slot 0 of an array exists); passed, with a reason.
        return code::PASS_MALFORMED;
    };
    // SAFETY: per-CPU scratch value; XDP runs with preemption disabled, so
    // nothing else uses it during this program run.
    let pkt = unsafe { &mut *scratch };
    if let Err(skip) = parse::parse(ctx, pkt) {
        return code::skipped(skip);
    }
    if !host_mac::for_this_host(ctx) {
        return code::PASS_OTHER_HOST;
    }
    let pkt: &Packet = pkt;
    if pkt.kind == KIND_FRAG {
        return frag::later_fragment(ctx, pkt, clock());
    }
    let key = SvcKey {
        addr: pkt.dst,
        port_be: pkt.dport_be,
        proto: pkt.proto,
        family: pkt.family,
    };
    // Read in place, not copied: a copy is no safer (the agent replaces an
    // entry whole, and a copy would be made from the same memory), and the
    // 32 bytes on this frame would put the deepest call chain over the 512
    // bytes Debian 12's 6.1 verifier allows (it rounds every frame up to
    // 32 bytes).
    // SAFETY: the map value stays valid for this program run.
    let Some(svc) = (unsafe { LB_SERVICES.get(key) }) else {
        return no_service(ctx, pkt);
    };
    if pkt.kind == KIND_ICMP {
        icmp_for_service(ctx, pkt, svc, clock())
    } else {
        balance(ctx, pkt, svc, clock())
    }
}

/// Coarse CLOCK_MONOTONIC (tick resolution) is plenty for idle timeouts
/// counted in seconds, and cheaper than the precise clock. Read only on the
/// paths that need it (not for traffic that is not the balancer's).
#[inline(always)]
fn clock() -> u64 {
    // SAFETY: helper without side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// A TCP / UDP packet (or first fragment) for a virtual service.
#[inline(never)]
fn balance(ctx: &XdpContext, pkt: &Packet, svc: &Service, now: u64) -> Code {
    let mut ev = Events {
        resched: false,
        expired: false,
        touched: false,
        sync_state: CT_NONE,
    };
    let mut ids = [0u32; 2];
    let outcome = conntrack::schedule(pkt, svc, now, &mut ev, &mut ids);
    // What happened on the way, counted whatever the verdict.
    let mut events = 0;
    if ev.resched {
        events |= code::EV_RESCHED;
    }
    if ev.expired {
        events |= code::EV_EXPIRED;
    }
    match outcome {
        SCHED_ESTABLISHED => {}
        SCHED_NEW => events |= code::EV_NEW_FLOW,
        _ => return code::DROP_NO_REAL | events,
    }
    let Some(real) = sched::real_if_valid(ids[0], ids[1]) else {
        return code::DROP_NO_REAL | events;
    };
    let pick = sched::Pick {
        real_id: ids[0],
        gen: ids[1],
        real,
    };
    if ev.sync_state != CT_NONE {
        events |= sync::report(pkt, svc.svc_id, &ids, ev.sync_state);
    }
    if pkt.first_frag {
        frag::track(pkt, svc.svc_id, &pick, now);
        events |= code::EV_FRAG_FIRST;
    }
    if pick.real.fwd == FWD_NAT && ev.touched {
        // The reverse entry is (re)written with the forward one, at most
        // once a second for an established flow.
        fwd::nat::track(pkt, svc, &pick, now);
    }
    let c = fwd::forward(ctx, pkt, pick.real);
    if c & code::SEND_TOO_BIG != 0 {
        return fwd::too_big::icmp_error(ctx, pkt, code::mtu(c)) | events;
    }
    if code::is_drop(c) {
        return c | events;
    }
    code::forwarded(c | events, svc.svc_id, pick.real_id)
}

/// An ICMP error about a flow of a virtual service: to that flow's real.
#[inline(never)]
fn icmp_for_service(ctx: &XdpContext, pkt: &Packet, svc: &Service, now: u64) -> Code {
    let Some(pick) = conntrack::lookup(pkt, svc, now) else {
        return code::PASS_OTHER_PROTO;
    };
    let c = fwd::forward(ctx, pkt, pick.real);
    if code::is_drop(c) {
        return c;
    }
    code::forwarded(c | code::EV_ICMP_FORWARDED, svc.svc_id, pick.real_id)
}

/// A packet for no virtual service: a NAT real's reply (when NAT is in
/// use), else not the balancer's.
#[inline(always)]
fn no_service(ctx: &XdpContext, pkt: &Packet) -> Code {
    if matches!(LB_FLAGS.get(0), Some(f) if f & FLAG_NAT != 0) {
        if let Some(c) = fwd::nat::reply(ctx, pkt, clock()) {
            // Too big for the client side: "fragmentation needed" back to
            // the real, which lowers its path MTU toward the client.
            if c & code::SEND_TOO_BIG != 0 {
                return fwd::too_big::icmp_error(ctx, pkt, code::mtu(c));
            }
            return c;
        }
    }
    if pkt.kind == KIND_ICMP {
        code::PASS_OTHER_PROTO
    } else {
        code::PASS_NOT_VIP
    }
}

lb_ebpf::ebpf_object!("lb-xdp", "lb-user");
