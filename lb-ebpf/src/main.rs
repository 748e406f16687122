//! XDP layer-4 load balancer: entry point, dispatch and per-verdict counters.
//!
//! Packet flow: parse (parse.rs) → service lookup → connection tracking and
//! scheduling (conntrack.rs, sched.rs) → forwarding (fwd.rs). Anything that is
//! not for a configured virtual service is XDP_PASS, untouched.
// Built for bpfel-unknown-none by lb-user's build.rs. On the host (cargo
// check / clippy --workspace) it compiles as an ordinary binary that only says so.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

mod conntrack;
mod frag;
mod fwd;
mod maps;
mod sched;
mod stats;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::xdp,
    programs::XdpContext,
};
use lb_common::{FlowKey, Real, RevNat, Service, SvcKey, FLAG_NAT, FWD_NAT, FWD_TUN, PROTO_TCP};
use lb_ebpf::parse::{self, Packet, Skip, KIND_FRAG, KIND_ICMP};

use crate::{
    conntrack::{Events, NS, SCHED_ESTABLISHED, SCHED_NEW},
    maps::{LB_FLAGS, LB_NAT_REV, LB_SCRATCH, LB_SERVICES},
    stats::count,
};

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let verdict = process(&ctx);
    // Debug builds only (LB_EBPF_LOG=1 at build time): one line per packet.
    #[cfg(feature = "log")]
    aya_log_ebpf::debug!(&ctx, "verdict {}", verdict);
    match verdict {
        XDP_PASS => count(|g| &mut g.pass),
        XDP_TX => count(|g| &mut g.tx),
        XDP_REDIRECT => count(|g| &mut g.redirect),
        XDP_DROP => count(|g| &mut g.drop),
        _ => count(|g| &mut g.aborted),
    }
    verdict
}

