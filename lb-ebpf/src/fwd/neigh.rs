//! The neighbour path: packets XDP cannot finish itself, sent by the kernel's
//! neighbour subsystem instead of its router.
//!
//! XDP can only send a frame whose destination MAC it knows, out of an
//! interface that has an XDP program of ours (XDP_TX / devmap redirect).
//! When the FIB answers "no neighbour" (nothing in the ARP / ND cache for the
//! next hop yet), or the egress interface has no XDP of ours, the packet is
//! already rewritten (NAT translated, or TUN encapsulated). Handing it to the
//! kernel's router as it is loses it: a NAT reply's source is the director's
//! own VIP and a TUN packet's the director's tunnel source, which the kernel
//! drops as a local source arriving from outside (`fib_validate_source`);
//! and a packet for an unresolved neighbour waits for nothing.
//!
//! So XDP writes a [`NeighHandoff`] record (egress and next hop from its FIB
//! lookup) as XDP metadata in front of the packet and passes it
//! ([`hand_over`]). [`lb_tc`], attached at clsact / tcx ingress of the same
//! interfaces, runs before the IP layer, finds the record at
//! `__sk_buff->data_meta` and calls `bpf_redirect_neigh`: the kernel
//! resolves the next hop (queueing the packet while ARP / ND runs, as for any
//! routed packet) and sends it out of the egress interface. Metadata survives
//! XDP_PASS in native mode (veth, and drivers with metadata support) and in
//! generic (skb) mode (`bpf_prog_run_generic_xdp` keeps it with
//! `skb_metadata_set`).
//!
//! A driver without metadata support answers `bpf_xdp_adjust_meta` with an
//! error: the packet is then passed without a record (the kernel handles it
//! as before this path existed) and `neigh_handoff` does not count it.

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibLookup, bpf_redir_neigh, TC_ACT_OK, TC_ACT_REDIRECT},
    helpers::generated::{bpf_redirect_neigh, bpf_xdp_adjust_meta},
    macros::classifier,
    programs::{TcContext, XdpContext},
};
use lb_common::{NeighHandoff, NEIGH_HANDOFF_MAGIC};

use super::AF_INET;
use crate::{
    code::{self, Code},
    maps::LB_GLOBAL_STATS,
};

const RECORD: usize = size_of::<NeighHandoff>();

/// TC_ACT_OK as the program's return type (a u32 in the BPF target's
/// bindings, an i32 in the host's).
#[expect(
    clippy::unnecessary_cast,
    reason = "a u32 in the BPF target's bindings"
)]
const CONTINUE: i32 = TC_ACT_OK as i32;

/// Writes the FIB result `p` (egress `p.ifindex`, next hop `p.ipv4_dst` /
/// `p.ipv6_dst` of family `p.family`) in front of the packet and returns
/// `reason` (an XDP_PASS code) with [`code::EV_NEIGH_HANDOFF`]; without the
/// event when the driver has no room or no support for metadata.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, p: &FibLookup, reason: Code) -> Code {
    let mut rec = NeighHandoff {
        magic: NEIGH_HANDOFF_MAGIC,
        ifindex: p.ifindex,
        family: p.family as u32,
        nexthop: [0; 4],
    };
    // SAFETY: the kernel filled the destination union for the family it set.
    unsafe {
        if p.family == AF_INET {
            rec.nexthop[0] = p.__bindgen_anon_4.ipv4_dst;
        } else {
            rec.nexthop = p.__bindgen_anon_4.ipv6_dst;
        }
    }
    // SAFETY: ctx is this program's context; the pointers below are
    // derived after the call.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(RECORD as i32)) } != 0 {
        return reason;
    }
    let meta = ctx.metadata();
    // The verifier learns the metadata's size from this comparison.
    if meta + RECORD > ctx.data() {
        return reason;
    }
    // SAFETY: [meta, meta + RECORD) is the metadata area (checked above);
    // no alignment is promised, hence the unaligned write.
    unsafe { (meta as *mut NeighHandoff).write_unaligned(rec) };
    reason | code::EV_NEIGH_HANDOFF
}

/// tc (clsact / tcx ingress) program on every interface lb attaches XDP
/// to: a packet carrying a [`NeighHandoff`] record goes out of the record's
/// interface through `bpf_redirect_neigh` (counted in `neigh_sent`);
/// everything else continues untouched (TC_ACT_OK).
#[classifier]
pub fn lb_tc(ctx: TcContext) -> i32 {
    // SAFETY: ctx points to the kernel's __sk_buff for this run; the fields
    // are read at constant offsets, as the verifier requires.
    let (meta, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if meta + RECORD > data {
        return CONTINUE;
    }
    // SAFETY: inside the metadata area (checked above).
    let rec = unsafe { (meta as *const NeighHandoff).read_unaligned() };
    if rec.magic != NEIGH_HANDOFF_MAGIC {
        return CONTINUE;
    }
    // SAFETY: all-zero is a valid bpf_redir_neigh (integers and a union of them).
    let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
    nh.nh_family = rec.family;
    nh.__bindgen_anon_1.ipv6_nh = rec.nexthop;
    // SAFETY: nh is a valid, readable bpf_redir_neigh of the size given.
    let rc =
        unsafe { bpf_redirect_neigh(rec.ifindex, &mut nh, size_of::<bpf_redir_neigh>() as i32, 0) };
    if rc == TC_ACT_REDIRECT as i64 {
        if let Some(g) = LB_GLOBAL_STATS.get_ptr_mut(0) {
            // SAFETY: per-CPU value; tc programs run with preemption disabled.
            unsafe { (*g).neigh_sent += 1 };
        }
    }
    // TC_ACT_REDIRECT, or TC_ACT_SHOT when the interface is gone.
    rc as i32
}
