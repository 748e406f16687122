//! Traffic generator and sink for `cargo xtask bench`'s forwarding-rate
//! measurement, as xdp-trafficgen works: `xdp_gen` is run through
//! BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on the generator's veth, gives
//! each frame the next UDP source port of a range (many flows) and returns
//! XDP_TX, so the kernel transmits it to the device under test; `xdp_count`
//! is attached to the interfaces frames come back on and counts them per
//! interface before dropping them.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    btf_maps::{Array, PerCpuArray},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use lab_common::{GenConfig, GEN_FRAME_LEN, GEN_SINK_SLOTS};
use lab_ebpf::ptr_at;

/// Offsets in the generator's frame (Ethernet + a 20-byte IPv4 header + UDP).
const IP: usize = 14;
const IP_CSUM: usize = IP + 10;
const IP_SRC: usize = IP + 12;
const UDP_SPORT: usize = IP + 20;
/// Source ports per source address; more flows use the next addresses.
const PORTS: u64 = 60_000;

#[btf_map]
static LB_GEN_CONFIG: Array<GenConfig, 1> = Array::new();

/// Frames generated, per CPU (the port sequence).
#[btf_map]
static LB_GEN_SEQ: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Frames received, per CPU and interface slot (ifindex % slots).
#[btf_map]
static LB_GEN_SINK: PerCpuArray<u64, { GEN_SINK_SLOTS as usize }> = PerCpuArray::new();

#[xdp]
pub fn xdp_gen(ctx: XdpContext) -> u32 {
    let Some(cfg) = LB_GEN_CONFIG.get(0) else {
        return XDP_DROP;
    };
    let Some(seq) = LB_GEN_SEQ.get_ptr_mut(0) else {
        return XDP_DROP;
    };
    let Ok(frame) = ptr_at::<[u8; GEN_FRAME_LEN]>(&ctx, 0) else {
        return XDP_DROP;
    };
    let flows = if cfg.flows == 0 { 1 } else { cfg.flows };
    // SAFETY: per-CPU value; the whole frame is inside the packet (checked).
    unsafe {
        let n = *seq;
        *seq = n + 1;
        let k = n % flows as u64;
        let p = (cfg.base_port as u64 + k % PORTS) as u16;
        let mut f = cfg.frame;
        f[UDP_SPORT..UDP_SPORT + 2].copy_from_slice(&p.to_be_bytes());
        let hi = (k / PORTS) as u32;
        if hi != 0 {
            // Next source addresses, and the IPv4 checksum again.
            let src = u32::from_be_bytes([f[IP_SRC], f[IP_SRC + 1], f[IP_SRC + 2], f[IP_SRC + 3]]);
            f[IP_SRC..IP_SRC + 4].copy_from_slice(&(src.wrapping_add(hi)).to_be_bytes());
            f[IP_CSUM] = 0;
            f[IP_CSUM + 1] = 0;
            let mut sum = 0u32;
            let mut i = 0;
            while i < 20 {
                sum += u16::from_be_bytes([f[IP + i], f[IP + i + 1]]) as u32;
                i += 2;
            }
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            f[IP_CSUM..IP_CSUM + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        }
        frame.write_unaligned(f);
    }
    XDP_TX
}

#[xdp]
pub fn xdp_count(ctx: XdpContext) -> u32 {
    // SAFETY: the context pointer is valid for the program's run.
    let ifindex = unsafe { core::ptr::read_volatile(&(*ctx.ctx).ingress_ifindex) };
    if let Some(c) = LB_GEN_SINK.get_ptr_mut(ifindex % GEN_SINK_SLOTS) {
        // SAFETY: per-CPU value, only this CPU writes it.
        unsafe { *c += 1 };
    }
    let _ = XDP_PASS;
    XDP_DROP
}

lb_ebpf::ebpf_object!("lab-gen", "lb-lab");