#[inline(always)]
fn process(ctx: &XdpContext) -> u32 {
    let Some(scratch) = LB_SCRATCH.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    // SAFETY: per-CPU scratch value; XDP runs with preemption disabled, so
    // nothing else uses it during this program run.
    let pkt = unsafe { &mut *scratch };
    match parse::parse(ctx, pkt) {
        Ok(()) => {}
        Err(skip) => {
            match skip {
                Skip::NotIp => count(|g| &mut g.pass_not_ip),
                Skip::OtherProto => count(|g| &mut g.pass_other_proto),
                Skip::IpOptions => count(|g| &mut g.pass_ip_options),
                Skip::Malformed => count(|g| &mut g.pass_malformed),
            }
            return XDP_PASS;
        }
    };
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
    // SAFETY: copy of the value; the agent replaces entries whole.
    match unsafe { LB_SERVICES.get(key) } {
        Some(s) => {
            let svc = *s;
            let now = clock();
            if pkt.kind == KIND_ICMP {
                icmp_for_service(ctx, pkt, &svc, now)
            } else {
                balance(ctx, pkt, &svc, now)
            }
        }
        None => {
            let nat = matches!(LB_FLAGS.get(0), Some(f) if f & FLAG_NAT != 0);
            if nat {
                let v = nat_reply(ctx, pkt, clock());
                if v != NOT_NAT {
                    return v;
                }
            }
            if pkt.kind == KIND_ICMP {
                count(|g| &mut g.pass_other_proto);
            } else {
                count(|g| &mut g.pass_not_vip);
            }
            XDP_PASS
        }
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

/// Sends `pkt` to `real` by the real's forwarding method.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet, real: &Real) -> u32 {
    match real.fwd {
        FWD_NAT => fwd::nat_to_real(ctx, pkt, real),
        FWD_TUN => fwd::encap(ctx, pkt, real),
        _ => fwd::direct_route(ctx, pkt, real),
    }
}

/// A TCP / UDP packet (or first fragment) for a virtual service.
#[inline(never)]
fn balance(ctx: &XdpContext, pkt: &Packet, svc: &Service, now: u64) -> u32 {
    let mut ev = Events {
        resched: false,
        expired: false,
        touched: false,
    };
    let mut ids = [0u32; 2];
    let outcome = conntrack::schedule(pkt, svc, now, &mut ev, &mut ids);
    if ev.resched {
        count(|g| &mut g.resched);
    }
    if ev.expired {
        count(|g| &mut g.expired);
    }
    let new_conn = match outcome {
        SCHED_ESTABLISHED => false,
        SCHED_NEW => {
            count(|g| &mut g.new_flows);
            true
        }
        _ => {
            count(|g| &mut g.drop_no_real);
            return XDP_DROP;
        }
    };
    let Some(real) = sched::real_if_valid(ids[0], ids[1]) else {
        count(|g| &mut g.drop_no_real);
        return XDP_DROP;
    };
    let pick = sched::Pick {
        real_id: ids[0],
        gen: ids[1],
        real,
    };
    if pkt.first_frag {
        frag::track(pkt, svc.svc_id, &pick, now);
    }
    if pick.real.fwd == FWD_NAT && ev.touched {
        // The reverse entry is (re)written with the forward one, at most
        // once a second for an established flow.
        nat_track(pkt, svc, &pick, now);
    }
    let verdict = forward(ctx, pkt, pick.real);
    if verdict & fwd::TOO_BIG != 0 {
        return fwd::too_big(ctx, pkt, (verdict & 0xffff) as usize);
    }
    if verdict == XDP_DROP {
        count(|g| &mut g.drop_no_egress);
        return verdict;
    }
    stats::forwarded(svc.svc_id, pick.real_id, new_conn, false, pkt.len);
    verdict
}

/// Records how to translate the real's replies of this flow back.
#[inline(never)]
fn nat_track(pkt: &Packet, svc: &Service, pick: &sched::Pick, now: u64) {
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

/// A packet from a NAT real to a client (or an ICMP error about one):
/// translated back to the virtual service.
#[inline(never)]
fn nat_reply(ctx: &XdpContext, pkt: &Packet, now: u64) -> u32 {
    nat_reply_inner(ctx, pkt, now).unwrap_or(NOT_NAT)
}

/// [`nat_reply`]'s answer when the packet is not a NAT reply.
const NOT_NAT: u32 = u32::MAX;

#[inline(always)]
fn nat_reply_inner(ctx: &XdpContext, pkt: &Packet, now: u64) -> Option<u32> {
    let key = conntrack::flow_key(pkt);
    let rev = LB_NAT_REV.get_ptr_mut(key)?;
    // SAFETY: valid for this program run; racing writers store whole fields.
    let rev = unsafe { &mut *rev };
    let to = conntrack::timeouts();
    let limit = if pkt.proto == PROTO_TCP {
        to.tcp_s
    } else {
        to.udp_s
    };
    let idle = now.saturating_sub(rev.last_ns);
    if idle >= limit as u64 * NS {
        return None;
    }
    sched::real_if_valid(rev.real_id, rev.real_gen)?;
    if idle > NS {
        rev.last_ns = now;
    }
    let (vaddr, vport, svc_id, real_id) = (rev.vaddr, rev.vport_be, rev.svc_id, rev.real_id);
    let v = fwd::nat_to_client(ctx, pkt, &vaddr, vport);
    if v == XDP_DROP {
        count(|g| &mut g.drop_no_egress);
        return Some(v);
    }
    if pkt.kind == KIND_ICMP {
        count(|g| &mut g.icmp_forwarded);
    } else {
        count(|g| &mut g.nat_reverse);
    }
    stats::forwarded(svc_id, real_id, false, true, pkt.len);
    Some(v)
}

/// An ICMP error about a flow of a virtual service: to that flow's real.
#[inline(never)]
fn icmp_for_service(ctx: &XdpContext, pkt: &Packet, svc: &Service, now: u64) -> u32 {
    let Some(pick) = conntrack::lookup(pkt, svc, now) else {
        count(|g| &mut g.pass_other_proto);
        return XDP_PASS;
    };
    let v = forward(ctx, pkt, pick.real);
    if v & fwd::TOO_BIG != 0 || v == XDP_DROP {
        count(|g| &mut g.drop_no_egress);
        return XDP_DROP;
    }
    count(|g| &mut g.icmp_forwarded);
    stats::forwarded(svc.svc_id, pick.real_id, false, false, pkt.len);
    v
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("lb-xdp is an XDP object: it is built for bpfel-unknown-none by lb-user's build.rs");
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
