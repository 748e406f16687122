//! DR: the Ethernet addresses change, and the TTL / hop limit as ipvs-DR
//! decrements it (ttl.rs); a client's VLAN tag is removed when the real is
//! behind another interface.

use aya_ebpf::programs::XdpContext;
use lb_common::Real;
use lb_ebpf::parse::Packet;

use super::{transmit, untag, write_macs};
use crate::code::{self, Code};

/// Destination MAC <- the real's MAC, source MAC <- the egress interface's
/// MAC; XDP_TX when the real is behind the ingress interface (a VLAN tag
/// kept), else XDP_REDIRECT through the devmap (untagged). A drop when the
/// egress is unknown.
#[inline(always)]
pub fn direct_route(ctx: &XdpContext, pkt: &Packet, real: &Real) -> Code {
    if real.ifindex != pkt.ingress && untag(ctx, pkt.l3).is_err() {
        return code::DROP_NO_EGRESS;
    }
    let c = write_macs(ctx, &real.mac, &real.src_mac);
    if code::is_drop(c) {
        return c;
    }
    transmit(pkt.ingress, real.ifindex)
}
