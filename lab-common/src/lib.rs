//! Types shared by the lab's XDP programs (`lab-ebpf`) and the programs that
//! drive them from user space (`lb-lab`, the benchmark `lb-pps`). `no_std`;
//! the `user` feature adds the `aya::Pod` impls user space needs.
#![no_std]

use core::mem::size_of;

/// Length of the benchmark generator's frames (Ethernet + IPv4 + UDP +
/// payload, without FCS).
pub const GEN_FRAME_LEN: usize = 64;

/// Settings of the benchmark's traffic generator (`lab-gen`): every frame is
/// written from `frame` (a frame may come back recycled after a method
/// rewrote it), frame `n` with UDP source port `base_port + n % flows`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenConfig {
    pub flows: u32,
    pub base_port: u32,
    pub frame: [u8; GEN_FRAME_LEN],
}
const _: () = assert!(size_of::<GenConfig>() == 72);

/// Maps of the generator object.
pub const GEN_CONFIG: &str = "LB_GEN_CONFIG";
pub const GEN_SINK: &str = "LB_GEN_SINK";
/// Interface slots of the sink counter (ifindex % slots).
pub const GEN_SINK_SLOTS: u32 = 64;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), Copy, no padding, any bit pattern is a value.
    unsafe impl aya::Pod for GenConfig {}
}
