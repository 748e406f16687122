//! XDP layer-4 load balancer: entry point, dispatch and per-verdict counters.
//!
//! Packet flow: parse (parse.rs) → service lookup → connection tracking and
//! scheduling (conntrack.rs, sched.rs) → forwarding (fwd.rs). Anything that is
//! not for a configured virtual service is XDP_PASS, untouched.
// Built for bpfel-unknown-none by lb-user's build.rs. On the host (cargo
// check / clippy --workspace) it compiles as an ordinary binary that only says so.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod conntrack;
mod fwd;
mod maps;
mod parse;
mod sched;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::xdp,
    programs::XdpContext,
};
use lb_common::{GlobalStats, Stats, SvcKey};

use crate::{
    conntrack::{Events, Outcome},
    maps::{LB_GLOBAL_STATS, LB_REAL_STATS, LB_SERVICES, LB_SVC_STATS},
    parse::Skip,
};

/// Adds one to a global counter chosen by `f`.
#[inline(always)]
fn count(f: impl FnOnce(&mut GlobalStats) -> &mut u64) {
    if let Some(p) = LB_GLOBAL_STATS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it.
        let g = unsafe { &mut *p };
        *f(g) += 1;
    }
}

#[inline(always)]
fn add_stats(stats: Option<*mut Stats>, new_conn: bool, len: u32) {
    if let Some(p) = stats {
        // SAFETY: per-CPU value, only this CPU writes it.
        let s = unsafe { &mut *p };
        s.packets += 1;
        s.bytes += len as u64;
        if new_conn {
            s.conns += 1;
        }
    }
}

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
    let pkt = match parse::parse(ctx) {
        Ok(p) => p,
        Err(skip) => {
            match skip {
                Skip::NotIp => count(|g| &mut g.pass_not_ip),
                Skip::OtherProto => count(|g| &mut g.pass_other_proto),
                Skip::Fragment => count(|g| &mut g.pass_fragment),
                Skip::IpOptions => count(|g| &mut g.pass_ip_options),
                Skip::Malformed => count(|g| &mut g.pass_malformed),
            }
            return XDP_PASS;
        }
    };
    let key = SvcKey {
        addr: pkt.dst,
        port_be: pkt.dport_be,
        proto: pkt.proto,
        family: pkt.family,
    };
    // SAFETY: copy of the value; the agent replaces entries whole.
    let svc = match unsafe { LB_SERVICES.get(key) } {
        Some(s) => *s,
        None => {
            count(|g| &mut g.pass_not_vip);
            return XDP_PASS;
        }
    };
    // Coarse CLOCK_MONOTONIC (tick resolution) is plenty for idle timeouts
    // counted in seconds, and cheaper than the precise clock.
    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let mut ev = Events {
        resched: false,
        expired: false,
    };
    let outcome = conntrack::lookup_or_schedule(&pkt, &svc, now, &mut ev);
    if ev.resched {
        count(|g| &mut g.resched);
    }
    if ev.expired {
        count(|g| &mut g.expired);
    }
    let (pick, new_conn) = match outcome {
        Ok(Outcome::Established(p)) => (p, false),
        Ok(Outcome::New(p)) => {
            count(|g| &mut g.new_flows);
            (p, true)
        }
        Err(_) => {
            count(|g| &mut g.drop_no_real);
            return XDP_DROP;
        }
    };
    let verdict = fwd::direct_route(ctx, pick.real);
    if verdict == XDP_DROP {
        count(|g| &mut g.drop_no_egress);
        return verdict;
    }
    add_stats(LB_SVC_STATS.get_ptr_mut(svc.svc_id), new_conn, pkt.len);
    add_stats(LB_REAL_STATS.get_ptr_mut(pick.real_id), new_conn, pkt.len);
    verdict
}

/// Reference for benchmarks: swaps the Ethernet addresses and returns XDP_TX,
/// the least work a program that sends a frame back out can do.
#[xdp]
pub fn xdp_tx_ref(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + parse::ETH_HLEN > ctx.data_end() {
        return XDP_PASS;
    }
    let eth = start as *mut [u8; 12];
    // SAFETY: the 12 address bytes are inside the packet (checked above).
    unsafe {
        let m = eth.read_unaligned();
        let mut sw = [0u8; 12];
        sw[..6].copy_from_slice(&m[6..]);
        sw[6..].copy_from_slice(&m[..6]);
        eth.write_unaligned(sw);
    }
    XDP_TX
}

/// Passes every frame. Labs attach it to the far end of a veth so that
/// XDP_TX / XDP_REDIRECT frames sent into that veth are delivered.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
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
