//! DR: only the Ethernet addresses change.

use aya_ebpf::programs::XdpContext;
use lb_common::Real;
use lb_ebpf::parse::Packet;

use super::{transmit, write_macs};
use crate::code::{self, Code};

/// Destination MAC <- the real's MAC, source MAC <- the egress interface's
/// MAC; XDP_TX when the real is behind the ingress interface, else
/// XDP_REDIRECT through the devmap. A drop when the egress is unknown.
#[inline(always)]
pub fn direct_route(ctx: &XdpContext, pkt: &Packet, real: &Real) -> Code {
    let c = write_macs(ctx, &real.mac, &real.src_mac);
    if code::is_drop(c) {
        return c;
    }
    transmit(pkt.ingress, real.ifindex)
}
