//! Forwarding methods. Direct Routing rewrites only the Ethernet addresses:
//! the IP packet is left byte-for-byte intact (no checksum changes).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_TX},
    programs::XdpContext,
};

use crate::{
    maps::{LB_DEVMAP, LB_IFACES, LB_REALS},
    parse::ETH_HLEN,
};

/// DR: destination MAC ← the real's MAC, source MAC ← the egress interface's
/// MAC; XDP_TX when the real is behind the ingress interface, else
/// XDP_REDIRECT through the devmap. XDP_DROP when the egress is unknown.
#[inline(always)]
pub fn direct_route(ctx: &XdpContext, real_id: u32) -> u32 {
    let Some(real) = LB_REALS.get(real_id) else {
        return XDP_DROP;
    };
    let ifindex = real.ifindex;
    // SAFETY: read-only copy.
    let Some(iface) = (unsafe { LB_IFACES.get(ifindex) }) else {
        return XDP_DROP;
    };
    let start = ctx.data();
    if start + ETH_HLEN > crate::parse::data_end(ctx) {
        return XDP_DROP;
    }
    let eth = start as *mut [u8; 12];
    // SAFETY: the 12 address bytes are inside the packet (checked above).
    unsafe {
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&real.mac);
        macs[6..].copy_from_slice(&iface.mac);
        eth.write_unaligned(macs);
    }
    if ifindex == ctx.ingress_ifindex() as u32 {
        return XDP_TX;
    }
    // On a devmap miss the low bits of the flags are the verdict returned.
    match LB_DEVMAP.redirect(ifindex, XDP_DROP as u64) {
        Ok(v) => v,
        Err(_) => XDP_DROP,
    }
}
