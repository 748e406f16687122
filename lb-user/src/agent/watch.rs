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
/// (`attached`: index and MAC at start): each interface's current address
/// and those of the devices stacked on it (its `upper_*` devices in sysfs:
/// VRRP VMACs, VLANs, and theirs in turn), sorted, without repeats. An
/// interface that cannot be read keeps its MAC from start.
pub fn host_macs(attached: &[(u32, [u8; 6])]) -> Vec<[u8; 6]> {
    let mut macs = Vec::new();
    for (idx, mac) in attached {
        let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: the buffer has IF_NAMESIZE bytes, as if_indextoname needs.
        let found = !unsafe { libc::if_indextoname(*idx, name.as_mut_ptr()) }.is_null();
        if !found {
            macs.push(*mac);
            continue;
        }
        // SAFETY: if_indextoname wrote a NUL-terminated name.
        let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_string_lossy();
        let dir = std::path::Path::new("/sys/class/net").join(&*name);
        match read_mac(&dir) {
            Some(m) => macs.push(m),
            None => macs.push(*mac),
        }
        stacked_macs(&dir, 2, &mut macs);
    }
    macs.sort_unstable();
    macs.dedup();
    macs
}

/// Adds the MACs of the devices stacked on the device whose sysfs
/// directory is `dir`, `depth` levels up.
fn stacked_macs(dir: &std::path::Path, depth: u32, macs: &mut Vec<[u8; 6]>) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("upper_") {
            continue;
        }
        let upper = e.path();
        if let Some(m) = read_mac(&upper) {
            macs.push(m);
        }
        stacked_macs(&upper, depth - 1, macs);
    }
}

/// The Ethernet address in a sysfs device directory's `address`.
fn read_mac(dir: &std::path::Path) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(dir.join("address")).ok()?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
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
            let now = host_macs(&attached);
            if now != macs {
                let list: Vec<String> = now.iter().map(crate::util::fmt_mac).collect();
                tracing::info!(macs = %list.join(" "), "frames to these MACs are balanced (this host's)");
                if core.host_macs(now.clone()).await.is_err() {
                    return;
                }
                macs = now;
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
