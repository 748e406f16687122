//! Helper programs of the labs and benchmarks: `xdp_pass` for the far end
//! of a veth, `xdp_tx_ref`, the XDP_TX reference (`lb-lab xdp-pass` attaches
//! either; the fixture harness times `xdp_tx_ref` next to the balancer).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    bindings::xdp_action::{XDP_PASS, XDP_TX},
    macros::xdp,
    programs::XdpContext,
};
use lab_ebpf::ptr_at;

/// Reference for benchmarks: swaps the Ethernet addresses and returns XDP_TX,
/// the least work a program that sends a frame back out can do.
#[xdp]
pub fn xdp_tx_ref(ctx: XdpContext) -> u32 {
    let Ok(eth) = ptr_at::<[u8; 12]>(&ctx, 0) else {
        return XDP_PASS;
    };
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

lb_ebpf::ebpf_object!("lab-xdp", "lb-lab");
