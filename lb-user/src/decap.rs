//! `lb decap`: the tunnel endpoint for LVS-TUN real servers whose kernel has
//! no ipip / ip6tnl device. Loads the `lb_decap` XDP program, tells it the
//! virtual addresses to accept, attaches it and waits for SIGTERM / SIGINT.
//! The virtual addresses must also be configured on the real (usually on
//! `lo`, with ARP for them suppressed, as for LVS-DR / LVS-TUN).

use std::net::IpAddr;

use aya::{
    maps::{HashMap, MapError, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf, EbpfError, EbpfLoader,
};
use lb_common::{DecapStats, VipKey, DECAP_STATS, DECAP_VIPS};
use tokio::signal::unix::{signal, SignalKind};

use crate::{dataplane::DECAP_OBJECT, state::addr_words};

pub const PROGRAM: &str = "lb_decap";

/// Why the decapsulation program could not be loaded, attached or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this `lb` was built with AYA_BUILD_SKIP=1 and has no XDP program")]
    NoObject,
    #[error("give at least one --vip: only tunnel packets to those addresses are decapsulated")]
    NoVips,
    #[error("loading the decapsulation object")]
    Object(#[source] EbpfError),
    #[error("{0} missing")]
    Missing(&'static str),
    #[error(transparent)]
    Map(#[from] MapError),
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error("loading the decapsulation program (verifier)")]
    Verifier(#[source] ProgramError),
    #[error("attaching {PROGRAM} to {iface} (try --xdp-mode skb)")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("waiting for signals")]
    Signal(#[source] std::io::Error),
}

/// Loads the decapsulation program with `vips` accepted (not attached).
pub fn load(vips: &[IpAddr]) -> Result<Ebpf, Error> {
    if DECAP_OBJECT.is_empty() {
        return Err(Error::NoObject);
    }
    let mut ebpf = EbpfLoader::new()
        .load(DECAP_OBJECT)
        .map_err(Error::Object)?;
    {
        let mut set: HashMap<_, VipKey, u32> =
            HashMap::try_from(ebpf.map_mut(DECAP_VIPS).ok_or(Error::Missing(DECAP_VIPS))?)?;
        for v in vips {
            let (addr, family) = addr_words(*v);
            set.insert(
                VipKey {
                    addr,
                    family,
                    _pad: [0; 3],
                },
                1,
                0,
            )?;
        }
    }
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or(Error::Missing(PROGRAM))?
        .try_into()?;
    crate::dataplane::load_program(prog).map_err(Error::Verifier)?;
    Ok(ebpf)
}

/// Counters of a loaded decapsulation program, summed over CPUs.
pub fn stats(ebpf: &Ebpf) -> Result<DecapStats, Error> {
    let m: PerCpuArray<_, DecapStats> =
        PerCpuArray::try_from(ebpf.map(DECAP_STATS).ok_or(Error::Missing(DECAP_STATS))?)?;
    let mut s = DecapStats::default();
    for c in m.get(&0, 0)?.iter() {
        s.decapsulated += c.decapsulated;
        s.pass_not_tunnel += c.pass_not_tunnel;
        s.pass_not_vip += c.pass_not_vip;
        s.pass_malformed += c.pass_malformed;
    }
    Ok(s)
}

/// `lb decap`: runs until SIGTERM / SIGINT, then prints the counters.
pub async fn run(iface: &str, vips: &[IpAddr], mode: XdpMode) -> Result<(), Error> {
    if vips.is_empty() {
        return Err(Error::NoVips);
    }
    let mut ebpf = load(vips)?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or(Error::Missing(PROGRAM))?
        .try_into()?;
    prog.attach(iface, mode).map_err(|source| Error::Attach {
        iface: iface.to_string(),
        source,
    })?;
    tracing::info!(%iface, vips = ?vips, "decapsulating IPIP / IPv6-in-IPv6 for these addresses");
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let s = stats(&ebpf)?;
    tracing::info!(
        decapsulated = s.decapsulated,
        pass_not_tunnel = s.pass_not_tunnel,
        pass_not_vip = s.pass_not_vip,
        pass_malformed = s.pass_malformed,
        "stopping"
    );
    Ok(())
}
