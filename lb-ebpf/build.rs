//! Rebuild the eBPF object when bpf-linker changes (it is the linker of this
//! crate); tell it which function of lb-xdp stays global.
fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_CFG_BPF_TARGET_ARCH");
    // lblc / lblcr's scheduler stays a global function (its own BTF
    // linkage), which the verifier checks once and independently.
    println!("cargo:rustc-link-arg-bin=lb-xdp=--export=lb_locality");
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
