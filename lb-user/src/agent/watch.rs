//! The agent's background tasks besides the reconciler: the neighbour watch
//! and the connection sweep. Each runs on its own and only sends messages,
//! so a slow netlink answer or a long walk of the connection table delays
//! nothing else.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Duration};

use crate::{dataplane::Dataplane, reconciler, state::L2};

/// How often the neighbour table is read.
pub const NEIGHBOUR_INTERVAL: Duration = Duration::from_secs(1);
/// How often expired connections are released from the per-real counts.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Resolves `addrs` through the attached interfaces, warning once per change
/// about DR reals that stay unresolved (only those need a MAC: NAT and TUN
/// reals may be behind a router, which the FIB finds).
pub async fn resolve(
    nl: &rtnetlink::Handle,
    attached: &[(u32, [u8; 6])],
    addrs: &(Vec<IpAddr>, Vec<IpAddr>),
    warned: &mut Vec<IpAddr>,
) -> Result<BTreeMap<IpAddr, L2>, crate::neigh::Error> {
    let (found, missing) = crate::neigh::resolve(nl, attached, &addrs.0).await?;
    let missing: Vec<IpAddr> = missing
        .into_iter()
        .filter(|ip| addrs.1.contains(ip))
        .collect();
    if &missing != warned {
        for ip in &missing {
            tracing::warn!(%ip, "real server MAC unknown (not on a subnet of an attached interface, or no ARP/ND reply yet); it gets no traffic until resolved");
        }
        *warned = missing;
    }
    Ok(found)
}

/// The MACs frames for this host arrive with on the attached interfaces
/// (`attached`: index and MAC at start), read over rtnetlink in the agent's
/// own network namespace: each attached interface's current address and
/// those of the devices stacked on it (whose lower device, `IFLA_LINK`, is
/// one of them, two levels deep: VRRP VMACs, VLANs, a VMAC on a VLAN), sorted,
/// without repeats. A veth's `IFLA_LINK` names its peer, which is not
/// stacked; a peer in another namespace (`IFLA_LINK_NETNSID`) is skipped,
/// one in this namespace is this host's MAC anyway. An attached interface
/// missing from the dump keeps its MAC from start.
pub async fn host_macs(
    nl: &rtnetlink::Handle,
    attached: &[(u32, [u8; 6])],
) -> Result<Vec<[u8; 6]>, rtnetlink::Error> {
    use futures::TryStreamExt as _;
    use netlink_packet_route::link::LinkAttribute;

    struct Dev {
        index: u32,
        lower: Option<u32>,
        mac: Option<[u8; 6]>,
    }
    let mut devs = Vec::new();
    let mut dump = nl.link().get().execute();
    while let Some(m) = dump.try_next().await? {
        let mut d = Dev {
            index: m.header.index,
            lower: None,
            mac: None,
        };
        let mut other_ns = false;
        for a in &m.attributes {
            match a {
                LinkAttribute::Link(i) => d.lower = Some(*i),
                LinkAttribute::NetnsId(_) => other_ns = true,
                LinkAttribute::Address(b) => d.mac = <[u8; 6]>::try_from(b.as_slice()).ok(),
                _ => {}
            }
        }
        if other_ns {
            d.lower = None;
        }
        devs.push(d);
    }
    let mut ours: Vec<u32> = attached.iter().map(|(i, _)| *i).collect();
    for _ in 0..2 {
        let stacked: Vec<u32> = devs
            .iter()
            .filter(|d| d.lower.is_some_and(|l| ours.contains(&l)) && !ours.contains(&d.index))
            .map(|d| d.index)
            .collect();
        ours.extend(stacked);
    }
    let mut macs: Vec<[u8; 6]> = devs
        .iter()
        .filter(|d| ours.contains(&d.index))
        .filter_map(|d| d.mac)
        .collect();
    for (idx, mac) in attached {
        if !devs.iter().any(|d| d.index == *idx) {
            macs.push(*mac);
        }
    }
    macs.sort_unstable();
    macs.dedup();
    Ok(macs)
}

/// Logs the set of this host's MACs the data plane balances frames to.
pub fn log_host_macs(macs: &[[u8; 6]]) {
    let list: Vec<String> = macs.iter().map(crate::util::fmt_mac).collect();
    tracing::info!(macs = %list.join(" "), "frames to these MACs are balanced (this host's)");
}

/// Follows the neighbour table every [`NEIGHBOUR_INTERVAL`] (and at once
/// when the set of reals changes) and hands changes to the reconciler; so
/// too this host's MACs ([`host_macs`]), starting from `macs`, the set the
/// agent wrote at start.
pub fn spawn_neighbours(
    nl: rtnetlink::Handle,
    attached: Vec<(u32, [u8; 6])>,
    mut macs: Vec<[u8; 6]>,
    core: reconciler::Handle,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut published = core.published();
        let mut tick = tokio::time::interval(NEIGHBOUR_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = Vec::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = published.changed() => if r.is_err() { return },
            }
            match host_macs(&nl, &attached).await {
                Ok(now) if now != macs => {
                    log_host_macs(&now);
                    if core.host_macs(now.clone()).await.is_err() {
                        return;
                    }
                    macs = now;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    "reading this host's MACs failed: {}",
                    crate::util::chain(&e)
                ),
            }
            let addrs = published.borrow_and_update().real_addrs.clone();
            match resolve(&nl, &attached, &addrs, &mut warned).await {
                // Compared with what the reconciler uses (a reload brings
                // its own lookup), not with this task's last answer.
                Ok(found) if found != published.borrow().l2 => {
                    let known = published.borrow().l2.clone();
                    for (ip, l2) in &found {
                        if known.get(ip) != Some(l2) {
                            tracing::info!(%ip, ifindex = l2.ifindex, mac = %crate::util::fmt_mac(&l2.mac), "real server reachable");
                        }
                    }
                    if core.neighbours(found).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("neighbour refresh failed: {}", crate::util::chain(&e)),
            }
        }
    })
}

/// Walks the connection table every [`SWEEP_INTERVAL`] (or ten times the
/// walk's own duration, whichever is longer) on its own map handles, in a
/// blocking thread.
pub fn spawn_sweep(bpffs: PathBuf, core: reconciler::Handle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let published = core.published();
        let mut dp = match Dataplane::from_pins(&bpffs) {
            Ok(dp) => dp,
            Err(e) => {
                tracing::error!(
                    "connection sweep disabled: opening the pinned maps: {}",
                    crate::util::chain(&e)
                );
                return;
            }
        };
        loop {
            let gens = published.borrow().real_gens.clone();
            // The handles go to the blocking thread and come back with the report.
            let Ok((d, r)) = tokio::task::spawn_blocking(move || {
                let r = crate::sweep::sweep(&mut dp, &gens);
                (dp, r)
            })
            .await
            else {
                return;
            };
            dp = d;
            let wait = match r {
                Ok(r) => {
                    tracing::debug!(live = r.live, expired = r.expired, took = ?r.took, "connection sweep");
                    SWEEP_INTERVAL.max(r.took * 10)
                }
                Err(e) => {
                    tracing::warn!("connection sweep failed: {}", crate::util::chain(&e));
                    SWEEP_INTERVAL
                }
            };
            tokio::time::sleep(wait).await;
        }
    })
}
