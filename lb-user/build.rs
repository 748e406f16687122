//! Builds the eBPF programs of `lb-ebpf` (quietly, see `lb-ebpf-build`) and
//! leaves them in OUT_DIR for `include_bytes_aligned!`; empty stubs under
//! `AYA_BUILD_SKIP=1`, which the agent refuses to load with a clear message.
use anyhow::Context as _;

/// The eBPF binaries of lb-ebpf: the balancer and the real servers' tunnel
/// endpoint.
const EBPF_BINS: [&str; 2] = ["lb-xdp", "lb-decap"];

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LB_EBPF_LOG");
    let features: &[&str] = if std::env::var_os("LB_EBPF_LOG").is_some() {
        &["log"]
    } else {
        &[]
    };
    lb_ebpf_build::build("lb-ebpf", &EBPF_BINS, features).context(
        "building the XDP program (run `cargo xtask setup` if bpf-linker or rust-src is missing)",
    )
}
