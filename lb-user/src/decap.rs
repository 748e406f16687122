//! `lb decap`: the tunnel endpoint for LVS-TUN real servers whose kernel has
//! no ipip / ip6tnl device. Loads the `lb_decap` XDP program, tells it the
//! virtual addresses to accept, attaches it and waits for SIGTERM / SIGINT.
//! The virtual addresses must also be configured on the real (usually on
//! `lo`, with ARP for them suppressed, as for LVS-DR / LVS-TUN).

use std::net::IpAddr;

use anyhow::{anyhow, bail, Context as _};
use aya::{
    maps::{HashMap, PerCpuArray},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{DecapStats, VipKey, DECAP_STATS, DECAP_VIPS};
use tokio::signal::unix::{signal, SignalKind};

use crate::{dataplane::DECAP_OBJECT, state::addr_words};

pub const PROGRAM: &str = "lb_decap";

/// Loads the decapsulation program with `vips` accepted (not attached).
pub fn load(vips: &[IpAddr]) -> anyhow::Result<Ebpf> {
    if DECAP_OBJECT.is_empty() {
        bail!("this `lb` was built with AYA_BUILD_SKIP=1 and has no XDP program");
    }
    let mut ebpf = EbpfLoader::new()
        .load(DECAP_OBJECT)
        .context("loading the decapsulation object")?;
    {
        let mut set: HashMap<_, VipKey, u32> = HashMap::try_from(
            ebpf.map_mut(DECAP_VIPS)
                .ok_or_else(|| anyhow!("{DECAP_VIPS} missing"))?,
        )?;
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
        .ok_or_else(|| anyhow!("{PROGRAM} missing"))?
        .try_into()?;
    prog.load()
        .context("loading the decapsulation program (verifier)")?;
    Ok(ebpf)
}

/// Counters of a loaded decapsulation program, summed over CPUs.
pub fn stats(ebpf: &Ebpf) -> anyhow::Result<DecapStats> {
    let m: PerCpuArray<_, DecapStats> = PerCpuArray::try_from(
        ebpf.map(DECAP_STATS)
            .ok_or_else(|| anyhow!("{DECAP_STATS} missing"))?,
    )?;
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
pub async fn run(iface: &str, vips: &[IpAddr], mode: XdpMode) -> anyhow::Result<()> {
    if vips.is_empty() {
        bail!("give at least one --vip: only tunnel packets to those addresses are decapsulated");
    }
    let mut ebpf = load(vips)?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| anyhow!("{PROGRAM} missing"))?
        .try_into()?;
    prog.attach(iface, mode)
        .with_context(|| format!("attaching {PROGRAM} to {iface} (try --xdp-mode skb)"))?;
    tracing::info!(%iface, vips = ?vips, "decapsulating IPIP / IPv6-in-IPv6 for these addresses");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
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
