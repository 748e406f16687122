//! Forwarding methods. Direct Routing rewrites only the Ethernet addresses:
//! the IP packet is left byte-for-byte intact (no checksum changes).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_TX},
    programs::XdpContext,
};
use lb_common::Real;

use crate::{maps::LB_DEVMAP, parse::ETH_HLEN};

/// DR: destination MAC <- the real's MAC, source MAC <- the egress interface's
/// MAC; XDP_TX when the real is behind the ingress interface, else
/// XDP_REDIRECT through the devmap. XDP_DROP when the egress is unknown.
#[inline(always)]
pub fn direct_route(ctx: &XdpContext, real: &Real) -> u32 {
    let start = ctx.data();
    if start + ETH_HLEN > crate::parse::data_end(ctx) {
        return XDP_DROP;
    }
    let eth = start as *mut [u8; 12];
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&real.mac);
    macs[6..].copy_from_slice(&real.src_mac);
    // SAFETY: the 12 address bytes are inside the packet (checked above).
    unsafe { eth.write_unaligned(macs) };
    if real.ifindex == ctx.ingress_ifindex() as u32 {
        return XDP_TX;
    }
    // On a devmap miss the low bits of the flags are the verdict returned.
    match LB_DEVMAP.redirect(real.ifindex, XDP_DROP as u64) {
        Ok(v) => v,
        Err(_) => XDP_DROP,
    }
}
