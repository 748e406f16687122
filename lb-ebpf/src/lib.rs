//! Code shared by the eBPF programs of this crate (`lb-xdp`, the balancer,
//! and `lb-decap`, the tunnel endpoint for real servers). Also the library
//! target that lets `lb-user` name this crate as a build dependency (cargo
//! then rebuilds the agent when the data plane changes).
#![no_std]

pub mod csum;
pub mod packet;
pub mod parse;
