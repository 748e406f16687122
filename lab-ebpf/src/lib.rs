//! XDP programs of the labs and benchmarks, not part of the product:
//! `lab-gen` (the live-frames traffic generator and sink of `lb-pps`) and
//! `lab-xdp` (`xdp_pass` for the far end of a veth, `xdp_tx_ref`, the
//! XDP_TX reference). Built for bpfel-unknown-none by lb-lab's build.rs; the
//! library target lets lb-lab name this crate as a build dependency (cargo
//! then rebuilds the objects when they, lab-common or lb-ebpf's packet
//! accessors change).
#![no_std]

pub use lb_ebpf::packet::ptr_at;
