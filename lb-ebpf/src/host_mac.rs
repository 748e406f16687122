//! Whether a frame was sent to this host: its Ethernet destination is one
//! of the MACs the agent wrote in `LB_HOST_MACS` (`lb_common::HostMacs`:
//! the attached interfaces' and their stacked devices', VRRP VMACs among
//! them). ipvs sees only what the kernel accepted as `PACKET_HOST`; a frame
//! for another host's MAC (a NIC in promiscuous mode, a bridge port) is
//! dropped by the kernel's IP receive path, so it is passed to it untouched.
//! Group addresses are passed earlier (parse.rs).

use aya_ebpf::programs::XdpContext;
use lb_common::{mac_word, MAX_HOST_MACS};
use lb_ebpf::packet::ptr_at;

use crate::maps::LB_HOST_MACS;

/// `true` when the destination MAC is this host's, or when no agent wrote
/// the set (count 0: every destination is accepted, as before the set).
#[inline(always)]
pub fn for_this_host(ctx: &XdpContext) -> bool {
    let Some(set) = LB_HOST_MACS.get(0) else {
        return true;
    };
    let n = set.count as usize;
    if n == 0 {
        return true;
    }
    let Ok(dst) = ptr_at::<[u8; 6]>(ctx, 0) else {
        return false;
    };
    // SAFETY: the 6 bytes are inside the packet (ptr_at checked).
    let dst = mac_word(unsafe { dst.read_unaligned() });
    let mut i = 0;
    while i < MAX_HOST_MACS && i < n {
        if set.macs[i] == dst {
            return true;
        }
        i += 1;
    }
    false
}
