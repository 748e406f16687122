//! The labs' and benchmarks' XDP programs (`lab-ebpf`), built by build.rs,
//! and what user space does with them: the generator's shared types
//! (`lab-common`) and [`attach_until_signal`], which `lb-lab xdp-pass` runs.
use anyhow::{anyhow, bail, Context as _};
use aya::{
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf,
};
use tokio::signal::unix::{signal, SignalKind};

pub use lab_common::{GenConfig, GEN_CONFIG, GEN_FRAME_LEN, GEN_SINK, GEN_SINK_SLOTS};

/// `xdp_pass` and `xdp_tx_ref` (`lab-ebpf/src/xdp.rs`); empty when built
/// with AYA_BUILD_SKIP=1.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab-xdp"));

/// The benchmark's traffic generator and sink (`lab-ebpf/src/gen.rs`);
/// empty when built with AYA_BUILD_SKIP=1.
pub static GEN_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab-gen"));

/// Passes every frame (for the far end of a veth: veth delivers XDP_TX /
/// XDP_REDIRECT frames only when its peer runs an XDP program).
pub const PASS_PROGRAM: &str = "xdp_pass";

/// The XDP_TX reference: swaps the Ethernet addresses, returns XDP_TX.
pub const REFERENCE_PROGRAM: &str = "xdp_tx_ref";

/// Loads `obj`, failing clearly when it is a stub of AYA_BUILD_SKIP=1.
pub fn load(obj: &[u8], what: &str) -> anyhow::Result<Ebpf> {
    if obj.is_empty() {
        bail!(
            "lb-lab was built with AYA_BUILD_SKIP=1 and has no {what} object; rebuild without it"
        );
    }
    Ebpf::load(obj).with_context(|| format!("loading the {what} object"))
}

/// Loads `prog`, submitting it again (at most 5 times, as libbpf) while the
/// verifier answers `EAGAIN`, which it does when a signal is pending for the
/// loading thread (the same rule as `lb_user::dataplane::load_program`; the
/// lab does not link the agent).
pub fn load_program(prog: &mut Xdp) -> Result<(), ProgramError> {
    for _ in 1..5 {
        match prog.load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) => {}
            other => return other,
        }
    }
    prog.load()
}

/// Attaches `program` (`xdp_pass` or `xdp_tx_ref`) to `iface` until
/// SIGTERM / SIGINT.
pub async fn attach_until_signal(iface: &str, program: &str) -> anyhow::Result<()> {
    if !matches!(program, PASS_PROGRAM | REFERENCE_PROGRAM) {
        return Err(anyhow!("--program must be xdp_pass or xdp_tx_ref"));
    }
    let mut ebpf = load(XDP_OBJECT, "lab-xdp")?;
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("{program} missing from the object"))?
        .try_into()?;
    load_program(prog)?;
    prog.attach(iface, XdpMode::Driver)
        .with_context(|| format!("attaching {program} to {iface}"))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
