//! Code shared by the eBPF programs of this crate (`lb-xdp`, the balancer,
//! and `lb-decap`, the tunnel endpoint for real servers). Also the library
//! target that lets `lb-user` name this crate as a build dependency (cargo
//! then rebuilds the agent when the data plane changes).
#![no_std]

pub mod csum;
pub mod packet;
pub mod parse;

/// The tail every eBPF object of the workspace needs, written once: a host
/// `main` that says what the binary is (the crates also build on the host,
/// for clippy and `cargo check`), the panic handler `no_std` requires on
/// BPF, and the license section the kernel reads (GPL-compatible, needed by
/// the GPL-only helpers). `$name`: the object; `$by`: whose build.rs builds it.
#[macro_export]
macro_rules! ebpf_object {
    ($name:literal, $by:literal) => {
        #[cfg(not(target_arch = "bpf"))]
        fn main() {
            eprintln!(concat!(
                $name,
                " is an XDP object: it is built for bpfel-unknown-none by ",
                $by,
                "'s build.rs"
            ));
        }

        #[cfg(target_arch = "bpf")]
        #[panic_handler]
        fn panic(_info: &core::panic::PanicInfo) -> ! {
            loop {}
        }

        #[unsafe(link_section = "license")]
        #[unsafe(no_mangle)]
        static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
    };
}
