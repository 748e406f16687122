//! Builds the lab's XDP programs (`lab-ebpf`, quietly, see `lb-ebpf-build`)
//! and leaves them in OUT_DIR for `include_bytes_aligned!`, as lb-user's
//! build.rs does for the balancer; empty stubs under `AYA_BUILD_SKIP=1`.
use anyhow::Context as _;

/// The eBPF binaries of lab-ebpf: the labs' helper programs and the
/// benchmark's traffic generator.
const EBPF_BINS: [&str; 2] = ["lab-xdp", "lab-gen"];

fn main() -> anyhow::Result<()> {
    lb_ebpf_build::build("lab-ebpf", &EBPF_BINS, &[]).context(
        "building the lab's XDP programs (run `cargo xtask setup` if bpf-linker or rust-src is missing)",
    )
}
